"""The public export API: one import path, ``export_shards(version=, sharding...)`` making its
own spec, OME-Zarr ``image-label`` metadata, and the CLI for spec-less shard exports."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import zarr

import diced
from diced.errors import InvalidArgumentError
from diced.export.sharding import parse_spec


def test_one_public_path():
    from diced.export import (
        export_precomputed,
        export_shards,
        export_zarr,
        ingest,
        label_source,
        precomputed,
        zarr_export,
    )
    from diced.export import ingest as ingest_fn

    assert export_precomputed is precomputed.export_precomputed
    assert export_zarr is zarr_export.export_zarr
    assert export_shards is label_source.export_shards
    assert callable(ingest) and ingest is ingest_fn and ingest.__module__ == "diced.export.ingest"
    import diced.export

    assert set(diced.export.__all__) <= set(dir(diced.export))


@pytest.fixture
def seg():
    repo = diced.Store(f"memory://api-{uuid.uuid4().hex}").create_repo("fly")
    labels = repo.create_labels("seg", (128, 128, 192), max_scale=1)
    labels[0:64, 0:64, 0:64] = 5
    labels[64:128, 64:128, 128:192] = 9
    first = repo.commit("first")
    repo.newversion("second")
    labels[0:64, 0:64, 0:64] = 0
    labels[0:64, 64:128, 0:64] = 7
    return repo, labels, first


def _bodies(dest):
    """Set of labels in the exported shards (read back through import)."""
    import pyarrow as pa

    out = set()
    for path in (dest / "s0").glob("*.arrow"):
        with pa.ipc.open_stream(pa.OSFile(str(path))) as reader:
            for batch in reader:
                for row in batch.to_pylist():
                    out.update(row["labels"])
    return out


def test_export_shards_makes_its_spec_and_takes_version(seg, tmp_path):
    from diced.export import export_shards, import_label_shards

    repo, labels, first = seg
    rep = export_shards(labels, tmp_path / "new", progress=False)
    assert rep.blocks_written == 2 and _bodies(tmp_path / "new") == {7, 9}
    spec = json.loads((tmp_path / "new" / "info").read_text())
    parsed = parse_spec(spec)  # a valid DVID/neuroglancer sharded spec
    assert len(parsed.scales) == 2 and parsed.scales[0].size == (192, 128, 128)
    assert spec["scales"][0]["resolution"] == [8, 8, 8]
    export_shards(labels, tmp_path / "old", version=first.uuid, progress=False)
    assert _bodies(tmp_path / "old") == {5, 9}
    # the blocks come back into a fresh label array
    other = repo.create_labels("copy", (128, 128, 192))
    import_label_shards(tmp_path / "old" / "s0", other)
    np.testing.assert_array_equal(other[...], repo.version(first.uuid).labels("seg")[...])


def test_sharding_parameters(seg, tmp_path):
    from diced.export import sharded_spec

    _repo, labels, _ = seg
    # a 2 x 2 x 3 chunk grid needs 1 + 1 + 2 = 4 chunk-id bits
    spec = sharded_spec(labels, shard_bits=2)
    sh = spec["scales"][0]["sharding"]
    assert sh["shard_bits"] == 2 and sh["preshift_bits"] + sh["minishard_bits"] == 2
    spec = sharded_spec(labels, preshift_bits=1, minishard_bits=1)
    assert spec["scales"][0]["sharding"]["shard_bits"] == 2
    one = sharded_spec(labels, shard_voxels=64 ** 3)  # one chunk per shard
    assert one["scales"][0]["sharding"]["shard_bits"] == 4
    assert sharded_spec(labels, shard_bytes=8 * 64 ** 3) == one
    big = sharded_spec(labels, shard_bytes=1 << 40)  # everything in one shard
    assert big["scales"][0]["sharding"]["shard_bits"] == 0
    spec = sharded_spec(labels, voxel_size=(40, 8, 4))
    assert spec["scales"][1]["resolution"] == [8, 16, 80]
    for bad in [{"shard_bits": 1, "minishard_bits": 0, "preshift_bits": 0},
                {"shard_bits": -1}, {"shard_bits": 2, "shard_bytes": 10**9},
                {"shard_bytes": 0}, {"shard_bytes": 5, "shard_voxels": 5}]:
        with pytest.raises(InvalidArgumentError):
            sharded_spec(labels, **bad)
    from diced.export import export_shards

    with pytest.raises(InvalidArgumentError, match="not both"):
        export_shards(labels, tmp_path / "x", spec, shard_bits=3, progress=False)
    assert not (tmp_path / "x").exists()


def test_export_shards_needs_dvid_blocks(tmp_path):
    from diced.export import export_shards

    repo = diced.Store(f"memory://api-{uuid.uuid4().hex}").create_repo("fly")
    small = repo.create_labels("small", (32, 32, 32), chunks=(16, 16, 16))
    with pytest.raises(InvalidArgumentError, match="64"):
        export_shards(small, tmp_path / "s", progress=False)
    img = repo.create_array("img", "uint8", (64, 64, 64))
    with pytest.raises(InvalidArgumentError, match="label array"):
        export_shards(img, tmp_path / "s", progress=False)


def test_cli_export_shards_without_spec(tmp_path, capsys):
    from diced.cli import main

    path = str(tmp_path / "s.diced")
    with diced.Store(path) as store:
        labels = store.create_repo("fly").create_labels("seg", (64, 128, 128))
        labels[:, :, :64] = 3  # chunks (x0, y0) and (x0, y1)
    dest = tmp_path / "shards"
    assert main(["export-shards", path, "fly", "seg", str(dest), "--shard-bits", "1",
                 "--quiet"]) == 0
    assert "spec written to" in capsys.readouterr().out
    spec = json.loads((dest / "info").read_text())
    assert spec["scales"][0]["sharding"]["shard_bits"] == 1
    assert len(list((dest / "s0").glob("*.arrow"))) == 2  # a shard spans x: y splits them
    assert main(["export-shards", path, "fly", "seg", str(tmp_path / "b"), "--shard-size",
                 "2MiB", "--quiet"]) == 0
    assert main(["export-shards", path, "fly", "seg", str(dest / "info"), str(tmp_path / "c"),
                 "--shard-bits", "1", "--quiet"]) == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export-shards", path, "fly", "seg", str(tmp_path / "d"), "--shard-size", "lots"])


def test_ome_zarr_labels_carry_image_label(seg, tmp_path):
    from diced.export import export_zarr

    repo, labels, _ = seg
    gray = repo.create_array("gray", "uint8", (128, 128, 192), max_scale=1)
    gray[...] = 10
    export_zarr(gray, tmp_path / "img.zarr", progress=False)
    export_zarr(labels, tmp_path / "img.zarr" / "labels" / "seg", progress=False,
                label_colors={7: (255, 0, 0, 255)})
    lab = zarr.open_group(str(tmp_path / "img.zarr" / "labels" / "seg"), mode="r")
    il = lab.attrs["ome"]["image-label"]
    assert il["colors"] == [{"label-value": 0, "rgba": [0, 0, 0, 0]},
                            {"label-value": 7, "rgba": [255, 0, 0, 255]}]
    assert il["source"] == {"image": "../../"}
    assert lab.attrs["ome"]["multiscales"][0]["axes"][0]["name"] == "z"
    group = zarr.open_group(str(tmp_path / "img.zarr" / "labels"), mode="r")
    assert group.attrs["ome"] == {"version": "0.5", "labels": ["seg"]}
    # a standalone export of labels is a label image too, with no source to point at
    export_zarr(labels, tmp_path / "alone.zarr", progress=False)
    alone = zarr.open_group(str(tmp_path / "alone.zarr"), mode="r").attrs["ome"]
    assert alone["image-label"] == {"colors": [{"label-value": 0, "rgba": [0, 0, 0, 0]}]}
    # images carry no image-label; bad colours are refused before anything is written
    assert "image-label" not in zarr.open_group(str(tmp_path / "img.zarr")).attrs["ome"]
    with pytest.raises(InvalidArgumentError, match="label_colors"):
        export_zarr(labels, tmp_path / "bad.zarr", label_colors={1: (300, 0, 0, 0)},
                    progress=False)
    with pytest.raises(InvalidArgumentError, match="label_colors"):
        export_zarr(gray, tmp_path / "bad2.zarr", label_colors={1: (3, 0, 0, 0)}, progress=False)
    assert not (tmp_path / "bad.zarr").exists() and not (tmp_path / "bad2.zarr").exists()
