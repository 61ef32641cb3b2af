"""DICED compatibility: the README's three scenarios as written, and DICED's own unit tests
(``diced/tests/``, see docs/diced-braid-clients.md Part A.6) where they make sense without a
DVID server."""

from __future__ import annotations

import json
import os
import uuid

import numpy
import numpy as np
import pytest

import diced
from diced import ArrayDtype, DicedStore
from diced.errors import (
    DicedError,
    DuplicateNameError,
    IndexOutOfBoundsError,
    InvalidArgumentError,
    LockedNodeError,
    NotFoundError,
    RepoNotFoundError,
    UnlockedNodeError,
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """``~`` is a fresh directory, so the README's ``~/myrepo.diced`` can run as written."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def store(home):
    s = DicedStore(str(home / "test.diced"))
    yield s
    s._shutdown_store()


# -- the README scenarios -----------------------------------------------------------------


def scenario_1(store):
    repo = store.create_repo("firstrepo", "My first repo")
    arr = repo.create_array("arrayname", ArrayDtype.uint16)  # default 3D array
    arr[0:1, 0:1, 0:5] = numpy.array([[[3, 2, 4, 1, 6]]])
    val = arr[0, 0, 0]  # val = 3
    assert val == 3 and type(val) is int
    return repo, arr


def scenario_3(repo, arr):
    repo.lock_node("finished work")  # can no longer write to data
    locked = repo.get_current_version()
    with pytest.raises(LockedNodeError):
        arr[0:1, 0:1, 0:5] = numpy.array([[[9, 9, 9, 9, 9]]])
    repo.create_branch("new branch from locked node")  # can only branch from locked node
    arr[0:1, 0:1, 0:5] = numpy.array([[[4, 2, 4, 1, 6]]])
    val = arr[0, 0, 0]  # val = 4 only in this version
    assert val == 4
    assert repo.get_current_version() != locked
    old = repo.version(locked).array("arrayname")  # a plain diced array: .abs for DVID coords
    assert old.abs[0, 0, 0] == 3 and list(old.abs[0, 0, 0:5]) == [3, 2, 4, 1, 6]
    assert list(repo.get_array("arrayname")[0:1, 0:1, 0:5].ravel()) == [4, 2, 4, 1, 6]
    assert [note for _, note in repo.get_commit_log()] == ["finished work", "(open node)"]


def test_scenario_1_and_3_local(home):
    store = DicedStore("~/myrepo.diced")  # location of diced repo
    repo, arr = scenario_1(store)
    assert (home / "myrepo.diced").is_dir()
    scenario_3(repo, arr)
    store._shutdown_store()
    # everything is still there for the next session
    again = DicedStore("~/myrepo.diced")
    repo = again.open_repo("firstrepo")
    assert repo.get_array("arrayname")[0, 0, 0] == 4
    assert len(repo.get_commit_log()) == 2
    again._shutdown_store()


def test_scenario_2_gcs(gcs_emulator):
    # DiceStore("mybucketname", permissionfile="path/to/my/key.json"): the emulator takes
    # an anonymous token in place of a key file
    store = DicedStore(f"{gcs_emulator.bucket}/{uuid.uuid4().hex}", permissionfile="anon")
    assert store.location.startswith(("gs://", f"{gcs_emulator.bucket}/"))
    repo, arr = scenario_1(store)
    scenario_3(repo, arr)
    # the form with explicit storage options reaches the same data
    url = f"gs://{store.location.split('://', 1)[-1]}"
    other = DicedStore(url, permissionfile=None, **gcs_emulator.options)
    repo2 = other.open_repo("firstrepo")
    assert repo2.get_array("arrayname")[0, 0, 0] == 4
    root = repo2.get_commit_log()[0][0]
    assert repo2.version(root).array("arrayname").abs[0, 0, 0] == 3


def test_dvid_urls_are_refused(home):
    with pytest.raises(InvalidArgumentError):
        DicedStore("dvid://127.0.0.1", port=8000)


# -- test_DicedStore.py ---------------------------------------------------------------------


def test_repos(store):
    assert store.port == 8000 and store.rpcport == 8001
    store.create_repo("myrepo")
    with pytest.raises(DicedError):  # duplicate names are rejected
        store.create_repo("myrepo")
    store.create_repo("myrepo2")
    assert len(store.list_repos()) == 2
    store.delete_repo("myrepo2")
    assert [alias for alias, _ in store.list_repos()] == ["myrepo"]
    uuid_ = store.get_repouuid("myrepo")
    assert store.list_repos() == [("myrepo", uuid_)]
    assert store.open_repo("myrepo").get_current_version() == uuid_
    assert store.open_repo(uuid=uuid_).get_current_version() == uuid_
    with pytest.raises(RepoNotFoundError):
        store.get_repouuid("myrepo2")
    with pytest.raises(DicedError):
        store.open_repo("myrepo2")


# -- test_DicedRepo.py --------------------------------------------------------------------


def test_repoversion(store):
    store.create_repo("myrepo")
    repo = store.open_repo("myrepo")
    root = store.get_repouuid("myrepo")
    assert repo.get_current_version() == root
    with pytest.raises(DicedError):  # branching an open node
        repo.create_branch("branch")
    with pytest.raises(UnlockedNodeError):
        repo.create_branch("branch")
    repo.lock_node("now done")
    child = repo.create_branch("branch")
    assert child != root and repo.get_current_version() == child
    repo2 = store.open_repo(uuid=child)
    assert repo2.get_current_version() == child
    assert repo.get_commit_log() == [(root, "now done"), (child, "(open node)")]
    assert store.open_repo(uuid=child[:8]).get_commit_log() == repo.get_commit_log()
    repo.change_version(root)
    assert repo.head.locked
    repo.change_version(child[:6])  # a prefix of any UUID of the DAG
    assert not repo.head.locked
    with pytest.raises(DicedError):
        repo.change_version("zz-not-a-version")
    with pytest.raises(DicedError):  # a node is locked once
        repo.change_version(root)
        repo.lock_node("again")
    # a second branch from the same locked node is a sibling, not an error
    repo.change_version(root)
    sibling = repo.create_branch("second")
    assert sibling not in (root, child)
    assert repo.version(sibling).parents == [root]


def test_files(store):
    store.create_repo("myrepo")
    repo = store.open_repo("myrepo")
    repo.upload_filedata("foo", "hello")
    assert repo.download_filedata("foo") == b"hello"
    repo.upload_filedata("foo", b"world")  # overwrite
    assert repo.download_filedata("foo") == b"world"
    repo.upload_filedata("bar", b"\x00\x01")
    assert sorted(repo.list_files()) == ["bar", "foo"]
    with pytest.raises(DicedError):
        repo.download_filedata("nothing")
    with pytest.raises(NotFoundError):
        repo.download_filedata("nothing")
    root = repo.get_current_version()
    repo.lock_node("lock")
    with pytest.raises(DicedError):
        repo.upload_filedata("foo", b"locked")
    repo.create_branch("branch")
    repo.upload_filedata("foo", b"child")
    repo.delete_file("bar")
    assert repo.download_filedata("foo") == b"child" and repo.list_files() == ["foo"]
    repo.change_version(root)
    assert repo.download_filedata("foo") == b"world"
    assert sorted(repo.list_files()) == ["bar", "foo"]


def test_array_instances(store):
    store.create_repo("myrepo")
    repo = store.open_repo("myrepo")
    a3 = repo.create_array("arr3", ArrayDtype.uint8)
    a2 = repo.create_array("arr2", ArrayDtype.uint16, dims=2)
    repo.create_array("arr1", ArrayDtype.uint32, dims=1)
    assert a3.get_numdims() == 3 and a2.get_numdims() == 2
    assert repo.get_array("arr2").get_numdims() == 2
    assert repo.get_array("arr1").get_numdims() == 1
    assert sorted(repo.list_instances()) == ["arr1", "arr2", "arr3"]
    hidden = repo.list_instances(showhidden=True)
    assert len(hidden) == 5 and {n for n, _ in hidden} >= {".meta", ".files"}
    repo.delete_array("arr1")
    assert sorted(repo.list_instances()) == ["arr2", "arr3"]
    with pytest.raises(DicedError):
        repo.get_array("arr1")
    repo.create_array("arr1", ArrayDtype.uint8, lossycompression=True)  # re-create
    assert sorted(repo.list_instances()) == ["arr1", "arr2", "arr3"]
    # a keyvalue made by someone else shows in the hidden list only
    repo.create_keyvalue("foreign")
    assert "foreign" not in repo.list_instances()
    assert ("foreign", "keyvalue") in repo.list_instances(showhidden=True)
    with pytest.raises(DicedError):  # not an array
        repo.get_array("foreign")
    # .meta/restrictions hides instances
    repo[".meta"]["restrictions"] = json.dumps(["arr2"])
    assert sorted(repo.list_instances()) == ["arr1", "arr3"]
    # error cases
    with pytest.raises(DuplicateNameError):
        repo.create_array("arr3", ArrayDtype.uint8)
    with pytest.raises(InvalidArgumentError):
        repo.create_array("arr4", ArrayDtype.uint8, dims=4)
    with pytest.raises(InvalidArgumentError):
        repo.create_array("lab", ArrayDtype.uint8, islabel3D=True)
    with pytest.raises(InvalidArgumentError):
        repo.create_array("lab", ArrayDtype.uint64, dims=2, islabel3D=True)
    with pytest.raises(DicedError):
        repo.get_array("nothing")
    # arrays fetched at a locked node report it
    repo.lock_node("done")
    assert repo.get_array("arr3").locked
    with pytest.raises(LockedNodeError):
        repo.create_array("late", ArrayDtype.uint8)


def test_readonly_repo_does_not_create_meta(store):
    store.create_repo("myrepo")
    repo = store.open_repo("myrepo", readonly=True)
    assert repo.readonly


# -- test_DicedArray.py -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [ArrayDtype.uint16, ArrayDtype.uint32, ArrayDtype.uint64])
def test_newdvidinstances(store, dtype):
    store.create_repo("myrepo")
    repo = store.open_repo("myrepo")
    arr = repo.create_array("arr", dtype)
    assert arr.get_extents() == (slice(0, 0), slice(0, 0), slice(0, 0))
    assert arr.dtype == np.dtype(dtype.value)
    data = np.random.default_rng(1).integers(0, 60000, size=(400, 200, 100)).astype(dtype.value)
    arr[1:401, 2:202, 3:103] = data
    assert np.array_equal(arr[1:401, 2:202, 3:103], data)
    assert arr[0, 0, 0] == 0 and arr[401, 202, 103] == 0
    assert arr.get_extents() == (slice(0, 448), slice(0, 256), slice(0, 128))


def test_arraysmall_labels(store):
    store.create_repo("myrepo")
    repo = store.open_repo("myrepo")
    arr = repo.create_array("labels", ArrayDtype.uint64, islabel3D=True)
    data = np.random.default_rng(2).integers(0, 5, size=(400, 200, 100)).astype(np.uint64)
    data[0, 0, 0] = 2**64 - 1
    arr[1:401, 2:202, 3:103] = data
    assert np.array_equal(arr[1:401, 2:202, 3:103], data)
    assert arr.get_extents() == (slice(0, 448), slice(0, 256), slice(0, 128))
    # negative numbers are absolute coordinates: the extents grow to -64
    assert arr[-3, -1, 4] == 0
    arr[-3, -1, 4] = 7
    assert arr[-3, -1, 4] == 7
    assert arr.get_extents() == (slice(-64, 448), slice(-64, 256), slice(0, 128))
    arr[5:6, 5:6, 5:7] = np.array([[[8, 9]]], dtype=np.uint64)
    assert arr[5:6, 5:6, 5:7].tolist() == [[[8, 9]]]
    assert arr[np.int64(5), 5, 6] == 9  # numpy integers work too (DICED refused them)
    with pytest.raises(DicedError):
        arr[0, 0]
    with pytest.raises(DicedError):
        arr[0:2, 0:2]
    with pytest.raises(DicedError):
        arr[0, 0, 0, 0]
    with pytest.raises(DicedError):
        arr[0:, 0:1, 0:1]  # DICED slices need both ends
    with pytest.raises(IndexOutOfBoundsError):
        arr[2**31, 0, 0]
    with pytest.raises(IndexOutOfBoundsError):
        arr[-(2**31) - 1, 0, 0]


def test_array1d2d(store):
    store.create_repo("myrepo")
    repo = store.open_repo("myrepo")
    a2 = repo.create_array("arr2", ArrayDtype.uint8, dims=2)
    data2 = (np.arange(300 * 200) % 256).astype(np.uint8).reshape(300, 200)
    a2[0:300, 0:200] = data2
    assert np.array_equal(a2[0:300, 0:200], data2)
    assert a2.get_extents() == (slice(0, 512), slice(0, 512))
    a1 = repo.create_array("arr1", ArrayDtype.uint8, dims=1)
    data1 = (np.arange(1000) % 256).astype(np.uint8)
    a1[0:1000] = data1
    assert np.array_equal(a1[0:1000], data1)
    assert a1[999] == 999 % 256 and type(a1[999]) is int
    assert a1.get_extents() == slice(0, 262144)  # a bare slice in 1D
    a1[-5:0] = np.arange(5, dtype=np.uint8)
    assert a1.get_extents() == slice(-262144, 262144)
    for bad in [(0, 0), (slice(0, 1), slice(0, 1))]:
        with pytest.raises(DicedError):
            a1[bad]
    for bad in [(0,), (0, 0, 0), (slice(0, 1),)]:
        with pytest.raises(DicedError):
            a2[bad]


def _large(store, shape):
    store.create_repo("myrepo")
    repo = store.open_repo("myrepo")
    arr = repo.create_array("large", ArrayDtype.uint8)
    z = np.arange(shape[0], dtype=np.uint8)[:, None, None]
    y = np.arange(shape[1], dtype=np.uint8)[None, :, None]
    x = np.arange(shape[2], dtype=np.uint8)[None, None, :]
    data = z * np.uint8(3) + y * np.uint8(5) + x  # wraps: a cheap, non-trivial pattern
    arr[0:shape[0], 0:shape[1], 0:shape[2]] = data
    back = arr[0:shape[0], 0:shape[1], 0:shape[2]]
    assert np.array_equal(back, data)
    assert arr[shape[0], shape[1], shape[2]] == 0  # beyond the data
    ext = arr.get_extents()
    assert all(s.start % 64 == 0 and s.stop % 64 == 0 for s in ext)
    assert ext == tuple(slice(0, -(-n // 64) * 64) for n in shape)


def test_arraylarge_scaled_down(store):
    # DICED's test is 1400 x 1200 x 1000 (1.7 GB); the same path at 1/40 of the volume
    _large(store, (350, 300, 400))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DICED_SLOW"), reason="set DICED_SLOW=1 (1.7 GB, minutes)")
def test_arraylarge_full_size(store):
    _large(store, (1400, 1200, 1000))


# -- diced's own additions over DICED ------------------------------------------------------


def test_compat_objects_are_diced_objects(store):
    repo = store.create_repo("myrepo")
    assert isinstance(store, diced.Store) and isinstance(repo, diced.Repo)
    arr = repo.create_array("a", ArrayDtype.uint8)
    assert isinstance(arr, diced.VersionedArray)
    assert diced.DicedException is DicedError
    assert [m.name for m in ArrayDtype] == ["uint8", "uint16", "uint32", "uint64"]


def test_create_branch_twice_from_one_locked_node(store):
    repo = store.create_repo("myrepo")
    arr = repo.create_array("a", ArrayDtype.uint8)
    arr[0:1, 0:1, 0:1] = np.array([[[1]]], np.uint8)
    repo.lock_node("root")
    root = repo.get_current_version()
    first = repo.create_branch("one")
    arr[0:1, 0:1, 0:1] = np.array([[[2]]], np.uint8)
    repo.change_version(root)
    second = repo.create_branch("two")
    arr[0:1, 0:1, 0:1] = np.array([[[3]]], np.uint8)
    assert repo.version(first).array("a").abs[0, 0, 0] == 2
    assert repo.version(second).array("a").abs[0, 0, 0] == 3
    assert repo.version(root).array("a").abs[0, 0, 0] == 1
