"""The streaming-store paths of the warm-read kernels (diced.array._copy_kernels'
``copy_grid``/``copy_boxes`` with ``stream``, and the label decode that stages each layer of
sub-blocks and streams it out): the same bytes as the plain paths, for any row width and any
misalignment of the result, and nothing written outside the box."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_labelblock import label_blocks

import diced.array._readcache as rc
from diced.array.codecs import labelblock as lb

GUARD = 0xA5


def _kernels():
    k = rc.load_copy_kernels()
    assert k is not None
    return k


def _placed(shape: tuple[int, ...], dtype: np.dtype, misalign: int) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """A C-ordered array of ``shape`` starting ``misalign`` bytes past a 64-byte boundary
    inside a guard-filled buffer, and the buffer."""
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.full(n + 256, GUARD, np.uint8)
    start = 64 + (-raw.ctypes.data) % 64 + misalign
    return raw[start:start + n].view(dtype).reshape(shape), raw


def _guard_intact(raw: np.ndarray, arr: np.ndarray) -> bool:
    start = arr.ctypes.data - raw.ctypes.data
    return bool((raw[:start] == GUARD).all() and (raw[start + arr.nbytes:] == GUARD).all())


@st.composite
def grids(draw):
    """A 3-d chunk grid, a box over it, an itemsize and a misalignment of the result."""
    itemsize = draw(st.sampled_from([1, 2, 4, 8, 16]))
    chunks = tuple(draw(st.integers(1, 40)) for _ in range(3))
    nchunks = tuple(draw(st.integers(1, 3)) for _ in range(3))
    lo, hi = [], []
    for c, n in zip(chunks, nchunks):
        a = draw(st.integers(0, c * n - 1))
        lo.append(a)
        hi.append(draw(st.integers(a + 1, c * n)))
    return itemsize, chunks, nchunks, lo, hi, draw(st.integers(0, 63))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grids(), st.integers(0, 2 ** 32 - 1))
def test_copy_grid_streams_the_same_bytes(grid, seed):
    itemsize, chunks, nchunks, lo, hi, misalign = grid
    dt = np.dtype(f"V{itemsize}")
    rng = np.random.default_rng(seed)
    whole = rng.integers(0, 256, tuple(c * n for c, n in zip(chunks, nchunks)) + (itemsize,),
                         np.uint8)
    expected = whole[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    first = [a // c for a, c in zip(lo, chunks)]
    count = [(b - 1) // c - f + 1 for b, c, f in zip(hi, chunks, first)]
    blocks = []
    for k in np.ndindex(*count):
        sl = tuple(slice((f + i) * c, (f + i + 1) * c) for f, i, c in zip(first, k, chunks))
        blocks.append(np.ascontiguousarray(whole[sl]).view(dt)[..., 0])
    addrs = np.array([b.ctypes.data for b in blocks], np.int64)
    shape = tuple(b - a for a, b in zip(lo, hi))
    for stream in (False, True):
        out, raw = _placed(shape, dt, misalign)
        geo = np.array([*lo, *hi, *first, *count, *chunks, *blocks[0].strides,
                        *out.strides], np.int64)
        _kernels().copy_grid(addrs, 0, len(blocks), geo, out.ctypes.data, stream)
        assert np.array_equal(out.view(np.uint8).reshape(expected.shape), expected), stream
        assert _guard_intact(raw, out), "the kernel wrote outside the result"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 300), st.integers(1, 5), st.integers(1, 5), st.integers(0, 63),
       st.integers(0, 63), st.booleans())
def test_copy_boxes_streams_the_same_bytes(width, ny, nz, src_off, misalign, stream):
    """Rows of any width from any source offset, plain or streamed (heads and tails of
    partial lines copied plainly, whole lines streamed)."""
    rng = np.random.default_rng(width)
    src = rng.integers(0, 256, nz * ny * (width + 70) + 64, np.uint8)
    s_y, s_z = width + 70, ny * (width + 70)
    out, raw = _placed((nz, ny, width + 5), np.dtype(np.uint8), misalign)
    geometry = np.array([[s_z, s_y, nz, ny, width, 3]], np.int64)
    _kernels().copy_boxes(np.array([src.ctypes.data + src_off], np.int64), geometry,
                          out.ctypes.data, out.strides[0], out.strides[1], stream)
    view = src[src_off:src_off + nz * s_z].reshape(nz, ny, s_y)[:, :, :width]
    assert np.array_equal(out[:, :, 3:3 + width], view)
    assert (out[:, :, :3] == GUARD).all() and (out[:, :, 3 + width:] == GUARD).all()
    assert _guard_intact(raw, out)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_blocks(), st.data())
def test_staged_label_decode_equals_slicing(arr, data):
    """The label decode that stages each layer of sub-blocks and streams it out (solid
    blocks and every bit width included) equals slicing the decoded block."""
    from diced.array.codecs import _labelbox_kernels as lk

    block = np.frombuffer(lb.encode_block(arr), np.uint8)
    lo, hi = [], []
    for n in arr.shape:
        a = data.draw(st.integers(0, n - 1))
        lo.append(a)
        hi.append(data.draw(st.integers(a + 1, n)))
    shape = tuple(b - a for a, b in zip(lo, hi))
    pad = data.draw(st.integers(0, 9))  # the result wider than the box: rows apart
    out, raw = _placed((shape[0], shape[1], shape[2] + pad), np.dtype(np.uint64),
                       8 * data.draw(st.integers(0, 7)))
    stage = np.empty(8 * arr.shape[1] * arr.shape[2], np.uint64)
    _kernels()
    lk._decode(block.ctypes.data, lo[0], hi[0], lo[1], hi[1], lo[2], hi[2], out.ctypes.data,
               out.strides[0], out.strides[1], stage)
    np.testing.assert_array_equal(out[:, :, :shape[2]],
                                  arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
    if pad:
        assert (out[:, :, shape[2]:].view(np.uint8) == GUARD).all()
    assert _guard_intact(raw, out)


@pytest.mark.parametrize("value", [0, 2 ** 63 + 5])
def test_staged_decode_of_a_solid_block(value):
    from diced.array.codecs import _labelbox_kernels as lk

    arr = np.full((64, 64, 64), value, np.uint64)
    block = np.frombuffer(lb.encode_block(arr), np.uint8)
    out, raw = _placed((30, 50, 61), np.dtype(np.uint64), 24)
    stage = np.empty(8 * 64 * 64, np.uint64)
    _kernels()
    lk._decode(block.ctypes.data, 3, 33, 10, 60, 2, 63, out.ctypes.data, out.strides[0],
               out.strides[1], stage)
    assert (out == value).all() and _guard_intact(raw, out)


def test_decode_grid_streams_a_grid_of_blocks_in_two_threads():
    """``decode_grid`` staging and streaming whole and partial blocks of a real
    segmentation, shared by two threads as warm reads share it (each with its own staging
    buffer): exact, and nothing written outside the result or the buffers."""
    import gzip
    import threading
    from pathlib import Path

    from diced.array.codecs import _labelbox_kernels as lk

    path = Path(__file__).parent / "data" / "pinky40-256-zyx.npy.gz"
    if not path.exists():
        pytest.skip(f"{path} not available")
    with gzip.open(path) as f:
        seg = np.ascontiguousarray(np.load(f).astype(np.uint64))
    grid = {k: np.frombuffer(lb.encode_block(np.ascontiguousarray(
        seg[k[0] * 64:k[0] * 64 + 64, k[1] * 64:k[1] * 64 + 64, k[2] * 64:k[2] * 64 + 64])),
        np.uint8) for k in np.ndindex(4, 4, 4)}
    _kernels()
    for lo, hi in (((0, 0, 0), seg.shape), ((5, 63, 70), (250, 128, 231))):
        first = [a // 64 for a in lo]
        count = [(b - 1) // 64 - f + 1 for b, f in zip(hi, first)]
        blocks = [grid[tuple(f + i for f, i in zip(first, k))] for k in np.ndindex(*count)]
        addrs = np.array([b.ctypes.data for b in blocks], np.int64)
        n = len(blocks)
        for _ in range(4):
            out, raw = _placed(tuple(b - a for a, b in zip(lo, hi)), np.dtype(np.uint64), 8)
            geo = np.array([*lo, *hi, *first, *count, 64, 64, 64, 0, 0, 0, *out.strides],
                           np.int64)
            stages = [_placed((8 * 64 * 64,), np.dtype(np.uint64), 0) for _ in range(2)]
            other = threading.Thread(target=lk.decode_grid, args=(
                addrs, n // 2, n, geo, out.ctypes.data, stages[1][0]))
            other.start()
            lk.decode_grid(addrs, 0, n // 2, geo, out.ctypes.data, stages[0][0])
            other.join()
            np.testing.assert_array_equal(out, seg[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
            assert _guard_intact(raw, out)
            assert all(_guard_intact(r, a) for a, r in stages), "written outside the stage"
