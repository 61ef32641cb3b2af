"""Versioning semantics of Store/Repo/Version on every backend: the DAG, refs, copy-on-write,
tombstones, merge, diff, persistence, and errors that leave the store unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import diced
from diced import errors
from diced.errors import (
    AmbiguousVersionError,
    CorruptMetadataError,
    DtypeError,
    DuplicateNameError,
    IndexOutOfBoundsError,
    InstanceNotFoundError,
    InvalidArgumentError,
    LockedNodeError,
    MergeConflictError,
    RepoNotFoundError,
    ShapeMismatchError,
    UnlockedNodeError,
    VersionNotFoundError,
)
from diced.repo import keys as K
from diced.repo.merge import Conflict


def snapshot(store, skip=()) -> dict[str, bytes | None]:
    """Every key and value of the store's backend (to prove that nothing changed)."""
    keys = [k for k in store.backend.list_keys("") if not k.startswith(tuple(skip))]
    return dict(zip(keys, store.backend.get_many(keys), strict=True))



@pytest.fixture
def repo(store):
    return store.create_repo("fly", "a test repo")


def _img(repo, name="img", shape=(8, 8), chunks=(4, 4), dtype="uint8"):
    return repo.create_array(name, dtype, shape, chunks=chunks)


# -- the version DAG ----------------------------------------------------------------------


def test_new_repo(store, repo):
    assert store.list_repos() == [("fly", repo.uuid)]
    assert repo.alias == "fly" and repo.description == "a test repo"
    assert repo.current_uuid == repo.uuid == repo.root.uuid
    assert len(repo.uuid) == 32 and int(repo.uuid, 16) >= 0
    assert not repo.head.locked
    assert [v.uuid for v in repo.versions()] == [repo.uuid]
    assert list(repo.branches()) == ["master"]
    assert repo.tags() == {}
    assert repo.instances() == {}


def test_commit_note_and_log(repo):
    v = repo.commit("first import", ["line one", "line two"])
    assert v.uuid == repo.uuid and v.locked and v.note == "first import"
    assert len(v.log) == 2
    assert v.log[0].endswith("  line one") and v.log[1].endswith("  line two")
    assert repo.head.locked
    assert repo.version(v.uuid).note == "first import"
    with pytest.raises(LockedNodeError):
        repo.commit("again")
    assert repo.version(v.uuid).note == "first import"


def test_children_only_from_locked_versions(store, repo):
    before = snapshot(store)
    with pytest.raises(UnlockedNodeError):
        repo.newversion("child")
    with pytest.raises(UnlockedNodeError):
        repo.branch("b1")
    with pytest.raises(UnlockedNodeError):
        repo.tag("t1")
    assert snapshot(store) == before
    assert len(repo.versions()) == 1
    repo.commit("root")
    child = repo.newversion("child")
    assert child.parents == [repo.uuid]
    assert repo.current_uuid == child.uuid and not child.locked
    assert child.note == "child" and child.branch == "master"
    assert repo.version(repo.uuid).children == [child.uuid]
    with pytest.raises(UnlockedNodeError):  # merge parents must be locked too
        repo.merge(repo.uuid, child.uuid)


def test_newversion_twice_from_one_node(repo):
    root = repo.commit("root")
    repo.newversion("first")
    with pytest.raises(DuplicateNameError):
        repo.newversion("second", parent=root.uuid)
    assert len(repo.versions()) == 2
    fork = repo.branch("side", parent=root.uuid)  # a named branch is fine
    assert fork.branch == "side" and fork.parents == [root.uuid]


def test_branch_names(repo):
    root = repo.commit("root")
    b = repo.branch("proofreading", "start proofreading")
    assert b.branch == "proofreading" and repo.current_uuid == b.uuid
    with pytest.raises(DuplicateNameError):
        repo.branch("proofreading", parent=root.uuid)
    with pytest.raises(InvalidArgumentError):
        repo.branch("master", parent=root.uuid)
    for bad in ["", "a b", "x/y", "log", 3]:
        with pytest.raises(InvalidArgumentError):
            repo.branch(bad, parent=root.uuid)
    assert set(repo.branches()) == {"master", "proofreading"}
    assert repo.branches()["proofreading"].uuid == b.uuid
    assert repo.branches()["master"].uuid == root.uuid
    assert repo.version(branch="proofreading").uuid == b.uuid
    assert repo.version("proofreading").uuid == b.uuid


def test_tags(repo):
    arr = _img(repo)
    arr[...] = 3
    root = repo.commit("root")
    t = repo.tag("v1.0", "release")
    assert t.uuid == "v1.0" and t.tag == "v1.0" and t.locked and t.parents == [root.uuid]
    assert repo.current_uuid == root.uuid  # tagging does not move the head
    assert repo.tags() == {"v1.0": t}
    assert repo.version(tag="v1.0") == t == repo.version("v1.0")
    pinned = repo.version(tag="v1.0").array("img")
    assert (pinned[...] == 3).all()
    with pytest.raises(LockedNodeError):
        pinned[0, 0] = 1
    with pytest.raises(DuplicateNameError):
        repo.tag("v1.0")
    with pytest.raises(VersionNotFoundError):
        repo.version(tag="v2.0")
    # tags are not branches, and the branch continues past a tag
    assert set(repo.branches()) == {"master"}
    child = repo.newversion("after the tag")
    assert child.parents == [root.uuid]


def test_uuid_prefixes_and_ambiguity(repo):
    uuids = [repo.uuid]
    while len({u[0] for u in uuids}) == len(uuids):  # until two share a first character
        repo.commit(f"v{len(uuids)}")
        uuids.append(repo.newversion().uuid)
    counts = {c: sum(u[0] == c for u in uuids) for c in {u[0] for u in uuids}}
    shared = next(c for c, n in counts.items() if n > 1)
    with pytest.raises(AmbiguousVersionError) as exc:
        repo.version(shared)
    assert exc.value.code == "ambiguous_version"
    with pytest.raises(AmbiguousVersionError):
        repo.checkout(shared.upper())
    for u in uuids:
        n = 1
        while sum(v.startswith(u[:n]) for v in uuids) > 1:
            n += 1
        assert repo.version(u[:n]).uuid == u
        assert repo.version(u[:n].upper()).uuid == u
        assert repo.version(u).uuid == u
    missing = next(f"{c}{'0' * 31}" for c in "0123456789abcdef"
                   if not any(u.startswith(f"{c}{'0' * 31}") for u in uuids))
    for bad in [missing, "nonexistent", "g123"]:
        with pytest.raises(VersionNotFoundError):
            repo.version(bad)
    with pytest.raises(InvalidArgumentError):
        repo.version("")
    with pytest.raises(InvalidArgumentError):
        repo.version(uuids[0], tag="x")


def test_branch_tilde(repo):
    a = repo.commit("a")
    b = repo.newversion("b")
    repo.commit()
    c = repo.newversion("c")
    repo.commit()
    side = repo.branch("side", parent=b.uuid)
    assert repo.version("master~0") == c
    assert repo.version("master~1") == b
    assert repo.version("master~2") == a
    assert repo.version("side~0") == side
    assert repo.version("side~1") == b
    assert repo.version("side~2") == a
    with pytest.raises(VersionNotFoundError):
        repo.version("master~3")
    with pytest.raises(InvalidArgumentError):
        repo.version("master~x")
    assert [v.uuid for v in repo.log(c.uuid)] == [a.uuid, b.uuid, c.uuid]
    assert [v.uuid for v in repo.log()] == [a.uuid, b.uuid, side.uuid]


def test_history_follows_first_parents_through_merges(repo):
    a = repo.commit("a")
    f1 = repo.branch("f1")
    f1 = repo.commit("f1")
    f2 = repo.branch("f2", parent=a.uuid)
    f2 = repo.commit("f2")
    m = repo.merge(f2.uuid, f1.uuid, note="f1 into f2")
    assert m.branch == "f2" and repo.head == m
    # merging two feature branches moves neither master nor the second parent's branch
    branches = repo.branches()
    assert branches["master"] == a and branches["f1"] == f1 and branches["f2"] == m
    # ~N follows first parents (git): f2~1 is f2's own previous version, not f1
    assert [repo.version(f"f2~{n}") for n in range(3)] == [m, f2, a]
    with pytest.raises(VersionNotFoundError):
        repo.version("f2~3")
    assert repo.log() == [a, f2, m]
    repo.commit("m")
    m2 = repo.merge(f1.uuid, m.uuid, note="back into f1")
    assert m2.branch == "f1" and repo.branches()["f1"] == m2
    assert [repo.version(f"f1~{n}") for n in range(3)] == [m2, f1, a]
    assert repo.branches()["f2"] == m and repo.branches()["master"] == a
    # continuing the merge node stays on its branch
    repo.commit("m2")
    nxt = repo.newversion()
    assert nxt.branch == "f1" and repo.version("f1~1") == m2


def test_merge_with_a_tag_first_continues_the_tagged_branch(repo):
    a = repo.commit("a")
    repo.tag("t1")
    side = repo.branch("side")
    side = repo.commit("side")
    m = repo.merge("t1", side.uuid)
    assert m.branch == "master" and repo.branches()["master"] == m
    assert repo.version("master~1").uuid == "t1" and repo.version("master~2") == a


def test_two_thousand_versions_without_recursion(store):
    """A long linear history (built in one metadata update) works end to end: ancestry,
    ``~N``, log, reads and writes at the leaf."""
    import time

    from diced.repo.dag import Node, new_uuid
    from diced.repo.history import bulk_append

    repo = store.create_repo("long")
    arr = repo.create_array("a", "uint8", (4,), chunks=(2,))
    arr[0] = 7
    repo.commit("root")
    n = 2000
    uuids = [new_uuid() for _ in range(n)]
    prev = repo.head.id
    nodes = []
    for i, u in enumerate(uuids):  # written as the operations write them, in one go
        nodes.append(Node(u, prev + 1, [prev], "", f"v{i}", [], locked=i < n - 1,
                          created=time.time(), updated=time.time()))
        prev += 1
    bulk_append(repo.backend, repo.uuid, nodes, refs={"master": prev})
    repo.refresh()
    leaf = repo.checkout(uuids[-1])
    assert repo.version("master") == leaf
    assert repo.version(f"master~{n}") == repo.root
    assert repo.version("master~1").uuid == uuids[-2]
    assert len(repo.log()) == n + 1
    assert len(repo.dag.ancestors(leaf.id)) == n + 1
    assert repo.dag.merge_bases([leaf.id, repo.dag.by_uuid[uuids[5]].id]) == [
        repo.dag.by_uuid[uuids[5]].id]
    arr = repo.array("a")
    assert arr[0] == 7
    arr[1] = 9
    assert list(arr[...]) == [7, 9, 0, 0]
    assert list(repo.version(uuids[100]).array("a")[...]) == [7, 0, 0, 0]
    d = repo.diff(uuids[0], leaf.uuid)
    assert d["a"].changed == [(0,)]


def test_dag_walks_are_iterative():
    """The pure DAG: a 5,000-deep history with a side branch merged back, far past Python's
    recursion limit."""
    from diced.repo.dag import DAG, Node

    n = 5000
    nodes = [Node(f"{i:032x}", i, [i - 1] if i else [], "", locked=True) for i in range(n)]
    nodes += [Node(f"{n + i:032x}", n + i, [n + i - 1 if i else 2500], "side", locked=True)
              for i in range(500)]
    nodes.append(Node(f"{n + 500:032x}", n + 500, [n + 499, n - 1], "side"))
    dag = DAG(nodes)
    top = n + 500
    assert len(dag.ancestors(top)) == n + 501
    assert len(dag.ancestors(n - 1)) == n
    assert dag.merge_bases([n - 1, n + 499]) == [2500]
    assert dag.merge_bases([top, n - 1]) == [n - 1]
    assert dag.branch_of(top) == "side" and dag.branch_leaf("side").id == top
    assert dag.branch_leaf("master").id == n - 1
    # side~N: first parents (the side branch, then master below its fork)
    assert dag.resolve("side~1").id == n + 499 and dag.resolve("side~501").id == 2500
    assert dag.resolve(f"master~{n - 1}").id == 0
    assert len(dag.first_parent_chain(top)) == 501 + 2501


def test_read_any_version_without_checkout(repo):
    arr = _img(repo)
    kv = repo.create_keyvalue("kv")
    seen = []
    for i in range(4):
        arr[i, :] = i + 1
        kv["step"] = str(i)
        seen.append(repo.commit(f"step {i}").uuid)
        repo.newversion()
    head = repo.current_uuid
    for i, u in enumerate(seen):
        ref = np.zeros((8, 8), np.uint8)
        for j in range(i + 1):
            ref[j, :] = j + 1
        assert np.array_equal(repo.version(u).array("img")[...], ref)
        assert np.array_equal(arr.at(u)[...], ref)
        assert repo.version(u)["kv"]["step"] == str(i).encode()
    assert repo.current_uuid == head  # reading moved nothing


def test_handles_follow_head_and_pinned_handles_stay(repo):
    arr = _img(repo)
    arr[0, 0] = 1
    root = repo.commit("root")
    pinned = repo.version(root.uuid).array("img")
    repo.branch("b")
    arr[0, 0] = 2  # the unpinned handle now writes to the branch
    assert pinned[0, 0] == 1 and arr[0, 0] == 2
    assert arr.version.uuid == repo.current_uuid and pinned.version == root
    repo.checkout(root.uuid)
    assert arr[0, 0] == 1 and arr.locked
    with pytest.raises(LockedNodeError):
        arr[0, 0] = 3
    repo.checkout(branch="b")
    assert arr[0, 0] == 2


def test_copy_on_write(repo):
    arr = _img(repo)
    arr[...] = np.arange(64, dtype=np.uint8).reshape(8, 8)
    parent = repo.commit("parent")
    before = arr[...].copy()
    repo.newversion()
    arr[1:3, 1:3] = 200
    assert np.array_equal(repo.version(parent.uuid).array("img")[...], before)
    ref = before.copy()
    ref[1:3, 1:3] = 200
    assert np.array_equal(arr[...], ref)
    # the child stored only the chunk it changed
    space = arr._space
    assert set(space.written_at(repo.head.id)) == {K.chunk_ckey((0, 0))}
    assert space.written_at(parent.id).keys() == {K.chunk_ckey(c) for c in
                                                  [(0, 0), (0, 1), (1, 0), (1, 1)]}


def test_deletes_are_tombstones(repo):
    kv = repo.create_keyvalue("kv")
    arr = _img(repo)
    kv["a"], kv["b"] = b"1", b"2"
    arr[...] = 9
    parent = repo.commit("parent")
    repo.newversion()
    del kv["a"]
    arr[0:4, 0:4] = 0  # a whole chunk back to fill: deleted at the child
    assert "a" not in kv and kv.keys() == ["b"]
    assert sorted(arr.stored_chunks()) == [(0, 1), (1, 0), (1, 1)]
    old = repo.version(parent.uuid)
    assert old["kv"]["a"] == b"1" and old["kv"].keys() == ["a", "b"]
    assert len(old["img"].stored_chunks()) == 4 and (old["img"][...] == 9).all()
    child = repo.commit("child")
    repo.newversion()
    kv["a"] = b"again"  # a key can come back after a tombstone
    assert kv["a"] == b"again"
    assert "a" not in repo.version(child.uuid)["kv"]


# -- instances --------------------------------------------------------------------------------


def test_instances_visible_from_creation_on(repo):
    _img(repo, "early")
    root = repo.commit("root")
    repo.newversion()
    _img(repo, "late")
    repo.create_keyvalue("notes")
    assert repo.instances() == {"early": "array", "late": "array", "notes": "keyvalue"}
    assert repo.instances(root.uuid) == {"early": "array"}
    assert "late" in repo and "late" not in repo.version(root.uuid).instances()
    with pytest.raises(InstanceNotFoundError):
        repo.version(root.uuid).array("late")
    with pytest.raises(InstanceNotFoundError):
        repo.array("nothing")
    with pytest.raises(KeyError):  # InstanceNotFoundError is a KeyError
        repo["nothing"]


def test_duplicate_instance_name(store, repo):
    _img(repo)
    before = snapshot(store, skip=["meta/counter/"])
    with pytest.raises(DuplicateNameError):
        _img(repo)
    with pytest.raises(DuplicateNameError):
        repo.create_keyvalue("img")
    assert snapshot(store, skip=["meta/counter/"]) == before
    repo.commit("root")
    repo.newversion()
    with pytest.raises(DuplicateNameError):  # names are unique across the whole repo
        repo.create_keyvalue("img")


def test_delete_instance(store, repo):
    arr = _img(repo)
    arr[...] = 1
    repo.commit("root")
    repo.newversion()
    arr[0, 0] = 2
    repo.delete_instance("img")
    assert repo.instances() == {}
    with pytest.raises(InstanceNotFoundError):
        repo.version(repo.root.uuid).array("img")
    assert list(store.backend.list_keys("d/")) == []
    assert list(store.backend.list_keys("w/")) == []
    with pytest.raises(InstanceNotFoundError):
        repo.delete_instance("img")


def test_bad_instance_names(store, repo):
    before = snapshot(store)
    for bad in ["", "a b", "a/b", "log", None]:
        with pytest.raises(InvalidArgumentError):
            repo.create_keyvalue(bad)
    assert snapshot(store) == before


# -- writes at locked versions ---------------------------------------------------------------


def test_writes_to_locked_version_store_nothing(store, repo):
    arr = _img(repo)
    kv = repo.create_keyvalue("kv")
    arr[...] = 5
    kv["k"] = b"v"
    repo.commit("locked")
    before = snapshot(store)
    attempts = [
        lambda: arr.__setitem__((0, 0), 1),
        lambda: arr.__setitem__(Ellipsis, np.zeros((8, 8), np.uint8)),
        lambda: arr.resize(16, 16),
        lambda: kv.__setitem__("k", b"w"),
        lambda: kv.update({"x": b"1"}),
        lambda: kv.delete("k"),
        lambda: _img(repo, "new"),
        lambda: repo.create_keyvalue("new"),
    ]
    for attempt in attempts:
        with pytest.raises(LockedNodeError):
            attempt()
    assert snapshot(store) == before
    assert (arr[...] == 5).all() and kv["k"] == b"v"


def test_stale_handle_cannot_write_after_lock(store, repo):
    arr = _img(repo)
    arr[0, 0] = 1
    other = store.open_repo("fly")  # a second handle with its own copy of the metadata
    stale = other.array("img")
    repo.commit("locked by the first handle")
    before = snapshot(store)
    with pytest.raises(LockedNodeError):
        stale[0, 0] = 2
    assert snapshot(store) == before
    assert repo.array("img")[0, 0] == 1


def test_stale_handle_merges_and_diffs_what_others_did(store, repo):
    repo.create_keyvalue("kv")["a"] = b"0"
    root = repo.commit("root")
    left = repo.branch("left")
    right = repo.branch("right", parent=root.uuid)
    stale = store.open_repo("fly")  # knows left and right as open versions without data
    other = store.open_repo("fly")
    for v, value in [(left, b"L"), (right, b"R")]:
        other.checkout(v.uuid)
        other.keyvalue("kv")["a"] = value
        other.create_keyvalue(f"new-{value.decode()}")[value.decode()] = value
        other.commit(f"edit {value.decode()}")
    with pytest.raises(MergeConflictError) as exc:
        stale.merge(left.uuid, right.uuid)
    assert [(c.instance, c.key) for c in exc.value.conflicts] == [("kv", "a")]
    d = stale.diff(left.uuid, right.uuid)
    assert d.created == ["new-R"] and d.deleted == ["new-L"] and d["kv"].changed == ["a"]
    stale.merge(left.uuid, right.uuid, strategy=1)
    assert stale.keyvalue("kv")["a"] == b"R"
    assert stale.keyvalue("new-L")["L"] == b"L" and stale.keyvalue("new-R")["R"] == b"R"


# -- bad arguments leave the store unchanged -------------------------------------------------


@pytest.mark.parametrize("kwargs, exc", [
    ({"dtype": "object", "shape": (4,)}, DtypeError),
    ({"dtype": "U4", "shape": (4,)}, DtypeError),
    ({"dtype": [("a", "u1")], "shape": (4,)}, DtypeError),
    ({"dtype": "no-such-type", "shape": (4,)}, DtypeError),
    ({"dtype": "uint8", "shape": ()}, InvalidArgumentError),
    ({"dtype": "uint8", "shape": (-1, 4)}, InvalidArgumentError),
    ({"dtype": "uint8", "shape": ("a",)}, InvalidArgumentError),
    ({"dtype": "uint8", "shape": None}, InvalidArgumentError),
    ({"dtype": "uint8", "shape": (4, 4), "chunks": (2,)}, InvalidArgumentError),
    ({"dtype": "uint8", "shape": (4, 4), "chunks": (0, 2)}, InvalidArgumentError),
    ({"dtype": "uint8", "shape": (4, 4), "chunks": (-2, 2)}, InvalidArgumentError),
    ({"dtype": "uint8", "shape": (4,), "chunks": (1 << 29,)}, InvalidArgumentError),
    ({"dtype": "uint8", "shape": (4,), "fill_value": 300}, DtypeError),
    ({"dtype": "int8", "shape": (4,), "fill_value": 1.5}, DtypeError),
    ({"dtype": "uint8", "shape": (4, 4), "origin": (1,)}, InvalidArgumentError),
    ({"dtype": "uint8", "shape": (4,), "codec": "nope"}, InvalidArgumentError),
    ({"dtype": "uint8", "shape": (4,), "codec": {"name": "blosc", "clevel": 12}},
     InvalidArgumentError),
])
def test_bad_array_config_changes_nothing(store, repo, kwargs, exc):
    before = snapshot(store)
    with pytest.raises(exc):
        repo.create_array("bad", **kwargs)
    assert snapshot(store) == before
    assert "bad" not in repo.instances()


def test_bad_writes_change_nothing(store, repo):
    arr = repo.create_array("img", "uint16", (6, 5), chunks=(4, 4))
    arr[...] = np.arange(30, dtype=np.uint16).reshape(6, 5)
    before = snapshot(store)
    cases = [
        ((6, 0), 1, IndexOutOfBoundsError),
        ((0, -6), 1, IndexOutOfBoundsError),
        ((0, 0, 0), 1, IndexOutOfBoundsError),
        ((slice(0, 3),), np.ones((3, 4), np.uint16), ShapeMismatchError),
        ((slice(0, 3), 1), np.ones(2, np.uint16), ShapeMismatchError),
        ((slice(None),), np.ones((6, 5)) * 1.5, DtypeError),          # float -> int refused
        ((slice(None),), np.ones((6, 5)), DtypeError),                 # even integral floats
        ((0, 0), 70000, DtypeError),                                   # int overflow refused
        ((0, 0), -1, DtypeError),
        ((slice(None),), np.full((6, 5), 2**20, np.int64), DtypeError),
        ((0, 0), 2.5, DtypeError),
        ((0, 0), 1j, DtypeError),
        ((0, 0), "7", DtypeError),
        ((slice(None),), np.array([[None] * 5] * 6), DtypeError),
        (([0, 1],), 1, InvalidArgumentError),
        ((slice(0, 2, 0),), 1, InvalidArgumentError),
    ]
    for sel, value, exc in cases:
        with pytest.raises(exc):
            arr[sel] = value
    assert snapshot(store) == before
    assert np.array_equal(arr[...], np.arange(30, dtype=np.uint16).reshape(6, 5))
    with pytest.raises(IndexOutOfBoundsError):
        arr[7, 0]
    for bad_shape in [(6,), (-1, 5), ("x", 1)]:
        with pytest.raises(InvalidArgumentError):
            arr.resize(bad_shape)
    assert snapshot(store) == before


def test_resize_is_versioned(repo):
    arr = _img(repo)
    arr[...] = 7
    parent = repo.commit("parent")
    repo.newversion()
    arr.resize(4, 12)
    assert arr.shape == (4, 12)
    assert (arr[:, :8] == 7).all() and (arr[:, 8:] == 0).all()
    arr[:, 10] = 3
    old = repo.version(parent.uuid).array("img")
    assert old.shape == (8, 8) and (old[...] == 7).all()
    with pytest.raises(IndexOutOfBoundsError):
        arr[5, 0]


# -- merge ----------------------------------------------------------------------------------


def _two_branches(repo):
    """root (img all 1, kv a=1 b=1) -> branches 'left' and 'right', both open, head=right."""
    arr = _img(repo)
    kv = repo.create_keyvalue("kv")
    arr[...] = 1
    kv.update({"a": b"1", "b": b"1"})
    root = repo.commit("root")
    left = repo.branch("left")
    right = repo.branch("right", parent=root.uuid)
    return root, left, right


def _lock(repo, version, edit):
    repo.checkout(version.uuid)
    edit(repo.array("img"), repo.keyvalue("kv"))
    return repo.commit(f"edit {version.uuid[:6]}")


def test_merge_disjoint_changes(repo):
    _root, left, right = _two_branches(repo)

    def edit_left(arr, kv):
        arr[0:4, 0:4] = 2
        kv["a"] = b"left"
        kv["new-left"] = b"x"

    def edit_right(arr, kv):
        arr[4:8, 4:8] = 3
        kv.delete("b")
        _img(repo, "right-only")[0, 0] = 9

    left = _lock(repo, left, edit_left)
    right = _lock(repo, right, edit_right)
    m = repo.merge(left.uuid, right.uuid, note="merge both")
    assert repo.current_uuid == m.uuid and not m.locked and m.note == "merge both"
    assert m.parents == [left.uuid, right.uuid]
    ref = np.ones((8, 8), np.uint8)
    ref[0:4, 0:4] = 2
    ref[4:8, 4:8] = 3
    assert np.array_equal(repo.array("img")[...], ref)
    kv = repo.keyvalue("kv")
    assert dict(kv.items()) == {"a": b"left", "new-left": b"x"}
    assert repo.array("right-only")[0, 0] == 9
    assert repo.instances() == {"img": "array", "kv": "keyvalue", "right-only": "array"}
    # parents are untouched, and the merge node is an ordinary open version
    assert dict(repo.version(right.uuid)["kv"].items()) == {"a": b"1"}
    repo.array("img")[0, 0] = 0
    assert repo.version(left.uuid)["img"][0, 0] == 2


def _conflicting(repo):
    root, left, right = _two_branches(repo)

    def edit_left(arr, kv):
        arr[0:2, 4:6] = 2    # chunk (0, 1)
        arr[5, 5] = 2        # chunk (1, 1), same change as right: no conflict
        kv["a"] = b"left"
        kv.delete("b")

    def edit_right(arr, kv):
        arr[0:2, 4:6] = 3
        arr[5, 5] = 2
        arr[4, 0] = 3        # chunk (1, 0), right only
        kv["a"] = b"right"
        kv["b"] = b"right"

    return root, _lock(repo, left, edit_left), _lock(repo, right, edit_right)


def test_merge_conflicts_are_typed_and_store_nothing(store, repo):
    root, left, right = _conflicting(repo)
    before = snapshot(store)
    with pytest.raises(MergeConflictError) as exc:
        repo.merge(left.uuid, right.uuid)
    assert exc.value.code == "merge_conflict"
    got = {(c.instance, c.key): c for c in exc.value.conflicts}
    assert set(got) == {("img", (0, 1)), ("kv", "a"), ("kv", "b")}
    for c in got.values():
        assert isinstance(c, Conflict)
        assert c.sides == {left.uuid: left.uuid, right.uuid: right.uuid}
        assert c.base == root.uuid
    assert got[("kv", "b")].deleted == (left.uuid,)
    assert got[("img", (0, 1))].deleted == () and got[("kv", "a")].deleted == ()
    assert snapshot(store) == before
    assert len(repo.versions()) == 3 and repo.current_uuid == right.uuid


@pytest.mark.parametrize("pick", ["left-uuid", "left-prefix", 0, "right-uuid", 1])
def test_merge_strategy_parent(repo, pick):
    _root, left, right = _conflicting(repo)
    winner = left if pick in ("left-uuid", "left-prefix", 0) else right
    strategy = {"left-uuid": left.uuid, "left-prefix": left.uuid[:10],
                "right-uuid": right.uuid}.get(pick, pick)
    repo.merge(left.uuid, right.uuid, strategy=strategy)
    arr, kv = repo.array("img"), repo.keyvalue("kv")
    win = 2 if winner == left else 3
    assert (arr[0:2, 4:6] == win).all()
    assert arr[5, 5] == 2 and arr[4, 0] == 3  # the non-conflicting changes of both sides
    assert kv["a"] == (b"left" if winner == left else b"right")
    assert kv.get("b") == (None if winner == left else b"right")


def test_merge_strategy_callable(repo):
    _root, left, right = _conflicting(repo)
    seen = []

    def strategy(conflict):
        seen.append(conflict)
        if conflict.instance == "kv":
            return 1 if conflict.key == "a" else left.uuid
        return right.uuid[:6]

    repo.merge(left.uuid, right.uuid, strategy=strategy)
    assert {(c.instance, c.key) for c in seen} == {("img", (0, 1)), ("kv", "a"), ("kv", "b")}
    assert (repo.array("img")[0:2, 4:6] == 3).all()
    assert repo.keyvalue("kv")["a"] == b"right"
    assert "b" not in repo.keyvalue("kv")


@pytest.mark.parametrize("strategy", ["nope", 2, -1, "", lambda c: "0" * 32, lambda c: None])
def test_bad_merge_strategy_stores_nothing(store, repo, strategy):
    _root, left, right = _conflicting(repo)
    before = snapshot(store)
    with pytest.raises(InvalidArgumentError):
        repo.merge(left.uuid, right.uuid, strategy=strategy)
    assert snapshot(store) == before


def test_a_merge_onto_a_version_with_a_child_on_its_branch_is_refused(store, repo):
    """A merge continues its first parent's branch and moves that branch's ref, so, as with
    newversion, the first parent must not have a child on the branch already: moving the
    branch to the merge would drop that child's line from the branch. Nothing is stored."""
    a = repo.commit("a")
    x = repo.branch("x")
    x = repo.commit("x")
    b = repo.newversion("b", parent=a.uuid)
    b = repo.commit("b")
    repo.tag("ta", parent=a.uuid)
    counter = store.backend.get(K.vid_counter_key(repo.uuid))
    for first in (a.uuid, "ta"):  # a tag stands for the version it names
        with pytest.raises(DuplicateNameError, match=f"leaf {b.uuid}"):
            repo.merge(first, x.uuid)
    assert store.backend.get(K.vid_counter_key(repo.uuid)) == counter
    assert len(store.open_repo("fly").dag.nodes) == 4  # a (the root), x, b, ta
    # a handle that planned on an older leaf loses the race to the newversion
    stale = store.open_repo("fly")
    c = repo.newversion("c", parent=b.uuid)
    repo.commit("c")
    with pytest.raises(DuplicateNameError, match="already has a child"):
        stale.merge(b.uuid, x.uuid)
    assert [v.note for v in store.open_repo("fly").log(c.uuid)] == ["a", "b", "c"]
    m = stale.merge(c.uuid, x.uuid, note="m")
    assert [v.note for v in store.open_repo("fly").log("master")] == ["a", "b", "c", "m"]
    assert store.open_repo("fly").version("master") == m


def test_merge_arguments(repo):
    _root, left, right = _two_branches(repo)
    left = _lock(repo, left, lambda a, kv: None)
    with pytest.raises(InvalidArgumentError):
        repo.merge(left.uuid)
    with pytest.raises(InvalidArgumentError):
        repo.merge(left.uuid, left.uuid[:8])
    with pytest.raises(UnlockedNodeError):
        repo.merge(left.uuid, right.uuid)
    with pytest.raises(VersionNotFoundError):
        repo.merge(left.uuid, "nope")


def test_merge_same_change_on_both_sides_is_silent(repo):
    _root, left, right = _two_branches(repo)

    def edit(arr, kv):
        arr[1:7, 1:7] = 4
        kv["a"] = b"same"
        kv.delete("b")

    left, right = _lock(repo, left, edit), _lock(repo, right, edit)
    repo.merge(left.uuid, right.uuid)
    ref = np.ones((8, 8), np.uint8)
    ref[1:7, 1:7] = 4
    assert np.array_equal(repo.array("img")[...], ref)
    assert dict(repo.keyvalue("kv").items()) == {"a": b"same"}


def test_merge_side_that_wrote_back_the_base_value_is_unchanged(repo):
    _root, left, right = _two_branches(repo)

    def edit_left(arr, kv):  # writes, then restores what the base had
        arr[0:4, 0:4] = 8
        kv["a"] = b"tmp"
        arr[0:4, 0:4] = 1
        kv["a"] = b"1"

    def edit_right(arr, kv):
        arr[0, 0] = 5
        kv["a"] = b"right"

    left, right = _lock(repo, left, edit_left), _lock(repo, right, edit_right)
    repo.merge(left.uuid, right.uuid, strategy=left.uuid)  # no conflict: right's edit stays
    assert repo.array("img")[0, 0] == 5
    assert repo.keyvalue("kv")["a"] == b"right"


def test_merge_after_convergent_merge(repo):
    # left and right make the same change and are merged; a later change on a branch from
    # left is then a one-sided change against that merge, not a conflict
    _root, left, right = _two_branches(repo)
    left = _lock(repo, left, lambda arr, kv: kv.__setitem__("a", b"5"))
    right = _lock(repo, right, lambda arr, kv: kv.__setitem__("a", b"5"))
    repo.merge(left.uuid, right.uuid)
    m = repo.commit("merged")
    later = repo.branch("later", parent=left.uuid)
    repo.keyvalue("kv")["a"] = b"7"
    later = repo.commit("later")
    repo.merge(m.uuid, later.uuid, strategy=m.uuid)
    assert repo.keyvalue("kv")["a"] == b"7"


def test_criss_cross_merges(repo):
    kv = repo.create_keyvalue("kv")
    kv.update({"k": b"1", "x": b"1", "y": b"1"})
    root = repo.commit("root")
    repo.branch("a")
    repo.keyvalue("kv").update({"k": b"a", "x": b"a"})
    a = repo.commit("a")
    repo.branch("b", parent=root.uuid)
    repo.keyvalue("kv").update({"k": b"b"})
    b = repo.commit("b")
    repo.merge(a.uuid, b.uuid, strategy=a.uuid)   # k = a
    m1 = repo.commit("m1")
    repo.merge(b.uuid, a.uuid, strategy=b.uuid)   # k = b
    m2 = repo.commit("m2")
    assert repo.version(m1.uuid)["kv"]["k"] == b"a"
    assert repo.version(m2.uuid)["kv"]["k"] == b"b"
    assert sorted(repo.dag.merge_bases([m1.id, m2.id])) == sorted([a.id, b.id])
    # a change on top of m2 to a key whose bases disagree (x: a vs 1, virtual base a)
    repo.branch("m2-child", parent=m2.uuid)
    repo.keyvalue("kv")["x"] = b"later"
    repo.keyvalue("kv")["y"] = b"later"
    m2c = repo.commit("m2 child")
    with pytest.raises(MergeConflictError) as exc:
        repo.merge(m1.uuid, m2c.uuid)
    assert [(c.instance, c.key) for c in exc.value.conflicts] == [("kv", "k")]
    repo.merge(m1.uuid, m2c.uuid, strategy=1)
    kv = repo.keyvalue("kv")
    assert dict(kv.items()) == {"k": b"b", "x": b"later", "y": b"later"}
    # and merging the two merges again is clean once the conflict is resolved
    m3 = repo.commit("m3")
    repo.merge(m3.uuid, m1.uuid, strategy="fail")
    assert dict(repo.keyvalue("kv").items()) == {"k": b"b", "x": b"later", "y": b"later"}


def test_merge_of_three_parents(repo):
    kv = repo.create_keyvalue("kv")
    kv["shared"] = b"0"
    root = repo.commit("root")
    parents = []
    for name in ["p", "q", "r"]:
        repo.branch(name, parent=root.uuid)
        repo.keyvalue("kv")[name] = name.encode()
        parents.append(repo.commit(name).uuid)
    m = repo.merge(*parents)
    assert m.parents == parents
    assert dict(repo.keyvalue("kv").items()) == {"shared": b"0", "p": b"p", "q": b"q",
                                                 "r": b"r"}


def test_merge_rebuilds_pyramids_from_merged_scale_0(repo):
    from diced.array.downres import downsample_image

    arr = repo.create_array("vol", "uint8", (16, 16, 16), chunks=(4, 4, 4), max_scale=2)
    arr[...] = 1
    root = repo.commit("root")
    repo.branch("left")
    repo.array("vol")[0:4, 0:4, 0:4] = 10    # conflicts with right
    repo.array("vol")[4:8, 0:4, 0:4] = 30    # shares a scale-1 chunk with the conflict
    left = repo.commit("left")
    repo.branch("right", parent=root.uuid)
    repo.array("vol")[0:4, 0:4, 0:4] = 20
    repo.array("vol")[8:12, 8:12, 8:12] = 50
    right = repo.commit("right")
    repo.merge(left.uuid, right.uuid, strategy=left.uuid)
    merged = repo.array("vol")
    full = merged[...]
    assert full[0, 0, 0] == 10 and full[4, 0, 0] == 30 and full[8, 8, 8] == 50
    assert np.array_equal(merged.scale(1)[...], downsample_image(full))
    assert np.array_equal(merged.scale(2)[...], downsample_image(downsample_image(full)))
    # the parents' pyramids are untouched
    for v in (left, right):
        at = repo.version(v.uuid).array("vol")
        assert np.array_equal(at.scale(1)[...], downsample_image(at[...]))


def test_merge_keeps_the_label_index_consistent(repo):
    labels = repo.create_labels("seg", (64, 64, 64))
    labels[...] = 1
    root = repo.commit("root")
    repo.branch("left")
    repo.labels("seg")[0:10, 0:10, 0:10] = 5
    left = repo.commit("left")
    repo.branch("right", parent=root.uuid)
    repo.labels("seg")[0:10, 0:10, 0:10] = 6
    right = repo.commit("right")
    repo.merge(left.uuid, right.uuid, strategy=left.uuid)
    merged = repo.labels("seg")
    assert set(np.unique(merged[...]).tolist()) == {1, 5}
    assert merged.count(5) == 1000
    assert merged.count(6) == 0


# -- diff -----------------------------------------------------------------------------------


def test_diff(repo):
    arr = _img(repo)
    kv = repo.create_keyvalue("kv")
    arr[0:4, 0:4] = 1          # chunk (0, 0)
    arr[4:8, 4:8] = 1          # chunk (1, 1)
    kv.update({"keep": b"1", "change": b"1", "drop": b"1"})
    a = repo.commit("a")
    repo.newversion()
    arr[0, 0] = 2              # changed (0, 0)
    arr[4:8, 4:8] = 0          # removed (1, 1)
    arr[0, 5] = 3              # added (0, 1)
    kv["change"] = b"2"
    kv["new"] = b"1"
    del kv["drop"]
    kv["keep"] = b"1"          # rewritten with the same value: no difference
    _img(repo, "created")[0, 0] = 1
    b = repo.commit("b")
    d = repo.diff(a.uuid, b.uuid)
    assert d.a == a.uuid and d.b == b.uuid and bool(d)
    assert d["img"].added == [(0, 1)] and d["img"].changed == [(0, 0)]
    assert d["img"].removed == [(1, 1)]
    assert d["kv"].added == ["new"] and d["kv"].changed == ["change"]
    assert d["kv"].removed == ["drop"]
    assert d.created == ["created"] and d.deleted == []
    assert d["created"].added == [(0, 0)]
    assert "created" in d.summary()
    back = repo.diff(b.uuid, a.uuid)
    assert back["img"].added == [(1, 1)] and back["img"].removed == [(0, 1)]
    assert back["kv"].added == ["drop"] and back.deleted == ["created"]
    assert not repo.diff(a.uuid, a.uuid)
    assert repo.diff(a.uuid).b == repo.current_uuid


def test_diff_across_branches(repo):
    _root, left, right = _two_branches(repo)
    left = _lock(repo, left, lambda arr, kv: arr.__setitem__((0, 0), 5))
    right = _lock(repo, right, lambda arr, kv: kv.__setitem__("a", b"2"))
    d = repo.diff(left.uuid, right.uuid)
    assert d["img"].changed == [(0, 0)] and d["kv"].changed == ["a"]
    assert not d["img"].added and not d["kv"].removed


# -- persistence ----------------------------------------------------------------------------


def _fill_repo(repo):
    arr = repo.create_array("img", "int32", (10, 10), chunks=(4, 4), fill_value=-1)
    kv = repo.create_keyvalue("kv")
    arr[2:9, 3] = np.arange(7)
    kv["k"] = "v"
    root = repo.commit("root", ["imported"])
    repo.branch("b")
    repo.array("img")[0, 0] = 42
    return root


def test_reopen_in_new_store_object(store_location, store, repo):
    root = _fill_repo(repo)
    head = repo.current_uuid
    store.close()
    again = diced.Store(store_location, **store_location.options)
    try:
        r = again.open_repo("fly")
        assert r.uuid == repo.uuid and r.description == "a test repo"
        assert r.current_uuid == head  # a reopened repo starts where the head was left
        assert r.version(root.uuid).log[0].endswith("imported")
        assert r.version(root.uuid).locked and not r.version(head).locked
        arr = r.version(head).array("img")
        assert arr[0, 0] == 42 and arr.fill_value == -1 and arr.chunks == (4, 4)
        assert list(arr[2:9, 3]) == list(range(7))
        assert r.version(root.uuid).array("img")[0, 0] == -1
        assert r.version(root.uuid)["kv"]["k"] == b"v"
        assert set(r.branches()) == {"master", "b"}
        # open a repo by a version uuid (prefix): the head is that version
        r2 = again.open_repo(uuid=head[:12])
        assert r2.uuid == repo.uuid and r2.current_uuid == head
        r2.array("img")[1, 1] = 7
        assert r2.version(head).array("img")[1, 1] == 7
    finally:
        again.close()


SUBPROCESS_READ = textwrap.dedent("""
    import json, sys
    import diced
    store = diced.Store(sys.argv[1], **json.loads(sys.argv[3]))
    repo = store.open_repo("fly")
    head = sys.argv[2]
    arr = repo.version(head).array("img")
    out = {"v00": int(arr[0, 0]), "col": arr[2:9, 3].tolist(),
           "root_kv": repo.version(repo.uuid)["kv"]["k"].decode(),
           "branches": sorted(repo.branches())}
    # and write at the open head, for the parent process to read
    arr[9, 9] = 99
    print(json.dumps(out))
""")


@pytest.mark.backends("lmdb", "file")  # memory:// lives in one process
def test_persistence_across_processes(store_location, store, repo):
    _fill_repo(repo)
    head = repo.current_uuid
    store.close()
    proc = subprocess.run([sys.executable, "-c", SUBPROCESS_READ, store_location, head,
                           json.dumps(store_location.options)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"v00": 42, "col": list(range(7)), "root_kv": "v",
                   "branches": ["b", "master"]}
    again = diced.Store(store_location, **store_location.options)
    try:
        assert again.open_repo("fly").version(head).array("img")[9, 9] == 99
    finally:
        again.close()


@pytest.mark.all_backends
def test_version_flow_end_to_end(store_location, store):
    """One whole versioning story on every backend, the emulated object stores included."""
    repo = store.create_repo("flow", "end to end")
    img = repo.create_array("img", "float32", (40, 30), chunks=(16, 16), fill_value=np.nan)
    kv = repo.create_keyvalue("kv")
    ref = np.full((40, 30), np.nan, np.float32)
    ref[3:35, 5:25] = np.arange(32 * 20, dtype=np.float32).reshape(32, 20)
    img[3:35, 5:25] = ref[3:35, 5:25]
    kv.update({"a": b"1", "b": b"1"})
    root = repo.commit("import", ["loaded 640 voxels"])
    repo.tag("v1")
    left = repo.branch("left")
    repo.array("img")[0:16, 0:16] = 1.5
    repo.keyvalue("kv")["a"] = b"left"
    left = repo.commit("left")
    right = repo.branch("right", parent=root.uuid)
    repo.array("img")[20:40, 16:30] = -2.0
    repo.array("img")[0, 0] = 9.0  # conflicts with left in chunk (0, 0)
    repo.keyvalue("kv").delete("b")
    right = repo.commit("right")
    with pytest.raises(MergeConflictError) as exc:
        repo.merge(left.uuid, right.uuid)
    assert [(c.instance, c.key) for c in exc.value.conflicts] == [("img", (0, 0))]
    merged = repo.merge(left.uuid, right.uuid, note="merge", strategy=left.uuid)
    want = ref.copy()
    want[0:16, 0:16] = 1.5
    want[20:40, 16:30] = -2.0
    got = repo.array("img")[...]
    assert np.array_equal(got, want, equal_nan=True)
    assert dict(repo.keyvalue("kv").items()) == {"a": b"left"}
    d = repo.diff(root.uuid, merged.uuid)
    assert (0, 0) in d["img"].changed and d["kv"].changed == ["a"] and d["kv"].removed == ["b"]
    repo.commit("merged")
    store.close()
    again = diced.Store(store_location, **store_location.options)
    try:
        r = again.open_repo("flow")
        assert np.array_equal(r.version("v1").array("img")[...], ref, equal_nan=True)
        assert np.array_equal(r.version(tag="v1").array("img")[...], ref, equal_nan=True)
        assert np.array_equal(r.version(merged.uuid[:8]).array("img")[...], want,
                              equal_nan=True)
        assert r.version(right.uuid)["kv"].keys() == ["a"]
        # the merge node continues its first parent's branch: left~0 is the merge
        assert r.version("left~0").uuid == merged.uuid
        assert r.version("left~1").uuid == left.uuid
        assert r.branches()["master"].uuid == root.uuid
        assert sorted(r.version(merged.uuid).array("img").stored_chunks()) == [
            (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
        again.delete_repo("flow")
        assert again.list_repos() == []
        assert list(again.backend.list_keys("d/")) == []
    finally:
        again.close()


# -- repos in a store -----------------------------------------------------------------------


def test_repos_in_a_store(store):
    a = store.create_repo("a")
    b = store.create_repo("b", "second")
    assert store.list_repos() == sorted([("a", a.uuid), ("b", b.uuid)])
    assert set(store.repos()) == {"a", "b"}
    with pytest.raises(DuplicateNameError):
        store.create_repo("a")
    for bad in ["", "a b", "x/y"]:
        with pytest.raises(InvalidArgumentError):
            store.create_repo(bad)
    assert store.open_repo("b").description == "second"
    assert store.open_repo(uuid=b.uuid).alias == "b"
    assert store.open_repo(uuid=b.uuid[:10]).alias == "b"
    with pytest.raises(RepoNotFoundError):
        store.open_repo("c")
    with pytest.raises(RepoNotFoundError):
        store.open_repo(uuid="f" * 32 if not a.uuid.startswith("f") and
                        not b.uuid.startswith("f") else "0" * 32)
    with pytest.raises(InvalidArgumentError):
        store.open_repo()
    with pytest.raises(InvalidArgumentError):
        store.open_repo("a", uuid=a.uuid)
    # instances of different repos are independent
    a.create_keyvalue("kv")["k"] = b"a"
    b.create_keyvalue("kv")["k"] = b"b"
    assert a["kv"]["k"] == b"a" and b["kv"]["k"] == b"b"


def test_delete_repo(store):
    keep = store.create_repo("keep")
    keep.create_keyvalue("kv")["k"] = b"kept"
    gone = store.create_repo("gone")
    _img(gone)[...] = 3
    gone.create_keyvalue("kv")["k"] = b"x"
    gone.commit("locked")
    store.delete_repo("gone")
    assert store.list_repos() == [("keep", keep.uuid)]
    with pytest.raises(RepoNotFoundError):
        store.open_repo("gone")
    with pytest.raises(RepoNotFoundError):
        gone.refresh()
    with pytest.raises(RepoNotFoundError):
        store.delete_repo("gone")
    assert list(store.backend.list_keys(f"lock/{gone.uuid}/")) == []
    kept_id = keep._doc["instances"]["kv"]["id"]
    assert {k.split("/")[1] for k in store.backend.list_keys("d/")} == {f"{kept_id:08x}"}
    assert store.open_repo("keep")["kv"]["k"] == b"kept"
    again = store.create_repo("gone")  # the alias is free again
    assert again.instances() == {}


# -- corrupt metadata -----------------------------------------------------------------------


@pytest.mark.parametrize("garbage", [b"\x00\xffgarbage", b"[1, 2]", b"{}",
                                     b'{"format": 1, "nodes": [{"bad": 1}], "instances": {}}',
                                     b'{"format": 99, "nodes": [], "instances": {}}'])
def test_corrupt_repo_metadata(store, repo, garbage):
    store.backend.set(K.repo_key(repo.uuid), garbage)
    with pytest.raises(CorruptMetadataError) as exc:
        store.open_repo("fly")
    assert exc.value.code == "corrupt_metadata"
    assert isinstance(exc.value, ValueError)


def test_corrupt_store_format(store_location, store):
    store.backend.set(K.FORMAT_KEY, b"not json")
    store.close()
    with pytest.raises(CorruptMetadataError):
        diced.Store(store_location, **store_location.options)


# -- the exception tree ---------------------------------------------------------------------

ERROR_CODES = {
    "DicedError": ("diced_error", Exception),
    "BackendError": ("backend_error", OSError),
    "BackendUnavailableError": ("backend_unavailable", OSError),
    "ConcurrencyError": ("concurrency_error", RuntimeError),
    "ConversionError": ("conversion_failed", RuntimeError),
    "CorruptDataError": ("corrupt_data", ValueError),
    "CorruptMetadataError": ("corrupt_metadata", ValueError),
    "ChecksumError": ("checksum_mismatch", ValueError),
    "StoreFormatError": ("store_format", ValueError),
    "StoreLocationError": ("store_location", OSError),
    "StoreNotFoundError": ("store_not_found", KeyError),
    "NotFoundError": ("not_found", KeyError),
    "RepoNotFoundError": ("repo_not_found", KeyError),
    "VersionNotFoundError": ("version_not_found", KeyError),
    "AmbiguousVersionError": ("ambiguous_version", ValueError),
    "InstanceNotFoundError": ("instance_not_found", KeyError),
    "LabelNotFoundError": ("label_not_found", KeyError),
    "UnknownDatatypeError": ("unknown_datatype", KeyError),
    "DuplicateNameError": ("duplicate_name", ValueError),
    "LockedNodeError": ("locked_node", PermissionError),
    "UnlockedNodeError": ("unlocked_node", ValueError),
    "MergeConflictError": ("merge_conflict", RuntimeError),
    "InvalidArgumentError": ("invalid_argument", ValueError),
    "IndexOutOfBoundsError": ("index_out_of_bounds", IndexError),
    "InvalidIndexError": ("invalid_index", IndexError),
    "ShapeMismatchError": ("shape_mismatch", ValueError),
    "DtypeError": ("dtype_error", TypeError),
    "FormatError": ("format_error", ValueError),
    "ReadOnlyStoreError": ("read_only_store", PermissionError),
}


def test_error_codes_are_pinned():
    assert set(errors.__all__) == set(ERROR_CODES)
    for name, (code, builtin) in ERROR_CODES.items():
        cls = getattr(errors, name)
        assert cls.code == code, name
        assert issubclass(cls, errors.DicedError) and issubclass(cls, builtin), name
    codes = [c for c, _ in ERROR_CODES.values()]
    assert len(set(codes)) == len(codes)
    assert diced.DicedError is errors.DicedError


def test_not_found_messages_are_readable():
    assert str(errors.VersionNotFoundError("no version matches 'x'")) == "no version matches 'x'"
    e = errors.MergeConflictError("m", [1, 2])
    assert e.conflicts == [1, 2] and errors.MergeConflictError("m").conflicts == []
