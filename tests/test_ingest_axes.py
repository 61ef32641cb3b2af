"""``ingest(..., axes=)`` / ``diced ingest --axes``: the source's axis order is stated, not
guessed; sources that declare their axes (OME-Zarr, zarr dimension names) are read in order."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import zarr

import diced
from diced.errors import InvalidArgumentError
from diced.export.ingest import ingest


@pytest.fixture
def repo(tmp_path):
    return diced.Store(f"memory://axes-{tmp_path.name}").create_repo("fly")


@pytest.fixture
def zyx():
    """A z, y, x volume with distinct extents, so a transposition cannot go unnoticed."""
    return np.random.default_rng(3).integers(0, 250, (20, 36, 52), dtype=np.uint8)


def test_npy_xyz_is_transposed(repo, tmp_path, zyx):
    np.save(tmp_path / "xyz.npy", zyx.transpose(2, 1, 0))  # indexed [x, y, z]
    rep = ingest(str(tmp_path / "xyz.npy"), repo, "img", axes="xyz", chunks=(8, 16, 16),
                 progress=False)
    assert rep.shape == (20, 36, 52)
    np.testing.assert_array_equal(repo.array("img")[...], zyx)


@pytest.mark.parametrize("axes, order", [("zyx", (0, 1, 2)), ("xzy", (2, 0, 1)),
                                         ("yxz", (1, 2, 0))])
def test_any_permutation(repo, zyx, axes, order):
    src = zyx.transpose(order)
    ingest(src, repo, "img", axes=axes, chunks=(8, 8, 8), slab=8, progress=False)
    np.testing.assert_array_equal(repo.array("img")[...], zyx)


def test_channels_last_go_first(repo, zyx):
    czyx = np.stack([zyx, 255 - zyx])
    ingest(np.moveaxis(czyx, 0, -1), repo, "img", axes="zyxc", chunks=(1, 8, 8, 8),
           progress=False)
    np.testing.assert_array_equal(repo.array("img")[...], czyx)


def test_tiff_stack_xyz(repo, tmp_path, zyx):
    tifffile = pytest.importorskip("tifffile")
    xyz = zyx.transpose(2, 1, 0)
    for i, plane in enumerate(xyz):  # one file per x-plane, each indexed [y, z]
        tifffile.imwrite(tmp_path / f"x{i}.tif", np.ascontiguousarray(plane))
    ingest(str(tmp_path / "x*.tif"), repo, "img", axes="xyz", chunks=(8, 8, 8), progress=False)
    np.testing.assert_array_equal(repo.array("img")[...], zyx)


def test_ome_zarr_declared_axes_need_no_option(repo, tmp_path, zyx):
    g = zarr.open_group(str(tmp_path / "x.zarr"), mode="w", zarr_format=3)
    g.create_array("0", data=zyx.transpose(2, 1, 0), chunks=(16, 16, 16))
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "x", "type": "space"}, {"name": "y", "type": "space"},
                 {"name": "z", "type": "space"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 1, 1]}]}]}]}
    ingest(str(tmp_path / "x.zarr"), repo, "img", chunks=(8, 8, 8), progress=False)
    np.testing.assert_array_equal(repo.array("img")[...], zyx)
    with pytest.raises(InvalidArgumentError, match="declares axes 'xyz'"):
        ingest(str(tmp_path / "x.zarr"), repo, "img2", axes="zyx", progress=False)


def test_undeclared_axes_warn(repo, tmp_path, zyx, caplog):
    np.save(tmp_path / "v.npy", zyx)
    with caplog.at_level(logging.WARNING, logger="diced.export.ingest"):
        ingest(str(tmp_path / "v.npy"), repo, "img", progress=False)
    assert "declares no axis order" in caplog.text and "axes=" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="diced.export.ingest"):
        ingest(str(tmp_path / "v.npy"), repo, "img2", axes="zyx", progress=False)
    assert "declares no axis order" not in caplog.text


@pytest.mark.parametrize("axes", ["zy", "zyxx", "zyq", "abc", ""])
def test_bad_axes_store_nothing(repo, zyx, axes):
    with pytest.raises(InvalidArgumentError, match="axes"):
        ingest(zyx, repo, "img", axes=axes, progress=False)
    assert "img" not in repo.instances()


def test_resume_remembers_axes(repo, zyx):
    """A resumed ingest must read the source in the same order it started with."""
    from diced.export.sources import _ArraySource, with_axes

    src = with_axes(_ArraySource(zyx.transpose(2, 1, 0)), "xyz")
    assert src.identity()["axes"] == "xyz" and src.shape == zyx.shape


def test_cli_axes(tmp_path, zyx, capsys):
    from diced.cli import main

    np.save(tmp_path / "xyz.npy", zyx.transpose(2, 1, 0))
    store = str(tmp_path / "s.diced")
    assert main(["ingest", store, "fly", "img", str(tmp_path / "xyz.npy"), "--axes", "xyz",
                 "--create-repo", "--quiet"]) == 0
    np.testing.assert_array_equal(diced.Store(store).open_repo("fly").array("img")[...], zyx)
    assert main(["ingest", store, "fly", "bad", str(tmp_path / "xyz.npy"), "--axes", "xy",
                 "--quiet"]) == 2
    assert "axes" in capsys.readouterr().err
