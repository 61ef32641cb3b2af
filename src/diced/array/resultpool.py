"""Result buffers of reads, recycled (:class:`ResultPool`).

A read copies its chunks into a fresh result array, and the kernel faults that memory in
page by page (512 faults per 2 MiB in small pages, or one huge page that must first be
found, compacted and zeroed). On this 2-core VM that was most of a warm read (cached
chunks), and a 1 GiB label read took 0.34 s with 0.15 s of system time when huge pages
were free and 0.66-1.06 s with 0.6-1.2 s of it when the kernel had to compact memory first.

Allocators such as jemalloc keep freed memory for a few seconds because a program that
frees a large buffer usually allocates one of the same size soon; a viewer or a notebook
loop reading box after box of one size does exactly that. So large results are handed
out from this pool: when the last view of a result is gone, its buffer (already faulted
in) comes back and the next read of that size class reuses it. Free buffers are kept at
most :attr:`ResultPool.max_bytes` in all, and each at most :data:`DECAY` seconds; a daemon
thread releases them, and exits once the pool holds nothing. Results stay ordinary numpy
arrays (a view whose ``base`` chain ends at a memoryview).

The environment variable ``DICED_RESULT_POOL_BYTES`` sets the limit (``0`` turns the pool
off); :func:`result_pool` is the process-wide pool; its :meth:`~ResultPool.stats` count
hits and misses.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import weakref
from typing import Any

import numpy as np

from diced._limits import byte_limit, env_byte_limit

__all__ = ["DECAY", "MIN_BYTES", "ResultPool", "huge_aligned", "result_pool"]

#: results smaller than this come from numpy (malloc reuses freed blocks of these sizes
#: without new page faults: 0-2 faults per 256 KiB array on this VM, 9-20 per 1-4 MiB)
MIN_BYTES = 1 << 20
#: seconds a free buffer is kept for reuse (jemalloc's default dirty decay is 10 s)
DECAY = 5.0
#: transparent huge page size on Linux (x86-64 and arm64 with 4 KiB pages)
_HUGE = 2 << 20


def _size_class(n: int) -> int:
    """``n`` rounded up to one of 8 sizes per power of two, and to whole huge pages from
    2 MiB up: reuse across nearby sizes wastes at most an eighth."""
    step = max(1 << max(0, n.bit_length() - 4), 4096)
    c = -(-n // step) * step
    return -(-c // _HUGE) * _HUGE if c >= _HUGE else c


class ResultPool:
    """Recycled result buffers (see the module docstring). Thread-safe."""

    def __init__(self, max_bytes: int, *, decay: float = DECAY,
                 min_bytes: int = MIN_BYTES) -> None:
        self.decay = decay
        self.min_bytes = min_bytes
        self.max_bytes = 0
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        # size class -> free buffers, the most recently returned last
        self._free: dict[int, list[tuple[float, np.ndarray]]] = {}
        self._bytes = 0  # bytes of free buffers held
        self._out = 0    # buffers handed out and not back yet
        # buffers whose last view is gone; appended by finalizers, which run wherever the
        # last reference drops (in any thread, inside a garbage collection), so they take
        # no lock: deque.append is atomic
        self._returned: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._thread: threading.Thread | None = None
        self.resize(max_bytes)

    def resize(self, max_bytes: int) -> None:
        """Set the limit on free bytes kept (``0``: keep none, hand out plain arrays)."""
        limit = byte_limit(max_bytes, "result pool size")
        with self._lock:
            self.max_bytes = limit
            self._collect(time.monotonic())

    def clear(self) -> None:
        """Release every free buffer now (buffers in use come back later as usual)."""
        with self._lock:
            self._drain(time.monotonic())
            self._free.clear()
            self._bytes = 0

    def stats(self) -> dict[str, int]:
        """``hits`` (results served from a recycled buffer), ``misses`` (pooled sizes
        allocated anew), ``held`` (free bytes kept), ``out`` (pooled results in use)."""
        with self._lock:
            self._drain(time.monotonic())
            return {"hits": self.hits, "misses": self.misses, "held": self._bytes,
                    "out": self._out, "max_bytes": self.max_bytes}

    def takes(self, n: int) -> bool:
        """Whether a result of ``n`` bytes comes from the pool."""
        return self.min_bytes <= n <= self.max_bytes and self.max_bytes > 0

    def array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A new, uninitialized C-ordered array; from the pool when it :meth:`takes` it."""
        dtype = np.dtype(dtype)
        n = dtype.itemsize
        for d in shape:
            n *= int(d)
        if not self.takes(n):
            return np.empty(shape, dtype)
        cls = _size_class(n)
        now = time.monotonic()
        with self._lock:
            self._drain(now)
            free = self._free.get(cls)
            if free:
                _, raw = free.pop()
                self._bytes -= cls
                self.hits += 1
            else:
                raw = None
                self.misses += 1
            self._out += 1
            self._start_thread()
        if raw is None:
            raw = huge_aligned(cls)
        # numpy keeps its own memoryview of ``raw`` as the result's last base: every view of
        # the result holds it, so its finalizer runs once the last of them is gone
        out = np.frombuffer(memoryview(raw)[:n], dtype).reshape(shape)
        base: Any = out
        while isinstance(base, np.ndarray):
            base = base.base
        weakref.finalize(base, self._returned.append, (cls, raw)).atexit = False
        return out

    # -- under the lock ------------------------------------------------------------------

    def _drain(self, now: float) -> None:
        """File the returned buffers as free, then release what is over the limits."""
        while self._returned:
            cls, raw = self._returned.popleft()
            self._out -= 1
            self._free.setdefault(cls, []).append((now, raw))
            self._bytes += cls
        self._collect(now)

    def _collect(self, now: float) -> None:
        """Release free buffers older than ``decay``, then the oldest until under the limit."""
        if not self._bytes:
            return
        for cls in list(self._free):
            kept = [(t, raw) for t, raw in self._free[cls] if now - t < self.decay]
            self._bytes -= cls * (len(self._free[cls]) - len(kept))
            if kept:
                self._free[cls] = kept
            else:
                del self._free[cls]
        while self._bytes > self.max_bytes:
            cls = min(self._free, key=lambda c: self._free[c][0][0])
            self._free[cls].pop(0)
            self._bytes -= cls
            if not self._free[cls]:
                del self._free[cls]

    def _start_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._release_loop, daemon=True,
                                            name="diced-result-pool")
            self._thread.start()

    def _release_loop(self) -> None:
        """Release free buffers as they age; exit once nothing is held or handed out (the
        next pooled result starts the thread again)."""
        while True:
            time.sleep(min(1.0, self.decay / 2))
            with self._lock:
                self._drain(time.monotonic())
                if not self._bytes and not self._out and not self._returned:
                    self._thread = None
                    return


def huge_aligned(n: int) -> np.ndarray:
    """``n`` uninitialized bytes starting on a huge page when ``n`` spans some (numpy marks
    allocations of 4 MiB and more for transparent huge pages; the slack is address space
    only, never touched)."""
    if n < _HUGE:
        return np.empty(n, np.uint8)
    raw = np.empty(n + _HUGE, np.uint8)
    off = (-raw.ctypes.data) % _HUGE
    return raw[off:off + n]


def _initial_size() -> int:
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not POSIX
        ram = 8 << 30
    return env_byte_limit("DICED_RESULT_POOL_BYTES", int(min(4 << 30, ram // 16)))


_POOL: ResultPool | None = None
_POOL_LOCK = threading.Lock()


def _forget() -> None:
    """In a forked child: a new pool, made under a new lock (the parent's locks may have
    been held at the fork, and its release thread does not exist here)."""
    global _POOL, _POOL_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def result_pool() -> ResultPool:
    """The process-wide pool of read result buffers."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ResultPool(_initial_size())
    return _POOL
