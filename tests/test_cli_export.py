"""``diced ingest``, ``diced export precomputed|zarr`` and ``diced export-shards``.

The parser is built as ``diced.cli.build_parser`` does, for these modules only.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import zarr

import diced
from diced.cli import export as export_cli
from diced.cli import ingest as ingest_cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diced")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in (("export", export_cli), ("export-shards", export_cli),
                         ("ingest", ingest_cli)):
        module.add_parser(sub, name)
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


@pytest.fixture
def seeded(tmp_path):
    """A store with a repo 'fly' holding a 2-level image and a label array (by ingest)."""
    store_path = str(tmp_path / "s.diced")
    img = np.random.default_rng(0).integers(0, 255, (64, 96, 128), dtype=np.uint8)
    np.save(tmp_path / "img.npy", img)
    seg = np.repeat(np.arange(1, 5, dtype=np.uint64), 32).reshape(128, 1, 1) * np.ones(
        (1, 128, 128), np.uint64)
    np.save(tmp_path / "seg.npy", seg)
    assert run(["ingest", store_path, "fly", "gray", str(tmp_path / "img.npy"), "--create-repo",
                "--chunks", "32,32,32", "--max-scale", "1", "--quiet"]) == 0
    assert run(["ingest", store_path, "fly", "seg", str(tmp_path / "seg.npy"), "--labels",
                "--quiet"]) == 0
    return store_path, img, seg


def test_ingest_cli(seeded, tmp_path, capsys):
    store_path, img, seg = seeded
    repo = diced.Store(store_path).open_repo("fly")
    np.testing.assert_array_equal(repo.array("gray")[...], img)
    assert repo.array("gray").max_scale == 1
    np.testing.assert_array_equal(repo.array("seg")[...], seg)
    run(["ingest", store_path, "fly", "gray", str(tmp_path / "img.npy"), "--into-existing",
         "--offset", "0,0,0", "--no-resume", "--quiet"])
    assert "ingested" in capsys.readouterr().out
    with pytest.raises(diced.errors.RepoNotFoundError):
        run(["ingest", store_path, "nope", "x", str(tmp_path / "img.npy"), "--quiet"])


def test_export_precomputed_cli(seeded, tmp_path, capsys):
    ts = pytest.importorskip("tensorstore")
    store_path, img, _ = seeded
    dest = tmp_path / "pc"
    assert run(["export", "precomputed", store_path, "fly", "gray", str(dest), "--scales", "0,1",
                "--encoding", "raw", "--sharded", "--voxel-size", "40,4,4", "--quiet"]) == 0
    assert "wrote precomputed image volume" in capsys.readouterr().out
    info = json.loads((dest / "info").read_text())
    assert [s["resolution"] for s in info["scales"]] == [[4, 4, 40], [8, 8, 80]]
    store = ts.open({"driver": "neuroglancer_precomputed",
                     "kvstore": {"driver": "file", "path": str(dest) + "/"}}).result()
    np.testing.assert_array_equal(store.T[0].read().result(), img)
    run(["export", "precomputed", store_path, "fly", "seg", str(tmp_path / "seg"), "--quiet"])
    info = json.loads((tmp_path / "seg" / "info").read_text())
    assert info["scales"][0]["encoding"] == "compressed_segmentation"
    with pytest.raises(diced.errors.InvalidArgumentError, match="not empty"):
        run(["export", "precomputed", store_path, "fly", "gray", str(dest), "--quiet"])


def test_export_zarr_cli_with_version(seeded, tmp_path):
    store_path, img, _ = seeded
    repo = diced.Store(store_path).open_repo("fly")
    first = repo.commit("ingested")
    repo.newversion()
    repo.array("gray")[...] = 0
    dest = tmp_path / "z.zarr"
    assert run(["export", "zarr", store_path, "fly", "gray", str(dest), "--version",
                first.uuid[:8], "--voxel-size", "40,4,4", "--quiet"]) == 0
    g = zarr.open_group(str(dest), mode="r")
    np.testing.assert_array_equal(g["0"][...], img)
    assert g.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0][
        "scale"] == [40, 4, 4]


def test_export_shards_cli(seeded, tmp_path, capsys):
    pytest.importorskip("diced.export.label_source")
    store_path, _, _ = seeded
    size = [128, 128, 128]
    bits = sum(max(0, math.ceil(s / 64) - 1).bit_length() for s in size)
    spec = {"@type": "neuroglancer_multiscale_volume", "type": "segmentation",
            "data_type": "uint64", "num_channels": 1,
            "scales": [{"chunk_sizes": [[64, 64, 64]], "encoding": "compressed_segmentation",
                        "key": "8x8x8", "resolution": [8, 8, 8], "size": size,
                        "sharding": {"@type": "neuroglancer_uint64_sharded_v1",
                                     "hash": "identity", "preshift_bits": 1,
                                     "minishard_bits": 2, "shard_bits": max(0, bits - 3),
                                     "minishard_index_encoding": "gzip"}}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert run(["export-shards", store_path, "fly", "seg", str(tmp_path / "spec.json"),
                str(tmp_path / "shards"), "--batch-size", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "blocks" in out
    assert list((tmp_path / "shards" / "s0").glob("*.arrow"))


@pytest.mark.parametrize("argv,expect", [
    (["export", "--help"], "precomputed"),
    (["export", "precomputed", "--help"], "examples:"),
    (["export", "zarr", "--help"], "OME-Zarr"),
    (["export-shards", "--help"], "examples:"),
    (["ingest", "--help"], "resumes"),
])
def test_help_texts(argv, expect, capsys):
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(argv)
    assert exc.value.code == 0
    assert expect in capsys.readouterr().out


def test_bad_cli_values(capsys):
    for fmt in ("precomputed", "zarr"):
        with pytest.raises(SystemExit) as exc:
            parser().parse_args(["export", fmt, "s", "r", "a", "d", "--resolution", "4,4,40"])
        assert exc.value.code == 2
        assert "use --voxel-size 40,4,4" in capsys.readouterr().err
        for bad in ("8,a", "8,0,8", "-1"):
            with pytest.raises(SystemExit):
                parser().parse_args(["export", fmt, "s", "r", "a", "d", "--voxel-size", bad])
    with pytest.raises(SystemExit):
        parser().parse_args(["ingest", "s", "r", "n", "src", "--offset", "a,b,c"])
    args = parser().parse_args(["export", "zarr", "s", "r", "a", "d"])
    assert args.func is export_cli.run_zarr and args.version is None
