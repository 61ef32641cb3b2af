"""How many threads a read uses: decode-bound stores (LMDB) one per core; object stores
(fsspec: s3, gs, file, memory), where most of a read is waiting on requests, enough threads
that the chunk groups of a read are all in flight at once (each group is one bulk, concurrent
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
    """Threads for decode-bound reads."""
    return max(2, os.cpu_count() or 2)
