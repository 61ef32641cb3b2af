"""Writes to versioned key spaces: copy-on-write at one version, no lost update between
concurrent writers, and the rule that nothing lands in a locked version.

Every versioned write goes through :func:`modify_parts`: read the current values, let each
part's ``fn`` compute new ones, store them. How that read-compute-store is kept whole depends
on what the backend offers (:class:`~diced.backends.base.Capabilities`):

``atomic_update`` (LMDB, ``memory://``)
    One backend transaction that also reads the version's lock mark. :func:`lock_version`
    sets the mark in its own transaction, so a write either commits before it or sees it.

``process_locks`` (``file://``: ``flock``, which the kernel drops when a holder dies)
    A writer holds the version's lock ``v-<repo>-<vid>`` *shared* and the stripes of the
    keys it touches ``s-<repo>-<n>`` *exclusive* (sorted, so never in a cycle) while it
    reads, checks the lock mark and writes. :func:`lock_version` writes the mark and then
    takes the version's lock exclusively once: every writer that got in before the mark has
    finished, and every later one sees it.

``compare_and_set`` only (``s3://``, ``gs://``: conditional requests)
    The same protocol with leases instead of ``flock``: a writer creates the stripe objects
    ``lease/<repo>/<n>`` with a create-only write (``If-None-Match: *`` /
    ``ifGenerationMatch=0``), holding ``<token> <vid> <beat>``, renews them every
    ``LEASE_TTL / 3`` seconds while it works, and deletes them (conditionally) when done.
    A waiter takes over a lease whose value has not changed for ``LEASE_TTL`` seconds of its
    own clock (its holder died). :func:`lock_version` writes the mark, then reads every
    stripe of the repo and waits until each lease held for that version is released (or has
    gone stale). A writer first holds its leases and only then reads the mark, so, as with
    ``flock``, either the locker sees its lease or it sees the mark.

    Limit: a writer paused for longer than ``LEASE_TTL`` while holding a lease (a stopped
    process, a frozen VM) can be overtaken; it notices at its next renewal or before it
    writes and raises :class:`~diced.errors.ConcurrencyError`, but a write already sent is
    not recalled. ``LEASE_TTL`` comes from the environment variable ``DICED_LEASE_TTL``
    (seconds, default 30).

Anything else (an fsspec filesystem without conditional writes) cannot keep concurrent
writers apart: :func:`modify_parts` refuses with :class:`~diced.errors.ConcurrencyError`.

Crashes. On the non-atomic backends a write stores data, then index entries, then removes
stale index entries, then stale data, so an interrupted write leaves at worst a value
without its index entry. Writers (like readers on those backends) take a version's own
writes from its index, so such an orphan is ignored and overwritten by the next write:
every chunk stays readable and writable after a crash at any point.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from diced.backends.base import Backend
from diced.errors import ConcurrencyError, CorruptDataError, LockedNodeError
from diced.repo import keys as K

if TYPE_CHECKING:
    from diced.repo.resolve import Resolved, VersionCtx, VersionedSpace

__all__ = ["LEASE_TTL", "ExtraFn", "ModifyFn", "Part", "lock_version", "modify_parts"]

log = logging.getLogger(__name__)

#: ``modify(ckey, base) -> new``: base/new are payloads, ``None`` meaning "no value" (fill).
ModifyFn = Callable[[str, bytes | None], bytes | None]

#: seconds without renewal after which a lease counts as abandoned (its holder died)
LEASE_TTL = float(os.environ.get("DICED_LEASE_TTL", "30"))
#: stripes per repo: ``flock`` files on file://, lease objects on object stores
_FLOCK_STRIPES = 64
_LEASE_STRIPES = 16
#: how long a writer or :func:`lock_version` waits for others before giving up
_WAIT_LIMIT = 600.0


def _stripes(keys: Sequence[str], n: int) -> list[int]:
    return sorted({zlib.crc32(k.encode()) % n for k in keys})


def _mode(backend: Backend) -> str:
    caps = backend.capabilities
    if caps.atomic_update:
        return "atomic"
    if caps.process_locks:
        return "flock"
    if caps.compare_and_set:
        return "lease"
    return "unsafe"


def lock_version(backend: Backend, repo_uuid: str, vid: int) -> None:
    """Mark version ``vid`` locked: once this returns, no write can land at it.

    Idempotent (the mark may already have been written, e.g. with the repo metadata); on
    non-atomic backends it then waits for the writers that started before the mark (see
    the module docstring), at most a few minutes (:class:`ConcurrencyError` after that).
    """
    key = K.lock_key(repo_uuid, vid)
    if backend.get(key) is None:
        backend.set(key, b"1")
    mode = _mode(backend)
    if mode == "flock":
        with backend.hold_locks(exclusive=[_version_lock(repo_uuid, vid)]):
            pass
    elif mode == "lease":
        _drain_leases(backend, repo_uuid, vid)


def _version_lock(repo_uuid: str, vid: int) -> str:
    return f"v-{repo_uuid}-{vid:08x}"


@contextmanager
def _exclusive(backend: Backend, mode: str, repo_uuid: str, vid: int,
               keys: Sequence[str]) -> Iterator[Callable[[], None]]:
    """Keep other writers of ``keys`` (and :func:`lock_version` of ``vid``) out; yields a
    ``check()`` to call right before writing (raises if a lease was lost meanwhile)."""
    if mode == "flock":
        stripes = [f"s-{repo_uuid}-{s:02x}" for s in _stripes(keys, _FLOCK_STRIPES)]
        with backend.hold_locks(exclusive=stripes, shared=[_version_lock(repo_uuid, vid)]):
            yield lambda: None
        return
    if mode != "lease":
        raise ConcurrencyError(
            f"{backend.url or backend!r} offers neither transactions, process locks nor "
            "conditional writes, so concurrent writers could lose updates: diced does not "
            "write there (use LMDB, file://, s3:// or gs://)")
    with _Leases(backend, repo_uuid, vid, _stripes(keys, _LEASE_STRIPES)) as leases:
        yield leases.check


# --- leases on object stores ---------------------------------------------------------------


class _Leases:
    """Leases on some stripes of a repo, held by one writer at version ``vid``."""

    def __init__(self, backend: Backend, repo_uuid: str, vid: int, stripes: list[int]) -> None:
        self.backend = backend
        self.keys = [K.lease_key(repo_uuid, s) for s in stripes]
        self.token = uuid.uuid4().hex
        self.vid = vid
        self.held: dict[str, bytes] = {}
        self.lost = False
        self._beat = 0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._guard = threading.Lock()

    def _value(self) -> bytes:
        return f"{self.token} {self.vid} {self._beat}".encode()

    def __enter__(self) -> Self:
        try:
            self._acquire()
        except BaseException:
            self._release()
            raise
        self._renewer = threading.Thread(target=self._renew, name="diced-lease", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        self._release()

    def check(self) -> None:
        """Raise if a lease was overtaken (this writer stalled past ``LEASE_TTL``)."""
        if self.lost:
            raise ConcurrencyError(
                "a write lease expired while this writer stalled; nothing more was written")

    def _acquire(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        mine = self._value()
        # uncontended: all at once; then, in sorted order, wait for the ones that were taken
        # (holding only a sorted prefix while waiting keeps waiters out of cycles)
        if len(self.keys) > 1:
            with ThreadPoolExecutor(min(16, len(self.keys))) as pool:
                got = list(pool.map(lambda k: self.backend.compare_and_set(k, None, mine),
                                    self.keys))
        else:
            got = [self.backend.compare_and_set(self.keys[0], None, mine)]
        first_miss = next((i for i, ok in enumerate(got) if not ok), len(got))
        for key, ok in zip(self.keys, got, strict=True):
            if ok:
                self.held[key] = mine
        for key in self.keys[first_miss + 1:]:  # beyond the prefix: give back, wait in order
            if key in self.held:
                self.backend.compare_and_set(key, self.held.pop(key), None)
        waiting = self.keys[first_miss:]
        if not waiting:
            return
        # what every awaited stripe holds now: a lease that still holds the same value when
        # its turn comes has been idle since this moment, so the stripes a dead writer left
        # go stale together (one LEASE_TTL in all, not one per stripe in turn)
        now = time.monotonic()
        first = {k: (v, now) for k, v in
                 zip(waiting, self.backend.get_many(waiting), strict=True)}
        for key in waiting:
            self._wait_for(key, mine, first[key])

    def _wait_for(self, key: str, mine: bytes, first: tuple[bytes | None, float]) -> None:
        """Hold ``key``: once it is free, or once its value has stayed what it was for
        ``LEASE_TTL`` (``first``: the value seen, and when, before waiting began)."""
        seen, since = first
        start, delay = time.monotonic(), 0.002
        while True:
            if self.backend.compare_and_set(key, None, mine):
                self.held[key] = mine
                return
            cur = self.backend.get(key)
            now = time.monotonic()
            if cur is None:
                continue
            if cur != seen:
                seen, since = cur, now
            elif now - since > LEASE_TTL and self.backend.compare_and_set(key, cur, mine):
                log.warning("took over an abandoned write lease %s (%r)", key, cur)
                self.held[key] = mine
                return
            if now - start > _WAIT_LIMIT:
                raise ConcurrencyError(f"waited {_WAIT_LIMIT:.0f} s for write lease {key}")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_TTL / 3):
            with self._guard:
                self._beat += 1
                new = self._value()
                for key, old in list(self.held.items()):
                    if self.backend.compare_and_set(key, old, new):
                        self.held[key] = new
                    else:
                        self.lost = True
                        del self.held[key]

    def _release(self) -> None:
        for key, value in list(self.held.items()):
            try:
                if not self.backend.compare_and_set(key, value, None):
                    log.warning("write lease %s was taken over before its release", key)
            except Exception:  # the lease will expire; do not hide the caller's outcome
                log.exception("could not release write lease %s", key)
        self.held.clear()


def _drain_leases(backend: Backend, repo_uuid: str, vid: int) -> None:
    """Wait until no lease for version ``vid`` is held (released, or abandoned)."""
    keys = [K.lease_key(repo_uuid, s) for s in range(_LEASE_STRIPES)]
    waiting = {k: v for k, v in zip(keys, backend.get_many(keys), strict=True)
               if v is not None and _lease_vid(v) == vid}
    since = dict.fromkeys(waiting, time.monotonic())
    start, delay = time.monotonic(), 0.002
    while waiting:
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.1)
        now = time.monotonic()
        for key, cur in zip(list(waiting), backend.get_many(list(waiting)), strict=True):
            old = waiting[key]
            if cur is None or cur.split(b" ", 1)[0] != old.split(b" ", 1)[0]:
                del waiting[key]  # released (a new holder will see the lock mark)
            elif cur != old:
                waiting[key], since[key] = cur, now  # renewed: its writer is at work
            elif now - since[key] > LEASE_TTL:
                backend.compare_and_set(key, cur, None)  # abandoned by a dead writer
                del waiting[key]
        if now - start > _WAIT_LIMIT:
            raise ConcurrencyError(
                f"version id {vid} is locked but writers still hold leases after "
                f"{_WAIT_LIMIT:.0f} s")


def _lease_vid(value: bytes) -> int | None:
    try:
        return int(value.split(b" ")[1])
    except (IndexError, ValueError):
        return None


# --- modify_parts ----------------------------------------------------------------------------


@dataclass
class Part:
    """One instance's share of an atomic multi-instance modification."""

    space: VersionedSpace
    ckeys: list[str]
    fn: ModifyFn
    parent_values: Sequence[Resolved | None] | None = None


#: ``extra_fn(current) -> changes`` for plain (unversioned) keys written in the same transaction
ExtraFn = Callable[[dict[str, bytes | None]], Mapping[str, bytes | None]]


def modify_parts(ctx: VersionCtx, parts: Sequence[Part], extra_keys: Sequence[str] = (),
                 extra_fn: ExtraFn | None = None) -> None:
    """Apply several :meth:`VersionedSpace.modify` calls (and plain-key changes) as one
    write: all or nothing on atomic backends (LMDB, memory); on file:// and object stores
    isolated from every other writer and from :func:`lock_version` (module docstring).

    Each ``fn`` sees the current value (inside the transaction or the locks) and may raise
    to abort everything; nothing is stored then.
    """
    if ctx.locked:
        raise LockedNodeError(f"version {ctx.uuid or ctx.vid} is locked; branch from it to write")
    parts = [p for p in parts if p.ckeys]
    if not parts:
        return
    backend = parts[0].space.backend
    mode = _mode(backend)
    by_index = mode != "atomic"
    vid = ctx.vid
    lock = K.lock_key(ctx.repo, vid)
    plans = []
    read = [lock, *extra_keys]
    for part in parts:
        pv = part.parent_values
        if pv is None:
            pv = part.space.resolve_many(part.ckeys, ctx, strict=True)
        inst = part.space.inst
        dkeys = [K.data_key(inst, c, vid, K.DATA) for c in part.ckeys]
        tkeys = [K.data_key(inst, c, vid, K.TOMB) for c in part.ckeys]
        if by_index:
            read += [K.index_key(inst, vid, c, m) for c in part.ckeys for m in (K.DATA, K.TOMB)]
        else:
            read += dkeys + tkeys
        plans.append((part, pv, dkeys, tkeys))

    def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
        if cur[lock] is not None:
            raise LockedNodeError(f"version {ctx.uuid or vid} was locked; nothing written")
        changes: dict[str, bytes | None] = {}
        for part, pv, dkeys, tkeys in plans:
            inst = part.space.inst
            for c, dk, tk, p in zip(part.ckeys, dkeys, tkeys, pv, strict=True):
                ik_d, ik_t = K.index_key(inst, vid, c, K.DATA), K.index_key(inst, vid, c, K.TOMB)
                if by_index:
                    # what readers see: the version's index (a tombstone entry wins, as in
                    # the manifests); a value without its entry is an interrupted write's
                    base = None if cur[ik_t] is not None else (
                        cur[dk] if cur[ik_d] is not None else (None if p is None else p[1]))
                elif cur[dk] is not None:
                    base = cur[dk]
                elif cur[tk] is not None:
                    base = None
                else:
                    base = None if p is None else p[1]
                try:
                    new = part.fn(c, base)
                except CorruptDataError as exc:  # the stored base does not decode
                    raise part.space.locate(exc, ctx, c) from exc
                if new is not None:
                    changes.update({dk: bytes(new), ik_d: b"", tk: None, ik_t: None})
                elif p is not None and p[1] is not None:
                    changes.update({tk: b"", ik_t: b"", dk: None, ik_d: None})
                else:
                    changes.update({dk: None, ik_d: None, tk: None, ik_t: None})
        if extra_fn is not None:
            changes.update(extra_fn({k: cur[k] for k in extra_keys}))
        return changes

    try:
        if mode == "atomic":
            backend.update(read, body)
            return
        written = [k for _, _, dkeys, _ in plans for k in dkeys] + list(extra_keys)
        with _exclusive(backend, mode, ctx.repo, vid, written) as check:
            cur = _read_by_index(backend, read, plans, vid)
            changes = body(cur)
            check()
            # no other writer can change these keys now: skip what would not change them
            # (deleting absent tombstones and index entries costs a request each remotely)
            _apply_ordered(backend, {k: v for k, v in changes.items()
                                     if k not in cur or cur[k] != v})
    except CorruptDataError as exc:
        for part in parts:
            if (exc.store_key or "").startswith((K.data_prefix(part.space.inst),
                                                 K.index_prefix(part.space.inst))):
                raise part.space.locate(exc, ctx) from exc
        raise


def _read_by_index(backend: Backend, read: list[str], plans: list, vid: int
                   ) -> dict[str, bytes | None]:
    """The current values a non-atomic write needs, in two rounds: the lock mark, the plain
    keys and the version's index entries; then only the values the index names. A
    tombstone's value is empty, so it is known from its index entry (an orphan left by a
    crash stays where it is, ignored like every value without an index entry)."""
    cur = dict(zip(read, backend.get_many(read), strict=True))
    wanted: list[str] = []
    for part, _, dkeys, tkeys in plans:
        inst = part.space.inst
        for c, dk, tk in zip(part.ckeys, dkeys, tkeys, strict=True):
            cur[tk] = b"" if cur[K.index_key(inst, vid, c, K.TOMB)] is not None else None
            if cur[K.index_key(inst, vid, c, K.DATA)] is not None:
                wanted.append(dk)
            else:
                cur[dk] = None
    cur.update(zip(wanted, backend.get_many(wanted), strict=True))
    return cur


def _apply_ordered(backend: Backend, changes: Mapping[str, bytes | None]) -> None:
    # Non-atomic stores: data before its index entry, index removal before data removal, so
    # an interrupted write is never visible as an index entry without data.
    def pick(prefix: str, put: bool) -> dict[str, bytes | None]:
        return {k: v for k, v in changes.items()
                if k.startswith(prefix) and (v is not None) == put}

    data_put, idx_put = pick("d/", True), pick("w/", True)
    idx_del, data_del = pick("w/", False), pick("d/", False)
    other = {k: v for k, v in changes.items() if not k.startswith(("d/", "w/"))}
    if data_put:
        backend.set_many(data_put)  # type: ignore[arg-type]
    if idx_put:
        backend.set_many(idx_put)  # type: ignore[arg-type]
    if idx_del:
        backend.delete_many(list(idx_del))
    if data_del:
        backend.delete_many(list(data_del))
    if other:
        backend.apply(other)
