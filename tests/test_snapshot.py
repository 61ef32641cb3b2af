"""State snapshots (diced.repo.snapshot): a cold open on an object store in one round when
the snapshot is current, catch-up through the journal when it is not, a full load (which
stores a new one) when it cannot be used, and the same state as a full load in every case."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import diced
from diced.backends.checksum import ChecksummedBackend
from diced.errors import CorruptMetadataError, ReadOnlyStoreError, RepoNotFoundError
from diced.repo import history, snapshot
from diced.repo import keys as K
from diced.repo.dag import Node

pytestmark = pytest.mark.backends("memory", "file")


class Calls:
    """The backend calls (one per round of requests) a store's raw backend receives."""

    def __init__(self, backend) -> None:
        self.log: list[tuple[str, list[str]]] = []
        raw = backend.raw if isinstance(backend, ChecksummedBackend) else backend
        for name in ("get_many", "list_prefixes", "list_keys", "compare_and_set", "set_many"):
            setattr(raw, name, self._wrap(name, getattr(raw, name)))

    def _wrap(self, name, orig):
        def call(*args, **kw):
            arg = args[0] if args else ""
            self.log.append((name, list(arg) if isinstance(arg, list) else [arg]))
            return orig(*args, **kw)
        return call

    def names(self) -> list[str]:
        return [n for n, _ in self.log]


def _open(location):
    return diced.Store(location, **location.options)


@contextlib.contextmanager
def _opened(location):
    store = _open(location)
    try:
        yield store
    finally:
        store.close()


def _state(repo) -> tuple:
    """What a handle knows, comparable between handles."""
    d = repo._dag
    return (repo._state.meta_raw, repo._state.gen_raw, sorted(repo._state.instances.items()),
            sorted(d.refs.items()), sorted(repo._state.extra.get("tags", {}).items()),
            sorted((n.id, n.uuid, n.locked, tuple(n.parents), n.note) for n in d.nodes.values()))


def _full(location, name="r"):
    """The state a full load (no snapshot) gives."""
    store = _open(location)
    try:
        repo = store.open_repo(name)
        repo.refresh(full=True)
        return _state(repo)
    finally:
        store.close()


def _history(store):
    repo = store.create_repo("r")
    arr = repo.create_array("img", "uint8", (8, 8, 8), chunks=(4, 4, 4))
    arr[...] = 3
    v1 = repo.commit("one").uuid
    repo.newversion("two")
    arr[:4] = 5
    repo.branch("side", "a branch", parent=v1)
    repo.tag("t1", parent=v1)
    return repo, v1


@pytest.mark.backends("memory", "file", "s3")
def test_cold_open_after_a_commit_is_one_round(store_location):
    with _opened(store_location) as store:
        repo, v1 = _history(store)
        repo.commit("locked side")
        repo.commit("locked two", uuid=repo.version("master").uuid)  # every version locked
    want = _full(store_location)
    with _opened(store_location) as fresh:
        calls = Calls(fresh.backend)
        repo = fresh.open_repo("r")
        # the alias, then the journal, head, document, id counter and snapshot in one
        # round; no listing
        assert calls.names() == ["get_many", "get_many"], calls.log
        assert set(calls.log[1][1]) == {K.gen_key(repo.uuid), K.head_key(repo.uuid),
                                        K.repo_key(repo.uuid), K.snapshot_key(repo.uuid),
                                        K.vid_counter_key(repo.uuid)}
        assert _state(repo) == want
        assert np.array_equal(repo.version(v1).array("img")[...], np.full((8, 8, 8), 3))
        assert repo.branches()["side"] and "t1" in repo.tags()
    # an open version adds one round: its lock key decides whether it is locked, and its
    # record must still be there (see test_a_withdrawn_record_...)
    with _opened(store_location) as store:
        opened = store.open_repo("r").newversion("open")
        calls = Calls(store.backend)
        repo = store.open_repo("r")
        assert calls.names() == ["get_many"] * 4, calls.log  # + catch-up, + the lock keys
        assert calls.log[3][1] == [K.lock_key(repo.uuid, opened.id),
                                   K.node_key(repo.uuid, opened.id)], calls.log
        assert _state(repo) == _full(store_location)


def test_opening_a_store_is_one_round(store_location, tmp_path):
    """Opening an existing store reads its chain, routes, format, migration and dedup
    records in one round (they were four rounds, one after another), deduplicating stores
    included; a damaged dedup marker still fails its checksum."""
    from diced.backends import open_backend
    from diced.backends.dedup import DEDUP_KEY
    from diced.errors import ChecksumError

    _open(store_location).close()  # made
    for location, options in ((store_location, store_location.options),
                              (tmp_path / "dedup.lmdb", {})):
        if options is not store_location.options:
            diced.Store(location, dedup=True).close()
        raw = open_backend(location, **options)
        calls = Calls(raw)
        store = diced.Store(raw)
        assert calls.names() == ["get_many"], calls.log
        assert set(calls.log[0][1]) == {"~c/chain", "meta/routes", K.FORMAT_KEY,
                                        K.MIGRATE_KEY, DEDUP_KEY}
        assert store.dedup == (location != store_location)
        store.close()
    raw = open_backend(tmp_path / "dedup.lmdb")
    try:
        raw.set(DEDUP_KEY, b"1")  # unframed: no checksum trailer
        with pytest.raises(ChecksumError):
            diced.Store(raw)
    finally:
        raw.close()


def test_changes_after_the_snapshot_are_caught_up_through_the_journal(store_location):
    with _opened(store_location) as store:
        repo, v1 = _history(store)
        repo.commit("locked two")
        # changes that publish no snapshot: an instance, a branch, a tag, a new version,
        # a note, a deleted instance
        three = repo.newversion("three").uuid
        repo.create_keyvalue("kv")["k"] = b"v"
        repo.branch("more", "another branch", parent=v1)
        repo.tag("t2", parent=v1)
        repo._update_node(repo._node(v1).id, lambda rec: rec.__setitem__("note", "edited note"))
        repo.create_keyvalue("gone")
        repo.delete_instance("gone")
    with _opened(store_location) as fresh:
        calls = Calls(fresh.backend)
        repo = fresh.open_repo("r")
        assert "list_prefixes" not in calls.names() and "list_keys" not in calls.names()
        # the alias, the snapshot, the catch-up, the lock keys of the open versions
        assert calls.names() == ["get_many"] * 4, calls.log
        assert sorted(repo._instance_records()) == ["img", "kv"]
        assert set(repo.branches()) >= {"side", "more"} and {"t1", "t2"} <= set(repo.tags())
        assert repo.version(v1).note == "edited note"
        assert repo.version(three)["kv"]["k"] == b"v"
        assert _state(repo) == _full(store_location)


def test_no_snapshot_or_a_damaged_one_means_a_full_load_that_stores_one(store_location, caplog):
    with _opened(store_location) as store:
        repo, _ = _history(store)
        uuid = repo.uuid
        store.backend.delete(K.snapshot_key(uuid))
    want = _full(store_location)
    for damage in (None, b"garbage", snapshot._MAGIC + b"not zlib",
                   snapshot.encode(snapshot.Raws(b"{}", b"{}", b"1"), 10 ** 9)):
        with _opened(store_location) as store:
            if damage is None:
                store.backend.delete(K.snapshot_key(uuid))
            else:
                store.backend.set(K.snapshot_key(uuid), damage)
            calls = Calls(store.backend)
            with caplog.at_level(logging.WARNING, "diced.repo"):
                repo = store.open_repo("r")
            assert _state(repo) == want
            assert "list_prefixes" in calls.names() or "list_keys" in calls.names()
            stored = store.backend.get(K.snapshot_key(uuid))
            assert stored is not None and stored != damage  # replaced by the full load
            assert snapshot.decode(stored, uuid)[1] == repo._state.gen_n
    assert "unreadable metadata snapshot" in caplog.text or "does not load" in caplog.text


def test_a_later_snapshot_is_not_replaced_by_an_earlier_one(store_location):
    with _opened(store_location) as store:
        repo, _ = _history(store)
        key = K.snapshot_key(repo.uuid)
        late = snapshot.encode(snapshot.Raws(b"{}", b"{}", b"1"), 10 ** 6)
        store.backend.set(key, late)
        raws = snapshot.Raws(b"{}", b"{}", b"1")
        snapshot.publish(store.backend, repo.uuid, raws, 5)
        assert store.backend.get(key) == late
        snapshot.publish(store.backend, repo.uuid, raws, 10 ** 6 + 1)
        assert snapshot.decode(store.backend.get(key), repo.uuid)[1] == 10 ** 6 + 1


def test_a_change_without_its_journal_entry_is_seen_from_the_next_full_load(store_location):
    with _opened(store_location) as store:
        repo, _ = _history(store)
        uuid = repo.uuid
        # a writer killed between writing a record and bumping the journal: an instance
        # record nobody journaled
        rec = dict(repo._instance_records()["img"], name="orphan")
        store.backend.set(K.instance_key(uuid, "orphan"), history.dump_doc(rec))
    with _opened(store_location) as store:
        assert "orphan" not in store.open_repo("r").instances()  # the snapshot's state
        repo = store.open_repo("r")
        repo.refresh(full=True)  # a full load sees it and stores a new snapshot
        assert "orphan" in repo.instances()
        assert "orphan" in store.open_repo("r").instances()


def test_a_document_changed_without_the_journal_is_a_full_load(store_location):
    with _opened(store_location) as store:
        repo, _ = _history(store)
        repo.refresh(full=True)  # a snapshot of the current journal
        doc = history.load_doc(store.backend.get(K.repo_key(repo.uuid)), "doc")
        doc["description"] = "changed behind the journal's back"
        store.backend.set(K.repo_key(repo.uuid), history.dump_doc(doc))
    with _opened(store_location) as store:
        calls = Calls(store.backend)
        repo = store.open_repo("r")
        assert repo.description == "changed behind the journal's back"
        assert "list_prefixes" in calls.names() or "list_keys" in calls.names()


def test_a_damaged_or_deleted_document_raises_despite_the_snapshot(store_location):
    with _opened(store_location) as store:
        repo, _ = _history(store)
        assert store.backend.get(K.snapshot_key(repo.uuid)) is not None
        store.backend.set(K.repo_key(repo.uuid), b"\x00garbage")
        with pytest.raises(CorruptMetadataError):
            store.open_repo("r")
        store.backend.delete(K.repo_key(repo.uuid))
        with pytest.raises(RepoNotFoundError):
            store.open_repo("r")


def test_a_store_that_refuses_the_snapshot_still_opens(store_location, monkeypatch):
    store = _open(store_location)
    try:
        repo, _ = _history(store)
        uuid = repo.uuid
        store.backend.delete(K.snapshot_key(uuid))
        want = _state(store.open_repo("r"))
        store.backend.delete(K.snapshot_key(uuid))
        backend = store.backend

        def refuse(key, expected, new):
            raise ReadOnlyStoreError(f"{key} is read-only")

        monkeypatch.setattr(backend, "compare_and_set", refuse)
        assert _state(store.open_repo("r")) == want
        assert backend.get(K.snapshot_key(uuid)) is None
    finally:
        monkeypatch.undo()
        store.close()


def test_long_histories_keep_their_packs_in_the_snapshot_or_read_them(store_location,
                                                                      monkeypatch):
    with _opened(store_location) as store:
        repo = store.create_repo("r")
        repo.commit("root")
        root = repo._dag.nodes[repo._head_id]
        nodes = []
        for vid in range(2, 2 + 2 * history.PACK_MIN):
            nodes.append(Node(f"{vid:032x}", vid, [vid - 1], locked=True, note=f"n{vid}"))
        history.bulk_append(store.backend, repo.uuid, nodes, refs={"": nodes[-1].id})
        assert root.id == 1
    want = _full(store_location)
    assert history.load_doc(_open(store_location).backend.get(K.repo_key(
        _open(store_location).open_repo("r").uuid)), "d")["packs"]
    for limit, rounds in ((snapshot.PACKS_MAX, 2), (0, 3)):
        monkeypatch.setattr(snapshot, "PACKS_MAX", limit)
        with _opened(store_location) as store:
            store.open_repo("r").refresh(full=True)  # a snapshot with or without the packs
            fresh = _open(store_location)
            calls = Calls(fresh.backend)
            repo = fresh.open_repo("r")
            assert calls.names() == ["get_many"] * rounds, calls.log
            assert _state(repo) == want
            assert repo.version(f"{2 * history.PACK_MIN + 1:032x}").note == \
                f"n{2 * history.PACK_MIN + 1}"
            fresh.close()


def test_deleting_a_repo_deletes_its_snapshot(store_location):
    with _opened(store_location) as store:
        repo, _ = _history(store)
        uuid = repo.uuid
        assert store.backend.get(K.snapshot_key(uuid)) is not None
        store.delete_repo("r")
        assert store.backend.get(K.snapshot_key(uuid)) is None


@pytest.mark.backends("lmdb")
def test_lmdb_keeps_no_snapshot(store_location):
    with _opened(store_location) as store:
        repo, _ = _history(store)
        repo.commit("locked")
        assert store.open_repo("r").instances()
        assert store.backend.get(K.snapshot_key(repo.uuid)) is None


@pytest.mark.backends("memory", "file", "s3")
def test_a_cold_read_of_a_branch_tip_needs_no_round_for_its_index(store_location):
    with _opened(store_location) as store:
        repo = store.create_repo("r")
        arr = repo.create_array("img", "uint16", (16, 16, 16), chunks=(8, 8, 8))
        arr[...] = np.arange(16 ** 3, dtype=np.uint16).reshape((16,) * 3)
        v1 = repo.commit("one").uuid
        repo.newversion("two")
        arr[:8] = 7
        v2 = repo.commit("two").uuid
    with _opened(store_location) as fresh:
        calls = Calls(fresh.backend)
        got = fresh.open_repo("r").version(v2).array("img")[...]
        keys = [k for _, ks in calls.log for k in ks]
        assert not [k for k in keys if k.startswith("i/")], calls.log  # the snapshot's table
        # the alias, the snapshot round, then only chunks (in concurrent groups)
        assert set(calls.names()) == {"get_many"}, calls.log
        assert all(k.startswith("d/") for _, ks in calls.log[2:] for k in ks), calls.log
        want = np.arange(16 ** 3, dtype=np.uint16).reshape((16,) * 3)
        want[:8] = 7
        assert np.array_equal(got, want)
        # an older version's table is read from the store as before
        n = len(calls.log)
        assert np.array_equal(fresh.open_repo("r").version(v1).array("img")[...],
                              np.arange(16 ** 3, dtype=np.uint16).reshape((16,) * 3))
        assert any(k.startswith("i/") for _, ks in calls.log[n:] for k in ks)


def test_a_squash_leaves_no_snapshot_with_dropped_tables_current(store_location):
    with _opened(store_location) as store:
        repo = store.create_repo("r")
        arr = repo.create_array("img", "uint8", (8, 8, 8), chunks=(4, 4, 4))
        want = np.zeros((8, 8, 8), np.uint8)
        uuids = []
        for i in range(4):
            arr[i * 2:i * 2 + 2] = i + 1
            want[i * 2:i * 2 + 2] = i + 1
            uuids.append(repo.commit(f"v{i}").uuid)
            repo.newversion(f"after {i}")
        stamp = store.backend.get(K.snapshot_key(repo.uuid))
        repo.squash(uuids[1], uuids[3])
        # the snapshot of before the squash is no longer current: its tables are not used
        assert snapshot.decode(stamp, repo.uuid)[0].gen != store.backend.get(K.gen_key(repo.uuid))
    with _opened(store_location) as fresh:
        assert np.array_equal(fresh.open_repo("r").version(uuids[3]).array("img")[...], want)


def test_a_commit_stores_its_snapshot_without_rereading_the_records(store_location):
    with _opened(store_location) as store:
        repo, _ = _history(store)
        repo.commit("two")
        for i in range(5):
            repo.newversion(f"v{i}")
            repo.array("img")[0] = i
            repo.commit(f"c{i}")
        last = repo.newversion("last")
        calls = Calls(store.backend)
        repo.commit("locked last")
        read = [k for n, ks in calls.log if n == "get_many" for k in ks]
        # only the committed version's own record (the lock's compare-and-set), not the
        # other records past the last pack as a full load would
        assert {k for k in read if k.startswith("meta/node/")} <= \
            {K.node_key(repo.uuid, last.id)}, read
        assert _state(store.open_repo("r")) == _full(store_location)
        # a record the committing handle does not know (its journal entry never written)
        # makes the commit's snapshot a full load's, which sees it
        rec = dict(repo._instance_records()["img"], name="orphan")
        store.backend.set(K.instance_key(repo.uuid, "orphan"), history.dump_doc(rec))
        assert "orphan" not in store.open_repo("r")._instance_records()
        repo.newversion("more")
        repo.commit("sees the orphan")
        assert "orphan" in store.open_repo("r")._instance_records()
        assert "orphan" in repo._instance_records()


@pytest.mark.backends("file")  # (memory changes many keys in one transaction)
def test_a_failed_change_a_full_load_read_mid_way_is_not_kept(store_location):
    """A newversion that loses its race writes its record, finds the ref moved and swaps the
    record back; a full load in between read the record and stored it in the snapshot. The
    withdrawn change names what it touched in the journal, so opens do not keep it."""
    with _opened(store_location) as store:
        repo, _ = _history(store)
        parent = repo.commit("two", uuid=repo.version("master").uuid).uuid
    loser, winner, reader = _open(store_location), _open(store_location), _open(store_location)
    try:
        b = loser.open_repo("r")
        uuid = b.uuid
        raw = loser.backend.raw if isinstance(loser.backend, ChecksummedBackend) \
            else loser.backend
        cas = raw.compare_and_set
        seen: list[bool] = []

        def racing(key, old, new):
            if key == K.branch_key(uuid, "master") and not seen:
                seen.append(True)
                winner.open_repo("r").newversion("won", parent=parent)
                full = reader.open_repo("r")
                full.refresh(full=True)  # reads the loser's record; stores a snapshot
                assert len(full.dag.nodes) == len(b.dag.nodes) + 2
            return cas(key, old, new)

        raw.compare_and_set = racing
        with pytest.raises(diced.errors.DuplicateNameError):
            b.newversion("lost", parent=parent)
        raw.compare_and_set = cas
        assert seen
    finally:
        for s in (loser, winner, reader):
            s.close()
    with _opened(store_location) as store:
        repo = store.open_repo("r")
        assert "lost" not in {n.note for n in repo.dag.nodes.values()}
        assert _state(repo) == _full(store_location)


@pytest.mark.parametrize("kind", ["open", "tag"])
def test_a_withdrawn_record_without_its_journal_entry_is_not_kept(store_location, kind):
    """As above, but the failed change was killed after swapping its record back and before
    its journal entry: the open reads the records of the snapshot's open versions and of its
    tag versions without a tag ref, finds one gone, and loads fully."""
    with _opened(store_location) as store:
        repo, v1 = _history(store)
        repo.commit("two")
        uuid = repo.uuid
        vid = int(store.backend.get(K.vid_counter_key(uuid))) + 1
        store.backend.set(K.vid_counter_key(uuid), str(vid).encode())
        tag = "ghost" if kind == "tag" else None
        node = Node("ab" * 16 if tag is None else tag, vid, [repo.version(v1).id], "",
                    "withdrawn", [], locked=tag is not None, tag=tag)
        store.backend.set(K.node_key(uuid, vid), history.node_record(node))
        repo.refresh(full=True)  # the snapshot holds it
        assert vid in repo.dag.nodes
        store.backend.delete(K.node_key(uuid, vid))  # swapped back; no journal entry
    with _opened(store_location) as store:
        repo = store.open_repo("r")
        assert vid not in repo.dag.nodes
        assert _state(repo) == _full(store_location)
        calls = Calls(store.backend)
        assert _state(store.open_repo("r")) == _state(repo)  # the full load's new snapshot
        assert "list_prefixes" not in calls.names(), calls.log


# --- faults ----------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    import diced

    store = diced.Store(sys.argv[1])
    run = sys.argv[2]
    repo = store.open_repo("r")
    i = 0
    while True:
        i += 1
        leaf = repo.version("master")
        if not leaf.locked:  # the last writer was killed before this commit
            repo.commit("resumed", uuid=leaf.uuid)
        child = repo.newversion(f"n{run}-{i}", parent=leaf.uuid)
        repo.create_keyvalue(f"kv{run}-{i}")["k"] = b"v"
        if i % 3 == 0:
            repo.tag(f"t{run}-{i}", parent=repo.root.uuid)
        if i % 4 == 0:
            side = repo.branch(f"b{run}-{i}", parent=repo.root.uuid)
            repo.commit(f"side {run}-{i}", uuid=side.uuid)
        repo.commit(f"c{run}-{i}", uuid=child.uuid)
        print(i, flush=True)
""")


@pytest.mark.backends("file")
def test_opens_after_a_writer_killed_mid_change_agree_with_full_loads(store_location, tmp_path):
    """A writer killed at random points of its changes and commits (SIGKILL): every open
    from the snapshot works and shows nothing a full load does not, with the same lock
    states (the lock keys decide); after a full load, an open equals it."""
    with _opened(store_location) as store:
        store.create_repo("r").commit("root")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = random.Random(5)
    for run in range(10):
        proc = subprocess.Popen([sys.executable, str(script), str(store_location), str(run)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            assert proc.stdout is not None and proc.stdout.readline(), proc.stderr.read()
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            proc.kill()
            proc.wait(30)
        with _opened(store_location) as store:
            snap = store.open_repo("r")
            full = store.open_repo("r")
            full.refresh(full=True)
            seen = {n.uuid: n.locked for n in snap.dag.nodes.values()}
            truth = {n.uuid: n.locked for n in full.dag.nodes.values()}
            assert seen.items() <= truth.items()
            assert set(snap._instance_records()) <= set(full._instance_records())
            assert snap.dag.refs.items() <= full.dag.refs.items()
            assert _state(store.open_repo("r")) == _state(full)


@pytest.mark.parametrize("doc", [{"n": 1, "packs": [1, 2]}, {"n": "x"}, [], {"n": 1, "tail": [[1]]}])
def test_snapshots_of_the_wrong_shape_read_as_none(doc):
    import json
    import zlib

    raw = snapshot._MAGIC + zlib.compress(json.dumps(doc).encode())
    assert snapshot.decode(raw, "r") is None
