"""How many threads a read uses: decode-bound stores (LMDB) a few more than the cores; object
stores (fsspec: s3, gs, file, memory), where most of a read is waiting on requests, enough
threads that the chunk groups of a read are all in flight at once (each group is one bulk, concurrent
request round), with a bounded number of groups in memory."""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from diced.array.resultpool import _HUGE, huge_aligned, result_pool

#: threads reading object stores (groups of chunks in flight at once)
IO_WORKERS = 16

_POOL: ThreadPoolExecutor | None = None
_LOCK = threading.Lock()


def io_pool() -> ThreadPoolExecutor:
    """The shared pool for reads from object stores."""
    global _POOL
    if _POOL is None:
        with _LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=IO_WORKERS,
                                           thread_name_prefix="diced-io")
    return _POOL


def cpu_workers() -> int:
    """Threads for decode- and encode-bound work (LMDB reads, all writes): two more than the
    cores, at least four. blosc2 and numpy release the GIL, so these threads decode in
    parallel; a few more threads than cores keep the cores busy while a thread waits for the
    GIL, and on a machine shared with other processes they keep diced's share of the CPU
    (a box read of 8-27 chunks ran 2-2.6x faster with four threads than with two on this
    2-core VM at load 16, at the same CPU time)."""
    return max(4, (os.cpu_count() or 2) + 2)


def read_workers() -> int:
    """Threads sharing a local read (the calling thread plus pool threads): one per core
    this process may run on, at least two. They take chunks from one shared queue, so they
    need no extra threads to stay balanced, and more threads than cores only queue for the
    GIL between chunks (20 unaligned 100^3 boxes of a 512^3 uint8 array on this 2-core VM,
    medians of 15 interleaved runs: 85 ms with two, 87 ms with three, 95 ms with four)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 2
    return max(2, cores)


#: results of at least this many bytes, and at most :data:`_ALIGN_MAX`, start on a huge page
_ALIGN_MIN = _HUGE
_ALIGN_MAX = 64 << 20


def _huge_pages() -> bool:
    """Whether numpy marks its large allocations for transparent huge pages (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(np._core.multiarray._get_madvise_hugepage())
    except AttributeError:  # numpy < 2
        return False


_HUGE_OK = _huge_pages()


def result_array(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A new, uninitialized array for the result of a read.

    A warm read (cached chunks) spends most of its time on the page faults of the fresh
    memory it copies into: 512 per 2 MiB. numpy marks allocations of 4 MiB and more for
    transparent huge pages (one fault per 2 MiB), but where a result starts is up to malloc,
    so its first and last 2 MiB stay in small pages, and results under 4 MiB (a 64^3 uint64
    label block is 2 MiB) get none. A result of 2-64 MiB is therefore placed at a 2 MiB
    boundary inside a slightly larger numpy allocation (the slack is address space only,
    never touched), when that wastes at most an eighth of it in its last huge page: 20
    warm 64^3 uint64 boxes 31-35 -> 20-24 ms on this VM. The result is then a view
    (``result.base`` is the allocation); elsewhere, and for other sizes, ``numpy.empty``.
    Results of :data:`~diced.array.resultpool.MIN_BYTES` and more come from the result pool
    (:mod:`diced.array.resultpool`) unless it is turned off."""
    dtype = np.dtype(dtype)
    n = dtype.itemsize
    for d in shape:
        n *= int(d)
    pool = result_pool()
    if pool.takes(n):
        return pool.array(shape, dtype)
    if not _HUGE_OK or not _ALIGN_MIN <= n <= _ALIGN_MAX or (-n) % _HUGE > n // 8:
        return np.empty(shape, dtype)
    return huge_aligned(n).view(dtype).reshape(shape)
