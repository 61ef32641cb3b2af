"""The read-only zarr v3 store view of diced arrays, and zarr export/import."""

from __future__ import annotations

import asyncio
import json
import math
import uuid

import numpy as np
import pytest
import zarr

import diced
from diced.errors import FormatError, InvalidArgumentError
from diced.export.zarr_export import export_zarr, import_zarr, ome_multiscales
from diced.export.zarr_view import DicedZarrStore, json_fill_value, zarr_store


@pytest.fixture
def repo(tmp_path):
    store = diced.Store(str(tmp_path / "s.diced"))
    yield store.create_repo("r")
    store.close()


@pytest.fixture
def image(repo):
    arr = repo.create_array("img", "uint16", (100, 70, 50), chunks=(32, 32, 16), fill_value=7)
    rng = np.random.default_rng(0)
    arr[0:40, 0:40, 0:40] = rng.integers(0, 60000, (40, 40, 40))
    arr[90:, 60:, 45:] = 3
    return arr


def _keys(store, method, prefix=""):
    async def collect():
        gen = getattr(store, method)(prefix) if method != "list" else store.list()
        return [k async for k in gen]

    return asyncio.run(collect())


# --- the store view ----------------------------------------------------------------------------

def test_view_reads_like_the_array(image):
    z = zarr.open_array(store=zarr_store(image, group=False), mode="r")
    assert z.shape == image.shape and z.dtype == image.dtype and z.chunks == image.chunks
    assert z.fill_value == 7
    np.testing.assert_array_equal(z[...], image[...])
    np.testing.assert_array_equal(z[5:60:3, 10:, 2], image[5:60:3, 10:, 2])
    np.testing.assert_array_equal(z[99, 65:, :], image[99, 65:, :])
    assert z[50, 50, 20] == 7  # a chunk that is not stored reads as the fill value


def test_metadata_document(image):
    store = zarr_store(image, group=False)
    meta = json.loads(asyncio.run(store.get("zarr.json")).to_bytes())
    assert meta["zarr_format"] == 3 and meta["node_type"] == "array"
    assert meta["shape"] == [100, 70, 50] and meta["data_type"] == "uint16"
    assert meta["chunk_grid"] == {"name": "regular",
                                  "configuration": {"chunk_shape": [32, 32, 16]}}
    assert meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
    assert meta["codecs"] == [{"name": "bytes", "configuration": {"endian": "little"}}]
    assert meta["dimension_names"] == ["z", "y", "x"]
    assert meta["attributes"]["diced"]["version"] == image.version.uuid


def test_chunk_keys_listing_and_bytes(image):
    store = zarr_store(image, group=False)
    stored = sorted(image.stored_chunks())
    chunk_keys = ["c/" + "/".join(map(str, c)) for c in stored]
    assert _keys(store, "list") == ["zarr.json", *chunk_keys]
    assert sorted(_keys(store, "list_dir", "")) == ["c", "zarr.json"]
    assert sorted(_keys(store, "list_dir", "c")) == sorted({str(c[0]) for c in stored})
    assert _keys(store, "list_prefix", "c/0/0/") == [k for k in chunk_keys
                                                      if k.startswith("c/0/0/")]
    raw = asyncio.run(store.get("c/0/0/0")).to_bytes()
    np.testing.assert_array_equal(np.frombuffer(raw, "<u2").reshape(32, 32, 16),
                                  image[0:32, 0:32, 0:16])
    part = asyncio.run(store.get("c/0/0/0", byte_range=zarr.abc.store.RangeByteRequest(2, 6)))
    assert part.to_bytes() == raw[2:6]
    assert asyncio.run(store.exists("c/0/0/0"))
    assert not asyncio.run(store.exists("c/2/1/1"))  # not stored
    assert asyncio.run(store.get("c/2/1/1")) is None
    for bad in ("c/9/0/0", "c/0/0", "c/a/0/0", "c/00/0/0", "x/0/0/0", "zarr.json/x"):
        assert asyncio.run(store.get(bad)) is None
    assert asyncio.run(store.getsize("c/0/0/0")) == 32 * 32 * 16 * 2


def test_view_is_read_only(image):
    store = zarr_store(image, group=False)
    assert store.read_only and not store.supports_writes and store.supports_listing
    with pytest.raises(ValueError):
        asyncio.run(store.set("c/0/0/0", None))
    with pytest.raises(ValueError):
        zarr.open_array(store=store, mode="r")[0, 0, 0] = 1
    with pytest.raises(InvalidArgumentError):
        store.with_read_only(False)
    assert store == zarr_store(image, group=False)
    assert store != zarr_store(image, scale=0, supervoxels=True, group=False)


def test_dask_reads_the_view(image):
    da = pytest.importorskip("dask.array")
    x = da.from_zarr(zarr.open_array(store=zarr_store(image, group=False), mode="r"))
    assert x.chunksize == image.chunks
    np.testing.assert_array_equal(x.compute(), image[...])
    assert int(x[:40, :40, :40].sum().compute()) == int(image[:40, :40, :40].sum())


def test_pinned_old_version(repo, image):
    before = image[...]
    first = repo.commit("first")
    repo.newversion()
    image[...] = 1
    old = zarr.open_array(store=zarr_store(image, version=first.uuid, group=False), mode="r")
    new = zarr.open_array(store=zarr_store(image, group=False), mode="r")
    np.testing.assert_array_equal(old[...], before)
    assert (new[...] == 1).all()
    view_of_old = zarr_store(repo.version(first.uuid).array("img"))
    assert view_of_old.version == first.uuid


def test_labels_view_bodies_and_supervoxels(repo):
    lab = repo.create_labels("seg", (64, 64, 64), chunks=(32, 32, 32))
    seg = np.zeros((64, 64, 64), np.uint64)
    seg[:32] = 1
    seg[32:] = 2
    seg[:, :, 40:] = 3
    lab[...] = seg
    lab.merge(1, [2])
    bodies = zarr.open_array(store=zarr_store(lab, group=False), mode="r")[...]
    svs = zarr.open_array(store=zarr_store(lab, supervoxels=True, group=False), mode="r")[...]
    np.testing.assert_array_equal(svs, seg)
    np.testing.assert_array_equal(bodies, lab[...])
    assert set(np.unique(bodies)) == {1, 3}


def test_pyramid_level_and_float_nan_fill(repo):
    arr = repo.create_array("f", "float32", (64, 64, 64), chunks=(16, 16, 16),
                            fill_value=float("nan"), max_scale=1)
    arr[0:16, 0:16, 0:16] = 2.0
    z1 = zarr.open_array(store=zarr_store(arr, scale=1, group=False), mode="r")
    assert z1.shape == (32, 32, 32)
    np.testing.assert_array_equal(z1[...], arr.scale(1)[...])
    z0 = zarr.open_array(store=zarr_store(arr, group=False), mode="r")
    assert math.isnan(z0[40, 40, 40])
    assert json_fill_value(float("nan"), np.dtype("f4")) == "NaN"
    assert json_fill_value(complex(1, float("inf")), np.dtype("c8")) == [1.0, "Infinity"]


def test_two_dimensional_bool_array(repo):
    arr = repo.create_array("mask", "bool", (300, 200), chunks=(128, 128))
    arr[10:20, 150:] = True
    z = zarr.open_array(store=DicedZarrStore(arr, group=False), mode="r")
    np.testing.assert_array_equal(z[...], arr[...])


def test_group_view_for_xarray(image):
    store = zarr_store(image)  # the default: a group, for xarray and zarr.open_group
    assert sorted(_keys(store, "list_dir", "")) == ["img", "zarr.json"]
    g = zarr.open_group(store=store, mode="r")
    np.testing.assert_array_equal(g["img"][...], image[...])
    xr = pytest.importorskip("xarray")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "consolidated metadata not found" fallback warning
        ds = xr.open_zarr(zarr_store(image))  # no extra arguments
    assert ds["img"].dims == ("z", "y", "x")
    np.testing.assert_array_equal(ds["img"].values, image[...])
    da = pytest.importorskip("dask.array")
    np.testing.assert_array_equal(da.from_zarr(zarr_store(image), component="img").compute(),
                                  image[...])


# --- export / import ---------------------------------------------------------------------------

def test_export_zarr_ome_pyramid_and_import(repo, tmp_path):
    arr = repo.create_array("img", "uint8", (96, 64, 80), chunks=(32, 32, 32), max_scale=1,
                            origin=(10, 0, 0))
    data = np.random.default_rng(1).integers(0, 255, (96, 64, 80), dtype=np.uint8)
    arr[...] = data
    g = export_zarr(arr, tmp_path / "out.zarr", voxel_size=(30, 8, 8), progress=False)
    again = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    ome = again.attrs["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1"]
    assert ms["datasets"][1]["coordinateTransformations"][0] == {"type": "scale",
                                                                "scale": [60.0, 16.0, 16.0]}
    assert again.attrs["diced"]["version"] == arr.version.uuid
    np.testing.assert_array_equal(again["0"][...], data)
    np.testing.assert_array_equal(again["1"][...], arr.scale(1)[...])
    assert again["0"].metadata.dimension_names == ("z", "y", "x")
    assert g["0"].chunks == (32, 32, 32)
    rep = import_zarr(tmp_path / "out.zarr", repo, "back", progress=False)
    assert rep.shape == (96, 64, 80) and rep.slabs == 3
    back = repo.array("back")
    assert back.chunks == (32, 32, 32)
    np.testing.assert_array_equal(back[...], data)


def test_export_zarr_version_memory_url_and_refusal(repo):
    arr = repo.create_array("img", "int16", (40, 40, 40), chunks=(16, 16, 16), fill_value=-1)
    arr[:20] = 5
    first = repo.commit("first")
    repo.newversion()
    arr[...] = 0
    url = f"memory://{uuid.uuid4().hex}/v.zarr"
    export_zarr(arr, url, version=first.uuid, progress=False)
    z = zarr.open_group(url, mode="r")["0"]
    assert z.fill_value == -1
    np.testing.assert_array_equal(z[...], repo.version(first.uuid).array("img")[...])
    with pytest.raises(InvalidArgumentError, match="not empty"):
        export_zarr(arr, url, progress=False)
    export_zarr(arr, url, overwrite=True, progress=False)
    assert (zarr.open_group(url, mode="r")["0"][...] == 0).all()


def test_export_zarr_labels_and_bad_args(repo, tmp_path):
    lab = repo.create_labels("seg", (64, 64, 64), chunks=(32, 32, 32))
    lab[:32] = 4
    lab[32:] = 5
    lab.merge(4, [5])
    export_zarr(lab, tmp_path / "b.zarr", progress=False)
    assert (zarr.open_group(str(tmp_path / "b.zarr"))["0"][...] == 4).all()
    export_zarr(lab, tmp_path / "s.zarr", supervoxels=True, progress=False)
    assert zarr.open_group(str(tmp_path / "s.zarr"))["0"][40, 0, 0] == 5
    with pytest.raises(InvalidArgumentError):
        export_zarr(lab, tmp_path / "x.zarr", scales=[2], progress=False)
    with pytest.raises(InvalidArgumentError):
        export_zarr(lab, tmp_path / "x.zarr", voxel_size=(1, 2), progress=False)
    rep = import_zarr(tmp_path / "s.zarr", repo, "seg2", labels=True, progress=False)
    assert rep.dtype == "uint64" and type(repo.array("seg2")).__name__ == "LabelArray"
    with pytest.raises(FormatError):
        import_zarr(tmp_path / "nothing-here", repo, "x", progress=False)


def test_ome_multiscales_shapes():
    assert ome_multiscales(1, [0], [1], [0]) is None
    ms = ome_multiscales(4, [0, 2], [1, 40, 8, 8], [0, 0, 0, 0])
    assert [a["type"] for a in ms["axes"]] == ["channel", "space", "space", "space"]
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == [1, 160, 32, 32]


def test_view_over_a_memory_store():
    store = diced.Store(f"memory://{uuid.uuid4().hex}")
    repo = store.create_repo("m")
    arr = repo.create_array("a", "float64", (20, 30), chunks=(8, 8))
    arr[3:17, 5:25] = np.arange(14 * 20).reshape(14, 20)
    z = zarr.open_array(store=zarr_store(arr, group=False), mode="r")
    np.testing.assert_array_equal(z[...], arr[...])
