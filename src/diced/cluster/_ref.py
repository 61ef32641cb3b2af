"""Picklable references to a store, so that dask workers open it themselves by URL.

A worker process opens each store once (:func:`open_store` caches by location and
options) and keeps it for every later task of every job.
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from diced.errors import InvalidArgumentError

if TYPE_CHECKING:
    from diced.store import Store

__all__ = ["StoreRef", "open_store"]

#: stores opened by tasks (worker processes keep them for every later task)
_STORES: dict[tuple[str, str], Store] = {}
#: stores of this process's own callers (the driver), used by tasks running here (threads)
_OWN: weakref.WeakValueDictionary[tuple[str, str], Store] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class StoreRef:
    """Where a store lives: its location (path or URL) and fsspec storage options."""

    location: str
    options: dict[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def of(cls, store: Store, storage_options: dict[str, Any] | None = None) -> StoreRef:
        """The reference of an open store. Storage options default to those the store's
        filesystem was opened with (what s3fs / gcsfs keep as ``storage_options``)."""
        if storage_options is None:
            fs = getattr(store.raw_backend, "fs", None)
            storage_options = dict(getattr(fs, "storage_options", None) or {})
        location = str(store.location)
        # tasks running in this process (threads) use this very store: a memory:// store
        # exists nowhere else, and LMDB must not be opened twice by one process
        with _LOCK:
            _OWN[_cache_key(location, storage_options)] = store
        return cls(location, dict(storage_options))

    @property
    def local(self) -> bool:
        """Whether the store exists only in this process (``memory://``): jobs on it run
        on threads of this process unless given a client explicitly."""
        return self.location.startswith("memory://")

    def open(self) -> Store:
        """The store, opened once per process."""
        return open_store(self.location, self.options)


def _cache_key(location: str, options: dict[str, Any]) -> tuple[str, str]:
    try:
        opts = json.dumps(options, sort_keys=True, default=repr)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"storage options must be JSON-like: {exc}") from exc
    return location, opts


def open_store(location: str, options: dict[str, Any] | None = None) -> Store:
    """Open (once per process) the existing store at ``location``."""
    from diced.store import Store

    key = _cache_key(location, dict(options or {}))
    with _LOCK:
        store = _OWN.get(key)
        if store is None:
            store = _STORES.get(key)
        if store is None:
            store = Store(location, create=False, **dict(options or {}))
            _STORES[key] = store
        return store
