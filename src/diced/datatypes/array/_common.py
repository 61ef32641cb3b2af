"""What the read and write paths of :class:`~diced.datatypes.array.array.VersionedArray`
share: the thread pool chunks are decoded and encoded in, per-thread scratch chunks, and how
projections are batched."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from diced.array._readplan import cpu_workers, read_workers
from diced.array.indexing import ChunkProjection

#: raw bytes of chunk data handled per write batch (one transaction)
BATCH_BYTES = 32 << 20

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
#: threads of the pool: decoding (local reads) and encoding (all writes) chunks
_WORKERS = cpu_workers()
#: threads sharing one local read, the calling one included (at most ``_WORKERS``)
_READERS = min(read_workers(), _WORKERS)


def _pool() -> ThreadPoolExecutor:
    """The process-wide pool of decode/encode threads."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="diced-chunks")
    return _POOL


_LOCAL = threading.local()


def _scratch(chunks: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A reusable chunk-sized buffer for the calling thread."""
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or buf.shape != chunks or buf.dtype != dtype:
        buf = np.empty(chunks, dtype=dtype)
        _LOCAL.buf = buf
    return buf


def _is_whole(p: ChunkProjection, chunks: Sequence[int]) -> bool:
    return all(s.start == 0 and s.stop == c for s, c in zip(p.chunk_sel, chunks, strict=True))


def _batches(projections: Iterable[ChunkProjection], chunk_nbytes: int,
             limit: int | None = None) -> Iterator[list[ChunkProjection]]:
    per = max(1, (limit or BATCH_BYTES) // max(1, chunk_nbytes))
    batch: list[ChunkProjection] = []
    for p in projections:
        batch.append(p)
        if len(batch) >= per:
            yield batch
            batch = []
    if batch:
        yield batch


def _chain(head: Iterable[Any], tail: Iterator[Any]) -> Iterator[Any]:
    yield from head
    yield from tail
