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
    first = repo.commit("base")
    repo.newversion("proofreading")
    with serve(store, port=0) as handle:
        dvid.setup(server=handle.url, node=repo.current_uuid, user="tester")
        yield handle.url, repo, first.uuid


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
