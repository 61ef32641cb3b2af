"""Tests of DVID export-shards files: schema, writer, CSV index, readers, import."""

from __future__ import annotations

import json
import math
import struct
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pytest
import zstandard
from pyarrow import ipc

from diced.errors import CorruptDataError, FormatError, InvalidArgumentError, NotFoundError
from diced.export.arrow_shards import (
    ARROW_SCHEMA,
    ArraySource,
    BlockSink,
    BlockSource,
    ShardFile,
    ShardRecord,
    export_shards,
    import_shards,
    read_shard_index,
)
from diced.export.sharding import parse_spec

DATA = Path(__file__).parent / "data" / "dvid"
FIXTURE_ARROW = DATA / "30720_24576_28672.arrow"
FIXTURE_CSV_NEW = DATA / "30720_24576_28672-newformat.csv"
FIXTURE_CSV_OLD = DATA / "30720_24576_28672.csv"
FIXTURE_ORIGIN = (30720, 24576, 28672)


def _labelblock():
    try:
        from diced.array.codecs import labelblock
    except ImportError:
        pytest.skip("diced.array.codecs.labelblock (DVID block codec) is not available yet")
    return labelblock


# -- helpers -----------------------------------------------------------------------------------


def solid(label: int) -> bytes:
    """A 24-byte solid DVID block."""
    return struct.pack("<4IQ", 8, 8, 8, 1, label)


class DictSource:
    """A dict-backed BlockSource, as a third party would write one."""

    def __init__(self, blocks: dict, shape_zyx, mapping: dict | None = None):
        self.blocks = dict(blocks)
        self.shape = tuple(shape_zyx)
        self.mapping = dict(mapping or {})
        self.reads = 0

    def scale_shape(self, scale):
        return self.shape

    def block_coords(self, scale):
        return np.array(list(self.blocks), dtype=np.int64).reshape(-1, 3)

    def read_dvid_blocks(self, coords, scale):
        self.reads += len(coords)
        return [self.blocks[tuple(int(v) for v in c)] for c in coords]

    def map_labels(self, labels):
        return np.array([self.mapping.get(int(v), int(v)) for v in labels], dtype=np.uint64)


class CollectSink:
    def __init__(self):
        self.blocks: dict[tuple[int, int, int], bytes] = {}
        self.calls = 0

    def write_dvid_blocks(self, coords, blocks, scale):
        self.calls += 1
        self.scale = scale
        assert coords.shape == (len(blocks), 3) and coords.dtype == np.int64
        for c, b in zip(coords.tolist(), blocks, strict=True):
            self.blocks[tuple(c)] = b


def small_spec(size=(640, 384, 256), preshift=1, minishard=2, shard_bits=None, **top) -> dict:
    bits = sum(max(0, math.ceil(s / 64) - 1).bit_length() for s in size)
    if shard_bits is None:
        shard_bits = max(0, bits - preshift - minishard)
    spec = {
        "@type": "neuroglancer_multiscale_volume",
        "type": "segmentation",
        "data_type": "uint64",
        "num_channels": 1,
        "scales": [
            {
                "chunk_sizes": [[64, 64, 64]],
                "encoding": "compressed_segmentation",
                "key": "8x8x8",
                "resolution": [8, 8, 8],
                "size": list(size),
                "sharding": {
                    "@type": "neuroglancer_uint64_sharded_v1",
                    "hash": "identity",
                    "preshift_bits": preshift,
                    "minishard_bits": minishard,
                    "shard_bits": shard_bits,
                    "minishard_index_encoding": "gzip",
                },
            }
        ],
    }
    spec.update(top)
    return spec


def mcns_spec_scale1() -> dict:
    """A two-scale spec whose scale 1 is mCNS scale index 1 (the fixture's scale)."""
    path = DATA / "mcns-ng-specs.json"
    if not path.exists():
        pytest.skip("mcns-ng-specs.json not available")
    full = json.loads(path.read_text())
    return {k: v for k, v in full.items() if k != "scales"} | {"scales": full["scales"][:2]}


def read_csv(fs, path) -> tuple[int, list[tuple[int, ...]]]:
    text = fs.cat_file(path).decode()
    lines = text.splitlines()
    assert lines[0].startswith("# schema_size=")
    assert lines[1] == "x,y,z,offset,size,batch_idx"
    assert text.endswith("\n")
    return int(lines[0].split("=")[1]), [tuple(int(v) for v in ln.split(",")) for ln in lines[2:]]


def fetch_row(data: bytes, schema_size: int, offset: int, size: int, batch_idx: int) -> dict:
    schema = ipc.read_schema(pa.py_buffer(data[:schema_size]))
    msg = ipc.read_message(pa.py_buffer(data[offset : offset + size]))
    batch = ipc.read_record_batch(msg, schema)
    return batch.slice(batch_idx, 1).to_pylist()[0]


@pytest.fixture(scope="module")
def fixture_records() -> list[ShardRecord]:
    return list(ShardFile(FIXTURE_ARROW, FIXTURE_CSV_NEW))


@pytest.fixture
def mem_url():
    root = f"memory://diced-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


# -- schema ------------------------------------------------------------------------------------


def test_schema_equals_go_fixture():
    with open(FIXTURE_ARROW, "rb") as f:
        go_schema = ipc.open_stream(f).schema
    assert ARROW_SCHEMA.equals(go_schema, check_metadata=True)
    assert ARROW_SCHEMA.metadata is None
    assert [f.name for f in ARROW_SCHEMA] == [
        "chunk_x",
        "chunk_y",
        "chunk_z",
        "labels",
        "supervoxels",
        "dvid_compressed_block",
        "uncompressed_size",
    ]
    assert not any(f.nullable for f in ARROW_SCHEMA)
    for name in ("labels", "supervoxels"):
        child = ARROW_SCHEMA.field(name).type.value_field
        assert child.name == "item" and child.nullable and child.type == pa.uint64()
    assert ARROW_SCHEMA.field("dvid_compressed_block").metadata == {
        b"compression": b"true",
        b"codec": b"zstd",
    }
    assert isinstance(DictSource({}, (1, 1, 1)), BlockSource)
    assert isinstance(CollectSink(), BlockSink)


# -- CSV index ---------------------------------------------------------------------------------


def test_read_index_new_format_fixture():
    idx = read_shard_index(FIXTURE_CSV_NEW)
    assert idx.format == "new" and idx.schema_size == 688 and len(idx) == 258
    assert idx.coords[0].tolist() == [509, 413, 469]
    assert (idx.offsets[0], idx.sizes[0], idx.batch_idx[0]) == (688, 792, 0)
    assert (idx.rec == -1).all()
    # same content as text and bytes
    assert read_shard_index(FIXTURE_CSV_NEW.read_text()).coords.tolist() == idx.coords.tolist()
    assert len(read_shard_index(FIXTURE_CSV_NEW.read_bytes())) == 258


def test_read_index_old_and_transitional():
    old = read_shard_index(FIXTURE_CSV_OLD)
    assert old.format == "old" and old.schema_size == 0 and not old.has_offsets
    assert old.rec.tolist() == list(range(258))
    assert (old.offsets == -1).all() and (old.sizes == -1).all()
    new = read_shard_index(FIXTURE_CSV_NEW)
    assert old.coords.tolist() == new.coords.tolist()
    trans = read_shard_index("# schema_size=688\nx,y,z,rec,offset,size\n509,413,469,0,688,792\n")
    assert trans.format == "transitional" and trans.has_offsets
    assert (trans.rec[0], trans.offsets[0], trans.sizes[0], trans.batch_idx[0]) == (0, 688, 792, 0)
    both = read_shard_index("x,y,z,rec,offset,size,batch_idx\n1,2,3,0,8,16,2\n")
    assert both.format == "new" and both.batch_idx.tolist() == [2]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# schema_size=5\n",
        "a,b,c\n1,2,3\n",
        "x,y,z\n1,2,3\n",
        "x,y,z,rec\n1,2\n",
        "x,y,z,rec\n1,2,q,0\n",
        "# schema_size=abc\nx,y,z,rec\n",
        "x,y,z,offset,size,batch_idx\n1,2,3,-5,10,0\n",
        "x,y,z,offset,size,batch_idx\n1,2,3,5,10,-1\n",
    ],
)
def test_read_index_bad_csv(text):
    with pytest.raises(FormatError):
        read_shard_index(text.encode())


# -- reading the fixture -----------------------------------------------------------------------


def test_shard_file_ranged_matches_stream(fixture_records):
    ranged = ShardFile(FIXTURE_ARROW, FIXTURE_CSV_NEW)
    old = ShardFile(FIXTURE_ARROW, FIXTURE_CSV_OLD)
    plain = ShardFile(str(FIXTURE_ARROW).replace(".arrow", ".arrow"), None)
    assert ranged._ranged and not old._ranged
    assert len(ranged) == len(old) == len(fixture_records) == 258
    by_chunk = {r.chunk: r for r in fixture_records}
    assert len(by_chunk) == 258
    for x, y, z in ranged.coords.tolist()[::7]:
        a, b = ranged.get(x, y, z), old.get(x, y, z)
        assert a.compressed == b.compressed == by_chunk[(x, y, z)].compressed
        assert a.labels.tolist() == b.labels.tolist()
        assert (x, y, z) in ranged and (x, y, z) in plain
    with pytest.raises(NotFoundError):
        ranged.get(0, 0, 0)
    with pytest.raises(KeyError):
        old.get(0, 0, 0)
    assert ranged.schema.equals(ARROW_SCHEMA, check_metadata=True)


def test_fixture_frames_and_label_lists(fixture_records):
    for rec in fixture_records:
        params = zstandard.get_frame_parameters(rec.compressed)
        assert params.has_checksum and params.content_size == rec.uncompressed_size
        block = rec.dvid_block()
        n = struct.unpack_from("<I", block, 12)[0]
        table = np.frombuffer(block, "<u8", n, 16)
        assert table.tolist() == rec.supervoxels.tolist()
        assert len(rec.labels) == n


def test_dvid_schema_size_zero_falls_back_to_stream(tmp_path, fixture_records):
    # Go's Arrow writer writes the schema lazily: DVID's CSV says schema_size=0 and the first
    # row's span starts at 0 and includes the schema message.
    idx = read_shard_index(FIXTURE_CSV_NEW)
    lines = ["# schema_size=0", "x,y,z,offset,size,batch_idx"]
    for i, ((x, y, z), off, size) in enumerate(
        zip(idx.coords.tolist(), idx.offsets.tolist(), idx.sizes.tolist(), strict=True)
    ):
        if i == 0:
            off, size = 0, off + size
        lines.append(f"{x},{y},{z},{off},{size},0")
    arrow = tmp_path / "30720_24576_28672.arrow"
    arrow.write_bytes(FIXTURE_ARROW.read_bytes())
    (tmp_path / "30720_24576_28672.csv").write_text("\n".join(lines) + "\n")
    shard = ShardFile(arrow)  # finds the .csv next to it
    assert shard.index is not None and not shard._ranged
    first = fixture_records[0]
    assert shard.get(*first.chunk).compressed == first.compressed
    assert len(list(shard)) == 258


def test_import_fixture_supervoxels_and_labels(fixture_records):
    sv_sink, body_sink = CollectSink(), CollectSink()
    rep = import_shards(FIXTURE_ARROW, sv_sink, scale=1, blocks_per_write=100)
    assert rep.blocks == 258 and rep.shards == 1 and sv_sink.calls == 3 and sv_sink.scale == 1
    import_shards([FIXTURE_ARROW], body_sink, scale=1, labels="labels")
    for rec in fixture_records:
        sv, body = sv_sink.blocks[rec.chunk], body_sink.blocks[rec.chunk]
        n = len(rec.supervoxels)
        assert np.frombuffer(sv, "<u8", n, 16).tolist() == rec.supervoxels.tolist()
        assert np.frombuffer(body, "<u8", n, 16).tolist() == rec.labels.tolist()
        assert sv[:16] == body[:16] and sv[16 + 8 * n :] == body[16 + 8 * n :]
    with pytest.raises(InvalidArgumentError):
        import_shards(FIXTURE_ARROW, CollectSink(), labels="bodies")


def test_import_labels_voxels_are_mapped_supervoxels(fixture_records):
    lb = _labelblock()
    for rec in fixture_records[:40]:
        sv = lb.decode_block(rec.dvid_block("supervoxels"))
        body = lb.decode_block(rec.dvid_block("labels"))
        keys, values = rec.supervoxels, rec.labels
        pos = np.searchsorted(keys[np.argsort(keys)], sv)
        expect = values[np.argsort(keys)][np.minimum(pos, len(keys) - 1)]
        assert np.isin(sv, keys).all()
        assert np.array_equal(body, expect)


def test_record_remap_when_lists_are_permuted(fixture_records):
    rec = next(r for r in fixture_records if len(r.supervoxels) > 3)
    perm = np.arange(len(rec.supervoxels))[::-1]
    shuffled = ShardRecord(
        rec.chunk,
        rec.labels[perm],
        rec.supervoxels[perm],
        rec.compressed,
        rec.uncompressed_size,
    )
    assert shuffled.dvid_block("labels") == rec.dvid_block("labels")


def test_corrupt_records():
    rec = ShardRecord((0, 0, 0), np.zeros(1, np.uint64), np.zeros(1, np.uint64), b"junk", 24)
    with pytest.raises(CorruptDataError):
        rec.dvid_block()
    frame = zstandard.ZstdCompressor().compress(solid(5))
    with pytest.raises(CorruptDataError, match="uncompressed_size"):
        ShardRecord(
            (0, 0, 0), np.zeros(1, np.uint64), np.zeros(1, np.uint64), frame, 30
        ).dvid_block()
    bad = ShardRecord((0, 0, 0), np.zeros(2, np.uint64), np.zeros(1, np.uint64), frame, 24)
    with pytest.raises(CorruptDataError):
        bad.dvid_block("labels")


# -- round trip of the real fixture ------------------------------------------------------------


def _fixture_source(fixture_records) -> DictSource:
    sink = CollectSink()
    import_shards(FIXTURE_ARROW, sink, scale=1)
    mapping = {}
    for rec in fixture_records:
        mapping.update(zip(rec.supervoxels.tolist(), rec.labels.tolist(), strict=True))
    size = mcns_spec_scale1()["scales"][1]["size"]
    return DictSource(sink.blocks, size[::-1], mapping)


def test_round_trip_fixture(tmp_path, fixture_records):
    spec = mcns_spec_scale1()
    sc = parse_spec(spec).scale(1)
    coords = np.array([r.chunk for r in fixture_records])
    assert {tuple(o) for o in sc.shard_voxel_origins(coords).tolist()} == {FIXTURE_ORIGIN}

    source = _fixture_source(fixture_records)
    rep = export_shards(source, spec, tmp_path, scale=1, batch_size=1, progress=False)
    assert rep.shards_written == 1 and rep.blocks_written == 258 and rep.blocks_skipped == 0
    stem = "30720_24576_28672"
    arrow, csv = tmp_path / "s1" / f"{stem}.arrow", tmp_path / "s1" / f"{stem}.csv"
    assert rep.arrow_paths == [str(arrow)] and rep.csv_paths == [str(csv)]
    assert sorted(p.name for p in (tmp_path / "s1").iterdir()) == [f"{stem}.arrow", f"{stem}.csv"]
    assert rep.shards[0].origin == FIXTURE_ORIGIN
    assert rep.shards[0].shard_number == int(sc.shard_numbers(coords[:1])[0])
    assert rep.uncompressed_bytes == sum(r.uncompressed_size for r in fixture_records)

    data = arrow.read_bytes()
    assert data.endswith(b"\xff\xff\xff\xff\x00\x00\x00\x00")
    assert rep.bytes_written == len(data) + csv.stat().st_size
    schema_size, rows = read_csv(fsspec.filesystem("file"), str(csv))
    assert schema_size == len(ARROW_SCHEMA.serialize())
    assert ipc.open_stream(data).schema.equals(ARROW_SCHEMA, check_metadata=True)
    # deterministic order: ascending Morton code, contiguous non-overlapping messages
    ids = sc.chunk_ids(np.array([r[:3] for r in rows])).tolist()
    assert ids == sorted(ids)
    expected_offset = schema_size
    by_chunk = {r.chunk: r for r in fixture_records}
    for x, y, z, offset, size, batch_idx in rows:
        assert offset == expected_offset and batch_idx == 0
        expected_offset += size
        row = fetch_row(data, schema_size, offset, size, batch_idx)
        orig = by_chunk[(x, y, z)]
        assert (row["chunk_x"], row["chunk_y"], row["chunk_z"]) == (x, y, z)
        assert row["supervoxels"] == orig.supervoxels.tolist()
        assert row["labels"] == orig.labels.tolist()
        assert row["uncompressed_size"] == orig.uncompressed_size
        frame = row["dvid_compressed_block"]
        params = zstandard.get_frame_parameters(frame)
        assert params.has_checksum and params.content_size == orig.uncompressed_size
        assert zstandard.ZstdDecompressor().decompress(frame) == orig.dvid_block()
    assert expected_offset == len(data) - 8
    # our own reader uses the offsets
    shard = ShardFile(arrow)
    assert shard._ranged and len(shard) == 258


def test_round_trip_fixture_voxels(tmp_path, fixture_records):
    lb = _labelblock()
    source = _fixture_source(fixture_records)
    export_shards(source, mcns_spec_scale1(), tmp_path, scale=1, progress=False)  # batch 256
    out = ShardFile(tmp_path / "s1" / "30720_24576_28672.arrow")
    assert out._ranged
    for rec in fixture_records:
        got = out.get(*rec.chunk)
        for kind in ("supervoxels", "labels"):
            assert np.array_equal(
                lb.decode_block(got.dvid_block(kind)), lb.decode_block(rec.dvid_block(kind))
            )


# -- export behaviour --------------------------------------------------------------------------


def _grid_source(grid=(10, 6, 4), seed=0, zero_every=0) -> DictSource:
    rng = np.random.default_rng(seed)
    blocks = {}
    for x in range(grid[0]):
        for y in range(grid[1]):
            for z in range(grid[2]):
                k = len(blocks)
                label = 0 if zero_every and k % zero_every == 0 else int(rng.integers(1, 2**40))
                blocks[(x, y, z)] = solid(label)
    return DictSource(blocks, tuple(g * 64 for g in grid[::-1]))


def test_batch_size_rows_share_messages(tmp_path):
    source = _grid_source()
    spec = small_spec(preshift=2, minishard=2)  # 4x2x2-chunk shards of 16 blocks
    rep = export_shards(source, spec, tmp_path, batch_size=5, progress=False)
    fs = fsspec.filesystem("file")
    assert rep.blocks_written == 240
    for summary in rep.shards:
        schema_size, rows = read_csv(fs, summary.csv_path)
        data = Path(summary.arrow_path).read_bytes()
        spans = {}
        for i, (x, y, z, off, size, b) in enumerate(rows):
            assert b == i % 5
            spans.setdefault((off, size), []).append(b)
            row = fetch_row(data, schema_size, off, size, b)
            assert (row["chunk_x"], row["chunk_y"], row["chunk_z"]) == (x, y, z)
            assert row["supervoxels"] == [struct.unpack_from("<Q", source.blocks[(x, y, z)], 16)[0]]
        assert len(spans) == math.ceil(len(rows) / 5)
        assert all(len(v) == 5 for v in list(spans.values())[:-1])
        with ipc.open_stream(data) as reader:
            batches = list(reader)
        assert [b.num_rows for b in batches] == [len(v) for v in spans.values()]


def test_batch_size_defaults_from_spec(tmp_path):
    source = _grid_source(grid=(2, 2, 2))
    export_shards(source, small_spec(batch_size=3), tmp_path / "a", progress=False)
    export_shards(source, small_spec(batch_size=3), tmp_path / "b", batch_size=1, progress=False)
    export_shards(source, small_spec(), tmp_path / "c", progress=False)
    fs = fsspec.filesystem("file")

    def batches(d):
        (csv,) = (d / "s0").glob("*.csv")
        return [r[5] for r in read_csv(fs, str(csv))[1]]

    assert batches(tmp_path / "a") == [0, 1, 2, 0, 1, 2, 0, 1]
    assert batches(tmp_path / "b") == [0] * 8
    assert batches(tmp_path / "c") == [0] * 8


def test_zero_blocks_skipped(tmp_path):
    blocks = {
        (0, 0, 0): solid(0),  # zero
        (1, 0, 0): solid(7),  # mapped to zero
        (0, 1, 0): solid(8),  # kept
        (0, 0, 3): solid(0),  # a shard holding only zeros -> no files
        (1, 1, 3): solid(7),
    }
    two = struct.pack("<4I2Q", 8, 8, 8, 2, 7, 9)  # header+list is all export reads
    blocks[(1, 1, 0)] = two  # [7 -> 0, 9] kept
    source = DictSource(blocks, (256, 384, 640), mapping={7: 0})
    rep = export_shards(source, small_spec(), tmp_path, progress=False)
    assert rep.blocks_written == 2 and rep.blocks_skipped == 4
    assert sorted(p.name for p in (tmp_path / "s0").iterdir()) == ["0_0_0.arrow", "0_0_0.csv"]
    (rows,) = [read_csv(fsspec.filesystem("file"), rep.csv_paths[0])[1]]
    assert sorted(r[:3] for r in rows) == [(0, 1, 0), (1, 1, 0)]
    shard = ShardFile(rep.arrow_paths[0])
    rec = shard.get(1, 1, 0)
    assert rec.supervoxels.tolist() == [7, 9] and rec.labels.tolist() == [0, 9]


def test_all_blocks_zero_writes_nothing(tmp_path):
    source = DictSource({(0, 0, 0): solid(0)}, (64, 64, 64))
    rep = export_shards(source, small_spec(), tmp_path, progress=False)
    assert rep.shards_written == 0 and rep.blocks_skipped == 1
    assert list((tmp_path / "s0").iterdir()) == []


def test_overwrite_refuses_then_replaces(tmp_path):
    spec = small_spec(preshift=1, minishard=1)  # 2x2x1 shards
    first = DictSource({(0, 0, 0): solid(1), (4, 4, 2): solid(2)}, (256, 384, 640))
    rep1 = export_shards(first, spec, tmp_path, progress=False)
    assert rep1.shards_written == 2
    second = DictSource({(0, 0, 0): solid(3)}, (256, 384, 640))
    with pytest.raises(InvalidArgumentError, match="overwrite=True"):
        export_shards(second, spec, tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "s0").iterdir()) == [
        "0_0_0.arrow",
        "0_0_0.csv",
        "256_256_128.arrow",
        "256_256_128.csv",
    ]
    rep2 = export_shards(second, spec, tmp_path, overwrite=True, progress=False)
    assert rep2.shards_written == 1
    assert sorted(p.name for p in (tmp_path / "s0").iterdir()) == ["0_0_0.arrow", "0_0_0.csv"]
    assert ShardFile(tmp_path / "s0" / "0_0_0.arrow").get(0, 0, 0).supervoxels.tolist() == [3]
    # another scale directory is independent
    rep3 = export_shards(
        DictSource({(0, 0, 0): solid(4)}, (64, 64, 64)),
        {**spec, "scales": spec["scales"] * 2},
        tmp_path,
        scale=1,
        progress=False,
    )
    assert rep3.shards_written == 1 and (tmp_path / "s0" / "0_0_0.arrow").exists()


def test_non_cubic_shards(tmp_path):
    source = _grid_source(grid=(10, 6, 4), seed=3)
    spec = small_spec(preshift=1, minishard=1)  # 2 bits -> 2x2x1 chunks = 128x128x64 voxels
    sc = parse_spec(spec).scale(0)
    assert sc.shard_shape == (2, 2, 1)
    rep = export_shards(source, spec, tmp_path, progress=False)
    assert rep.shards_written == 5 * 3 * 4 and rep.blocks_written == 240
    numbers = set()
    for s in rep.shards:
        ox, oy, oz = s.origin
        assert (ox % 128, oy % 128, oz % 64) == (0, 0, 0)
        assert Path(s.arrow_path).name == f"{ox}_{oy}_{oz}.arrow"
        coords = ShardFile(s.arrow_path).coords
        assert len(coords) == 4
        assert set(map(tuple, coords.tolist())) == {
            (ox // 64 + dx, oy // 64 + dy, oz // 64) for dx in (0, 1) for dy in (0, 1)
        }
        assert set(sc.shard_numbers(coords).tolist()) == {s.shard_number}
        numbers.add(s.shard_number)
    assert len(numbers) == rep.shards_written


def test_memory_fs_destination(mem_url, fixture_records):
    source = _grid_source(grid=(4, 4, 2), seed=1)
    rep = export_shards(source, small_spec(), mem_url, progress=False, batch_size=2)
    fs = fsspec.filesystem("memory")
    assert rep.dest.startswith("memory://")
    assert rep.shards_written == 4
    for s in rep.shards:
        assert s.arrow_path.startswith("memory://") and fs.exists(s.csv_path)
        shard = ShardFile(s.arrow_path)
        assert shard._ranged and len(shard) == 8
    sink = CollectSink()
    assert import_shards(mem_url, sink).blocks == 32  # finds s0/ under the root
    assert sink.blocks == source.blocks
    with pytest.raises(InvalidArgumentError):
        export_shards(source, small_spec(), mem_url, progress=False)
    assert (
        export_shards(source, small_spec(), mem_url, overwrite=True, progress=False).blocks_written
        == 32
    )


def test_parallel_paths_give_identical_files(tmp_path):
    source = _grid_source(grid=(10, 6, 4), seed=5, zero_every=7)
    spec = small_spec(preshift=2, minishard=1)

    class FakeClient:  # the client.map / future.result surface of distributed.Client
        def __init__(self):
            self.pool = ThreadPoolExecutor(3)

        def map(self, func, items, **kwargs):
            return [self.pool.submit(func, item) for item in items]

        def gather(self, futures):
            return [f.result() for f in futures]

    runs = {
        "t1": {"threads": 1},
        "t4": {"threads": 4},
        "dask": {"dask_client": "threads"},
        "sync": {"dask_client": "sync"},
        "client": {"dask_client": FakeClient()},
    }
    contents = {}
    for name, kwargs in runs.items():
        rep = export_shards(source, spec, tmp_path / name, progress=False, **kwargs)
        assert rep.blocks_written == 240 - len([k for k in range(240) if k % 7 == 0])
        contents[name] = {
            p.name: p.read_bytes() for p in sorted((tmp_path / name / "s0").iterdir())
        }
    ref = contents.pop("t1")
    for name, files in contents.items():
        assert files == ref, name


def test_export_input_errors(tmp_path):
    spec = small_spec()
    ok = DictSource({(0, 0, 0): solid(1)}, (64, 64, 64))
    with pytest.raises(FormatError, match="hash"):
        bad = small_spec()
        bad["scales"][0]["sharding"]["hash"] = "murmurhash3_x86_128"
        export_shards(ok, bad, tmp_path, progress=False)
    with pytest.raises(InvalidArgumentError, match="outside"):
        export_shards(DictSource({(10, 0, 0): solid(1)}, (64, 64, 64)), spec, tmp_path)
    dup = DictSource({(0, 0, 0): solid(1)}, (64, 64, 64))
    dup.block_coords = lambda s: np.array([[0, 0, 0], [0, 0, 0]])
    with pytest.raises(InvalidArgumentError, match="duplicate"):
        export_shards(dup, spec, tmp_path, progress=False)
    with pytest.raises(CorruptDataError):
        export_shards(DictSource({(0, 0, 0): b"short"}, (64, 64, 64)), spec, tmp_path / "c")
    assert not list((tmp_path / "c" / "s0").glob("*"))  # no partial or temp files
    for kwargs in ({"batch_size": 0}, {"threads": 0}, {"zstd_level": 99}, {"scale": 3}):
        with pytest.raises(InvalidArgumentError):
            export_shards(ok, spec, tmp_path / "d", progress=False, **kwargs)
    with pytest.raises(InvalidArgumentError, match="BlockSource"):
        export_shards(object(), spec, tmp_path / "e")


def test_spec_from_path_and_text(tmp_path):
    spec = small_spec()
    path = tmp_path / "info.json"
    path.write_text(json.dumps(spec))
    ok = DictSource({(0, 0, 0): solid(1)}, (64, 64, 64))
    assert export_shards(ok, path, tmp_path / "a", progress=False).blocks_written == 1
    assert export_shards(ok, str(path), tmp_path / "b", progress=False).blocks_written == 1
    assert export_shards(ok, json.dumps(spec), tmp_path / "c", progress=False).blocks_written == 1
    assert export_shards(ok, parse_spec(spec), tmp_path / "d", progress=False).blocks_written == 1


# -- ArraySource (needs the block codec) -------------------------------------------------------


def test_array_source_round_trip(tmp_path):
    lb = _labelblock()
    rng = np.random.default_rng(11)
    vol = rng.integers(1, 6, size=(70, 130, 100)).astype(np.uint64) * 1000
    vol[:, :64, :64] = 0  # block (0, 0, 0) and (0, 0, 1) are all zero -> skipped
    mapping = {1000: 1, 2000: 1, 3000: 0}
    source = ArraySource(vol, mapping=mapping)
    assert isinstance(source, BlockSource)
    assert source.scale_shape(0) == (70, 130, 100)
    assert source.block_coords(0).shape == (2 * 3 * 2, 3)
    spec = small_spec(size=(100, 130, 70), preshift=1, minishard=0)
    rep = export_shards(source, spec, tmp_path, progress=False)
    assert rep.blocks_written == 12 - 2 and rep.blocks_skipped == 2

    class VolumeSink:
        def __init__(self):
            self.vol = np.zeros((128, 192, 128), np.uint64)

        def write_dvid_blocks(self, coords, blocks, scale):
            for (x, y, z), b in zip(coords.tolist(), blocks, strict=True):
                self.vol[z * 64 : z * 64 + 64, y * 64 : y * 64 + 64, x * 64 : x * 64 + 64] = (
                    lb.decode_block(b)
                )

    sv, body = VolumeSink(), VolumeSink()
    import_shards(tmp_path, sv)
    import_shards(tmp_path, body, labels="labels")
    assert np.array_equal(sv.vol[:70, :130, :100], vol)
    lut = np.vectorize(lambda v: mapping.get(int(v), int(v)), otypes=[np.uint64])
    assert np.array_equal(body.vol[:70, :130, :100], lut(vol))
    # preencoded reads give the same files
    rep2 = export_shards(source.preencode(), spec, tmp_path / "pre", progress=False)
    for a, b in zip(rep.arrow_paths, rep2.arrow_paths, strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()
