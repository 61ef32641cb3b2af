"""HTTP tests of the annotation, roi, labelsz and neuronjson endpoints of ``diced serve``
(DVID's shapes: dvid-reference §4.8, §4.9, §6; diced-braid-clients "ROI and annotation"),
through a real uvicorn server on a loopback port and httpx: every route, JSON shapes checked
against DVID's, bad input -> 4xx with nothing changed, locked nodes refused (reads that
DVID sends as POST still answered)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import diced
from diced.server import serve
from diced.server._proto import decode_keyvalues, encode_keyvalues

N = 128


def _labels() -> np.ndarray:
    """Body 7 left of x=64, body 9 right of it (z, y, x)."""
    v = np.zeros((N, N, N), np.uint64)
    v[:, :, :64] = 7
    v[:, :, 64:] = 9
    return v


PRE = {"Pos": [10, 20, 30], "Kind": "PreSyn", "Tags": ["syn", "user:alice"],
       "Prop": {"conf": "0.9"}, "Rels": [{"Rel": "PreSynTo", "To": [70, 20, 30]},
                                          {"Rel": "PreSynTo", "To": [80, 21, 30]}]}
POST1 = {"Pos": [70, 20, 30], "Kind": "PostSyn", "Tags": ["syn"], "Prop": {},
         "Rels": [{"Rel": "PostSynTo", "To": [10, 20, 30]}]}
POST2 = {"Pos": [80, 21, 30], "Kind": "PostSyn", "Tags": None, "Prop": None,
         "Rels": [{"Rel": "PostSynTo", "To": [10, 20, 30]}]}
NOTE = {"Pos": [5, 100, 5], "Kind": "Note", "Tags": ["user:bob"], "Prop": {"comment": "hi"}}


def encode_keys(keys: list[str]) -> bytes:
    """A protobuf ``Keys`` message (field 1: repeated string), encoded here by hand."""
    out = b""
    for k in keys:
        raw = k.encode()
        assert len(raw) < 128
        out += b"\x0a" + bytes([len(raw)]) + raw
    return out


class Served:
    def __init__(self, url: str, repo: diced.Repo) -> None:
        self.url, self.repo = url, repo
        self.client = httpx.Client(base_url=url, timeout=60)

    def at(self, inst: str, uuid: str | None = None) -> str:
        return f"/api/node/{uuid or self.repo.current_uuid}/{inst}"

    def get(self, inst: str, path: str, **kw: object) -> httpx.Response:
        return self.client.get(f"{self.at(inst)}/{path}", **kw)  # type: ignore[arg-type]

    def post(self, inst: str, path: str, **kw: object) -> httpx.Response:
        return self.client.post(f"{self.at(inst)}/{path}", **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    store = diced.Store(str(tmp_path_factory.mktemp("server-dt") / "s.diced"))
    repo = store.create_repo("fly", description="datatype routes")
    seg = repo.create_labels("seg", (N, N, N))
    seg[:] = _labels()
    repo.create_keyvalue("kv")
    with serve(store, port=0) as handle:
        s = Served(handle.url, repo)
        c = s.client
        for cfg in ({"typename": "annotation", "dataname": "synapses", "sync": "seg"},
                    {"typename": "labelsz", "dataname": "synapses_labelsz", "sync": "synapses"},
                    {"typename": "roi", "dataname": "lh"},
                    {"typename": "neuronjson", "dataname": "segmentation_annotations"}):
            r = c.post(f"/api/repo/{repo.uuid}/instance", json=cfg)
            assert r.status_code == 200, r.text
            assert r.json()["result"].startswith(f"Added {cfg['dataname']} [{cfg['typename']}]")
        yield s
        c.close()


def _ok(r: httpx.Response, status: int = 200) -> httpx.Response:
    assert r.status_code == status, (r.status_code, r.text)
    return r


def _strip(el: dict) -> dict:
    """An element as answered with relationships: null Tags/Prop/Rels become [] / {}."""
    return {"Pos": el["Pos"], "Kind": el["Kind"], "Tags": el.get("Tags") or [],
            "Prop": el.get("Prop") or {}, "Rels": el.get("Rels") or []}


# --- instance creation ---------------------------------------------------------------------

def test_creation_types_and_info(srv: Served) -> None:
    c = srv.client
    types = c.get("/api/server/types").json()
    assert {"annotation", "roi", "labelsz", "neuronjson"} <= set(types)
    info = c.get(f"/api/repo/{srv.repo.uuid}/info").json()["DataInstances"]
    assert info["synapses"]["Base"]["TypeName"] == "annotation"
    assert info["synapses"]["Base"]["Syncs"] == ["seg"]
    assert info["synapses"]["Extended"]["BlockSize"] == [64, 64, 64]
    assert info["synapses_labelsz"]["Base"]["Syncs"] == ["synapses"]
    assert info["lh"]["Extended"]["BlockSize"] == [32, 32, 32]
    assert info["segmentation_annotations"]["Base"]["TypeName"] == "neuronjson"
    for name in ("synapses", "synapses_labelsz", "lh", "segmentation_annotations"):
        r = _ok(srv.get(name, "info")).json()
        assert r["Base"]["Name"] == name and isinstance(r["Extended"], dict)
        assert name in _ok(srv.get(name, "help")).text or "help" in _ok(srv.get(name, "help")).text


def test_creation_bad_settings_create_nothing(srv: Served) -> None:
    c = srv.client
    url = f"/api/repo/{srv.repo.uuid}/instance"
    before = set(c.get(f"/api/repo/{srv.repo.uuid}/info").json()["DataInstances"])
    bad = [
        ({"typename": "annotation", "dataname": "a1", "sync": "kv"}, 400),       # not labels
        ({"typename": "annotation", "dataname": "a2", "sync": "nothere"}, 404),
        ({"typename": "annotation", "dataname": "a3", "BlockSize": "7,7,7"}, 400),
        ({"typename": "labelsz", "dataname": "l1", "sync": "seg"}, 400),         # not annotation
        ({"typename": "labelsz", "dataname": "l2", "ROI": "nothere"}, 404),
        ({"typename": "roi", "dataname": "r1", "BlockSize": "x"}, 400),
        ({"typename": "roi", "dataname": "lh"}, 400),                             # exists
        ({"typename": "roi", "dataname": "r2", "VoxelSize": "1,2"}, 400),
        ({"typename": "annotation", "dataname": "a4", "VoxelUnits": "nm,nm"}, 400),
        ({"typename": "neuronjson", "dataname": "n1", "VoxelSize": "-1"}, 400),
        ({"typename": "labelsz", "dataname": "l3", "VoxelSize": "a"}, 400),
    ]
    for cfg, status in bad:
        r = c.post(url, json=cfg)
        assert r.status_code == status, (cfg, r.status_code, r.text)
    after = set(c.get(f"/api/repo/{srv.repo.uuid}/info").json()["DataInstances"])
    assert after == before


# --- annotation ----------------------------------------------------------------------------

def test_annotation_post_and_reads(srv: Served) -> None:
    _ok(srv.post("synapses", "elements", json=[PRE, POST1, POST2, NOTE]))
    want = {tuple(e["Pos"]): _strip(e) for e in (PRE, POST1, POST2, NOTE)}
    # box query: inclusive [offset, offset+size-1], with Rels, DVID field order
    got = _ok(srv.get("synapses", "elements/101_101_101/0_0_0")).json()
    assert [list(e) for e in got] == [["Pos", "Kind", "Tags", "Prop", "Rels"]] * len(got)
    assert {tuple(e["Pos"]) for e in got} == {(10, 20, 30), (70, 20, 30), (80, 21, 30),
                                             (5, 100, 5)}
    for e in got:
        assert e == want[tuple(e["Pos"])]
    got = _ok(srv.get("synapses", "elements/11_21_31/0_0_0")).json()
    assert [e["Pos"] for e in got] == [[10, 20, 30]]
    assert _ok(srv.get("synapses", "elements/10_20_30/0_0_0")).json() == []  # hi exclusive
    # all-elements and blocks: {"bx,by,bz": [elements]} (64-voxel blocks)
    allel = _ok(srv.get("synapses", "all-elements")).json()
    assert set(allel) == {"0,0,0", "1,0,0", "0,1,0"}
    assert sorted(e["Pos"] for e in allel["1,0,0"]) == [[70, 20, 30], [80, 21, 30]]
    blocks = _ok(srv.get("synapses", "blocks/2_2_2/63_10_10")).json()  # touches blocks x 0, 1
    assert set(blocks) == {"0,0,0", "1,0,0"}  # whole blocks, not clipped to the box
    # tag: without Rels unless asked
    tagged = _ok(srv.get("synapses", "tag/syn")).json()
    assert sorted(e["Pos"] for e in tagged) == [[10, 20, 30], [70, 20, 30]]
    assert all("Rels" not in e for e in tagged)
    tagged = _ok(srv.get("synapses", "tag/syn", params={"relationships": "true"})).json()
    assert all("Rels" in e for e in tagged)
    assert [e["Pos"] for e in _ok(srv.get("synapses", "tag/user:bob")).json()] == [[5, 100, 5]]
    # label: body 7 is x < 64, body 9 x >= 64
    b7 = _ok(srv.get("synapses", "label/7")).json()
    assert sorted(e["Pos"] for e in b7) == [[5, 100, 5], [10, 20, 30]]
    assert all("Rels" not in e for e in b7)
    b9 = _ok(srv.get("synapses", "label/9", params={"relationships": "true"})).json()
    assert sorted(e["Pos"] for e in b9) == [[70, 20, 30], [80, 21, 30]]
    assert all(e["Rels"] == [{"Rel": "PostSynTo", "To": [10, 20, 30]}] for e in b9)
    verbose = _ok(srv.get("synapses", "label/7", params={"relationships": "verbose"})).json()
    pre = next(e for e in verbose if e["Pos"] == [10, 20, 30])
    assert pre["Rels"][0] == {"Rel": "PreSynTo", "To": [70, 20, 30], "Kind": "PostSyn",
                              "Tags": ["syn"]}  # Prop left out when empty
    assert _ok(srv.get("synapses", "label/12345")).json() == []
    assert _ok(srv.get("synapses", "element/5_100_5")).json() == want[(5, 100, 5)]


def _snapshot(srv: Served) -> dict:
    return {"ann": srv.get("synapses", "all-elements").json(),
            "roi": srv.get("lh", "roi").json(),
            "nj": srv.get("segmentation_annotations", "all", params={"show": "all"}).json()}


def test_annotation_bad_input_changes_nothing(srv: Served) -> None:
    _ok(srv.post("synapses", "elements", json=[NOTE]))
    before = _snapshot(srv)
    good = {"Pos": [1, 2, 3], "Kind": "Note"}
    bad_posts = [
        b"not json", json.dumps({"Pos": [1, 2, 3]}).encode(),
        json.dumps([good, {"Pos": [1, 2]}]).encode(),
        json.dumps([good, {"Pos": [1, 2, 3], "Kind": "Synapse"}]).encode(),
        json.dumps([good, {"Pos": [1, 2, 3], "Tags": "a"}]).encode(),
        json.dumps([good, {"Pos": [1, 2, 3], "Prop": {"a": 1}}]).encode(),
        json.dumps([good, {"Pos": [1, 2, 3], "Rels": [{"Rel": "Friend", "To": [0, 0, 0]}]}]).encode(),
        json.dumps([good, {"Pos": [1, 2, 1 << 40]}]).encode(),
        json.dumps([good, {"Pos": [1, 2, 3], "Extra": 1}]).encode(),
    ]
    for body in bad_posts:
        r = srv.post("synapses", "elements", content=body)
        assert r.status_code == 400, (body, r.text)
    for body in (b"[]", json.dumps({"0,0": [good]}).encode(),
                 json.dumps({"0,0,0": [good, {"Pos": "x"}]}).encode()):
        r = srv.post("synapses", "blocks", content=body)
        assert r.status_code == 400, (body, r.text)
    for path, status in (("elements/0_0_0/0_0_0", 400), ("elements/10_10/0_0_0", 400),
                         ("elements/10_10_10", 400), ("blocks/a_b_c/0_0_0", 400),
                         ("label/abc", 400), ("label/7", 200), ("tag/syn", 200),
                         ("label/7?relationships=maybe", 400), ("roi/nothere", 404),
                         ("roi/seg", 400), ("element/1_2_3", 404), ("nokeyword", 400)):
        r = srv.get("synapses", path)
        assert r.status_code == status, (path, r.status_code, r.text)
    r = srv.client.delete(f"{srv.at('synapses')}/element/1_2_3")
    assert r.status_code == 404
    r = srv.client.delete(f"{srv.at('synapses')}/element/1_2")
    assert r.status_code == 400
    for path in ("move/1_1_1/2_2_2", "move/5_100_5", "move/5_100_5/x_y_z"):
        assert srv.post("synapses", path).status_code in (400, 404), path
    _ok(srv.post("synapses", "elements", json=[good]))
    assert srv.post("synapses", "move/5_100_5/1_2_3").status_code == 400  # destination taken
    r = srv.client.delete(f"{srv.at('synapses')}/element/1_2_3")
    _ok(r)
    for body in (b"{}", json.dumps({"sync": 3}).encode(), json.dumps({"sync": "kv"}).encode(),
                 json.dumps({"sync": "nothere"}).encode()):
        assert srv.post("synapses", "sync", content=body).status_code in (400, 404), body
    assert _snapshot(srv) == before


def test_annotation_move_delete_sync_reload(srv: Served) -> None:
    _ok(srv.post("synapses", "elements", json=[PRE, POST1, POST2]))
    _ok(srv.post("synapses", "move/10_20_30/11_20_30"))
    moved = _ok(srv.get("synapses", "element/11_20_30")).json()
    assert moved["Kind"] == "PreSyn" and srv.get("synapses", "element/10_20_30").status_code == 404
    p1 = _ok(srv.get("synapses", "element/70_20_30")).json()
    assert p1["Rels"] == [{"Rel": "PostSynTo", "To": [11, 20, 30]}]  # partner followed
    _ok(srv.client.delete(f"{srv.at('synapses')}/element/11_20_30"))
    assert _ok(srv.get("synapses", "element/70_20_30")).json()["Rels"] == []
    # POST blocks (bulk ingest shape) then reload
    blocks = {"0,0,0": [PRE], "1,0,0": [POST1, POST2]}
    _ok(srv.post("synapses", "blocks", json=blocks))
    _ok(srv.post("synapses", "reload", params={"check": "true", "inmemory": "false"}))
    assert sorted(e["Pos"] for e in srv.get("synapses", "label/9").json()) == [
        [70, 20, 30], [80, 21, 30]]
    # sync again to the same labels (and a labelsz) is accepted; another label array is not
    _ok(srv.post("synapses", "sync", json={"sync": "seg,synapses_labelsz"}))
    r = srv.client.post(f"/api/repo/{srv.repo.uuid}/instance",
                        json={"typename": "labelmap", "dataname": "seg2"})
    _ok(r)
    assert srv.post("synapses", "sync", json={"sync": "seg2"}).status_code == 400
    assert srv.post("synapses", "sync", json={"sync": "seg,seg2"}).status_code == 400


# --- roi -----------------------------------------------------------------------------------

def test_roi_routes(srv: Served) -> None:
    spans = [[0, 0, 0, 1], [1, 0, 0, 0], [1, 1, 2, 3], [1, 1, 4, 4]]
    _ok(srv.post("lh", "roi", json=spans))
    got = _ok(srv.get("lh", "roi")).json()
    assert got == [[0, 0, 0, 1], [1, 0, 0, 0], [1, 1, 2, 4]]  # normal form, same blocks
    # mask: u8 per voxel, ZYX, 1 inside
    r = _ok(srv.get("lh", "mask/0_1_2/4_3_4/30_0_30"))
    assert r.headers["content-type"] == "application/octet-stream"
    m = np.frombuffer(r.content, np.uint8).reshape(4, 3, 4)
    want = np.zeros((4, 3, 4), np.uint8)
    want[:2] = 1                # z 30, 31 in block plane 0: x blocks 0..1
    want[2:, :, :2] = 1         # z 32, 33: only x block 0 (x 30, 31)
    assert np.array_equal(m, want)
    # ptquery: voxel points -> bools
    pts = [[0, 0, 0], [63, 31, 31], [64, 0, 0], [0, 0, 40], [70, 40, 40], [159, 63, 63],
           [160, 63, 63]]
    assert _ok(srv.post("lh", "ptquery", json=pts)).json() == [True, True, False, True, True,
                                                               True, False]
    assert _ok(srv.post("lh", "ptquery", json=[])).json() == []
    # partition: Subvolumes with MinPoint/MaxPoint (inclusive voxel corners)
    part = _ok(srv.get("lh", "partition", params={"batchsize": "2"})).json()
    assert {"NumTotalBlocks", "NumActiveBlocks", "NumSubvolumes", "ROI", "Subvolumes"} <= set(part)
    assert part["NumActiveBlocks"] == 6 and part["NumSubvolumes"] == len(part["Subvolumes"])
    for sv in part["Subvolumes"]:
        assert len(sv["MinPoint"]) == 3 and all((b - a + 1) % 32 == 0 for a, b in
                                               zip(sv["MinPoint"], sv["MaxPoint"]))
    covered = sum(sv["ActiveBlocks"] for sv in part["Subvolumes"])
    assert covered == 6
    info = _ok(srv.get("lh", "info")).json()["Extended"]
    assert info == {"BlockSize": [32, 32, 32], "MinZ": 0, "MaxZ": 1}
    # annotation elements inside the ROI
    _ok(srv.post("synapses", "elements", json=[PRE, POST1, POST2, NOTE]))
    inside = _ok(srv.get("synapses", "roi/lh")).json()
    want_in = [e["Pos"] for e in (PRE, POST1, POST2, NOTE)
               if _ok(srv.post("lh", "ptquery", json=[e["Pos"]])).json()[0]]
    assert sorted(e["Pos"] for e in inside) == sorted(want_in)
    assert _ok(srv.get("synapses", f"roi/lh,{srv.repo.current_uuid}")).json() == inside


def test_roi_bad_input_changes_nothing(srv: Served) -> None:
    _ok(srv.post("lh", "roi", json=[[0, 0, 0, 1]]))
    before = _snapshot(srv)
    for body in (b"nope", b"{}", b"[[0, 0, 5, 4]]", b"[[0, 0, 1]]", b"[[0, 0, 0, 1], [1, 2]]",
                 b'[[0, 0, "a", 1]]', b"[[0, 0, 0, 4294967296]]", b"[[true, 0, 0, 1]]"):
        r = srv.post("lh", "roi", content=body)
        assert r.status_code == 400, (body, r.text)
    for path in ("mask/0_1/4_4/0_0", "mask/0_1_2/0_4_4/0_0_0", "mask/0_1_2/4_4_4",
                 "mask/0_1_2/100000_100000_100000/0_0_0", "partition?batchsize=0",
                 "partition?batchsize=x", "roi/extra"):
        r = srv.get("lh", path)
        assert r.status_code == 400, (path, r.text)
    for body in (b"x", b"[[1, 2]]", b'[["a", 1, 2]]', b"{}"):
        assert srv.post("lh", "ptquery", content=body).status_code == 400, body
    assert _snapshot(srv) == before


def test_roi_delete(srv: Served) -> None:
    _ok(srv.post("lh", "roi", json=[[3, 3, 3, 3]]))
    _ok(srv.client.delete(f"{srv.at('lh')}/roi"))
    assert _ok(srv.get("lh", "roi")).json() == []
    assert _ok(srv.post("lh", "ptquery", json=[[100, 100, 100]])).json() == [False]


# --- labelsz -------------------------------------------------------------------------------

def test_labelsz_routes(srv: Served) -> None:
    extra = [{"Pos": [90, 90, 90], "Kind": "PostSyn"}, {"Pos": [91, 90, 90], "Kind": "PostSyn"},
             {"Pos": [1, 1, 1], "Kind": "Gap"}]
    _ok(srv.post("synapses", "elements", json=[PRE, POST1, POST2, NOTE, *extra]))
    lsz = "synapses_labelsz"
    assert _ok(srv.get(lsz, "count/7/PreSyn")).json() == {"Label": 7, "PreSyn": 1}
    assert _ok(srv.get(lsz, "count/9/PostSyn")).json() == {"Label": 9, "PostSyn": 4}
    assert _ok(srv.get(lsz, "count/9/PreSyn")).json() == {"Label": 9, "PreSyn": 0}
    assert _ok(srv.get(lsz, "count/7/Note")).json() == {"Label": 7, "Note": 1}
    r = srv.client.request("GET", f"{srv.at(lsz)}/counts/AllSyn", json=[9, 7, 55])
    assert _ok(r).json() == [{"Label": 9, "AllSyn": 4}, {"Label": 7, "AllSyn": 2},
                             {"Label": 55, "AllSyn": 0}]
    assert _ok(srv.get(lsz, "top/1/AllSyn")).json() == [{"Label": 9, "AllSyn": 4}]
    assert _ok(srv.get(lsz, "top/5/AllSyn")).json() == [{"Label": 9, "AllSyn": 4},
                                                       {"Label": 7, "AllSyn": 2}]
    assert _ok(srv.get(lsz, "top/0/PreSyn")).json() == []
    assert _ok(srv.get(lsz, "threshold/2/AllSyn")).json() == [{"Label": 9, "AllSyn": 4},
                                                             {"Label": 7, "AllSyn": 2}]
    assert _ok(srv.get(lsz, "threshold/3/AllSyn")).json() == [{"Label": 9, "AllSyn": 4}]
    assert _ok(srv.get(lsz, "threshold/1/AllSyn", params={"offset": "1", "n": "1"})).json() == [
        {"Label": 7, "AllSyn": 2}]
    _ok(srv.post(lsz, "reload"))
    _ok(srv.post(lsz, "sync", json={"sync": "synapses"}))
    for path in ("count/7", "count/x/PreSyn", "count/7/Synapse", "top/-1/PreSyn",
                 "top/x/PreSyn", "threshold/1/PreSyn?offset=-1", "threshold/1/Nope",
                 "counts/PreSyn"):
        r = srv.get(lsz, path)
        assert r.status_code == 400, (path, r.text)
    for body in (b"{}", json.dumps({"sync": "seg"}).encode(),
                 json.dumps({"sync": "synapses,lh"}).encode()):
        assert srv.post(lsz, "sync", content=body).status_code == 400, body
    info = _ok(srv.get(lsz, "info")).json()
    assert info["Base"]["Syncs"] == ["synapses"] and info["Extended"] == {"StaticROI": ""}


# --- neuronjson ----------------------------------------------------------------------------

def test_neuronjson_routes(srv: Served) -> None:
    nj = "segmentation_annotations"
    _ok(srv.post(nj, "key/1000", params={"u": "alice"}, json={"class": "9A", "status": "Traced"}))
    _ok(srv.post(nj, "key/22", params={"u": "bob"}, json={"class": "MBON01", "soma": True}))
    _ok(srv.post(nj, "key/300", params={"u": "bob"}, json={"class": "9B"}))
    assert _ok(srv.get(nj, "keys")).json() == ["22", "300", "1000"]
    assert _ok(srv.get(nj, "keyrange/100/2000")).json() == ["300", "1000"]
    assert _ok(srv.get(nj, "keyrange/0/a")).json() == ["22", "300", "1000"]
    doc = _ok(srv.get(nj, "key/1000")).json()
    assert doc == {"bodyid": 1000, "class": "9A", "status": "Traced"}
    full = _ok(srv.get(nj, "key/1000", params={"show": "all"})).json()
    assert full["class_user"] == "alice" and full["class_time"].endswith("Z")
    assert set(_ok(srv.get(nj, "key/1000", params={"show": "user"})).json()) == {
        "bodyid", "class", "status", "class_user", "status_user"}
    assert _ok(srv.get(nj, "key/1000", params={"fields": "status"})).json() == {
        "bodyid": 1000, "status": "Traced"}
    assert srv.client.head(f"{srv.at(nj)}/key/1000").status_code == 200
    assert srv.client.head(f"{srv.at(nj)}/key/1001").status_code == 404
    assert srv.get(nj, "key/1001").status_code == 404
    # update (merge of fields), replace, conditionals
    _ok(srv.post(nj, "key/1000", params={"u": "carol"}, json={"status": "Roughly traced"}))
    doc = _ok(srv.get(nj, "key/1000", params={"show": "user"})).json()
    assert doc["class"] == "9A" and doc["status_user"] == "carol" and doc["class_user"] == "alice"
    _ok(srv.post(nj, "key/1000", params={"u": "carol", "conditionals": "class"},
                 json={"class": "other", "note": "n"}))
    assert _ok(srv.get(nj, "key/1000")).json()["class"] == "9A"
    _ok(srv.post(nj, "key/300", params={"u": "bob", "replace": "true"}, json={"status": "x"}))
    assert _ok(srv.get(nj, "key/300")).json() == {"bodyid": 300, "status": "x"}
    # query (GET and POST), onlyid, fields, all, fieldtimes
    q = {"class": ["9A", "MBON01"]}
    got = _ok(srv.client.request("GET", f"{srv.at(nj)}/query", json=q)).json()
    assert [d["bodyid"] for d in got] == [22, 1000]
    assert _ok(srv.post(nj, "query", json=q, params={"onlyid": "true"})).json() == [22, 1000]
    got = _ok(srv.post(nj, "query", json=[{"status": "x"}, {"soma": "exists/1"}],
                       params={"fields": "status"})).json()
    assert got == [{"bodyid": 22}, {"bodyid": 300, "status": "x"}]
    assert "class" in _ok(srv.get(nj, "fields")).json()
    assert "class_user" in _ok(srv.get(nj, "fields")).json()
    assert set(_ok(srv.get(nj, "fieldtimes")).json()) >= {"class", "status"}
    alldocs = _ok(srv.get(nj, "all")).json()
    assert [d["bodyid"] for d in alldocs] == [22, 300, 1000]
    # keyvalues: JSON, jsontar, protobuf; POST protobuf
    r = srv.client.request("GET", f"{srv.at(nj)}/keyvalues", params={"json": "true"},
                           json=["22", "999", "300"])
    assert _ok(r).json() == {"22": {"bodyid": 22, "class": "MBON01", "soma": True},
                             "300": {"bodyid": 300, "status": "x"}}
    r = srv.client.request("GET", f"{srv.at(nj)}/keyvalues", params={"jsontar": "true"},
                           json=["22"])
    with tarfile.open(fileobj=io.BytesIO(_ok(r).content)) as tar:
        assert json.loads(tar.extractfile("22").read())["class"] == "MBON01"  # type: ignore[union-attr]
    r = srv.client.request("GET", f"{srv.at(nj)}/keyvalues", content=encode_keys(["300"]))
    assert [(k, json.loads(v)) for k, v in decode_keyvalues(_ok(r).content)] == [
        ("300", {"bodyid": 300, "status": "x"})]
    body = encode_keyvalues([("5", b'{"class": "new"}'), ("6", b'{"class": "new2"}')])
    _ok(srv.post(nj, "keyvalues", params={"u": "dan"}, content=body))
    assert _ok(srv.get(nj, "key/6", params={"show": "user"})).json()["class_user"] == "dan"
    r = _ok(srv.get(nj, "keyrangevalues/5/22", params={"json": "true"})).json()
    assert list(r) == ["5", "6", "22"]
    r = _ok(srv.get(nj, "keyrangevalues/5/6"))
    assert [k for k, _ in decode_keyvalues(r.content)] == ["5", "6"]
    _ok(srv.client.delete(f"{srv.at(nj)}/key/6"))
    assert srv.get(nj, "key/6").status_code == 404
    info = _ok(srv.get(nj, "info")).json()
    assert info["Base"]["TypeName"] == "neuronjson"


def test_neuronjson_bad_input_changes_nothing(srv: Served) -> None:
    nj = "segmentation_annotations"
    _ok(srv.post(nj, "key/77", params={"u": "alice"}, json={"class": "x"}))
    before = _snapshot(srv)
    for path, body, params in (
            ("key/77", b'{"class": "y"}', {}),                       # no user
            ("key/abc", b'{"class": "y"}', {"u": "a"}),
            ("key/77", b"[1, 2]", {"u": "a"}),
            ("key/77", b"nope", {"u": "a"}),
            ("key/77", b'{"bodyid": 78}', {"u": "a"}),
            ("key/77", b'{"class": "y"}', {"u": "a", "replace": "maybe"}),
            ("keyvalues", b"\xff\xff", {"u": "a"}),
            ("keyvalues", encode_keyvalues([("1", b'{"a": 1}'), ("x", b"{}")]), {"u": "a"}),
            ("keyvalues", encode_keyvalues([("1", b'{"a": 1}'), ("2", b"[1]")]), {"u": "a"}),
            ("keyvalues", encode_keyvalues([("1", b'{"a": 1}')]), {}),
            ("query", b"7", {}), ("query", b"nope", {}),
            ("query", b'{"a": 1}', {"show": "nobody"})):
        r = srv.post(nj, path, content=body, params=params)
        assert r.status_code == 400, (path, body, params, r.text)
    for path in ("key/77?show=nobody", "keyrange/1", "key", "keyvalues?json=true"):
        assert srv.get(nj, path).status_code == 400, path
    assert srv.client.delete(f"{srv.at(nj)}/key/4242").status_code == 404
    assert _snapshot(srv) == before


def test_help_and_tags(srv: Served) -> None:
    c = srv.client
    for typename, keyword in (("annotation", "elements"), ("roi", "ptquery"),
                              ("labelsz", "threshold"), ("neuronjson", "query")):
        assert keyword in _ok(c.get(f"/api/help/{typename}")).text
    _ok(srv.post("lh", "tags", json={"Tags": {"source": "test"}}))
    assert _ok(srv.get("lh", "tags")).json() == {"Tags": {"source": "test"}}
    assert _ok(srv.get("lh", "info")).json()["Base"]["Tags"] == {"source": "test"}


# --- locked nodes --------------------------------------------------------------------------

def test_locked_node_refuses_writes_allows_post_reads(srv: Served) -> None:
    c = srv.client
    _ok(srv.post("lh", "roi", json=[[0, 0, 0, 1]]))
    _ok(srv.post("synapses", "elements", json=[PRE, POST1, POST2]))
    _ok(srv.post("segmentation_annotations", "key/9", params={"u": "a"}, json={"x": 1}))
    locked = srv.repo.current_uuid
    _ok(c.post(f"/api/node/{locked}/commit", json={"note": "lock"}))
    before = {k: c.get(f"/api/node/{locked}/{p}").content for k, p in (
        ("ann", "synapses/all-elements"), ("roi", "lh/roi"),
        ("nj", "segmentation_annotations/all?show=all"))}
    writes = [
        ("POST", "synapses/elements", json.dumps([NOTE]).encode()),
        ("POST", "synapses/blocks", json.dumps({"0,0,0": [NOTE]}).encode()),
        ("POST", "synapses/move/10_20_30/12_20_30", b""),
        ("DELETE", "synapses/element/10_20_30", b""),
        ("POST", "synapses/reload", b""),
        ("POST", "lh/roi", b"[[5, 5, 5, 5]]"),
        ("DELETE", "lh/roi", b""),
        ("POST", "segmentation_annotations/key/9?u=a", b'{"x": 2}'),
        ("DELETE", "segmentation_annotations/key/9", b""),
        ("POST", "segmentation_annotations/keyvalues?u=a", encode_keyvalues([("3", b"{}")])),
    ]
    for method, path, body in writes:
        r = c.request(method, f"/api/node/{locked}/{path}", content=body)
        assert r.status_code == 400 and "locked" in r.text, (method, path, r.text)
    r = c.post(f"/api/repo/{locked}/instance", json={"typename": "roi", "dataname": "late"})
    assert r.status_code == 400
    # reads sent as POST stay allowed (DVID: ptquery, neuronjson query)
    assert _ok(c.post(f"/api/node/{locked}/lh/ptquery", json=[[0, 0, 0]])).json() == [True]
    assert _ok(c.post(f"/api/node/{locked}/segmentation_annotations/query",
                      json={"x": 1}, params={"onlyid": "true"})).json() == [9]
    assert _ok(c.get(f"/api/node/{locked}/synapses_labelsz/count/7/PreSyn")).json() == {
        "Label": 7, "PreSyn": 1}
    n9 = _ok(c.get(f"/api/node/{locked}/synapses_labelsz/count/9/PostSyn")).json()
    assert _ok(c.post(f"/api/node/{locked}/synapses_labelsz/counts/PostSyn", json=[9])).json() \
        == [n9]
    assert c.post(f"/api/node/{locked}/synapses_labelsz/sync",
                  json={"sync": "synapses"}).status_code == 400
    after = {k: c.get(f"/api/node/{locked}/{p}").content for k, p in (
        ("ann", "synapses/all-elements"), ("roi", "lh/roi"),
        ("nj", "segmentation_annotations/all?show=all"))}
    assert after == before
    # a child version is writable again and sees the parent's data
    child = _ok(c.post(f"/api/node/{locked}/newversion", json={"note": "next"})).json()["child"]
    _ok(c.post(f"/api/node/{child}/lh/roi", json=[[7, 7, 7, 7]]))
    assert _ok(c.get(f"/api/node/{child}/lh/roi")).json() == [[7, 7, 7, 7]]
    assert _ok(c.get(f"/api/node/{locked}/lh/roi")).json() == [[0, 0, 0, 1]]

