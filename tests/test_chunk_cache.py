"""The cache of decoded chunks of locked versions (diced.backends.cache): the cached path
gives exactly what the uncached path gives, only locked versions are cached, the size limit
holds and the counters count."""

from __future__ import annotations

import numpy as np
import pytest

from diced.backends.cache import ChunkCache, chunk_cache
from diced.errors import InvalidArgumentError

pytestmark = pytest.mark.all_backends


@pytest.fixture
def cache():
    c = chunk_cache()
    old = c.max_bytes
    c.clear()
    c.reset_stats()
    c.resize(64 << 20)
    yield c
    c.clear()
    c.reset_stats()
    c.resize(old)



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


def test_labels_mapping_applied_to_copies(store, cache):
    repo = store.create_repo("r")
    seg = repo.create_labels("seg", (64, 64, 64))
    data = np.zeros((64, 64, 64), np.uint64)
    data[:30] = 5
    data[30:] = 9
    seg[...] = data
    seg.merge(5, [9])
    v = repo.commit("merged")
    a = seg.at(v)
    for _ in range(2):
        assert np.all(a[...] == 5)
        assert np.array_equal(a.read(supervoxels=True), data)
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
