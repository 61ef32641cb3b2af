"""Recycled result buffers (diced.array.resultpool) and the GIL-free copies of cached chunks
(diced.array._copy_kernels): a buffer is reused only once every view of the result that
held it is gone, reads into a reused buffer are exact (no voxel of an earlier result shows
through), the limits and the decay hold, and bad settings raise."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest

import diced
from diced.array import _readplan
from diced.array.resultpool import ResultPool, _initial_size, _size_class, result_pool
from diced.backends.cache import _initial_size as _cache_initial_size
from diced.backends.cache import chunk_cache
from diced.errors import InvalidArgumentError

MiB = 1 << 20


def _addr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_a_buffer_comes_back_only_when_its_last_view_is_gone():
    pool = ResultPool(64 * MiB)
    a = pool.array((256, 256, 64), np.uint8)  # 4 MiB
    assert a.flags.c_contiguous and a.flags.writeable and not a.flags.owndata
    first = _addr(a)
    view = a[1:3, ::2]
    del a
    b = pool.array((256, 256, 64), np.uint8)
    assert _addr(b) != first  # ``view`` still holds the first buffer
    del view
    c = pool.array((256, 256, 64), np.uint8)
    assert _addr(c) == first
    st = pool.stats()
    assert (st["hits"], st["misses"], st["out"]) == (1, 2, 2)
    del b, c
    assert pool.stats()["out"] == 0 and pool.stats()["held"] == 2 * 4 * MiB


def test_sizes_share_classes_and_big_buffers_start_on_a_huge_page():
    pool = ResultPool(64 * MiB)
    a = pool.array((4 * MiB + 1000,), np.uint8)
    assert _addr(a) % (2 * MiB) == 0
    first = _addr(a)
    del a
    b = pool.array((4 * MiB + 5000,), np.uint8)  # the same class: 6 MiB
    assert _addr(b) == first and b.nbytes == 4 * MiB + 5000
    for n in (MiB, MiB + 1, 3 * MiB - 7, 100 * MiB + 3):
        c = _size_class(n)
        assert n <= c <= n + n // 8 + 2 * MiB and (c < 2 * MiB or c % (2 * MiB) == 0)


def test_small_large_and_disabled_results_are_plain_arrays():
    pool = ResultPool(8 * MiB)
    assert pool.array((100, 100), np.uint8).base is None  # under MIN_BYTES
    assert pool.array((16 * MiB,), np.uint8).base is None  # over the limit
    pool.resize(0)
    assert pool.array((4 * MiB,), np.uint8).base is None
    assert pool.stats()["misses"] == 0


def test_free_bytes_held_stay_under_the_limit_and_age_out():
    pool = ResultPool(10 * MiB, decay=3.0)  # long enough to check the limits first
    arrays = [pool.array((4 * MiB,), np.uint8) for _ in range(4)]
    del arrays
    assert pool.stats()["held"] == 8 * MiB  # two of the four: 16 MiB would pass the limit
    pool.resize(4 * MiB)
    assert pool.stats()["held"] == 4 * MiB
    deadline = time.monotonic() + 20
    while pool._bytes and time.monotonic() < deadline:  # (stats() would release them too)
        time.sleep(0.05)
    assert pool._bytes == 0  # released by the daemon thread, with no call into the pool
    while pool._thread is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool._thread is None  # and the thread has exited
    a = pool.array((4 * MiB,), np.uint8)  # a new result starts it again
    assert pool._thread is not None and pool._thread.is_alive()
    del a
    pool.clear()
    assert pool.stats()["held"] == 0


def test_buffers_freed_in_other_threads_and_in_collected_cycles_come_back():
    pool = ResultPool(64 * MiB)
    a = pool.array((4 * MiB,), np.uint8)
    first = _addr(a)
    holder: list = [a]
    holder.append(holder)  # a reference cycle
    del a, holder
    gc.collect()
    t = threading.Thread(target=lambda: pool.array((4 * MiB,), np.uint8))
    t.start()
    t.join()
    assert pool.stats()["hits"] == 1
    b = pool.array((4 * MiB,), np.uint8)
    assert _addr(b) == first


def test_live_results_never_share_a_buffer_under_concurrent_readers():
    pool = ResultPool(32 * MiB)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(200):
                a = pool.array((MiB + 4096 * (i % 3),), np.uint8)
                a[...] = k
                time.sleep(0)
                if not (a == k).all():
                    raise AssertionError("a live result was handed out again")
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    st = pool.stats()
    assert st["out"] == 0 and st["hits"] > 0 and st["held"] <= 32 * MiB


@pytest.mark.parametrize("bad", [-1, 1.5, "1", True])
def test_bad_sizes_raise(bad):
    with pytest.raises(InvalidArgumentError):
        ResultPool(64 * MiB).resize(bad)


@pytest.mark.parametrize("name,initial", [("DICED_RESULT_POOL_BYTES", _initial_size),
                                          ("DICED_CHUNK_CACHE_BYTES", _cache_initial_size)])
def test_the_environment_sets_the_default(monkeypatch, name, initial):
    monkeypatch.setenv(name, "12345678")
    assert initial() == 12345678
    monkeypatch.setenv(name, "0")
    assert initial() == 0
    for bad in ("lots", "-5", "1.5"):
        monkeypatch.setenv(name, bad)
        with pytest.raises(InvalidArgumentError, match=name):
            initial()
    monkeypatch.setenv(name, "  ")
    assert 0 < initial() <= 4 << 30
    monkeypatch.delenv(name)
    assert 0 < initial() <= 4 << 30


@pytest.fixture
def cached():
    c = chunk_cache()
    old = c.max_bytes
    c.clear()
    c.resize(256 << 20)
    yield c
    c.clear()
    c.resize(old)


@pytest.mark.all_backends
def test_reads_into_reused_buffers_show_nothing_of_earlier_results(store, cached):
    """A recycled buffer is not zeroed: every voxel of a read must be written, stored
    chunks and unwritten (fill value) ones alike, cold and warm."""
    pool = result_pool()
    repo = store.create_repo("r")
    shape = (96, 128, 128)  # 1.5 MiB of uint8: pooled
    a = repo.create_array("a", "uint8", shape, chunks=(32, 64, 64), fill_value=7)
    b = repo.create_array("b", "uint8", shape, chunks=(32, 64, 64))
    a[...] = 200
    b[40:70, 10:100, 5:120] = 3  # most of b is its fill value, 0
    want_b = np.zeros(shape, np.uint8)
    want_b[40:70, 10:100, 5:120] = 3
    v = repo.commit("lock")
    want_a = np.full(shape, 200, np.uint8)
    before = pool.stats()["hits"]
    for src in (a, b, a.at(v), b.at(v), b.at(v), a.at(v), b.at(v)):
        got = src[...]
        assert np.array_equal(got, want_b if src.name == "b" else want_a)
        del got
    assert pool.stats()["hits"] > before


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.uint64, np.complex128])
@pytest.mark.parametrize("shape,chunks,sels", [
    ((40, 50, 60), (16, 16, 16), [np.s_[...], np.s_[3:37, 1:49, 7:58], np.s_[15:17, 0, 2:3],
                                  np.s_[::-1, 5:9, ::2], np.s_[39, 49, 59]]),
    ((70, 90), (32, 32), [np.s_[...], np.s_[5:66, 31:33], np.s_[69, :], np.s_[::3, 1:80]]),
])
def test_warm_reads_copy_exactly(tmp_path, cached, dtype, shape, chunks, sels):
    """Cached chunks are copied by the numba row kernel (whole step-1 boxes) or numpy (the
    rest), in one thread or several (BOX_COPY_BYTES): the same values either way."""
    import diced.array._readcache as rc

    rng = np.random.default_rng(5)
    data = (rng.integers(0, 120, shape) * (1 + 1j if np.dtype(dtype).kind == "c" else 1)
            ).astype(dtype)
    with diced.Store(tmp_path / "s.diced") as store:
        repo = store.create_repo("r")
        arr = repo.create_array("a", dtype, shape, chunks=chunks)
        arr[...] = data
        a = arr.at(repo.commit("lock"))
        for split in (1 << 30, 1):
            rc_limit = rc.BOX_COPY_BYTES
            rc.BOX_COPY_BYTES = split
            try:
                for sel in sels:
                    assert np.array_equal(a[sel], data[sel])  # cold, then cached
                    assert np.array_equal(a[sel], data[sel])
            finally:
                rc.BOX_COPY_BYTES = rc_limit
        assert cached.stats()["hits"] > 0


def test_pooled_results_keep_the_huge_page_start(monkeypatch):
    """With the pool off, result_array keeps its own rule; with it on, pooled results of
    2 MiB and more start on a huge page."""
    pool = result_pool()
    old = pool.max_bytes
    pool.resize(64 * MiB)
    try:
        a = _readplan.result_array((2049, 1024), np.uint8)
        assert _addr(a) % (2 * MiB) == 0 and a.shape == (2049, 1024)
        a[...] = 3
        assert int(a.sum()) == 3 * a.size
    finally:
        pool.resize(old)
