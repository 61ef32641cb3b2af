"""Fast read paths give exactly what the slow paths give, on every backend: partial blosc2
decode of the rows a read needs, and object-store reads with many groups in flight."""

from __future__ import annotations

import numpy as np
import pytest

import diced
from diced.array import _readplan
from diced.array.codecs import _blosc_partial
from diced.backends.cache import chunk_cache

pytestmark = pytest.mark.all_backends

SELECTIONS = [
    (slice(None),) * 3,
    (slice(3, 29), slice(5, 30), slice(1, 31)),
    (slice(15, 17), slice(None), slice(None)),
    (9, slice(2, 20), slice(None)),
    (slice(1, 31, 3), slice(4, 9), 7),
    (slice(8, 9), slice(8, 9), slice(8, 9)),
    (slice(30, 31), 0, 0),
]


@pytest.fixture(autouse=True)
def no_cache():
    c = chunk_cache()
    old = c.max_bytes
    c.resize(0)
    yield
    c.resize(old)


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
    monkeypatch.setattr("diced.datatypes.array.array.IO_WORKERS", 2)
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
    monkeypatch.setattr("diced.datatypes.array.array._WORKERS", workers)
    seen: list[str] = []
    real = a._space.visit

    def counting(ckeys, ctx, fn):
        seen.extend(ckeys)
        return real(ckeys, ctx, fn)

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
    monkeypatch.setattr("diced.datatypes.array.array._WORKERS", 3)
    calls = []

    def bad(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise diced.errors.CorruptDataError("damaged chunk")
        return False  # decode the whole chunk instead

    monkeypatch.setattr(a.codec, "decode_rows", bad)
    with pytest.raises(diced.errors.CorruptDataError, match="damaged chunk"):
        a[1:31, 1:31, 1:31]
    assert len(calls) < 8  # the others stopped taking chunks
    monkeypatch.undo()
    assert np.array_equal(a[1:31, 1:31, 1:31], data[1:31, 1:31, 1:31])
