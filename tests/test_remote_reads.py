"""Reads on stores without ordered scans (object stores, file://, memory://).

* Locked versions get a compacted chunk index at commit (``repo/manifests.py``): a cold read
  at a version 2,000 deep costs the same requests as at depth 1 (counted on a wrapped
  backend; never timed).
* The index equals the brute-force "greatest writer among the ancestors" at every version of
  a DAG with branches, merges and deletes, whether built at commit, lazily from nothing (an
  old store) or from partly missing tables.
* Listing several manifests costs one concurrent round (``Backend.list_prefixes``).
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import numpy as np
import pytest

import diced
from diced.backends.checksum import ChecksummedBackend
from diced.errors import CorruptDataError
from diced.repo import keys as K
from diced.repo import manifests as M
from diced.repo import resolve
from diced.repo.resolve import VersionCtx, VersionedSpace
from diced.repo.writers import lock_version

pytestmark = pytest.mark.usefixtures("no_chunk_cache")


class Counting:
    """Counts the requests a backend would send: one per key read, one per listed prefix,
    one per key written or deleted (wrapping the raw backend's methods)."""

    def __init__(self, backend) -> None:
        self.calls: Counter[str] = Counter()
        raw = backend.raw if isinstance(backend, ChecksummedBackend) else backend
        self._inside = threading.local()
        self.log: list = []
        for name in ("get_many", "visit_many", "list_prefixes", "set_many", "delete_many",
                     "apply"):
            orig = getattr(raw, name)
            setattr(raw, name, self._wrap(name, orig))
        orig_list = raw.list_keys

        def list_keys(prefix="", start=None, stop=None):
            self.calls["list"] += 1
            return orig_list(prefix, start, stop)

        raw.list_keys = list_keys

    def _wrap(self, name, orig):
        def call(arg, *rest):
            if getattr(self._inside, "on", False):  # visit_many -> get_many: counted once
                return orig(arg, *rest)
            n = len(arg)
            self.log.append((name, list(arg)[:3]))
            if name in ("get_many", "visit_many"):
                self.calls["get"] += n
            elif name == "list_prefixes":
                self.calls["list"] += n
            else:
                self.calls["write"] += n
            self._inside.on = True
            try:
                return orig(arg, *rest)
            finally:
                self._inside.on = False
        return call

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _chain(store, depth):
    """A chain of ``depth`` locked versions, each rewriting a different part; returns the
    last locked version's uuid and what it shows."""
    repo = store.create_repo("r")
    arr = repo.create_array("img", "uint16", (16, 16, 16), chunks=(8, 8, 8))
    ref = np.zeros((16, 16, 16), np.uint16)
    uuid = None
    for i in range(depth):
        z, y = divmod(i % 4, 2)
        ref[8 * z:8 * z + 8, 8 * y:8 * y + 8, :] = i + 1
        arr[8 * z:8 * z + 8, 8 * y:8 * y + 8, :] = i + 1
        uuid = repo.commit(f"v{i}").uuid
        repo.newversion(f"after v{i}")
    return uuid, ref


@pytest.mark.all_backends
def test_list_prefixes_equals_list_prefix(store_location):
    store = diced.Store(store_location, **store_location.options)
    try:
        _chain(store, 3)
        b = store.backend
        prefixes = ["w/", "meta/", "nothing-here/", "w/00000001/", ""]
        assert b.list_prefixes(prefixes) == [b.list_prefix(p) for p in prefixes]
        assert b.list_prefixes([]) == []
    finally:
        store.close()


@pytest.mark.all_backends
def test_fresh_store_reads_locked_version_without_listing_manifests(store_location):
    store = diced.Store(store_location, **store_location.options)
    try:
        uuid, ref = _chain(store, 6)
    finally:
        store.close()
    fresh = diced.Store(store_location, **store_location.options)
    try:
        arr = fresh.open_repo("r").array("img").at(uuid)
        count = Counting(fresh.backend)
        assert np.array_equal(arr[...], ref)
        assert np.array_equal(arr[3:13, 5:9, 2:15], ref[3:13, 5:9, 2:15])
        if store_location.kind != "lmdb":  # LMDB resolves by ordered scans, no index
            assert count.calls["list"] == 0, count.calls  # one table GET, no manifest listing
            assert count.calls["write"] == 0
            # the same answer when the index is rebuilt from the manifests, one by one
            inst = arr._space.inst
            fresh.backend.delete_many(list(fresh.backend.list_keys(K.compact_prefix(inst))))
            resolve._manifests(fresh.backend).forget(inst)
            assert np.array_equal(arr[...], ref)
    finally:
        fresh.close()


# --- request counts at depth ------------------------------------------------------------


def _synthetic_chain(backend, inst: int, depth: int, writes_every: int = 7) -> list[VersionCtx]:
    """A linear history of ``depth`` locked versions written straight through the versioned
    space (fast: no repo document), each compacted as ``Repo.commit`` does."""
    space = VersionedSpace(backend, inst, kind="chunk")
    man = M.manifests(backend)
    ctxs = []
    anc: set[int] = set()
    for vid in range(1, depth + 1):
        anc.add(vid)
        ctx = VersionCtx("repo0", vid, frozenset(anc), False)
        if vid == 1:
            space.write(ctx, {K.chunk_ckey((z, y, x)): bytes([z, y, x, 1])
                              for z in range(4) for y in range(4) for x in range(4)})
        elif vid % writes_every == 0:
            c = (vid % 4, (vid // 4) % 4, 0)
            if vid % 5 == 0:
                space.delete(ctx, [K.chunk_ckey(c)])
            else:
                space.write(ctx, {K.chunk_ckey(c): vid.to_bytes(4, "little")})
        lock_version(backend, "repo0", vid)
        ctx = VersionCtx("repo0", vid, frozenset(anc), True)
        man.table(inst, vid, ctx.ancestors)
        ctxs.append(ctx)
    return ctxs


def _cold_read_requests(location, inst: int, ctx: VersionCtx, ckeys) -> tuple[int, list]:
    store = diced.Store(location, **location.options)
    try:
        count = Counting(store.backend)
        got = VersionedSpace(store.backend, inst, kind="chunk").read_many(ckeys, ctx)
        return count.total, got
    finally:
        store.close()


def _brute(backend, inst: int, ctx: VersionCtx, ckeys) -> list[bytes | None]:
    best: dict[str, tuple[int, str]] = {}
    for vid in sorted(ctx.ancestors):
        for k in backend.list_keys(K.index_prefix(inst, vid)):
            _, c, mark = K.parse_index_key(k)
            best[c] = (vid, mark)
    out = []
    for c in ckeys:
        hit = best.get(c)
        out.append(None if hit is None or hit[1] == K.TOMB
                   else backend.get(K.data_key(inst, c, hit[0])))
    return out


@pytest.mark.backends("memory", "file")
def test_cold_read_at_depth_2000_costs_what_depth_1_costs(store_location):
    # memory:// lists by scanning its whole dict: 500 deep there keeps the test quick
    depth = 2000 if store_location.kind == "file" else 500
    opts = {"durable": False} if store_location.kind == "file" else {}
    store = diced.Store(store_location, create=True, **store_location.options, **opts)
    inst = 7
    try:
        ctxs = _synthetic_chain(store.backend, inst, depth)
        ckeys = [K.chunk_ckey((z, y, x)) for z in range(4) for y in range(4) for x in range(2)]
        expect_deep = _brute(store.backend, inst, ctxs[-1], ckeys)
        expect_1 = _brute(store.backend, inst, ctxs[0], ckeys)
    finally:
        store.close()
    n1, got1 = _cold_read_requests(store_location, inst, ctxs[0], ckeys)
    n2000, got2000 = _cold_read_requests(store_location, inst, ctxs[-1], ckeys)
    assert len(ctxs[-1].ancestors) == depth
    assert got1 == expect_1 and got2000 == expect_deep
    assert any(v is None for v in got2000)  # tombstones resolve
    # table + chunk GETs (the deep table is a reference to its last writer's: one more GET)
    assert n2000 <= n1 + 1, (n1, n2000)
    assert n2000 <= len(ckeys) + 3


@pytest.mark.backends("memory", "file")
def test_open_version_at_depth_reads_parent_index_and_own_listing(store_location):
    store = diced.Store(store_location, create=True, **store_location.options)
    inst = 9
    try:
        ctxs = _synthetic_chain(store.backend, inst, 300, writes_every=3)
        top = ctxs[-1]
        ctx = VersionCtx("repo0", top.vid + 1, top.ancestors | {top.vid + 1}, False)
        space = VersionedSpace(store.backend, inst, kind="chunk")
        space.write(ctx, {K.chunk_ckey((0, 0, 0)): b"own"})
        ckeys = [K.chunk_ckey((z, 0, x)) for z in range(4) for x in range(4)]
        expect = _brute(store.backend, inst, ctx, ckeys)
    finally:
        store.close()
    fresh = diced.Store(store_location, **store_location.options)
    try:
        count = Counting(fresh.backend)
        got = VersionedSpace(fresh.backend, inst, kind="chunk").read_many(ckeys, ctx)
        assert got == expect and got[0] == b"own"
        assert count.calls["list"] == 1  # the open version's own manifest only
        assert count.calls["get"] <= len(ckeys) + 2
    finally:
        fresh.close()


@pytest.mark.backends("s3")
def test_cold_read_at_depth_on_s3(store_location):
    store = diced.Store(store_location, create=True, **store_location.options)
    inst = 11
    try:
        ctxs = _synthetic_chain(store.backend, inst, 120, writes_every=5)
    finally:
        store.close()
    ckeys = [K.chunk_ckey((z, 1, x)) for z in range(4) for x in range(4)]
    n1, _ = _cold_read_requests(store_location, inst, ctxs[0], ckeys)
    n120, got = _cold_read_requests(store_location, inst, ctxs[-1], ckeys)
    store = diced.Store(store_location, **store_location.options)
    try:
        assert got == _brute(store.backend, inst, ctxs[-1], ckeys)
    finally:
        store.close()
    assert n120 <= n1 + 1, (n1, n120)


# --- correctness on a DAG with branches, merges, deletes ---------------------------------


def _random_dag(store, seed: int = 3, steps: int = 40):
    """A repo whose history branches and merges (disjoint edits, so merges are clean), with
    keyvalue deletes; returns (repo, instance name, every locked version uuid)."""
    rng = random.Random(seed)
    repo = store.create_repo("dag")
    kv = repo.create_keyvalue("kv")
    arr = repo.create_array("a", "uint8", (32, 32, 32), chunks=(8, 8, 8))
    arr[...] = 1
    kv["k0"] = b"root"
    root = repo.commit("root")
    leaves = [root]
    locked = [root.uuid]
    for step in range(steps):
        parent = rng.choice(leaves)
        if len(leaves) > 1 and rng.random() < 0.25:
            other = rng.choice([v for v in leaves if v.uuid != parent.uuid])
            merged = repo.merge(parent, other, note=f"m{step}", strategy=0)
            v = repo.commit(uuid=merged.uuid)
            leaves = [x for x in leaves if x.uuid not in (parent.uuid, other.uuid)] + [v]
            locked.append(v.uuid)
            continue
        child = repo.branch(f"b{step}", parent=parent) if rng.random() < 0.3 else \
            repo.newversion(parent=parent)
        a = repo.version(child.uuid).array("a")
        z, y, x = (rng.randrange(4) * 8 for _ in range(3))
        a[z:z + 8, y:y + 8, x:x + 5] = step + 2
        k = repo.version(child.uuid).keyvalue("kv")
        key = f"k{rng.randrange(6)}"
        if rng.random() < 0.3:
            if key in k:
                del k[key]
        else:
            k[key] = f"s{step}".encode()
        v = repo.commit(uuid=child.uuid)
        leaves = [x for x in leaves if x.uuid != parent.uuid] + [v]
        locked.append(v.uuid)
    return repo, locked


def _snapshot(repo, uuids):
    out = {}
    for u in uuids:
        ver = repo.version(u)
        kv = ver.keyvalue("kv")
        out[u] = (ver.array("a")[...].copy(), {k: kv[k] for k in kv})
    return out


def _brute_entries(backend, inst, ancestors):
    best: dict[str, tuple[int, str]] = {}
    for vid in sorted(ancestors):
        for k in backend.list_keys(K.index_prefix(inst, vid)):
            _, c, mark = K.parse_index_key(k)
            best[c] = (vid, mark)
    return best


@pytest.mark.backends("memory", "file")
def test_compacted_index_matches_brute_force_on_a_dag(store_location):
    store = diced.Store(store_location, create=True, **store_location.options)
    try:
        repo, locked = _random_dag(store)
        insts = [repo._doc["instances"][n]["id"] for n in ("a", "kv")]
        for u in locked:
            vid = repo._node(u).id
            ctx = repo._ctx(vid)
            for inst in insts:
                view = M.manifests(store.backend).locked_view(inst, vid, ctx.ancestors)
                assert view.entries() == _brute_entries(store.backend, inst, ctx.ancestors)
            assert store.backend.get(K.compact_table_key(insts[0], vid)) is not None
        expect = _snapshot(repo, locked)
    finally:
        store.close()

    def reread(drop):
        st = diced.Store(store_location, **store_location.options)
        try:
            keys = [k for k in st.backend.list_keys("i/") if drop(k)]
            st.backend.delete_many(keys)
            r = st.open_repo("dag")
            got = _snapshot(r, reversed(locked))  # newest first: builds from far ancestors
            for u in locked:
                assert np.array_equal(got[u][0], expect[u][0]), u
                assert got[u][1] == expect[u][1], u
            return keys
        finally:
            st.close()

    rng = random.Random(5)
    reread(lambda k: rng.random() < 0.5)  # some tables missing (crash after commit)
    dropped = reread(lambda k: True)  # an old store: no compacted index at all
    assert dropped
    st = diced.Store(store_location, **store_location.options)
    try:  # the reads rebuilt the tables
        assert list(st.backend.list_keys("i/"))
    finally:
        st.close()


@pytest.mark.backends("file")
def test_big_index_uses_buckets_and_children_share_them(store_location):
    store = diced.Store(store_location, create=True, durable=False)
    try:
        repo = store.create_repo("big")
        a = repo.create_array("a", "uint8", (128, 128, 24), chunks=(8, 8, 8))
        a[...] = 3  # 16 * 16 * 3 = 768 chunks: more than INLINE_MAX
        repo.commit("v1")
        repo.newversion()
        a[0:8, 0:8, 0:8] = 4  # one bucket changes
        v2 = repo.commit("v2")
        repo.newversion()
        v3 = repo.commit("v3: writes nothing")
        inst = a._space.inst
        b = store.backend
        ids = [repo._node(u).id for u in ("", v2.uuid, v3.uuid) if u]
        v1, v2id, v3id = 1, ids[0], ids[1]
        buckets_1 = list(b.list_keys(K.compact_prefix(inst, v1) + "b/"))
        buckets_2 = list(b.list_keys(K.compact_prefix(inst, v2id) + "b/"))
        assert len(buckets_1) == 4 and len(buckets_2) == 1  # 2 x 2 x 1 buckets of 8^3 chunks
        assert not list(b.list_keys(K.compact_prefix(inst, v3id) + "b/"))
        fresh = diced.Store(store_location, **store_location.options)
        try:
            arr = fresh.open_repo("big").array("a").at(v3.uuid)
            count = Counting(fresh.backend)
            got = arr[0:16, 0:16, 0:8]
            assert (got[:8, :8] == 4).all() and (got[8:] == 3).all()
            # the v3 table, the table it refers to, 2 bucket objects, 4 chunks
            assert count.calls["get"] <= 7 and count.calls["list"] == 0, count.log
            assert sorted(arr._space.live_keys(fresh.open_repo("big")._ctx(v3id))) == \
                sorted(K.chunk_ckey((z, y, x)) for z in range(16) for y in range(16)
                       for x in range(3))
        finally:
            fresh.close()
    finally:
        store.close()


@pytest.mark.backends("memory")
def test_damaged_index_raises_corrupt_data(store_location):
    store = diced.Store(store_location, create=True, **store_location.options)
    try:
        uuid, _ = _chain(store, 2)
        repo = store.open_repo("r")
        inst = repo.array("img")._space.inst
        vid = repo._node(uuid).id
        key = K.compact_table_key(inst, vid)
        store.backend.delete(key)
        store.backend.set(key, b"not an index")
    finally:
        store.close()
    fresh = diced.Store(store_location, **store_location.options)
    try:
        with pytest.raises(CorruptDataError, match="compacted index"):
            fresh.open_repo("r").array("img").at(uuid)[...]
    finally:
        fresh.close()


@pytest.mark.backends("memory", "file")
def test_delete_instance_removes_its_compacted_index(store_location):
    store = diced.Store(store_location, create=True, **store_location.options)
    try:
        repo = store.create_repo("d")
        a = repo.create_array("a", "uint8", (16, 16, 16), chunks=(8, 8, 8))
        a[...] = 1
        repo.commit("v1")
        inst = a._space.inst
        assert list(store.backend.list_keys(K.compact_prefix(inst)))
        repo.delete_instance("a")
        assert not list(store.backend.list_keys(K.compact_prefix(inst)))
    finally:
        store.close()


def test_bucket_of():
    assert M.bucket_of(K.chunk_ckey((0, 7, 8))) == "c0.0.1"
    assert M.bucket_of(K.chunk_ckey((17, 0, 0))) == "c2.0.0"
    assert M.bucket_of(K.kv_ckey("abc")).startswith("h")
    assert M.bucket_of(f"{123456789:016x}").startswith("h")
    assert M.bucket_of("weird/key").startswith("h")


def test_lmdb_commit_writes_no_compacted_index(tmp_path):
    store = diced.Store(tmp_path / "s.lmdb", create=True)
    try:
        _chain(store, 2)
        assert not list(store.backend.list_keys("i/"))
    finally:
        store.close()


@pytest.mark.backends("s3")
def test_native_reads_match_fsspec(store_location):
    pytest.importorskip("obstore")
    store = diced.Store(store_location, create=True, **store_location.options)
    try:
        uuid, ref = _chain(store, 3)
        objects = store.raw_backend._objects
        keys = sorted(store.raw_backend.list_keys("d/"))[:20] + ["d/absent/key"]
        assert objects._native is not None
        native = store.raw_backend.get_many(keys)
        assert objects._native is not None  # no failure made it fall back to fsspec
        objects._native = None
        assert store.raw_backend.get_many(keys) == native  # fsspec's answer
        import fsspec

        from diced.backends._native import native_reader as _native_reader

        assert _native_reader(fsspec.filesystem("file"), "/tmp") is None
        assert _native_reader(object(), "b") is None
        assert native[-1] is None and all(v is not None for v in native[:-1])
    finally:
        store.close()
    fresh = diced.Store(store_location, **store_location.options)
    try:
        assert np.array_equal(fresh.open_repo("r").array("img").at(uuid)[...], ref)
        assert fresh.raw_backend._objects._native is not None
    finally:
        fresh.close()


@pytest.mark.backends("s3")
def test_native_reads_fall_back_to_fsspec_on_failure(store_location, monkeypatch, caplog):
    pytest.importorskip("obstore")
    store = diced.Store(store_location, create=True, **store_location.options)
    try:
        _chain(store, 2)
        objects = store.raw_backend._objects

        class Broken:
            def usable(self):
                return True

            def read(self, keys):
                raise OSError("native client exploded")

        objects._native = Broken()
        key = min(store.raw_backend.list_keys("d/"))
        value = store.raw_backend.get(key)
        assert value is not None
        assert objects._native is None and "native object reads" in caplog.text
        # a forked child never calls into the parent's native client
        from diced.backends._native import native_reader as _native_reader

        objects._native = _native_reader(objects.fs, objects.root)
        assert objects._native is not None
        objects._native.pid = -1
        assert store.raw_backend.get(key) == value and objects._native is None
    finally:
        store.close()


def test_native_reads_can_be_turned_off(monkeypatch):
    pytest.importorskip("obstore")
    s3fs = pytest.importorskip("s3fs")
    from diced.backends._native import native_reader as _native_reader

    fs = s3fs.S3FileSystem(key="k", secret="s", client_kwargs={"endpoint_url": "http://127.0.0.1:9"})
    assert _native_reader(fs, "bucket/path") is not None
    monkeypatch.setenv("DICED_NATIVE_READS", "0")
    assert _native_reader(fs, "bucket/path") is None


@pytest.mark.backends("memory")
def test_commit_stands_when_compaction_fails_and_a_read_builds_the_index(store_location,
                                                                         monkeypatch, caplog):
    from diced.errors import BackendError

    store = diced.Store(store_location, create=True, **store_location.options)
    try:
        repo = store.create_repo("c")
        a = repo.create_array("a", "uint8", (16, 16, 16), chunks=(8, 8, 8))
        a[...] = 5
        repo.commit("v1")
        repo.newversion()
        a[0:8] = 6

        def broken(self, objects, table_key, table):
            raise BackendError("the store went away")

        monkeypatch.setattr(M._Manifests, "_store", broken)
        v2 = repo.commit("v2")
        monkeypatch.undo()
        assert repo.version(v2.uuid).node.locked and "compacting version" in caplog.text
        inst = a._space.inst
        key = K.compact_table_key(inst, repo._node(v2.uuid).id)
        assert store.backend.get(key) is None
    finally:
        store.close()
    fresh = diced.Store(store_location, **store_location.options)
    try:
        got = fresh.open_repo("c").version(v2.uuid).array("a")[...]
        assert (got[:8] == 6).all() and (got[8:] == 5).all()
        assert fresh.backend.get(key) is not None  # built by the read
    finally:
        fresh.close()


@pytest.mark.backends("memory", "file")
def test_drop_compacted_then_reads_rebuild(store_location):
    store = diced.Store(store_location, create=True, **store_location.options)
    try:
        uuid, ref = _chain(store, 4)
        repo = store.open_repo("r")
        inst = repo.array("img")._space.inst
        vids = [n.id for n in repo._dag.nodes.values() if n.locked]
        assert M.drop_compacted(store.backend, [inst], vids) >= len(vids)
        assert not list(store.backend.list_keys(K.compact_prefix(inst)))
        assert M.drop_compacted(store.backend, [inst], vids) == 0
        assert np.array_equal(repo.array("img").at(uuid)[...], ref)
        assert store.backend.get(K.compact_table_key(inst, repo._node(uuid).id)) is not None
    finally:
        store.close()
