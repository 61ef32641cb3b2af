"""A process-wide, size-bounded cache of the chunks of LOCKED versions: decoded, or, for
label arrays, as DVID label blocks (a few percent of the voxels' bytes; a warm read decodes
only the voxels it returns, see :mod:`diced.array.codecs._labelbox_kernels`).

A locked version never changes, and neither do its ancestors (they are locked before it), so
what a locked version shows for a chunk is immutable: it can be cached without any
invalidation. Entries are keyed by the store's location, the repo and version (id and UUID),
the instance id and the chunk (see :func:`diced.array._readcache._cache_ident`): version ids
are never reused in a repo, while a UUID may be (a tag's UUID is its name, back when a
deleted tag is made again), and copies of a store that went separate ways are told apart by
their locations. Chunks read at an
open version are never cached (another handle or process may rewrite them); once the version
is locked, its reads start filling the cache.

The cache is on by default with a modest limit (:data:`DEFAULT_MAX_BYTES`, 64 MiB of cached
chunk data; the environment variable ``DICED_CHUNK_CACHE_BYTES`` overrides it at import, ``0``
turns it off). It mostly helps viewers and notebooks that read the same region of a locked
version again and again, and remote stores, where a hit saves a round trip::

    from diced.backends.cache import chunk_cache
    chunk_cache().resize(256 << 20)   # or 0 to disable
    chunk_cache().stats()             # {'hits': ..., 'misses': ..., 'hit_rate': ..., ...}
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import numpy as np

from diced._limits import byte_limit, env_byte_limit

__all__ = ["DEFAULT_MAX_BYTES", "ChunkCache", "chunk_cache"]

#: default size limit of the process-wide cache (bytes of cached chunk data)
DEFAULT_MAX_BYTES = 64 << 20


class ChunkCache:
    """LRU cache of read-only numpy arrays (chunks, or label blocks' bytes) with a byte limit
    and hit/miss counters.

    Thread-safe. Stored arrays are made read-only; callers copy out of them.

    Parameters
    ----------
    max_bytes
        Upper bound on the bytes of the cached arrays (``0`` disables the cache). A chunk
        larger than the limit is never stored.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        # the address of each cached array's data (``ndarray.ctypes.data`` costs about 1 µs:
        # a warm read of a box copies its chunks from their addresses, 8 or more a box)
        self._addrs: dict[Hashable, int] = {}
        self._bytes = 0
        self.max_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.resize(max_bytes)

    @property
    def enabled(self) -> bool:
        """Whether the cache stores anything (``max_bytes > 0``)."""
        return self.max_bytes > 0

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def resize(self, max_bytes: int) -> None:
        """Set the byte limit, evicting the least recently used chunks beyond it."""
        limit = byte_limit(max_bytes, "chunk cache size")
        with self._lock:
            self.max_bytes = limit
            self._evict()

    def get(self, key: Hashable) -> np.ndarray | None:
        """The cached chunk for ``key`` (read-only), or ``None``; counts a hit or a miss."""
        with self._lock:
            arr = self._items.get(key)
            if arr is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return arr

    def get_many(self, keys: list[Hashable], addrs: np.ndarray | None = None
                 ) -> list[np.ndarray | None]:
        """:meth:`get` of every key under one lock (a read's chunks: one lookup round).
        With ``addrs`` (int64, one element per key), also set ``addrs[i]`` to the address of
        the data of each chunk found (it stays valid while the caller holds the chunk)."""
        items, where, out, hits = self._items, self._addrs, [], 0
        with self._lock:
            for i, key in enumerate(keys):
                arr = items.get(key)
                if arr is not None:
                    items.move_to_end(key)
                    hits += 1
                    if addrs is not None:
                        addrs[i] = where[key]
                out.append(arr)
            self.hits += hits
            self.misses += len(out) - hits
        return out

    def put(self, key: Hashable, chunk: np.ndarray) -> None:
        """Store a copy-free, read-only reference to ``chunk`` (the caller must not modify it
        afterwards: pass a private array)."""
        if chunk.nbytes > self.max_bytes:
            return
        chunk.flags.writeable = False
        addr = chunk.ctypes.data
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = chunk
            self._addrs[key] = addr
            self._bytes += chunk.nbytes
            self._evict()

    def clear(self) -> None:
        """Drop every entry (the counters are kept; see :meth:`reset_stats`)."""
        with self._lock:
            self._items.clear()
            self._addrs.clear()
            self._bytes = 0

    def reset_stats(self) -> None:
        """Zero the hit, miss and eviction counters."""
        with self._lock:
            self.hits = self.misses = self.evictions = 0

    def stats(self) -> dict[str, Any]:
        """Counters and size: hits, misses, hit_rate (0 before any lookup), evictions,
        entries, nbytes, max_bytes."""
        with self._lock:
            total = self.hits + self.misses
            return {"hits": self.hits, "misses": self.misses,
                    "hit_rate": self.hits / total if total else 0.0,
                    "evictions": self.evictions, "entries": len(self._items),
                    "nbytes": self._bytes, "max_bytes": self.max_bytes}

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._items:
            key, arr = self._items.popitem(last=False)
            del self._addrs[key]
            self._bytes -= arr.nbytes
            self.evictions += 1


def _initial_size() -> int:
    return env_byte_limit("DICED_CHUNK_CACHE_BYTES", DEFAULT_MAX_BYTES)


_CACHE: ChunkCache | None = None
_CACHE_LOCK = threading.Lock()


def chunk_cache() -> ChunkCache:
    """The process-wide cache of the chunks of locked versions."""
    global _CACHE
    if _CACHE is None:
        with _CACHE_LOCK:
            if _CACHE is None:
                _CACHE = ChunkCache(_initial_size())
    return _CACHE
