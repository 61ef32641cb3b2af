"""Version history at scale: per-record metadata, packs, the change journal, chain-based
ancestor sets, crash states, concurrent metadata writers, and the format-2 migration."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import diced
from diced.errors import (
    DuplicateNameError,
    LockedNodeError,
    StoreFormatError,
    VersionNotFoundError,
)
from diced.repo import history as H
from diced.repo import keys as K
from diced.repo import snapshot
from diced.repo.dag import DAG, Node, new_uuid

DATA = Path(__file__).parent / "data"


def _linear(repo, n, locked_leaf=True):
    """Append ``n`` versions to master in one go (the records the operations write)."""
    prev = repo.dag.branch_leaf("master").id
    top = max(repo.dag.nodes)
    nodes = []
    now = time.time()
    for i in range(n):
        vid = top + 1 + i
        nodes.append(Node(new_uuid(), vid, [prev], "", f"v{i}", [f"line {i}"],
                          locked=locked_leaf or i < n - 1, created=now, updated=now))
        prev = vid
    H.bulk_append(repo.backend, repo.uuid, nodes, refs={"master": prev})
    repo.refresh()
    repo.checkout(branch="master")
    return nodes


def _bushy(n, seed=3, branches=60, merges=25):
    """A random DAG: nodes with branches forking anywhere and merges of branch leaves."""
    rng = random.Random(seed)
    nodes = [Node(new_uuid(), 1, [], "", locked=True)]
    leaves = {"": 1}
    for vid in range(2, n + 1):
        r = rng.random()
        if branches and r < 0.04:
            branches -= 1
            name = f"b{vid}"
            parents = [rng.randrange(1, vid)]
        elif merges and len(leaves) > 2 and r < 0.07:
            merges -= 1
            a, b = rng.sample(sorted(leaves), 2)
            name, parents = a, [leaves[a], leaves[b]]
        else:
            name = rng.choice(sorted(leaves))
            parents = [leaves[name]]
        nodes.append(Node(new_uuid(), vid, parents, name, locked=True))
        leaves[name] = vid
    return nodes, leaves


# --- the DAG ----------------------------------------------------------------------------------

def _naive_ancestors(nodes, vid):
    by = {n.id: n for n in nodes}
    seen, todo = {vid}, [vid]
    while todo:
        for p in by[todo.pop()].parents:
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen


def test_chain_ancestors_match_a_plain_walk_on_a_bushy_dag():
    nodes, leaves = _bushy(3000)
    dag = DAG(nodes)
    rng = random.Random(5)
    for vid in [*leaves.values(), *rng.sample(range(1, 3001), 40)]:
        assert dag.ancestors(vid) == _naive_ancestors(nodes, vid)
    # first-parent chains and ~N against a plain walk
    by = {n.id: n for n in nodes}
    for vid in leaves.values():
        want = [vid]
        while by[want[-1]].parents:
            want.append(by[want[-1]].parents[0])
        assert dag.first_parent_chain(vid) == want
        assert dag.nth_first_parent(vid, len(want) - 1) == 1
        assert dag.nth_first_parent(vid, len(want)) is None
    # merge bases against the definition
    a, b = list(leaves.values())[:2]
    common = _naive_ancestors(nodes, a) & _naive_ancestors(nodes, b)
    lowest = sorted(c for c in common if not any(
        c in n.parents and n.id in common for n in nodes))
    assert dag.merge_bases([a, b]) == lowest


def test_derived_snapshots_extend_chains_incrementally():
    nodes, _ = _bushy(500, seed=9)
    dag = DAG(nodes[:300])
    dag.ancestors(300)
    for n in nodes[300:]:
        dag = dag.derive([n])
    fresh = DAG(nodes)
    for vid in (500, 450, 301, 299):
        assert dag.ancestors(vid) == fresh.ancestors(vid) == _naive_ancestors(nodes, vid)
        assert dag.first_parent_chain(vid) == fresh.first_parent_chain(vid)


def test_dag_memory_grows_linearly():
    def peak(n):
        nodes = [Node(f"{i:032x}", i, [i - 1] if i > 1 else [], "", locked=True)
                 for i in range(1, n + 1)]
        tracemalloc.start()
        dag = DAG(nodes)
        for vid in range(n, 0, -max(1, n // 20)):  # many ancestor queries along the chain
            dag.ancestors(vid)
        dag.first_parent_chain(n)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, big = peak(2000), peak(8000)
    assert big < 6 * small  # linear (4x the versions), not quadratic (16x)


# --- records, packs, journal -------------------------------------------------------------------

def _changed_keys(backend, fn):
    before = dict(zip(keys := list(backend.list_keys()), backend.get_many(keys), strict=True))
    fn()
    after = dict(zip(keys := list(backend.list_keys()), backend.get_many(keys), strict=True))
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def test_one_change_writes_the_same_few_small_records_at_any_size(store):
    sizes, snaps = {}, {}
    for n in (5, 2000):
        repo = store.create_repo(f"r{n}")
        repo.commit()
        _linear(repo, n)
        b = repo.backend
        ops = {
            "newversion": lambda repo=repo: repo.newversion("x"),
            "create_instance": lambda repo=repo: repo.create_keyvalue("kv"),
            "commit": lambda repo=repo: repo.commit("c"),
            "branch": lambda repo=repo: repo.branch("side"),
            "tag": lambda repo=repo: repo.tag("t", parent="master"),
        }
        got = {}
        snap = K.snapshot_key(repo.uuid)
        for name, fn in ops.items():
            keys = _changed_keys(b, fn)
            if snap in keys:  # a commit on an object store also stores the state snapshot
                assert name == "commit" and b.get(snap) is not None
                snaps[n] = len(b.get(snap))
                keys.discard(snap)
            got[name] = (len(keys), sum(len(b.get(k) or b"") for k in keys))
        sizes[n] = got
    for name in sizes[5]:
        assert sizes[2000][name][0] == sizes[5][name][0] <= 5, name
        assert sizes[2000][name][1] < 3000, name  # bytes: no document listing every node
    # the snapshot holds the records past the last pack (fewer than PACK_MIN locked nodes)
    # and packs up to snapshot.PACKS_MAX bytes: bounded, whatever the history's length
    assert set(snaps) == (set() if store.backend.capabilities.ordered_scan else {5, 2000})
    if snaps:
        assert snaps[2000] < 64 * 1024 + snapshot.PACKS_MAX, snaps


def test_ten_thousand_versions_work_through_the_api(tmp_path):
    store = diced.Store(tmp_path / "s.diced", durable=False)
    repo = store.create_repo("long")
    arr = repo.create_array("a", "uint8", (4,), chunks=(2,))
    arr[0] = 7
    repo.commit("root")
    nodes = _linear(repo, 10_000)
    assert len(repo.log()) == 10_001
    assert repo.version("master~10000") == repo.root
    assert repo.version("master~1").uuid == nodes[-2].uuid
    again = store.open_repo("long")  # packs + a short tail, not 10,000 records
    assert again._state.meta["packs"] and again._state.packed_to >= 10_000 - H.PACK_MIN
    assert again.head.uuid == nodes[-1].uuid and again.head.note == "v9999"
    assert again.version(nodes[1234].uuid).log == ["line 1234"]
    assert again.array("a")[0] == 7
    again.newversion("next")
    again.array("a")[1] = 9
    again.commit("done")
    again.branch("side", parent=nodes[5000].uuid)
    again.tag("t1", parent="master")
    assert list(again.version("side").array("a")[...]) == [7, 0, 0, 0]
    third = store.open_repo("long")
    assert third.version("t1").parents == [third.version("master").uuid]
    assert list(third.version("master").array("a")[...]) == [7, 9, 0, 0]
    assert len(third.dag.ancestors(third.version("side").id)) == nodes[5000].id + 1


def test_packs_are_written_at_commit_and_records_beat_them(store):
    repo = store.create_repo("p")
    for i in range(H.PACK_MIN + 5):
        repo.commit(f"c{i}")
        repo.newversion()
    assert repo._state.meta["packs"], "a pack after PACK_MIN locked versions"
    packed = repo.dag.nodes[3]
    repo._update_node(3, lambda rec: rec.update(note="edited later"))
    leaf = repo.head.id
    assert store.open_repo("p").dag.nodes[3].note == "edited later"
    assert store.open_repo("p").dag.nodes[3].uuid == packed.uuid
    repo._delete_nodes([leaf])  # an open leaf; the branch ref moves back
    again = store.open_repo("p")
    assert leaf not in again.dag.nodes
    assert again.version("master").id == leaf - 1


def test_a_handle_catches_up_from_the_journal(store):
    a = store.create_repo("j")
    b = store.open_repo("j")
    a.create_keyvalue("kv")
    a.commit("one")
    a.branch("feature")
    a.commit()
    a.tag("v1")
    a._update_repo(lambda d: d.update(description="changed"))
    before = b._stamp
    b.refresh()
    assert b._stamp != before
    assert b.instances(a.root.uuid) == {"kv": "keyvalue"}
    assert b.dag.nodes[1].locked and b.version("feature").locked
    assert b.tags()["v1"].parents == [a.version("feature").uuid]
    assert b.description == "changed"
    for i in range(H.JOURNAL + 3):  # further than the journal reaches: a full reload
        a._update_node(1, lambda rec, i=i: rec.update(note=f"n{i}"))
    b.refresh()
    assert b.dag.nodes[1].note == f"n{H.JOURNAL + 2}"


# --- crash states ------------------------------------------------------------------------------

def test_lock_key_without_record_update_reads_as_locked(store):
    repo = store.create_repo("c")
    arr = repo.create_array("a", "uint8", (4,), chunks=(2,))
    vid = repo.head.id
    store.backend.set(K.lock_key(repo.uuid, vid), b"1")  # a commit stopped after its lock key
    again = store.open_repo("c")
    assert again.head.locked
    with pytest.raises(LockedNodeError):
        again.array("a")[0] = 1
    with pytest.raises(LockedNodeError):
        again.commit("twice")
    again.newversion("after")  # children can be made from it
    assert again.head.parents == [repo.root.uuid]
    del arr


def test_a_node_whose_ref_never_moved_is_off_the_branch_head(store):
    repo = store.create_repo("c")
    repo.commit()
    root = repo.head.id
    # a newversion stopped after its record: reserved id, record, no ref move
    vid = repo._reserve_id()
    orphan = Node(new_uuid(), vid, [root], "", locked=False)
    store.backend.set(K.node_key(repo.uuid, vid), H.node_record(orphan))
    again = store.open_repo("c")
    assert orphan.uuid in again.dag.by_uuid
    assert again.version("master").id == root  # the ref decides
    v = again.newversion("real")
    assert v.id > vid and again.version("master") == v
    # a branch without any ref (its creation stopped before the ref) falls back
    store.backend.delete(K.branch_key(repo.uuid, "master"))
    assert store.open_repo("c").version("master") == v


def test_racing_newversions_on_one_parent_one_wins(store):
    a = store.create_repo("r")
    a.commit()
    b = store.open_repo("r")
    a.newversion("a")
    with pytest.raises(DuplicateNameError, match="already has a child"):
        b.newversion("b", parent=a.root.uuid)
    b.branch("x", parent=a.root.uuid)
    with pytest.raises(DuplicateNameError, match="already exists"):
        a.branch("x", parent=a.root.uuid)  # a's snapshot is stale: the ref decides
    assert len(store.open_repo("r").dag.nodes) == 3
    with pytest.raises(VersionNotFoundError):
        store.open_repo("r").version("nope")


def _ahead(store, repo, parent, journal=()):
    """Another writer's newversion on ``parent``, stopped after its record and ref (the
    journal entry not written, or only ``journal``); returns the new version id."""
    vid = int(store.backend.get(K.vid_counter_key(repo.uuid))) + 1
    store.backend.set(K.vid_counter_key(repo.uuid), str(vid).encode())
    node = Node(new_uuid(), vid, [parent], "", "ahead", [])
    store.backend.set(K.node_key(repo.uuid, vid), H.node_record(node))
    store.backend.set(K.branch_key(repo.uuid, "master"), str(vid).encode())
    if journal:
        H.journal(store.backend, repo.uuid, *journal)
    return vid


@pytest.mark.parametrize("journal", [(), (("b", "master"),)])
def test_a_ref_ahead_of_a_handles_versions_is_not_forked(store, journal):
    """A handle whose snapshot lacks the version a branch ref names (its journal entry not
    read yet, or never written) does not take "no child" for granted: newversion on the old
    leaf is refused as it would be with that version known, not forked beside it."""
    repo = store.create_repo("r")
    base = repo.commit("base")
    mover = store.open_repo("r")
    other = _ahead(store, repo, base.id, journal)
    with pytest.raises(DuplicateNameError, match="already has a child"):
        repo.newversion("fork", parent=base.uuid)
    assert other in repo.dag.nodes
    assert [v.note for v in store.open_repo("r").log(store.open_repo("r").version("master"))] \
        == ["base", "ahead"]
    if journal:  # a catch-up that reads the ref without its version loads fully
        mover.refresh()
        assert other in mover.dag.nodes


def test_a_ref_naming_a_deleted_version_is_repaired_by_the_next_newversion(store):
    repo = store.create_repo("r")
    base = repo.commit("base")
    gone = _ahead(store, repo, base.id)
    store.backend.set(K.node_key(repo.uuid, gone), H.dump_doc({"deleted": True, "id": gone}))
    child = store.open_repo("r").newversion("after", parent=base.uuid)
    assert int(store.backend.get(K.branch_key(repo.uuid, "master"))) == child.id
    assert store.open_repo("r").version("master").uuid == child.uuid


# --- concurrent processes ----------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import os, sys, time
    import diced
    from diced.errors import DuplicateNameError, UnlockedNodeError, LockedNodeError

    loc, who, rounds, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    store = diced.Store(loc)
    repo = store.open_repo("conc")
    base = repo.root.uuid
    while not os.path.exists(go):
        time.sleep(0.001)
    master = 0
    for j in range(rounds):
        repo.branch(f"w{who}-{j}", parent=base)
        repo.create_keyvalue(f"kv{who}-{j}")
        repo.commit(f"w{who}-{j}")
        repo.tag(f"t{who}-{j}")
        while True:  # race the others along master
            repo.refresh()
            leaf = repo.version("master")
            if not leaf.locked:
                time.sleep(0.002)
                continue
            try:
                repo.newversion(f"m{who}-{j}", parent=leaf.uuid)
            except (DuplicateNameError, UnlockedNodeError):
                continue
            try:
                repo.commit()
            except LockedNodeError:
                pass
            master += 1
            break
    print("master", master)
""")


@pytest.mark.parametrize("kind", ["lmdb", "file"])
def test_processes_lose_no_metadata_update(tmp_path, kind):
    path = tmp_path / "s.diced"
    loc = str(path) if kind == "lmdb" else f"file://{path}"
    store = diced.Store(loc)
    repo = store.create_repo("conc")
    repo.commit("base")
    script = tmp_path / "w.py"
    script.write_text(WORKER)
    go = tmp_path / "go"
    workers, rounds = 4, 4
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, str(script), loc, str(w), str(rounds), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for w in range(workers)]
    time.sleep(0.5)
    go.write_text("go")
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()[-3000:]
    again = diced.Store(loc).open_repo("conc")
    want = {f"w{w}-{j}" for w in range(workers) for j in range(rounds)}
    assert want <= set(again.branches())
    assert {f"t{w}-{j}" for w in range(workers) for j in range(rounds)} == set(again.tags())
    assert {f"kv{w}-{j}" for w in range(workers) for j in range(rounds)} == \
        set(again._instance_records())
    # every version: branches, tags, master steps, root; ids unique and never reused
    total = 1 + 2 * workers * rounds + workers * rounds
    uuids = [again.dag.nodes[i].uuid for i in again.dag.nodes]
    assert len(uuids) == len(set(uuids)) == total
    assert len(again.log(again.version("master").uuid)) == 1 + workers * rounds
    assert all(again.dag.nodes[i].locked for i in again.dag.nodes)
    assert int(again.backend.get(K.vid_counter_key(again.uuid))) >= max(again.dag.nodes)
    if kind == "file":  # the open from the state snapshot agrees with a full load
        full = diced.Store(loc).open_repo("conc")
        full.refresh(full=True)
        assert again._state.instances == full._state.instances
        assert again.dag.refs == full.dag.refs and again.tags().keys() == full.tags().keys()
        assert sorted((n.id, n.uuid, n.locked, tuple(n.parents)) for n in again.dag.nodes.values()) \
            == sorted((n.id, n.uuid, n.locked, tuple(n.parents)) for n in full.dag.nodes.values())


# --- migration ----------------------------------------------------------------------------------

def _format2_copy(tmp_path):
    path = tmp_path / "format2.diced"
    path.mkdir()
    shutil.copy(DATA / "format2" / "data.mdb", path / "data.mdb")
    return path


def test_store_of_format_2_is_refused_then_migrates(tmp_path):
    path = _format2_copy(tmp_path)
    with pytest.raises(StoreFormatError, match="diced migrate"):
        diced.Store(path)
    store = diced.Store(path, migrate=True)
    assert [a for a, _ in store.list_repos()] == ["fly", "other"]
    repo = store.open_repo("fly")
    got = [(v.id, v.branch, v.tag, v.locked, v.note, len(v.parents)) for v in repo.versions()]
    assert got == [(1, "master", None, True, "first", 0), (2, "tag-v1", "v1", True, "", 1),
                   (3, "master", None, True, "second", 1), (4, "edit", None, True, "edit done", 1),
                   (5, "master", None, True, "third", 1), (6, "master", None, False, "merged", 2)]
    assert repo.root.log[0].endswith("made by make_format2_store.py")
    assert set(repo.branches()) == {"master", "edit"} and repo.branches()["edit"].id == 4
    assert repo.head.id == 6 and repo.tags()["v1"].parents == [repo.root.uuid]
    assert repo.instances() == {"files": "keyvalue", "gray": "array", "late": "keyvalue",
                                "seg": "labels"}
    gray = (np.arange(40 * 70 * 70) % 251).astype(np.uint8).reshape(40, 70, 70)
    np.testing.assert_array_equal(repo.version("v1").array("gray")[...], gray)
    gray[0, 0, 0:5] = 200
    np.testing.assert_array_equal(repo.array("gray")[...], gray)
    assert repo.version("edit").labels("seg")[25, 5, 5] == 7
    assert repo["files"].items() == [("a/b.json", b'{"x": 1}'), ("c", b"see"), ("d", b"dee")]
    assert repo["late"]["k"] == b"v"
    # and it goes on working: ids continue past the old ones, nothing is reused
    repo.commit("m")
    v = repo.newversion("after")
    assert v.id == 7
    store.close()
    again = diced.Store(path)  # current now
    assert again.open_repo("fly").head.note == "after"
    assert diced.Store(path, migrate=True).open_repo("other").versions()[0].id == 1


def test_interrupted_repo_split_is_redone(tmp_path, monkeypatch):
    import diced.migrate as M

    path = _format2_copy(tmp_path)
    calls = {"n": 0}
    real = M._split_repo

    def flaky(backend, repo, doc):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("power cut")
        return real(backend, repo, doc)

    monkeypatch.setattr(M, "_split_repo", flaky)
    with pytest.raises(OSError):
        diced.Store(path, migrate=True)
    with pytest.raises(StoreFormatError):
        diced.Store(path)  # still format 2 until every repo is converted
    store = diced.Store(path, migrate=True)
    assert sorted(a for a, _ in store.list_repos()) == ["fly", "other"]
    assert store.open_repo("fly").head.note == "merged"
