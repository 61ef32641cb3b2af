"""LMDB: the embedded default backend (a plain filesystem path)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lmdb

from diced.backends.base import Backend, Capabilities, UpdateFn
from diced.errors import BackendError

log = logging.getLogger(__name__)

__all__ = ["LMDBBackend"]

_INITIAL_MAP = 1 << 30  # 1 GiB; doubled on demand
_MAX_RETRIES = 40


class LMDBBackend(Backend):
    """A directory holding one LMDB environment.

    Many threads and processes may read and write one store: each write call is one LMDB
    write transaction (serialized across processes by LMDB's writer lock), so
    :meth:`update` is an atomic read-modify-write. The memory map grows by doubling when a
    transaction runs out of room, and other processes adopt the new size automatically.

    Parameters
    ----------
    path:
        Directory of the environment; created if missing.
    durable:
        ``True`` (default) syncs every commit to disk. ``False`` trades crash durability of
        the last commits for speed (the store stays consistent).
    readonly:
        Open without write access.
    """

    capabilities = Capabilities(ordered_scan=True, compare_and_set=True, atomic_update=True)

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = True,
                 readonly: bool = False) -> None:
        self.path = Path(os.path.expanduser(os.fspath(path)))
        self.url = str(self.path)
        self._durable = durable
        self._readonly = readonly
        self._lock = threading.Lock()
        self._pid = -1
        self._env: lmdb.Environment | None = None
        self._open()

    # --- environment management ----------------------------------------------------------

    def _open(self) -> None:
        if not self._readonly:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise BackendError(f"no LMDB store at {self.path}")
        map_size = _INITIAL_MAP
        data = self.path / "data.mdb"
        if data.exists():
            map_size = max(map_size, data.stat().st_size)
        try:
            self._env = lmdb.open(
                str(self.path), map_size=map_size, subdir=True, readonly=self._readonly,
                sync=self._durable, metasync=self._durable, lock=True, max_readers=512,
                readahead=False, max_spare_txns=8,
            )
        except lmdb.Error as exc:
            raise BackendError(f"cannot open LMDB store at {self.path}: {exc}") from exc
        self._pid = os.getpid()

    @property
    def env(self) -> lmdb.Environment:
        if self._env is None:
            raise BackendError(f"LMDB store {self.path} is closed")
        if self._pid != os.getpid():  # forked child: an inherited environment is unusable
            self._open()
        return self._env

    def _grow(self) -> None:
        with self._lock:
            env = self.env
            new = env.info()["map_size"] * 2
            log.debug("growing LMDB map of %s to %d bytes", self.path, new)
            env.set_mapsize(new)

    def _run(self, write: bool, body: Callable[[lmdb.Transaction], Any]) -> Any:
        for _ in range(_MAX_RETRIES):
            env = self.env
            try:
                with env.begin(write=write, buffers=False) as txn:
                    return body(txn)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                with self._lock:
                    env.set_mapsize(0)  # adopt the size another process set
            except lmdb.Error as exc:
                raise BackendError(f"LMDB error in {self.path}: {exc}") from exc
        raise BackendError(f"LMDB store {self.path}: could not grow the map")

    # --- core ----------------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        encoded = [k.encode() for k in keys]
        return self._run(False, lambda txn: [txn.get(k) for k in encoded])

    def set_many(self, items: Mapping[str, bytes]) -> None:
        pairs = [(k.encode(), bytes(v)) for k, v in items.items()]

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
        pairs = [(k.encode(), v) for k, v in changes.items()]

        def body(txn: lmdb.Transaction) -> None:
            for k, v in pairs:
                if v is None:
                    txn.delete(k)
                else:
                    txn.put(k, v)

        self._run(True, body)

    def list_keys(self, prefix: str = "", start: str | None = None,
                  stop: str | None = None) -> Iterator[str]:
        lo = prefix if start is None or start < prefix else start
        bprefix = prefix.encode()
        bstop = stop.encode() if stop is not None else None

        def body(txn: lmdb.Transaction) -> list[str]:
            out = []
            cur = txn.cursor()
            if not cur.set_range(lo.encode()):
                return out
            for key in cur.iternext(keys=True, values=False):
                if not key.startswith(bprefix) or (bstop is not None and key >= bstop):
                    break
                out.append(key.decode())
            return out

        return iter(self._run(False, body))

    # --- fast paths ----------------------------------------------------------------------

    def find_last_many(self, requests: Sequence[tuple[str, str]],
                       accept: Callable[[str], bool]) -> list[tuple[str, bytes] | None]:
        encoded = [(p.encode(), s.encode()) for p, s in requests]

        def body(txn: lmdb.Transaction) -> list[tuple[str, bytes] | None]:
            cur = txn.cursor()
            out: list[tuple[str, bytes] | None] = []
            for prefix, stop in encoded:
                hit = None
                ok = cur.set_range(stop)
                ok = cur.prev() if ok else cur.last()
                while ok:
                    key = cur.key()
                    if not key.startswith(prefix):
                        break
                    skey = key.decode()
                    if accept(skey):
                        hit = (skey, cur.value())
                        break
                    ok = cur.prev()
                out.append(hit)
            return out

        return self._run(False, body)

    def update(self, keys: Sequence[str], fn: UpdateFn) -> dict[str, bytes | None]:
        encoded = [k.encode() for k in keys]

        def body(txn: lmdb.Transaction) -> dict[str, bytes | None]:
            current = {k: txn.get(b) for k, b in zip(keys, encoded, strict=True)}
            changes = dict(fn(current))
            for k, v in changes.items():
                if v is None:
                    txn.delete(k.encode())
                else:
                    txn.put(k.encode(), v)
            return changes

        return self._run(True, body)

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        bkey = key.encode()

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
        if self._env is not None and self._pid == os.getpid():
            self._env.close()
        self._env = None
