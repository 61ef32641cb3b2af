"""Reopening a repo puts the head where it was left; ``exist_ok=True`` makes creation
idempotent (re-running a notebook cell)."""

from __future__ import annotations

import pytest

import diced
from diced.errors import DuplicateNameError, LockedNodeError


def _reopen(store_location, alias="fly"):
    return diced.Store(store_location, **store_location.options).open_repo(alias)


@pytest.mark.parametrize("move", ["branch", "checkout", "newversion", "merge", "commit"])
def test_reopen_lands_on_the_last_head(store_location, store, move):
    repo = store.create_repo("fly")
    arr = repo.create_array("a", "uint8", (4, 4), chunks=(2, 2))
    arr[0, 0] = 1
    first = repo.commit("first")
    if move == "branch":
        want = repo.branch("feature")
    elif move == "checkout":
        repo.branch("feature")
        repo.commit("f")
        want = repo.checkout(first.uuid)
    elif move == "newversion":
        want = repo.newversion("second")
    elif move == "merge":
        a = repo.branch("a")
        repo.commit("a")
        repo.checkout(first.uuid)
        b = repo.branch("b")
        repo.commit("b")
        want = repo.merge(a.uuid, b.uuid)
    else:  # commit on a branch: the head stays on the locked branch version
        repo.branch("feature")
        want = repo.commit("feature done")
    again = _reopen(store_location)
    assert again.current_uuid == want.uuid
    assert again.head.branch == want.branch


def test_explicit_version_and_uuid_still_win(store_location, store):
    repo = store.create_repo("fly")
    root = repo.commit("root")
    repo.branch("feature")
    s2 = diced.Store(store_location, **store_location.options)
    assert s2.open_repo("fly", version="master").current_uuid == root.uuid
    assert s2.open_repo(uuid=root.uuid).current_uuid == root.uuid
    # opening somewhere explicitly does not move the stored head
    assert s2.open_repo("fly").head.branch == "feature"


def test_stored_head_that_vanished_falls_back_to_master(store_location, store):
    from diced.repo import keys as K

    repo = store.create_repo("fly")
    repo.commit("root")
    repo.branch("feature")
    store.backend.set(K.head_key(repo.uuid), b"f" * 32)
    assert _reopen(store_location).current_uuid == repo.root.uuid


def test_delete_repo_forgets_its_head(store):
    from diced.repo import keys as K

    repo = store.create_repo("fly")
    repo.commit("root")
    repo.branch("feature")
    store.delete_repo("fly")
    assert store.backend.get(K.head_key(repo.uuid)) is None
    assert store.create_repo("fly").head.branch == "master"


def test_create_repo_exist_ok(store):
    repo = store.create_repo("fly", "first")
    repo.commit("root")
    repo.branch("feature")
    again = store.create_repo("fly", "first", exist_ok=True)
    assert again.uuid == repo.uuid and again.head.branch == "feature"
    with pytest.raises(DuplicateNameError):
        store.create_repo("fly")
    with pytest.raises(DuplicateNameError, match="root"):
        store.create_repo("fly", uuid="0" * 32, exist_ok=True)
    fresh = store.create_repo("new", exist_ok=True)
    assert fresh.alias == "new"


def test_create_instances_exist_ok(store):
    repo = store.create_repo("fly")
    arr = repo.create_array("img", "uint16", (10, 10), chunks=(4, 4), fill_value=3)
    arr[0, 0] = 9
    labels = repo.create_labels("seg", (16, 16, 16), chunks=(8, 8, 8))
    kv = repo.create_keyvalue("kv")
    # the same cell again: the existing instances come back, data intact
    again = repo.create_array("img", "uint16", (10, 10), chunks=(4, 4), fill_value=3,
                              exist_ok=True)
    assert again.name == "img" and again[0, 0] == 9
    assert repo.create_labels("seg", (16, 16, 16), chunks=(8, 8, 8), exist_ok=True).name == "seg"
    assert repo.create_keyvalue("kv", exist_ok=True).name == kv.name
    # a different configuration or type is a clear error, nothing changes
    for bad in [{"dtype": "uint8"}, {"shape": (10, 11)}, {"fill_value": 0},
                {"chunks": (2, 2)}]:
        kw = {"dtype": "uint16", "shape": (10, 10), "chunks": (4, 4), "fill_value": 3} | bad
        with pytest.raises(DuplicateNameError, match="different configuration"):
            repo.create_array("img", exist_ok=True, **kw)
    with pytest.raises(DuplicateNameError, match="type 'labels'"):
        repo.create_array("seg", "uint64", (16, 16, 16), exist_ok=True)
    with pytest.raises(DuplicateNameError):
        repo.create_array("img", "uint16", (10, 10), chunks=(4, 4), fill_value=3)
    assert sorted(repo.instances()) == ["img", "kv", "seg"]
    # after a commit the cell still re-runs (the head is locked, but nothing is created)
    repo.commit("done")
    assert repo.create_array("img", "uint16", (10, 10), chunks=(4, 4), fill_value=3,
                             exist_ok=True)[0, 0] == 9
    with pytest.raises(LockedNodeError):
        repo.create_array("other", "uint8", (2, 2), exist_ok=True)
    assert labels.name == "seg"


def test_exist_ok_instance_on_another_branch(store):
    repo = store.create_repo("fly")
    root = repo.commit("root")
    repo.branch("a")
    repo.create_array("img", "uint8", (4, 4))
    repo.checkout(root.uuid)
    repo.branch("b")
    with pytest.raises(DuplicateNameError, match="another branch"):
        repo.create_array("img", "uint8", (4, 4), exist_ok=True)


def test_exist_ok_with_a_nan_fill_value(store):
    repo = store.create_repo("fly")
    a = repo.create_array("f", "float32", (4, 4), fill_value=float("nan"))
    assert repo.create_array("f", "float32", (4, 4), fill_value=float("nan"),
                             exist_ok=True).name == a.name
