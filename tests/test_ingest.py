"""Ingest from HDF5, TIFF, .npy, zarr and numpy: slabs, offsets, memory bound, resume."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

import diced
from diced.errors import (
    DuplicateNameError,
    FormatError,
    InvalidArgumentError,
    LockedNodeError,
    NotFoundError,
    ShapeMismatchError,
)
from diced.export.ingest import PROGRESS_INSTANCE, _slab_plan, ingest, natural_key, open_source

h5py = pytest.importorskip("h5py")
tifffile = pytest.importorskip("tifffile")


@pytest.fixture
def repo(tmp_path):
    store = diced.Store(str(tmp_path / "s.diced"))
    yield store.create_repo("r")
    store.close()


def _vol(shape=(70, 48, 40), dtype=np.uint8, seed=0):
    return np.random.default_rng(seed).integers(0, 200, shape).astype(dtype)


def test_slab_plan_is_chunk_aligned():
    assert _slab_plan(0, 70, 32) == [(0, 32), (32, 64), (64, 70)]
    assert _slab_plan(10, 70, 32) == [(10, 32), (32, 64), (64, 70)]
    assert _slab_plan(40, 41, 32) == [(40, 41)]
    assert _slab_plan(5, 5, 32) == []
    assert sorted(["z10.tif", "z2.tif", "z1.tif"], key=natural_key) == ["z1.tif", "z2.tif",
                                                                          "z10.tif"]


def test_hdf5_with_offset(repo, tmp_path):
    data = _vol()
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("volumes/raw", data=data, chunks=(16, 16, 16))
        f.create_dataset("other", data=np.zeros(3))
    with pytest.raises(FormatError, match="2 datasets"):
        ingest(tmp_path / "v.h5", repo, "img", progress=False)
    with pytest.raises(FormatError, match="no dataset"):
        ingest(tmp_path / "v.h5", repo, "img", dataset="/nope", progress=False)
    rep = ingest(tmp_path / "v.h5", repo, "img", dataset="/volumes/raw", offset=(10, 5, 0),
                 chunks=(32, 32, 32), progress=False)
    arr = repo.array("img")
    assert arr.shape == (80, 53, 40) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr[10:, 5:, :], data)
    assert not arr[:10].any() and not arr[:, :5].any()
    assert rep.slabs == 3 and rep.slabs_written == 3 and not rep.resumed  # 10-32, 32-64, 64-80
    assert rep.bytes_written == data.nbytes and rep.offset == (10, 5, 0)
    assert repo.keyvalue(PROGRESS_INSTANCE).get("img") is None  # record cleared


def test_tiff_stack_directory_and_glob_natural_order(repo, tmp_path):
    data = _vol((12, 30, 20), np.uint16)
    d = tmp_path / "stack"
    d.mkdir()
    for i, plane in enumerate(data):
        tifffile.imwrite(d / f"z{i}.tif", plane)
    (d / "readme.txt").write_text("not a plane")
    ingest(d, repo, "a", chunks=(4, 16, 16), progress=False)
    np.testing.assert_array_equal(repo.array("a")[...], data)  # z10 after z9, not after z1
    ingest(str(d / "z*.tif"), repo, "b", progress=False, slab=5)
    np.testing.assert_array_equal(repo.array("b")[...], data)
    tifffile.imwrite(d / "z12.tif", np.zeros((31, 20), np.uint16))
    with pytest.raises(FormatError, match="all planes must match"):
        ingest(d, repo, "c", progress=False)
    with pytest.raises(NotFoundError):
        ingest(str(tmp_path / "nothing*.tif"), repo, "c", progress=False)


def test_multipage_tiff(repo, tmp_path):
    data = _vol((20, 24, 16))
    tifffile.imwrite(tmp_path / "m.tif", data)  # one page per plane
    src = open_source(tmp_path / "m.tif")
    assert src.shape == data.shape
    src.close()
    ingest(tmp_path / "m.tif", repo, "m", chunks=(8, 8, 8), progress=False)
    np.testing.assert_array_equal(repo.array("m")[...], data)


def test_npy_zarr_numpy_and_labels(repo, tmp_path):
    import zarr

    data = _vol((33, 20, 24), np.uint32)
    np.save(tmp_path / "v.npy", data)
    ingest(tmp_path / "v.npy", repo, "npy", progress=False)
    np.testing.assert_array_equal(repo.array("npy")[...], data)
    z = zarr.create_array(str(tmp_path / "v.zarr"), shape=data.shape, dtype=data.dtype,
                          chunks=(8, 8, 8))
    z[...] = data
    ingest(tmp_path / "v.zarr", repo, "zarr", progress=False)
    np.testing.assert_array_equal(repo.array("zarr")[...], data)
    ingest(data, repo, "np", dtype="uint64", progress=False)
    assert repo.array("np").dtype == np.uint64
    rep = ingest(data, repo, "seg", labels=True, chunks=(16, 16, 16), progress=False)
    seg = repo.array("seg")
    assert type(seg).__name__ == "LabelArray" and rep.dtype == "uint64"
    np.testing.assert_array_equal(seg[...], data)
    assert seg.count(int(data[0, 0, 0])) == int((data == data[0, 0, 0]).sum())


def test_existing_array_and_errors(repo, tmp_path):
    arr = repo.create_array("img", "uint8", (100, 100, 100), chunks=(32, 32, 32))
    arr[...] = 9
    data = _vol((20, 20, 20))
    with pytest.raises(DuplicateNameError, match="create=False"):
        ingest(data, repo, "img", progress=False)
    ingest(data, repo, "img", create=False, offset=(50, 60, 70), progress=False)
    np.testing.assert_array_equal(arr[50:70, 60:80, 70:90], data)
    assert arr[49, 60, 70] == 9 and arr[70, 60, 70] == 9
    with pytest.raises(ShapeMismatchError):
        ingest(data, repo, "img", create=False, offset=(90, 0, 0), progress=False)
    with pytest.raises(InvalidArgumentError, match="offset"):
        ingest(data, repo, "x", offset=(0, 0), progress=False)
    with pytest.raises(InvalidArgumentError, match="slab"):
        ingest(data, repo, "x", slab=0, progress=False)
    with pytest.raises(NotFoundError):
        ingest(tmp_path / "missing.h5", repo, "x", progress=False)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(FormatError):
        ingest(tmp_path / "junk.h5", repo, "x", progress=False)
    (tmp_path / "junk.bin").write_bytes(b"???")
    with pytest.raises(FormatError, match="unrecognised"):
        ingest(tmp_path / "junk.bin", repo, "x", progress=False)
    with pytest.raises(FormatError):
        ingest(object(), repo, "x", progress=False)
    with pytest.raises(diced.errors.DtypeError):
        ingest(np.array([[300]]), repo, "x", dtype="uint8", progress=False)
    assert "x" not in repo.instances()  # nothing created by the failed calls
    repo.commit("lock")
    with pytest.raises(LockedNodeError):
        ingest(data, repo, "y", progress=False)


def test_memory_is_bounded_by_slabs(repo, tmp_path):
    shape, chunks = (256, 128, 128), (32, 32, 32)
    slab_bytes = chunks[0] * shape[1] * shape[2]  # uint8: 512 KiB
    data = _vol(shape)
    with h5py.File(tmp_path / "big.h5", "w") as f:
        f.create_dataset("raw", data=data, chunks=(32, 64, 64))
        f.create_dataset("small", data=data[:32, :32, :32])
    del data
    # what the first ingest of a process imports (13 MiB of modules when this test runs
    # alone) is not the slab bound under test: import it first
    ingest(tmp_path / "big.h5", repo, "warm", dataset="small", chunks=chunks, progress=False)
    tracemalloc.start()
    try:
        rep = ingest(tmp_path / "big.h5", repo, "big", dataset="raw", chunks=chunks,
                     progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rep.slabs == 8 and rep.bytes_written == 8 * slab_bytes  # source is 8 slabs
    print(f"ingest peak: {peak / slab_bytes:.2f} slabs")
    assert peak < 6 * slab_bytes, f"peak {peak / slab_bytes:.1f} slabs"
    with h5py.File(tmp_path / "big.h5", "r") as f:
        np.testing.assert_array_equal(repo.array("big")[100:140], f["raw"][100:140])


class Flaky:
    """An array source that fails after ``ok`` slab reads (a crash mid-ingest)."""

    def __init__(self, data: np.ndarray, ok: int | None) -> None:
        self.data, self.ok, self.reads = data, ok, 0
        self.shape, self.dtype = data.shape, data.dtype

    def __getitem__(self, sel):
        if self.ok is not None and self.reads >= self.ok:
            raise OSError("connection reset")
        self.reads += 1
        return self.data[sel]


@pytest.mark.parametrize("labels", [False, True])
def test_interrupted_ingest_resumes(repo, labels):
    data = _vol((100, 40, 40), np.uint16) + 1
    with pytest.raises(OSError, match="connection reset"):
        ingest(Flaky(data, ok=2), repo, "v", chunks=(16, 16, 16), labels=labels, progress=False)
    record = json.loads(repo.keyvalue(PROGRESS_INSTANCE)["v"])
    assert record["done"] == 2 and record["slabs"] == 7 and record["slab"] == 16
    assert record["source"]["shape"] == [100, 40, 40]
    arr = repo.array("v")
    np.testing.assert_array_equal(arr[:32], data[:32])
    assert not arr[32:].any()
    with pytest.raises(InvalidArgumentError, match="unfinished ingest"):
        ingest(data[:50], repo, "v", labels=labels, progress=False)  # another source
    again = Flaky(data, ok=None)
    rep = ingest(again, repo, "v", labels=labels, progress=False)
    assert rep.slabs_skipped == 2 and rep.slabs_written == 5 and rep.resumed
    assert again.reads == 5  # done slabs were not read again
    np.testing.assert_array_equal(repo.array("v")[...], data)
    assert repo.keyvalue(PROGRESS_INSTANCE).get("v") is None


def test_no_resume_restarts_into_existing(repo):
    data = _vol((64, 16, 16))
    with pytest.raises(OSError):
        ingest(Flaky(data, ok=1), repo, "v", chunks=(16, 16, 16), progress=False)
    rep = ingest(data, repo, "v", create=False, resume=False, progress=False)
    assert rep.slabs_skipped == 0 and rep.slabs_written == 4
    np.testing.assert_array_equal(repo.array("v")[...], data)


def test_resume_record_on_a_sibling_branch(repo):
    data = _vol((32, 16, 16))
    root = repo.commit("root")
    repo.branch("side")
    ingest(data, repo, "a", progress=False)  # creates .ingest on branch "side"
    repo.commit("side")
    repo.checkout(root.uuid)
    repo.branch("other")
    assert PROGRESS_INSTANCE not in repo.instances()
    with pytest.raises(OSError):
        ingest(Flaky(data, ok=1), repo, "b", chunks=(16, 16, 16), progress=False)
    ingest(data, repo, "b", progress=False)
    np.testing.assert_array_equal(repo.array("b")[...], data)
