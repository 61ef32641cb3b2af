"""The versioned key space of one data instance: nearest-ancestor reads, copy-on-write writes.

DVID's rules (``docs/dvid-reference.md`` §3): a write at version v touches only v; a read at
v returns the value of the nearest ancestor that wrote or deleted the key; a delete is a
tombstone. Because version ids grow in creation order and merges materialise every conflict
at the merge node (:mod:`diced.repo.merge`), "nearest ancestor" is simply the greatest
writer id among v's ancestors. Finding it is in-memory work plus at most one backend read
per key, whatever the depth of history:

* on ordered stores (LMDB) one cursor seek per key (:meth:`Backend.find_last_many`);
* elsewhere (object stores, ``file://``) from the compacted index of a locked version
  (:mod:`diced.repo.manifests`: one table GET and one round of bucket GETs at any depth) or,
  for an open version, its parent's index plus its own ``w/`` listing; then one batched GET
  of the winners.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from diced.backends.base import Backend
from diced.errors import CorruptDataError
from diced.repo import keys as K
from diced.repo.chunkpacks import (
    Loc,
    Packed,
    PackRead,
    launch,
    prepare,
    read_packed,
    stream_packed,
    take,
)
from diced.repo.manifests import IndexView
from diced.repo.manifests import manifests as _manifests
from diced.repo.writers import ModifyFn, Part, modify_parts

__all__ = ["Part", "Resolved", "VersionCtx", "VersionedSpace", "modify_parts"]


@dataclass(frozen=True)
class VersionCtx:
    """What resolution needs to know about the version being read or written."""

    repo: str
    vid: int
    ancestors: frozenset[int]  # includes vid
    locked: bool
    uuid: str = ""
    #: version id -> UUID, for error messages (``None``: ids only)
    uuid_of: Callable[[int], str] | None = field(default=None, compare=False, repr=False)

    def version_name(self, vid: int) -> str:
        """The UUID of version ``vid`` when known, else ``"id N"``."""
        if vid == self.vid and self.uuid:
            return self.uuid
        if self.uuid_of is not None:
            try:
                return self.uuid_of(vid)
            except LookupError:
                pass
        return f"id {vid}"

    @property
    def strict_ancestors(self) -> frozenset[int]:
        """Ids of the version's ancestors, itself excluded."""
        return self.ancestors - {self.vid}


#: ``(writer version id, payload)``; payload ``None`` means the writer left a tombstone.
Resolved = tuple[int, bytes | None]


_KINDS = {"chunk": K.parse_chunk_ckey, "key": K.parse_kv_ckey, "label": lambda c: int(c, 16)}


class VersionedSpace:
    """Versioned keys of one instance: ``read_many``, ``write``, ``modify`` and listings.

    ``name`` (the instance's name, or a description such as ``"seg (label index)"``) and
    ``kind`` (``"chunk"``, ``"key"`` or ``"label"``: what a ckey names) only serve error
    messages: a stored value that fails its checksum, or that the caller's decoder rejects
    during :meth:`visit`, raises :class:`~diced.errors.CorruptDataError` naming the
    instance, the version (UUID) that wrote the value and the chunk coordinates or key.
    """

    def __init__(self, backend: Backend, inst: int, name: str | None = None,
                 kind: str | None = None) -> None:
        self.backend = backend
        self.inst = inst
        self.name = name if name is not None else f"key space {inst}"
        self.kind = kind
        # per key space: a space placed on another backend has that backend's capabilities
        self.ordered = backend.capabilities_for(K.data_prefix(inst)).ordered_scan

    # --- naming corrupt values -----------------------------------------------------------

    def describe(self, ckey: str) -> tuple[str, object]:
        """``(text, key)``: how a ckey reads in messages, and the chunk coords / key / label."""
        parse = _KINDS.get(self.kind or "")
        if parse is None:
            return K.describe_ckey(ckey), ckey
        try:
            key = parse(ckey)
        except (ValueError, UnicodeDecodeError):
            return f"key {ckey!r}", ckey
        return f"{self.kind} {key!r}" if self.kind == "key" else f"{self.kind} {key}", key

    def locate(self, exc: CorruptDataError, ctx: VersionCtx | None, ckey: str | None = None,
               vid: int | None = None) -> CorruptDataError:
        """``exc`` re-made to name this instance, the version and the chunk or key."""
        if exc.instance is not None:
            return exc
        sk = exc.store_key
        if sk is not None and sk.startswith(f"d/{self.inst:08x}/"):
            ckey, vid, _ = K.parse_data_key(sk)
        elif sk is not None and sk.startswith(f"w/{self.inst:08x}/"):
            vid, ckey, _ = K.parse_index_key(sk)
        if vid is None and ctx is not None:
            vid = ctx.vid
        version = None if vid is None else (ctx.version_name(vid) if ctx else f"id {vid}")
        text, key = self.describe(ckey) if ckey is not None else ("", None)
        parts = [f"{self.name!r}"] + ([text] if text else []) + \
            ([f"version {version}"] if version else [])
        new = type(exc)(f"{', '.join(parts)}: {exc}", instance=self.name, version=version,
                        key=key, store_key=sk)
        new.__cause__ = exc
        return new

    @contextmanager
    def _naming(self, ctx: VersionCtx | None, ckeys: Sequence[str] = ()) -> Iterator[None]:
        try:
            yield
        except CorruptDataError as exc:
            ckey = ckeys[0] if len(ckeys) == 1 else None
            raise self.locate(exc, ctx, ckey) from exc

    # --- resolution ------------------------------------------------------------------------

    def resolve_many(self, ckeys: Sequence[str], ctx: VersionCtx, *, strict: bool = False
                     ) -> list[Resolved | None]:
        """For each key, the writer and payload visible at ``ctx`` (``None``: never written).

        With ``strict=True`` the version itself is ignored (what its parents show).
        """
        if not ckeys:
            return []
        anc = ctx.strict_ancestors if strict else ctx.ancestors
        with self._naming(ctx, ckeys):
            if self.ordered:
                return self._resolve_scan(ckeys, ctx.vid if not strict else ctx.vid - 1, anc)
            return self._resolve_manifest(ckeys, ctx, anc, strict)

    def _resolve_scan(self, ckeys, top: int, anc: frozenset[int]) -> list[Resolved | None]:
        inst = self.inst

        def accept(key: str) -> bool:
            return int(key[-9:-1], 16) in anc

        reqs = [(K.chunk_prefix(inst, c), f"{K.chunk_prefix(inst, c)}{top + 1:08x}") for c in ckeys]
        out: list[Resolved | None] = []
        for hit in self.backend.find_last_many(reqs, accept):
            if hit is None:
                out.append(None)
                continue
            key, value = hit
            vid, mark = int(key[-9:-1], 16), key[-1]
            out.append((vid, None) if mark == K.TOMB else (vid, bytes(value)))
        return out

    def _view(self, ctx: VersionCtx, strict: bool = False) -> tuple[IndexView, dict[str, str]]:
        """The index view of ``ctx`` on stores without ordered scans, and the open version's
        own manifest (empty for a locked version or ``strict``)."""
        man = _manifests(self.backend)
        if ctx.locked and not strict:
            return man.locked_view(self.inst, ctx.vid, ctx.ancestors), {}
        view = man.view(self.inst, ctx.ancestors - {ctx.vid})
        own = {} if strict else man.manifest(self.inst, ctx.vid, locked=False)
        return view, own

    def _writers(self, ckeys, ctx: VersionCtx, anc: frozenset[int], strict: bool
                 ) -> tuple[list[tuple[int, str] | None], list[Loc | None]]:
        view, own = self._view(ctx, strict)
        return self._lookup(ckeys, ctx, view, own)

    @staticmethod
    def _lookup(ckeys, ctx: VersionCtx, view: IndexView, own: dict[str, str]
                ) -> tuple[list[tuple[int, str] | None], list[Loc | None]]:
        """Each key's writer and mark, and where the writer packed its value (if it did)."""
        rest = [c for c in ckeys if c not in own]
        hits, locs = view.lookup_located(rest) if rest else ([], [])
        found = dict(zip(rest, zip(hits, locs, strict=True), strict=True))
        writers: list[tuple[int, str] | None] = []
        where: list[Loc | None] = []
        for c in ckeys:
            if c in own:
                writers.append((ctx.vid, own[c]))
                where.append(None)
            else:
                hit, loc = found[c]
                writers.append(hit)
                where.append(loc)
        return writers, where

    def _resolve_manifest(self, ckeys, ctx, anc, strict) -> list[Resolved | None]:
        return self._fetch(ckeys, *self._writers(ckeys, ctx, anc, strict))

    def _packed(self, ckeys, writers, locs: Sequence[Loc | None] | None, data: Sequence[int]
                ) -> dict[int, memoryview]:
        """Values of ``data`` (indexes of keys with data) read from their writers' packs:
        those whose writer packed them and whose pack holds them intact."""
        todo = _in_packs(data, locs)
        if not todo:
            return {}
        got = read_packed(self.backend, self.inst,
                          [(ckeys[i], writers[i][0], locs[i]) for i in todo])
        return {i: v for i, v in zip(todo, got, strict=True) if v is not None}

    def plan_packed(self, ckeys: Sequence[str], ctx: VersionCtx, cap: int
                    ) -> tuple[list[PackRead], list[int]] | None:
        """For a read of ``ckeys`` at a locked version on a store without ordered scans: the
        ranged GETs (at most ``cap`` values each, not sent yet: :meth:`launch_packed`) of
        the keys whose values are packed, each value's ``i`` its index in ``ckeys``, and
        the indexes of the others. ``None`` when none is packed (or the version is open:
        its own manifest would be listed twice)."""
        if self.ordered or not ctx.locked or not ckeys:
            return None
        with self._naming(ctx, ckeys):
            writers, locs = self._writers(ckeys, ctx, ctx.ancestors, False)
        packed = [i for i, (w, loc) in enumerate(zip(writers, locs, strict=True))
                  if w is not None and loc is not None]
        if not packed:
            return None
        reads = prepare(self.inst, [(ckeys[i], writers[i][0], locs[i]) for i in packed], cap)
        for r in reads:
            for p in r.values:
                p.i = packed[p.i]
        done = set(packed)
        return reads, [i for i in range(len(ckeys)) if i not in done]

    def launch_packed(self, reads: Sequence[PackRead]) -> None:
        """Send the ranged GETs of :meth:`plan_packed` (they stream in meanwhile)."""
        launch(self.backend, reads)

    def take_packed(self, p: Packed, ctx: VersionCtx,
                    fn: Callable[[int, bytes | memoryview | None], None]) -> bool:
        """Call ``fn(p.i, payload)`` once the value of ``p`` is in, as :meth:`visit` does;
        ``False`` (and no call) when its pack does not hold it intact: read it with
        :meth:`visit` then."""
        value = take(self.backend, self.inst, p)
        if value is None:
            return False
        try:
            fn(p.i, value)
        except CorruptDataError as exc:
            raise self.locate(exc, ctx, p.ckey, p.vid) from exc
        return True

    def _fetch(self, ckeys, writers, locs: Sequence[Loc | None] | None = None
               ) -> list[Resolved | None]:
        data = [i for i, w in enumerate(writers) if w is not None and w[1] == K.DATA]
        packed = self._packed(ckeys, writers, locs, data)
        rest = [i for i in data if i not in packed]
        values: dict[int, bytes | memoryview | None] = dict(zip(rest, self.backend.get_many(
            [K.data_key(self.inst, ckeys[i], writers[i][0]) for i in rest]), strict=True))
        values.update(packed)
        out: list[Resolved | None] = []
        for i, (c, w) in enumerate(zip(ckeys, writers, strict=True)):
            if w is None:
                out.append(None)
            elif w[1] == K.TOMB:
                out.append((w[0], None))
            else:
                v = values[i]
                if isinstance(v, memoryview):
                    v = bytes(v)
                if v is None:
                    raise CorruptDataError(
                        f"instance {self.inst}: index names key {c!r} at version {w[0]} "
                        "but its data is missing (interrupted write on a non-atomic backend?)")
                out.append((w[0], v))
        return out

    def reader(self, ctx: VersionCtx) -> Callable[[Sequence[str]], list[bytes | None]]:
        """A ``read_many`` for many calls at one version: on object stores the open version's
        manifest is listed once, not per call. Safe to call from several threads."""
        if self.ordered or ctx.locked:
            return lambda ckeys: self.read_many(ckeys, ctx)
        view, own = self._view(ctx)

        def read(ckeys: Sequence[str]) -> list[bytes | None]:
            writers, locs = self._lookup(ckeys, ctx, view, own)
            with self._naming(ctx, ckeys):
                return [None if r is None else r[1] for r in self._fetch(ckeys, writers, locs)]

        return read

    def visit(self, ckeys: Sequence[str], ctx: VersionCtx,
              fn: Callable[[int, bytes | memoryview | None], None], *,
              packs: bool = True) -> None:
        """Call ``fn(i, payload)`` for every key (``None``: absent or deleted), handing
        payloads zero-copy where the backend can; they are valid only during the call.
        ``packs=False`` reads the chunk objects even of packed values (for values whose
        pack a read already found unusable).

        A :class:`~diced.errors.CorruptDataError` raised by ``fn`` (a payload that does not
        decode) is re-raised naming the instance, version and chunk or key."""

        def call(i: int, value: bytes | memoryview | None, vid: int | None = None) -> None:
            try:
                fn(i, value)
            except CorruptDataError as exc:
                raise self.locate(exc, ctx, ckeys[i], vid) from exc

        if not self.ordered:
            self._visit_manifest(ckeys, ctx, call, packs)
            return
        anc = ctx.ancestors
        inst = self.inst
        seen = [False] * len(ckeys)

        def accept(key: str) -> bool:
            return int(key[-9:-1], 16) in anc

        def hit(i: int, key: str, value: bytes | memoryview) -> None:
            seen[i] = True
            call(i, None if key[-1] == K.TOMB else value, int(key[-9:-1], 16))

        reqs = [(K.chunk_prefix(inst, c), f"{K.chunk_prefix(inst, c)}{ctx.vid + 1:08x}")
                for c in ckeys]
        with self._naming(ctx):
            self.backend.visit_last_many(reqs, accept, hit)
        for i, s in enumerate(seen):
            if not s:
                call(i, None)

    def _visit_manifest(self, ckeys: Sequence[str], ctx: VersionCtx,
                        call: Callable[[int, bytes | memoryview | None, int | None], None],
                        packs: bool = True) -> None:
        """:meth:`visit` on stores without ordered scans: writers from the manifests, then
        one batched read whose values go to ``call`` as views (no copy to strip checksums)."""
        writers, locs = self._writers(ckeys, ctx, ctx.ancestors, False)
        data = [i for i, w in enumerate(writers) if w is not None and w[1] == K.DATA]
        seen = [False] * len(ckeys)
        todo = _in_packs(data, locs) if packs else []
        if todo:  # packed values, each handed on as soon as its bytes are in
            with self._naming(ctx):
                for j, v in stream_packed(self.backend, self.inst,
                                          [(ckeys[i], writers[i][0], locs[i])  # type: ignore
                                           for i in todo]):
                    if v is not None:
                        i = todo[j]
                        seen[i] = True
                        call(i, v, writers[i][0])  # type: ignore[index]
            data = [i for i in data if not seen[i]]
        keys = [K.data_key(self.inst, ckeys[i], writers[i][0]) for i in data]  # type: ignore[index]

        def hit(j: int, value: bytes | memoryview) -> None:
            i = data[j]
            seen[i] = True
            call(i, value, writers[i][0])  # type: ignore[index]

        with self._naming(ctx):
            self.backend.visit_many(keys, hit)
        for i in data:
            if not seen[i]:
                raise self.locate(CorruptDataError(
                    "the version's manifest names this value but it is missing: another "
                    "process squashed versions since this handle read the repo "
                    "(repo.refresh() and read again), or a write on a non-atomic backend "
                    "was interrupted"), ctx, ckeys[i], writers[i][0])  # type: ignore[index]
        for i, w in enumerate(writers):
            if not seen[i]:
                call(i, None, None if w is None else w[0])

    def read_many(self, ckeys: Sequence[str], ctx: VersionCtx) -> list[bytes | None]:
        """Payload visible at ``ctx`` for each key, ``None`` for absent or deleted."""
        return [None if r is None else r[1] for r in self.resolve_many(ckeys, ctx)]

    # --- writes ----------------------------------------------------------------------------

    def modify(self, ctx: VersionCtx, ckeys: Sequence[str], fn: ModifyFn,
               parent_values: Sequence[Resolved | None] | None = None) -> None:
        """Atomically (where the backend can) replace each key's value by ``fn(ckey, base)``.

        ``base`` is the value visible at ``ctx``; ``fn`` returns the new payload or ``None``
        for "no value" (stored as a tombstone when an ancestor holds a value, otherwise as
        nothing at all). Raises :class:`LockedNodeError` if the version is locked, in which
        case nothing is stored. See :func:`modify_parts` for several instances at once.
        """
        modify_parts(ctx, [Part(self, list(ckeys), fn, parent_values)])

    def write(self, ctx: VersionCtx, items: Mapping[str, bytes | None],
              parent_values: Sequence[Resolved | None] | None = None) -> None:
        """Set whole values (``None`` = no value). See :meth:`modify`."""
        ck = list(items)
        self.modify(ctx, ck, lambda c, _base: items[c], parent_values)

    def delete(self, ctx: VersionCtx, ckeys: Iterable[str]) -> None:
        """Write tombstones for ``ckeys`` at version ``ctx``."""
        self.write(ctx, dict.fromkeys(ckeys))

    # --- listings ------------------------------------------------------------------------

    def written_at(self, vid: int) -> dict[str, str]:
        """ckey -> mark ("d"/"t") for everything version ``vid`` itself wrote."""
        out: dict[str, str] = {}
        for k in self.backend.list_keys(K.index_prefix(self.inst, vid)):
            _, ckey, mark = K.parse_index_key(k)
            out[ckey] = mark
        return out

    def live_keys(self, ctx: VersionCtx, start: str | None = None, stop: str | None = None
                  ) -> list[str]:
        """Sorted keys holding a value at ``ctx`` (optionally within ``[start, stop)`` of ckeys)."""
        best: dict[str, tuple[int, str]] = {}
        if self.ordered:
            pre = K.data_prefix(self.inst)
            lo = pre + start if start is not None else None
            hi = pre + stop if stop is not None else None
            for k in self.backend.list_keys(pre, start=lo, stop=hi):
                ckey, vid, mark = K.parse_data_key(k)
                if vid in ctx.ancestors:
                    prev = best.get(ckey)
                    if prev is None or vid > prev[0]:
                        best[ckey] = (vid, mark)
        else:
            view, own = self._view(ctx)
            best = view.entries()
            best.update((c, (ctx.vid, m)) for c, m in own.items())
            if start is not None or stop is not None:
                best = {c: w for c, w in best.items()
                        if (start is None or c >= start) and (stop is None or c < stop)}
        return sorted(c for c, (_, m) in best.items() if m == K.DATA)

    def drop(self) -> None:
        """Delete every key of the instance (all versions)."""
        for prefix in (K.data_prefix(self.inst), K.index_prefix(self.inst),
                       K.compact_prefix(self.inst)):
            batch: list[str] = []
            for k in self.backend.list_keys(prefix):
                batch.append(k)
                if len(batch) >= 4096:
                    self.backend.delete_many(batch)
                    batch = []
            if batch:
                self.backend.delete_many(batch)
        _manifests(self.backend).forget(self.inst)


def _in_packs(data: Sequence[int], locs: Sequence[Loc | None] | None) -> list[int]:
    """The indexes in ``data`` whose values have a pack location."""
    return [i for i in data if locs[i] is not None] if locs else []
