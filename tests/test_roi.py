"""ROI datatype: spans against dense numpy block masks (hypothesis), point queries, box
masks, set operations, DVID's partition, labels.read(roi=), annotation.in_roi, versioning on
every backend, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diced.datatypes.roi import spans as S
from diced.errors import InvalidArgumentError, LockedNodeError, MergeConflictError

# --- dense model ----------------------------------------------------------------------------

GRID = (6, 7, 9)  # blocks z, y, x (offset by ORIGIN)
ORIGIN = np.array([-2, -3, -4])


def dense_from_spans(spans) -> np.ndarray:
    m = np.zeros(GRID, bool)
    for z, y, x0, x1 in np.asarray(spans).reshape(-1, 4).tolist():
        m[z - ORIGIN[0], y - ORIGIN[1], x0 - ORIGIN[2]:x1 - ORIGIN[2] + 1] = True
    return m


def span_lists():
    def row(draw_z, draw_y, a, b):
        return [draw_z, draw_y, min(a, b), max(a, b)]

    one = st.builds(row, st.integers(ORIGIN[0], ORIGIN[0] + GRID[0] - 1),
                    st.integers(ORIGIN[1], ORIGIN[1] + GRID[1] - 1),
                    st.integers(ORIGIN[2], ORIGIN[2] + GRID[2] - 1),
                    st.integers(ORIGIN[2], ORIGIN[2] + GRID[2] - 1))
    return st.lists(one, max_size=25)


@given(span_lists())
def test_normal_form_covers_the_same_blocks(spans):
    n = S.normalize(spans)
    assert np.array_equal(dense_from_spans(n), dense_from_spans(spans))
    if len(n):
        # sorted by (z, y, x0), no two spans of a row touch or overlap
        keys = [tuple(r) for r in n[:, :3].tolist()]
        assert keys == sorted(keys)
        same = np.all(n[1:, :2] == n[:-1, :2], axis=1)
        assert np.all(n[1:, 2][same] > n[:-1, 3][same] + 1)
    assert np.array_equal(S.normalize(n), n)


@given(span_lists())
def test_block_mask_roundtrip(spans):
    n = S.normalize(spans)
    m = S.block_mask(n, ORIGIN.tolist(), (ORIGIN + GRID).tolist())
    assert np.array_equal(m, dense_from_spans(spans))
    assert np.array_equal(S.from_block_mask(m, ORIGIN.tolist()), n)


@given(span_lists(), span_lists())
def test_set_operations_match_numpy(a, b):
    da, db = dense_from_spans(a), dense_from_spans(b)
    assert np.array_equal(dense_from_spans(S.union(a, b)), da | db)
    assert np.array_equal(dense_from_spans(S.intersection(a, b)), da & db)
    assert np.array_equal(dense_from_spans(S.difference(a, b)), da & ~db)


@given(span_lists(), st.lists(st.tuples(*(st.integers(o - 1, o + g) for o, g in
                                          zip(ORIGIN.tolist(), GRID, strict=True))),
                              max_size=40))
def test_contains_blocks_matches_numpy(spans, blocks):
    d = dense_from_spans(spans)
    q = np.array(blocks, np.int64).reshape(-1, 3)
    got = S.contains_blocks(S.normalize(spans), q)
    want = []
    for z, y, x in q.tolist():
        i = np.array([z, y, x]) - ORIGIN
        want.append(bool(np.all(i >= 0) and np.all(i < GRID) and d[tuple(i)]))
    assert got.tolist() == want


# --- instances -------------------------------------------------------------------------------




def voxel_mask(spans, lo, hi, bs) -> np.ndarray:
    """Brute-force (z, y, x) voxel mask of the box lo..hi (x, y, z) for spans."""
    bx, by, bz = bs
    z, y, x = np.meshgrid(np.arange(lo[2], hi[2]), np.arange(lo[1], hi[1]),
                          np.arange(lo[0], hi[0]), indexing="ij")
    out = np.zeros(z.shape, bool)
    for sz, sy, x0, x1 in np.asarray(spans).reshape(-1, 4).tolist():
        out |= (z // bz == sz) & (y // by == sy) & (x // bx >= x0) & (x // bx <= x1)
    return out


def test_get_put_delete_and_queries(repo):
    roi = repo.create_instance("r", "roi")
    assert roi.block_size == (32, 32, 32)
    assert roi.get().shape == (0, 4) and len(roi) == 0 and roi.bounds() is None
    roi.put([[0, 0, 2, 5], [0, 0, 0, 2], [1, 2, 3, 3], [-1, -1, -2, -2]])
    assert roi.to_json() == [[-1, -1, -2, -2], [0, 0, 0, 5], [1, 2, 3, 3]]
    assert len(roi) == 8
    assert roi.bounds() == ((-64, -32, -32), (192, 96, 64))
    assert repo["r"].get().tolist() == roi.get().tolist()
    assert roi.ptquery([[0, 0, 0], [191, 31, 31], [192, 0, 0], [100, 70, 40], [-64, -32, -32],
                        [-65, -1, -1]]) == [True, True, False, True, True, False]
    assert roi.contains(np.zeros((0, 3))).shape == (0,)
    assert roi.contains([[0.5, 31.9, 0.0], [-0.5, 0, 0]]).tolist() == [True, False]
    lo, hi = (-70, -40, -33), (200, 100, 70)
    assert np.array_equal(roi.mask(lo, hi), voxel_mask(roi.get(), lo, hi, roi.block_size))
    assert roi.mask((5, 5, 5), (5, 9, 9)).shape == (4, 4, 0)
    roi.put([[3, 3, 3, 4]])  # replaces
    assert roi.to_json() == [[3, 3, 3, 4]]
    roi.delete()
    assert roi.to_json() == [] and roi.ptquery([[100, 100, 100]]) == [False]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spans=span_lists(), bs=st.sampled_from([(32, 32, 32), (4, 5, 3)]),
       box=st.tuples(*[st.tuples(st.integers(-30, 40), st.integers(0, 25))] * 3),
       pts=st.lists(st.tuples(st.integers(-40, 60), st.integers(-40, 60), st.integers(-40, 60)),
                    max_size=30))
@pytest.mark.backends("memory")
def test_mask_and_ptquery_match_numpy(repo, spans, bs, box, pts):
    name = f"r{bs[1]}"
    roi = repo[name] if name in repo else repo.create_instance(name, "roi", block_size=list(bs))
    roi.put(spans)
    lo = [b[0] for b in box]
    hi = [b[0] + b[1] for b in box]
    assert np.array_equal(roi.mask(lo, hi), voxel_mask(spans, lo, hi, bs))
    p = np.array(pts, np.int64).reshape(-1, 3)
    want = [bool(voxel_mask(spans, q, q + 1, bs).all()) for q in p]
    assert roi.ptquery(p) == want


def test_partition_properties(repo):
    rng = np.random.default_rng(3)
    d = rng.random((13, 17, 19)) < 0.15
    d[4:9, 5:12, 2:15] = True
    z, y, x = np.nonzero(d)
    spans = np.stack([z + 3, y - 5, x, x], axis=1)
    roi = repo.create_instance("p", "roi", block_size=[16, 16, 16])
    roi.put(spans)
    active = set(map(tuple, np.stack([z + 3, y - 5, x], 1).tolist()))
    for n in (1, 3, 4, 8):
        part = roi.partition(batchsize=n)
        subs = part["Subvolumes"]
        assert part["NumSubvolumes"] == len(subs)
        covered = []
        for s in subs:
            (x0, y0, z0), (x1, y1, z1) = s["MinChunk"], s["MaxChunk"]
            assert (x1 - x0 + 1, y1 - y0 + 1, z1 - z0 + 1) == (n, n, n)
            assert s["MinPoint"] == [x0 * 16, y0 * 16, z0 * 16]
            assert s["MaxPoint"] == [(x1 + 1) * 16 - 1, (y1 + 1) * 16 - 1, (z1 + 1) * 16 - 1]
            inside = {b for b in active if x0 <= b[2] <= x1 and y0 <= b[1] <= y1
                      and z0 <= b[0] <= z1}
            assert s["ActiveBlocks"] == len(inside) > 0 and s["TotalBlocks"] == n ** 3
            covered.append(inside)
        # every active block in exactly one subvolume
        assert sum(len(c) for c in covered) == len(active) == part["NumActiveBlocks"]
        assert set().union(*covered) == active
    assert part["ROI"] == {"MinChunk": [0, -5, 3], "MaxChunk": [18, 11, 15]}
    empty = repo.create_instance("e", "roi")
    assert empty.partition()["Subvolumes"] == []
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(InvalidArgumentError):
            roi.partition(bad)


def test_partition_matches_dvid_layout(repo):
    """A hand-worked DVID SimplePartition: layer z from MinZ - (dz % N) // 2, rows of
    subvolumes centred on the active y and x ranges."""
    roi = repo.create_instance("p", "roi")
    roi.put([[0, 0, 0, 5], [1, 2, 3, 3]])
    part = roi.partition(2)
    assert [(s["MinChunk"], s["ActiveBlocks"]) for s in part["Subvolumes"]] == [
        ([0, 0, 0], 2), ([2, 0, 0], 2), ([4, 0, 0], 2), ([3, 2, 0], 1)]
    assert part["NumTotalBlocks"] == 32 and part["NumActiveBlocks"] == 7


def test_set_operation_instances(repo):
    a = repo.create_instance("a", "roi")
    b = repo.create_instance("b", "roi")
    a.put([[0, 0, 0, 9], [1, 1, 1, 1]])
    b.put([[0, 0, 5, 12], [2, 2, 2, 2]])
    u = a.union(b, name="u")
    assert u.to_json() == [[0, 0, 0, 12], [1, 1, 1, 1], [2, 2, 2, 2]]
    assert repo["u"].to_json() == u.to_json()
    assert a.intersection("b").tolist() == [[0, 0, 5, 9]]
    assert (a - b).tolist() == [[0, 0, 0, 4], [1, 1, 1, 1]]
    assert (a & [[1, 1, 0, 3]]).tolist() == [[1, 1, 1, 1]]
    assert (a | b).tolist() == u.get().tolist()
    c = repo.create_instance("c", "roi", block_size=16)
    with pytest.raises(InvalidArgumentError):
        a.union(c)


def test_bad_input_stores_nothing(repo):
    roi = repo.create_instance("r", "roi")
    roi.put([[0, 0, 0, 1]])
    for bad in ([[0, 0, 5, 4]], [[0, 0, 1]], [[0, 0, 1, 2, 3]], [["a", 0, 0, 1]], 5,
                [[0, 0, 0, 1 << 40]], [[True, 0, 0, 1]]):
        with pytest.raises(InvalidArgumentError):
            roi.put(bad)
    assert roi.to_json() == [[0, 0, 0, 1]]
    for bad in ([[1, 2]], [[1, 2, 3, 4]], "x", [[np.nan, 0, 0]]):
        with pytest.raises(InvalidArgumentError):
            roi.ptquery(bad)
    with pytest.raises(InvalidArgumentError):
        roi.mask((0, 0, 0), (5, -1, 5))
    with pytest.raises(InvalidArgumentError):
        roi.mask((0, 0), (5, 5))
    for bs in (0, [1, 2], "x", True, [1, 1, -1]):
        with pytest.raises(InvalidArgumentError):
            repo.create_instance("bad", "roi", block_size=bs)
    assert "bad" not in repo


def test_versioning_branch_merge_diff(repo):
    roi = repo.create_instance("r", "roi")
    roi.put([[0, 0, 0, 3], [0, 1, 0, 3], [5, 5, 5, 5]])
    root = repo.commit("root")
    with pytest.raises(LockedNodeError):
        repo.version(root.uuid)["r"].put([[1, 1, 1, 1]])
    pinned = repo.version(root.uuid)["r"]
    for _ in range(2):  # the second round answers from the handle's copy of the locked ROI
        assert pinned.ptquery([[0, 0, 0], [0, 32, 0], [160, 160, 160], [128, 0, 0]]) == [
            True, True, True, False]
        assert np.array_equal(pinned.mask((0, 0, 0), (200, 64, 64)),
                              voxel_mask(pinned.get(), (0, 0, 0), (200, 64, 64), (32, 32, 32)))
    repo.branch("left")
    repo["r"].add([[0, 0, 10, 11], [7, 7, 7, 7]])  # planes 0 and 7
    assert pinned.ptquery([[320, 0, 0]]) == [False] and repo["r"].ptquery([[320, 0, 0]]) == [True]
    left = repo.commit("left")
    repo.branch("right", parent=root.uuid)
    r = repo["r"]
    r.put(np.concatenate([r.get()[r.get()[:, 0] != 5], [[9, 9, 9, 9]]]))  # drop 5, add 9
    right = repo.commit("right")
    assert repo.version(root.uuid)["r"].to_json() == [[0, 0, 0, 3], [0, 1, 0, 3], [5, 5, 5, 5]]
    d = repo.diff(left.uuid, right.uuid)["r"]
    assert d.added == [9] and d.removed == [5, 7] and d.changed == [0]
    repo.merge(left.uuid, right.uuid)
    assert repo["r"].to_json() == [[0, 0, 0, 3], [0, 0, 10, 11], [0, 1, 0, 3], [7, 7, 7, 7],
                                   [9, 9, 9, 9]]
    m = repo.commit("merged")
    # both sides change plane 0: a conflict keyed by the plane
    repo.branch("x")
    repo["r"].add([[0, 1, 20, 20]])
    x = repo.commit("x")
    repo.branch("y", parent=m.uuid)
    repo["r"].add([[0, 1, 30, 30]])
    y = repo.commit("y")
    with pytest.raises(MergeConflictError) as exc:
        repo.merge(x.uuid, y.uuid)
    (c,) = exc.value.conflicts
    assert (c.instance, c.key) == ("r", 0)
    repo.merge(x.uuid, y.uuid, strategy=y.uuid)
    assert repo["r"].ptquery([[30 * 32, 32, 0], [20 * 32, 32, 0]]) == [True, False]
    # another plane changed on one side only merges cleanly next to the conflict's choice
    assert repo["r"].ptquery([[7 * 32, 7 * 32, 7 * 32]]) == [True]


def test_labels_read_with_roi(repo):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 5, size=(40, 50, 60), dtype=np.uint64)
    lab = repo.create_instance("seg", "labels", shape=data.shape, chunks=(16, 16, 16))
    lab[...] = data
    roi = repo.create_instance("r", "roi", block_size=[8, 8, 8])
    roi.put([[1, 2, 3, 5], [4, 0, 0, 0], [2, 3, 6, 9]])
    m = voxel_mask(roi.get(), (0, 0, 0), (60, 50, 40), (8, 8, 8))
    assert np.array_equal(lab.read(roi=roi), np.where(m, data, 0))
    assert np.array_equal(lab.read((slice(3, 30), slice(5, 41), slice(7, 59)), roi=roi),
                          np.where(m, data, 0)[3:30, 5:41, 7:59])
    assert lab.read((10, 20, slice(None)), roi=roi).shape == (60,)
    assert np.array_equal(lab.read((10, 20, slice(None)), roi=roi), np.where(m, data, 0)[10, 20])
    lab.merge(1, [2])  # reads bodies, then masks
    want = np.where(np.isin(data, [1, 2]), 1, data)
    assert np.array_equal(lab.read(roi=roi), np.where(m, want, 0))
    assert np.array_equal(lab.read(roi=roi, supervoxels=True), np.where(m, data, 0))
    img = repo.create_instance("img", "array", dtype="uint8", shape=(40, 50, 60),
                               chunks=(16, 16, 16), origin=(-8, 0, 0))
    img[...] = 7
    got = img.read(roi=roi)
    m2 = voxel_mask(roi.get(), (0, 0, -8), (60, 50, 32), (8, 8, 8))
    assert np.array_equal(got, np.where(m2, 7, 0).astype(np.uint8))
    with pytest.raises(InvalidArgumentError):
        lab.read((slice(0, 10, 2), slice(None), slice(None)), roi=roi)
    with pytest.raises(InvalidArgumentError):
        lab.read(roi="r")


def test_annotation_in_roi(repo):
    ann = repo.create_instance("syn", "annotation", block_size=16)
    rng = np.random.default_rng(1)
    pts = rng.integers(0, 200, size=(300, 3))
    ann.post([{"Pos": p.tolist(), "Kind": "PreSyn"} for p in pts])
    roi = repo.create_instance("r", "roi", block_size=[32, 32, 32])
    roi.put([[0, 0, 0, 2], [1, 1, 1, 1], [3, 2, 0, 5]])
    inside = {tuple(p) for p, ok in zip(pts.tolist(), roi.contains(pts).tolist(), strict=True)
              if ok}
    got = ann.in_roi(roi)
    assert {tuple(e["Pos"]) for e in got} == inside and len(got) == len(inside)
    assert {tuple(e["Pos"]) for e in ann.in_roi("r")} == inside
    small = repo.create_instance("s", "roi", block_size=[32, 32, 32])
    small.put([[1, 1, 1, 1]])
    want = {tuple(p) for p in pts.tolist() if all(32 <= c < 64 for c in p)}
    assert {tuple(e["Pos"]) for e in ann.in_roi(small)} == want
    assert ann.in_roi(repo.create_instance("e", "roi")) == []
    with pytest.raises(InvalidArgumentError):
        ann.in_roi(ann)


def test_large_coordinates_keep_their_order():
    """Row keys cover the whole int32 range (no overflow in the sweep or the lookups)."""
    big = (1 << 31) - 1
    small = -(1 << 31)
    spans = [[big, small, small, small + 5], [small, big, big - 3, big], [0, 0, -1, 1],
             [big, small, small + 7, small + 9]]
    n = S.normalize(spans)
    assert n.tolist() == [[small, big, big - 3, big], [0, 0, -1, 1],
                          [big, small, small, small + 5], [big, small, small + 7, small + 9]]
    q = np.array([[big, small, small + 6], [small, big, big], [0, 0, 2], [0, 0, -1]])
    assert S.contains_blocks(n, q).tolist() == [False, True, False, True]
    assert S.difference(n, [[0, 0, 0, 0]]).tolist()[1:3] == [[0, 0, -1, -1], [0, 0, 1, 1]]


@pytest.mark.parametrize(("dense_limit", "parallel"), [(1, 1), (1 << 24, 10**9), (1 << 24, 1)])
def test_contains_points_kernel_and_numpy_paths_agree(monkeypatch, dense_limit, parallel):
    monkeypatch.setattr(S, "_DENSE_ROWS", dense_limit)
    monkeypatch.setattr(S, "_PARALLEL", parallel)
    rng = np.random.default_rng(4)
    d = rng.random((9, 11, 13)) < 0.3
    z, y, x = np.nonzero(d)
    spans = S.normalize(np.stack([z - 4, y - 5, x - 6, x - 6], 1))
    pts = rng.integers(-60, 60, size=(5000, 3))
    bs = (4, 3, 5)
    want = []
    for px, py, pz in pts.tolist():
        i = (pz // bs[2] + 4, py // bs[1] + 5, px // bs[0] + 6)
        want.append(all(0 <= c < n for c, n in zip(i, d.shape, strict=True)) and bool(d[i]))
    assert S.contains_points(spans, pts, bs).tolist() == want


def test_proofreading_through_an_roi_at_every_version(repo):
    """Labels, synapses synced to them and an ROI; merges, a cleave and an ROI edit across
    versions; at every version the synapses in the ROI, each body's synapses in the ROI and
    labels.read(roi=) agree with brute force on that version's data."""
    rng = np.random.default_rng(7)
    sv = (np.arange(64 * 64 * 64).reshape(64, 64, 64) // 4096 + 1).astype(np.uint64)  # 16 slabs
    lab = repo.create_instance("seg", "labels", shape=sv.shape, chunks=(32, 32, 32))
    lab[...] = sv
    syn = repo.create_instance("syn", "annotation", block_size=16)
    syn.sync("seg")
    pts = rng.integers(0, 64, size=(200, 3))
    syn.post([{"Pos": p.tolist(), "Kind": "PreSyn"} for p in pts])
    roi = repo.create_instance("roi", "roi", block_size=[16, 16, 16])
    roi.put([[0, 0, 0, 3], [1, 1, 1, 2], [3, 2, 0, 0]])
    repo.create_instance("sz", "labelsz").sync("syn")  # synapse counts per body
    versions = [repo.commit("start")]
    repo.newversion()
    repo["seg"].merge(1, [2, 3])
    versions.append(repo.commit("merge"))
    repo.newversion()
    repo["seg"].cleave(1, [3])
    repo["roi"].add([[2, 3, 0, 3]])
    versions.append(repo.commit("cleave + roi"))
    for v in versions:
        at = repo.version(v.uuid)
        r, s, seg = at["roi"], at["syn"], at["seg"]
        bodies = seg[...]
        inside = r.contains(pts)
        want = {tuple(p) for p, ok in zip(pts.tolist(), inside.tolist(), strict=True) if ok}
        assert {tuple(e["Pos"]) for e in s.in_roi(r)} == want
        every = np.unique(bodies).tolist()
        counts = at["sz"].counts(every, "PreSyn")
        for body, count in zip(every, counts, strict=True):
            mine = {tuple(e["Pos"]) for e in s.label(body)}
            brute = {tuple(p) for p in pts.tolist() if bodies[p[2], p[1], p[0]] == body}
            assert mine == brute
            assert mine & want == {p for p in brute if p in want}
            assert count == {"Label": body, "PreSyn": len(brute)}  # synapse counts
        m = voxel_mask(r.get(), (0, 0, 0), (64, 64, 64), (16, 16, 16))
        assert np.array_equal(seg.read(roi=r), np.where(m, bodies, 0))
