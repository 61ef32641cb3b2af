"""Tests for the DVID compressed label block codec (diced.array.codecs.labelblock)."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diced.array.codecs import labelblock as lb
from diced.array.codecs.base import codec_from_dict
from diced.errors import CorruptDataError, DtypeError, InvalidArgumentError

DATA = Path(__file__).parent / "data" / "dvid"
# pinky40 voxels 128:384 on every axis, z, y, x (tests/data/README.md)
PINKY = Path(__file__).parent / "data" / "pinky40-256-zyx.npy.gz"


def load_raw(name: str) -> np.ndarray:
    raw = gzip.decompress((DATA / name).read_bytes())
    return np.frombuffer(raw, dtype="<u8").reshape(64, 64, 64)


# ---------------------------------------------------------------------------------------------
# A slow, obviously-correct reference for the format (docs/dvid-reference.md §1.2)


def bits_for(n: int) -> int:
    return 0 if n <= 1 else (n - 1).bit_length()


def build_block(grid: tuple[int, int, int], labels: list[int], ns: list[int], index: list[int],
                local_values: list[list[int] | None]) -> bytes:
    """Serialize a block from its fields; local_values[i] holds 512 local indices or None."""
    gx, gy, gz = grid
    out = bytearray(struct.pack("<4I", gx, gy, gz, len(labels)))
    out += np.asarray(labels, dtype="<u8").tobytes()
    if len(labels) <= 1:
        return bytes(out)
    out += np.asarray(ns, dtype="<u2").tobytes()
    out += np.asarray(index, dtype="<u4").tobytes()
    for n, vals in zip(ns, local_values):
        b = bits_for(n)
        if b == 0:
            continue
        acc = 0
        for v in vals:
            acc = (acc << b) | v
        out += acc.to_bytes(64 * b, "big")
    return bytes(out)


def ref_decode(data: bytes) -> np.ndarray:
    gx, gy, gz, n = struct.unpack_from("<4I", data)
    labels = np.frombuffer(data, "<u8", n, 16)
    out = np.zeros((8 * gz, 8 * gy, 8 * gx), dtype=np.uint64)
    if n == 1:
        out[...] = labels[0]
        return out
    nsb = gx * gy * gz
    pos = 16 + 8 * n
    ns = np.frombuffer(data, "<u2", nsb, pos)
    pos += 2 * nsb
    index = np.frombuffer(data, "<u4", int(ns.sum()), pos)
    vpos = pos + 4 * int(ns.sum())
    ipos = 0
    sb = 0
    for sz in range(gz):
        for sy in range(gy):
            for sx in range(gx):
                c = int(ns[sb])
                lab = labels[index[ipos:ipos + c]]
                ipos += c
                view = out[8 * sz:8 * sz + 8, 8 * sy:8 * sy + 8, 8 * sx:8 * sx + 8]
                b = bits_for(c)
                if c == 0:
                    view[...] = 0
                elif b == 0:
                    view[...] = lab[0]
                else:
                    acc = int.from_bytes(data[vpos:vpos + 64 * b], "big")
                    vals = [(acc >> (b * (511 - k))) & ((1 << b) - 1) for k in range(512)]
                    view[...] = lab[np.asarray(vals)].reshape(8, 8, 8)
                    vpos += 64 * b
                sb += 1
    return out


def expected_size(arr: np.ndarray) -> int:
    """Size of the first-appearance encoding, computed from the sub-block label counts."""
    nz, ny, nx = arr.shape
    n = np.unique(arr).size
    if n == 1:
        return 24
    sub = arr.reshape(nz // 8, 8, ny // 8, 8, nx // 8, 8).transpose(0, 2, 4, 1, 3, 5)
    ns = [np.unique(s).size for s in sub.reshape(-1, 512)]
    return 16 + 8 * n + 2 * len(ns) + 4 * sum(ns) + sum(64 * bits_for(c) for c in ns)


def header(data: bytes) -> tuple[int, int, int, int]:
    return struct.unpack_from("<4I", data)


def subblock_counts(data: bytes) -> np.ndarray:
    gx, gy, gz, n = header(data)
    return np.frombuffer(data, "<u2", gx * gy * gz, 16 + 8 * n)


# ---------------------------------------------------------------------------------------------
# DVID's own fixtures


def test_fixture_block_decodes_to_raw_volume():
    block = gzip.decompress((DATA / "fib19-64x64x64-sample1-block.dat.gz").read_bytes())
    assert len(block) == 22512
    raw = load_raw("fib19-64x64x64-sample1.dat.gz")
    decoded = lb.decode_block(block)
    assert decoded.dtype == np.uint64 and decoded.shape == (64, 64, 64)
    np.testing.assert_array_equal(decoded, raw)
    np.testing.assert_array_equal(ref_decode(block), raw)


def test_fixture_volume_encodes_to_dvid_bytes():
    block = gzip.decompress((DATA / "fib19-64x64x64-sample1-block.dat.gz").read_bytes())
    encoded = lb.encode_block(load_raw("fib19-64x64x64-sample1.dat.gz"))
    assert len(encoded) == 22512
    assert encoded == block
    assert header(encoded) == (8, 8, 8, 18)


@pytest.mark.parametrize("name, n, size", [
    ("cx-64x64x64-sample1.dat.gz", 7, 26396),
    ("cx-64x64x64-sample2.dat.gz", 7, 8660),
    ("fib19-64x64x64-sample2.dat.gz", 11, 29356),
])
def test_fixture_volume_sizes(name, n, size):
    raw = load_raw(name)
    encoded = lb.encode_block(raw)
    assert len(encoded) == size
    assert header(encoded) == (8, 8, 8, n)
    np.testing.assert_array_equal(lb.decode_block(encoded), raw)
    labels, counts = lb.block_label_counts(encoded)
    ulabels, ucounts = np.unique(raw, return_counts=True)
    np.testing.assert_array_equal(labels, ulabels)
    np.testing.assert_array_equal(counts, ucounts)


def test_stream_fixture():
    stream = (DATA / "stream_1block.dat").read_bytes()
    assert struct.unpack_from("<4i", stream) == (0, 0, 0, 114168)
    items = lb.parse_block_stream(stream)
    assert len(items) == 1
    coord, block = items[0]
    assert coord == (0, 0, 0)
    assert len(block) == 152672
    assert header(block) == (8, 8, 8, 10)
    np.testing.assert_array_equal(lb.block_labels(block), [6, 5, 8, 9, 1, 7, 4, 3, 0, 2])
    assert (subblock_counts(block) == 10).all()
    voxels = lb.decode_block(block)
    np.testing.assert_array_equal(voxels, ref_decode(block))

    # Re-encoding gives the same deterministic fields: sizes, Ns, packed values.
    again = lb.encode_block(voxels)
    assert len(again) == len(block)
    assert header(again) == header(block)
    np.testing.assert_array_equal(subblock_counts(again), subblock_counts(block))
    values_at = 16 + 8 * 10 + 2 * 512 + 4 * 10 * 512
    assert len(block) - values_at == 131072
    assert again[values_at:] == block[values_at:]
    assert sorted(lb.block_labels(again)) == list(range(10))
    np.testing.assert_array_equal(lb.decode_block(again), voxels)

    # The raw gzip payload is available verbatim too, and the stream writer round-trips.
    raw_items = lb.parse_block_stream(stream, decompress=False)
    assert lb.write_block_stream(raw_items, compressed=True) == stream
    assert lb.parse_block_stream(lb.write_block_stream(items)) == items


def _arrow_records():
    ipc = pytest.importorskip("pyarrow.ipc")
    with open(DATA / "30720_24576_28672.arrow", "rb") as f:
        return ipc.open_stream(f).read_all().to_pylist()


def test_export_shard_blocks_round_trip():
    records = _arrow_records()
    assert len(records) == 258
    zd = zstandard.ZstdDecompressor()
    for rec in records:
        block = zd.decompress(rec["dvid_compressed_block"])
        assert len(block) == rec["uncompressed_size"]
        np.testing.assert_array_equal(lb.block_labels(block), np.asarray(rec["supervoxels"],
                                                                         dtype=np.uint64))
        voxels = lb.decode_block(block, shape=(64, 64, 64))
        again = lb.encode_block(voxels)
        assert len(again) <= len(block)
        np.testing.assert_array_equal(lb.decode_block(again), voxels)
        labels, counts = lb.block_label_counts(block)
        labels2, counts2 = lb.block_label_counts(voxels)
        np.testing.assert_array_equal(labels, labels2)
        np.testing.assert_array_equal(counts, counts2)
        # Mapping the list (supervoxel -> body) equals mapping the voxels.
        sv = np.asarray(rec["supervoxels"], dtype=np.uint64)
        body = np.asarray(rec["labels"], dtype=np.uint64)
        keys, first = np.unique(sv, return_index=True)
        mapped = lb.decode_block(lb.remap_block(block, keys, body[first]))
        np.testing.assert_array_equal(mapped, body[first][np.searchsorted(keys, voxels)])


def test_export_shard_index_csv_matches_records():
    records = _arrow_records()
    rows = (DATA / "30720_24576_28672.csv").read_text().split()[1:]
    coords = {tuple(int(v) for v in row.split(",")[:3]): int(row.split(",")[3]) for row in rows}
    for i, rec in enumerate(records):
        assert coords[(rec["chunk_x"], rec["chunk_y"], rec["chunk_z"])] == i


@pytest.fixture(scope="module")
def pinky_blocks():
    """The 16 blocks of 64³ with x < 64 of the real segmentation in tests/data."""
    if not PINKY.exists():
        pytest.skip(f"{PINKY} not available")
    with gzip.open(PINKY) as f:
        zyx = np.load(f)[:, :, :64].astype(np.uint64)
    return [np.ascontiguousarray(zyx[z:z + 64, y:y + 64, :])
            for z in range(0, zyx.shape[0], 64) for y in range(0, zyx.shape[1], 64)]


@pytest.mark.skipif(not PINKY.exists(), reason=f"{PINKY} not available")
def test_real_segmentation_round_trip(pinky_blocks):
    codec = lb.LabelBlockCodec()
    for block in pinky_blocks:
        encoded = lb.encode_block(block)
        assert len(encoded) == expected_size(block)
        np.testing.assert_array_equal(lb.decode_block(encoded), block)
        np.testing.assert_array_equal(codec.decode(codec.encode(block), block.shape, np.uint64),
                                      block)
    np.testing.assert_array_equal(ref_decode(lb.encode_block(pinky_blocks[0])), pinky_blocks[0])


# ---------------------------------------------------------------------------------------------
# Generated blocks

EDGES = st.sampled_from([8, 16, 24, 32])


@st.composite
def label_blocks(draw) -> np.ndarray:
    shape = (draw(EDGES), draw(EDGES), draw(EDGES))
    kind = draw(st.sampled_from(["solid", "two", "checker", "random64", "few", "runs"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    big = st.integers(0, 2**64 - 1)
    if kind == "solid":
        return np.full(shape, draw(big), dtype=np.uint64)
    if kind == "two":
        a, b = np.uint64(draw(big)), np.uint64(draw(big))
        return np.where(rng.random(shape) < draw(st.floats(0, 1)), a, b).astype(np.uint64)
    if kind == "checker":
        period = draw(st.sampled_from([1, 2, 3, 4, 8, 16]))
        z, y, x = np.indices(shape)
        odd = (z // period + y // period + x // period) % 2 == 1
        return np.where(odd, np.uint64(draw(big)), np.uint64(0))
    if kind == "random64":
        return rng.integers(0, 2**64, size=shape, dtype=np.uint64)
    if kind == "few":
        pool = np.asarray(draw(st.lists(big, min_size=1, max_size=600)), dtype=np.uint64)
        return pool[rng.integers(0, pool.size, size=shape)]
    # runs of labels along x, as in segmentations
    flat = np.repeat(rng.integers(0, 50, size=shape[0] * shape[1] * shape[2] // 4 + 1),
                     4)[: np.prod(shape)]
    return flat.reshape(shape).astype(np.uint64)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_blocks())
def test_generated_round_trip(arr):
    encoded = lb.encode_block(arr)
    assert len(encoded) == expected_size(arr)
    decoded = lb.decode_block(encoded)
    np.testing.assert_array_equal(decoded, arr)
    if arr.size <= 8 * 16 * 16:
        np.testing.assert_array_equal(ref_decode(encoded), arr)
    assert lb.encode_block(decoded) == encoded  # deterministic
    labels, counts = lb.block_label_counts(encoded)
    ulabels, ucounts = np.unique(arr, return_counts=True)
    np.testing.assert_array_equal(labels, ulabels)
    np.testing.assert_array_equal(counts, ucounts)
    labels, counts = lb.block_label_counts(arr)
    np.testing.assert_array_equal(labels, ulabels)
    np.testing.assert_array_equal(counts, ucounts)
    # block labels are in first-appearance order
    assert len(set(lb.block_labels(encoded).tolist())) == ulabels.size


def test_solid_blocks_are_24_bytes():
    for value in (0, 1, 2**64 - 1):
        for shape in ((8, 8, 8), (64, 64, 64), (16, 32, 64)):
            encoded = lb.encode_block(np.full(shape, value, dtype=np.uint64))
            assert len(encoded) == 24
            assert header(encoded) == (shape[2] // 8, shape[1] // 8, shape[0] // 8, 1)
            decoded = lb.decode_block(encoded)
            assert decoded.shape == shape and (decoded == value).all()


def test_one_label_per_voxel():
    rng = np.random.default_rng(0)
    arr = rng.permutation(np.arange(1, 64**3 + 1, dtype=np.uint64) * 7919).reshape(64, 64, 64)
    encoded = lb.encode_block(arr)
    assert header(encoded)[3] == 262144
    assert (subblock_counts(encoded) == 512).all()
    assert len(encoded) == 16 + 8 * 262144 + 2 * 512 + 4 * 262144 + 512 * 64 * 9
    np.testing.assert_array_equal(lb.decode_block(encoded), arr)
    labels, counts = lb.block_label_counts(encoded)
    assert labels.size == 262144 and (counts == 1).all()


@pytest.mark.parametrize("nlabels", [1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 128, 129,
                                     256, 257, 511, 512])
def test_subblock_bit_widths(nlabels):
    rng = np.random.default_rng(nlabels)
    sub = np.arange(512) % nlabels
    rng.shuffle(sub)
    arr = np.zeros((16, 8, 8), dtype=np.uint64)
    arr[:8] = (sub.reshape(8, 8, 8) + 1000).astype(np.uint64)
    encoded = lb.encode_block(arr)
    assert len(encoded) == expected_size(arr)
    assert subblock_counts(encoded).tolist() == [nlabels, 1]
    np.testing.assert_array_equal(lb.decode_block(encoded), arr)
    np.testing.assert_array_equal(ref_decode(encoded), arr)


def test_non_cubic_and_subblock_order():
    shape = (16, 32, 64)
    z, y, x = np.indices(shape)
    arr = ((z // 8) * 100 + (y // 8) * 10 + (x // 8)).astype(np.uint64)  # one label per sub-block
    encoded = lb.encode_block(arr)
    assert header(encoded) == (8, 4, 2, 64)
    # first-appearance order walks sub-blocks z, then y, then x fastest
    expected = [sz * 100 + sy * 10 + sx for sz in range(2) for sy in range(4) for sx in range(8)]
    assert lb.block_labels(encoded).tolist() == expected
    np.testing.assert_array_equal(lb.decode_block(encoded), arr)
    np.testing.assert_array_equal(ref_decode(encoded), arr)
    arr[5, 17, 33] = 7  # a second label inside sub-block (0, 2, 4)
    encoded = lb.encode_block(arr)
    np.testing.assert_array_equal(lb.decode_block(encoded), arr)
    np.testing.assert_array_equal(ref_decode(encoded), arr)


def test_input_dtypes_and_shapes():
    arr32 = np.arange(512, dtype=np.uint32).reshape(8, 8, 8)
    assert lb.encode_block(arr32) == lb.encode_block(arr32.astype(np.uint64))
    assert lb.encode_block(arr32.astype(">u8")) == lb.encode_block(arr32.astype(np.uint64))
    assert lb.encode_block(arr32.astype(np.int64)) == lb.encode_block(arr32)
    big = np.arange(16 * 16 * 16, dtype=np.uint64).reshape(16, 16, 16)
    view = big[::2, ::2, ::2]  # non-contiguous input
    np.testing.assert_array_equal(lb.decode_block(lb.encode_block(view)), view)
    with pytest.raises(DtypeError):
        lb.encode_block(arr32.astype(np.float64))
    with pytest.raises(DtypeError):
        lb.encode_block(-np.ones((8, 8, 8), dtype=np.int64))
    with pytest.raises(InvalidArgumentError):
        lb.encode_block(np.zeros((8, 8, 12), dtype=np.uint64))
    with pytest.raises(InvalidArgumentError):
        lb.encode_block(np.zeros((8, 8), dtype=np.uint64))
    with pytest.raises(InvalidArgumentError):
        lb.encode_block(np.zeros((0, 8, 8), dtype=np.uint64))


def test_decode_shape_and_out():
    arr = np.arange(16 * 8 * 8, dtype=np.uint64).reshape(16, 8, 8) % 5
    encoded = lb.encode_block(arr)
    assert lb.block_shape(encoded) == (16, 8, 8)
    np.testing.assert_array_equal(lb.decode_block(encoded, shape=(16, 8, 8)), arr)
    with pytest.raises(CorruptDataError):
        lb.decode_block(encoded, shape=(8, 8, 16))
    out = np.empty((16, 8, 8), dtype=np.uint64)
    assert lb.decode_block(encoded, out=out) is out
    np.testing.assert_array_equal(out, arr)
    out32 = np.empty((16, 8, 8), dtype=np.uint32)
    assert lb.decode_block(encoded, out=out32) is out32
    np.testing.assert_array_equal(out32, arr)
    big = np.empty((16, 8, 16), dtype=np.uint64)
    lb.decode_block(encoded, out=big[:, :, ::2])  # non-contiguous destination
    np.testing.assert_array_equal(big[:, :, ::2], arr)
    with pytest.raises(CorruptDataError):
        lb.decode_block(encoded, out=np.empty((8, 8, 8), dtype=np.uint64))
    with pytest.raises(DtypeError):
        lb.decode_block(lb.encode_block(arr + 2**40), out=out32)
    # bytes-like inputs of every kind
    for data in (bytearray(encoded), memoryview(encoded), np.frombuffer(encoded, np.uint8)):
        np.testing.assert_array_equal(lb.decode_block(data), arr)


# ---------------------------------------------------------------------------------------------
# Hand-built blocks: what DVID can store but our encoder never writes


def test_duplicate_and_zero_list_entries():
    # list [5, 0, 5, 9]: entry 1 is a merged-away placeholder, entries 0 and 2 are duplicates.
    a = np.arange(512) % 2
    b = np.arange(512) % 3
    block = build_block((2, 1, 1), [5, 0, 5, 9], [2, 3], [0, 3, 2, 3, 0], [a.tolist(), b.tolist()])
    expected = np.zeros((8, 8, 16), dtype=np.uint64)
    expected[:, :, :8] = np.array([5, 9])[a].reshape(8, 8, 8)
    expected[:, :, 8:] = np.array([5, 9, 5])[b].reshape(8, 8, 8)
    np.testing.assert_array_equal(lb.decode_block(block), expected)
    np.testing.assert_array_equal(ref_decode(block), expected)
    labels, counts = lb.block_label_counts(block)
    assert labels.tolist() == [5, 9]
    assert counts.tolist() == [(expected == 5).sum(), (expected == 9).sum()]
    np.testing.assert_array_equal(lb.block_labels(block), [5, 0, 5, 9])
    remapped = lb.remap_block(block, [5, 9], [1, 1])
    assert lb.block_labels(remapped).tolist() == [1, 0, 1, 1]
    assert (lb.decode_block(remapped) == 1).all()


def test_zero_count_subblocks_decode_as_zero():
    block = build_block((2, 1, 1), [3, 4], [0, 2], [1, 0], [None, [0, 1] * 256])
    expected = np.zeros((8, 8, 16), dtype=np.uint64)
    expected[:, :, 8:] = np.array([4, 3] * 256, dtype=np.uint64).reshape(8, 8, 8)
    np.testing.assert_array_equal(lb.decode_block(block), expected)
    labels, counts = lb.block_label_counts(block)
    assert labels.tolist() == [0, 3, 4] and counts.tolist() == [512, 256, 256]
    # our own encoding of the same voxels is different but equivalent
    np.testing.assert_array_equal(lb.decode_block(lb.encode_block(expected)), expected)


def test_unused_entries_and_trailing_bytes():
    block = build_block((1, 1, 2), [11, 12, 13], [1, 1], [2, 2], [None, None])
    decoded = lb.decode_block(block)
    assert decoded.shape == (16, 8, 8) and (decoded == 13).all()
    labels, counts = lb.block_label_counts(block)
    assert labels.tolist() == [13] and counts.tolist() == [1024]
    solid = build_block((1, 1, 1), [42], [], [], [])
    assert (lb.decode_block(solid + b"\x00" * 40) == 42).all()
    assert lb.block_label_counts(solid + b"junk")[1].tolist() == [512]


def test_remap_block():
    arr = (np.arange(8 * 8 * 16, dtype=np.uint64).reshape(8, 8, 16) % 6) + 10
    block = lb.encode_block(arr)
    keys = np.array([10, 11, 12, 99], dtype=np.uint64)
    values = np.array([1, 1, 2, 5], dtype=np.uint64)
    remapped = lb.remap_block(block, keys, values)
    assert len(remapped) == len(block)
    table = {10: 1, 11: 1, 12: 2}
    expected = np.vectorize(lambda v: table.get(int(v), int(v)), otypes=[np.uint64])(arr)
    np.testing.assert_array_equal(lb.decode_block(remapped), expected)
    assert lb.remap_block(block, [], []) == block
    with pytest.raises(InvalidArgumentError):
        lb.remap_block(block, [1, 2], [3])
    with pytest.raises(InvalidArgumentError):
        lb.remap_block(block, [1, 1], [3, 4])
    with pytest.raises(CorruptDataError):
        lb.remap_block(block[:20], [1], [2])


# ---------------------------------------------------------------------------------------------
# Corrupt input


def _small_block() -> bytes:
    arr = np.zeros((8, 8, 16), dtype=np.uint64)
    arr[:, :, :8] = (np.arange(512) % 3).reshape(8, 8, 8) + 7
    arr[:, :, 8:] = 9
    return lb.encode_block(arr)


def _decode_unless_huge(data):
    if np.prod(lb.block_shape(data)) <= 2**21:  # skip valid but huge solid blocks
        return lb.decode_block(data)
    return None


def _planes_unless_huge(data):
    shape = lb.block_shape(data)
    if np.prod(shape) <= 2**21:
        out = np.zeros(shape, np.uint64)
        return lb.decode_block_planes(data, shape, shape[0] // 2, shape[0], out)
    return None


def _all_readers(data):
    yield lambda: _decode_unless_huge(data)
    yield lambda: _planes_unless_huge(data)
    yield lambda: lb.block_labels(data)
    yield lambda: lb.remap_block(data, [1], [2])
    yield lambda: lb.block_label_counts(data)
    yield lambda: lb.validate_block(data)


@pytest.mark.parametrize("data", [_small_block(), lb.encode_block(np.full((8, 8, 8), 3, np.uint64))])
def test_truncation_at_every_length(data):
    for cut in range(len(data)):
        with pytest.raises(CorruptDataError):
            lb.decode_block(data[:cut])
        with pytest.raises(CorruptDataError):
            lb.block_label_counts(data[:cut])
        if cut < 16 + 8 * header(data)[3]:
            with pytest.raises(CorruptDataError):
                lb.block_labels(data[:cut])


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


@pytest.mark.parametrize("offset, fmt, value, message", [
    (12, "<I", 0, "0 labels"),
    (12, "<I", 2**32 - 1, "label list"),
    (12, "<I", 2**20, "label list"),
    (0, "<I", 0, "grid"),
    (0, "<I", 129, "grid"),
    (4, "<I", 2**31, "grid"),
    (8, "<I", 3, "shape"),
    (0, "<I", 1, "shape"),
    (16 + 8 * 3, "<H", 513, "more than 512"),
    (16 + 8 * 3, "<H", 40, "truncated"),
    (16 + 8 * 3 + 4, "<I", 3, "label list"),  # index entry 0 == N
    (16 + 8 * 3 + 4 + 4, "<I", 2**32 - 1, "label list"),
])
def test_corrupt_fields(offset, fmt, value, message):
    data = _patch(_small_block(), offset, fmt, value)
    with pytest.raises(CorruptDataError, match=message):
        lb.decode_block(data, shape=(8, 8, 16))


def test_packed_value_out_of_range():
    # Ns = 3 uses 2 bits, so the packed value 3 is invalid.
    block = build_block((1, 1, 1), [1, 2, 3], [3], [0, 1, 2], [[0, 1, 2, 3] * 128])
    with pytest.raises(CorruptDataError, match="packed voxel value"):
        lb.decode_block(block)
    with pytest.raises(CorruptDataError, match="packed voxel value"):
        lb.block_label_counts(block)
    lb.validate_block(block)  # structure alone is fine


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_blocks(), st.data())
def test_decode_planes_equal_slicing_the_decoded_block(arr, data):
    """Any plane range, every kind of block (solid, every bit width): exactly those planes
    are written, the others are left as they were."""
    lo = data.draw(st.integers(0, arr.shape[0] - 1))
    hi = data.draw(st.integers(lo + 1, arr.shape[0]))
    out = np.full(arr.shape, 77, np.uint64)
    assert lb.decode_block_planes(lb.encode_block(arr), arr.shape, lo, hi, out) is out
    np.testing.assert_array_equal(out[lo:hi], arr[lo:hi])
    assert (out[:lo] == 77).all() and (out[hi:] == 77).all()


def test_decode_planes_checks_the_values_it_unpacks():
    # two layers of sub-blocks (16 planes); Ns = 3 uses 2 bits, so the packed value 3 in the
    # second layer is invalid
    block = build_block((1, 1, 2), [1, 2, 3], [3, 3], [0, 1, 2, 0, 1, 2],
                        [[0, 1, 2, 0] * 128, [0, 1, 2, 3] * 128])
    out = np.zeros((16, 8, 8), np.uint64)
    lb.decode_block_planes(block, (16, 8, 8), 0, 8, out)  # the first layer is sound
    np.testing.assert_array_equal(out[:8].reshape(-1), np.array([1, 2, 3, 1] * 128, np.uint64))
    for lo, hi in ((8, 16), (7, 9), (15, 16)):
        with pytest.raises(CorruptDataError, match="packed voxel value"):
            lb.decode_block_planes(block, (16, 8, 8), lo, hi, out)
    # the structure is checked whatever the planes: a count past 512 in the other layer
    bad = _patch(block, 16 + 8 * 3 + 2, "<H", 513)
    with pytest.raises(CorruptDataError, match="more than 512"):
        lb.decode_block_planes(bad, (16, 8, 8), 0, 8, out)


def test_decode_planes_refuses_bad_arguments():
    block = _small_block()  # (8, 8, 16)
    ok = np.zeros((8, 8, 16), np.uint64)
    for lo, hi in ((0, 0), (3, 2), (-1, 4), (0, 9)):
        with pytest.raises(InvalidArgumentError, match="planes"):
            lb.decode_block_planes(block, (8, 8, 16), lo, hi, ok)
    for out in (np.zeros((8, 8, 16), np.uint32), np.zeros((8, 8, 8), np.uint64),
                np.zeros((8, 8, 32), np.uint64)[:, :, ::2]):
        with pytest.raises(InvalidArgumentError, match="out must be"):
            lb.decode_block_planes(block, (8, 8, 16), 0, 8, out)
    with pytest.raises(CorruptDataError, match="differs from expected shape"):
        lb.decode_block_planes(block, (16, 8, 8), 0, 8, np.zeros((16, 8, 8), np.uint64))
    codec = codec_from_dict({"name": "labelblock"})
    data = codec.encode(np.arange(8 * 8 * 16, dtype=np.uint64).reshape(8, 8, 16))
    # the codec declines what it cannot decode into, and decodes the rest
    assert not codec.decode_rows(data, (8, 8, 16), np.uint32, 0, 4,
                                 np.zeros((8, 8, 16), np.uint32))
    out = np.full((8, 8, 16), 5, np.uint64)
    assert codec.decode_rows(data, (8, 8, 16), np.uint64, 2, 4, out)
    np.testing.assert_array_equal(out[2:4].reshape(-1), np.arange(2 * 128, 4 * 128))
    assert (out[:2] == 5).all() and (out[4:] == 5).all()


def test_short_and_empty_inputs():
    for data in (b"", b"\x01", b"\x00" * 15, b"\x01\x00\x00\x00" * 4):
        for reader in _all_readers(data):
            with pytest.raises(CorruptDataError):
                reader()
    with pytest.raises(DtypeError):
        lb.decode_block(np.zeros(24, dtype=np.uint16))
    with pytest.raises(InvalidArgumentError):
        lb.decode_block(12345)


@st.composite
def damaged_blocks(draw) -> bytes:
    arr = draw(label_blocks())
    data = bytearray(lb.encode_block(arr))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] ^= 1 << draw(st.integers(0, 7))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if len(data) >= 16 and draw(st.booleans()):  # damage the header fields specifically
        field = draw(st.integers(0, 3))
        struct.pack_into("<I", data, 4 * field, draw(st.integers(0, 2**32 - 1)))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_blocks())
def test_fuzz_damaged_blocks_never_crash(data):
    for reader in _all_readers(data):
        try:
            reader()
        except CorruptDataError:
            pass
    try:
        decoded = _decode_unless_huge(data)
    except CorruptDataError:
        return
    if decoded is None:
        return
    # whatever decodes must agree with the reference decoder
    if decoded.size <= 4096:
        np.testing.assert_array_equal(decoded, ref_decode(data))
    # and a decode of some planes with the whole block's decode
    planes = _planes_unless_huge(data)
    half = decoded.shape[0] // 2
    np.testing.assert_array_equal(planes[half:], decoded[half:])


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_fuzz_random_bytes(data):
    for reader in _all_readers(data):
        try:
            reader()
        except CorruptDataError:
            pass


# ---------------------------------------------------------------------------------------------
# The chunk codec


@pytest.mark.parametrize("outer", ["zstd", "lz4", "gzip", "none"])
def test_codec_round_trip(outer):
    codec = codec_from_dict({"name": "labelblock", "outer": outer})
    assert isinstance(codec, lb.LabelBlockCodec)
    assert codec_from_dict(codec.to_dict()) == codec
    assert codec.to_dict()["name"] == "labelblock"
    arr = load_raw("fib19-64x64x64-sample1.dat.gz")
    data = codec.encode(arr)
    np.testing.assert_array_equal(codec.decode(data, (64, 64, 64), np.uint64), arr)
    assert codec.decode_block_bytes(data, (64, 64, 64)) == lb.encode_block(arr)
    out = np.empty((64, 64, 64), dtype=np.uint64)
    assert codec.decode(data, (64, 64, 64), np.uint64, out=out) is out
    np.testing.assert_array_equal(out, arr)
    small = (arr % 1000).astype(np.uint32)
    dec32 = codec.decode(codec.encode(small), (64, 64, 64), np.uint32)
    assert dec32.dtype == np.uint32
    np.testing.assert_array_equal(dec32, small)
    with pytest.raises(CorruptDataError):
        codec.decode(data, (64, 64, 32), np.uint64)
    if outer != "none":
        with pytest.raises(CorruptDataError):
            codec.decode(data[: len(data) // 2], (64, 64, 64), np.uint64)
        with pytest.raises(CorruptDataError):
            codec.decode(b"\x00" * 64, (64, 64, 64), np.uint64)


def test_codec_config():
    assert lb.LabelBlockCodec().to_dict() == {"name": "labelblock", "outer": "zstd", "level": 1}
    assert codec_from_dict("labelblock") == lb.LabelBlockCodec()
    assert codec_from_dict({"name": "labelblock", "outer": "gzip", "level": 9}).level == 9
    with pytest.raises(InvalidArgumentError):
        lb.LabelBlockCodec(outer="brotli")
    with pytest.raises(InvalidArgumentError):
        lb.LabelBlockCodec(outer="gzip", level=12)
    with pytest.raises(InvalidArgumentError):
        codec_from_dict({"name": "labelblock", "bogus": 1})
    with pytest.raises(DtypeError):
        lb.LabelBlockCodec().decode(b"", (8, 8, 8), np.float32)


def test_codec_refuses_decompression_bombs():
    bomb = zstandard.ZstdCompressor().compress(b"\x00" * (lb.max_block_nbytes((8, 8, 8)) + 1000))
    with pytest.raises(CorruptDataError):
        lb.LabelBlockCodec().decode(bomb, (8, 8, 8), np.uint64)
    bomb = zlib.compress(b"\x00" * 10**7)
    gz = gzip.compress(b"\x00" * 10**7)
    with pytest.raises(CorruptDataError):
        lb.LabelBlockCodec(outer="gzip").decode(gz, (8, 8, 8), np.uint64)
    with pytest.raises(CorruptDataError):
        lb.LabelBlockCodec(outer="gzip").decode(bomb, (8, 8, 8), np.uint64)
    with pytest.raises(CorruptDataError):
        lb.LabelBlockCodec(outer="lz4").decode(struct.pack("<I", 2**31) + b"\x00" * 8,
                                               (8, 8, 8), np.uint64)


# ---------------------------------------------------------------------------------------------
# DVID storage wrapping and the block stream


def test_dvid_serialize_round_trip():
    block = _small_block()
    gz = lb.dvid_serialize(block)
    assert gz[0] == 0x40 and gz[1:3] == b"\x1f\x8b"
    assert lb.dvid_deserialize(gz) == block
    l4 = lb.dvid_serialize(block, "lz4")
    assert l4[0] == 0x80 and struct.unpack_from("<I", l4, 1)[0] == len(block)
    assert lb.dvid_deserialize(l4) == block
    raw = lb.dvid_serialize(block, "none")
    assert raw == b"\x00" + block
    assert lb.dvid_deserialize(raw) == block
    for compression in ("none", "lz4"):
        value = lb.dvid_serialize(block, compression, checksum=True)
        assert value[0] & 0x08
        assert lb.dvid_deserialize(value) == block
        bad = bytearray(value)
        bad[-1] ^= 0xFF
        with pytest.raises(CorruptDataError, match="CRC32"):
            lb.dvid_deserialize(bytes(bad))
    assert lb.dvid_serialize(b"") == b"" and lb.dvid_deserialize(b"") == b""
    # gzip written by Go (the stream fixture's payload) deserializes too
    stream = (DATA / "stream_1block.dat").read_bytes()
    value = b"\x40" + stream[16:]
    assert len(lb.dvid_deserialize(value)) == 152672
    # legacy lz4: a stored length of 0 means the bytes follow as-is
    assert lb.dvid_deserialize(b"\x80" + b"\x00" * 4 + b"abc") == b"abc"
    with pytest.raises(InvalidArgumentError):
        lb.dvid_serialize(block, "gzip", checksum=True)
    with pytest.raises(InvalidArgumentError):
        lb.dvid_serialize(block, "snappy")


@pytest.mark.parametrize("value, message", [
    (b"\x41abc", "reserved"),
    (b"\x20abc", "snappy"),
    (b"\xa0abc", "jpeg"),
    (b"\x58abc", "checksum"),
    (b"\x08ab", "CRC32"),
    (b"\x40\x1f\x8b\x08\x00", "gzip"),
    (b"\x40not gzip", "gzip"),
    (b"\x80\x05\x00", "lz4"),
    (b"\x80\xff\x00\x00\x00\x01\x02", "lz4"),
])
def test_dvid_deserialize_rejects(value, message):
    with pytest.raises(CorruptDataError, match=message):
        lb.dvid_deserialize(value)


def test_dvid_deserialize_gzip_members():
    value = lb.dvid_serialize(b"abc")
    assert lb.dvid_deserialize(value + lb.dvid_serialize(b"def")[1:]) == b"abcdef"
    with pytest.raises(CorruptDataError, match="trailing"):
        lb.dvid_deserialize(value + b"junk")


def test_dvid_deserialize_max_size():
    value = lb.dvid_serialize(b"\x00" * 10000)
    with pytest.raises(CorruptDataError):
        lb.dvid_deserialize(value, max_size=100)
    assert len(lb.dvid_deserialize(value, max_size=10000)) == 10000


def test_block_stream_errors():
    block = _small_block()
    stream = lb.write_block_stream([((1, -2, 3), block), ((4, 5, 6), block)], level=1)
    items = lb.parse_block_stream(stream)
    assert [c for c, _ in items] == [(1, -2, 3), (4, 5, 6)]
    assert all(b == block for _, b in items)
    assert lb.parse_block_stream(b"") == []
    with pytest.raises(CorruptDataError, match="header"):
        lb.parse_block_stream(stream[:10])
    with pytest.raises(CorruptDataError, match="truncated"):
        lb.parse_block_stream(stream[:-1])
    with pytest.raises(CorruptDataError, match="length"):
        lb.parse_block_stream(struct.pack("<4i", 0, 0, 0, 0))
    with pytest.raises(CorruptDataError, match="gzip"):
        lb.parse_block_stream(struct.pack("<4i", 0, 0, 0, 3) + b"abc")
    with pytest.raises(InvalidArgumentError):
        lb.write_block_stream([((1, 2), block)])


def test_import_diced_does_not_load_numba():
    code = ("import sys, diced, diced.errors; "
            "assert 'numba' not in sys.modules, 'numba imported'; "
            "assert 'diced.array.codecs.labelblock' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- decompression bombs (issue 7, item 10) -------------------------------------------------


def _peak_bytes(fn) -> int:
    """Peak memory numpy and Python allocated while ``fn`` ran (numpy reports to tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except CorruptDataError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_tiny_block_declaring_a_huge_shape_allocates_nothing():
    # 40 bytes: a header declaring 128³ sub-blocks (1024³ voxels, 8 GiB), 3 labels, no more
    bomb = struct.pack("<4I", 128, 128, 128, 3) + struct.pack("<3Q", 1, 2, 3)
    assert len(bomb) == 40
    with pytest.raises(CorruptDataError, match="truncated"):
        lb.decode_block(bomb, max_voxels=None)
    with pytest.raises(CorruptDataError, match="more than"):
        lb.decode_block(bomb)
    with pytest.raises(CorruptDataError, match="differs from expected"):
        lb.decode_block(bomb, shape=(64, 64, 64))
    assert _peak_bytes(lambda: lb.decode_block(bomb, max_voxels=None)) < 1 << 20
    assert _peak_bytes(lambda: lb.decode_block(bomb)) < 1 << 20
    # a valid solid block is 24 bytes at any size: only the voxel limit stops it
    solid = struct.pack("<4I", 128, 128, 128, 1) + struct.pack("<Q", 5)
    assert _peak_bytes(lambda: lb.decode_block(solid)) < 1 << 20
    small = struct.pack("<4I", 1, 1, 1, 1) + struct.pack("<Q", 5)
    assert (lb.decode_block(small) == 5).all()
    assert (lb.decode_block(struct.pack("<4I", 8, 8, 8, 1) + struct.pack("<Q", 5),
                            max_voxels=64 ** 3) == 5).all()


def _gzip_zeros(n: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    step = bytes(1 << 20)
    parts = [c.compress(step) for _ in range(n >> 20)]
    parts.append(c.compress(bytes(n & ((1 << 20) - 1))))
    return b"".join(parts) + c.flush()


def test_block_stream_bomb_is_refused():
    # one block: 261 KB of gzip that inflates to 256 MiB
    payload = _gzip_zeros(256 << 20)
    assert len(payload) < 300_000
    stream = struct.pack("<4i", 0, 0, 0, len(payload)) + payload
    with pytest.raises(CorruptDataError, match="block \\(0, 0, 0\\)"):
        lb.parse_block_stream(stream)
    assert _peak_bytes(lambda: lb.parse_block_stream(stream)) < 16 << 20
    # many blocks, each within the per-block limit, 256 MiB together
    one = _gzip_zeros(3 << 20)  # about a 64³ block's largest serialization
    many = b"".join(struct.pack("<4i", i, 0, 0, len(one)) + one for i in range(80))
    assert len(many) < 400_000
    with pytest.raises(CorruptDataError, match="in total"):
        lb.parse_block_stream(many)
    assert _peak_bytes(lambda: lb.parse_block_stream(many)) < 96 << 20
    # limits can be raised (or lifted) by the caller
    assert len(lb.parse_block_stream(many[:2 * (16 + len(one))])) == 2
    assert len(lb.parse_block_stream(stream, max_bytes=None, max_block_bytes=None)[0][1]) \
        == 256 << 20
