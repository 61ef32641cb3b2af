"""labelgraph datatype: the contact-graph kernel against brute-force numpy on random label
volumes (numpy input and chunked label arrays, across chunk and tile borders, in boxes), the
graph API (vertices, edges, neighbours, subgraph), versioning on every backend, bad input."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from diced.datatypes.labelgraph import contact_graph
from diced.errors import InvalidArgumentError, LockedNodeError, MergeConflictError, NotFoundError


def brute_force(vol: np.ndarray) -> dict[tuple[int, int], int]:
    out: dict[tuple[int, int], int] = {}
    for axis in range(3):
        a = np.moveaxis(vol, axis, 0)[:-1].ravel()
        b = np.moveaxis(vol, axis, 0)[1:].ravel()
        keep = (a != b) & (a != 0) & (b != 0)
        lo = np.minimum(a[keep], b[keep])
        hi = np.maximum(a[keep], b[keep])
        pairs, counts = np.unique(np.stack([lo, hi], 1), axis=0, return_counts=True)
        for (x, y), c in zip(pairs.tolist(), counts.tolist(), strict=True):
            out[(x, y)] = out.get((x, y), 0) + c
    return dict(sorted(out.items()))


def as_dict(edges, areas):
    return {(int(a), int(b)): int(c) for (a, b), c in zip(edges.tolist(), areas.tolist(),
                                                          strict=True)}


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.uint32, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=9),
                  elements=st.integers(0, 5)))
def test_contacts_match_brute_force(vol):
    edges, areas = contact_graph(vol)
    assert as_dict(edges, areas) == brute_force(vol)
    if len(edges):
        assert np.all(edges[:, 0] < edges[:, 1])
        assert [tuple(e) for e in edges.tolist()] == sorted(tuple(e) for e in edges.tolist())


def _blobby(rng, shape, n):
    """Label volumes with runs and surfaces, not just noise."""
    vol = rng.integers(0, n, size=tuple(-(-s // 3) for s in shape)).astype(np.uint64)
    vol = vol.repeat(3, 0).repeat(3, 1).repeat(3, 2)[:shape[0], :shape[1], :shape[2]]
    noise = rng.random(shape) < 0.1
    vol[noise] = rng.integers(0, n, size=int(noise.sum()))
    return np.ascontiguousarray(vol)




@pytest.mark.backends("memory")
def test_label_array_tiles_and_boxes_match_brute_force(repo):
    rng = np.random.default_rng(5)
    vol = _blobby(rng, (37, 45, 51), 12)
    lab = repo.create_instance("seg", "labels", shape=vol.shape, chunks=(8, 16, 16))
    lab[...] = vol
    want = brute_force(vol)
    for tile in (1, 16, 20, 512):
        assert as_dict(*contact_graph(lab, tile=tile)) == want
    box = [[3, 5, 7], [30, 44, 40]]
    sub = vol[3:30, 5:44, 7:40]
    assert as_dict(*contact_graph(lab, box, tile=16)) == brute_force(sub)
    assert as_dict(*contact_graph(vol, box)) == brute_force(sub)
    img = repo.create_instance("img", "array", dtype="uint16", shape=vol.shape, chunks=(8, 8, 8))
    img[...] = vol.astype(np.uint16)
    assert as_dict(*contact_graph(img, tile=8)) == want
    # bodies: merging labels 1 and 2 joins their edges and drops theirs
    lab.merge(1, [2])
    bodies = np.where(vol == 2, 1, vol)
    assert as_dict(*contact_graph(lab, supervoxels=False)) == brute_force(bodies)
    assert as_dict(*contact_graph(lab)) == want


def test_graph_api(repo):
    g = repo.create_instance("g", "labelgraph")
    g.add_vertex(1, 5.0)
    g.add_edges([[1, 2], [3, 2], [4, 1]], [10, 20, 30])
    assert g.vertex(1) == 5.0 and g.vertex(2) == 0.0 and g.vertex(9) is None
    assert g.edge(2, 1) == 10.0 and g.edge(1, 3) is None and len(g) == 4
    assert g.neighbors(2) == {1: 10.0, 3: 20.0}
    assert g.neighbors(1) == {2: 10.0, 4: 30.0} and g.neighbors(99) == {}
    v, w = g.vertices()
    assert v.tolist() == [1, 2, 3, 4] and w.tolist() == [5, 0, 0, 0]
    e, ew = g.edges()
    assert e.tolist() == [[1, 2], [1, 4], [2, 3]] and ew.tolist() == [10, 30, 20]
    sg = g.subgraph([1, 2, 4, 77])
    assert sorted(sg.nodes) == [1, 2, 4] and sorted(sg.edges) == [(1, 2), (1, 4)]
    assert sg.nodes[1]["weight"] == 5.0 and sg.edges[1, 4]["weight"] == 30.0
    full = g.to_networkx()
    assert nx.utils.graphs_equal(full, g.subgraph([1, 2, 3, 4]))
    g.add_edges([[2, 1], [1, 2]], [1, 2], accumulate=True)
    assert g.edge(1, 2) == 13.0
    g.remove_edges([[3, 2], [8, 9]])
    assert g.neighbors(3) == {} and 3 in g
    g.remove_vertex(1)
    assert 1 not in g and g.neighbors(2) == {} and g.neighbors(4) == {}
    with pytest.raises(NotFoundError):
        g.remove_vertex(1)
    h = nx.Graph()
    h.add_node(10, weight=2.5)
    h.add_edge(10, 11, weight=4)
    g.put_networkx(h)
    assert g.neighbors(11) == {10: 4.0} and g.vertex(10) == 2.5
    rng = np.random.default_rng(2)
    vol = _blobby(rng, (12, 13, 14), 6)
    g2 = repo.create_instance("g2", "labelgraph")
    edges, areas = g2.build(vol, vertex_sizes=True)
    assert as_dict(edges, areas) == brute_force(vol)
    got = g2.to_networkx()
    assert {tuple(sorted(e)): int(d["weight"]) for *e, d in got.edges(data=True)} == \
        brute_force(vol)
    ids, counts = np.unique(vol[vol != 0], return_counts=True)
    assert {n: d["weight"] for n, d in got.nodes(data=True)} == dict(
        zip(ids.tolist(), counts.astype(float).tolist(), strict=True))


def test_bad_input(repo):
    g = repo.create_instance("g", "labelgraph")
    g.add_edge(1, 2, 3)
    for bad in [lambda: g.add_edge(1, 1), lambda: g.add_edge(-1, 2),
                lambda: g.add_edges([[1, 2, 3]]), lambda: g.add_edges([[1.5, 2]]),
                lambda: g.add_edges([[1, 2], [2, 3]], [1]),
                lambda: g.add_edge(1, 3, float("nan")), lambda: g.add_vertex(5, "x"),
                lambda: g.add_vertices([1, 2], [1]), lambda: g.vertex(True),
                lambda: contact_graph(np.zeros((2, 2))), lambda: contact_graph(np.zeros((2, 2), int)),
                lambda: contact_graph(np.zeros((2, 2, 2), int), [[0, 0, 0], [3, 1, 1]]),
                lambda: contact_graph("x"),
                lambda: contact_graph(repo.create_instance("s", "labels", shape=(4, 4, 4)),
                                      tile=0)]:
        with pytest.raises(InvalidArgumentError):
            bad()
    assert g.edges()[0].tolist() == [[1, 2]] and len(g) == 2
    root = repo.commit("root")
    with pytest.raises(LockedNodeError):
        repo.version(root.uuid)["g"].add_edge(5, 6)


def test_versioning_branch_merge_diff(repo):
    g = repo.create_instance("g", "labelgraph")
    g.add_edges([[1, 2], [2, 3], [3, 4]], [1, 2, 3])
    root = repo.commit("root")
    repo.branch("left")
    repo["g"].add_edges([[1, 5]], [7])
    repo["g"].add_edge(1, 2, 10)
    left = repo.commit("left")
    repo.branch("right", parent=root.uuid)
    repo["g"].remove_vertex(4)
    repo["g"].add_edges([[6, 2]], [8])
    right = repo.commit("right")
    d = repo.diff(left.uuid, right.uuid)["g"]
    assert sorted(d.added) == [("edge", 2, 6), ("vertex", 6)]
    assert sorted(d.removed) == [("edge", 1, 5), ("edge", 3, 4), ("vertex", 4), ("vertex", 5)]
    assert d.changed == [("edge", 1, 2)]
    repo.merge(left.uuid, right.uuid)
    m = repo["g"]
    assert m.edges()[0].tolist() == [[1, 2], [1, 5], [2, 3], [2, 6]]
    assert m.neighbors(2) == {1: 10.0, 3: 2.0, 6: 8.0}  # the reverse index followed
    assert m.neighbors(5) == {1: 7.0} and m.neighbors(4) == {}
    assert repo.version(root.uuid)["g"].neighbors(4) == {3: 3.0}
    merged = repo.commit("merged")
    repo.branch("x")
    repo["g"].add_edge(2, 3, 100)
    x = repo.commit("x")
    repo.branch("y", parent=merged.uuid)
    repo["g"].remove_edges([[2, 3]])
    y = repo.commit("y")
    with pytest.raises(MergeConflictError) as exc:
        repo.merge(x.uuid, y.uuid)
    assert [(c.instance, c.key) for c in exc.value.conflicts] == [("g", ("edge", 2, 3))]
    repo.merge(x.uuid, y.uuid, strategy=y.uuid)
    assert repo["g"].neighbors(3) == {} and repo["g"].neighbors(2) == {1: 10.0, 6: 8.0}
