"""Fast read paths give exactly what the slow paths give, on every backend: partial blosc2
decode of the rows a read needs, and object-store reads with many groups in flight."""

from __future__ import annotations

import numpy as np
import pytest

import diced
from diced.array import _readplan
from diced.array.codecs import _blosc_partial
from diced.array.codecs.blosc import BloscCodec

pytestmark = [pytest.mark.all_backends, pytest.mark.usefixtures("no_chunk_cache")]

SELECTIONS = [
    (slice(None),) * 3,
    (slice(3, 29), slice(5, 30), slice(1, 31)),
    (slice(15, 17), slice(None), slice(None)),
    (9, slice(2, 20), slice(None)),
    (slice(1, 31, 3), slice(4, 9), 7),
    (slice(8, 9), slice(8, 9), slice(8, 9)),
    (slice(30, 31), 0, 0),
]


@pytest.fixture
def arr(store_location):
    store = diced.Store(store_location, **store_location.options)
    repo = store.create_repo("r")
    rng = np.random.default_rng(3)
    data = (rng.normal(100, 20, (32, 32, 32)).clip(0, 255)).astype(np.uint16)
    a = repo.create_array("img", "uint16", data.shape, chunks=(16, 16, 16),
                          codec={"name": "blosc", "cname": "zstd", "clevel": 1})
    a[...] = data
    yield a, data
    store.close()


def _slow(monkeypatch):
    monkeypatch.setattr(_blosc_partial, "_LIB", None)
    monkeypatch.setattr(_blosc_partial, "_TRIED", True)


def test_partial_decode_equals_full_decode(arr, monkeypatch):
    a, data = arr
    assert _blosc_partial._lib() is not None  # the fast path is really taken here
    fast = [a[s] for s in SELECTIONS]
    _slow(monkeypatch)
    slow = [a[s] for s in SELECTIONS]
    for s, f, w in zip(SELECTIONS, fast, slow, strict=True):
        assert np.array_equal(f, data[s]) and np.array_equal(f, w)


def test_partial_decode_rows(arr):
    a, data = arr
    payload = a.codec.encode(np.ascontiguousarray(data[:16, :16, :16]))
    out = np.zeros((16, 16, 16), np.uint16)
    assert a.codec.decode_rows(payload, (16, 16, 16), np.uint16, 3, 11, out)
    assert np.array_equal(out[3:11], data[3:11, :16, :16])
    assert not out[:3].any() and not out[11:].any()
    assert not a.codec.decode_rows(payload, (16, 16, 16), np.uint16, 5, 5, out)  # empty
    with pytest.raises(diced.errors.CorruptDataError):
        a.codec.decode_rows(payload[:40] + b"\0" * 10, (16, 16, 16), np.uint16, 0, 4, out)


def test_many_groups_in_flight_equal_few(arr, monkeypatch):
    a, data = arr
    many = [a[s] for s in SELECTIONS]
    monkeypatch.setattr("diced.datatypes.array.reading.IO_WORKERS", 2)
    few = [a[s] for s in SELECTIONS]
    for s, m, f in zip(SELECTIONS, many, few, strict=True):
        assert np.array_equal(m, data[s]) and np.array_equal(m, f)
    assert _readplan.io_pool()._max_workers == _readplan.IO_WORKERS


@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_shared_queue_reads_every_chunk_once(arr, monkeypatch, workers):
    """Local reads: threads take batches from one queue, costliest chunks first; every chunk
    is read exactly once whatever the thread count."""
    a, data = arr
    if not a._space.ordered:
        pytest.skip("object stores read fixed groups, all in flight")
    monkeypatch.setattr("diced.datatypes.array._common._READERS", workers)
    seen: list[str] = []
    real = a._space.visit

    def counting(ckeys, ctx, fn, **kw):
        seen.extend(ckeys)
        return real(ckeys, ctx, fn, **kw)

    monkeypatch.setattr(a._space, "visit", counting)
    for s in SELECTIONS:
        seen.clear()
        assert np.array_equal(a[s], data[s])
        assert len(seen) == len(set(seen))
    seen.clear()
    box = (slice(14, 32), slice(0, 32), slice(0, 16))  # 2 rows of one chunk layer, 16 of the next
    assert np.array_equal(a[box], data[box])
    assert len(seen) == len(set(seen)) == 4


def test_shared_queue_stops_and_raises_on_a_bad_chunk(arr, monkeypatch):
    a, data = arr
    if not a._space.ordered:
        pytest.skip("object stores read fixed groups, all in flight")
    monkeypatch.setattr("diced.datatypes.array._common._READERS", 3)
    calls = []

    def bad(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise diced.errors.CorruptDataError("damaged chunk")
        return False  # decode the whole chunk instead

    monkeypatch.setattr(a.codec, "decode_rows", bad)
    monkeypatch.setattr(a.codec, "decode_box", lambda *args: False, raising=False)
    with pytest.raises(diced.errors.CorruptDataError, match="damaged chunk"):
        a[1:31, 1:31, 1:31]
    assert len(calls) < 8  # the others stopped taking chunks
    monkeypatch.undo()
    assert np.array_equal(a[1:31, 1:31, 1:31], data[1:31, 1:31, 1:31])


def test_decode_box_copies_exactly_the_box():
    """The GIL-free decode-and-copy kernel of blosc2 chunks: the box it writes equals numpy
    slicing of the chunk, for every dtype and wherever the box sits; nothing else is written."""
    import blosc2

    rng = np.random.default_rng(5)
    for dt in (np.uint8, np.int16, np.float32, np.uint64, np.complex128):
        chunk = (rng.normal(0, 50, (16, 12, 20)) * 3).astype(dt)
        payload = blosc2.compress2(chunk, typesize=chunk.dtype.itemsize, clevel=1,
                                   codec=blosc2.Codec.ZSTD)
        codec = BloscCodec()
        for _ in range(20):
            z0, y0, x0 = (int(rng.integers(0, n)) for n in chunk.shape)
            z1, y1, x1 = (int(rng.integers(lo + 1, n + 1)) for lo, n in zip((z0, y0, x0), chunk.shape))
            out = np.full((20, 20, 25), 7, dt)
            oz, oy, ox = (int(rng.integers(0, m - (hi - lo) + 1))
                          for m, lo, hi in zip(out.shape, (z0, y0, x0), (z1, y1, x1)))
            scratch = np.empty_like(chunk)
            box = np.array([z0, z1, y0, y1, x0, x1], np.int64)
            assert codec.decode_box(payload, z0, z1, box, np.array([oz, oy, ox], np.int64),
                                      scratch, out)
            want = np.full_like(out, 7)
            want[oz:oz + z1 - z0, oy:oy + y1 - y0, ox:ox + x1 - x0] = chunk[z0:z1, y0:y1, x0:x1]
            assert np.array_equal(out, want)


def test_decode_box_refuses_damaged_and_foreign_chunks():
    import blosc2

    codec = BloscCodec()
    chunk = np.random.default_rng(6).integers(0, 999, (16, 16, 16)).astype(np.uint16)
    payload = codec.encode(chunk)
    box, origin = np.array([0, 4, 0, 16, 0, 16], np.int64), np.zeros(3, np.int64)
    out, scratch = np.zeros((4, 16, 16), np.uint16), np.empty_like(chunk)
    with pytest.raises(diced.errors.CorruptDataError):  # another chunk size
        codec.decode_box(payload, 0, 4, np.array([0, 4, 0, 16, 0, 8], np.int64), origin,
                         np.empty((16, 16, 8), np.uint16), out)
    with pytest.raises(diced.errors.CorruptDataError):  # truncated
        codec.decode_box(payload[:10], 0, 4, box, origin, scratch, out)
    with pytest.raises(diced.errors.CorruptDataError):  # header intact, body cut short
        codec.decode_box(payload[:len(payload) // 2], 0, 4, box, origin, scratch, out)
    assert not out.any()
    # rows that are not whole items of the chunk's typesize: not done here (full decode)
    for bad_box, bad_origin, rows in (([0, 4, 0, 16, 0, 17], [0, 0, 0], (0, 4)),  # past x
                                      ([0, 4, 0, 16, 0, 16], [1, 0, 0], (0, 4)),  # past out
                                      ([0, 5, 0, 16, 0, 16], [0, 0, 0], (0, 4)),  # undecoded
                                      ([0, 4, 0, 16, 0, 16], [0, -1, 0], (0, 4)),
                                      ([0, 4, 0, 16, 0, 16], [0, 0, 0], (0, 17))):
        with pytest.raises(diced.errors.InvalidArgumentError):
            codec.decode_box(payload, *rows, np.array(bad_box, np.int64),
                             np.array(bad_origin, np.int64), scratch, out)
    assert not out.any()
    half = chunk.astype(np.float16)  # no numba type: not done here either
    assert not codec.decode_box(codec.encode(half), 0, 4, box, origin, np.empty_like(half),
                                np.zeros((4, 16, 16), np.float16))
    odd = blosc2.compress2(chunk, typesize=3, clevel=1)
    assert not codec.decode_box(odd, 0, 4, box, origin, scratch, out)
    assert np.array_equal(codec.decode(odd, chunk.shape, chunk.dtype), chunk)


def test_reads_from_inside_a_saturated_pool_finish(arr, monkeypatch):
    """A local read run by a pool thread while every other pool thread is busy (a read
    nested in pool work, or a server's many concurrent reads) completes on its own thread:
    it never waits for queue runners no thread has started."""
    import threading

    from diced.datatypes.array import _common

    a, data = arr
    if not a._space.ordered:
        pytest.skip("object stores read fixed groups on the I/O pool")
    pool = _common._pool()
    release = threading.Event()
    blockers = [pool.submit(release.wait, 30) for _ in range(pool._max_workers - 1)]
    try:
        got = pool.submit(lambda: a[1:31, 2:30, 3:29]).result(timeout=20)
    finally:
        release.set()
        for b in blockers:
            b.result()
    assert np.array_equal(got, data[1:31, 2:30, 3:29])


@pytest.mark.parametrize("shape,dtype", [((64, 64, 64), np.uint64), ((128, 128, 128), np.uint8),
                                         ((3, 1000, 1000), np.float32), ((7, 5), np.int16),
                                         ((0, 64), np.uint64), ((2049, 1024), np.uint8)])
def test_result_arrays_start_on_a_huge_page_when_worth_it(shape, dtype):
    from diced.array.resultpool import result_pool

    pool = result_pool()
    old = pool.max_bytes
    pool.resize(0)  # the rule without recycled buffers (see test_result_pool.py)
    try:
        a = _readplan.result_array(shape, dtype)
    finally:
        pool.resize(old)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    n = a.nbytes
    aligned = (_readplan._HUGE_OK and _readplan._ALIGN_MIN <= n <= _readplan._ALIGN_MAX
               and (-n) % _readplan._HUGE <= n // 8)
    assert (a.ctypes.data % _readplan._HUGE == 0) if aligned else a.base is None
    a[...] = 3  # all of it is usable memory
    assert int(a.sum()) == 3 * a.size


def test_a_warm_label_block_read_is_exact_in_an_aligned_result(tmp_path):
    store = diced.Store(tmp_path / "s.diced")
    try:
        repo = store.create_repo("r")
        lab = repo.create_labels("l", (128, 128, 128))
        rng = np.random.default_rng(3)
        # 5000 distinct labels: 2 million (one per voxel) made the label index write take 70 s
        ids = rng.integers(0, 2 ** 40, 5000, dtype=np.uint64)
        want = ids[rng.integers(0, len(ids), (128, 128, 128))]
        lab[...] = want
        v = repo.commit("locked").uuid
        locked = repo.version(v).labels("l")
        for _ in range(2):  # cold, then from the locked-chunk cache
            got = locked[10:74, 20:84, 30:94]
            assert np.array_equal(got, want[10:74, 20:84, 30:94])
    finally:
        store.close()
