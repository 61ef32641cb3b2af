"""LMDB: the embedded default backend (a plain filesystem path)."""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from diced.backends.base import Backend, Capabilities, UpdateFn
from diced.errors import (
    BackendError,
    InvalidArgumentError,
    StoreLocationError,
    StoreNotFoundError,
)

log = logging.getLogger(__name__)

__all__ = ["LMDBBackend"]

_INITIAL_MAP = 1 << 30  # 1 GiB; doubled on demand
#: LMDB's compiled-in key size limit (MDB_MAXKEYSIZE)
MAX_KEY_BYTES = 511
_MAX_RETRIES = 40


class _Gate:
    """Many transactions at once, or one remap of the memory map alone.

    LMDB requires that no transaction of this process is active while the map is resized
    (``set_mapsize``). Transactions hold the gate shared; a resize holds it exclusively.
    New transactions only wait while a resize is actually running, so a thread that opens
    a nested transaction never deadlocks against a waiting resize.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._resizing = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._resizing or self._active:
                self._cond.wait()
            self._resizing = True
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class _SharedEnv:
    """One open environment, shared by every backend object of this process on its path.

    py-lmdb refuses to open one environment twice in a process (and LMDB forbids it:
    closing the second handle would drop the first one's locks), so backends on the same
    directory share a handle and close it with the last of them.
    """

    def __init__(self, env: lmdb.Environment, readonly: bool) -> None:
        self.env = env
        self.readonly = readonly
        self.gate = _Gate()
        self.refs = 0


#: (pid, real path) -> shared environment; entries of a parent process are never reused
_ENVS: dict[tuple[int, str], _SharedEnv] = {}
_ENVS_LOCK = threading.Lock()


def _forget_after_fork() -> None:
    """In a forked child, start from an empty registry with a fresh (unheld) lock."""
    global _ENVS_LOCK
    _ENVS_LOCK = threading.Lock()
    _ENVS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class LMDBBackend(Backend):
    """A directory holding one LMDB environment.

    Many threads and processes may read and write one store: each write call is one LMDB
    write transaction (serialized across processes by LMDB's writer lock), so
    :meth:`update` is an atomic read-modify-write. The memory map grows by doubling when a
    transaction runs out of room, and other processes adopt the new size automatically.
    Backend objects of one process on the same directory share one environment.

    Parameters
    ----------
    path:
        Directory of the environment.
    create:
        ``None`` (default): create the store if the directory is new or empty, refuse a
        non-empty directory that holds no LMDB environment; ``True``: create it there too;
        ``False``: open an existing store only (:class:`~diced.errors.StoreNotFoundError`
        otherwise). A regular file, a path below a file or an unreadable path raises
        :class:`~diced.errors.StoreLocationError`.
    durable:
        ``True`` (default) syncs every commit to disk. ``False`` trades crash durability of
        the last commits for speed (the store stays consistent).
    readonly:
        Open without write access.
    map_size:
        Initial size of the memory map in bytes (default 1 GiB); it doubles on demand, and
        an existing store is mapped at least at its file size. Like ``durable``, it is
        decided by the first backend of a process on a directory (later ones share it).
    """

    capabilities = Capabilities(ordered_scan=True, compare_and_set=True, atomic_update=True)

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = True,
                 readonly: bool = False, map_size: int = _INITIAL_MAP,
                 create: bool | None = None) -> None:
        self.path = Path(os.path.expanduser(os.fspath(path)))
        self.url = str(self.path)
        self._durable = durable
        self._readonly = readonly
        self._map_size = int(map_size)
        self._pid = -1
        self._shared: _SharedEnv | None = None
        _check_location(self.path, None if readonly else create)
        self._open()

    # --- environment management ----------------------------------------------------------

    def _open(self) -> _SharedEnv:
        if not self._readonly:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreLocationError(f"cannot make a store at {self.path}: {exc}") from exc
        elif not self.path.exists():
            raise BackendError(f"no LMDB store at {self.path}")
        pid = os.getpid()
        ident = (pid, os.path.realpath(self.path))
        with _ENVS_LOCK:
            shared = _ENVS.get(ident)
            if shared is None:
                shared = _SharedEnv(self._open_env(), self._readonly)
                _ENVS[ident] = shared
            elif shared.readonly and not self._readonly:
                raise BackendError(
                    f"LMDB store {self.path} is already open read-only in this process")
            shared.refs += 1
        self._shared = shared
        self._ident = ident
        self._pid = pid
        return shared

    def _open_env(self) -> lmdb.Environment:
        map_size = self._map_size
        data = self.path / "data.mdb"
        if data.exists():
            map_size = max(map_size, data.stat().st_size)
        try:
            return lmdb.open(
                str(self.path), map_size=map_size, subdir=True, readonly=self._readonly,
                sync=self._durable, metasync=self._durable, lock=True, max_readers=512,
                readahead=False, max_spare_txns=8,
            )
        except lmdb.Error as exc:
            raise BackendError(f"cannot open LMDB store at {self.path}: {exc}") from exc

    @property
    def shared(self) -> _SharedEnv:
        shared = self._shared
        if shared is None:
            raise BackendError(f"LMDB store {self.path} is closed")
        if self._pid != os.getpid():  # forked child: an inherited environment is unusable
            shared = self._open()
        return shared

    @property
    def env(self) -> lmdb.Environment:
        return self.shared.env

    def _grow(self, seen: int) -> None:
        shared = self.shared
        with shared.gate.exclusive():
            size = shared.env.info()["map_size"]
            if size > seen:  # another thread grew it meanwhile
                return
            log.debug("growing LMDB map of %s to %d bytes", self.path, size * 2)
            shared.env.set_mapsize(size * 2)

    def _adopt_size(self) -> None:
        shared = self.shared
        with shared.gate.exclusive():
            shared.env.set_mapsize(0)  # adopt the size another process set

    def _run(self, write: bool, body: Callable[[lmdb.Transaction], Any],
             buffers: bool = False) -> Any:
        if write and self._readonly:
            raise BackendError(f"LMDB store {self.path} is open read-only")
        for _ in range(_MAX_RETRIES):
            shared = self.shared
            seen = 0
            try:
                with shared.gate.shared():
                    seen = shared.env.info()["map_size"]
                    with shared.env.begin(write=write, buffers=buffers) as txn:
                        return body(txn)
            except lmdb.MapFullError:
                self._grow(seen)
            except lmdb.MapResizedError:
                self._adopt_size()
            except lmdb.Error as exc:
                raise BackendError(f"LMDB error in {self.path}: {exc}") from exc
        raise BackendError(f"LMDB store {self.path}: could not grow the map")

    # --- core ----------------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        encoded = [k.encode() for k in keys]
        # a key LMDB cannot hold is simply absent
        return self._run(False, lambda txn: [txn.get(k) if 0 < len(k) <= MAX_KEY_BYTES
                                             else None for k in encoded])

    def set_many(self, items: Mapping[str, bytes]) -> None:
        pairs = [(_key(k), bytes(v)) for k, v in items.items()]

        def body(txn: lmdb.Transaction) -> None:
            for k, v in pairs:
                txn.put(k, v)

        self._run(True, body)

    def delete_many(self, keys: Iterable[str]) -> None:
        encoded = [k.encode() for k in keys]

        def body(txn: lmdb.Transaction) -> None:
            for k in encoded:
                txn.delete(k)

        self._run(True, body)

    def apply(self, changes: Mapping[str, bytes | None]) -> None:
        pairs = [(_key(k), v) for k, v in changes.items()]

        def body(txn: lmdb.Transaction) -> None:
            for k, v in pairs:
                if v is None:
                    txn.delete(k)
                else:
                    txn.put(k, v)

        self._run(True, body)

    def list_keys(self, prefix: str = "", start: str | None = None,
                  stop: str | None = None) -> Iterator[str]:
        lo = (prefix if start is None or start < prefix else start).encode()
        bstart = lo
        if len(lo) > MAX_KEY_BYTES:  # no key is that long: seek from a shorter bound
            lo = lo[:MAX_KEY_BYTES]
        bprefix = prefix.encode()
        bstop = stop.encode() if stop is not None else None

        def body(txn: lmdb.Transaction) -> list[str]:
            out = []
            cur = txn.cursor()
            if not (cur.set_range(lo) if lo else cur.first()):
                return out
            for key in cur.iternext(keys=True, values=False):
                if not key.startswith(bprefix) or (bstop is not None and key >= bstop):
                    break
                if key >= bstart:
                    out.append(key.decode())
            return out

        return iter(self._run(False, body))

    def is_empty(self) -> bool:
        return not self._run(False, lambda txn: txn.cursor().first())

    # --- fast paths ----------------------------------------------------------------------

    @staticmethod
    def _last_hits(txn: lmdb.Transaction, encoded: list[tuple[bytes, bytes | None]],
                   accept: Callable[[str], bool]) -> Iterator[tuple[int, str, Any]]:
        """``(request index, key, value)`` of the greatest accepted key of each request."""
        cur = txn.cursor()
        for i, (prefix, stop) in enumerate(encoded):
            if stop == b"":  # no key of this prefix lies below stop
                continue
            ok = cur.set_range(stop) if stop is not None else False
            ok = cur.prev() if ok else cur.last()
            while ok:
                key = bytes(cur.key())  # a memoryview when the transaction uses buffers
                if not key.startswith(prefix):
                    break
                skey = key.decode()
                if accept(skey):
                    yield i, skey, cur.value()
                    break
                ok = cur.prev()

    def _encode_requests(self, requests: Sequence[tuple[str, str]]
                         ) -> list[tuple[bytes, bytes | None]]:
        return [(p.encode(), _seek_stop(p.encode(), s.encode())) for p, s in requests]

    def find_last_many(self, requests: Sequence[tuple[str, str]],
                       accept: Callable[[str], bool]) -> list[tuple[str, bytes] | None]:
        encoded = self._encode_requests(requests)

        def body(txn: lmdb.Transaction) -> list[tuple[str, bytes] | None]:
            out: list[tuple[str, bytes] | None] = [None] * len(encoded)
            for i, key, value in self._last_hits(txn, encoded, accept):
                out[i] = (key, value)
            return out

        return self._run(False, body)

    def visit_last_many(self, requests: Sequence[tuple[str, str]],
                        accept: Callable[[str], bool],
                        visit: Callable[[int, str, Any], None]) -> None:
        """Zero-copy :meth:`find_last_many`: ``visit`` gets a view into the memory map, valid
        only during the call (decode it there; do not keep it)."""
        encoded = self._encode_requests(requests)

        def body(txn: lmdb.Transaction) -> None:
            for i, key, value in self._last_hits(txn, encoded, accept):
                visit(i, key, value)

        self._run(False, body, buffers=True)

    def update(self, keys: Sequence[str], fn: UpdateFn) -> dict[str, bytes | None]:
        encoded = [k.encode() for k in keys]

        def body(txn: lmdb.Transaction) -> dict[str, bytes | None]:
            current = {k: txn.get(b) for k, b in zip(keys, encoded, strict=True)}
            changes = dict(fn(current))
            for k, v in changes.items():
                if v is None:
                    txn.delete(k.encode())
                else:
                    txn.put(_key(k), v)
            return changes

        return self._run(True, body)

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        bkey = _key(key)

        def body(txn: lmdb.Transaction) -> bool:
            if txn.get(bkey) != expected:
                return False
            if new is None:
                txn.delete(bkey)
            else:
                txn.put(bkey, new)
            return True

        return self._run(True, body)

    def close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is None or self._pid != os.getpid():
            return  # closed already, or inherited over fork: not ours to close
        with _ENVS_LOCK:
            shared.refs -= 1
            if shared.refs > 0:
                return
            if _ENVS.get(self._ident) is shared:
                del _ENVS[self._ident]
        with shared.gate.exclusive():
            shared.env.close()


def _key(key: str) -> bytes:
    """A key to write, refused clearly when LMDB cannot hold it."""
    b = key.encode()
    if not b or len(b) > MAX_KEY_BYTES:
        raise InvalidArgumentError(
            f"LMDB keys are 1..{MAX_KEY_BYTES} bytes; got {len(b)} ({key[:40]!r}...)")
    return b


def _check_location(path: Path, create: bool | None) -> None:
    """Refuse locations that cannot or should not hold a store (see :class:`LMDBBackend`)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if create is False:
            raise StoreNotFoundError(f"no store at {path}") from None
        return  # a new directory: created by _open
    except NotADirectoryError as exc:
        raise StoreLocationError(
            f"cannot use {path} as a store: a part of the path is a regular file") from exc
    except OSError as exc:
        raise StoreLocationError(f"cannot use {path} as a store: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise StoreLocationError(f"cannot use {path} as a store: it is a regular file, not a "
                                 "directory")
    try:
        names = os.listdir(path)
    except OSError as exc:
        raise StoreLocationError(f"cannot use {path} as a store: {exc}") from exc
    if "data.mdb" in names:
        return
    if create is False:
        raise StoreNotFoundError(f"no store at {path}")
    if names and create is not True and set(names) != {"lock.mdb"}:  # (a store being made)
        raise StoreLocationError(
            f"{path} is a non-empty directory that holds no diced store; use a new or empty "
            "directory (or pass create=True to make a store among its files)")


def _seek_stop(prefix: bytes, stop: bytes) -> bytes | None:
    """Where a backward scan for ``prefix`` keys below ``stop`` starts.

    ``stop`` itself when it lies inside the prefix's key range; ``b""`` when it lies
    before the range (nothing to find); the end of the range, or ``None`` (end of the
    database) when it lies after it.
    """
    if stop.startswith(prefix):
        return stop
    if stop < prefix:
        return b""
    head = prefix.rstrip(b"\xff")
    if not head:
        return None
    return head[:-1] + bytes([head[-1] + 1])
