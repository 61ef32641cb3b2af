"""A real DVID client, unchanged, against ``diced serve``: dvidtools (PyPI ``dvidtools``,
GPL-3, used as an installed client only) for repos, nodes, key-values, label lookups and
sparse volumes.

dvidtools is configured the way its users do it, with ``dvid.setup(server=..., node=...)``;
it names the label instance ``segmentation`` and reads FlyEM's companion key-value instances
``segmentation_annotations``, ``segmentation_skeletons`` and ``segmentation_meshes``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
dvid = pytest.importorskip("dvid", reason="dvidtools is not installed (pip install dvidtools)")
if not hasattr(dvid, "get_sparsevol"):  # another package named 'dvid'
    pytest.skip("the installed 'dvid' module is not dvidtools", allow_module_level=True)

import diced
from diced.server import serve

SWC = "# test skeleton\n1 0 10 20 30 2 -1\n2 0 12 22 32 2 1\n3 0 14 24 34 2 2\n"


def _ngmesh() -> bytes:
    verts = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], np.float32)
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], np.uint32)
    return np.uint32(len(verts)).tobytes() + verts.tobytes() + faces.tobytes()


def _volume() -> np.ndarray:
    v = np.zeros((128, 128, 128), np.uint64)
    v[0:30, 0:40, 0:50] = 11
    v[40:100, 60:70, 10:120] = 22
    v[100:128, 100:128, 100:128] = 33
    return v


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    store = diced.Store(str(tmp_path_factory.mktemp("dvidtools") / "s.diced"))
    repo = store.create_repo("hemibrain-mini", description="dvidtools test")
    seg = repo.create_labels("segmentation", (128, 128, 128), max_scale=1)
    seg[:] = _volume()
    ann = repo.create_keyvalue("segmentation_annotations")
    ann["22"] = json.dumps({"name": "MBON01", "status": "Traced"}).encode()
    repo.create_keyvalue("segmentation_skeletons")["22_swc"] = SWC.encode()
    repo.create_keyvalue("segmentation_meshes")["22.ngmesh"] = _ngmesh()
    _synapses(repo)
    first = repo.commit("base")
    repo.newversion("proofreading")
    with serve(store, port=0) as handle:
        dvid.setup(server=handle.url, node=repo.current_uuid, user="tester")
        yield handle.url, repo, first.uuid


#: synapses: a T-bar in body 11 with two PSDs in body 22, one in 22 with a PSD in 11
SYNAPSES = [
    {"Pos": [10, 10, 10], "Kind": "PreSyn", "Tags": [], "Prop": {"conf": "0.9"},
     "Rels": [{"Rel": "PreSynTo", "To": [50, 65, 50]}, {"Rel": "PreSynTo", "To": [60, 66, 50]}]},
    {"Pos": [50, 65, 50], "Kind": "PostSyn", "Tags": [], "Prop": {"conf": "0.8"},
     "Rels": [{"Rel": "PostSynTo", "To": [10, 10, 10]}]},
    {"Pos": [60, 66, 50], "Kind": "PostSyn", "Tags": [], "Prop": {"conf": "0.7"},
     "Rels": [{"Rel": "PostSynTo", "To": [10, 10, 10]}]},
    {"Pos": [100, 62, 80], "Kind": "PreSyn", "Tags": [], "Prop": {"conf": "0.6"},
     "Rels": [{"Rel": "PreSynTo", "To": [20, 20, 20]}]},
    {"Pos": [20, 20, 20], "Kind": "PostSyn", "Tags": [], "Prop": {"conf": "0.5"},
     "Rels": [{"Rel": "PostSynTo", "To": [100, 62, 80]}]},
]
BOOKMARK = {"Pos": [5, 6, 7], "Kind": "Note", "Tags": ["user:tester"],
            "Prop": {"body ID": "11", "comment": "check", "custom": "1", "status": "",
                     "time": "", "type": "Other", "user": "tester"}}
#: ROI "LH": 32-voxel blocks (z 0, y 0, x 0..1) and (z 1, y 1, x 2)
LH = [[0, 0, 0, 1], [1, 1, 2, 2]]


def _synapses(repo: diced.Repo) -> None:
    """FlyEM's annotation companions as DVID instances: synapses (+ labelsz), bookmarks,
    to-do elements and an ROI."""
    syn = repo.create_instance("synapses", "annotation")
    syn.sync("segmentation")
    syn.post(SYNAPSES)
    repo.create_instance("synapses_labelsz", "labelsz").sync("synapses")
    repo.create_instance("bookmark_annotations", "annotation").post([BOOKMARK])
    repo.create_instance("segmentation_todo", "annotation").post(
        [{"Pos": [30, 30, 30], "Kind": "Note", "Prop": {"action": "to split"}}])
    repo.create_instance("LH", "roi").put(LH)


def test_projects_and_branch_history(node) -> None:
    _, repo, first = node
    projects = dvid.list_projects()
    assert list(projects["Alias"]) == ["hemibrain-mini"]
    assert dvid.get_branch_history(repo.uuid) == [repo.current_uuid, first]
    assert dvid.get_master_node(repo.uuid) == repo.current_uuid


def test_segmentation_info(node) -> None:
    info = dvid.get_segmentation_info()
    ext = info["Extended"]
    assert ext["BlockSize"] == [64, 64, 64] and ext["MaxDownresLevel"] == 1
    assert info["Base"]["TypeName"] == "labelmap"


def test_label_lookups(node) -> None:
    v = _volume()
    pts = np.array([[5, 5, 5], [20, 65, 50], [110, 110, 110], [127, 0, 0], [0, 127, 127]])
    ids = dvid.locs_to_ids(pts, progress=False)
    assert ids.tolist() == [int(v[z, y, x]) for x, y, z in pts]
    sizes = dvid.get_sizes([11, 22, 33, 44], progress=False)
    assert sizes.tolist() == [int((v == k).sum()) for k in (11, 22, 33)] + [0]
    assert dvid.ids_exist([11, 44], progress=False).tolist() == [True, False]


def test_sparse_volumes(node) -> None:
    v = _volume()
    size = dvid.get_sparsevol_size(22)
    assert size["voxels"] == int((v == 22).sum())
    assert size["minvoxel"] == [0, 0, 0] and size["maxvoxel"] == [127, 127, 127]
    vox = dvid.get_sparsevol(22, scale=0, ret_type="INDEX")
    want = np.argwhere(v == 22)[:, ::-1]  # x, y, z
    assert sorted(map(tuple, vox.tolist())) == sorted(map(tuple, want.tolist()))
    coarse = dvid.get_sparsevol(22, scale="COARSE", ret_type="INDEX")
    assert {tuple(b) for b in coarse.tolist()} == {
        (bx, by, bz) for bz in range(2) for by in range(2) for bx in range(2)
        if (v[bz * 64:(bz + 1) * 64, by * 64:(by + 1) * 64, bx * 64:(bx + 1) * 64] == 22).any()}
    # a bounding box (dvidtools sends HEAD first)
    box = dvid.get_sparsevol(11, scale=0, bbox=[0, 9, 0, 9, 0, 9])
    assert len(box) == 1000
    with pytest.raises(ValueError, match="no sparse volume"):
        dvid.get_sparsevol(11, scale=0, bbox=[100, 110, 100, 110, 100, 110])
    low = dvid.get_sparsevol(33, scale=1, ret_type="INDEX")
    assert len(low) == 14 ** 3


def test_keyvalue_companions(node) -> None:
    assert dvid.get_annotation(22) == {"name": "MBON01", "status": "Traced"}
    dvid.edit_annotation(22, {"status": "Roughly traced"}, verbose=False)
    assert dvid.get_annotation(22)["status"] == "Roughly traced"
    swc = dvid.get_skeletons(22, output="swc", on_error="raise")
    swc = swc[0] if isinstance(swc, list) else swc
    assert list(swc["node_id"]) == [1, 2, 3] and list(swc["parent_id"]) == [-1, 1, 2]
    assert dvid.has_skeleton([22, 11], progress=False).tolist() == [True, False]
    mesh = dvid.get_meshes(22, output="trimesh", on_error="raise")
    mesh = mesh[0] if isinstance(mesh, list) else mesh
    assert len(mesh.vertices) == 4 and len(mesh.faces) == 4


def test_last_mod_after_merge(node) -> None:
    import requests

    url, repo, _ = node
    r = requests.post(f"{url}/api/node/{repo.current_uuid}/segmentation/merge?u=tester",
                      json=[11, 33], timeout=30)
    r.raise_for_status()
    lm = dvid.get_last_mod(11)
    assert lm["mutation id"] == r.json()["MutationID"]
    assert dvid.locs_to_ids([[110, 110, 110]], progress=False).tolist() == [11]


# --- annotation, labelsz and ROI instances (diced.server.routes_annotation/labelsz/roi) ------

def test_synapse_counts_and_tables(node) -> None:
    assert dvid.get_n_synapses(11) == {"pre": 1, "post": 1}
    assert dvid.get_n_synapses(22) == {"pre": 1, "post": 2}
    assert dvid.get_n_synapses(44) == {"pre": 0, "post": 0}
    # (dvidtools' list form fails inside dvidtools: parse_bid runs before its list branch)
    syn = dvid.get_synapses(22)
    assert sorted(map(tuple, syn["Pos"])) == [(50, 65, 50), (60, 66, 50), (100, 62, 80)]
    assert set(syn.columns) == {"Pos", "Kind", "Tags", "Prop"}  # no Rels unless asked
    detailed = dvid.get_synapses(11, with_details=True)
    assert "Rels" in detailed.columns and len(detailed) == 2
    lh_only = dvid.get_synapses(22, pos_filter=lambda p: p[:, 0] < 64)
    assert sorted(map(tuple, lh_only["Pos"])) == [(50, 65, 50), (60, 66, 50)]


def test_connectivity(node) -> None:
    cn = dvid.get_connectivity(11)
    down = cn[cn.relation == "downstream"].set_index("bodyid")["n_synapses"].to_dict()
    up = cn[cn.relation == "upstream"].set_index("bodyid")["n_synapses"].to_dict()
    assert down == {22: 2} and up == {22: 1}
    edges = dvid.get_connections([11], [22, 33])
    assert sorted(map(tuple, edges["psd_position"])) == [(50, 65, 50), (60, 66, 50)]
    assert set(edges["bodyid_pre"]) == {11}


def test_bookmarks_todo_and_roi(node) -> None:
    bm = dvid.get_user_bookmarks()
    assert len(bm) == 1 and bm.iloc[0]["comment"] == "check" and list(bm.iloc[0]["Pos"]) == [5, 6, 7]
    new = dict(BOOKMARK, Pos=[8, 9, 10], Prop=dict(BOOKMARK["Prop"], comment="second"))
    dvid.add_bookmarks([new])
    bm = dvid.get_user_bookmarks(return_dataframe=False)
    assert sorted(b["Prop"]["comment"] for b in bm) == ["check", "second"]
    todo = dvid.get_labels_in_area(offset=[0, 0, 0], size=[64, 64, 64])
    assert todo.iloc[0]["Prop"] == {"action": "to split"}
    assert dvid.get_labels_in_area(offset=[64, 64, 64], size=[10, 10, 10]) is None
    blocks = dvid.get_roi("LH", form="BLOCKS")
    assert blocks.tolist() == LH


def test_neuronjson_body_annotations(node) -> None:
    """FlyEM's ``segmentation_annotations`` as a neuronjson instance (as current DVIDs keep
    it), in a second repo of the same store: dvidtools reads and edits it unchanged."""
    _, repo, _ = node
    other = repo.store.create_repo("neuronjson-repo")
    nj = other.create_instance("segmentation_annotations", "neuronjson")
    nj.post(22, {"name": "MBON01", "status": "Traced"}, user="alice")
    at = other.current_uuid
    assert dvid.get_annotation(22, node=at) == {"bodyid": 22, "name": "MBON01", "status": "Traced"}
    dvid.edit_annotation(22, {"status": "Roughly traced"}, node=at, verbose=False)
    got = nj.get(22, show="all")
    assert got["status"] == "Roughly traced" and got["status_user"] == "tester"  # dvidtools' u=
    assert got["name_user"] == "alice"
    assert dvid.get_annotation(23, node=at, verbose=False) == {}
