"""How many threads a read uses: decode-bound stores (LMDB) a few more than the cores; object
stores (fsspec: s3, gs, file, memory), where most of a read is waiting on requests, enough
threads that the chunk groups of a read are all in flight at once (each group is one bulk, concurrent
request round), with a bounded number of groups in memory."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

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
