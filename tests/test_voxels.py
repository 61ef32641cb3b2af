"""Voxel sizes: one order (array axis order, z, y, x) and one default for every exporter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

import diced
from diced.errors import InvalidArgumentError
from diced.export.voxels import check_unit, check_voxel_size, to_nanometers


@pytest.fixture
def arr(tmp_path):
    repo = diced.Store(f"memory://voxels-{tmp_path.name}").create_repo("fly")
    a = repo.create_array("img", "uint8", (32, 48, 64), chunks=(16, 16, 16), max_scale=1)
    a[...] = np.arange(32 * 48 * 64, dtype=np.uint64).reshape(32, 48, 64) % 251
    return a


def _zarr_scale(path, level=0):
    g = zarr.open_group(str(path), mode="r")
    ms = g.attrs["ome"]["multiscales"][0]
    return ms["datasets"][level]["coordinateTransformations"][0]["scale"], ms["axes"]


def test_both_exporters_take_zyx_and_agree(arr, tmp_path):
    pytest.importorskip("tensorstore")
    from diced.export.precomputed import export_precomputed
    from diced.export.zarr_export import export_zarr

    info = export_precomputed(arr, tmp_path / "pc", voxel_size=(40, 8, 4), progress=False)
    export_zarr(arr, tmp_path / "z.zarr", voxel_size=(40, 8, 4), progress=False)
    scale, axes = _zarr_scale(tmp_path / "z.zarr")
    assert info["scales"][0]["resolution"] == [4, 8, 40]  # neuroglancer stores x, y, z
    assert scale == [40, 8, 4] and [a["name"] for a in axes] == ["z", "y", "x"]
    assert info["scales"][1]["resolution"] == [8, 16, 80]
    # the same default for both: DVID's 8 nm
    info = export_precomputed(arr, tmp_path / "pc2", progress=False)
    export_zarr(arr, tmp_path / "z2.zarr", progress=False)
    scale, axes = _zarr_scale(tmp_path / "z2.zarr")
    assert info["scales"][0]["resolution"] == [8, 8, 8] and scale == [8, 8, 8]
    assert all(a["unit"] == "nanometer" for a in axes)


def test_units(arr, tmp_path):
    pytest.importorskip("tensorstore")
    from diced.export.precomputed import export_precomputed
    from diced.export.zarr_export import export_zarr

    info = export_precomputed(arr, tmp_path / "pc", voxel_size=(0.04, 0.008, 0.004), unit="um",
                              progress=False)
    assert [round(r, 6) for r in info["scales"][0]["resolution"]] == [4, 8, 40]
    export_zarr(arr, tmp_path / "z.zarr", voxel_size=(0.04, 0.008, 0.004), unit="µm",
                progress=False)
    scale, axes = _zarr_scale(tmp_path / "z.zarr")
    assert scale == [0.04, 0.008, 0.004] and axes[0]["unit"] == "micrometer"
    with pytest.raises(InvalidArgumentError, match="unit"):
        export_zarr(arr, tmp_path / "bad.zarr", unit="parsec", progress=False)


def test_cli_voxel_size_is_zyx_for_both(arr, tmp_path, capsys):
    pytest.importorskip("tensorstore")
    from diced.cli import main

    path = str(tmp_path / "s.diced")
    with diced.Store(path) as store:
        a = store.create_repo("fly").create_array("img", "uint8", (16, 16, 32), chunks=(16,) * 3)
        a[...] = 1
    assert main(["export", "precomputed", path, "fly", "img", str(tmp_path / "pc"),
                 "--voxel-size", "40,8,4", "--quiet"]) == 0
    assert main(["export", "zarr", path, "fly", "img", str(tmp_path / "z.zarr"),
                 "--voxel-size", "40,8,4", "--unit", "nm", "--quiet"]) == 0
    info = json.loads((tmp_path / "pc" / "info").read_text())
    assert info["scales"][0]["resolution"] == [4, 8, 40]
    assert _zarr_scale(tmp_path / "z.zarr")[0] == [40, 8, 4]


def test_check_helpers():
    assert check_voxel_size(None, 3) == [8.0, 8.0, 8.0]
    assert check_voxel_size(None, 4) == [1.0, 8.0, 8.0, 8.0]
    assert check_voxel_size(None, 2) == [8.0, 8.0]
    for bad in [(1, 2), (1, 0, 1), (1, float("nan"), 1), ("a", 1, 1), 5]:
        with pytest.raises(InvalidArgumentError, match="voxel_size"):
            check_voxel_size(bad, 3)
    assert check_unit("nm") == check_unit("nanometers") == "nanometer"
    assert to_nanometers([1, 2], "micrometer") == [1000.0, 2000.0]
