"""labelsz datatype: counts, counts of many bodies, top N and threshold against recounting
from the label array's voxels and the elements, through element edits, body merges,
cleaves, renumbers and block writes, at every version (and after a version merge); an ROI
restriction; bad input."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from diced.errors import InstanceNotFoundError, InvalidArgumentError, LockedNodeError

KINDS = ("PostSyn", "PreSyn", "Gap", "Note", "Unknown")
SYN = ("PostSyn", "PreSyn", "Gap")




def recount(at, roi=None) -> dict[str, Counter]:
    """Per-kind body counts recomputed from scratch at a version."""
    bodies = at["seg"][...]
    out = {k: Counter() for k in (*KINDS, "AllSyn")}
    for e in at["syn"].all(relationships=False):
        x, y, z = e["Pos"]
        if roi is not None and not at[roi].ptquery([[x, y, z]])[0]:
            continue
        b = int(bodies[z, y, x])
        if b == 0:
            continue
        out[e["Kind"]][b] += 1
        if e["Kind"] in SYN:
            out["AllSyn"][b] += 1
    return out


def check(lsz, want: dict[str, Counter]) -> None:
    for kind, c in want.items():
        ranked = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))
        assert [(d["Label"], d[kind]) for d in lsz.top(len(ranked) + 5, kind)] == ranked
        assert [(d["Label"], d[kind]) for d in lsz.top(2, kind)] == ranked[:2]
        assert [(d["Label"], d[kind]) for d in lsz.threshold(3, kind)] == \
            [r for r in ranked if r[1] >= 3]
        assert [(d["Label"], d[kind]) for d in lsz.threshold(1, kind, offset=1, n=2)] == \
            ranked[1:3]
        bodies = sorted(c)[:5] + [999_999]
        assert lsz.counts(bodies, kind) == [{"Label": b, kind: c.get(b, 0)} for b in bodies]
        many = list(range(70))
        assert lsz.counts(many, kind) == [{"Label": b, kind: c.get(b, 0)} for b in many]
        for b in sorted(c)[:3]:
            assert lsz.count(b, kind) == {"Label": b, kind: c[b]}


def setup(repo, rng, roi=None):
    sv = (np.arange(48 * 48 * 48).reshape(48, 48, 48) // 2304 + 1).astype(np.uint64)  # 48 slabs
    seg = repo.create_instance("seg", "labels", shape=sv.shape, chunks=(16, 16, 16))
    seg[...] = sv
    syn = repo.create_instance("syn", "annotation", block_size=16)
    syn.sync("seg")
    pts = {tuple(p) for p in rng.integers(0, 48, size=(300, 3)).tolist()}
    syn.post([{"Pos": list(p), "Kind": KINDS[i % 5]} for i, p in enumerate(sorted(pts))])
    lsz = repo.create_instance("syn_labelsz", "labelsz", **({"roi": roi} if roi else {}))
    lsz.sync("syn")
    return seg, syn, lsz


def test_counts_follow_every_change_at_every_version(repo):
    rng = np.random.default_rng(11)
    _seg, _syn, lsz = setup(repo, rng)
    check(lsz, recount(repo.version(repo.current_uuid)))
    v0 = repo.commit("start")
    repo.newversion()
    repo["seg"].merge(1, [2, 3, 4])
    v1 = repo.commit("merge")
    repo.newversion()
    repo["seg"].cleave(1, [4])
    repo["seg"].renumber(500, 5)
    repo["syn"].post([{"Pos": [1, 1, 1], "Kind": "PreSyn"}, {"Pos": [2, 2, 0], "Kind": "Gap"}])
    first = repo["syn"].all()[5]
    repo["syn"].delete(first["Pos"])
    repo["seg"][0:16, 0:16, 0:16] = 7  # a block write moves elements to body 7
    v2 = repo.commit("edits")
    for v in (v0, v1, v2):
        at = repo.version(v.uuid)
        pinned = at["syn_labelsz"]
        check(pinned, recount(at))
        check(pinned, recount(at))  # again, from the handle's table for the locked version
    assert repo.version(v1.uuid)["syn_labelsz"].count(1, "AllSyn")["AllSyn"] > \
        repo.version(v0.uuid)["syn_labelsz"].count(1, "AllSyn")["AllSyn"]
    # a version merge: edits on two branches
    repo.branch("a", parent=v2.uuid)
    repo["seg"].merge(6, [8])
    a = repo.commit("a")
    repo.branch("b", parent=v2.uuid)
    repo["syn"].post([{"Pos": [47, 47, 47], "Kind": "PostSyn"}])
    b = repo.commit("b")
    repo.merge(a.uuid, b.uuid)
    check(repo["syn_labelsz"], recount(repo.version(repo.current_uuid)))


def test_roi_restriction(repo):
    rng = np.random.default_rng(3)
    roi = repo.create_instance("r", "roi", block_size=[16, 16, 16])
    roi.put([[0, 0, 0, 1], [1, 1, 1, 2], [2, 2, 0, 2]])
    _seg, _syn, lsz = setup(repo, rng, roi="r")
    assert lsz.roi == "r" and lsz.synced == "syn"
    check(lsz, recount(repo.version(repo.current_uuid), roi="r"))
    repo["r"].put([[0, 0, 0, 0]])
    check(repo["syn_labelsz"], recount(repo.version(repo.current_uuid), roi="r"))


def test_bad_input(repo):
    rng = np.random.default_rng(1)
    _seg, syn, lsz = setup(repo, rng)
    for bad in [lambda: lsz.count(1, "Synapse"), lambda: lsz.count(-1, "PreSyn"),
                lambda: lsz.count(1.5, "PreSyn"), lambda: lsz.top(-1, "PreSyn"),
                lambda: lsz.top(True, "PreSyn"), lambda: lsz.threshold(1, "PreSyn", offset=-1),
                lambda: lsz.threshold("x", "PreSyn"), lambda: lsz.counts(["a"], "PreSyn"),
                lambda: lsz.sync("seg"), lambda: lsz.sync(syn.name + "x"),
                lambda: repo.create_instance("x", "labelsz", roi=5)]:
        with pytest.raises((InvalidArgumentError, InstanceNotFoundError)):
            bad()
    assert lsz.top(0, "PreSyn") == []
    other = repo.create_instance("other", "annotation")
    with pytest.raises(InvalidArgumentError):
        lsz.sync("other")
    unsynced = repo.create_instance("u", "labelsz")
    with pytest.raises(InvalidArgumentError):
        unsynced.count(1, "PreSyn")
    unsynced.sync(other)
    with pytest.raises(InvalidArgumentError):  # "other" has no label array
        unsynced.top(3, "PreSyn")
    root = repo.commit("root")
    with pytest.raises(LockedNodeError):
        repo.version(root.uuid)["u"].sync("syn")
