"""2x downsampling (diced.array.downres) against slow pure-Python references."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from diced.array.downres import (
    downsample_image,
    downsample_image_octants,
    downsample_labels,
    downsample_labels_octants,
    octant_index,
    octant_slices,
    update_lores_block,
)
from diced.errors import DtypeError, InvalidArgumentError, ShapeMismatchError

BIG = 2**64 - 1


# -- references ---------------------------------------------------------------------------------


def _groups(shape):
    out_shape = tuple((n + 1) // 2 for n in shape)
    for idx in np.ndindex(*out_shape):
        yield idx, tuple(slice(2 * i, 2 * i + 2) for i in idx)


def ref_labels(a: np.ndarray) -> np.ndarray:
    out = np.zeros(tuple((n + 1) // 2 for n in a.shape), dtype=a.dtype)
    for idx, sl in _groups(a.shape):
        votes = Counter(int(v) for v in a[sl].ravel() if v != 0)
        if votes:
            top = max(votes.values())
            out[idx] = min(k for k, c in votes.items() if c == top)
    return out


def _ref_float(a: np.ndarray, out_dtype) -> np.ndarray:
    out = np.zeros(tuple((n + 1) // 2 for n in a.shape), dtype=out_dtype)
    for idx, sl in _groups(a.shape):
        g = a[sl].ravel()  # z, y, x order, as the kernel adds
        acc = 0.0
        for v in g:
            acc += float(v)
        out[idx] = acc / g.size
    return out


def ref_image(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "c":
        out = np.zeros(tuple((n + 1) // 2 for n in a.shape), dtype=a.dtype)
        out.real = _ref_float(a.real, a.real.dtype)
        out.imag = _ref_float(a.imag, a.real.dtype)
        return out
    if a.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            return _ref_float(a, a.dtype)
    out = np.zeros(tuple((n + 1) // 2 for n in a.shape), dtype=a.dtype)
    for idx, sl in _groups(a.shape):
        g = [int(v) for v in a[sl].ravel()]
        out[idx] = sum(g) // len(g)  # Python floor division: floor of the mean
    return out


# -- strategies ---------------------------------------------------------------------------------

shapes = hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=9)
label_values = st.sampled_from([0, 0, 1, 2, 3, 7, 2**32, 2**63, BIG - 1, BIG])


@st.composite
def label_blocks(draw, shape=shapes):
    shp = draw(shape)
    palette = draw(st.lists(label_values, min_size=1, max_size=4))
    return draw(hnp.arrays(np.uint64, shp, elements=st.sampled_from(palette)))


IMAGE_DTYPES = [
    np.uint8,
    np.int8,
    np.uint16,
    np.int16,
    np.uint32,
    np.int32,
    np.uint64,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
]


@st.composite
def image_blocks(draw):
    dtype = np.dtype(draw(st.sampled_from(IMAGE_DTYPES)))
    shp = draw(shapes)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        edge = st.sampled_from([info.min, info.max, info.min + 1, info.max - 1, 0, -1 % 256])
        elements = st.one_of(
            edge.filter(lambda v: info.min <= v <= info.max), st.integers(info.min, info.max)
        )
        return draw(hnp.arrays(dtype, shp, elements=elements))
    return draw(hnp.arrays(dtype, shp))


# -- labels -------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(label_blocks())
def test_labels_match_reference(a):
    got = downsample_labels(a)
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, ref_labels(a))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([np.int8, np.int32, np.uint16, np.int64]), shapes, st.data())
def test_labels_other_integer_dtypes(dtype, shp, data):
    a = data.draw(
        hnp.arrays(
            dtype,
            shp,
            elements=st.integers(-3, 3) if np.dtype(dtype).kind == "i" else st.integers(0, 3),
        )
    )
    got = downsample_labels(a)
    assert got.dtype == a.dtype
    np.testing.assert_array_equal(got, ref_labels(a))


def test_labels_rules_by_hand():
    g = np.zeros((2, 2, 2), np.uint64)
    assert downsample_labels(g)[0, 0, 0] == 0  # all zero -> 0
    g.flat[5] = 9
    assert downsample_labels(g)[0, 0, 0] == 9  # 1 vote beats 7 zeros
    g = np.array([5, 5, 3, 3, 0, 0, 0, 0], np.uint64).reshape(2, 2, 2)
    assert downsample_labels(g)[0, 0, 0] == 3  # tie -> smallest
    g = np.array([BIG, BIG, BIG - 1, BIG - 1, BIG, 0, 0, 0], np.uint64).reshape(2, 2, 2)
    assert downsample_labels(g)[0, 0, 0] == BIG  # majority over huge ids
    g = np.array([BIG, BIG - 1, 0, 0, 0, 0, 0, 0], np.uint64).reshape(2, 2, 2)
    assert downsample_labels(g)[0, 0, 0] == BIG - 1


def test_labels_odd_shapes():
    a = np.arange(1, 3 * 5 * 7 + 1, dtype=np.uint64).reshape(3, 5, 7)
    got = downsample_labels(a)
    assert got.shape == (2, 3, 4)
    # every label is unique, so each group's winner is its smallest voxel: the first one
    np.testing.assert_array_equal(got, a[::2, ::2, ::2])
    assert downsample_labels(np.zeros((0, 4, 4), np.uint64)).shape == (0, 2, 2)
    assert downsample_labels(np.full((1, 1, 1), 4, np.uint64))[0, 0, 0] == 4


def test_labels_non_contiguous_and_big_endian():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, (9, 8, 10)).astype(np.uint64)
    np.testing.assert_array_equal(
        downsample_labels(a.transpose(2, 1, 0)),
        ref_labels(np.ascontiguousarray(a.transpose(2, 1, 0))),
    )
    np.testing.assert_array_equal(downsample_labels(a.astype(">u8")), ref_labels(a))


def test_labels_argument_errors():
    with pytest.raises(InvalidArgumentError):
        downsample_labels(np.zeros((4, 4), np.uint64))
    with pytest.raises(DtypeError):
        downsample_labels(np.zeros((2, 2, 2), np.float32))


# -- images -------------------------------------------------------------------------------------


@settings(max_examples=250, deadline=None)
@given(image_blocks())
def test_image_matches_reference(a):
    with np.errstate(over="ignore", invalid="ignore"):
        got = downsample_image(a)
    assert got.dtype == a.dtype
    np.testing.assert_array_equal(got, ref_image(a))


def test_image_floor_not_truncation():
    a = np.array([-1, 0, 0, 0, 0, 0, 0, 0], np.int8).reshape(2, 2, 2)
    assert downsample_image(a)[0, 0, 0] == -1  # mean -0.125 floors to -1
    a = np.array([1, 0, 0, 0, 0, 0, 0, 0], np.uint8).reshape(2, 2, 2)
    assert downsample_image(a)[0, 0, 0] == 0
    a = np.full((2, 2, 2), 255, np.uint8)
    assert downsample_image(a)[0, 0, 0] == 255  # no uint8 overflow
    a = np.full((2, 2, 2), BIG, np.uint64)
    a[0, 0, 0] = BIG - 1
    assert int(downsample_image(a)[0, 0, 0]) == BIG - 1  # floor((8*BIG - 1) / 8)
    lo, hi = -(2**63), 2**63 - 1
    a = np.array([lo, lo, lo, lo, hi, hi, hi, lo], np.int64).reshape(2, 2, 2)
    assert int(downsample_image(a)[0, 0, 0]) == (5 * lo + 3 * hi) // 8
    a = np.array([[[lo, lo + 1]]], np.int64)  # odd edge: 2 voxels
    assert int(downsample_image(a)[0, 0, 0]) == lo


def test_image_float_mean_and_edges():
    a = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    got = downsample_image(a)
    assert got.shape == (2, 2, 2)
    assert got[0, 0, 0] == np.mean([0, 1, 3, 4, 9, 10, 12, 13])
    assert got[1, 1, 1] == 26.0  # the lone corner voxel
    assert got[0, 0, 1] == np.mean([2, 5, 11, 14])


def test_image_argument_errors():
    with pytest.raises(DtypeError):
        downsample_image(np.zeros((2, 2, 2), bool))
    with pytest.raises(DtypeError):
        downsample_image(np.zeros((2, 2, 2), "U1"))
    with pytest.raises(InvalidArgumentError):
        downsample_image(np.zeros((2, 2, 2, 2), np.uint8))


# -- octants ------------------------------------------------------------------------------------


def _assemble(octants, block_shape, dtype):
    """The hires volume (2x block_shape) that the octants tile; missing octants are 0."""
    full = np.zeros(tuple(2 * n for n in block_shape), dtype=dtype)
    for o, blk in octants.items():
        if blk is None:
            continue
        oz, oy, ox = (o >> 2) & 1, (o >> 1) & 1, o & 1
        bz, by, bx = block_shape
        full[oz * bz : (oz + 1) * bz, oy * by : (oy + 1) * by, ox * bx : (ox + 1) * bx] = blk
    return full


def test_octant_index_and_slices():
    assert octant_index(0, 0, 0) == 0
    assert octant_index(0, 0, 1) == 1
    assert octant_index(0, 1, 0) == 2
    assert octant_index(1, 0, 0) == 4
    assert octant_index(-1, 3, 5) == 7
    assert octant_slices(5) == (slice(32, 64), slice(0, 32), slice(32, 64))
    with pytest.raises(InvalidArgumentError):
        octant_slices(8)


def test_dvid_block_downres_solid_octants():
    """DVID ``TestBlockDownres``: solid octants (one missing) give solid lores octants."""
    solid = [3, 3, 9, None, 12, 21, 83, 129]
    octants = {
        o: (None if v is None else np.full((64, 64, 64), v, np.uint64)) for o, v in enumerate(solid)
    }
    got = downsample_labels_octants(octants)
    assert got.shape == (64, 64, 64) and got.dtype == np.uint64
    expected = np.zeros((64, 64, 64), np.uint64)
    for o, v in enumerate(solid):
        expected[octant_slices(o)] = 0 if v is None else v
    np.testing.assert_array_equal(got, expected)
    # the region of octant 1 is x = 32..63 at z, y < 32: the +x neighbour of octant 0
    assert got[0, 0, 32] == 3 and got[0, 32, 0] == 9 and got[0, 32, 32] == 0
    assert got[32, 0, 0] == 12 and got[63, 63, 63] == 129


def test_solid_rule_same_label_everywhere():
    octants = {o: np.full((64, 64, 64), 42, np.uint64) for o in range(8)}
    got = downsample_labels_octants(octants)
    assert (got == 42).all()
    assert (downsample_labels_octants({}) == 0).all()  # every octant missing: solid 0
    # missing octants count as solid 0, so they stay 0 in the lores block
    got = downsample_labels_octants({o: octants[o] for o in range(7)})
    assert (got[octant_slices(7)] == 0).all() and (got[octant_slices(0)] == 42).all()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_octants_equal_downsampling_the_assembled_volume(data):
    bs = data.draw(st.tuples(*[st.sampled_from([2, 4, 6]) for _ in range(3)]))
    present = data.draw(st.lists(st.integers(0, 7), unique=True, max_size=8))
    octants = {o: data.draw(label_blocks(st.just(bs))) for o in present}
    if present and data.draw(st.booleans()):
        octants[present[0]] = None
    got = downsample_labels_octants(octants, block_shape=bs)
    np.testing.assert_array_equal(got, downsample_labels(_assemble(octants, bs, np.uint64)))


def test_image_octants():
    rng = np.random.default_rng(1)
    bs = (8, 6, 4)
    octants = {o: rng.integers(0, 256, bs).astype(np.uint8) for o in (0, 3, 5)}
    got = downsample_image_octants(octants, block_shape=bs)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, downsample_image(_assemble(octants, bs, np.uint8)))
    assert downsample_image_octants({}, bs, dtype=np.float32).dtype == np.float32
    with pytest.raises(InvalidArgumentError):
        downsample_image_octants({}, bs)


def test_octant_argument_errors():
    blk = np.zeros((4, 4, 4), np.uint64)
    with pytest.raises(InvalidArgumentError):
        downsample_labels_octants({8: blk}, block_shape=(4, 4, 4))
    with pytest.raises(ShapeMismatchError):
        downsample_labels_octants({0: blk}, block_shape=(8, 8, 8))
    with pytest.raises(InvalidArgumentError):
        downsample_labels_octants({}, block_shape=(5, 4, 4))
    with pytest.raises(DtypeError):
        downsample_labels_octants({0: blk.astype(np.uint32)}, block_shape=(4, 4, 4))


def test_update_lores_block_keeps_untouched_octants():
    rng = np.random.default_rng(2)
    bs = (8, 8, 8)
    lores = rng.integers(1, 5, bs).astype(np.uint64)
    before = lores.copy()
    hires = rng.integers(0, 3, bs).astype(np.uint64)
    got = update_lores_block(lores, {1: hires, 6: None})
    np.testing.assert_array_equal(lores, before)  # input not modified
    for o in range(8):
        region = octant_slices(o, bs)
        if o == 1:
            np.testing.assert_array_equal(got[region], downsample_labels(hires))
        elif o == 6:
            assert (got[region] == 0).all()
        else:
            np.testing.assert_array_equal(got[region], lores[region])


def test_update_lores_block_all_touched_equals_from_scratch():
    rng = np.random.default_rng(3)
    bs = (4, 4, 4)
    octants = {o: rng.integers(0, 4, bs).astype(np.uint64) for o in range(8)}
    old = rng.integers(1, 9, bs).astype(np.uint64)
    np.testing.assert_array_equal(
        update_lores_block(old, octants), downsample_labels_octants(octants, bs)
    )
    # absent lores block: starts as zeros
    got = update_lores_block(None, {2: octants[2]})
    assert got.shape == bs and got.dtype == np.uint64
    np.testing.assert_array_equal(got[octant_slices(2, bs)], downsample_labels(octants[2]))
    assert (got[octant_slices(0, bs)] == 0).all()


def test_update_lores_block_image():
    bs = (4, 4, 4)
    hires = np.full(bs, 7, np.uint16)
    hires[0, 0, 0] = 0
    got = update_lores_block(np.full(bs, 100, np.uint16), {7: hires}, method="image")
    assert got[2, 2, 2] == 6 and got[3, 3, 3] == 7 and got[0, 0, 0] == 100
    with pytest.raises(InvalidArgumentError):
        update_lores_block(None, {}, method="mode")


def test_large_block_speed_smoke():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 3, (64, 64, 64)).astype(np.uint64)
    np.testing.assert_array_equal(downsample_labels(a)[:3, :3, :3], ref_labels(a[:6, :6, :6]))


def test_import_diced_does_not_import_numba():
    code = "import sys, diced, diced.array; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
