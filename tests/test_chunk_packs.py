"""Chunk packs (``commit(pack=True)``, ``Repo.pack``; :mod:`diced.repo.chunkpacks`): a locked
version's chunks stored several per object and read with ranged GETs.

What must hold: reads are exact whether values come from packs or chunk objects; a packed
read sends no per-chunk GET for packed chunks (counted on the raw backend, never timed);
descendants read their ancestors' packs; a pack that is missing, damaged or holds other
bytes falls back to the chunk objects; squash, GC and version deletion take packs with
them; an open version cannot be packed, and nothing is stored when it is refused.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

import numpy as np
import pytest

import diced
from diced.errors import UnlockedNodeError
from diced.repo import chunkpacks as P
from diced.repo import keys as K
from diced.repo import manifests as M

pytestmark = [pytest.mark.all_backends, pytest.mark.usefixtures("no_chunk_cache")]


class Requests:
    """Counts, on a store's raw backend, GETs of chunk objects (``d/`` keys) and ranged
    reads (one per range)."""

    def __init__(self, store: diced.Store) -> None:
        self.calls: Counter[str] = Counter()
        raw = store.backend.raw
        get_many, get_ranges, stream_ranges = raw.get_many, raw.get_ranges, raw.stream_ranges
        streaming = threading.local()  # the default stream_ranges reads with get_ranges

        def counted_get(keys):
            self.calls["chunk"] += sum(1 for k in keys if k.startswith("d/"))
            return get_many(keys)

        def counted_ranges(requests):
            if not getattr(streaming, "on", False):
                self.calls["range"] += len(requests)
            return get_ranges(requests)

        def counted_stream(requests):
            self.calls["range"] += len(requests)
            streaming.on = True
            try:
                return stream_ranges(requests)
            finally:
                streaming.on = False

        raw.get_many, raw.get_ranges, raw.stream_ranges = counted_get, counted_ranges, \
            counted_stream


def _open(location, repo="p"):
    return diced.Store(location, **location.options).open_repo(repo)


def _pack_keys(store: diced.Store) -> list[str]:
    return [k for k in store.backend.list_keys("i/") if "/p/" in k]


def _volume(shape=(96, 128, 160), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 50, shape, dtype=np.uint8)


BOXES = [(slice(0, 96), slice(0, 128), slice(0, 160)), (slice(5, 70), slice(33, 97), slice(1, 159)),
         (slice(31, 33), slice(0, 128), slice(63, 65)), (7, slice(None), 100)]


def _reads(arr, want):
    for box in BOXES:
        assert np.array_equal(arr[box], want[box])


def _written(location):
    """A store at ``location`` with repo "p" whose open head holds uint8 array "a" of
    96 x 128 x 160 in 32³ chunks, written whole: ``(store, repo, array, data)``."""
    store = diced.Store(location, **location.options)
    repo = store.create_repo("p")
    a = repo.create_array("a", "uint8", (96, 128, 160), chunks=(32, 32, 32))
    data = _volume()
    a[...] = data
    return store, repo, a, data


def _cold(location, uuid, want, *, boxes: bool = False, labels: bool = False) -> Counter[str]:
    """Read the instance at version ``uuid`` through a new Store (no cached indexes), check
    it against ``want`` (the whole array; with ``boxes`` every box of BOXES), and return
    what the read sent (:class:`Requests`)."""
    other = diced.Store(location, **location.options)
    seen = Requests(other)
    version = other.open_repo("p").version(uuid)
    arr = version.labels("seg") if labels else version.array("a")
    if boxes:
        _reads(arr, want)
    else:
        assert np.array_equal(arr[...], want)
    return seen.calls


def test_packed_version_reads_exactly_with_ranged_reads(store_location):
    store, repo, _, data = _written(store_location)
    v = repo.commit("packed", pack=True)
    if store_location.kind == "lmdb":  # ordered store: reads are local seeks, no packs
        assert _pack_keys(store) == [] and repo.pack(v.uuid) == 0
        _reads(_open(store_location).version(v.uuid).array("a"), data)
        return
    assert _pack_keys(store)
    calls = _cold(store_location, v.uuid, data, boxes=True)
    assert calls["chunk"] == 0  # every chunk came out of the pack
    assert 0 < calls["range"] < 3 * 3 * 4 * len(BOXES)


@pytest.mark.backends("memory", "file", "s3")
def test_descendants_read_their_ancestors_packs(store_location):
    """A child that rewrote one chunk reads that one from its chunk object and the rest
    from the parent's pack (inline index: few chunks), and a grandchild that rewrote
    nothing does too."""
    _descendants(store_location, 32, (96, 128, 160))


@pytest.mark.backends("memory", "file")
def test_descendants_read_their_ancestors_packs_bucketed(store_location):
    """The same through bucketed indexes (more than INLINE_MAX chunks)."""
    _descendants(store_location, 8, (72, 64, 64))


def _descendants(store_location, chunk, shape):
    store = diced.Store(store_location, **store_location.options)
    repo = store.create_repo("p")
    a = repo.create_array("a", "uint8", shape, chunks=(chunk,) * 3)
    data = _volume(shape)
    a[...] = data
    n_chunks = int(np.prod([-(-s // chunk) for s in data.shape]))
    assert (n_chunks > M.INLINE_MAX) == (chunk == 8)
    repo.commit("packed", pack=True)
    repo.newversion("edit")
    a[0:chunk, 0:chunk, 0:chunk] = 200
    data[0:chunk, 0:chunk, 0:chunk] = 200
    child = repo.commit("one chunk changed")
    repo.newversion("nothing")
    grandchild = repo.commit("unchanged")
    for v in (child, grandchild):
        calls = _cold(store_location, v.uuid, data)
        assert calls["chunk"] == 1  # the rewritten chunk
        assert calls["range"] > 0


@pytest.mark.backends("memory", "file", "s3", "gcs")
def test_damaged_or_missing_pack_falls_back_to_chunk_objects(store_location, caplog):
    store, repo, _, data = _written(store_location)
    v = repo.commit("packed", pack=True)
    (key,) = _pack_keys(store)
    raw = store.backend.raw
    good = raw.get(key)
    damaged = bytearray(good)
    damaged[1000] ^= 0x40
    raw.set(key, bytes(damaged))
    with caplog.at_level(logging.WARNING, logger="diced.repo.chunkpacks"):
        calls = _cold(store_location, v.uuid, data)
    assert calls["chunk"] == 1  # only the damaged value
    assert any("damaged or different" in r.getMessage() for r in caplog.records)
    raw.set(key, good[: len(good) // 2])  # short
    _reads(_open(store_location).version(v.uuid).array("a"), data)
    raw.delete(key)
    calls = _cold(store_location, v.uuid, data, boxes=True)
    assert calls["chunk"] > 0


@pytest.mark.backends("memory")
def test_a_range_holding_another_value_fails_its_check(store):
    """Each packed value's check is seeded with its space, chunk and writer: offsets that
    point at another chunk's bytes (a pack rebuilt under a reader holding old offsets) read
    as "not packed", never as that chunk's bytes."""
    repo = store.create_repo("p")
    a = repo.create_array("a", "uint8", (64, 64, 64), chunks=(32, 32, 32))
    a[...] = _volume((64, 64, 64))
    v = repo.commit("packed", pack=True)
    sid = repo._doc["instances"]["a"]["id"]
    vid = repo._dag.by_uuid[v.uuid].id
    own = sorted(M.manifests(store.backend).manifest(sid, vid, locked=True))
    view = M.manifests(store.backend).locked_view(sid, vid, repo._dag.ancestors(vid))
    hits, locs = view.lookup_located(own)
    assert all(loc is not None for loc in locs) and all(h[0] == vid for h in hits)
    right = P.read_packed(store.backend, sid, [(c, vid, loc) for c, loc in zip(own, locs)])
    assert all(r is not None for r in right)
    swapped = [(own[0], vid, locs[1]), (own[1], vid + 1, locs[1]), (own[1], vid, locs[1])]
    got = P.read_packed(store.backend, sid, swapped)
    assert got[0] is None and got[1] is None and bytes(got[2]) == bytes(right[1])


@pytest.mark.backends("memory", "file", "gcs")
def test_pack_an_existing_version_and_its_descendants(store_location):
    store, repo, a, data = _written(store_location)
    v1 = repo.commit("not packed")
    repo.newversion("edit")
    a[40:41, 0:1, 0:1] = 9
    data[40:41, 0:1, 0:1] = 9
    v2 = repo.commit("child")
    assert _pack_keys(store) == []
    assert repo.pack(v1.uuid) == 1
    first = _pack_keys(store)
    assert first and all(f"/{repo._dag.by_uuid[v1.uuid].id:08x}/p/" in k for k in first)
    before = {k: store.backend.get(k) for k in first}
    assert repo.pack(v1.uuid) == 1  # again: the same bytes
    assert {k: store.backend.get(k) for k in _pack_keys(store)} == before
    calls = _cold(store_location, v2.uuid, data)
    assert calls["chunk"] == 1 and calls["range"] > 0


@pytest.mark.backends("memory", "file")
def test_open_versions_are_refused_and_nothing_is_stored(store):
    repo = store.create_repo("p")
    a = repo.create_array("a", "uint8", (64, 64, 64), chunks=(32, 32, 32))
    a[...] = 3
    with pytest.raises(UnlockedNodeError, match="open"):
        repo.pack()
    assert _pack_keys(store) == []
    assert not list(store.backend.list_keys("i/"))


@pytest.mark.backends("memory", "file")
def test_labels_pack_their_blocks_only(store_location):
    store = diced.Store(store_location, **store_location.options)
    repo = store.create_repo("p")
    seg = repo.create_labels("seg", (64, 64, 128))
    want = np.zeros((64, 64, 128), np.uint64)
    want[:, :, :70] = 5
    want[10:20, 10:20, 60:90] = 123456789012
    seg[...] = want
    v = repo.version().commit("labels", pack=True)
    spaces = {int(k.split("/")[1], 16) for k in _pack_keys(store)}
    assert spaces == {repo._doc["instances"]["seg"]["id"]}  # not the label index spaces
    assert _cold(store_location, v.uuid, want, labels=True)["chunk"] == 0
    got = _open(store_location).version(v.uuid).labels("seg")
    assert np.array_equal(got[8:40, 0:64, 50:100], want[8:40, 0:64, 50:100])


@pytest.mark.backends("memory", "file")
def test_squash_gc_and_deletion_take_packs_with_them(store_location):
    store = diced.Store(store_location, **store_location.options)
    repo = store.create_repo("p")
    a = repo.create_array("a", "uint8", (64, 64, 64), chunks=(32, 32, 32))
    a[...] = 1
    repo.commit("root", pack=True)
    vs = []
    for i in range(3):
        repo.newversion(str(i))
        a[32 * (i % 2):32 * (i % 2) + 32] = i + 2
        vs.append(repo.commit(str(i), pack=True))
    want = repo.version(vs[-1].uuid).array("a")[...]
    ids = {repo._dag.by_uuid[v.uuid].id for v in vs}
    assert {int(k.split("/")[2], 16) for k in _pack_keys(store)} >= ids
    repo.squash(vs[0].uuid, vs[2].uuid)
    repo.gc()
    left = {int(k.split("/")[2], 16) for k in _pack_keys(store)}
    assert not left & ids  # the squashed versions' packs and the kept one's (rewritten)
    assert np.array_equal(repo.version(vs[-1].uuid).array("a")[...], want)
    assert repo.pack(vs[-1].uuid) == 1
    calls = _cold(store_location, vs[-1].uuid, want)
    assert calls["chunk"] == 0 and calls["range"] > 0
    repo.newversion("leaf")
    a[...] = 9
    leaf = repo.commit("leaf", pack=True)
    lid = repo._dag.by_uuid[leaf.uuid].id
    assert any(f"/{lid:08x}/p/" in k for k in _pack_keys(store))
    repo.delete_version(leaf.uuid)
    repo.gc()
    assert not any(f"/{lid:08x}/p/" in k for k in _pack_keys(store))


@pytest.mark.backends("memory", "file", "s3")
def test_commit_whose_indexing_fails_is_repaired_by_pack(store_location, monkeypatch):
    """A commit(pack=True) whose index build fails (a crash between the packs and the table)
    still locks; reads are exact (a reader builds the index, without packs); pack() later
    makes the version packed."""
    store = diced.Store(store_location, **store_location.options)
    repo = store.create_repo("p")
    a = repo.create_array("a", "uint8", (64, 64, 96), chunks=(32, 32, 32))
    data = _volume((64, 64, 96))
    a[...] = data
    real = M._Manifests._store

    def fail(self, objects, table_key, table, overwrite=False):
        raise OSError("killed before the table")

    monkeypatch.setattr(M._Manifests, "_store", fail)
    v = repo.commit("packs, no table", pack=True)
    monkeypatch.setattr(M._Manifests, "_store", real)
    assert repo.version(v.uuid).locked
    assert _pack_keys(store)  # the packs were written first
    calls = _cold(store_location, v.uuid, data)
    assert calls["chunk"] == 12 and calls["range"] == 0  # built without packs
    repo.pack(v.uuid)
    calls = _cold(store_location, v.uuid, data)
    assert calls["chunk"] == 0 and calls["range"] > 0


@pytest.mark.backends("memory", "file")
def test_dedup_store_packs_payloads(store_location):
    store = diced.Store(store_location, dedup=True, **store_location.options)
    repo = store.create_repo("p")
    a = repo.create_array("a", "uint8", (64, 64, 128), chunks=(32, 32, 32))
    data = np.zeros((64, 64, 128), np.uint8)
    data[:, :, 64:] = 7  # identical chunks: stored once as payloads
    data[0, 0, 0] = 1
    a[...] = data
    v = repo.commit("dedup", pack=True)
    calls = _cold(store_location, v.uuid, data)
    assert calls["chunk"] == 0


def test_spans_coalesce_neighbours_within_limits():
    items = [(0, 100, 0), (100, 100, 1), (300, 50, 2), (P.GAP + 400, 10, 3)]
    assert P.spans(items) == [(0, 350, [0, 1, 2]), (P.GAP + 400, P.GAP + 410, [3])]
    assert P.spans(items, cap=2) == [(0, 200, [0, 1]), (300, 350, [2]),
                                     (P.GAP + 400, P.GAP + 410, [3])]
    big = [(0, P.SPAN_MAX - 10, 0), (P.SPAN_MAX - 10, 20, 1)]
    assert [s[2] for s in P.spans(big)] == [[0], [1]]
    assert K.compact_pack_key(1, 2, "c0.0.0", 10) == "i/00000001/00000002/p/c0.0.0/a"


@pytest.mark.backends("file")
def test_chain_reads_base_packs_by_range_and_packs_local_versions(store_location, tmp_path):
    """A chain over a packed base reads the base's packs with ranged reads (never whole
    packs, never cached by the chain), and a local commit(pack=True) packs into the local
    layer."""
    base = diced.Store(store_location, **store_location.options)
    repo = base.create_repo("p")
    a = repo.create_array("a", "uint8", (96, 128, 160), chunks=(32, 32, 32))
    data = _volume()
    a[...] = data
    v1 = repo.commit("published", pack=True)
    base.close()
    chained = diced.Store.chain(store_location, tmp_path / "local.diced")
    chain = chained.backend.raw
    calls: Counter[str] = Counter()
    inner = chain.base.inner
    get_many, get_ranges = inner.get_many, inner.get_ranges
    inner.get_many = lambda keys: (calls.update(whole=sum("/p/" in k for k in keys),
                                                chunk=sum(k.startswith("d/") for k in keys)),
                                   get_many(keys))[1]
    inner.get_ranges = lambda reqs: (calls.update(range=len(reqs)), get_ranges(reqs))[1]
    r = chained.open_repo("p")
    _reads(r.version(v1.uuid).array("a"), data)
    assert calls["range"] > 0 and calls["whole"] == 0 and calls["chunk"] == 0
    assert not any("/p/" in k for k in chain._meta)
    r.newversion("local edit")
    r.version().array("a")[0:32, 0:32, 0:32] = 77
    data[0:32, 0:32, 0:32] = 77
    v2 = r.commit("local", pack=True)
    local_packs = [k for k in chain.local.list_keys("i/") if "/p/" in k]
    assert local_packs and not [k for k in _pack_keys(diced.Store(store_location))
                                if k in local_packs]
    calls.clear()
    again = diced.Store(tmp_path / "local.diced")
    _reads(again.open_repo("p").version(v2.uuid).array("a"), data)
    again.close()
    chained.close()


@pytest.mark.backends("memory", "file", "s3")
def test_a_bucket_larger_than_a_part_is_split(store_location, monkeypatch):
    monkeypatch.setattr(P, "PACK_MAX", 40_000)  # a 32^3 uint8 chunk of noise is ~33 kB
    store = diced.Store(store_location, **store_location.options)
    repo = store.create_repo("p")
    a = repo.create_array("a", "uint8", (96, 128, 160), chunks=(32, 32, 32))
    data = np.random.default_rng(1).integers(0, 256, (96, 128, 160), dtype=np.uint8)
    a[...] = data
    v = repo.commit("packed", pack=True)
    parts = _pack_keys(store)
    assert len(parts) == 3 * 4 * 5  # one value per part
    assert all(len(store.backend.get(k)) <= 40_000 for k in parts)
    calls = _cold(store_location, v.uuid, data, boxes=True)
    assert calls["chunk"] == 0 and calls["range"] > 0


@pytest.mark.backends("memory", "file")
def test_a_reference_table_reads_its_targets_packs(store_location):
    """A version that changed nothing under a bucketed index (more than INLINE_MAX entries)
    of more than 64 buckets stores a table naming its parent's ("same"); reads through it
    still find the parent's packs."""
    store = diced.Store(store_location, **store_location.options)
    repo = store.create_repo("p")
    a = repo.create_array("a", "uint8", (160, 128, 128), chunks=(4, 4, 4))
    data = np.zeros((160, 128, 128), np.uint8)
    for i, (z, y, x) in enumerate(np.ndindex(5, 4, 4)):  # 7 chunks in each of 80 buckets
        data[32 * z:32 * z + 4, 32 * y:32 * y + 4, 32 * x:32 * x + 28] = i + 1
    a[...] = data
    repo.commit("80 buckets", pack=True)
    repo.newversion("nothing")
    same = repo.commit("unchanged")
    sid = repo._doc["instances"]["a"]["id"]
    table = M._unpack("t", store.backend.get(K.compact_table_key(sid, repo._dag.by_uuid[
        same.uuid].id)))
    assert "same" in table
    calls = _cold(store_location, same.uuid, data)
    assert calls["chunk"] == 0 and calls["range"] > 0
