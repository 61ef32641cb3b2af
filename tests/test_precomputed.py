"""neuroglancer precomputed export, read back with TensorStore's own driver."""

from __future__ import annotations

import json
import os
import uuid

import fsspec
import numpy as np
import pytest

import diced
from diced.errors import DtypeError, InvalidArgumentError
from diced.export.precomputed import default_sharding, export_precomputed, iter_boxes

ts = pytest.importorskip("tensorstore")

SHAPE = (96, 128, 160)  # z, y, x: every axis different, so a transposition bug shows


@pytest.fixture
def repo(tmp_path):
    store = diced.Store(str(tmp_path / "s.diced"))
    yield store.create_repo("r")
    store.close()


def _smooth(shape, seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 220, size=tuple(-(-s // 16) for s in shape)).astype(np.float32)
    vol = coarse.repeat(16, 0).repeat(16, 1).repeat(16, 2)[: shape[0], : shape[1], : shape[2]]
    return np.clip(vol + rng.normal(0, 2, shape), 0, 255).astype(np.uint8)


def _labels(shape, seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, 40, size=tuple(-(-s // 8) for s in shape)).astype(np.uint64)
    return coarse.repeat(8, 0).repeat(8, 1).repeat(8, 2)[: shape[0], : shape[1], : shape[2]]


def read_back(path, scale):
    """Level ``scale`` of a precomputed volume as a (z, y, x) numpy array."""
    store = ts.open({"driver": "neuroglancer_precomputed",
                     "kvstore": {"driver": "file", "path": str(path) + "/"},
                     "scale_index": scale}).result()
    return store.T[0].read().result(), store


@pytest.mark.parametrize("sharded", [False, True])
def test_image_raw_two_scales(repo, tmp_path, sharded):
    data = np.random.default_rng(1).integers(0, 255, SHAPE, dtype=np.uint8)
    arr = repo.create_array("img", "uint8", SHAPE, chunks=(32, 32, 32), max_scale=1)
    arr[...] = data
    info = export_precomputed(arr, tmp_path / "vol", sharded=sharded, voxel_size=(40, 6, 4),
                              progress=False)
    assert info["type"] == "image" and info["data_type"] == "uint8"
    assert [s["size"] for s in info["scales"]] == [[160, 128, 96], [80, 64, 48]]
    assert info["scales"][0]["resolution"] == [4, 6, 40]
    assert info["scales"][1]["resolution"] == [8, 12, 80]
    assert info["scales"][0]["chunk_sizes"] == [[32, 32, 32]]
    assert ("sharding" in info["scales"][0]) == sharded
    got0, store = read_back(tmp_path / "vol", 0)
    np.testing.assert_array_equal(got0, data)
    # the precomputed axes really are x, y, z
    assert int(store[7, 3, 90, 0].read().result()) == int(data[90, 3, 7])
    got1, _ = read_back(tmp_path / "vol", 1)
    np.testing.assert_array_equal(got1, arr.scale(1)[...])
    if sharded:
        assert all(f.endswith(".shard") for f in os.listdir(tmp_path / "vol" / "4_6_40"))


def test_jpeg_within_tolerance(repo, tmp_path):
    data = _smooth(SHAPE)
    arr = repo.create_array("img", "uint8", SHAPE, chunks=(32, 32, 32), max_scale=1)
    arr[...] = data
    info = export_precomputed(arr, tmp_path / "vol", encoding="jpeg", jpeg_quality=90,
                              progress=False)
    assert {s["encoding"] for s in info["scales"]} == {"jpeg"}
    for scale in (0, 1):
        got, _ = read_back(tmp_path / "vol", scale)
        want = arr.scale(scale)[...].astype(np.int16)
        diff = np.abs(got.astype(np.int16) - want)
        assert diff.mean() < 2.5 and np.percentile(diff, 99) < 12


@pytest.mark.parametrize("sharded", [False, True])
def test_labels_compressed_segmentation(repo, tmp_path, sharded):
    seg = _labels(SHAPE)
    lab = repo.create_labels("seg", SHAPE, chunks=(32, 32, 32), max_scale=1)
    lab[...] = seg
    lab.merge(1, [2, 3])  # bodies differ from supervoxels now
    info = export_precomputed(lab, tmp_path / "bodies", sharded=sharded, progress=False)
    assert info["type"] == "segmentation" and info["data_type"] == "uint64"
    assert {s["encoding"] for s in info["scales"]} == {"compressed_segmentation"}
    assert info["scales"][0]["compressed_segmentation_block_size"] == [8, 8, 8]
    got0, _ = read_back(tmp_path / "bodies", 0)
    np.testing.assert_array_equal(got0, lab[...])
    assert not np.isin(got0, [2, 3]).any()
    got1, _ = read_back(tmp_path / "bodies", 1)
    np.testing.assert_array_equal(got1, lab.scale(1)[...])
    export_precomputed(lab, tmp_path / "svs", sharded=sharded, supervoxels=True, scales=[0],
                       progress=False)
    sv, _ = read_back(tmp_path / "svs", 0)
    np.testing.assert_array_equal(sv, seg)


def test_old_version_and_origin(repo, tmp_path):
    arr = repo.create_array("img", "uint16", (64, 64, 64), chunks=(32, 32, 32),
                            origin=(100, -64, 0))
    arr[...] = 5
    first = repo.commit("first")
    repo.newversion()
    arr[...] = 9
    info = export_precomputed(arr, tmp_path / "old", version=first.uuid, progress=False)
    assert info["scales"][0]["voxel_offset"] == [0, -64, 100]
    got, store = read_back(tmp_path / "old", 0)
    assert (got == 5).all()
    assert list(store.domain.inclusive_min[:3]) == [0, -64, 100]
    export_precomputed(arr, tmp_path / "new", progress=False)
    assert (read_back(tmp_path / "new", 0)[0] == 9).all()


def test_memory_url_destination(repo, tmp_path):
    data = np.random.default_rng(2).integers(0, 255, SHAPE, dtype=np.uint8)
    arr = repo.create_array("img", "uint8", SHAPE, chunks=(32, 32, 32), max_scale=1)
    arr[...] = data
    root = f"memory://{uuid.uuid4().hex}/vol"
    info = export_precomputed(arr, root, sharded=True, progress=False)
    fs = fsspec.filesystem("memory")
    path = root[len("memory://"):]
    assert json.loads(fs.cat_file(f"{path}/info")) == info
    fs.get(path, str(tmp_path / "copy"), recursive=True)
    np.testing.assert_array_equal(read_back(tmp_path / "copy", 0)[0], data)
    np.testing.assert_array_equal(read_back(tmp_path / "copy", 1)[0], arr.scale(1)[...])
    with pytest.raises(InvalidArgumentError, match="not empty"):
        export_precomputed(arr, root, progress=False)
    export_precomputed(arr, root, scales=[1], overwrite=True, progress=False)
    assert [s["key"] for s in json.loads(fs.cat_file(f"{path}/info"))["scales"]] == ["16_16_16"]
    assert not fs.exists(f"{path}/8_8_8")


def test_refuses_non_empty_destination(repo, tmp_path):
    arr = repo.create_array("img", "uint8", (32, 32, 32), chunks=(32, 32, 32))
    arr[...] = 1
    dest = tmp_path / "vol"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(InvalidArgumentError, match="not empty"):
        export_precomputed(arr, dest, progress=False)
    export_precomputed(arr, dest, overwrite=True, progress=False)
    assert (dest / "notes.txt").read_text() == "mine"  # unrelated files survive
    assert (read_back(dest, 0)[0] == 1).all()


def test_sparse_and_nonzero_fill(repo, tmp_path):
    sparse = repo.create_array("sparse", "uint8", (128, 128, 128), chunks=(32, 32, 32))
    sparse[100, 100, 100] = 7
    export_precomputed(sparse, tmp_path / "sparse", progress=False)
    assert os.listdir(tmp_path / "sparse" / "8_8_8") == ["96-128_96-128_96-128"]
    got = read_back(tmp_path / "sparse", 0)[0]
    assert got.sum() == 7 and got[100, 100, 100] == 7
    filled = repo.create_array("filled", "float32", (40, 40, 40), chunks=(32, 32, 32),
                               fill_value=1.5)
    export_precomputed(filled, tmp_path / "filled", progress=False)
    assert (read_back(tmp_path / "filled", 0)[0] == 1.5).all()


def test_bad_arguments(repo, tmp_path):
    img16 = repo.create_array("img16", "uint16", (32, 32, 32), chunks=(32, 32, 32))
    with pytest.raises(DtypeError):
        export_precomputed(img16, tmp_path / "a", encoding="jpeg", progress=False)
    with pytest.raises(DtypeError):
        export_precomputed(img16, tmp_path / "a", encoding="compressed_segmentation",
                           progress=False)
    with pytest.raises(InvalidArgumentError, match="encoding"):
        export_precomputed(img16, tmp_path / "a", encoding="gzip", progress=False)
    with pytest.raises(InvalidArgumentError, match="scales"):
        export_precomputed(img16, tmp_path / "a", scales=[1], progress=False)
    with pytest.raises(InvalidArgumentError, match="voxel_size"):
        export_precomputed(img16, tmp_path / "a", voxel_size=(8, 8), progress=False)
    with pytest.raises(InvalidArgumentError, match=r"voxel_size=\(40, 4, 4\)"):
        export_precomputed(img16, tmp_path / "a", resolution=(4, 4, 40), progress=False)
    with pytest.raises(InvalidArgumentError, match="unit"):
        export_precomputed(img16, tmp_path / "a", unit="furlong", progress=False)
    flat = repo.create_array("flat", "uint8", (32, 32))
    with pytest.raises(InvalidArgumentError, match="3-D"):
        export_precomputed(flat, tmp_path / "a", progress=False)
    b = repo.create_array("b", "bool", (8, 8, 8))
    with pytest.raises(DtypeError):
        export_precomputed(b, tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()


def test_failed_export_leaves_nothing(repo, tmp_path, monkeypatch):
    arr = repo.create_array("img", "uint8", (128, 128, 128), chunks=(32, 32, 32))
    arr[...] = 3
    import diced.export.precomputed as mod

    calls = {"n": 0}
    real = mod._write_scale

    def boom(*args, **kwargs):
        calls["n"] += 1
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(mod, "_write_scale", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_precomputed(arr, tmp_path / "vol", progress=False)
    assert not (tmp_path / "vol").exists()
    monkeypatch.setattr(mod, "_write_scale", real)
    export_precomputed(arr, tmp_path / "vol", progress=False)
    assert calls["n"] == 1


@pytest.mark.parametrize("shape,unit,budget", [
    ((100, 70, 50), (32, 32, 32), 32 ** 3),
    ((100, 70, 50), (32, 32, 32), 10 ** 6),
    ((5, 300, 7), (2, 64, 3), 2 * 64 * 3 * 5),
    ((64, 64, 64), (64, 64, 64), 1),
])
def test_iter_boxes_tiles_once_within_budget(shape, unit, budget):
    seen = np.zeros(shape, np.int32)
    unit_bytes = int(np.prod(unit))
    for box in iter_boxes(shape, unit, budget, 1):
        seen[box] += 1
        assert all(s.start % u == 0 for s, u in zip(box, unit, strict=True))
        size = int(np.prod([s.stop - s.start for s in box]))
        assert size <= max(budget, unit_bytes)
    assert (seen == 1).all()


def test_iter_boxes_keep_and_sharding_math():
    boxes = list(iter_boxes((128, 128, 128), (32, 32, 32), 32 ** 3, 1, keep={(3, 0, 1)}))
    assert boxes == [(slice(96, 128), slice(0, 32), slice(32, 64))]
    spec = default_sharding([8, 8, 8], 64 ** 3 * 8)  # 2 MiB chunks: 64 per 128 MiB shard
    assert spec["preshift_bits"] + spec["minishard_bits"] == 6 and spec["shard_bits"] == 3
    tiny = default_sharding([2, 1, 1], 1)
    assert tiny["shard_bits"] == 0 and tiny["preshift_bits"] + tiny["minishard_bits"] == 1
