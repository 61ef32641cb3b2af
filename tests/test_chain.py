"""Chained stores (DVID's "work in progress"): a repo published read-only, edited locally.

The base is an LMDB directory or a ``file://`` tree (standing in for a public bucket); the
local layer is LMDB. Every test checks that the base's keys and bytes are unchanged.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import diced
from diced.backends import open_backend
from diced.cli import main as cli_main
from diced.errors import (
    DuplicateNameError,
    InvalidArgumentError,
    LockedNodeError,
    ReadOnlyStoreError,
    StoreLocationError,
    StoreNotFoundError,
)

SRC = str(Path(diced.__file__).resolve().parents[1])
SHAPE = (64, 64, 64)


def _gray() -> np.ndarray:
    return (np.arange(np.prod(SHAPE), dtype=np.uint64).reshape(SHAPE) % 251).astype(np.uint8)


def _publish(location: str) -> dict[str, str]:
    """A base store: repo ``fly`` with gray, seg and kv at a locked root, plus an open child
    on branch ``wip`` holding one more chunk. Returns version UUIDs."""
    with diced.Store(location) as s:
        r = s.create_repo("fly", "published")
        r.create_array("gray", "uint8", SHAPE, chunks=(32, 32, 32))[:] = _gray()
        seg = r.create_labels("seg", SHAPE, chunks=(32, 32, 32))
        seg[:32] = 7
        seg[32:, :32] = 8
        kv = r.create_keyvalue("kv")
        kv["a"] = b"base-a"
        kv["b"] = b"base-b"
        root = r.commit("v1").uuid
        wip = r.branch("wip")
        r.array("gray")[32:, 32:, 32:] = 200
        return {"root": root, "wip": wip.uuid}


def _dump(location: str, **options) -> dict[str, bytes]:
    with open_backend(location, **options) as b:
        keys = list(b.list_keys())
        return dict(zip(keys, b.get_many(keys), strict=True))


@pytest.fixture(params=["lmdb", "file"])
def published(request, tmp_path):
    """``(base location, uuids)``; asserts afterwards that the base never changed."""
    if request.param == "lmdb":
        loc, opts = str(tmp_path / "base.diced"), {"readonly": True}
    else:
        loc, opts = (tmp_path / "base").as_uri(), {}
    uuids = _publish(loc)
    before = _dump(loc, **opts)
    yield loc, uuids
    assert _dump(loc, **opts) == before, "the base store was written to"


@pytest.fixture
def chained(published, tmp_path):
    base, uuids = published
    store = diced.Store.chain(base, tmp_path / "local.diced")
    yield store, uuids
    store.close()


def test_new_versions_read_through_and_write_locally(chained, published, tmp_path):
    store, uuids = chained
    assert store.is_chained
    repo = store.open_repo("fly", version=uuids["root"])
    gray = repo.array("gray")
    np.testing.assert_array_equal(gray[:], _gray())
    repo.newversion("local edit")
    gray[:8] = 1
    expect = _gray()
    expect[:8] = 1
    np.testing.assert_array_equal(gray[:], expect)
    np.testing.assert_array_equal(repo.version(uuids["root"]).array("gray")[:], _gray())
    seg = repo.labels("seg")
    seg[40:48, 40:48, 40:48] = 9
    assert set(np.unique(seg[:])) == {0, 7, 8, 9}
    assert repo.keyvalue("kv")["a"] == b"base-a"
    repo.keyvalue("kv")["a"] = b"local-a"
    v2 = repo.commit("edits")
    assert repo.version(v2.uuid).keyvalue("kv")["a"] == b"local-a"
    assert repo.version(uuids["root"]).keyvalue("kv")["a"] == b"base-a"
    # only the changed chunks were stored locally: one gray chunk row, one label block
    local = _dump(str(tmp_path / "local.diced"))
    gray_id = repo._doc["instances"]["gray"]["id"]
    local_gray = [k for k in local if k.startswith(f"d/{gray_id:08x}/")]
    assert len(local_gray) == 4  # the z=0 chunk row of a 2x2x2 grid
    assert store.verify().ok


def test_branches_instances_and_tags_are_made_locally(chained):
    store, uuids = chained
    repo = store.open_repo("fly", version=uuids["root"])
    repo.branch("proofread")
    new = repo.create_array("mask", "uint8", SHAPE)
    new[:4] = 3
    with pytest.raises(DuplicateNameError):
        repo.create_array("gray", "uint8", SHAPE)
    repo.commit("mask")
    repo.tag("proofread-1")
    assert set(repo.branches()) >= {"master", "wip", "proofread"}
    assert "proofread-1" in repo.tags()
    assert repo.instances()["mask"] == "array"
    assert int(repo.array("mask")[:].sum()) == 3 * 4 * 64 * 64


def test_locked_base_versions_stay_locked(chained):
    store, uuids = chained
    repo = store.open_repo("fly", version=uuids["root"])
    with pytest.raises(LockedNodeError):
        repo.array("gray")[:1] = 0


def test_open_base_version_is_writable_locally_with_whiteouts(chained, published):
    """The base's open ``wip`` version may go on in the chain: overwriting a chunk the base
    wrote at that very version, even back to the fill value, hides the base's copy."""
    store, uuids = chained
    repo = store.open_repo("fly", version=uuids["wip"])
    gray = repo.array("gray")
    assert (gray[32:, 32:, 32:] == 200).all()
    gray[32:, 32:, 32:] = 0  # the parent (root) holds data here: a tombstone at wip
    assert (gray[32:, 32:, 32:] == 0).all()
    repo.commit("wip done")
    assert (store.open_repo("fly", version=uuids["wip"]).array("gray")[32:, 32:, 32:] == 0).all()
    assert store.verify().ok


def test_deleting_base_data_hides_it_locally(chained, published, tmp_path):
    store, _ = chained
    repo = store.open_repo("fly")
    kv = repo._doc["instances"]["kv"]["id"]
    assert list(store.backend.list_keys(f"d/{kv:08x}/"))
    repo.delete_instance("kv")
    assert "kv" not in repo.instances()
    assert list(store.backend.list_keys(f"d/{kv:08x}/")) == []
    store.delete_repo("fly")
    assert store.list_repos() == []
    assert list(store.backend.list_keys("d/")) == []
    # the base still has everything (the fixture checks its bytes): a new chain sees it all
    base, _ = published
    with diced.Store.chain(base, tmp_path / "second") as again:
        assert again.open_repo("fly").keyvalue("kv")["a"] == b"base-a"


def test_ordered_scan_kept_only_when_both_layers_have_it(chained, published):
    store, _ = chained
    base, _ = published
    assert store.backend.capabilities.ordered_scan == (not base.startswith("file://"))
    assert store.backend.capabilities.atomic_update


def test_reopen_by_local_path_in_a_new_process(chained, tmp_path):
    store, uuids = chained
    repo = store.open_repo("fly", version=uuids["root"])
    repo.newversion("edit")
    repo.array("gray")[:, :, :4] = 42
    head = repo.commit("edit").uuid
    store.close()
    code = (
        "import sys, numpy as np, diced\n"
        f"s = diced.Store({str(tmp_path / 'local.diced')!r}, create=False)\n"
        "assert s.is_chained\n"
        f"a = s.open_repo('fly', version={head!r}).array('gray')\n"
        "assert (a[:, :, :4] == 42).all() and int(a[:, :, 4:].sum()) > 0\n"
        "assert s.verify().ok\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True,
                         env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_export_of_a_chained_version(chained, tmp_path):
    pytest.importorskip("zarr")
    from diced.export import export_zarr

    store, uuids = chained
    repo = store.open_repo("fly", version=uuids["root"])
    repo.newversion("edit")
    gray = repo.array("gray")
    gray[:2] = 9
    export_zarr(gray, tmp_path / "out.zarr", progress=False)
    import zarr

    got = np.asarray(zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["0"])
    expect = _gray()
    expect[:2] = 9
    np.testing.assert_array_equal(got, expect)


def test_chain_errors(published, tmp_path):
    base, _ = published
    with pytest.raises(StoreNotFoundError):
        diced.Store.chain(tmp_path / "nowhere", tmp_path / "l1")
    with pytest.raises(InvalidArgumentError):
        diced.Store.chain(base, base)
    other = tmp_path / "other.diced"
    diced.Store(other).close()
    with pytest.raises(StoreLocationError, match="not empty"):
        diced.Store.chain(base, other)
    diced.Store.chain(base, tmp_path / "l2").close()
    diced.Store.chain(base, tmp_path / "l2").close()  # the same pair again: fine
    with pytest.raises(StoreLocationError, match="already a chained store"):
        diced.Store.chain(other, tmp_path / "l2")


def test_base_gone_is_a_clear_error(tmp_path):
    base = tmp_path / "base.diced"
    _publish(str(base))
    diced.Store.chain(base, tmp_path / "local").close()
    import shutil

    shutil.rmtree(base)
    with pytest.raises((StoreNotFoundError, OSError)):
        diced.Store(tmp_path / "local")


def test_base_is_opened_read_only(chained):
    store, _ = chained
    from diced.backends.chain import ChainedBackend

    chain = store.raw_backend
    assert isinstance(chain, ChainedBackend)
    with pytest.raises(ReadOnlyStoreError):
        chain.base.set("meta/x", b"1")


def test_cli_chain(published, tmp_path, capsys):
    base, uuids = published
    local = str(tmp_path / "cli-local.diced")
    assert cli_main(["chain", base, local]) == 0
    out = capsys.readouterr().out
    assert "chained store over" in out and "fly" in out
    assert cli_main(["branch", local, "fly", "review", "--from", uuids["root"]]) == 0
    capsys.readouterr()
    with diced.Store(local) as s:
        assert "review" in s.open_repo("fly").branches()
    assert cli_main(["info", local]) == 0
    assert "fly" in capsys.readouterr().out
    assert cli_main(["chain", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert "no store" in capsys.readouterr().err


def _voxel_writer(local: str, version: str, row: int, n: int) -> None:
    store = diced.Store(local)
    arr = store.open_repo("fly", version=version).array("gray")
    for i in range(n):
        arr[row, i, 0] = 255  # every write a read-modify-write of the same base chunk
    store.close()


def test_processes_writing_one_chunk_through_a_chain_lose_nothing(published, tmp_path):
    import multiprocessing

    base, uuids = published
    local = str(tmp_path / "local.diced")
    with diced.Store.chain(base, local) as store:
        repo = store.open_repo("fly", version=uuids["root"])
        head = repo.newversion("shared").uuid
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_voxel_writer, args=(local, head, row, 24)) for row in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    with diced.Store(local) as store:
        got = store.open_repo("fly", version=head).array("gray")[:]
    expect = _gray()
    expect[1:3, :24, 0] = 255
    np.testing.assert_array_equal(got, expect)


def test_chain_over_an_s3_bucket(s3_emulator, tmp_path):
    """The published base is a bucket (moto's S3 server): read through, edit locally."""
    import uuid

    base = f"s3://{s3_emulator.bucket}/{uuid.uuid4().hex}"
    uuids = _publish(base)
    before = _dump(base)
    with diced.Store.chain(base, tmp_path / "local",
                           layer_options={"s3": s3_emulator.options}) as store:
        assert not store.backend.capabilities.ordered_scan  # manifests, as on S3 itself
        repo = store.open_repo("fly", version=uuids["root"])
        np.testing.assert_array_equal(repo.array("gray")[:], _gray())
        repo.branch("local")
        repo.array("gray")[:, :8] = 0
        repo.labels("seg")[:8] = 3
        repo.commit("local")
        got = repo.array("gray")[:]
        assert (got[:, :8] == 0).all() and (got[:, 8:] == _gray()[:, 8:]).all()
        assert set(np.unique(repo.labels("seg")[:])) == {0, 3, 7, 8}
        repo.delete_instance("kv")
        assert store.verify().ok
    assert _dump(base) == before


def test_a_chain_can_be_the_base_of_another(published, tmp_path):
    base, uuids = published
    with diced.Store.chain(base, tmp_path / "mid") as mid:
        repo = mid.open_repo("fly", version=uuids["root"])
        repo.newversion("mid")
        repo.array("gray")[:1] = 1
        mid_v = repo.commit("mid").uuid
    with diced.Store.chain(tmp_path / "mid", tmp_path / "top") as top:
        repo = top.open_repo("fly", version=mid_v)
        repo.newversion("top")
        repo.array("gray")[1:2] = 2
        got = repo.array("gray")[:3]
        assert (got[0] == 1).all() and (got[1] == 2).all() and (got[2] == _gray()[2]).all()
    with diced.Store(tmp_path / "mid") as mid:  # the middle layer was not written
        assert (mid.open_repo("fly", version=mid_v).array("gray")[1] == _gray()[1]).all()
        assert len(mid.open_repo("fly").versions()) == 3
