"""LabelArray proofreading edits: merge, cleave, renumber, split_supervoxel, the mutation log,
versioned edits (branches and repo merges), and label_diff between versions.

Expected voxels, counts and indexes are recomputed with numpy from the volume that was written
and the supervoxel -> body mapping the edits should produce.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_labels import check_index, check_label, new_repo, open_store, ref_index

from diced.array.sparsevol import encode_rles, mask_to_runs
from diced.errors import InvalidArgumentError, LabelNotFoundError

SHAPE, CHUNKS = (64, 96, 128), (32, 32, 32)


@pytest.fixture
def store(store_location):
    s = open_store(store_location)
    yield s
    s.close()


def base_volume() -> np.ndarray:
    """Supervoxels 1..8 in boxes, most of them crossing block boundaries, over a 0 background."""
    vol = np.zeros(SHAPE, np.uint64)
    vol[0:40, 0:40, 0:40] = 1
    vol[5:30, 10:70, 38:90] = 2  # overlaps 1: a partial overwrite
    vol[40:64, 0:96, 0:20] = 3
    vol[0:20, 60:96, 100:128] = 4
    vol[20:60, 40:80, 90:128] = 5
    vol[50:64, 80:96, 60:90] = 6
    vol[30:50, 0:30, 50:110] = 7
    vol[60:64, 0:8, 120:128] = 8
    vol[33, 33, 33] = 8  # a stray voxel
    return vol


def mapped(vol: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    out = vol.copy()
    for sv, body in mapping.items():
        out[vol == sv] = body
    return out


def counts(vol: np.ndarray) -> dict[int, int]:
    labs, n = np.unique(vol, return_counts=True)
    return {int(a): int(b) for a, b in zip(labs, n, strict=True) if a}


def setup_labels(store, max_scale: int = 0):
    repo = new_repo(store)
    L = repo.create_labels("seg", SHAPE, chunks=CHUNKS, max_scale=max_scale)
    vol = base_volume()
    L[...] = vol
    return repo, L, vol


def written_at_head(repo, L) -> dict[str, dict]:
    """What the head version itself wrote, per key space of the label instance."""
    vid = repo.head.id
    spaces = {f"level{i}": sp for i, sp in enumerate(L._levels)}
    spaces.update(index=L._index, mapping=L._mapping, members=L._members)
    return {name: sp.written_at(vid) for name, sp in spaces.items()}


def check_bodies(L, vol: np.ndarray, mapping: dict[int, int], bodies: dict[int, list[int]]):
    """Reads, supervoxel reads, body membership and body counts against numpy."""
    want = mapped(vol, mapping)
    np.testing.assert_array_equal(L[...], want)
    np.testing.assert_array_equal(L.read(..., supervoxels=True), vol)
    n = counts(vol)
    for body, svs in bodies.items():
        assert sorted(L.supervoxels(body).tolist()) == sorted(svs)
        assert L.count(body) == sum(n.get(s, 0) for s in svs) == int((want == body).sum())
        for s in svs:
            assert L.body(s) == body
            assert L.count(s, supervoxels=True) == n.get(s, 0)


# --------------------------------------------------------------------------------------------
# merge


def test_merge(store):
    repo, L, vol = setup_labels(store, max_scale=1)
    v0 = repo.commit("before")
    repo.newversion("edits")
    mutid = L.merge(1, [2, 3])
    assert isinstance(mutid, int)
    check_bodies(L, vol, {2: 1, 3: 1}, {1: [1, 2, 3], 4: [4], 5: [5]})
    for gone in (2, 3):
        assert len(L.supervoxels(gone)) == 0 and L.count(gone) == 0
        with pytest.raises(LabelNotFoundError):
            L.sparsevol(gone)
    want = mapped(vol, {2: 1, 3: 1})
    check_label(L, want, 1, supervoxels=False)
    assert L.block_counts(1) == ref_index(want, CHUNKS)[1]
    rng = np.random.default_rng(0)
    pts = np.stack([rng.integers(0, n, 500) for n in SHAPE], axis=1)
    np.testing.assert_array_equal(L.labels_at(pts), want[tuple(pts.T)])
    np.testing.assert_array_equal(L.labels_at(pts, supervoxels=True), vol[tuple(pts.T)])
    assert L.labels_in().tolist() == [1, 4, 5, 6, 7, 8]
    assert L.labels_in(supervoxels=True).tolist() == list(range(1, 9))
    assert L.label_at((45, 50, 5)) == 1 and L.label_at((45, 50, 5), supervoxels=True) == 3
    # the scale-1 view applies the mapping as well
    lo = L.scale(1)
    np.testing.assert_array_equal(lo[...], mapped(lo.read(..., supervoxels=True), {2: 1, 3: 1}))
    # no voxel was rewritten: no chunk of any level, and no index entry, changed; the diff
    # shows the mapping change
    d = repo.diff(v0.uuid)["seg"]
    assert not (d.added or d.changed or d.removed) and d.remapped == [2, 3]
    wrote = written_at_head(repo, L)
    assert wrote["level0"] == {} and wrote["level1"] == {} and wrote["index"] == {}
    assert set(wrote["mapping"]) == {f"{2:016x}", f"{3:016x}"}
    # a chain of merges keeps the mapping a single hop to the final body
    L.merge(4, [1])
    check_bodies(L, vol, {1: 4, 2: 4, 3: 4}, {4: [1, 2, 3, 4], 5: [5]})
    assert len(L.supervoxels(1)) == 0
    with pytest.raises(LabelNotFoundError):
        L.merge(1, [5])  # body 1 was merged away
    L.merge(5, [6, 7, 8])
    check_bodies(L, vol, {1: 4, 2: 4, 3: 4, 6: 5, 7: 5, 8: 5}, {4: [1, 2, 3, 4], 5: [5, 6, 7, 8]})
    L.merge(5, [4])
    assert L.labels_in().tolist() == [5]
    assert L.count(5) == int((vol != 0).sum())
    assert [m["Action"] for m in L.mutations()] == ["merge"] * 4
    d = repo.diff(v0.uuid)["seg"]
    assert not (d.added or d.changed or d.removed) and d.remapped == [1, 2, 3, 4, 6, 7, 8]


def test_merge_names_a_label_once(store):
    """A label listed twice in ``others`` is merged once (it was listed twice in the body's
    supervoxels before the fix)."""
    _, L, vol = setup_labels(store)
    L.merge(1, [2, 2, 3, 2])
    check_bodies(L, vol, {2: 1, 3: 1}, {1: [1, 2, 3]})
    assert L.supervoxels(1).tolist() == [1, 2, 3]
    assert L.mutations()[-1]["Labels"] == [2, 3]
    new = L.cleave(1, [3])
    check_bodies(L, vol, {2: 1, 3: new}, {1: [1, 2], new: [3]})


def test_merge_cost_is_independent_of_voxels(store):
    """Merging a big body writes as many keys as merging a tiny one."""
    repo, L, _ = setup_labels(store)
    repo.commit()
    repo.newversion()
    L.merge(3, [1])  # two big supervoxels over many blocks
    big = {k: len(v) for k, v in written_at_head(repo, L).items()}
    repo.commit()
    repo.newversion()
    L.merge(6, [8])  # a tiny one
    small = {k: len(v) for k, v in written_at_head(repo, L).items()}
    # one mapping entry (the merged supervoxel) and the target's member list; nothing else
    assert big == small == {"level0": 0, "index": 0, "mapping": 1, "members": 1}


# --------------------------------------------------------------------------------------------
# cleave


def test_cleave(store):
    _, L, vol = setup_labels(store)
    L.merge(1, [2, 3, 4])
    top = max(L.maxlabel(), L.nextlabel() - 1)
    new = L.cleave(1, [2, 3])
    assert new > top
    check_bodies(L, vol, {2: new, 3: new, 4: 1}, {1: [1, 4], new: [2, 3]})
    check_label(L, mapped(vol, {2: new, 3: new, 4: 1}), new, supervoxels=False)
    rec = L.mutations()[-1]
    n = counts(vol)
    assert rec["Action"] == "cleave"
    assert rec["OrigLabel"] == 1 and rec["CleavedLabel"] == new
    assert sorted(rec["CleavedSupervoxels"]) == [2, 3]
    assert rec["CleavedSize"] == n[2] + n[3] and rec["RemainSize"] == n[1] + n[4]
    # cleaving off the supervoxel whose id the body carries: the body keeps its id
    new2 = L.cleave(1, [1])
    assert new2 > new
    check_bodies(L, vol, {1: new2, 2: new, 3: new, 4: 1}, {1: [4], new: [2, 3], new2: [1]})
    # and merged back together
    L.merge(new, [1, new2])
    check_bodies(L, vol, {1: new, 2: new, 3: new, 4: new}, {new: [1, 2, 3, 4]})
    assert len(L.supervoxels(1)) == 0 and len(L.supervoxels(new2)) == 0
    # allocation after the cleaves stays above the cleaved ids
    assert L.allocate(1)[0] > new2


def test_cleave_arguments(store):
    _, L, vol = setup_labels(store)
    L.merge(1, [2])
    with pytest.raises(InvalidArgumentError):
        L.cleave(1, [1, 2])  # all of them
    with pytest.raises(InvalidArgumentError):
        L.cleave(1, [3])  # not in the body
    with pytest.raises(InvalidArgumentError):
        L.cleave(5, [5])  # a lone supervoxel cannot be cleaved
    with pytest.raises(LabelNotFoundError):
        L.cleave(2, [2])  # body 2 no longer exists
    check_bodies(L, vol, {2: 1}, {1: [1, 2]})


# --------------------------------------------------------------------------------------------
# renumber


def test_renumber(store):
    _, L, vol = setup_labels(store)
    mutid = L.renumber(100, 5)
    assert isinstance(mutid, int)
    check_bodies(L, vol, {5: 100}, {100: [5]})
    assert len(L.supervoxels(5)) == 0 and L.count(5) == 0
    assert L.count(5, supervoxels=True) == counts(vol)[5]
    check_label(L, mapped(vol, {5: 100}), 100, supervoxels=False)
    # back again: the identity mapping is restored
    L.renumber(5, 100)
    check_bodies(L, vol, {}, {5: [5]})
    assert len(L.supervoxels(100)) == 0
    # a merged body keeps all its supervoxels under the new id
    L.merge(1, [2])
    L.renumber(200, 1)
    check_bodies(L, vol, {1: 200, 2: 200}, {200: [1, 2], 3: [3]})
    with pytest.raises(InvalidArgumentError):
        L.renumber(3, 200)  # 3 is in use
    with pytest.raises(InvalidArgumentError):
        L.renumber(0, 200)
    recs = [r for r in L.mutations() if r["Action"] == "renumber"]
    assert [(r["NewLabel"], r["OrigLabel"]) for r in recs] == [(100, 5), (5, 100), (200, 1)]


def test_renumber_reserves_the_new_id(store, store_location):
    """The issue's repro: bodies 1, 2, 3; renumber(nextlabel(), 1) -> 4; merge(2, [3]);
    cleave(2, [3]) must not return 4 again (that fused two bodies)."""
    repo = new_repo(store)
    L = repo.create_labels("seg", (32, 32, 32), chunks=(16, 16, 16))
    L[0:8] = 1
    L[8:16] = 2
    L[16:24] = 3
    four = L.nextlabel()
    assert four == 4
    L.renumber(four, 1)
    assert L.maxlabel() >= 4 and L.nextlabel() > 4
    L.merge(2, [3])
    cleaved = L.cleave(2, [3])
    assert cleaved != 4
    vol = L[...]
    for body in (4, 2, cleaved):
        assert L.count(body) == int((vol == body).sum()) > 0
    start, end = L.allocate(3)
    assert start > cleaved
    split, remain = L.split_supervoxel(2, (np.ones((4, 32, 32), bool), (8, 0, 0)))
    assert {split, remain}.isdisjoint({1, 2, 3, 4, cleaved, *range(start, end + 1)})
    # a renumber to an id far above everything: the allocator's floor follows, in another
    # handle on the same store too (another process reads the same keys)
    L.renumber(1000, 4)
    other = open_store(store_location)
    try:
        L2 = other.open_repo(repo.alias).labels("seg")
        assert L2.nextlabel() == 1001 and L2.allocate(1) == (1001, 1001)
        assert L2.maxlabel() == 1000
    finally:
        other.close()
    assert L.nextlabel() == 1002
    with pytest.raises(InvalidArgumentError):
        L.renumber(2**64, 1000)
    # chosen split ids are written into blocks: they raise the floor too
    L.split_supervoxel(3, (np.ones((4, 32, 32), bool), (16, 0, 0)), split=5000,
                       remain=5001)
    assert L.maxlabel() == 5001 and L.nextlabel() == 5002
    # and so do plain writes and point writes
    L.vindex[[31], [31], [31]] = 7000
    assert L.allocate(1) == (7001, 7001)


# --------------------------------------------------------------------------------------------
# split_supervoxel


def _region(seed: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A ragged region: a half space plus noise, inside a box at an unaligned origin."""
    rng = np.random.default_rng(seed)
    origin = (3, 7, 11)
    shape = (58, 80, 110)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    mask = (zz + yy + xx) < 100
    mask ^= rng.random(shape) < 0.02
    return mask, origin


@pytest.mark.backends("lmdb")
def test_split_region_forms_agree(store):
    """RLE bytes, runs and (mask, origin) describe the same region: same result."""
    mask, origin = _region(2)
    results = []
    for region in (encode_rles(mask_to_runs(mask, origin)), mask_to_runs(mask, origin),
                   (mask, origin)):
        _, L, vol = setup_labels(store)
        L.merge(6, [7])
        a, b = L.split_supervoxel(7, region)
        got = L.read(..., supervoxels=True)
        results.append((np.where(got == a, 1, 0) + np.where(got == b, 2, 0),
                        L.count(a, supervoxels=True), L.count(b, supervoxels=True)))
        np.testing.assert_array_equal(L[...], mapped(vol, {7: 6}))
    for r in results[1:]:
        np.testing.assert_array_equal(r[0], results[0][0])
        assert r[1:] == results[0][1:]


def test_split_supervoxel(store):
    _, L, vol = setup_labels(store, max_scale=1)
    L.merge(6, [7])
    mask, origin = _region(1)
    full = np.zeros(SHAPE, bool)
    full[tuple(slice(o, o + n) for o, n in zip(origin, mask.shape, strict=True))] = mask
    region = encode_rles(mask_to_runs(mask, origin))  # DVID's POST body
    top = L.nextlabel()
    n7 = counts(vol)[7]
    a, b = L.split_supervoxel(7, region)
    assert a >= top and b >= top and a != b
    want = vol.copy()
    want[(vol == 7) & full] = a
    want[(vol == 7) & ~full] = b
    assert 0 < int((want == a).sum()) < n7  # a real split
    check_bodies(L, want, {a: 6, b: 6}, {6: [6, a, b]})
    assert L.count(6) == counts(vol)[6] + n7
    # the index of the old supervoxel is gone, the new ones are exact
    assert L.count(7, supervoxels=True) == 0 and L.block_counts(7, supervoxels=True) == {}
    with pytest.raises(LabelNotFoundError):
        L.sparsevol(7, supervoxels=True)
    check_index(L, want, [7], full=False, unmapped=False)
    for sv in (a, b):
        check_label(L, want, sv)
    rec = L.mutations()[-1]
    assert rec["Action"] == "split-supervoxel"
    assert (rec["Supervoxel"], rec["Body"], rec["SplitSupervoxel"], rec["RemainSupervoxel"]) \
        == (7, 6, a, b)
    assert rec["SplitSize"] == int((want == a).sum())
    assert rec["RemainSize"] == int((want == b).sum())
    assert rec["SplitSize"] + rec["RemainSize"] == n7
    # the pyramid followed the voxel rewrite
    lo = L.scale(1).read(..., supervoxels=True)
    assert 7 not in np.unique(lo)
    assert L.maxlabel() >= max(a, b)


def test_split_unmerged_supervoxel_with_chosen_ids(store):
    _, L, vol = setup_labels(store)
    mask = np.zeros((64, 96, 40), bool)
    mask[:, :, :15] = True  # covers other supervoxels too: only 3's voxels change
    a, b = L.split_supervoxel(3, (mask, (0, 0, 0)), split=5000, remain=6000)
    assert (a, b) == (5000, 6000)
    want = vol.copy()
    want[(vol == 3) & (np.arange(128) < 15)] = 5000
    want[(vol == 3) & (np.arange(128) >= 15)] = 6000
    check_bodies(L, want, {5000: 3, 6000: 3}, {3: [5000, 6000], 1: [1]})
    check_index(L, want, [3], full=False, unmapped=False)
    # the body keeps the old supervoxel's id; splitting one of its new pieces again
    c, d = L.split_supervoxel(5000, (mask[:, :48], (0, 0, 0)))
    want2 = want.copy()
    want2[(want == 5000) & (np.arange(96)[:, None] < 48)] = c
    want2[(want == 5000) & (np.arange(96)[:, None] >= 48)] = d
    check_bodies(L, want2, {c: 3, d: 3, 6000: 3}, {3: [6000, c, d]})
    check_index(L, want2, [3, 5000], full=False, unmapped=False)


def test_split_ids_must_be_new(store):
    """Explicit split/remain ids may not be another live label (that silently moved the other
    supervoxel into this body before the fix), zero, or equal to each other."""
    _, L, vol = setup_labels(store)
    L.merge(1, [2])
    new = L.cleave(1, [2])
    region = (np.ones((10, 96, 128), bool), (0, 0, 0))
    keys = list(store.backend.list_keys(""))
    before = dict(zip(keys, store.backend.get_many(keys), strict=True))
    for split, remain in ((1, None), (None, 2), (new, None), (0, None), (700, 700), (None, 5)):
        with pytest.raises(InvalidArgumentError):
            L.split_supervoxel(4, region, split=split, remain=remain)
    keys = list(store.backend.list_keys(""))
    assert dict(zip(keys, store.backend.get_many(keys), strict=True)) == before
    # the supervoxel's own id may be kept for one side
    a, b = L.split_supervoxel(4, region, split=4, remain=None)
    assert a == 4 and b > new
    want = vol.copy()
    want[(vol == 4) & (np.arange(64)[:, None, None] >= 10)] = b
    check_bodies(L, want, {2: new, b: 4}, {4: [4, b], 1: [1], new: [2]})
    check_index(L, want, full=False, unmapped=False)


def test_split_supervoxel_of_a_body_carrying_its_id(store):
    """Splitting supervoxel 3 of body 3 = {3, 4}: 4 stays in the body (it was dropped from the
    member list before the fix)."""
    _, L, vol = setup_labels(store)
    L.merge(3, [4])
    a, b = L.split_supervoxel(3, (np.ones((52, 96, 128), bool), (0, 0, 0)))
    want = vol.copy()
    want[(vol == 3) & (np.arange(64)[:, None, None] < 52)] = a
    want[(vol == 3) & (np.arange(64)[:, None, None] >= 52)] = b
    check_bodies(L, want, {a: 3, b: 3, 4: 3}, {3: [4, a, b]})


@pytest.mark.backends("lmdb", "memory")  # atomic multi-key updates
def test_concurrent_edits_do_not_lose_updates(store):
    """Threads merging into one body at once: every merge lands in its member list (they
    overwrote each other's lists before the fix)."""
    _, L, _ = setup_labels(store)
    for lab in range(20, 36):
        L[lab, 90:96, 0:8] = lab
    vol = L.read(..., supervoxels=True)
    barrier = threading.Barrier(4)
    errors = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for lab in range(20 + 4 * i, 24 + 4 * i):
                L.merge(1, [lab])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    check_bodies(L, vol, {lab: 1 for lab in range(20, 36)}, {1: [1, *range(20, 36)]})
    assert len(L.mutations()) == 16


# --------------------------------------------------------------------------------------------
# mutation log


def test_mutation_log_records(store):
    repo, L, _ = setup_labels(store)
    uuid0 = repo.head.uuid
    m1 = L.merge(1, [2])
    c = L.cleave(1, [2])
    s, r = L.split_supervoxel(4, (np.ones((10, 96, 128), bool), (0, 0, 0)))
    m4 = L.renumber(300, 5)
    recs = L.mutations()
    assert [x["Action"] for x in recs] == ["merge", "cleave", "split-supervoxel", "renumber"]
    fields = {
        "merge": {"Target", "Labels"},
        "cleave": {"OrigLabel", "CleavedLabel", "CleavedSupervoxels", "CleavedSize", "RemainSize"},
        "split-supervoxel": {"Supervoxel", "Body", "SplitSupervoxel", "RemainSupervoxel",
                             "SplitSize", "RemainSize"},
        "renumber": {"NewLabel", "OrigLabel"},
    }
    for x in recs:
        assert fields[x["Action"]] | {"Action", "UUID", "MutationID", "Timestamp"} <= set(x)
        assert x["UUID"] == uuid0
        assert isinstance(x["Timestamp"], str) and x["Timestamp"]
    ids = [x["MutationID"] for x in recs]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert ids[0] == m1 and ids[3] == m4
    assert recs[0]["Target"] == 1 and recs[0]["Labels"] == [2]
    assert recs[1]["CleavedLabel"] == c and recs[1]["CleavedSupervoxels"] == [2]
    assert (recs[2]["SplitSupervoxel"], recs[2]["RemainSupervoxel"]) == (s, r)
    assert recs[2]["Supervoxel"] == 4 and recs[2]["Body"] == 4
    assert (recs[3]["NewLabel"], recs[3]["OrigLabel"]) == (300, 5)
    # the log is versioned
    repo.commit()
    repo.newversion()
    L.merge(6, [7])
    assert [x["Action"] for x in L.mutations()] == ["merge"]
    assert L.mutations()[0]["UUID"] == repo.head.uuid
    assert L.mutations()[0]["MutationID"] > ids[-1]
    assert len(L.mutations(ancestors=True)) == 5
    assert len(repo.version(uuid0).labels("seg").mutations()) == 4


# --------------------------------------------------------------------------------------------
# versioned edits


def test_edits_leave_parent_version_alone(store):
    repo, L, vol = setup_labels(store)
    v0 = repo.commit()
    repo.newversion()
    L.merge(1, [2, 3])
    new = L.cleave(1, [3])
    L.renumber(400, 4)
    a, b = L.split_supervoxel(5, (np.ones((30, 96, 128), bool), (0, 0, 0)))
    old = repo.version(v0.uuid).labels("seg")
    np.testing.assert_array_equal(old[...], vol)
    check_bodies(old, vol, {}, {k: [k] for k in range(1, 9)})
    check_index(old, vol, [a, b, new, 400], full=False, unmapped=False)
    assert old.mutations() == [] and len(L.mutations()) == 4
    assert old.body(3) == 3 and L.body(3) == new and L.body(a) == 5


def test_repo_merge_of_edits_on_disjoint_bodies(store):
    repo, _, vol = setup_labels(store)
    root = repo.commit("root")
    a = repo.branch("a")
    La = a.labels("seg")
    La.merge(1, [2])
    s1, r1 = La.split_supervoxel(3, (np.ones((52, 96, 128), bool), (0, 0, 0)))
    repo.commit("a")
    b = repo.branch("b", parent=root.uuid)
    Lb = b.labels("seg")
    Lb.merge(5, [6, 7])
    c = Lb.cleave(5, [7])
    Lb.renumber(900, 4)
    repo.commit("b")
    m = repo.merge(a.uuid, b.uuid, note="both")
    Lm = m.labels("seg")
    want = vol.copy()
    want[(vol == 3) & (np.arange(64)[:, None, None] < 52)] = s1
    want[(vol == 3) & (np.arange(64)[:, None, None] >= 52)] = r1
    mapping = {2: 1, s1: 3, r1: 3, 6: 5, 7: c, 4: 900}
    check_bodies(Lm, want, mapping, {1: [1, 2], 3: [s1, r1], 5: [5, 6], c: [7], 900: [4], 8: [8]})
    check_index(Lm, want, [3], full=False, unmapped=False)
    assert len(Lm.mutations(ancestors=True)) == 5
    # each branch still shows only its own edits
    check_bodies(repo.version(a.uuid).labels("seg"), want, {2: 1, s1: 3, r1: 3},
                 {1: [1, 2], 5: [5], 7: [7]})
    check_bodies(repo.version(b.uuid).labels("seg"), vol, {6: 5, 7: c, 4: 900},
                 {3: [3], 5: [5, 6]})


# --------------------------------------------------------------------------------------------
# label_diff


def _delta(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    ca, cb = counts(a), counts(b)
    out = {k: cb.get(k, 0) - ca.get(k, 0) for k in set(ca) | set(cb)}
    return dict(sorted((k, v) for k, v in out.items() if v))


def test_label_diff(store):
    repo, L, vol = setup_labels(store)
    v0 = repo.commit()
    repo.newversion()
    rng = np.random.default_rng(2)
    v1 = vol.copy()
    v1[10:20, 10:50, 10:70] = 9  # new label over several blocks
    v1[40:64, 0:32, 0:32] = 0  # a block emptied
    v1[33, 33, 33] = 1
    v1[0:32, 64:96, 96:128] = rng.integers(0, 4, (32, 32, 32)).astype(np.uint64) * np.uint64(4)
    L[...] = v1  # rewrites every block, but only some change
    child = repo.head
    diff_chunks = repo.diff(v0.uuid)["seg"]
    changed = len(diff_chunks.added) + len(diff_chunks.removed) + len(diff_chunks.changed)
    assert 0 < changed < len(L.stored_chunks())
    decoded = []
    orig = L._decode

    def spy(data, out=None):
        decoded.append(1)
        return orig(data, out=out)

    L._decode = spy
    got = L.label_diff(v0.uuid)
    del L._decode
    assert got == _delta(vol, v1)
    assert len(decoded) <= 2 * changed  # only the changed blocks were looked at
    assert L.label_diff(v0.uuid, child.uuid) == got
    assert L.label_diff(child.uuid, v0.uuid) == {k: -v for k, v in got.items()}
    assert L.label_diff(child.uuid, child.uuid) == {}
    # body-level diff under a mapping made before both versions
    repo.commit()
    repo.newversion()
    L.merge(1, [2, 9])
    v_merged = repo.commit()
    repo.newversion()
    v2 = v1.copy()
    v2[50:64, 50:90, 0:64] = 2
    L[50:64, 50:90, 0:64] = 2
    body = {2: 1, 9: 1}
    assert L.label_diff(v_merged.uuid, supervoxels=True) == _delta(v1, v2)
    assert L.label_diff(v_merged.uuid) == L.label_diff(v_merged.uuid, supervoxels=False) == \
        _delta(mapped(v1, body), mapped(v2, body))
    # body-level diff between two other versions: bodies as mapped at the second one, whatever
    # the handle's own version maps them to
    diff_v2 = L.label_diff(v_merged.uuid, supervoxels=False)
    v2_node = repo.commit()
    repo.newversion()
    L.cleave(1, [2])  # at the head 2 is no longer in body 1
    assert L.label_diff(v_merged.uuid, v2_node.uuid, supervoxels=False) == diff_v2
    # across sibling branches
    x = repo.branch("x", parent=v0.uuid)
    Lx = x.labels("seg")
    vx = vol.copy()
    vx[0:8, 0:8, 0:8] = 77
    Lx[0:8, 0:8, 0:8] = 77
    assert Lx.label_diff(child.uuid) == _delta(v1, vx)


def test_body_diffs_see_proofreading(store):
    """Merges, cleaves, renumbers and supervoxel splits change no block (or not only blocks):
    label_diff (bodies, each side under its own mapping) and repo.diff (``remapped``) see
    every one of them."""
    repo, L, vol = setup_labels(store)
    first = repo.commit("import")
    repo.branch("proofread")
    n = counts(vol)
    L.merge(1, [2])
    assert L.label_diff(first.uuid, repo.head.uuid) == {1: n[2], 2: -n[2]}
    assert L.label_diff(first.uuid) == {1: n[2], 2: -n[2]}
    assert L.label_diff(first.uuid, supervoxels=True) == {}  # no voxel changed
    d = repo.diff(first.uuid, repo.head.uuid)
    assert d and d["seg"] and d["seg"].remapped == [2] and not d["seg"].changed
    assert "1 supervoxels remapped" in d.summary()
    assert L.label_diff(repo.head.uuid, first.uuid) == {1: -n[2], 2: n[2]}

    new = L.cleave(1, [1])  # 1 moves to a new body; body 1 keeps supervoxel 2
    bodies = {1: new, 2: 1}
    assert L.label_diff(first.uuid) == _delta(vol, mapped(vol, bodies))
    assert L.label_diff(first.uuid) == {1: n[2] - n[1], 2: -n[2], new: n[1]}

    L.renumber(500, 3)
    bodies[3] = 500
    assert L.label_diff(first.uuid) == _delta(vol, mapped(vol, bodies))
    assert repo.diff(first.uuid)["seg"].remapped == [1, 2, 3]

    # a supervoxel split rewrites blocks: bodies unchanged, supervoxels split
    mark = repo.commit("before split")
    repo.newversion()
    region = np.zeros(SHAPE, bool)
    region[:, :, :64] = True
    split, remain = L.split_supervoxel(4, (region, (0, 0, 0)))
    vol2 = vol.copy()
    vol2[(vol == 4) & region] = split
    vol2[(vol == 4) & ~region] = remain
    assert L.label_diff(mark.uuid) == {}  # body 4 holds the same voxels
    assert L.label_diff(mark.uuid, supervoxels=True) == _delta(vol, vol2)
    d = repo.diff(mark.uuid)["seg"]
    assert d.changed and sorted(d.remapped) == sorted([split, remain])
    bodies.update({split: 4, remain: 4})
    assert L.label_diff(first.uuid) == _delta(vol, mapped(vol2, bodies))
    np.testing.assert_array_equal(L[...], mapped(vol2, bodies))
    # and a block write on top, under the mapping: both kinds of change add up
    L[0:8, 0:8, 0:8] = 2  # supervoxel 2, of body 1
    vol3 = vol2.copy()
    vol3[0:8, 0:8, 0:8] = 2
    assert L.label_diff(first.uuid) == _delta(vol, mapped(vol3, bodies))
    # across sibling branches, each side under its own mapping
    other = repo.branch("other", parent=first.uuid)
    Lo = other.labels("seg")
    Lo.merge(3, [5])
    assert Lo.label_diff(repo.version("proofread").uuid) == _delta(
        mapped(vol3, bodies), mapped(vol, {5: 3}))


def test_repo_merge_of_writes_of_one_label_in_disjoint_blocks(store):
    repo = new_repo(store)
    L = repo.create_labels("seg", (64, 64, 128), chunks=(32, 32, 32))
    L[0:10, 0:10, 0:10] = 1
    root = repo.commit()
    a = repo.branch("a")
    a.labels("seg")[0:10, 0:10, 64:74] = 9
    repo.commit()
    b = repo.branch("b", parent=root.uuid)
    b.labels("seg")[0:10, 0:10, 96:106] = 9
    repo.commit()
    Lm = repo.merge(a.uuid, b.uuid).labels("seg")
    vol = Lm.read(..., supervoxels=True)
    assert int((vol == 9).sum()) == 2000  # the voxels merge cleanly
    check_index(Lm, vol, full=False)


def test_repo_merge_of_merges_into_the_same_body(store):
    repo, _, vol = setup_labels(store)
    root = repo.commit()
    a = repo.branch("a")
    a.labels("seg").merge(1, [2])
    repo.commit()
    b = repo.branch("b", parent=root.uuid)
    b.labels("seg").merge(1, [3])
    repo.commit()
    Lm = repo.merge(a.uuid, b.uuid).labels("seg")
    check_bodies(Lm, vol, {2: 1, 3: 1}, {1: [1, 2, 3]})
