"""Deleting versions and branches, squashing, and garbage collection (diced.repo.gc).

The central check: after a collection, the stored values and index entries are exactly the
ones some remaining version can read, computed by brute force from a listing of every data
key (independently of diced's resolution code).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import diced
from diced.errors import InvalidArgumentError, UnlockedNodeError, VersionNotFoundError
from diced.repo import keys as K


@pytest.fixture(params=[False, True], ids=["plain", "dedup"])
def store(store_location, request):
    """Every test here runs on a plain and on a deduplicating store."""
    s = diced.Store(store_location, dedup=request.param, **store_location.options)
    yield s
    s.close()


def _versioned_keys(backend) -> tuple[set[str], set[str]]:
    data = set(backend.list_keys("d/"))
    index = set(backend.list_keys("w/"))
    return data, index


def _reachable(repo) -> tuple[set[str], set[str]]:
    """Brute force: for every remaining version and every key ever written, the key that
    version reads (the greatest writer id among its ancestors)."""
    repo.refresh()
    dag = repo.dag
    writers: dict[tuple[int, str], list[tuple[int, str]]] = {}
    for k in repo.backend.list_keys("d/"):
        ckey, vid, mark = K.parse_data_key(k)
        writers.setdefault((int(k[2:10], 16), ckey), []).append((vid, mark))
    data, index = set(), set()
    for vid in dag.nodes:
        anc = dag.ancestors(vid)
        for (space, ckey), ws in writers.items():
            seen = [w for w in ws if w[0] in anc]
            if seen:
                v, m = max(seen)
                data.add(K.data_key(space, ckey, v, m))
                index.add(K.index_key(space, v, ckey, m))
    return data, index


def _assert_exact(repo):
    data, index = _versioned_keys(repo.backend)
    want_data, want_index = _reachable(repo)
    assert data == want_data
    assert index == want_index
    # compacted indexes (object stores, file://) only of remaining versions
    ids = set(repo.dag.nodes)
    assert {int(k[11:19], 16) for k in repo.backend.list_keys("i/")} <= ids
    if repo.store.dedup:  # shared payloads: exactly those the remaining values refer to
        from diced.backends.checksum import ChecksummedBackend
        from diced.backends.dedup import _ref_of

        keys = sorted(data)
        refs = {k: _ref_of(v) for k, v in
                zip(keys, ChecksummedBackend.get_many(repo.backend, keys), strict=True)}
        raw = repo.store.raw_backend
        assert set(raw.list_keys("r/")) == {f"r/{h}/{k}" for k, h in refs.items() if h}
        assert set(raw.list_keys("x/")) == {f"x/{h}" for h in refs.values() if h}
        assert not list(raw.list_keys("q/"))


def _history(repo):
    """master: v0 (array, kv, labels) -> v1 -> v2 ; branch 'feat' off v1 with two versions;
    branch 'side' off v2 with one version; a tag on v1."""
    a = repo.create_array("img", "uint8", (64, 64), chunks=(16, 16))
    kv = repo.create_keyvalue("kv")
    lab = repo.create_labels("seg", (16, 16, 16), chunks=(8, 8, 8))
    a[:32, :32] = 1
    kv["a"] = b"one"
    lab[:8, :8, :8] = 5
    v0 = repo.commit("v0")
    repo.newversion()
    a[16:48, 16:48] = 2
    kv["b"] = b"two"
    del kv["a"]
    lab[4:12, 4:12, 4:12] = 6
    v1 = repo.commit("v1")
    repo.tag("t1", parent=v1.uuid)
    repo.newversion()
    a[:, :] = 3
    kv["a"] = b"three"
    v2 = repo.commit("v2")
    repo.branch("feat", parent=v1.uuid)
    a[40:, 40:] = 9
    kv["f"] = b"feat"
    lab[8:, 8:, 8:] = 7
    f1 = repo.commit("f1")
    repo.newversion()
    a[:8, :8] = 0  # back to fill: a tombstone
    kv["g"] = b"feat2"
    f2 = repo.commit("f2")
    repo.branch("side", parent=v2.uuid)
    a[10:20, 10:20] = 4
    s1 = repo.head
    return {"v0": v0, "v1": v1, "v2": v2, "f1": f1, "f2": f2, "s1": s1}


def _snapshot(repo, uuid):
    v = repo.version(uuid)
    a = v.array("img")[...]
    kv = dict(v.keyvalue("kv").items())
    seg = v.labels("seg")[...]
    return a, kv, seg


def _same(x, y):
    assert np.array_equal(x[0], y[0])
    assert x[1] == y[1]
    assert np.array_equal(x[2], y[2])


@pytest.mark.all_backends
def test_delete_branch_and_gc_reclaims_exactly_the_unreachable(store, repo):
    h = _history(repo)
    keep = {n: _snapshot(repo, h[n].uuid) for n in ("v0", "v1", "v2")}
    before_data, _ = _versioned_keys(repo.backend)
    deleted = repo.delete_branch("feat")
    assert deleted == [h["f2"].uuid, h["f1"].uuid]
    assert "feat" not in repo.branches()
    # nothing deleted yet: a pending record waits
    assert _versioned_keys(repo.backend)[0] == before_data
    assert before_data > _reachable(repo)[0]  # the branch's writes are garbage now
    report = repo.gc()
    assert report.versions == 2 and report.records == 1 and report.keys > 0
    _assert_exact(repo)
    for n, snap in keep.items():
        _same(_snapshot(repo, h[n].uuid), snap)
    # a fresh handle (cold caches) reads the same
    r2 = store.open_repo("test")
    _same(_snapshot(r2, h["v2"].uuid), keep["v2"])
    assert repo.gc().records == 0  # idempotent, nothing left


def test_delete_version_rules(repo):
    h = _history(repo)
    with pytest.raises(InvalidArgumentError, match="children"):
        repo.delete_version(h["v1"].uuid)  # has a child, a tag and a branch
    with pytest.raises(InvalidArgumentError, match="root"):
        repo.delete_version(repo.root.uuid)
    with pytest.raises(InvalidArgumentError, match="master"):
        repo.delete_branch("master")
    with pytest.raises(VersionNotFoundError):
        repo.delete_branch("nope")
    # the open leaf of 'side' can go; the head moves to its parent
    assert repo.head.uuid == h["s1"].uuid
    assert repo.delete_version(h["s1"].uuid) == [h["s1"].uuid]
    assert repo.head.uuid == h["v2"].uuid
    repo.gc()
    _assert_exact(repo)
    # a tag is a child; deleting the tag makes v1's tag go, v1 still has children
    repo.delete_version("t1")
    assert "t1" not in repo.tags()
    with pytest.raises(InvalidArgumentError, match="children"):
        repo.delete_version(h["v1"].uuid)


def test_delete_branch_stops_where_others_build(repo):
    h = _history(repo)
    repo.tag("keep", parent=h["f1"].uuid)
    assert repo.delete_branch("feat") == [h["f2"].uuid]
    assert repo.branches()["feat"].uuid == h["f1"].uuid
    with pytest.raises(InvalidArgumentError, match="children"):
        repo.delete_branch("feat")  # f1 carries a tag now
    repo.gc()
    _assert_exact(repo)


def test_instance_created_on_deleted_version_is_dropped(repo):
    repo.create_array("base", "uint8", (8, 8))
    repo.commit("v0")
    repo.branch("tmp")
    b = repo.create_array("scratch", "uint16", (32, 32), chunks=(8, 8))
    b[...] = 7
    repo.commit("t")
    sid = repo._doc["instances"]["scratch"]["id"]
    repo.delete_branch("tmp")
    assert "scratch" not in repo._doc["instances"]
    repo.gc()
    assert not list(repo.backend.list_keys(K.data_prefix(sid)))
    assert not list(repo.backend.list_keys(K.index_prefix(sid)))
    _assert_exact(repo)


@pytest.mark.all_backends
def test_squash_keeps_newest_content_and_children(repo):
    h = _history(repo)
    # squash v1 .. v2 is refused: v1 has a tag and a branch on it
    with pytest.raises(InvalidArgumentError, match="other children"):
        repo.squash(h["v1"].uuid, h["v2"].uuid)
    with pytest.raises(UnlockedNodeError):
        repo.squash(h["v2"].uuid, h["s1"].uuid)  # s1 is open
    with pytest.raises(InvalidArgumentError, match="root"):
        repo.squash(repo.root.uuid, h["v1"].uuid)
    want = {n: _snapshot(repo, h[n].uuid) for n in ("f2", "v2", "s1")}
    seg = repo.version(h["f2"].uuid).labels("seg")
    max_before = seg.maxlabel()
    v = repo.squash(h["f1"].uuid, h["f2"].uuid)
    assert v.uuid == h["f2"].uuid
    assert v.parents == [h["v1"].uuid]
    assert h["f1"].uuid not in {x.uuid for x in repo.versions()}
    assert "f1" in " ".join(v.log) or v.note == "f2"
    for n, snap in want.items():
        _same(_snapshot(repo, h[n].uuid), snap)
    assert repo.version(h["f2"].uuid).labels("seg").maxlabel() == max_before
    repo.gc()
    _assert_exact(repo)
    for n, snap in want.items():
        _same(_snapshot(repo, h[n].uuid), snap)


def test_other_processes_read_on_after_a_squash_and_gc(store_location):
    """Another process (a Store of its own: its own index caches) holding a handle on the
    kept version reads it on, exactly, after a squash and a GC elsewhere: the repo document
    counts squashes; a read that finds a collected value sees the count move, re-reads the
    repo, drops the stale caches and reads again. So does a new handle in that process."""
    opts = store_location.options
    s = diced.Store(store_location, **opts)
    repo = s.create_repo("sq")
    img = repo.create_array("img", "uint8", (64, 64), chunks=(16, 16))
    seg = repo.create_labels("seg", (16, 32, 32), chunks=(16, 16, 16))
    img[...] = 1
    seg[...] = 7
    vs = [repo.commit("0")]
    for i in range(1, 4):
        repo.newversion(str(i))
        img[16 * (i - 1):16 * i] = i + 1
        seg[:, :, 8 * (i - 1):8 * i] = 10 + i
        vs.append(repo.commit(str(i)))
    other = diced.Store(store_location, **opts)
    held = other.open_repo("sq").version(vs[-1].uuid)
    want = held.array("img")[...].copy(), held.labels("seg")[...].copy()
    diced.Store(store_location, **opts).open_repo("sq").squash(vs[1].uuid, vs[3].uuid)
    gc = diced.Store(store_location, **opts)
    gc.open_repo("sq").gc()
    from diced.backends.cache import chunk_cache

    chunk_cache().clear()  # (its chunks would answer without the index)
    assert np.array_equal(held.array("img")[...], want[0])  # no refresh
    assert np.array_equal(held.labels("seg")[...], want[1])
    fresh = other.open_repo("sq").version(vs[-1].uuid)
    assert np.array_equal(fresh.array("img")[...], want[0])
    assert np.array_equal(fresh.labels("seg")[...], want[1])
    for st in (s, other, gc):
        st.close()


def test_squash_long_run_with_instance_created_inside(repo):
    a = repo.create_array("a", "int32", (40,), chunks=(4,))
    repo.commit("root")
    repo.newversion()
    a[:10] = 1
    first = repo.commit("1")
    repo.newversion()
    kv = repo.create_keyvalue("late")
    kv["x"] = b"x"
    a[5:20] = 2
    a.resize(48)
    repo.commit("2")
    repo.newversion()
    del kv["x"]
    kv["y"] = b"y"
    a[0:4] = 0
    last = repo.commit("3")
    repo.newversion()
    a[30:] = 5
    child = repo.commit("4")
    want_last = repo.version(last.uuid).array("a")[...]
    want_child = repo.version(child.uuid).array("a")[...]
    v = repo.squash(first.uuid, last.uuid)
    assert v.parents == [repo.root.uuid]
    assert repo.version(last.uuid).array("a").shape == (48,)
    assert [x.uuid for x in repo.versions()] == [repo.root.uuid, last.uuid, child.uuid]
    assert "late" in repo.version(last.uuid).instances()
    assert np.array_equal(repo.version(last.uuid).array("a")[...], want_last)
    assert np.array_equal(repo.version(child.uuid).array("a")[...], want_child)
    assert repo.version(last.uuid)["late"]["y"] == b"y"
    assert "x" not in dict(repo.version(last.uuid)["late"].items())
    repo.gc()
    _assert_exact(repo)
    assert np.array_equal(repo.version(child.uuid).array("a")[...], want_child)


def test_gc_waits_for_interrupted_operations(repo):
    """A record whose versions still exist (crash before the metadata change) is kept."""
    from diced.repo import gc as G

    h = _history(repo)
    G._write_record(repo, [h["f2"].id], "interrupted")
    before = _versioned_keys(repo.backend)
    report = repo.gc()
    assert report.waiting == 1 and report.versions == 0
    assert _versioned_keys(repo.backend) == before
    _same(_snapshot(repo, h["f2"].uuid), _snapshot(repo, h["f2"].uuid))
    repo.delete_version(h["f2"].uuid)
    report = repo.gc()
    assert report.waiting == 0 and report.records == 2
    _assert_exact(repo)


_KILLER = textwrap.dedent("""
    import os, signal, sys
    import diced
    import diced.repo.gc
    diced.repo.gc._BATCH = 7
    import json
    store = diced.Store(sys.argv[1], **json.loads(sys.argv[3]))
    real = store.backend.delete_many
    calls = {"n": 0}
    def dying(keys):
        keys = list(keys)
        if any(k.startswith(("d/", "w/")) for k in keys):
            calls["n"] += 1
            if calls["n"] == int(sys.argv[2]):
                real(keys[: len(keys) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return real(keys)
    store.backend.delete_many = dying
    store.gc()
""")


@pytest.mark.parametrize("dedup", [False, True], ids=["plain", "dedup"])
@pytest.mark.parametrize("kill_at", [1, 3])
@pytest.mark.backends("lmdb", "file", "s3")
def test_gc_killed_midway_then_rerun_finishes(tmp_path, store_location, kill_at, dedup):
    import json

    url, options = str(store_location), dict(store_location.options)
    store = diced.Store(url, dedup=dedup, **options)
    repo = store.create_repo("test")
    h = _history(repo)
    repo.delete_branch("feat")
    repo.delete_version(h["s1"].uuid)
    keep = _snapshot(repo, h["v2"].uuid)
    store.close()
    script = tmp_path / "kill.py"
    script.write_text(_KILLER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, str(script), url, str(kill_at),
                           json.dumps(options)], env=env,
                          capture_output=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    store = diced.Store(url, **options)
    repo = store.open_repo("test")
    assert store.gc().records >= 1
    _assert_exact(repo)
    _same(_snapshot(repo, h["v2"].uuid), keep)
    store.close()


def test_gc_reads_only_what_the_garbage_names(store, repo):
    """No listing of whole key spaces or of the store: only the removed versions' indexes,
    the pending records and (dedup) the queue of payloads to check."""
    _history(repo)
    repo.delete_branch("feat")
    seen: list[str] = []
    backend = store.backend
    real_list, real_lists = backend.list_keys, backend.list_prefixes

    def list_keys(prefix="", start=None, stop=None):
        seen.append(prefix)
        return real_list(prefix, start, stop)

    def list_prefixes(prefixes):
        seen.extend(prefixes)
        return real_lists(prefixes)

    backend.list_keys, backend.list_prefixes = list_keys, list_prefixes
    try:
        report = repo.gc()
    finally:
        del backend.list_keys, backend.list_prefixes
    assert report.versions == 2
    feat = {v.id for v in repo.versions()}  # remaining ids: none of them is listed
    for p in seen:
        # repo metadata, the removed versions' indexes, the dedup queue: never d/ or ""
        assert p.startswith(("meta/", "w/", "i/", "q/", "r/")), p
        if p.startswith(("w/", "i/")):
            assert len(p) == len(K.index_prefix(0, 0)) and int(p[11:19], 16) not in feat, p
    _assert_exact(repo)


@pytest.mark.parametrize("seed", range(4))
def test_random_histories_against_a_model(store, seed):
    """Random writes, commits, branches, deletes, squashes and collections on a keyvalue;
    every remaining version must read what a plain-dict model says, and the store must hold
    exactly the reachable keys after each collection."""
    import random

    rnd = random.Random(seed)
    repo = store.create_repo(f"m{seed}")
    kv = repo.create_keyvalue("kv")
    pool = [bytes([i]) * 100 for i in range(4)] + [b"s%d" % i for i in range(3)]
    model: dict[str, dict[str, bytes]] = {}
    state: dict[str, bytes] = {}
    head_open = True

    def lock():
        nonlocal head_open
        v = repo.commit("c")
        model[v.uuid] = dict(state)
        head_open = False

    for _step in range(80):
        op = rnd.random()
        if head_open and op < 0.45:
            k = f"k{rnd.randrange(6)}"
            if rnd.random() < 0.2 and k in state:
                del kv[k]
                del state[k]
            else:
                state[k] = rnd.choice(pool)
                kv[k] = state[k]
        elif head_open and op < 0.6:
            lock()
        elif not head_open and op < 0.75:
            parent = rnd.choice(sorted(model))
            if rnd.random() < 0.5:
                repo.branch(f"b{_step}", parent=parent)
            else:
                try:
                    repo.newversion(parent=parent)
                except diced.errors.DuplicateNameError:
                    repo.branch(f"b{_step}", parent=parent)
            state = dict(model[parent])
            head_open = True
        elif op < 0.8:
            dag = repo.dag
            leaves = [n for n in dag.nodes.values()
                      if not dag.children[n.id] and n.id != dag.root.id and n.locked]
            if leaves:
                gone = rnd.choice(leaves)
                repo.delete_version(gone.uuid)
                model.pop(gone.uuid, None)
        elif op < 0.93:
            dag = repo.dag
            runs = [(n.parents[0], n.id) for n in dag.nodes.values()
                    if n.locked and len(n.parents) == 1 and n.parents[0] != dag.root.id
                    and dag.children[n.parents[0]] == [n.id] and dag.nodes[n.parents[0]].locked]
            if runs:
                a, b = rnd.choice(runs)
                repo.squash(dag.nodes[a].uuid, dag.nodes[b].uuid)
                model.pop(dag.nodes[a].uuid, None)
        else:
            repo.gc()
            _assert_exact(repo)
            for uuid, want in model.items():
                assert dict(repo.version(uuid)["kv"].items()) == want, uuid
        if head_open and repo.head.locked:
            head_open = False
    repo.gc()
    _assert_exact(repo)
    for uuid, want in model.items():
        assert dict(repo.version(uuid)["kv"].items()) == want, uuid


def test_delete_branch_through_its_merge_node(repo):
    """A branch ending in a merge goes back through first parents; the merged-in branch
    (the merge's other parent) stays."""
    a = repo.create_array("a", "uint8", (32,), chunks=(8,))
    a[:8] = 1
    base = repo.commit("base")
    repo.branch("x")
    a[8:16] = 2
    x1 = repo.commit("x1")
    repo.branch("y", parent=base.uuid)
    a[16:24] = 3
    y1 = repo.commit("y1")
    m = repo.merge(x1.uuid, y1.uuid, note="m")
    a[24:] = 4
    repo.commit("m")
    assert m.branch == "x"
    gone = repo.delete_branch("x")
    assert gone == [m.uuid, x1.uuid]
    assert repo.branches()["y"].uuid == y1.uuid
    repo.gc()
    _assert_exact(repo)
    assert list(repo.version(y1.uuid).array("a")[...]) == [1] * 8 + [0] * 8 + [3] * 8 + [0] * 8


def test_stale_handle_cannot_write_to_a_deleted_version(store, repo):
    from diced.errors import LockedNodeError

    a = repo.create_array("a", "uint8", (16,), chunks=(8,))
    repo.commit("v0")
    repo.branch("tmp")
    other = store.open_repo("test")  # another handle, its DAG read now
    stale = other.version(repo.head.uuid).array("a")
    stale[:4] = 1
    repo.delete_branch("tmp")
    repo.gc()
    with pytest.raises(LockedNodeError):
        stale[:8] = 2
    _assert_exact(repo)
    assert a.shape == (16,)


def test_records_of_a_deleted_repo_are_cleared(store, repo):
    _history(repo)
    repo.delete_branch("feat")
    store.delete_repo("test")
    report = store.gc()
    assert report.records == 1
    assert not list(store.backend.list_keys("meta/gc/"))
    assert not list(store.backend.list_keys("d/"))
