"""The annotation datatype: element JSON, queries by box/block/tag, post/delete/move with
relationships following, versioning (branch, merge per position, diff), and label sync,
checked against a direct recomputation through random proofreading edits."""

from __future__ import annotations

import random

import numpy as np
import pytest

import diced
from diced.datatypes import get_datatype
from diced.errors import (
    InstanceNotFoundError,
    InvalidArgumentError,
    LockedNodeError,
    MergeConflictError,
    NotFoundError,
)


@pytest.fixture
def ann(repo):
    return repo.create_instance("syn", "annotation", block_size=16)


def _syn(pre, post, tags=("a",)):
    """A PreSyn/PostSyn pair with relationships on both sides."""
    return [{"Pos": list(pre), "Kind": "PreSyn", "Tags": list(tags),
             "Rels": [{"Rel": "PreSynTo", "To": list(post)}]},
            {"Pos": list(post), "Kind": "PostSyn", "Prop": {"conf": "0.9"},
             "Rels": [{"Rel": "PostSynTo", "To": list(pre)}]}]


def _positions(elements):
    return sorted(tuple(e["Pos"]) for e in elements)


# -- elements and queries ---------------------------------------------------------------------


def test_registered():
    assert get_datatype("annotation").name == "annotation"


def test_post_get_and_queries(ann):
    ann.post(_syn((1, 2, 3), (40, 2, 3)) + [{"Pos": [17, 17, 17], "Kind": "Note",
                                              "Tags": ["b", "a", "b"], "Prop": None}])
    assert len(ann) == 3 and (1, 2, 3) in ann and (9, 9, 9) not in ann and "x" not in ann
    assert ann.get((1, 2, 3)) == {"Pos": [1, 2, 3], "Kind": "PreSyn", "Tags": ["a"], "Prop": {},
                                  "Rels": [{"Rel": "PreSynTo", "To": [40, 2, 3]}]}
    assert ann.get((17, 17, 17), relationships=False) == {
        "Pos": [17, 17, 17], "Kind": "Note", "Tags": ["b", "a"], "Prop": {}}
    assert ann.get((0, 0, 0)) is None
    assert _positions(ann.all()) == [(1, 2, 3), (17, 17, 17), (40, 2, 3)]
    assert _positions(ann.box((0, 0, 0), (20, 20, 20))) == [(1, 2, 3), (17, 17, 17)]
    assert _positions(ann.box((17, 17, 17), np.array([18, 18, 18]))) == [(17, 17, 17)]
    assert ann.box((18, 0, 0), (17, 5, 5)) == []
    assert _positions(ann.box((-1000, -1000, -1000), (1000, 1000, 1000))) == \
        [(1, 2, 3), (17, 17, 17), (40, 2, 3)]  # many blocks: one listing
    got = ann.blocks([(0, 0, 0), (2, 0, 0), (5, 5, 5)])
    assert sorted(got) == ["0,0,0", "2,0,0"] and got["2,0,0"][0]["Rels"]
    assert _positions(ann.tag("a")) == [(1, 2, 3), (17, 17, 17)]
    assert ann.tag("b") == [{"Pos": [17, 17, 17], "Kind": "Note", "Tags": ["b", "a"], "Prop": {}}]
    assert ann.tag("none") == []
    # replace by position: tags follow
    ann.post({"Pos": [17, 17, 17], "Kind": "Note", "Tags": ["c"]})
    assert _positions(ann.tag("a")) == [(1, 2, 3)] and _positions(ann.tag("c")) == [(17, 17, 17)]
    # negative coordinates
    ann.post([{"Pos": [-5, -70, 3]}])
    assert ann.get([-5, -70, 3])["Kind"] == "Unknown"
    assert _positions(ann.box((-10, -100, 0), (0, 0, 10))) == [(-5, -70, 3)]


@pytest.mark.parametrize("bad", [
    {"Kind": "PreSyn"},
    {"Pos": [1, 2]},
    {"Pos": [1, 2, "3"]},
    {"Pos": [1.5, 2, 3]},
    {"Pos": [True, 2, 3]},
    {"Pos": [1, 2, 1 << 40]},
    {"Pos": [1, 2, 3], "Kind": "Synapse"},
    {"Pos": [1, 2, 3], "Tags": "a"},
    {"Pos": [1, 2, 3], "Tags": [""]},
    {"Pos": [1, 2, 3], "Prop": {"a": 1}},
    {"Pos": [1, 2, 3], "Rels": [{"Rel": "Likes", "To": [0, 0, 0]}]},
    {"Pos": [1, 2, 3], "Rels": [{"Rel": "PreSynTo"}]},
    {"Pos": [1, 2, 3], "Colour": "red"},
    "not an element",
])
def test_bad_elements_store_nothing(ann, bad):
    with pytest.raises(InvalidArgumentError):
        ann.post([{"Pos": [9, 9, 9]}, bad])
    assert len(ann) == 0


def test_bad_options_and_queries(repo, ann):
    for bs in (0, -1, [1, 2], "x", True):
        with pytest.raises(InvalidArgumentError):
            repo.create_instance(f"bad{abs(hash(str(bs)))}", "annotation", block_size=bs)
    with pytest.raises(InvalidArgumentError):
        ann.tag("")
    with pytest.raises(InvalidArgumentError):
        ann.box((0, 0), (1, 1, 1))
    with pytest.raises(InvalidArgumentError, match="not synced"):
        ann.label(1)
    kv = repo.create_keyvalue("kv")
    with pytest.raises(InvalidArgumentError):
        ann.sync(kv)
    with pytest.raises(InstanceNotFoundError):
        ann.sync("nothing")
    assert ann.synced is None


def test_delete_and_move_follow_relationships(ann):
    ann.post(_syn((1, 1, 1), (2, 2, 2)) + [{"Pos": [3, 3, 3], "Kind": "PostSyn", "Tags": ["t"],
                                            "Rels": [{"Rel": "PostSynTo", "To": [1, 1, 1]}]}])
    pre = ann.get((1, 1, 1))
    pre["Rels"].append({"Rel": "PreSynTo", "To": [3, 3, 3]})
    ann.post([pre])
    ann.move((1, 1, 1), (50, 50, 50))
    assert ann.get((1, 1, 1)) is None
    assert ann.get((50, 50, 50))["Rels"] == [{"Rel": "PreSynTo", "To": [2, 2, 2]},
                                            {"Rel": "PreSynTo", "To": [3, 3, 3]}]
    assert ann.get((2, 2, 2))["Rels"] == [{"Rel": "PostSynTo", "To": [50, 50, 50]}]
    assert ann.get((3, 3, 3))["Rels"] == [{"Rel": "PostSynTo", "To": [50, 50, 50]}]
    assert _positions(ann.tag("a")) == [(50, 50, 50)]  # the tag index moved too
    with pytest.raises(InvalidArgumentError):
        ann.move((50, 50, 50), (3, 3, 3))  # occupied
    with pytest.raises(NotFoundError):
        ann.move((1, 1, 1), (4, 4, 4))
    ann.delete((50, 50, 50))
    assert ann.get((2, 2, 2))["Rels"] == [] and ann.get((3, 3, 3))["Rels"] == []
    assert ann.tag("a") == [] and _positions(ann.tag("t")) == [(3, 3, 3)]
    with pytest.raises(NotFoundError):
        ann.delete((50, 50, 50))
    ann.move((3, 3, 3), (3, 3, 3))
    assert _positions(ann.all()) == [(2, 2, 2), (3, 3, 3)]


# -- versioning ---------------------------------------------------------------------------------


def test_versions_branch_merge_diff(repo, ann):
    ann.post(_syn((1, 1, 1), (2, 2, 2)))
    base = repo.commit("base")
    with pytest.raises(LockedNodeError):
        repo.version(base.uuid)["syn"].post([{"Pos": [5, 5, 5]}])
    repo.branch("left")
    ann.post([{"Pos": [30, 30, 30], "Tags": ["left"]}])
    ann.move((1, 1, 1), (10, 10, 10))
    left = repo.commit("left")
    repo.checkout(base.uuid)
    repo.branch("right")
    ann.post([{"Pos": [31, 31, 31], "Tags": ["right", "a"]}])
    right = repo.commit("right")
    m = repo.merge(left.uuid, right.uuid)
    got = repo.version(m.uuid)["syn"]
    assert _positions(got.all()) == [(2, 2, 2), (10, 10, 10), (30, 30, 30), (31, 31, 31)]
    assert _positions(got.tag("a")) == [(10, 10, 10), (31, 31, 31)]
    assert _positions(got.tag("left")) == [(30, 30, 30)]
    assert _positions(repo.version(base.uuid)["syn"].all()) == [(1, 1, 1), (2, 2, 2)]
    d = repo.diff(base.uuid, m.uuid)["syn"]
    assert sorted(d.added) == [(10, 10, 10), (30, 30, 30), (31, 31, 31)]
    assert d.removed == [(1, 1, 1)] and d.changed == [(2, 2, 2)]
    # the same element edited on both sides: one conflict, named by its position
    repo.commit("m")
    repo.branch("x")
    ann.post([{"Pos": [2, 2, 2], "Kind": "Note", "Tags": ["x"]}])
    x = repo.commit("x")
    repo.checkout(m.uuid)
    repo.branch("y")
    ann.post([{"Pos": [2, 2, 2], "Kind": "Gap", "Tags": ["y"]}])
    y = repo.commit("y")
    with pytest.raises(MergeConflictError) as exc:
        repo.merge(x.uuid, y.uuid)
    (c,) = exc.value.conflicts
    assert c.instance == "syn" and c.key == (2, 2, 2)
    z = repo.merge(x.uuid, y.uuid, strategy=y.uuid)
    zz = repo.version(z.uuid)["syn"]
    assert zz.get((2, 2, 2))["Kind"] == "Gap"
    assert _positions(zz.tag("y")) == [(2, 2, 2)] and zz.tag("x") == []


# -- label sync ----------------------------------------------------------------------------------


def _check_sync(ann, labels, extra_bodies=()):
    """label(body) equals the elements whose voxel reads as body (through the label array's
    own read path), for every body under an element and a few others."""
    elements = ann.all()
    pos = np.array([e["Pos"] for e in elements], dtype=np.int64).reshape(-1, 3)
    shape = np.array(labels.shape)
    zyx = pos[:, ::-1]
    inside = ((zyx >= 0) & (zyx < shape)).all(axis=1)
    bodies = np.zeros(len(pos), dtype=np.uint64)
    if inside.any():
        bodies[inside] = labels.labels_at(zyx[inside])
    expected: dict[int, list] = {}
    for p, b in zip(map(tuple, pos.tolist()), bodies.tolist(), strict=True):
        expected.setdefault(int(b), []).append(p)
    for b in set(expected) | set(extra_bodies):
        if b == 0:
            continue
        assert _positions(ann.label(b)) == sorted(expected.get(b, [])), f"body {b}"


def test_sync_follows_edits(repo):
    seg = repo.create_labels("seg", shape=(32, 32, 32), chunks=(8, 8, 8))
    seg[0:16] = 5
    seg[16:32] = 6
    ann = repo.create_instance("syn", "annotation", block_size=16)
    ann.post(_syn((1, 2, 3), (20, 20, 20)) + [{"Pos": [100, 0, 0]}])  # outside the labels
    ann.sync("seg")
    assert ann.synced == "seg" and repo.labels("seg")._cfg["synced_by"] == ["syn"]
    assert _positions(ann.label(5)) == [(1, 2, 3)] and _positions(ann.label(6)) == [(20, 20, 20)]
    seg.merge(5, [6])
    assert _positions(ann.label(5)) == [(1, 2, 3), (20, 20, 20)] and ann.label(6) == []
    new = seg.cleave(5, [6])
    assert _positions(ann.label(new)) == [(20, 20, 20)]
    seg[0:8, 0:8, 0:8] = 9  # a block write under an element
    assert _positions(ann.label(9)) == [(1, 2, 3)] and ann.label(5) == []
    seg.renumber(77, 9)
    assert _positions(ann.label(77)) == [(1, 2, 3)] and ann.label(9) == []
    mask = np.zeros((8, 8, 8), bool)
    mask[3, 2, 1] = True  # the element's voxel (z, y, x) = (3, 2, 1)
    split, remain = seg.split_supervoxel(9, (mask, (0, 0, 0)))
    assert _positions(ann.label(77)) == [(1, 2, 3)]  # same body
    assert int(seg.read((3, 2, 1), supervoxels=True)) == split
    seg.cleave(77, [split])
    assert ann.label(77) == []
    _check_sync(ann, seg, [5, 6, 9, 77, new, split, remain])
    # an older version answers from its own labels
    v = repo.commit("edits")
    repo.newversion()
    seg[:] = 3
    assert _positions(ann.label(3)) == [(1, 2, 3), (20, 20, 20)]
    assert _positions(repo.version(v.uuid)["syn"].label(new)) == [(20, 20, 20)]


def test_sync_before_sync_version_and_deleted_instances(repo):
    seg = repo.create_labels("seg", shape=(16, 16, 16), chunks=(8, 8, 8))
    ann = repo.create_instance("syn", "annotation")
    ann.post([{"Pos": [1, 1, 1]}])
    seg[:] = 4
    before = repo.commit("before")
    repo.newversion()
    ann.sync(seg)
    assert _positions(ann.label(4)) == [(1, 1, 1)]
    with pytest.raises(InvalidArgumentError, match="synced"):
        repo.version(before.uuid)["syn"].label(4)
    repo.delete_instance("syn")
    seg[:] = 5  # the label array skips a synced annotation that is gone
    assert seg.count(5) == 16 ** 3


@pytest.mark.parametrize("seed", range(4))
def test_sync_model(repo, seed):
    """Random block writes, merges, cleaves, supervoxel splits, renumbers and element
    posts, deletes and moves, on two branches merged back: label(body) always equals the
    elements whose voxel has that body."""
    rng = random.Random(seed)
    n = 24
    seg = repo.create_labels("seg", shape=(n, n, n), chunks=(8, 8, 8))
    ann = repo.create_instance("syn", "annotation", block_size=rng.choice([8, 16, 64]))
    ann.sync("seg")

    def rnd_pos(spill=4):
        return [rng.randrange(-spill, n + spill) for _ in range(3)]

    def bodies():
        vals = np.unique(seg[...])
        return [int(v) for v in vals if v]

    def step():
        op = rng.choice(["write", "write", "post", "post", "delete", "move", "merge", "cleave",
                         "split", "renumber"])
        if op == "write":
            lo = [rng.randrange(n) for _ in range(3)]
            hi = [rng.randrange(a + 1, min(n, a + 12) + 1) for a in lo]
            seg[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = rng.randrange(1, 40)
        elif op == "post":
            ann.post([{"Pos": rnd_pos(), "Kind": rng.choice(["PreSyn", "PostSyn"]),
                       "Tags": rng.sample(["a", "b", "c"], rng.randrange(3))}
                      for _ in range(rng.randrange(1, 6))])
        elif op in ("delete", "move"):
            els = ann.all()
            if not els:
                return
            p = rng.choice(els)["Pos"]
            if op == "delete":
                ann.delete(p)
            else:
                q = rnd_pos()
                if ann.get(q) is None:
                    ann.move(p, q)
        else:
            bs = bodies()
            if not bs:
                return
            if op == "merge" and len(bs) > 1:
                a, b = rng.sample(bs, 2)
                seg.merge(a, [b])
            elif op == "cleave":
                b = rng.choice(bs)
                svs = seg.supervoxels(b).tolist()
                if len(svs) > 1:
                    seg.cleave(b, rng.sample(svs, rng.randrange(1, len(svs))))
            elif op == "split":
                vol = seg.read(..., supervoxels=True)
                svs = [int(v) for v in np.unique(vol) if v]
                sv = rng.choice(svs)
                mask = np.zeros((n, n, n), bool)
                lo = [rng.randrange(n) for _ in range(3)]
                mask[lo[0]:lo[0] + 6, lo[1]:lo[1] + 6, lo[2]:lo[2] + 6] = True
                if (mask & (vol == sv)).any() and (~mask & (vol == sv)).any():
                    seg.split_supervoxel(sv, (mask, (0, 0, 0)))
            elif op == "renumber":
                seg.renumber(seg.allocate(1)[0], rng.choice(bs))

    for z in range(0, n, 8):  # some bodies and elements to start with
        seg[z:z + 8, :, : n // 2] = 100 + z
        seg[z:z + 8, :, n // 2:] = 200 + z
    ann.post([{"Pos": rnd_pos(0), "Tags": ["a"]} for _ in range(40)])

    def run(steps):
        for _ in range(steps):
            step()
            _check_sync(ann, seg, bodies())

    run(25)
    base = repo.commit("base")
    repo.branch("left")
    run(15)
    left = repo.commit("left")
    repo.checkout(base.uuid)
    repo.branch("right")
    run(15)
    right = repo.commit("right")
    m = repo.merge(left.uuid, right.uuid, strategy=left.uuid)
    merged = repo.version(m.uuid)
    _check_sync(merged["syn"], merged["seg"], bodies())
    for v in (base, left, right):
        _check_sync(repo.version(v.uuid)["syn"], repo.version(v.uuid)["seg"])
    run(10)  # editing on at the merge node
    # the tag index follows too
    for tag in "abc":
        assert _positions(ann.tag(tag)) == sorted(tuple(e["Pos"]) for e in ann.all()
                                                   if tag in e["Tags"])


def test_cli_info_lists_annotations(tmp_path, capsys):
    from diced.cli import main

    path = str(tmp_path / "a.diced")
    with diced.Store(path) as store:
        repo = store.create_repo("fly")
        repo.create_instance("syn", "annotation").post(_syn((1, 1, 1), (2, 2, 2)))
        repo.commit("c")
    assert main(["info", path]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if " syn " in x)
    assert "annotation" in line and "2 items" in line
    assert "stored: 3 values" in line  # 2 elements + the tag index entry of the PreSyn


def test_verify_accepts_annotations(store, repo):
    seg = repo.create_labels("seg", shape=(16, 16, 16), chunks=(8, 8, 8))
    seg[:] = 2
    ann = repo.create_instance("syn", "annotation")
    ann.sync("seg")
    ann.post(_syn((1, 1, 1), (2, 2, 2)))
    repo.commit("c")
    report = store.verify()
    assert report.ok, report.summary()
