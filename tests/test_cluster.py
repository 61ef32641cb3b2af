"""diced.cluster: jobs on dask.distributed (a LocalCluster of worker processes) with the
store on S3 (moto) or local backends; a killed worker and a failing task, then resume."""

from __future__ import annotations

import os
import pathlib
import time
import uuid

import numpy as np
import pytest

import diced
from diced import cluster
from diced.errors import (
    ConcurrencyError,
    InvalidArgumentError,
    LockedNodeError,
    ShapeMismatchError,
    UnlockedNodeError,
)

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

SRC = str(pathlib.Path(diced.__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread each (workers import this tree's diced)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = SRC + (os.pathsep + old if old else "")
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as lc, \
                distributed.Client(lc) as c:
            yield c
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture
def s3_store(s3_emulator):
    s = diced.Store(f"s3://{s3_emulator.bucket}/cluster-{uuid.uuid4().hex[:8]}",
                    **s3_emulator.options)
    yield s


def _volume(shape=(70, 90, 50), seed=0):
    return np.random.default_rng(seed).integers(0, 250, shape, dtype=np.uint8)


def _committed_repo(store):
    r = store.create_repo(f"r{uuid.uuid4().hex[:6]}")
    r.commit("root")
    return r


def _reference(data, chunks, max_scale, tmp_path):
    """The same volume written by the ordinary (serial) path, for comparison."""
    s = diced.Store(str(tmp_path / f"ref-{uuid.uuid4().hex[:6]}.diced"))
    r = s.create_repo("ref")
    a = r.create_array("a", data.dtype, data.shape, chunks=chunks, max_scale=max_scale)
    a[...] = data
    return a


# --- jobs on S3 with worker processes ------------------------------------------------------

def test_ingest_on_s3_matches_serial_writes(s3_store, client, tmp_path):
    data = _volume()
    repo = _committed_repo(s3_store)
    before = len(repo.versions())
    v = cluster.ingest(repo, "img", da.from_array(data, chunks=(30, 45, 50)),
                       create={"chunks": [16, 16, 16], "max_scale": 2}, client=client,
                       note="cluster ingest", lock=True)
    fresh = diced.Store(s3_store.location, **client_options(s3_store)).open_repo(repo.alias)
    assert len(fresh.versions()) == before + 1
    a = fresh.version(v.uuid).array("img")
    assert v.locked and v.note == "cluster ingest"
    np.testing.assert_array_equal(a[...], data)
    ref = _reference(data, (16, 16, 16), 2, tmp_path)
    for level in (1, 2):
        np.testing.assert_array_equal(a.scale(level)[...], ref.scale(level)[...])
    assert cluster.list_jobs(fresh) == []
    # the parent does not see the array
    assert "img" not in fresh.instances(repo.root.uuid)


def test_jobs_on_gcs_emulator(gcs_emulator, client):
    store = diced.Store(f"gs://{gcs_emulator.bucket}/cluster-{uuid.uuid4().hex[:8]}",
                        **gcs_emulator.options)
    data = _volume((32, 32, 48), 7)
    repo = _committed_repo(store)
    v1 = cluster.ingest(repo, "img", da.from_array(data, chunks=(20, 32, 48)),
                        create={"chunks": [16, 16, 16], "max_scale": 1}, client=client,
                        lock=True)
    v2 = cluster.map_blocks(_invert, repo.version(v1.uuid).array("img"), client=client)
    fresh = diced.Store(store.location, **gcs_emulator.options).open_repo(repo.alias)
    np.testing.assert_array_equal(fresh.version(v1.uuid).array("img")[...], data)
    np.testing.assert_array_equal(fresh.version(v2.uuid).array("img")[...], 255 - data)
    np.testing.assert_array_equal(
        client.compute(fresh.version(v2.uuid).array("img").scale(1).to_dask()).result(),
        fresh.version(v2.uuid).array("img").scale(1)[...])


def client_options(store):
    return dict(store.raw_backend.fs.storage_options)


def test_map_blocks_on_s3_new_instance_and_in_place(s3_store, client):
    data = _volume((40, 40, 40), 1)
    repo = _committed_repo(s3_store)
    v1 = cluster.ingest(repo, "img", data, create={"chunks": [16, 16, 16]}, client=client,
                        lock=True)
    a = repo.version(v1.uuid).array("img")
    v2 = cluster.map_blocks(_invert, a, out="inv", client=client, lock=True)
    np.testing.assert_array_equal(repo.version(v2.uuid).array("inv")[...], 255 - data)
    # in place, with the block position, as a child of v2 (a different parent than A)
    v3 = cluster.map_blocks(_add_z, a, parent=v2.uuid, client=client)
    expect = data + np.arange(40, dtype=np.uint8)[:, None, None]
    np.testing.assert_array_equal(repo.version(v3.uuid).array("img")[...], expect)
    np.testing.assert_array_equal(repo.version(v1.uuid).array("img")[...], data)  # A unchanged
    assert "inv" in repo.instances(v3.uuid)


def _invert(block):
    return 255 - block


def _add_z(block, box):
    return block + np.arange(box[0].start, box[0].stop, dtype=np.uint8)[:, None, None]


def test_to_dask_and_xarray_read_any_version(s3_store, client):
    repo = s3_store.create_repo("x")
    a = repo.create_array("img", "uint16", (50, 40, 30), chunks=(16, 16, 16),
                          origin=(10, -5, 0), max_scale=1)
    first = np.arange(50 * 40 * 30, dtype=np.uint16).reshape(50, 40, 30)
    a[...] = first
    v1 = repo.commit()
    repo.newversion()
    a[5:20, 5:20, 5:20] = 7
    d = a.to_dask(version=v1.uuid)
    assert d.chunks[0] == (16, 16, 16, 2) and d.chunks[2] == (16, 14)
    np.testing.assert_array_equal(client.compute(d).result(), first)
    big = a.to_dask(version=v1.uuid, chunks=(32, 32, 16))
    assert big.chunks[0] == (32, 18)
    np.testing.assert_array_equal(client.compute(big).result(), first)
    with pytest.raises(InvalidArgumentError):
        a.to_dask(chunks=(20, 16, 16))
    now = a.to_dask()
    assert int(client.compute(now[10, 10, 10]).result()) == 7
    assert int(client.compute(d[10, 10, 10]).result()) == first[10, 10, 10]
    x = a.to_xarray(version=v1.uuid, voxel_size=(40, 8, 8), unit="nanometer")
    assert x.dims == ("z", "y", "x")
    assert float(x.z[0]) == 400 and float(x.y[0]) == -40 and float(x.x[1]) == 8
    assert int(x.sel(z=400 + 8 * 40, y=-40 + 8 * 3, x=16).compute()) == first[8, 3, 2]
    assert x.attrs["version"] == v1.uuid
    with pytest.raises(InvalidArgumentError):
        a.to_xarray(voxel_size=(1, 1))
    lo = a.at(v1.uuid).scale(1)
    xs = lo.to_xarray()
    assert xs.shape == (25, 20, 15) and xs.attrs["scale"] == 1
    assert int(xs.z[0]) == 10 and int(xs.y[0]) == -6 and int(xs.x[1]) == 2
    np.testing.assert_array_equal(client.compute(xs.data).result(), lo[...])
    with pytest.raises(InvalidArgumentError):
        lo.to_dask(scale=2)


def test_from_dask_labels_keeps_index(s3_store, client):
    repo = s3_store.create_repo("l")
    labels = repo.create_labels("seg", (48, 48, 48), chunks=(16, 16, 16))
    src = (np.arange(48)[:, None, None] // 10 + np.zeros((1, 48, 48), int)).astype(np.uint64)
    labels.from_dask(da.from_array(src, chunks=20), client=client)
    np.testing.assert_array_equal(labels[...], src)
    for lab in range(5):
        assert labels.count(lab) == (src == lab).sum() if lab else True
    assert labels.maxlabel() == 4
    repo.commit()
    with pytest.raises(LockedNodeError):
        labels.from_dask(src, client=client)


# --- failures and resume ---------------------------------------------------------------------

def _make_flaky(marker: str, kill: bool):
    def fn(block, box):
        if box[0].start >= 48 and not os.path.exists(marker):
            pathlib.Path(marker).write_text("failed once")
            # fail late, so that other tasks have written chunks (a run that failed before
            # any task finished would leave nothing for the rerun to skip)
            time.sleep(1.0)
            if kill:
                os._exit(3)  # the worker process dies mid-task
            raise RuntimeError("injected task failure")
        return (block.astype(np.uint16) * 2).astype(np.uint8)
    return fn


def test_failed_task_leaves_no_version_and_rerun_resumes(s3_store, client, tmp_path,
                                                         monkeypatch):
    from diced.cluster import blocks

    monkeypatch.setattr(blocks, "MAP_TASK_BYTES", 1)  # one chunk per task
    data = _volume((64, 32, 32), 2)
    repo = _committed_repo(s3_store)
    v1 = cluster.ingest(repo, "img", data, create={"chunks": [16, 16, 16]}, client=client,
                        lock=True)
    a = repo.version(v1.uuid).array("img")
    fn = _make_flaky(str(tmp_path / "marker"), kill=False)
    n = len(repo.versions())
    with pytest.raises(RuntimeError, match="injected"):
        cluster.map_blocks(fn, a, out="double", client=client, note="doubled")
    other = diced.Store(s3_store.location, **client_options(s3_store)).open_repo(repo.alias)
    assert len(other.versions()) == n  # nothing visible
    assert "double" not in other._doc["instances"]
    jobs = cluster.list_jobs(other)
    assert len(jobs) == 1 and jobs[0].kind == "map_blocks"
    job = cluster.Job(other, jobs[0].name, _record(other, jobs[0].name))
    done_before = job.written(job.instance_record("double")["id"])
    assert 0 < len(done_before) < 16
    # same call again: resumes at the reserved id, skipping what was written
    v2 = cluster.map_blocks(fn, a, out="double", client=client, note="doubled")
    assert v2.id == jobs[0].vid and v2.note == "doubled"
    out = repo.version(v2.uuid).array("double")
    np.testing.assert_array_equal(out[...], (data.astype(np.uint16) * 2).astype(np.uint8))
    assert cluster.list_jobs(repo) == []


def _record(repo, name):
    from diced.repo import keys as K
    from diced.repo.meta import load_doc

    return load_doc(repo.backend.get(K.job_key(repo.uuid, name)), name)


def test_killed_worker_is_rescheduled(s3_store, client, tmp_path, monkeypatch):
    from diced.cluster import blocks

    monkeypatch.setattr(blocks, "MAP_TASK_BYTES", 1)
    data = _volume((64, 32, 32), 3)
    repo = _committed_repo(s3_store)
    v1 = cluster.ingest(repo, "img", data, create={"chunks": [16, 16, 16]}, client=client,
                        lock=True)
    fn = _make_flaky(str(tmp_path / "marker"), kill=True)
    v2 = cluster.map_blocks(fn, repo.version(v1.uuid).array("img"), client=client)
    assert (tmp_path / "marker").exists()  # a worker really died
    np.testing.assert_array_equal(repo.version(v2.uuid).array("img")[...],
                                  (data.astype(np.uint16) * 2).astype(np.uint8))
    client.wait_for_workers(2, timeout=60)


# --- exports ---------------------------------------------------------------------------------

def test_exports_on_cluster_match_serial(s3_store, s3_emulator, client, tmp_path):
    import zarr

    from diced.export import export_zarr

    data = _volume((40, 50, 60), 4)
    repo = _committed_repo(s3_store)
    v = cluster.ingest(repo, "img", data, create={"chunks": [16, 16, 16], "max_scale": 1},
                       client=client, lock=True)
    a = repo.version(v.uuid).array("img")
    dest = f"s3://{s3_emulator.bucket}/export-{uuid.uuid4().hex[:6]}.zarr"
    cluster.export_zarr(a, dest, client=client, storage_options=s3_emulator.options,
                        voxel_size=(40, 8, 8))
    ref = export_zarr(a, str(tmp_path / "ref.zarr"), voxel_size=(40, 8, 8), progress=False)
    got = zarr.open_group(dest, mode="r", storage_options=s3_emulator.options)
    for level in ("0", "1"):
        np.testing.assert_array_equal(got[level][...], ref[level][...])
    assert got.attrs["ome"] == dict(ref.attrs)["ome"]
    with pytest.raises(InvalidArgumentError, match="not empty"):
        cluster.export_zarr(a, dest, client=client, storage_options=s3_emulator.options)

    ts = pytest.importorskip("tensorstore")
    info = cluster.export_precomputed(a, str(tmp_path / "pc"), client=client)
    assert [s["size"] for s in info["scales"]] == [[60, 50, 40], [30, 25, 20]]
    for i, s in enumerate(info["scales"]):
        t = ts.open({"driver": "neuroglancer_precomputed",
                     "kvstore": {"driver": "file", "path": str(tmp_path / "pc") + "/"},
                     "scale_index": i}).result()
        np.testing.assert_array_equal(t.T[0].read().result(), a.scale(i)[...])
    info2 = cluster.export_precomputed(a, str(tmp_path / "pcs"), client=client, sharded=True,
                                       scales=[0])
    t = ts.open({"driver": "neuroglancer_precomputed",
                 "kvstore": {"driver": "file", "path": str(tmp_path / "pcs") + "/"}}).result()
    assert "sharding" in info2["scales"][0]
    np.testing.assert_array_equal(t.T[0].read().result(), data)


def test_export_shards_on_cluster_matches_serial(s3_store, client, tmp_path):
    from diced.export import export_shards

    seg = (np.arange(70)[:, None, None] // 7 * 1000 + np.arange(80)[None, :, None] // 20
           + np.zeros((1, 1, 90), int)).astype(np.uint64)
    repo = _committed_repo(s3_store)
    v = cluster.ingest(repo, "seg", seg, labels=True, create={"chunks": [64, 64, 64]},
                       client=client, lock=True)
    labels = repo.version(v.uuid).labels("seg")
    assert labels.count(3001) == (seg == 3001).sum()
    rep = cluster.export_shards(labels, str(tmp_path / "c"), client=client, progress=False)
    ref = export_shards(labels, str(tmp_path / "s"), progress=False)
    assert rep.blocks_written == ref.blocks_written == 8
    files = sorted(p.relative_to(tmp_path / "s") for p in (tmp_path / "s").rglob("*")
                   if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "c") for p in (tmp_path / "c").rglob("*")
                           if p.is_file())
    for f in files:
        if f.suffix == ".csv" or f.name == "info":
            assert (tmp_path / "s" / f).read_bytes() == (tmp_path / "c" / f).read_bytes()


# --- label index, pyramid (threads: no client) ------------------------------------------------

def test_rebuild_label_index_and_pyramid_threads(tmp_path):
    store = diced.Store(str(tmp_path / "s.diced"))
    repo = store.create_repo("r")
    labels = repo.create_labels("seg", (64, 64, 64), chunks=(16, 16, 16), max_scale=2)
    seg = np.zeros((64, 64, 64), np.uint64)
    seg[:30] = 5
    seg[30:, :20] = 9
    labels[...] = seg
    v1 = repo.commit()
    # map_blocks on labels: label 9 becomes 0; the index and pyramid follow
    v2 = cluster.map_blocks(_drop_nine, repo.version(v1.uuid).labels("seg"), lock=True)
    new = repo.version(v2.uuid).labels("seg")
    assert new.count(9) == 0 and new.count(5) == (seg == 5).sum()
    assert not (new.scale(1)[...] == 9).any()
    assert repo.version(v1.uuid).labels("seg").count(9) == (seg == 9).sum()
    v3 = cluster.rebuild_label_index(new, note="reindex")
    again = repo.version(v3.uuid).labels("seg")
    assert again.block_counts(5) == new.block_counts(5) and again.count(9) == 0
    v4 = cluster.build_pyramid(repo.version(v1.uuid).labels("seg"), branch="py")
    np.testing.assert_array_equal(repo.version(v4.uuid).labels("seg").scale(2)[...],
                                  repo.version(v1.uuid).labels("seg").scale(2)[...])


def _drop_nine(block):
    out = block.copy()
    out[out == 9] = 0
    return out


# --- bad input -----------------------------------------------------------------------------

def test_bad_input_is_refused_with_nothing_stored(tmp_path):
    store = diced.Store(str(tmp_path / "s.diced"))
    repo = store.create_repo("r")
    a = repo.create_array("img", "uint8", (32, 32, 32), chunks=(16, 16, 16))
    a[...] = 3
    repo.create_array("small", "uint8", (16, 16, 16), chunks=(16, 16, 16))
    with pytest.raises(UnlockedNodeError):  # A is open: no child of it yet
        cluster.map_blocks(_invert, a)
    v1 = repo.commit()
    with pytest.raises(ShapeMismatchError):
        cluster.ingest(repo, "img", np.zeros((40, 32, 32), np.uint8))
    with pytest.raises(ShapeMismatchError):
        cluster.ingest(repo, "new", np.zeros((40, 32, 32), np.uint8),
                       create={"shape": [8, 8, 8]})
    with pytest.raises(InvalidArgumentError):  # labels are 3-d: refused before any id is taken
        cluster.ingest(repo, "seg", np.zeros((4, 4), np.uint64), labels=True)
    with pytest.raises(InvalidArgumentError, match="colour"):
        cluster.ingest(repo, "seg", np.zeros((4, 4, 4), np.uint64), create={"colour": 1})
    with pytest.raises(ShapeMismatchError):
        cluster.map_blocks(_invert, repo.version(v1.uuid).array("img"), out="small")
    assert cluster.list_jobs(repo) == []
    with pytest.raises(InvalidArgumentError):
        cluster.map_blocks("not callable", repo.version(v1.uuid).array("img"))
    with pytest.raises(InvalidArgumentError):
        cluster.map_blocks(_invert, repo.version(v1.uuid).array("img"), client=42)
    n = len(repo.versions())
    with pytest.raises(ShapeMismatchError):
        cluster.map_blocks(lambda b: b[:1], repo.version(v1.uuid).array("img"), job="bad")
    assert len(repo.versions()) == n
    with pytest.raises(ConcurrencyError):  # same job name, other arguments
        cluster.map_blocks(_invert, repo.version(v1.uuid).array("img"), job="bad")
    cluster.Job.load(repo, "bad").abandon()
    with pytest.raises(KeyError):
        cluster.Job.load(repo, "bad")
    v = cluster.map_blocks(_invert, repo.version(v1.uuid).array("img"), job="bad")
    assert (repo.version(v.uuid).array("img")[...] == 252).all()
    with pytest.raises(diced.errors.DuplicateNameError):  # v1 already has a master child
        cluster.map_blocks(_invert, repo.version(v1.uuid).array("img"))
    assert len(repo.versions()) == n + 1


def test_cli_ingest_and_export_with_workers(tmp_path, client):
    from diced.cli import main

    data = _volume((40, 40, 40), 5)
    np.save(tmp_path / "vol.npy", data)
    store = str(tmp_path / "s.diced")
    addr = client.scheduler.address
    assert main(["ingest", store, "r", "img", str(tmp_path / "vol.npy"), "--create-repo",
                 "--chunks", "16,16,16", "--scheduler", addr]) == 0
    arr = diced.Store(store).open_repo("r").array("img")
    np.testing.assert_array_equal(arr[...], data)
    assert main(["export", "zarr", store, "r", "img", str(tmp_path / "o.zarr"),
                 "--scheduler", addr, "--quiet"]) == 0
    import zarr

    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "o.zarr"))["0"][...], data)


# --- ingest resume (threads of this process) ----------------------------------------------------

def _settled(path, quiet=1.0):
    import time

    n, since = -1, time.monotonic()
    while time.monotonic() - since < quiet:
        m = len(list(path.iterdir()))
        if m != n:
            n, since = m, time.monotonic()
        time.sleep(0.05)
    return n


def test_ingest_resumes_after_a_failed_source_block(tmp_path, monkeypatch):
    store = diced.Store(str(tmp_path / "s.diced"))
    repo = _committed_repo(store)
    data = _volume((64, 32, 32), 6)
    calls = tmp_path / "calls"
    calls.mkdir()
    marker = tmp_path / "failed"

    def source(block, block_info=None):
        z0 = block_info[0]["array-location"][0][0]
        (calls / f"{z0}-{uuid.uuid4().hex}").write_text("")
        if z0 == 48 and not marker.exists():
            marker.write_text("")
            import time

            deadline = time.monotonic() + 60  # fail once another block is stored
            while len(list(store.backend.list_keys("w/"))) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            raise RuntimeError("source block failed")
        return block

    src = da.from_array(data, chunks=(16, 32, 32)).map_blocks(source, dtype=np.uint8)
    with pytest.raises(RuntimeError, match="source block failed"):
        cluster.ingest(repo, "img", src, create={"chunks": [16, 16, 16], "max_scale": 1},
                       client="threads")  # in order: the failing block is the last one
    assert "img" not in repo.instances() and len(cluster.list_jobs(repo)) == 1
    first = _settled(calls)  # tasks the thread pool had queued may still run: wait for them
    saved = {}
    from diced.cluster.job import Job

    publish = Job.publish

    def keep_record(self, **kw):
        saved["record"] = _record(self.repo, self.name)
        return publish(self, **kw)

    monkeypatch.setattr(Job, "publish", keep_record)
    v = cluster.ingest(repo, "img", src, create={"chunks": [16, 16, 16], "max_scale": 1},
                       client="threads")
    second = len(list(calls.iterdir())) - first
    assert 1 <= second < 4  # blocks written by the first run were not computed again
    np.testing.assert_array_equal(repo.version(v.uuid).array("img")[...], data)
    ref = _reference(data, (16, 16, 16), 1, tmp_path)
    np.testing.assert_array_equal(repo.version(v.uuid).array("img").scale(1)[...],
                                  ref.scale(1)[...])
    # a driver that stopped after publishing but before removing the record: the rerun
    # finds the published version instead of making another
    from diced.repo import keys as K
    from diced.repo.meta import dump_doc

    name = saved["record"]["name"]
    store.backend.set(K.job_key(repo.uuid, name), dump_doc(saved["record"]))
    n = len(repo.versions())
    again = cluster.ingest(repo, "img", src, create={"chunks": [16, 16, 16], "max_scale": 1},
                           parent=repo.root.uuid)
    assert again.uuid == v.uuid and len(repo.versions()) == n
    assert cluster.list_jobs(repo) == []


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_tombstones_at_the_job_version_reach_the_pyramid(kind, tmp_path):
    # unordered stores read the job's own keys directly (no manifest listing): a chunk the
    # job emptied (a tombstone at the job's version) must read as fill, not as the parent's
    loc = f"memory://cl-{uuid.uuid4().hex[:8]}" if kind == "memory" else f"file://{tmp_path}/s"
    store = diced.Store(loc)
    repo = _committed_repo(store)
    data = _volume((32, 32, 32), 8) | 1  # no chunk is all fill
    v1 = cluster.ingest(repo, "img", data, create={"chunks": [8, 8, 8], "max_scale": 2},
                        lock=True)
    v2 = cluster.map_blocks(_zero_low_z, repo.version(v1.uuid).array("img"), lock=True)
    got = repo.version(v2.uuid).array("img")
    expect = data.copy()
    expect[:8] = 0
    ref = _reference(expect, (8, 8, 8), 2, tmp_path)
    np.testing.assert_array_equal(got[...], expect)
    for level in (1, 2):
        np.testing.assert_array_equal(got.scale(level)[...], ref.scale(level)[...])
    assert len(got.stored_chunks()) == 3 * 16


def _zero_low_z(block, box):
    return np.zeros_like(block) if box[0].start < 8 else block


def test_a_different_function_or_source_does_not_resume_a_failed_job(tmp_path):
    store = diced.Store(str(tmp_path / "s.diced"))
    repo = _committed_repo(store)
    data = _volume((16, 16, 16), 9)
    v1 = cluster.ingest(repo, "img", data, create={"chunks": [8, 8, 8]}, lock=True)
    a = repo.version(v1.uuid).array("img")

    def boom(block):
        raise RuntimeError("first function fails")

    with pytest.raises(RuntimeError):
        cluster.map_blocks(boom, a)
    with pytest.raises(ConcurrencyError, match="other parameters"):
        cluster.map_blocks(lambda b: b + 1, a)  # same job name, another function
    [job] = cluster.list_jobs(repo)
    cluster.Job.load(repo, job.name).abandon()
    v2 = cluster.map_blocks(lambda b: b + 1, a)
    np.testing.assert_array_equal(repo.version(v2.uuid).array("img")[...], data + 1)
    # ingest: the source is identified by its dask name
    src = da.from_array(data, chunks=8).map_blocks(_fail_once(tmp_path / "m"), dtype=np.uint8)
    with pytest.raises(RuntimeError):
        cluster.ingest(repo, "other", src, parent=v1.uuid, branch="b")
    with pytest.raises(ConcurrencyError):
        cluster.ingest(repo, "other", data[::-1].copy(), parent=v1.uuid, branch="b")
    v3 = cluster.ingest(repo, "other", src, parent=v1.uuid, branch="b")
    np.testing.assert_array_equal(repo.version(v3.uuid).array("other")[...], data)


def _fail_once(marker):
    def fn(block):
        if block.size and not marker.exists():  # (dask calls it on an empty array for meta)
            marker.write_text("")
            raise RuntimeError("fails once")
        return block
    return fn


def test_source_array_reads_files_and_resumes_by_identity(tmp_path):
    from dask.base import tokenize

    from diced.cluster.blocks import SourceArray

    data = _volume((20, 16, 12), 10)
    np.save(tmp_path / "v.npy", data)
    src = SourceArray(str(tmp_path / "v.npy"))
    assert src.shape == data.shape and tokenize(src) == tokenize(SourceArray(str(tmp_path / "v.npy")))
    import pickle

    again = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(again[3:9, :, 2:5], data[3:9, :, 2:5])
    store = diced.Store(str(tmp_path / "s.diced"))
    repo = _committed_repo(store)
    v = cluster.ingest(repo, "img", str(tmp_path / "v.npy"), offset=(4, 0, 0),
                       create={"chunks": [8, 8, 8], "shape": [24, 16, 12]})
    np.testing.assert_array_equal(repo.version(v.uuid).array("img")[4:], data)
