"""The cache of decoded chunks of locked versions (diced.backends.cache): the cached path
gives exactly what the uncached path gives, only locked versions are cached, the size limit
holds and the counters count."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import diced
from diced.backends.cache import ChunkCache
from diced.errors import InvalidArgumentError

pytestmark = pytest.mark.all_backends



SELECTIONS = [
    (slice(None),) * 3,
    (slice(3, 17), slice(0, 9), slice(5, 20)),
    (4, 5, 6),
    (slice(None, None, 3), 2, slice(1, 19, 2)),
    (slice(8, 16), slice(8, 16), slice(0, 8)),   # exactly one chunk
    (slice(20, 24),) * 3,                        # nothing stored there
]


def _uncached(arr, sel, cache):
    old = cache.max_bytes
    cache.resize(0)
    try:
        return np.asarray(arr[sel])
    finally:
        cache.resize(old)


def test_cached_reads_equal_uncached(store, cache):
    repo = store.create_repo("r")
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (24, 24, 24), dtype=np.uint8)
    data[16:, 16:, 16:] = 0
    arr = repo.create_array("img", "uint8", data.shape, chunks=(8, 8, 8))
    arr[...] = data
    assert cache.stats()["entries"] == 0
    for sel in SELECTIONS:
        arr[sel]
    assert cache.stats()["hits"] == cache.stats()["misses"] == 0  # open version: no lookups
    repo.commit("lock")
    assert arr.locked
    slow = [_uncached(arr, sel, cache) for sel in SELECTIONS]
    for _ in range(2):
        for sel, ref in zip(SELECTIONS, slow):
            got = arr[sel]
            assert np.array_equal(got, data[sel])
            assert np.array_equal(got, ref)
    st = cache.stats()
    assert st["hits"] > 0 and st["entries"] > 0 and 0 < st["hit_rate"] < 1
    # fancy selections on cached chunks
    idx = np.array([1, 9, 17, 23])
    assert np.array_equal(arr.oindex[idx, 3, idx], data[np.ix_(idx, [3], idx)][:, 0, :])
    assert np.array_equal(arr.vindex[idx, idx, idx], data[idx, idx, idx])


def test_open_version_never_served_from_cache(store, cache):
    repo = store.create_repo("r")
    arr = repo.create_array("img", "uint8", (16, 16, 16), chunks=(8, 8, 8))
    arr[...] = 1
    v1 = repo.commit("one")
    assert np.all(arr.at(v1)[...] == 1)  # now cached for v1
    n = cache.stats()["entries"]
    assert n == 8
    repo.newversion("two")  # open child: its reads bypass the cache, its writes show
    arr[0:8, 0:8, 0:8] = 7
    assert arr[0, 0, 0] == 7 and cache.stats()["entries"] == n
    assert arr.at(v1)[0, 0, 0] == 1  # the locked parent is unchanged
    v2 = repo.commit("lock two")
    got = arr.at(v2)[...]
    assert got[0, 0, 0] == 7 and got[15, 15, 15] == 1
    assert cache.stats()["entries"] == 16  # cached only after locking


@pytest.mark.parametrize("kernel", [False, True])
def test_labels_mapping_applied_to_copies(store, cache, monkeypatch, kernel):
    """The mapping is applied to the copies, by numpy's path and by the numba row copies
    (results of BOX_COPY_BYTES and more), never to the cached chunks."""
    import diced.array._readcache as rc

    monkeypatch.setattr(rc, "BOX_COPY_BYTES", 1 if kernel else 1 << 40)
    repo = store.create_repo("r")
    seg = repo.create_labels("seg", (128, 64, 64))  # two label blocks
    data = np.zeros((128, 64, 64), np.uint64)
    data[:90] = 5
    data[90:] = 9
    seg[...] = data
    seg.merge(5, [9])
    v = repo.commit("merged")
    a = seg.at(v)
    for _ in range(2):
        assert np.all(a[...] == 5)
        assert np.array_equal(a.read(supervoxels=True), data)
        assert np.all(a[3:120, 1:63, 2:60] == 5)
        assert np.all(a[:, 3, :] == 5)  # an axis dropped, both blocks
        # reads inside one block take the one-chunk shortcut
        assert a[100, 3, 4] == 5 and np.all(a[64:128, :, :] == 5)
        assert a.read((100, 3, 4), supervoxels=True) == 9
    assert cache.stats()["hits"] > 0


def test_size_limit_and_counters():
    c = ChunkCache(3000)
    for i in range(5):
        c.put(i, np.zeros(1000, np.uint8))
    assert len(c) == 3 and c.nbytes == 3000 and c.stats()["evictions"] == 2
    assert c.get(0) is None and c.get(4) is not None
    assert c.stats()["hits"] == 1 and c.stats()["misses"] == 1
    assert c.stats()["hit_rate"] == 0.5
    got = c.get(4)
    with pytest.raises(ValueError):
        got[0] = 1  # cached chunks are read-only
    c.put("big", np.zeros(4000, np.uint8))  # larger than the limit: not stored
    assert c.get("big") is None and c.nbytes <= 3000
    c.resize(1000)
    assert len(c) == 1
    c.resize(0)
    assert not c.enabled and len(c) == 0
    for bad in (-1, 1.5, "10", True):
        with pytest.raises(InvalidArgumentError):
            c.resize(bad)


def test_prefetch_warms_neighbours_of_locked_versions_only(store, cache):
    repo = store.create_repo("r")
    data = np.arange(32 ** 3, dtype=np.uint32).reshape(32, 32, 32)
    arr = repo.create_array("img", "uint32", data.shape, chunks=(8, 8, 8))
    arr[...] = data
    assert arr.prefetch(np.s_[8:16, 8:16, 8:16]).result() == 0  # open version: nothing
    assert len(cache) == 0
    v = repo.commit("lock")
    a = arr.at(v)
    assert a.prefetch(np.s_[9:15, 8:16, 10], margin=1).result() == 27
    assert len(cache) == 27
    cache.reset_stats()
    got = a[0:24, 0:24, 0:24]  # the neighbours: all hits
    assert np.array_equal(got, data[0:24, 0:24, 0:24])
    assert cache.stats()["misses"] == 0 and cache.stats()["hits"] == 27
    assert a.prefetch(np.s_[0, 0, 0], margin=0).result() == 1
    cache.resize(8 * 8 * 8 * 4 * 2)  # room for two chunks: a 27-chunk prefetch is refused
    assert a.prefetch(np.s_[8:16, 8:16, 8:16]).result() == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(InvalidArgumentError):
            a.prefetch(np.s_[0:8], margin=bad)


@pytest.mark.backends("lmdb")
def test_same_tag_in_two_stores_is_two_entries(tmp_path, cache):
    """A tag's UUID is its name, so two stores can hold a locked version with the same UUID:
    the cache key includes the repo, and each store reads its own data."""
    import diced

    got = []
    for i in (1, 2):
        store = diced.Store(tmp_path / f"s{i}")
        repo = store.create_repo("r")
        arr = repo.create_array("img", "uint8", (16, 16), chunks=(8, 8))
        arr[...] = i
        repo.commit()
        repo.tag("v1")
        got.append(int(repo.version("v1").array("img")[0, 0]))
        got.append(int(repo.version("v1").array("img")[0, 0]))  # the cached read
    assert got == [1, 1, 2, 2]


def test_a_tag_made_again_on_another_version_reads_that_version(store, cache):
    """A deleted tag made again names another version under the same UUID (its name): the
    cache is keyed by version id (never reused), so reads through it see the new version."""
    repo = store.create_repo("r")
    arr = repo.create_array("img", "uint8", (16, 16), chunks=(8, 8))
    arr[...] = 1
    a = repo.commit("a")
    repo.newversion("b")
    arr[...] = 2
    b = repo.commit("b")
    repo.tag("t1", parent=a.uuid)
    assert (repo.version("t1").array("img")[...] == 1).all()
    assert cache.hits == 0 and (repo.version("t1").array("img")[...] == 1).all()
    assert cache.hits > 0  # the tag's chunks are cached
    repo.delete_version("t1")
    repo.tag("t1", parent=b.uuid)
    assert (repo.version("t1").array("img")[...] == 2).all()


def test_fully_cached_read_touches_neither_backend_nor_pool(store, cache, monkeypatch):
    """A read whose chunks are all cached is served in the calling thread in one lookup: no
    backend read, no hand-off to a thread pool (small warm reads are per-call overhead)."""
    from diced.datatypes.array import reading

    repo = store.create_repo("r")
    data = np.arange(24 ** 3, dtype=np.uint16).reshape(24, 24, 24)
    arr = repo.create_array("img", "uint16", data.shape, chunks=(8, 8, 8))
    arr[...] = data
    v = repo.commit("lock")
    a = arr.at(v)
    box = (slice(3, 21), slice(5, 19), slice(1, 23))
    assert np.array_equal(a[box], data[box])  # fills the cache
    before = cache.stats()

    def refuse(*args, **kwargs):
        raise AssertionError("a fully cached read used the backend or the pool")

    monkeypatch.setattr(a._space, "visit", refuse)
    monkeypatch.setattr(reading, "_pool", refuse)
    assert np.array_equal(a[box], data[box])
    assert np.array_equal(a[7, 8:20, 2], data[7, 8:20, 2])
    after = cache.stats()
    assert after["misses"] == before["misses"]
    assert after["hits"] == before["hits"] + 27 + 2  # 3x3x3 chunks, then 1x2x1


def test_partly_cached_read_reads_only_the_misses(store, cache, monkeypatch):
    repo = store.create_repo("r")
    data = np.random.default_rng(3).integers(0, 1000, (32, 32, 32), dtype=np.int32)
    arr = repo.create_array("img", "int32", data.shape, chunks=(8, 8, 8))
    arr[...] = data
    v = repo.commit("lock")
    a = arr.at(v)
    a[0:8, 0:8, 0:16]  # caches two chunks
    read: list[str] = []
    real = a._space.visit

    def counting(ckeys, ctx, fn, **kw):
        read.extend(ckeys)
        return real(ckeys, ctx, fn, **kw)

    monkeypatch.setattr(a._space, "visit", counting)
    assert np.array_equal(a[0:8, 0:8, 0:32], data[0:8, 0:8, 0:32])
    assert len(read) == 2  # the two chunks not cached yet


def test_large_cached_reads_copy_in_the_pool_exactly(store, cache, monkeypatch):
    """Above INLINE_COPY_BYTES / BOX_COPY_BYTES the cached copies are shared with the pool:
    same values, and an error in a pool share reaches the caller, on each of the three
    copy paths (numpy, the row copies of some cached chunks, a box of cached chunks)."""
    import diced.array._readcache as rc

    ck = rc.load_copy_kernels()  # the kernel paths (not the numpy copies made while they load)
    monkeypatch.setattr(rc, "INLINE_COPY_BYTES", 1)
    monkeypatch.setattr(rc, "BOX_COPY_BYTES", 1)
    repo = store.create_repo("r")
    data = np.random.default_rng(4).integers(0, 2 ** 40, (32, 32, 32), dtype=np.uint64)
    arr = repo.create_array("img", "uint64", data.shape, chunks=(8, 8, 8))
    arr[...] = data
    v = repo.commit("lock")
    a = arr.at(v)
    for sel in ((slice(None),) * 3, (slice(2, 31), slice(None, None, 3), slice(5, 27))):
        assert np.array_equal(a[sel], data[sel])
        assert np.array_equal(a[sel], data[sel])  # now from the cache
    calls = []

    def broken(p, chunk, out, post):
        calls.append(p.coords)
        if len(calls) == 5:
            raise RuntimeError("copy failed")
        out[p.out_sel] = chunk[p.chunk_sel]

    monkeypatch.setattr(rc, "_copy_out", broken)
    with pytest.raises(RuntimeError, match="copy failed"):
        a[2:31, ::3, 5:27]  # strided: numpy copies
    assert np.array_equal(a[...], data)  # a box of cached chunks: one kernel call per share
    real_grid = ck.copy_grid

    def broken_grid(addrs, q0, q1, geo, dst, stream):
        if q0 > 0:
            raise RuntimeError("grid share failed")
        real_grid(addrs, q0, q1, geo, dst, stream)

    monkeypatch.setattr(ck, "copy_grid", broken_grid)
    with pytest.raises(RuntimeError, match="grid share failed"):
        a[...]
    monkeypatch.setattr(ck, "copy_grid", real_grid)

    # some chunks cached, some not: the cached ones take the row copies of _BoxCopies
    cache.clear()
    assert np.array_equal(a[0:16, 0:16, 0:16], data[0:16, 0:16, 0:16])
    assert np.array_equal(a[...], data)
    cache.clear()
    a[0:16, 0:16, 0:16]

    def broken_share(self, i, k):
        if i == 1:
            raise RuntimeError("share failed")

    monkeypatch.setattr(rc._BoxCopies, "run", broken_share)
    with pytest.raises(RuntimeError, match="share failed"):
        a[...]


@pytest.mark.parametrize("dtype", ["uint8", "int16", ">u2", "float32", "complex128", "bool"])
@pytest.mark.parametrize("shape,chunks", [((37, 29, 41), (8, 16, 8)), ((45, 50), (16, 8)),
                                          ((100,), (16,)), ((9, 10, 11, 12), (4, 4, 4, 4))])
def test_boxes_of_cached_chunks_equal_numpy(tmp_path, cache, monkeypatch, dtype, shape, chunks):
    """Step-1 boxes, integers and edge chunks read from the cache by one kernel call
    (``_serve_box``, up to 3-d; 4-d takes the general path) equal numpy, for any dtype and
    row width, in one thread and in the pool's shares; a box with some chunks not cached
    reads the rest and counts each chunk lookup once. (The copies do not depend on the
    backend: LMDB only.)"""
    import diced.array._readcache as rc

    rc.load_copy_kernels()  # the kernel path (not the numpy copies made while it loads)
    rng = np.random.default_rng(len(shape))
    data = (rng.integers(0, 1000, shape) * 7.25).astype(dtype)
    repo = diced.Store(tmp_path / "s.lmdb").create_repo("r")
    arr = repo.create_array("a", dtype, shape, chunks=chunks)
    arr[...] = data
    a = arr.at(repo.commit("lock"))
    served = []
    real = rc._serve_box

    def counting(*args):
        got = real(*args)
        served.append(got[0])
        return got

    from diced.datatypes.array import reading

    monkeypatch.setattr(reading, "_serve_box", counting)
    assert np.array_equal(a[...], data)  # fills the cache
    sels = [(...,), tuple(slice(1, n - 2) for n in shape), tuple(slice(n // 3, n) for n in shape)]
    if len(shape) > 1:  # an integer drops an axis (in 1-d, a voxel: the one-chunk shortcut)
        sels.append((shape[0] - 1,) + tuple(slice(3, None) for n in shape[1:]))
    for split, stream in itertools.product((1 << 40, 1), (1 << 40, 0)):
        monkeypatch.setattr(rc, "BOX_COPY_BYTES", split)
        monkeypatch.setattr(rc, "STREAM_BYTES", stream)  # 0: every copy streams
        for sel in sels:
            served.clear()
            got = a[sel]
            assert got.dtype == a.dtype and np.array_equal(got, data[sel]), (sel, stream)
            assert served == ([True] if len(shape) <= 3 else [False])
    cache.clear()
    a[tuple(slice(0, c) for c in chunks)]  # one chunk cached
    cache.reset_stats()
    assert np.array_equal(a[...], data)
    n = int(np.prod([-(-s // c) for s, c in zip(shape, chunks)]))
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == n - 1


def test_warm_reads_copy_with_numpy_while_the_kernels_load(tmp_path, cache, monkeypatch):
    """Until the copy kernels are loaded (numba's import and machine code: about half a
    second, in a background thread that the first read finding its chunks cached starts),
    cached chunks are copied with numpy: the same values, each chunk looked up once, and
    no read waits for the loader. A cold read does not start it. Then the loader publishes
    the kernels."""
    import threading

    import diced.array._readcache as rc

    rng = np.random.default_rng(7)
    data = rng.integers(0, 2 ** 16, (40, 36, 44)).astype("uint16")
    repo = diced.Store(tmp_path / "s.lmdb").create_repo("r")
    arr = repo.create_array("a", "uint16", data.shape, chunks=(16, 16, 16))
    arr[...] = data
    a = arr.at(repo.commit("lock"))
    real_load, release, calls = rc._load_kernels, threading.Event(), []

    def slow_load():  # a loader that takes until the test releases it
        calls.append(threading.current_thread().name)
        assert release.wait(60)
        real_load()

    monkeypatch.setattr(rc, "_KERNELS", None)
    monkeypatch.setattr(rc, "_KERNELS_LOADER", None)
    monkeypatch.setattr(rc, "_load_kernels", slow_load)
    try:
        assert np.array_equal(a[...], data)  # cold: fills the cache
        assert rc._KERNELS_LOADER is None  # (a one-read process never loads them)
        monkeypatch.setattr(rc, "BOX_COPY_BYTES", 1)  # large results too: numpy copies
        cache.reset_stats()
        sels = ((...,), (slice(3, 37), slice(5, 30), slice(1, 44)), (slice(0, 40, 3), 7))
        for sel in sels:  # the loader is blocked: these cannot be waiting for it
            assert np.array_equal(a[sel], data[sel]), sel
        loader = rc._KERNELS_LOADER  # started by the first of them
        assert isinstance(loader, threading.Thread) and loader.name == "diced-copy-kernels"
        assert rc._KERNELS is None and loader.is_alive()
        assert cache.stats()["hits"] == 27 + 18 + 9 and cache.stats()["misses"] == 0
    finally:
        release.set()
    loader.join(120)
    assert calls == ["diced-copy-kernels"]  # one loader for all those reads
    assert rc._KERNELS is not None and rc._kernels() is rc._KERNELS
    served = []
    real_box = rc._serve_box

    def counting(*args):
        got = real_box(*args)
        served.append(got[0])
        return got

    from diced.datatypes.array import reading

    monkeypatch.setattr(reading, "_serve_box", counting)
    assert np.array_equal(a[3:37, 5:30, 1:44], data[3:37, 5:30, 1:44])
    assert served == [True]  # now the kernel


def test_get_many_counts_each_key_once_and_refreshes_lru_order():
    c = ChunkCache(3 * 4096)
    for key in "abc":
        c.put(key, np.zeros(512))  # 4096 bytes each: the cache is full
    got = c.get_many(["a", "x", "a", "y"])
    assert [g is None for g in got] == [False, True, False, True]
    assert c.stats()["hits"] == 2 and c.stats()["misses"] == 2
    c.put("d", np.zeros(512))  # evicts the least recently used: b, not a
    assert c.get("b") is None and c.get("a") is not None


def test_get_many_gives_the_addresses_of_the_chunks_found():
    c = ChunkCache(3 * 4096)
    a, b = np.arange(512.0), np.ones(512)
    c.put("a", a)
    c.put("b", b)
    c.put("b", b2 := np.full(512, 2.0))  # replaced: the new array's address
    addrs = np.full(3, -1, np.int64)
    got = c.get_many(["b", "x", "a"], addrs)
    assert got[0] is b2 and got[1] is None and got[2] is a
    assert addrs[0] == b2.ctypes.data and addrs[2] == a.ctypes.data and addrs[1] == -1
    for key in "cde":  # d evicts b, e evicts a: their addresses go with them
        c.put(key, np.zeros(512))
    assert len(c._addrs) == len(c) == 3 and set(c._addrs) == {"c", "d", "e"}
    c.clear()
    assert not c._addrs


def test_copies_of_a_store_that_went_separate_ways_read_their_own_data(tmp_path, cache):
    """Two copies of one store each lock a new version: same repo, maybe the same id for
    different versions (and, for tags, the same UUID). Each copy reads its own data."""
    import shutil

    import diced

    store = diced.Store(tmp_path / "a")
    repo = store.create_repo("r")
    repo.create_array("img", "uint8", (16, 16), chunks=(8, 8))[...] = 1
    repo.commit()
    store.close()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    got = []
    for name, value in (("a", 2), ("b", 3)):
        repo = diced.Store(tmp_path / name).open_repo("r")
        repo.newversion()
        repo.array("img")[...] = value
        v = repo.commit()
        repo.tag("t", parent=v.uuid)
        got.append((v.id, int(repo.version(v.uuid).array("img")[0, 0]),
                    int(repo.version("t").array("img")[0, 0])))
    for name in ("a", "b"):  # again, from the cache
        repo = diced.Store(tmp_path / name).open_repo("r")
        got.append((repo.version("t").id - 1, int(repo.version("master").array("img")[0, 0]),
                    int(repo.version("t").array("img")[0, 0])))
    assert got[0][0] == got[1][0]  # the same id in both copies
    assert [g[1:] for g in got] == [(2, 2), (3, 3), (2, 2), (3, 3)]
