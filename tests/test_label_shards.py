"""DVID export-shards through a LabelArray: the real DVID shard round trips, and exports honour
versions, bodies and scales."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import diced
from diced.array.codecs.labelblock import decode_block
from diced.errors import IndexOutOfBoundsError, InvalidArgumentError, LockedNodeError
from diced.export.label_source import export_label_shards, import_label_shards
from diced.export.shard_reader import ShardFile

DATA = Path(__file__).parent / "data" / "dvid"
SHARD = DATA / "30720_24576_28672.arrow"
SPEC = json.loads((DATA / "mcns-ng-specs.json").read_text())


def _records(path: Path) -> dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """chunk (x, y, z) -> (supervoxel voxels, labels list, supervoxels list)."""
    import zstandard

    out = {}
    with pa.ipc.open_stream(pa.OSFile(str(path))) as reader:
        for batch in reader:
            for row in batch.to_pylist():
                block = zstandard.ZstdDecompressor().decompress(row["dvid_compressed_block"])
                key = (row["chunk_x"], row["chunk_y"], row["chunk_z"])
                out[key] = (decode_block(block), np.array(row["labels"], np.uint64),
                            np.array(row["supervoxels"], np.uint64))
    return out


def _scale1_spec() -> dict:
    spec = dict(SPEC)
    spec["scales"] = [dict(SPEC["scales"][1])]
    return spec


@pytest.fixture
def labels():
    store = diced.Store(f"memory://label-shards-{uuid.uuid4().hex}")
    repo = store.create_repo("mcns")
    x, y, z = SPEC["scales"][1]["size"]
    return repo, repo.create_labels("seg", (z, y, x))


def test_dvid_shard_round_trips_through_a_label_array(labels, tmp_path):
    _repo, seg = labels
    report = import_label_shards(SHARD, seg)
    assert report.blocks == 258
    exported = export_label_shards(seg, _scale1_spec(), str(tmp_path), progress=False)
    assert [Path(p).name for p in exported.arrow_paths] == ["30720_24576_28672.arrow"]
    want, got = _records(SHARD), _records(Path(exported.arrow_paths[0]))
    # DVID keeps blocks whose supervoxels map to 0; none of these do, so all come back
    assert set(got) == set(want)
    for key, (voxels, _labels, _svs) in want.items():
        np.testing.assert_array_equal(got[key][0], voxels)
    # the CSV offsets fetch every block
    shard = ShardFile(exported.arrow_paths[0])
    for key in list(want)[:20]:
        rec = shard.get(*key)
        np.testing.assert_array_equal(decode_block(rec.dvid_block()), want[key][0])


def test_import_with_bodies_writes_the_agglomerated_labels(labels):
    _repo, seg = labels
    import_label_shards(SHARD, seg, bodies=True)
    want = _records(SHARD)
    (x, y, z), (voxels, lab, svs) = next(iter(want.items()))
    lookup = dict(zip(svs.tolist(), lab.tolist(), strict=True))
    expected = np.vectorize(lambda v: lookup.get(v, v), otypes=[np.uint64])(voxels)
    block = seg.read((slice(z * 64, z * 64 + 64), slice(y * 64, y * 64 + 64),
                      slice(x * 64, x * 64 + 64)), supervoxels=True)
    np.testing.assert_array_equal(block, expected)


def test_export_uses_the_handle_version_and_mapping(tmp_path):
    store = diced.Store(f"memory://label-shards-{uuid.uuid4().hex}")
    repo = store.create_repo("small")
    seg = repo.create_labels("seg", (128, 128, 128), max_scale=1)
    vol = np.zeros((128, 128, 128), np.uint64)
    vol[:64] = 7
    vol[64:, :, :64] = 8
    seg[...] = vol
    first = repo.commit("first")
    repo.newversion()
    seg.merge(7, [8])
    seg[0:64, 0:64, 0:64] = 9
    spec = {"@type": "neuroglancer_multiscale_volume", "type": "segmentation",
            "data_type": "uint64", "num_channels": 1, "scales": [
                {"key": f"s{i}", "size": [128 >> i] * 3, "resolution": [8 << i] * 3,
                 "chunk_sizes": [[64, 64, 64]], "encoding": "compressed_segmentation",
                 "compressed_segmentation_block_size": [8, 8, 8],
                 "sharding": {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity",
                              "preshift_bits": 0, "minishard_bits": 0, "shard_bits": 3 - i,
                              "minishard_index_encoding": "gzip", "data_encoding": "gzip"}}
                for i in range(2)]}
    old = export_label_shards(repo.version(first.uuid).labels("seg"), spec, str(tmp_path / "old"),
                              progress=False)
    new = export_label_shards(seg, spec, str(tmp_path / "new"), progress=False)
    bodies = export_label_shards(seg, spec, str(tmp_path / "s1"), scale=1, progress=False)
    assert old.blocks_written == 6 and new.blocks_written == 6 and bodies.blocks_written == 1

    def labels_of(report):
        out = {}
        for path in report.arrow_paths:
            for key, (_vox, lab, svs) in _records(Path(path)).items():
                out[key] = dict(zip(svs.tolist(), lab.tolist(), strict=True))
        return out

    assert labels_of(old)[(0, 0, 0)] == {7: 7}
    assert labels_of(new)[(0, 0, 0)] == {9: 9}
    assert labels_of(new)[(0, 0, 1)] == {8: 7, 0: 0} or labels_of(new)[(0, 0, 1)] == {8: 7}
    (_, (vox, _l, _s)), = _records(Path(bodies.arrow_paths[0])).items()
    np.testing.assert_array_equal(vox, seg.scale(1).read(..., supervoxels=True))


def test_import_refuses_locked_versions_and_out_of_bounds_blocks(labels):
    repo, seg = labels
    small = repo.create_labels("small", (64, 64, 64))
    with pytest.raises(IndexOutOfBoundsError):
        import_label_shards(SHARD, small)
    assert small.stored_chunks() == []
    repo.commit("locked")
    with pytest.raises(LockedNodeError):
        import_label_shards(SHARD, seg)
    with pytest.raises(InvalidArgumentError):  # only label arrays export as shards
        export_label_shards(np.zeros((64, 64, 64), np.uint64), _scale1_spec(), "/nonexistent")
