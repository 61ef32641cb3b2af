"""Sparse volume encodings (diced.array.sparsevol): round trips, hand-written bytes, errors."""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from diced.array.sparsevol import (
    block_span_runs,
    block_spans,
    coords_from_runs,
    decode_binary_blocks,
    decode_block_index,
    decode_block_spans,
    decode_coarse_stream,
    decode_rles,
    decode_srles,
    encode_binary_blocks,
    encode_block_index,
    encode_coarse_stream,
    encode_rles,
    encode_srles,
    mask_to_runs,
    merge_runs,
    runs_to_mask,
)
from diced.errors import CorruptDataError, DtypeError, InvalidArgumentError

HEADER = bytes([0, 3, 0, 0])


def span(x, y, z, n):
    return struct.pack("<iiii", x, y, z, n)


def ref_runs(mask, offset=(0, 0, 0)):
    z0, y0, x0 = offset
    out = []
    for z in range(mask.shape[0]):
        for y in range(mask.shape[1]):
            x = 0
            while x < mask.shape[2]:
                if mask[z, y, x]:
                    s = x
                    while x < mask.shape[2] and mask[z, y, x]:
                        x += 1
                    out.append([x0 + s, y0 + y, z0 + z, x - s])
                else:
                    x += 1
    return np.array(out, dtype=np.int32).reshape(-1, 4)


masks = hnp.arrays(bool, hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=12))
offsets = st.tuples(*[st.integers(-1000, 1000)] * 3)


# -- runs ---------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(masks, offsets)
def test_mask_runs_bytes_round_trip(mask, offset):
    runs = mask_to_runs(mask, offset)
    assert runs.dtype == np.int32 and runs.shape[1] == 4
    np.testing.assert_array_equal(runs, ref_runs(mask, offset))
    for enc, dec in ((encode_rles, decode_rles), (encode_srles, decode_srles)):
        back = dec(enc(runs))
        np.testing.assert_array_equal(back, runs)
        np.testing.assert_array_equal(runs_to_mask(back, offset, mask.shape), mask)
    coords = coords_from_runs(runs)
    np.testing.assert_array_equal(coords, np.argwhere(mask) + np.array(offset))
    np.testing.assert_array_equal(merge_runs(runs), runs)  # already sorted and maximal


@settings(max_examples=150, deadline=None)
@given(masks, offsets, st.integers(1, 5), st.integers(1, 5), st.integers(1, 5))
def test_per_block_runs_merge_to_whole_mask_runs(mask, offset, bz, by, bx):
    """Runs computed block by block, merged, equal the runs of the whole mask."""
    parts = []
    z0, y0, x0 = offset
    for z in range(0, mask.shape[0], bz):
        for y in range(0, mask.shape[1], by):
            for x in range(0, mask.shape[2], bx):
                sub = mask[z : z + bz, y : y + by, x : x + bx]
                parts.append(mask_to_runs(sub, (z0 + z, y0 + y, x0 + x)))
    parts.reverse()  # order of the pieces must not matter
    np.testing.assert_array_equal(merge_runs(parts), mask_to_runs(mask, offset))
    if parts:
        np.testing.assert_array_equal(merge_runs(np.concatenate(parts)), mask_to_runs(mask, offset))


def test_runs_merge_across_x_block_boundary():
    # DVID TestSolidBlockRLE: solid blocks (2,1,2), (3,1,2) and a half-solid block (4,1,2)
    solid = np.ones((64, 64, 64), bool)
    half = np.zeros((64, 64, 64), bool)
    half[:, :32, :] = True
    parts = [
        mask_to_runs(m, (2 * 64, 1 * 64, bx * 64)) for bx, m in ((2, solid), (3, solid), (4, half))
    ]
    merged = merge_runs(parts)
    assert len(merged) == 64 * 64
    expected = [
        [128, y + 64, z + 128, 192 if y < 32 else 128] for z in range(64) for y in range(64)
    ]
    np.testing.assert_array_equal(merged, expected)


def test_merge_runs_overlaps_and_zero_lengths():
    runs = [[5, 0, 0, 3], [0, 0, 0, 2], [2, 0, 0, 4], [9, 0, 0, 0], [0, 1, 0, 1], [10, 0, 0, 1]]
    np.testing.assert_array_equal(merge_runs(runs), [[0, 0, 0, 8], [10, 0, 0, 1], [0, 1, 0, 1]])
    assert merge_runs([]).shape == (0, 4)
    assert merge_runs(np.zeros((0, 4), np.int64)).shape == (0, 4)


def test_runs_to_mask_clips():
    runs = np.array([[-2, 0, 0, 5], [3, 1, 0, 10], [0, 5, 0, 3], [0, 0, 9, 3]])
    mask = runs_to_mask(runs, (0, 0, 0), (1, 2, 4))
    np.testing.assert_array_equal(mask, [[[1, 1, 1, 0], [0, 0, 0, 1]]])


def test_run_argument_errors():
    with pytest.raises(InvalidArgumentError):
        encode_rles(np.zeros((2, 3), np.int32))
    with pytest.raises(DtypeError):
        encode_rles(np.zeros((2, 4), np.float32))
    with pytest.raises(InvalidArgumentError):
        encode_rles([[0, 0, 0, -1]])
    with pytest.raises(InvalidArgumentError):
        encode_rles([[2**31, 0, 0, 1]])
    with pytest.raises(InvalidArgumentError):
        mask_to_runs(np.zeros((2, 2), bool))
    with pytest.raises(InvalidArgumentError):
        mask_to_runs(np.zeros((2, 2, 2), bool), (0, 0, 2**31 - 1))


# -- legacy / streaming RLE bytes ---------------------------------------------------------------


def test_rles_known_bytes():
    runs = np.array([[1, 2, 3, 4], [-1, -2, -3, 1]])
    expected = (
        HEADER
        + struct.pack("<II", 0, 2)
        + bytes.fromhex("01000000020000000300000004000000")
        + bytes.fromhex("fffffffffefffffffdffffff01000000")
    )
    assert encode_rles(runs) == expected
    np.testing.assert_array_equal(decode_rles(expected), runs)
    assert encode_srles(runs) == expected[12:]
    np.testing.assert_array_equal(decode_srles(expected[12:]), runs)
    # accepts any bytes-like object
    np.testing.assert_array_equal(decode_rles(memoryview(bytearray(expected))), runs)


def test_rles_empty():
    assert encode_rles(np.zeros((0, 4), np.int32)) == b""
    assert encode_rles([]) == b""
    assert decode_rles(b"").shape == (0, 4)
    assert decode_rles(HEADER + struct.pack("<II", 0, 0)).shape == (0, 4)
    assert encode_srles([]) == b"" and decode_srles(b"").shape == (0, 4)


def test_rles_voxel_count_is_ignored():
    data = HEADER + struct.pack("<II", 12345, 1) + span(0, 0, 0, 3)
    np.testing.assert_array_equal(decode_rles(data), [[0, 0, 0, 3]])


@pytest.mark.parametrize(
    "data, message",
    [
        (bytes([1, 3, 0, 0]) + struct.pack("<II", 0, 1) + span(0, 0, 0, 1), "descriptor"),
        (bytes([0, 2, 0, 0]) + struct.pack("<II", 0, 1) + span(0, 0, 0, 1), "dimensions"),
        (bytes([0, 3, 1, 0]) + struct.pack("<II", 0, 1) + span(0, 0, 0, 1), "run dimension"),
        (HEADER + struct.pack("<II", 0, 2) + span(0, 0, 0, 1), "2 spans"),
        (HEADER + struct.pack("<II", 0, 1) + span(0, 0, 0, 1) + b"\0", "1 spans"),
        (HEADER + struct.pack("<II", 0, 0) + span(0, 0, 0, 1), "0 spans"),
        (HEADER + b"\0\0", "shorter than"),
        (HEADER + struct.pack("<II", 0, 1) + span(0, 0, 0, -4), "negative length"),
    ],
)
def test_rles_corrupt(data, message):
    with pytest.raises(CorruptDataError, match=message):
        decode_rles(data)


def test_srles_corrupt():
    with pytest.raises(CorruptDataError, match="multiple of 16"):
        decode_srles(span(0, 0, 0, 1)[:15])
    with pytest.raises(CorruptDataError, match="negative length"):
        decode_srles(span(0, 0, 0, 1) + span(0, 0, 0, -1))


# -- coarse sparse volumes ----------------------------------------------------------------------


def test_block_spans_known_bytes():
    coords = [[0, 0, 1], [1, 0, 0], [0, 0, 2], [0, 0, 4], [0, 0, 2], [0, -1, 7]]  # z, y, x
    expected = (
        HEADER
        + struct.pack("<II", 0, 4)
        + span(7, -1, 0, 1)
        + span(1, 0, 0, 2)
        + span(4, 0, 0, 1)
        + span(0, 0, 1, 1)
    )
    assert block_spans(coords) == expected
    np.testing.assert_array_equal(
        decode_block_spans(expected), [[0, -1, 7], [0, 0, 1], [0, 0, 2], [0, 0, 4], [1, 0, 0]]
    )


def test_block_spans_empty():
    assert block_spans(np.zeros((0, 3), int)) == HEADER + struct.pack("<II", 0, 0)
    assert decode_block_spans(block_spans([])).shape == (0, 3)
    assert decode_block_spans(b"").shape == (0, 3)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(*[st.integers(-4, 4)] * 3), max_size=60))
def test_block_spans_round_trip_and_maximal(coords):
    c = np.array(coords, dtype=np.int64).reshape(-1, 3)
    expected = np.unique(c, axis=0)
    np.testing.assert_array_equal(decode_block_spans(block_spans(c)), expected)
    spans = block_span_runs(c)
    for a, b in itertools.pairwise(spans):  # consecutive spans never touch along x
        assert not (a[1] == b[1] and a[2] == b[2] and a[0] + a[3] == b[0])
        assert (a[2], a[1], a[0]) < (b[2], b[1], b[0])


def test_coarse_stream_known_bytes_and_round_trip():
    items = [(7, [[0, 0, 0], [0, 0, 1]]), (2**64 - 1, []), (3, [[2, 2, 2]])]
    data = encode_coarse_stream(items)
    expected = (
        struct.pack("<Qi", 7, 1)
        + span(0, 0, 0, 2)
        + struct.pack("<Qi", 2**64 - 1, 0)
        + struct.pack("<Qi", 3, 1)
        + span(2, 2, 2, 1)
    )
    assert data == expected
    back = decode_coarse_stream(data)
    assert [lbl for lbl, _ in back] == [7, 2**64 - 1, 3]
    np.testing.assert_array_equal(back[0][1], [[0, 0, 0], [0, 0, 1]])
    assert back[1][1].shape == (0, 3)
    assert decode_coarse_stream(b"") == []


def test_coarse_stream_corrupt():
    good = struct.pack("<Qi", 7, 1) + span(0, 0, 0, 2)
    with pytest.raises(CorruptDataError, match="ends early"):
        decode_coarse_stream(good[:-1])
    with pytest.raises(CorruptDataError, match="truncated label header"):
        decode_coarse_stream(good + b"\1\2")
    with pytest.raises(CorruptDataError, match="negative span count"):
        decode_coarse_stream(struct.pack("<Qi", 7, -1))
    with pytest.raises(CorruptDataError, match="negative length"):
        decode_coarse_stream(struct.pack("<Qi", 7, 1) + span(0, 0, 0, -2))
    with pytest.raises(CorruptDataError, match="3 dimensions|dimensions"):
        decode_block_spans(bytes([0, 2, 0, 0]) + struct.pack("<II", 0, 0))


# -- binary blocks ------------------------------------------------------------------------------


def test_binary_blocks_known_bytes_single_voxel():
    mask = np.zeros((8, 8, 8), bool)
    mask[0, 0, 1] = True  # bit 1 of the sub-block stream
    mask[7, 7, 7] = True  # bit 511: top bit of byte 63
    data = encode_binary_blocks(9, [((8, -8, 16), mask)])
    sub_mask = bytearray(64)
    sub_mask[0] = 0x02
    sub_mask[63] = 0x80
    expected = (
        struct.pack("<IIIQ", 1, 1, 1, 9)
        + struct.pack("<iiiB", 8, -8, 16, 2)
        + bytes([2])
        + bytes(sub_mask)
    )
    assert data == expected
    out = decode_binary_blocks(data)
    assert out.label == 9 and out.block_shape == (8, 8, 8)
    assert out.blocks[0][0] == (8, -8, 16)
    np.testing.assert_array_equal(out.blocks[0][1], mask)


def test_binary_blocks_sub_block_order_and_flags():
    # 16 (z) x 8 (y) x 24 (x) voxels: gx=3, gy=1, gz=2; sub-blocks in z, y, x order
    mask = np.zeros((16, 8, 24), bool)
    mask[0:8, :, 8:16] = True  # sub-block (z0, x1) all foreground
    mask[8, 0, 16] = True  # sub-block (z1, x2) mixed, bit 0
    data = encode_binary_blocks(5, [((0, 0, 0), mask)])
    sub = bytearray(64)
    sub[0] = 1
    expected = (
        struct.pack("<IIIQ", 3, 1, 2, 5)
        + struct.pack("<iiiB", 0, 0, 0, 2)
        + bytes([0, 1, 0, 0, 0, 2])
        + bytes(sub)
    )
    assert data == expected
    np.testing.assert_array_equal(decode_binary_blocks(data).blocks[0][1], mask)


def test_binary_blocks_solid_and_empty():
    full = np.ones((8, 8, 8), bool)
    empty = np.zeros((8, 8, 8), bool)
    data = encode_binary_blocks(3, [((0, 0, 0), empty), ((8, 0, 0), full)])
    assert data == struct.pack("<IIIQ", 1, 1, 1, 3) + struct.pack("<iiiB", 8, 0, 0, 1)
    assert encode_binary_blocks(3, [((0, 0, 0), empty)]) == b""
    assert encode_binary_blocks(3, []) == b""
    out = decode_binary_blocks(b"")
    assert out.label is None and out.blocks == []
    # block flag 0 (never written by DVID) decodes to an empty mask
    data0 = struct.pack("<IIIQ", 1, 1, 1, 3) + struct.pack("<iiiB", 0, 0, 0, 0)
    assert not decode_binary_blocks(data0).blocks[0][1].any()


def test_dvid_binary_blocks_two_boxes():
    """DVID ``TestBinaryBlocks``: label 7 boxes in blocks (1,1,1) and (1,1,2)."""
    b0 = np.zeros((64, 64, 64), bool)
    b0[:, 37:51, 23:35] = True
    b1 = np.zeros((64, 64, 64), bool)
    b1[:, 39:46, 26:32] = True
    data = encode_binary_blocks(7, [((64, 64, 64), b0), ((64, 64, 128), b1)])
    out = decode_binary_blocks(data)
    assert out.label == 7 and out.block_shape == (64, 64, 64) and len(out.blocks) == 2
    assert out.blocks[1][0] == (64, 64, 128)
    np.testing.assert_array_equal(out.blocks[0][1], b0)
    np.testing.assert_array_equal(out.blocks[1][1], b1)


@settings(max_examples=60, deadline=None)
@given(st.tuples(*[st.integers(1, 3)] * 3), st.data())
def test_binary_blocks_round_trip(grid, data):
    shape = tuple(8 * g for g in grid)
    nblocks = data.draw(st.integers(0, 3))
    blocks = []
    for i in range(nblocks):
        density = data.draw(st.sampled_from([0.0, 0.02, 0.5, 1.0]))
        seed = data.draw(st.integers(0, 2**16))
        m = np.random.default_rng(seed).random(shape) < density
        blocks.append(((i * 64, -i, 3), m))
    label = data.draw(st.integers(0, 2**64 - 1))
    out = decode_binary_blocks(encode_binary_blocks(label, blocks))
    kept = [(o, m) for o, m in blocks if m.any()]
    assert len(out.blocks) == len(kept)
    for (o, m), (o2, m2) in zip(kept, out.blocks):
        assert o == o2
        np.testing.assert_array_equal(m, m2)
    if kept:
        assert out.label == label and out.block_shape == shape


def test_binary_blocks_corrupt():
    head = struct.pack("<IIIQ", 1, 1, 1, 3)
    with pytest.raises(CorruptDataError, match="shorter than"):
        decode_binary_blocks(head[:-1])
    with pytest.raises(CorruptDataError, match="sub-block grid"):
        decode_binary_blocks(struct.pack("<IIIQ", 0, 1, 1, 3))
    with pytest.raises(CorruptDataError, match="sub-block grid"):
        decode_binary_blocks(struct.pack("<IIIQ", 2**20, 1, 1, 3))
    with pytest.raises(CorruptDataError, match="truncated block header"):
        decode_binary_blocks(head + b"\0\0\0")
    with pytest.raises(CorruptDataError, match="unknown flag 3"):
        decode_binary_blocks(head + struct.pack("<iiiB", 0, 0, 0, 3))
    with pytest.raises(CorruptDataError, match="unknown sub-block flag 5"):
        decode_binary_blocks(head + struct.pack("<iiiB", 0, 0, 0, 2) + b"\5")
    with pytest.raises(CorruptDataError, match="truncated"):
        decode_binary_blocks(head + struct.pack("<iiiB", 0, 0, 0, 2) + b"\2" + bytes(63))
    with pytest.raises(CorruptDataError, match="truncated"):
        decode_binary_blocks(head + struct.pack("<iiiB", 0, 0, 0, 2))


def test_binary_blocks_argument_errors():
    with pytest.raises(InvalidArgumentError):
        encode_binary_blocks(1, [((0, 0, 0), np.ones((8, 8, 9), bool))])
    with pytest.raises(InvalidArgumentError):
        encode_binary_blocks(
            1, [((0, 0, 0), np.ones((8, 8, 8), bool)), ((8, 0, 0), np.ones((16, 8, 8), bool))]
        )
    with pytest.raises(InvalidArgumentError):
        encode_binary_blocks(-1, [])


# -- LabelIndex block keys ----------------------------------------------------------------------


def test_block_index_known_values():
    assert encode_block_index(0, 0, 0) == 0
    assert encode_block_index(1, 0, 0) == 1
    assert encode_block_index(-1, 0, 0) == (1 << 20) | 1
    assert encode_block_index(0, -1, 0) == ((1 << 20) | 1) << 21
    assert encode_block_index(0, 0, 2) == 2 << 42
    assert encode_block_index(-3, 5, -7) == (((1 << 20) | 7) << 42) | (5 << 21) | ((1 << 20) | 3)
    big = 2**20 - 1
    assert encode_block_index(big, -big, big) == (big << 42) | (((1 << 20) | big) << 21) | big
    assert decode_block_index((1 << 20) | 1) == (-1, 0, 0)
    assert decode_block_index(1 << 20) == (0, 0, 0)  # "minus zero"
    assert decode_block_index((1 << 63) | 5) == (5, 0, 0)  # bit 63 ignored, as DVID
    assert isinstance(encode_block_index(1, 2, 3), int)


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(np.int64, st.integers(0, 50), elements=st.integers(-(2**20) + 1, 2**20 - 1)),
    st.data(),
)
def test_block_index_vectorised_round_trip(x, data):
    y = data.draw(hnp.arrays(np.int64, x.shape, elements=st.integers(-(2**20) + 1, 2**20 - 1)))
    z = data.draw(hnp.arrays(np.int64, x.shape, elements=st.integers(-(2**20) + 1, 2**20 - 1)))
    keys = encode_block_index(x, y, z)
    assert keys.dtype == np.uint64 and keys.shape == x.shape
    for k, a, b, c in zip(keys.tolist(), x.tolist(), y.tolist(), z.tolist()):
        assert k == encode_block_index(a, b, c)
    bx, by, bz = decode_block_index(keys)
    np.testing.assert_array_equal(bx, x)
    np.testing.assert_array_equal(by, y)
    np.testing.assert_array_equal(bz, z)
    # broadcasting a scalar against arrays
    np.testing.assert_array_equal(
        decode_block_index(encode_block_index(x, -2, 0))[1], np.full(x.shape, -2)
    )


def test_block_index_out_of_range():
    with pytest.raises(InvalidArgumentError):
        encode_block_index(2**20, 0, 0)
    with pytest.raises(InvalidArgumentError):
        encode_block_index(0, np.array([0, -(2**20)]), 0)
    with pytest.raises(InvalidArgumentError):
        encode_block_index(0, 0, 2**70)
