"""Label arrays in the locked-chunk cache: chunks are kept as DVID label blocks and warm
reads decode only the voxels they return (diced.array.codecs._labelbox_kernels); every
selection gives exactly what an uncached read gives, with and without the kernels, and a
block is cached only after a full decode has checked it."""

from __future__ import annotations

import gzip
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_labelblock import build_block, label_blocks

import diced
import diced.array._readcache as rc
from diced.array.codecs import labelblock as lb
from diced.errors import CorruptDataError

PINKY = Path(__file__).parent / "data" / "pinky40-256-zyx.npy.gz"
DVID = Path(__file__).parent / "data" / "dvid"


def _kernels():
    k = rc.load_copy_kernels()
    assert k is not None
    return k


def _decode_part(block: bytes, lo, hi) -> np.ndarray:
    """The kernel's decode of block[lo:hi] into a fresh array (with a guard band)."""
    shape = tuple(b - a for a, b in zip(lo, hi))
    out = np.full((shape[0] + 2, shape[1] + 2, shape[2] + 2), 77, np.uint64)
    buf = np.frombuffer(block, np.uint8)
    inner = out[1:-1, 1:-1, 1:-1]
    dst = inner.ctypes.data
    _kernels().decode_part(buf.ctypes.data, lo[0], hi[0], lo[1], hi[1], lo[2], hi[2], dst,
                           out.strides[0], out.strides[1])
    guard = out.copy()
    guard[1:-1, 1:-1, 1:-1] = 77
    assert (guard == 77).all(), "the kernel wrote outside its box"
    return inner.copy()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_blocks(), st.data())
def test_decode_part_equals_slicing_the_decoded_block(arr, data):
    block = lb.encode_block(arr)
    lo, hi = [], []
    for n in arr.shape:
        a = data.draw(st.integers(0, n - 1))
        lo.append(a)
        hi.append(data.draw(st.integers(a + 1, n)))
    got = _decode_part(block, lo, hi)
    np.testing.assert_array_equal(got, arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])


@pytest.mark.parametrize("nlabels", [1, 2, 3, 200, 256, 257, 511, 512])
def test_decode_part_every_bit_width(nlabels):
    """Sub-blocks of 0-9 bits per value (512 labels in one sub-block: 9 bits, the widest)."""
    rng = np.random.default_rng(nlabels)
    pool = rng.integers(0, 2 ** 64, nlabels, dtype=np.uint64)
    arr = pool[rng.permutation(np.arange(512 * 2) % nlabels)].reshape(8, 8, 16)
    block = lb.encode_block(arr)
    for lo, hi in (((0, 0, 0), (8, 8, 16)), ((1, 2, 3), (7, 8, 13)), ((5, 5, 7), (6, 6, 9))):
        np.testing.assert_array_equal(_decode_part(block, lo, hi),
                                      arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])


def test_decode_part_dvid_blocks():
    """DVID's own bytes: the fib19 fixture, and sub-blocks with no labels (Ns = 0)."""
    block = gzip.decompress((DVID / "fib19-64x64x64-sample1-block.dat.gz").read_bytes())
    full = lb.decode_block(block)
    for lo, hi in (((0, 0, 0), (64, 64, 64)), ((3, 17, 60), (41, 18, 64)),
                   ((63, 0, 5), (64, 64, 6))):
        np.testing.assert_array_equal(_decode_part(block, lo, hi),
                                      full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
    zero = build_block((2, 1, 1), [3, 4], [0, 2], [1, 0], [None, [0, 1] * 256])
    np.testing.assert_array_equal(_decode_part(zero, (2, 1, 5), (8, 8, 12)),
                                  lb.decode_block(zero)[2:, 1:, 5:12])


@pytest.fixture(scope="module")
def pinky():
    if not PINKY.exists():
        pytest.skip(f"{PINKY} not available")
    with gzip.open(PINKY) as f:
        return np.ascontiguousarray(np.load(f)[:192, :128, :160].astype(np.uint64))


SELECTIONS = [
    (Ellipsis,),
    (slice(3, 130), slice(60, 127), slice(1, 159)),   # unaligned box, many blocks
    (slice(64, 128), slice(0, 64), slice(64, 128)),    # exactly one block
    (slice(70, 71), slice(5, 120), slice(9, 150)),     # a one-voxel-thick box
    (100, slice(None), slice(None)),                   # a z slice, as viewers read
    (slice(None), 77, slice(3, 140)),                  # a y slice
    (slice(None), slice(None), 150),                   # an x slice (width-1 rows)
    (5, 6, 7),                                         # one voxel
    (slice(2, 190, 5), slice(None), slice(10, 20)),    # strided: whole-block decode
    (slice(None, None, -3), slice(40, 80), slice(0, 100)),
]


@pytest.mark.all_backends
@pytest.mark.parametrize("with_kernels,split,stream", [
    (True, False, False), (True, True, False), (True, False, True), (True, True, True),
    (False, False, False)])
def test_label_arrays_cache_blocks_and_read_exactly(store, cache, monkeypatch, pinky,
                                                    with_kernels, split, stream):
    if split:  # every warm read decodes in two threads, this one and the pool's
        monkeypatch.setattr(rc, "DECODE_SPLIT_BYTES", 1)
    # every box read streams its layers out (0), or none does
    monkeypatch.setattr(rc, "STREAM_BYTES", 0 if stream else 1 << 40)
    if with_kernels:
        _kernels()
    else:  # the kernels never arrive: whole-block decodes and numpy copies
        release = threading.Event()
        monkeypatch.setattr(rc, "_KERNELS", None)
        monkeypatch.setattr(rc, "_KERNELS_LOADER", None)
        monkeypatch.setattr(rc, "_load_kernels", lambda: release.wait(60))
    try:
        repo = store.create_repo("r")
        seg = repo.create_labels("seg", pinky.shape)
        seg[...] = pinky
        v = repo.commit("lock")
        a = seg.at(v)
        for sel in SELECTIONS:
            cache.clear()
            expected = pinky[sel]
            np.testing.assert_array_equal(a[sel], expected)  # cold: fills the cache
            before = cache.stats()
            np.testing.assert_array_equal(a[sel], expected)  # warm
            after = cache.stats()
            assert after["misses"] == before["misses"], sel  # nothing read again
            assert after["hits"] > before["hits"], sel
        assert np.array_equal(a.oindex[[3, 100, 191], :, [0, 159]],
                              pinky[[3, 100, 191]][:, :, [0, 159]])
        idx = (np.array([0, 191, 64]), np.array([127, 0, 64]), np.array([5, 159, 63]))
        assert np.array_equal(a.vindex[idx], pinky[idx])
        a[...]
        entries = cache._items
        assert len(entries) == 3 * 2 * 3
        for value in entries.values():
            assert value.dtype == np.uint8 and value.ndim == 1 and not value.flags.writeable
        # the cache holds DVID blocks: a few percent of the decoded bytes
        assert cache.nbytes < pinky.nbytes // 8
        block = next(iter(entries.values()))
        assert lb.block_shape(block) == (64, 64, 64)
    finally:
        if not with_kernels:
            release.set()


def test_single_chunk_reads_load_the_kernels(tmp_path, cache, monkeypatch, pinky):
    """A viewer reading tiles that each lie in one chunk (no box read ever) gets the
    decode kernels too: the first warm tile starts loading them, the tiles read before they
    arrive decode whole blocks, and those after decode only the tile's voxels."""
    repo = diced.Store(tmp_path / "s.lmdb").create_repo("r")
    seg = repo.create_labels("seg", pinky.shape)
    seg[...] = pinky
    a = seg.at(repo.commit("lock"))
    real_load, release = rc._load_kernels, threading.Event()

    def slow_load():  # a loader that takes until the test releases it
        assert release.wait(60)
        real_load()

    monkeypatch.setattr(rc, "_KERNELS", None)
    monkeypatch.setattr(rc, "_KERNELS_LOADER", None)
    monkeypatch.setattr(rc, "_load_kernels", slow_load)
    tiles = [(z, slice(64, 128), slice(70, 128)) for z in range(64, 70)]  # in one chunk
    try:
        assert np.array_equal(a[tiles[0]], pinky[tiles[0]])  # cold: fills the cache
        assert rc._KERNELS_LOADER is None
        for t in tiles:  # warm, while the loader is blocked: whole-block decodes
            assert np.array_equal(a[t], pinky[t])
        loader = rc._KERNELS_LOADER
        assert isinstance(loader, threading.Thread) and loader.name == "diced-copy-kernels"
        assert rc._KERNELS is None and loader.is_alive()
    finally:
        release.set()
    loader.join(120)
    assert rc._KERNELS is not None
    parts = []
    real_part = rc._KERNELS.decode_part

    def counting(*args):
        parts.append(args[1:7])
        real_part(*args)

    monkeypatch.setattr(rc._KERNELS, "decode_part", counting)
    before = cache.stats()["misses"]
    for t in tiles:
        assert np.array_equal(a[t], pinky[t])
    assert cache.stats()["misses"] == before
    # only each tile's voxels were decoded: one plane, 64 rows, the tile's columns
    assert parts == [(t[0] - 64, t[0] - 63, 0, 64, 6, 64) for t in tiles]


@pytest.mark.all_backends
def test_open_version_reads_decode_only_their_planes(store, cache, monkeypatch, pinky):
    """At an open version (no cache), a selection that cuts a chunk's planes decodes only
    those planes of its block (``LabelBlockCodec.decode_rows``), and reads exactly."""
    repo = store.create_repo("r")
    seg = repo.create_labels("seg", pinky.shape)
    seg[...] = pinky
    repo.commit("lock")
    repo.newversion("open")
    seg[70:74, 10:20, 10:20] = 5  # a chunk of the open version itself, and the others below
    expected = pinky.copy()
    expected[70:74, 10:20, 10:20] = 5
    calls = []
    real = type(seg.codec).decode_rows

    def counting(self, data, shape, dtype, lo, hi, out):
        calls.append((lo, hi))
        return real(self, data, shape, dtype, lo, hi, out)

    monkeypatch.setattr(type(seg.codec), "decode_rows", counting)
    for sel in [(100, slice(None), slice(None)), (slice(70, 75), slice(0, 64), slice(0, 64)),
                (slice(3, 130), slice(60, 127), slice(1, 159)), (5, 6, 7), (Ellipsis,)]:
        calls.clear()
        np.testing.assert_array_equal(seg[sel], expected[sel])
        if sel == (Ellipsis,):
            assert calls == []  # whole chunks decode whole
        else:
            assert calls and all(hi - lo < 64 for lo, hi in calls), sel
    assert cache.stats()["hits"] == 0 and len(cache._items) == 0  # nothing cached


def test_merged_labels_map_the_decoded_voxels_never_the_cached_blocks(tmp_path, cache):
    _kernels()
    repo = diced.Store(tmp_path / "s.lmdb").create_repo("r")
    seg = repo.create_labels("seg", (128, 64, 64))
    data = np.zeros((128, 64, 64), np.uint64)
    data[:90] = 5
    data[90:] = 9
    seg[...] = data
    seg.merge(5, [9])
    a = seg.at(repo.commit("merged"))
    for _ in range(2):
        assert np.all(a[...] == 5) and np.all(a[3:120, 1:63, 2:60] == 5)
        assert np.array_equal(a.read(supervoxels=True), data)
        assert np.array_equal(a.read((slice(80, 100), 3), supervoxels=True), data[80:100, 3])
        assert a[100, 3, 4] == 5 and a.read((100, 3, 4), supervoxels=True) == 9
    for block in cache._items.values():
        assert set(lb.block_labels(block).tolist()) <= {5, 9}


def test_a_corrupt_block_is_not_cached(tmp_path, cache, monkeypatch):
    """A block is cached only after a full decode has checked it: a read that meets a
    corrupt block raises, and the block is not kept for the next read."""
    repo = diced.Store(tmp_path / "s.lmdb").create_repo("r")
    seg = repo.create_labels("seg", (64, 64, 128))
    data = np.arange(64 * 64 * 128, dtype=np.uint64).reshape(64, 64, 128) % 7
    seg[...] = data
    a = seg.at(repo.commit("lock"))
    real = seg.codec.decode_block_bytes

    def corrupt(data, shape):
        block = bytearray(real(data, shape))
        block[16 + 8 * 7:16 + 8 * 7 + 2] = b"\xff\xff"  # Ns of the first sub-block: 65535
        return bytes(block)

    monkeypatch.setattr(type(seg.codec), "decode_block_bytes", lambda self, d, s: corrupt(d, s))
    with pytest.raises(CorruptDataError):
        a[...]
    assert len(cache) == 0
    monkeypatch.undo()
    assert np.array_equal(a[...], data)
    assert len(cache) == 2
