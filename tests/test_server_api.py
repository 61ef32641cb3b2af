"""HTTP tests of ``diced serve``'s DVID-compatible API: a real uvicorn server on a loopback port
and a real HTTP client (httpx), checking bytes against DVID's formats with decoders written
here (RLE, block-stream headers, protobuf through google.protobuf) where that is independent
of diced, and diced's label-block decoder for block payloads.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import diced
from diced.server import serve

DATA = Path(__file__).parent / "data" / "dvid"
N = 128


def _fib19() -> np.ndarray:
    raw = gzip.decompress((DATA / "fib19-64x64x64-sample1.dat.gz").read_bytes())
    return np.frombuffer(raw, "<u8").reshape(64, 64, 64).copy()


def _gray() -> np.ndarray:
    z, y, x = np.meshgrid(np.arange(N), np.arange(N), np.arange(N), indexing="ij")
    return ((x * 3 + y * 5 + z * 7) % 251).astype(np.uint8)


def _labels() -> np.ndarray:
    v = np.zeros((N, N, N), np.uint64)
    v[:64, :64, :64] = _fib19()
    v[64:, :, :] = 2
    v[:64, 64:, :] = 3
    v[10:20, 10:20, 70:90] = 4          # crosses the x block boundary at 64? no: in block x=1
    v[30:34, 40:42, 60:70] = 5          # crosses the x block boundary at 64
    return v


class Served:
    def __init__(self, url: str, store: diced.Store, repo: diced.Repo) -> None:
        self.url, self.store, self.repo = url, store, repo
        self.client = httpx.Client(base_url=url, timeout=60)

    def node(self, inst: str = "", uuid: str | None = None) -> str:
        u = uuid or self.repo.uuid
        return f"/api/node/{u}/{inst}" if inst else f"/api/node/{u}"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    store = diced.Store(str(tmp_path_factory.mktemp("server") / "s.diced"))
    repo = store.create_repo("fly", description="server tests")
    gray = repo.create_array("gray", "uint8", (N, N, N), max_scale=1)
    gray[:] = _gray()
    seg = repo.create_labels("seg", (N, N, N), max_scale=1)
    seg[:] = _labels()
    kv = repo.create_keyvalue("kv")
    kv.update({"a": b"hello", "b/c.json": b'{"x": 1}', "c": b'[1,2]', "d": b"0123456789"})
    with serve(store, port=0) as handle:
        s = Served(handle.url, store, repo)
        yield s
        s.client.close()


def _edit_repo(srv: Served, name: str) -> tuple[str, np.ndarray]:
    """A fresh repo (through the API) holding a labelmap 'seg' with the test labels."""
    c = srv.client
    root = c.post("/api/repos", json={"alias": name}).json()["root"]
    r = c.post(f"/api/repo/{root}/instance", json={"typename": "labelmap", "dataname": "seg"})
    assert r.status_code == 200, r.text
    vol = _labels()
    r = c.post(f"/api/node/{root}/seg/raw/0_1_2/{N}_{N}_{N}/0_0_0", content=vol.tobytes())
    assert r.status_code == 200, r.text
    return root, vol


# --- server and repos --------------------------------------------------------------------------

def test_server_info_types_help(srv: Served) -> None:
    info = srv.client.get("/api/server/info").json()
    assert all(isinstance(v, str) for v in info.values())
    assert "DVID Version" in info and "Storage backend" in info
    types = srv.client.get("/api/server/types").json()
    assert {"labelmap", "uint8blk", "keyvalue", "uint16blk"} <= set(types)
    r = srv.client.get("/api/help")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "labelmap" in srv.client.get("/api/help/labelmap").text


def test_repos_info_and_dag_shape(srv: Served) -> None:
    allinfo = srv.client.get("/api/repos/info").json()
    rj = allinfo[srv.repo.uuid]
    assert rj["Root"] == srv.repo.uuid and rj["Alias"] == "fly"
    assert rj["Description"] == "server tests"
    node = rj["DAG"]["Nodes"][srv.repo.uuid]
    assert set(node) >= {"Branch", "Note", "Log", "UUID", "VersionID", "Locked", "Parents",
                         "Children", "Created", "Updated"}
    assert node["Parents"] == [] and node["Branch"] == "" and node["Locked"] is False
    assert node["Created"].endswith("Z") and "T" in node["Created"]
    assert set(rj["DataInstances"]) == {"gray", "seg", "kv"}
    assert rj["DataInstances"]["seg"]["Base"]["TypeName"] == "labelmap"
    assert rj["DataInstances"]["gray"]["Base"]["TypeName"] == "uint8blk"
    assert rj["DataInstances"]["kv"]["Base"]["TypeName"] == "keyvalue"
    # by prefix, and HEAD
    assert srv.client.get(f"/api/repo/{srv.repo.uuid[:6]}/info").json()["Root"] == srv.repo.uuid
    assert srv.client.head(f"/api/repo/{srv.repo.uuid[:6]}").status_code == 200


def test_unknown_and_bad_uuids(srv: Served) -> None:
    c = srv.client
    assert c.get("/api/repo/ffffffffffffffffffffffffffffffff/info").status_code == 404
    r = c.get("/api/repo/bad$uuid/info")
    assert r.status_code == 400 and "UUID" in r.text
    assert c.get("/api/nothing/here").status_code == 404
    assert c.get(srv.node("nosuch") + "/info").status_code == 404
    r = c.get(srv.node("seg") + "/nosuchkeyword")
    assert r.status_code == 400 and "nosuchkeyword" in r.text


def test_cors_headers_and_preflight(srv: Served) -> None:
    r = srv.client.get("/api/server/info", headers={"Origin": "http://example.org"})
    assert r.headers["access-control-allow-origin"] == "*"
    r = srv.client.options(srv.node("seg") + "/info", headers={
        "Origin": "http://example.org", "Access-Control-Request-Method": "GET"})
    assert r.status_code == 204 and "GET" in r.headers["access-control-allow-methods"]


def test_dag_operations(srv: Served) -> None:
    c = srv.client
    root = c.post("/api/repos", json={"alias": "dagops", "description": "d"}).json()["root"]
    assert c.post(f"/api/repo/{root}/instance",
                  json={"typename": "keyvalue", "dataname": "kv"}).status_code == 200
    assert c.post(f"/api/node/{root}/kv/key/k", content=b"v0").status_code == 200
    assert c.get(f"/api/node/{root}/status").json() == {"Locked": False}
    # children need a locked parent
    r = c.post(f"/api/node/{root}/newversion", json={})
    assert r.status_code == 400 and "unlocked" in r.text
    r = c.post(f"/api/node/{root}/commit", json={"note": "first", "log": ["line one"]})
    assert r.json() == {"committed": root}
    assert c.get(f"/api/node/{root}/commit").json() == {"Locked": True}
    assert c.post(f"/api/node/{root}/commit", json={}).status_code == 400
    # mutations of a locked node: 400 and nothing stored
    r = c.post(f"/api/node/{root}/kv/key/k", content=b"changed")
    assert r.status_code == 400 and "locked" in r.text
    assert c.get(f"/api/node/{root}/kv/key/k").content == b"v0"
    assert c.get(f"/api/node/{root}/log").json()["log"][0].endswith("  line one")
    assert c.get(f"/api/node/{root}/note").json() == {"note": "first"}
    # note and log can still be changed on a locked node (DVID allows it)
    assert c.post(f"/api/node/{root}/note", json={"note": "renamed"}).status_code == 200
    assert c.get(f"/api/node/{root}/note").json() == {"note": "renamed"}
    child = c.post(f"/api/node/{root}/newversion", json={"note": "m2"}).json()["child"]
    dev = c.post(f"/api/node/{root}/branch", json={"branch": "dev", "note": "d"}).json()["child"]
    assert c.post(f"/api/node/{root}/branch", json={"branch": "dev"}).status_code == 400
    assert c.post(f"/api/node/{child}/kv/key/k", content=b"master").status_code == 200
    assert c.post(f"/api/node/{dev}/kv/key/k2", content=b"dev").status_code == 200
    # ':branch' with a prefix, and 'branch~N'
    assert c.get(f"/api/node/{root[:8]}:dev/kv/key/k2").content == b"dev"
    assert c.get(f"/api/node/{root[:8]}:master/kv/key/k").content == b"master"
    assert c.get("/api/node/dev~1/kv/key/k").content == b"v0"
    assert c.get(f"/api/repo/{root}/branch-versions/dev").json() == [dev, root]
    assert c.get(f"/api/repo/{root}/branch-versions/master").json() == [child, root]
    # tag, merge
    for u in (child, dev):
        assert c.post(f"/api/node/{u}/commit", json={"note": "done"}).status_code == 200
    tag = c.post(f"/api/node/{child}/tag", json={"tag": "v1.0", "note": "t"}).json()["child"]
    assert tag == "v1.0"
    assert c.get("/api/node/v1.0/kv/key/k").content == b"master"
    merged = c.post(f"/api/repo/{root}/merge", json={
        "mergeType": "conflict-free", "parents": [child, dev], "note": "merge"}).json()["child"]
    info = c.get(f"/api/repo/{root}/info").json()
    nodes = info["DAG"]["Nodes"]
    vid = {u: n["VersionID"] for u, n in nodes.items()}
    assert sorted(nodes[merged]["Parents"]) == sorted([vid[child], vid[dev]])
    assert vid[merged] in nodes[child]["Children"] and nodes["v1.0"]["Branch"] == "tag-v1.0"
    assert c.get(f"/api/node/{merged}/kv/key/k2").content == b"dev"
    assert c.get(f"/api/node/{merged}/kv/key/k").content == b"master"
    # repo log and description
    assert c.post(f"/api/repo/{root}/log", json={"log": ["hello"]}).status_code == 200
    assert c.get(f"/api/repo/{root}/log").json() == {"log": ["hello"]}
    assert c.post(f"/api/repo/{root}/info", json={"description": "new"}).status_code == 200
    assert c.get(f"/api/repo/{root}/info").json()["Description"] == "new"
    # bad bodies
    assert c.post(f"/api/node/{merged}/branch", content=b"not json").status_code == 400
    assert c.post(f"/api/repo/{root}/merge", json={"parents": [child]}).status_code == 400


def test_instance_creation_settings(srv: Served) -> None:
    c = srv.client
    root = c.post("/api/repos", json={"alias": "inst"}).json()["root"]
    r = c.post(f"/api/repo/{root}/instance", json={
        "typename": "uint8blk", "dataname": "grayscale", "BlockSize": "32,32,32",
        "VoxelSize": "4,4,40", "VoxelUnits": "nanometers"})
    assert r.json() == {"result": f"Added grayscale [uint8blk] to node {root}"}
    ext = c.get(f"/api/node/{root}/grayscale/info").json()["Extended"]
    assert ext["BlockSize"] == [32, 32, 32] and ext["VoxelSize"] == [4.0, 4.0, 40.0]
    r = c.post(f"/api/repo/{root}/instance", json={"typename": "labelmap", "dataname": "x",
                                                   "BlockSize": 64})
    assert r.status_code == 400 and "was not a string" in r.text
    r = c.post(f"/api/repo/{root}/instance", json={"typename": "annotationz", "dataname": "y"})
    assert r.status_code == 400
    r = c.post(f"/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "gray scale"})
    assert r.status_code == 400
    # DVID tags
    assert c.post(f"/api/node/{root}/grayscale/tags", json={"Tags": {"a": "b"}}).status_code == 200
    assert c.get(f"/api/node/{root}/grayscale/tags").json() == {"Tags": {"a": "b"}}


# --- image arrays ----------------------------------------------------------------------------

def test_array_info_and_metadata(srv: Served) -> None:
    info = srv.client.get(srv.node("gray") + "/info").json()
    ext = info["Extended"]
    assert info["Base"]["TypeName"] == "uint8blk" and info["Base"]["Name"] == "gray"
    assert ext["Values"][0]["DataType"] == "uint8"
    assert ext["BlockSize"] == [64, 64, 64] and ext["MinPoint"] == [0, 0, 0]
    assert ext["MaxPoint"] == [N - 1] * 3 and ext["VoxelSize"] == [8.0, 8.0, 8.0]
    assert "jpeg" not in info["Base"]["Compression"]
    r = srv.client.get(srv.node("gray") + "/metadata")
    assert r.headers["content-type"] == "application/vnd.dvid-nd-data+json"
    axes = r.json()["Axes"]
    assert [a["Label"] for a in axes] == ["X", "Y", "Z"] and axes[0]["Size"] == N


def test_array_raw_3d_bytes(srv: Served) -> None:
    g = _gray()
    r = srv.client.get(srv.node("gray") + "/raw/0_1_2/40_30_20/5_6_7", params={"u": "me",
                                                                              "app": "t"})
    assert r.headers["content-type"] == "application/octet-stream"
    got = np.frombuffer(r.content, np.uint8).reshape(20, 30, 40)
    assert np.array_equal(got, g[7:27, 6:36, 5:45])
    # partly outside the array: zeros there (DVID volumes are unbounded)
    r = srv.client.get(srv.node("gray") + f"/raw/0_1_2/10_10_10/{N - 5}_-5_0")
    got = np.frombuffer(r.content, np.uint8).reshape(10, 10, 10)
    want = np.zeros((10, 10, 10), np.uint8)
    want[:, 5:, :5] = g[0:10, 0:5, N - 5:N]
    assert np.array_equal(got, want)
    # dvision's '/nD' suffix is raw too
    r = srv.client.get(srv.node("gray") + "/raw/0_1_2/4_4_4/0_0_0/nD")
    assert r.status_code == 200 and len(r.content) == 64


def test_array_slices_png_jpeg(srv: Served) -> None:
    from PIL import Image

    g = _gray()
    for dims, size, off, want in [("0_1", "50_40", "3_4_5", g[5, 4:44, 3:53]),
                                  ("0_2", "50_40", "3_4_5", g[5:45, 4, 3:53]),
                                  ("1_2", "50_40", "3_4_5", g[5:45, 4:54, 3]),
                                  ("xy", "50_40", "3_4_5", g[5, 4:44, 3:53])]:
        r = srv.client.get(srv.node("gray") + f"/raw/{dims}/{size}/{off}")
        assert r.headers["content-type"] == "image/png"
        img = np.asarray(Image.open(io.BytesIO(r.content)))
        assert np.array_equal(img, want), dims
    r = srv.client.get(srv.node("gray") + "/raw/0_1/64_64/0_0_0/jpg:90")
    assert r.headers["content-type"] == "image/jpeg"
    img = np.asarray(Image.open(io.BytesIO(r.content))).astype(int)
    assert img.shape == (64, 64) and np.abs(img - g[0, :64, :64]).mean() < 8
    # Neuroglancer's RAW encoding: 3-D as one JPEG, width X, height Y*Z
    r = srv.client.get(srv.node("gray") + "/raw/0_1_2/64_64_64/0_0_64/jpeg")
    img = np.asarray(Image.open(io.BytesIO(r.content))).astype(int)
    assert img.shape == (64 * 64, 64)
    want = g[:64, :64, 64:].astype(float).ravel()
    assert np.corrcoef(img.reshape(64, 64, 64).ravel(), want)[0, 1] > 0.8  # lossy, same image
    assert srv.client.get(srv.node("gray") + "/raw/0_1/64_64/0_0_0/gif").status_code == 400


def test_array_scale_and_isotropic(srv: Served) -> None:
    from diced.array.downres import downsample_image

    g = _gray()
    r = srv.client.get(srv.node("gray") + "/raw/0_1_2/64_64_64/0_0_0?scale=1")
    got = np.frombuffer(r.content, np.uint8).reshape(64, 64, 64)
    assert np.array_equal(got, srv.repo.array("gray").scale(1)[:])
    # scale 2 is past the stored pyramid: computed from scale 1
    r = srv.client.get(srv.node("gray") + "/raw/0_1_2/32_32_32/0_0_0?scale=2")
    got = np.frombuffer(r.content, np.uint8).reshape(32, 32, 32)
    assert np.array_equal(got, downsample_image(srv.repo.array("gray").scale(1)[:]))
    r = srv.client.get(srv.node("gray") + "/isotropic/0_1_2/8_8_8/0_0_0")
    assert np.array_equal(np.frombuffer(r.content, np.uint8).reshape(8, 8, 8), g[:8, :8, :8])


def _stream(data: bytes) -> list[tuple[tuple[int, int, int], bytes]]:
    """Split ``[i32 bx][i32 by][i32 bz][i32/u32 n][n bytes]`` records (independent parser)."""
    out, pos = [], 0
    while pos < len(data):
        bx, by, bz, n = struct.unpack_from("<iiiI", data, pos)
        pos += 16
        out.append(((bx, by, bz), data[pos:pos + n]))
        pos += n
    assert pos == len(data)
    return out


def test_array_subvolblocks_and_specificblocks(srv: Served) -> None:
    from PIL import Image

    g = _gray()
    r = srv.client.get(srv.node("gray") + "/subvolblocks/128_64_64/0_64_0")
    items = _stream(r.content)
    assert sorted(c for c, _ in items) == [(0, 1, 0), (1, 1, 0)]
    for (bx, by, bz), payload in items:
        assert payload[:2] == b"\xff\xd8"  # a bare JPEG
        img = np.asarray(Image.open(io.BytesIO(payload))).astype(int).reshape(64, 64, 64)
        want = g[bz * 64:(bz + 1) * 64, by * 64:(by + 1) * 64, bx * 64:(bx + 1) * 64]
        assert np.abs(img - want).mean() < 8
    assert srv.client.get(srv.node("gray") + "/subvolblocks/100_64_64/0_0_0").status_code == 400
    r = srv.client.get(srv.node("gray") + "/specificblocks",
                       params={"blocks": "1,0,1,0,0,0,5,5,5", "compression": "uncompressed"})
    items = dict(_stream(r.content))
    assert set(items) == {(1, 0, 1), (0, 0, 0)}
    blk = np.frombuffer(items[(1, 0, 1)], np.uint8).reshape(64, 64, 64)
    assert np.array_equal(blk, g[64:, :64, 64:])
    # blocks/<b>/<span>: uncompressed blocks along x, no headers
    r = srv.client.get(srv.node("gray") + "/blocks/0_1_1/2")
    raw = np.frombuffer(r.content, np.uint8).reshape(2, 64, 64, 64)
    assert np.array_equal(raw[1], g[64:, 64:, 64:])


def test_array_post_raw_grows_and_roundtrips(srv: Served) -> None:
    c = srv.client
    root = c.post("/api/repos", json={"alias": "postraw"}).json()["root"]
    c.post(f"/api/repo/{root}/instance", json={"typename": "uint16blk", "dataname": "img"})
    vol = np.arange(32 * 40 * 50, dtype="<u2").reshape(32, 40, 50)
    r = c.post(f"/api/node/{root}/img/raw/0_1_2/50_40_32/100_10_0", content=vol.tobytes())
    assert r.status_code == 200, r.text
    r = c.get(f"/api/node/{root}/img/raw/0_1_2/50_40_32/100_10_0")
    assert np.array_equal(np.frombuffer(r.content, "<u2").reshape(32, 40, 50), vol)
    assert c.get(f"/api/node/{root}/img/info").json()["Extended"]["MaxPoint"] == [149, 49, 31]
    r = c.post(f"/api/node/{root}/img/raw/0_1_2/50_40_32/100_10_0", content=b"short")
    assert r.status_code == 400
    r = c.post(f"/api/node/{root}/img/raw/0_1_2/2_2_2/-5_0_0", content=bytes(16))
    assert r.status_code == 400


# --- labels --------------------------------------------------------------------------------

def test_labelmap_info_for_neuroglancer(srv: Served) -> None:
    info = srv.client.get(srv.node("seg") + "/info").json()
    ext = info["Extended"]
    assert info["Base"]["TypeName"] == "labelmap"
    assert ext["Values"][0] == {"DataType": "uint64", "Label": "labelmap"}
    assert ext["BlockSize"] == [64, 64, 64] and ext["MaxDownresLevel"] >= 1
    assert ext["MinPoint"] == [0, 0, 0] and ext["MaxPoint"] == [N - 1] * 3
    assert ext["MaxRepoLabel"] == int(_labels().max())


@pytest.mark.parametrize("compression", ["", "lz4", "gzip", "google", "googlegzip"])
def test_labelmap_raw_compressions(srv: Served, compression: str) -> None:
    import compressed_segmentation as cseg
    import lz4.block

    v = _labels()
    url = srv.node("seg") + "/raw/0_1_2/64_32_16/32_8_40"
    r = srv.client.get(url, params={"compression": compression} if compression else None)
    want = v[40:56, 8:40, 32:96]
    data = r.content  # httpx undoes Content-Encoding: gzip (googlegzip)
    if compression == "lz4":
        data = lz4.block.decompress(data, uncompressed_size=want.nbytes)
    elif compression == "gzip":
        data = gzip.decompress(data)
    if compression in ("google", "googlegzip"):
        assert struct.unpack_from("<I", data)[0] == 1  # one channel, data after 1 word
        got = cseg.decompress(data, (64, 32, 16), np.uint64, block_size=(8, 8, 8), order="F").T
    else:
        got = np.frombuffer(data, "<u8").reshape(want.shape)
    assert np.array_equal(got, want)
    if compression == "googlegzip":
        assert r.headers["content-encoding"] == "gzip"


def test_labelmap_raw_scales(srv: Served) -> None:
    import compressed_segmentation as cseg

    from diced.array.downres import downsample_labels

    seg = srv.repo.labels("seg")
    s1 = seg.scale(1).read(...)
    r = srv.client.get(srv.node("seg") + "/raw/0_1_2/64_64_64/0_0_0?compression=googlegzip&scale=1")
    got = cseg.decompress(r.content, (64, 64, 64), np.uint64, order="F").T
    assert np.array_equal(got, s1)
    r = srv.client.get(srv.node("seg") + "/raw/0_1_2/32_32_32/0_0_0?scale=2")
    got = np.frombuffer(r.content, "<u8").reshape(32, 32, 32)
    assert np.array_equal(got, downsample_labels(s1))
    assert srv.client.get(srv.node("seg") + "/raw/0_1_2/12_8_8/0_0_0?compression=google"
                          ).status_code == 400
    assert srv.client.get(srv.node("seg") + "/raw/0_1_2/8_8_8/0_0_0?compression=zip"
                          ).status_code == 400


def test_labelmap_png_slice(srv: Served) -> None:
    from PIL import Image

    v = _labels()
    r = srv.client.get(srv.node("seg") + "/raw/0_1/64_64/0_0_15/png")
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    low = img.astype(np.uint64)
    got = low[..., 0] | low[..., 1] << 8 | low[..., 2] << 16 | low[..., 3] << 24
    assert np.array_equal(got, v[15, :64, :64] & 0xFFFFFFFF)


@pytest.mark.parametrize("compression", ["", "lz4", "gzip", "blocks", "uncompressed"])
def test_labelmap_blocks_stream(srv: Served, compression: str) -> None:
    import lz4.block

    from diced.array.codecs.labelblock import decode_block

    v = _labels()
    q = {"compression": compression} if compression else {}
    r = srv.client.get(srv.node("seg") + "/blocks/128_128_64/0_0_64", params=q)
    items = _stream(r.content)
    assert sorted(c for c, _ in items) == [(0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 1)]
    for (bx, by, bz), payload in items:
        if compression in ("", "lz4"):
            blk = np.frombuffer(lz4.block.decompress(payload, uncompressed_size=64 ** 3 * 8), "<u8")
        elif compression == "gzip":
            blk = np.frombuffer(gzip.decompress(payload), "<u8")
        elif compression == "blocks":
            blk = decode_block(gzip.decompress(payload), (64, 64, 64))
        else:
            blk = np.frombuffer(payload, "<u8")
        want = v[bz * 64:(bz + 1) * 64, by * 64:(by + 1) * 64, bx * 64:(bx + 1) * 64]
        assert np.array_equal(blk.reshape(64, 64, 64), want)


def test_labelmap_specificblocks_and_errors(srv: Served) -> None:
    from diced.array.codecs.labelblock import decode_block

    v = _labels()
    r = srv.client.get(srv.node("seg") + "/specificblocks", params={"blocks": "1,1,0,0,0,0,9,9,9"})
    items = dict(_stream(r.content))
    assert set(items) == {(1, 1, 0), (0, 0, 0)}
    assert np.array_equal(decode_block(gzip.decompress(items[(0, 0, 0)]), (64, 64, 64)),
                          v[:64, :64, :64])
    for bad in ("1,2", "a,b,c", ""):
        assert srv.client.get(srv.node("seg") + "/specificblocks",
                              params={"blocks": bad}).status_code == 400
    assert srv.client.get(srv.node("seg") + "/blocks/64_64_64/1_0_0").status_code == 400


def test_labelmap_post_blocks_stream(srv: Served) -> None:
    from diced.array.codecs.dvid_storage import parse_block_stream
    from diced.array.codecs.labelblock import decode_block, encode_block

    c = srv.client
    root = c.post("/api/repos", json={"alias": "postblocks"}).json()["root"]
    c.post(f"/api/repo/{root}/instance", json={"typename": "labelmap", "dataname": "seg"})
    body = (DATA / "stream_1block.dat").read_bytes()  # DVID's own one-block POST stream
    (coord, block), = parse_block_stream(body)
    r = c.post(f"/api/node/{root}/seg/blocks", content=body)
    assert r.status_code == 200, r.text
    r = c.get(f"/api/node/{root}/seg/specificblocks",
              params={"blocks": ",".join(map(str, coord)), "supervoxels": "true"})
    (got_coord, payload), = _stream(r.content)
    assert got_coord == coord
    assert np.array_equal(decode_block(gzip.decompress(payload), (64, 64, 64)),
                          decode_block(block, (64, 64, 64)))
    # a second block far away grows the volume; the label index follows
    blk = np.full((64, 64, 64), 77, np.uint64)
    payload = gzip.compress(encode_block(blk))
    stream = struct.pack("<iiii", 2, 0, 3, len(payload)) + payload
    assert c.post(f"/api/node/{root}/seg/blocks", content=stream).status_code == 200
    assert c.get(f"/api/node/{root}/seg/size/77").json() == {"voxels": 64 ** 3}
    assert c.get(f"/api/node/{root}/seg/label/130_5_200").json() == {"Label": 77}
    # truncated and corrupt streams: 400, nothing stored
    assert c.post(f"/api/node/{root}/seg/blocks", content=stream[:-10]).status_code == 400
    junk = struct.pack("<iiii", 5, 5, 5, 4) + b"abcd"
    assert c.post(f"/api/node/{root}/seg/blocks", content=junk).status_code == 400
    assert c.get(f"/api/node/{root}/seg/specificblocks?blocks=5,5,5").content == b""


def test_labelmap_point_queries(srv: Served) -> None:
    v = _labels()
    c = srv.client
    r = c.get(srv.node("seg") + "/label/75_15_12")
    assert r.text == '{"Label": 4}'
    pts = [[75, 15, 12], [0, 0, 0], [5, 100, 3], [-1, 0, 0], [1000, 0, 0]]
    r = c.request("GET", srv.node("seg") + "/labels", content=json.dumps(pts))
    want = [int(v[12, 15, 75]), int(v[0, 0, 0]), int(v[3, 100, 5]), 0, 0]
    assert r.json() == want and r.text == "[" + ",".join(map(str, want)) + "]"
    assert c.request("GET", srv.node("seg") + "/labels", content=b"[[1,2]]").status_code == 400
    assert c.get(srv.node("seg") + "/label/1_2").status_code == 400


def test_labelmap_sizes_and_supervoxels(srv: Served) -> None:
    v = _labels()
    c = srv.client
    n4 = int((v == 4).sum())
    assert c.get(srv.node("seg") + "/size/4").text == f'{{"voxels": {n4}}}'
    assert c.get(srv.node("seg") + "/size/999999").status_code == 404
    assert c.get(srv.node("seg") + "/size/0").status_code == 400
    r = c.request("GET", srv.node("seg") + "/sizes", content=b"[4, 2, 999999]")
    assert r.json() == [n4, int((v == 2).sum()), 0]
    assert c.get(srv.node("seg") + "/supervoxels/4").json() == [4]
    assert c.get(srv.node("seg") + "/supervoxels/999999").status_code == 404
    j = c.get(srv.node("seg") + "/supervoxel-sizes/4").json()
    assert j == {"supervoxels": [4], "sizes": [n4]}
    r = c.request("GET", srv.node("seg") + "/mapping", content=b"[4, 999999]")
    assert r.json() == [4, 0]  # an unknown supervoxel maps to 0
    assert c.get(srv.node("seg") + "/maxlabel").json() == {"maxlabel": int(v.max())}


def _parse_rle(data: bytes) -> np.ndarray:
    """DVID legacy RLE (§5.1), parsed independently: header then i32 x, y, z, length spans."""
    assert data[:4] == b"\x00\x03\x00\x00"
    nvox, nspans = struct.unpack_from("<II", data, 4)
    assert nvox == 0 and len(data) == 12 + 16 * nspans
    return np.frombuffer(data, "<i4", offset=12).reshape(-1, 4)


def _rle_voxels(runs: np.ndarray) -> set[tuple[int, int, int]]:
    return {(int(z), int(y), int(x0) + i) for x0, y, z, n in runs for i in range(int(n))}


def _mask_voxels(mask: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(c) for c in p) for p in np.argwhere(mask)}


def test_sparsevol_rles_formats_and_bounds(srv: Served) -> None:
    import lz4.block

    from diced.array.sparsevol import decode_binary_blocks

    v = _labels()
    c = srv.client
    r = c.get(srv.node("seg") + "/sparsevol/5")
    runs = _parse_rle(r.content)
    assert _rle_voxels(runs) == _mask_voxels(v == 5)
    assert len(runs) == 4 * 2  # runs crossing the x block boundary come out merged
    # bounds clip exactly (inclusive)
    r = c.get(srv.node("seg") + "/sparsevol/5", params={"minx": 62, "maxx": 65, "minz": 31})
    want = np.zeros_like(v, bool)
    want[31:34, 40:42, 62:66] = True
    assert _rle_voxels(_parse_rle(r.content)) == _mask_voxels((v == 5) & want)
    r = c.get(srv.node("seg") + "/sparsevol/5", params={"minx": 100})
    assert r.status_code == 404
    # srles: spans only; lz4 compression of the legacy form
    r = c.get(srv.node("seg") + "/sparsevol/5", params={"format": "srles"})
    assert _rle_voxels(np.frombuffer(r.content, "<i4").reshape(-1, 4)) == _mask_voxels(v == 5)
    r = c.get(srv.node("seg") + "/sparsevol/5", params={"compression": "lz4"})
    plain = c.get(srv.node("seg") + "/sparsevol/5").content
    assert lz4.block.decompress(r.content, uncompressed_size=len(plain)) == plain
    # binary blocks
    r = c.get(srv.node("seg") + "/sparsevol/5", params={"format": "blocks"})
    bb = decode_binary_blocks(r.content)
    assert bb.label == 5
    got = set()
    for (x0, y0, z0), mask in bb.blocks:
        got |= {(z + z0, y + y0, x + x0) for z, y, x in _mask_voxels(mask)}
    assert got == _mask_voxels(v == 5)
    # HEAD: 200 / 204; absent label 404; label 0 400
    assert c.head(srv.node("seg") + "/sparsevol/5").status_code == 200
    assert c.head(srv.node("seg") + "/sparsevol/999999").status_code == 204
    assert c.get(srv.node("seg") + "/sparsevol/999999").status_code == 404
    assert c.get(srv.node("seg") + "/sparsevol/0").status_code == 400
    assert c.get(srv.node("seg") + "/sparsevol/5?format=xml").status_code == 400
    # scale 1
    seg = srv.repo.labels("seg")
    r = c.get(srv.node("seg") + "/sparsevol/3", params={"scale": 1})
    assert _rle_voxels(_parse_rle(r.content)) == _mask_voxels(seg.scale(1).read(...) == 3)


def test_sparsevol_coarse_and_size(srv: Served) -> None:
    v = _labels()
    c = srv.client
    runs = _parse_rle(c.get(srv.node("seg") + "/sparsevol-coarse/3").content)
    blocks = {(z, y, x0 + i) for x0, y, z, n in runs for i in range(n)}
    want = {(bz, by, bx) for bz in range(2) for by in range(2) for bx in range(2)
            if (v[bz * 64:(bz + 1) * 64, by * 64:(by + 1) * 64, bx * 64:(bx + 1) * 64] == 3).any()}
    assert blocks == want
    r = c.get(srv.node("seg") + "/sparsevol-coarse/3", params={"minx": 64})
    assert {(z, y, x0 + i) for x0, y, z, n in _parse_rle(r.content) for i in range(n)} == \
        {b for b in want if b[2] == 1}
    assert c.get(srv.node("seg") + "/sparsevol-coarse/999999").status_code == 404
    r = c.get(srv.node("seg") + "/sparsevol-size/5")
    assert r.text == ('{"voxels": 80, "numblocks": 2, "minvoxel": [0, 0, 0], '
                      '"maxvoxel": [127, 63, 63]}')


def _label_index_classes():
    """LabelIndex / LabelIndices message classes built from DVID's .proto at run time."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="labelops_test.proto", package="dvidtest",
                                            syntax="proto3")

    def msg(name, fields, nested=()):
        m = fd.message_type.add(name=name)
        for n in nested:
            m.nested_type.add().CopyFrom(n)
        for fname, num, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                f.type_name = tname
        return m

    def entry(name, vtype, vname=""):
        e = descriptor_pb2.DescriptorProto(name=name)
        e.options.map_entry = True
        e.field.add(name="key", number=1, type=F.TYPE_UINT64, label=F.LABEL_OPTIONAL)
        f = e.field.add(name="value", number=2, type=vtype, label=F.LABEL_OPTIONAL)
        if vname:
            f.type_name = vname
        return e

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("SVCount", [("counts", 1, F.TYPE_MESSAGE, rep, ".dvidtest.SVCount.CountsEntry"),
                    ("surface_mutid", 2, F.TYPE_UINT64, opt, "")],
        [entry("CountsEntry", F.TYPE_UINT32)])
    msg("LabelIndex", [("blocks", 1, F.TYPE_MESSAGE, rep, ".dvidtest.LabelIndex.BlocksEntry"),
                       ("label", 2, F.TYPE_UINT64, opt, ""),
                       ("last_mutid", 3, F.TYPE_UINT64, opt, ""),
                       ("last_mod_time", 4, F.TYPE_STRING, opt, ""),
                       ("last_mod_user", 5, F.TYPE_STRING, opt, ""),
                       ("last_mod_app", 6, F.TYPE_STRING, opt, "")],
        [entry("BlocksEntry", F.TYPE_MESSAGE, ".dvidtest.SVCount")])
    msg("LabelIndices", [("indices", 1, F.TYPE_MESSAGE, rep, ".dvidtest.LabelIndex")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    get = message_factory.GetMessageClass
    return (get(pool.FindMessageTypeByName("dvidtest.LabelIndex")),
            get(pool.FindMessageTypeByName("dvidtest.LabelIndices")))


def _unpack_block_key(k: int) -> tuple[int, int, int]:
    def field(v: int) -> int:
        mag = v & ((1 << 20) - 1)
        return -mag if v & (1 << 20) else mag
    return field(k & 0x1FFFFF), field((k >> 21) & 0x1FFFFF), field((k >> 42) & 0x1FFFFF)


def test_label_index_protobuf(srv: Served) -> None:
    LabelIndex, LabelIndices = _label_index_classes()
    v = _labels()
    r = srv.client.get(srv.node("seg") + "/index/5")
    idx = LabelIndex()
    idx.ParseFromString(r.content)
    assert idx.label == 5
    got = {_unpack_block_key(k): dict(sv.counts) for k, sv in idx.blocks.items()}
    assert got == {(0, 0, 0): {5: int((v[:64, :64, :64] == 5).sum())},
                   (1, 0, 0): {5: int((v[:64, :64, 64:] == 5).sum())}}
    assert srv.client.get(srv.node("seg") + "/index/999999").status_code == 404
    r = srv.client.request("GET", srv.node("seg") + "/indices", content=b"[4, 999999, 5]")
    many = LabelIndices()
    many.ParseFromString(r.content)
    assert [i.label for i in many.indices] == [4, 5]


def test_label_edits_over_http(srv: Served) -> None:
    from diced.array.sparsevol import encode_rles

    c = srv.client
    root, _ = _edit_repo(srv, "edits")
    seg = f"/api/node/{root}/seg"
    assert c.post(seg + "/merge?u=alice&app=test", json=[2, 4, 5]).json() == {"MutationID": 1}
    r = c.request("GET", seg + "/mapping", content=b"[2, 4, 5, 3]")
    assert r.json() == [2, 2, 2, 3]
    assert sorted(c.get(seg + "/supervoxels/2").json()) == [2, 4, 5]
    assert c.get(seg + "/label/75_15_12").json() == {"Label": 2}
    assert c.get(seg + "/label/75_15_12?supervoxels=true").json() == {"Label": 4}
    assert c.get(seg + "/mappings").text == "4 2\n5 2\n"
    pairs = np.frombuffer(c.get(seg + "/mappings?format=binary").content, "<u8").reshape(-1, 2)
    assert pairs.tolist() == [[4, 2], [5, 2]]
    assert c.post(seg + "/merge", json=[2, 0]).status_code == 400
    assert c.post(seg + "/merge", json=[2, 123456]).status_code == 400
    # cleave: the new label is the nextlabel before it, and becomes maxlabel
    nxt = c.get(seg + "/nextlabel").json()["nextlabel"]
    r = c.post(seg + "/cleave/2", json=[4])
    assert r.json() == {"CleavedLabel": nxt, "MutationID": 2}
    assert c.get(seg + "/maxlabel").json() == {"maxlabel": nxt}
    assert c.request("GET", seg + "/mapping", content=b"[4]").json() == [nxt]
    # split-supervoxel with a legacy RLE body
    runs = np.array([[62, 40, 30, 4], [62, 41, 30, 4]], np.int32)  # x, y, z, len
    r = c.post(seg + "/split-supervoxel/5", content=encode_rles(runs))
    j = r.json()
    assert set(j) == {"SplitSupervoxel", "RemainSupervoxel", "MutationID"}
    assert c.get(seg + f"/size/{j['SplitSupervoxel']}?supervoxels=true").json() == {"voxels": 8}
    assert c.get(seg + f"/size/{j['RemainSupervoxel']}?supervoxels=true").json() == {"voxels": 72}
    assert c.get(seg + "/label/63_40_30?supervoxels=true").json() == {
        "Label": j["SplitSupervoxel"]}
    assert c.post(seg + "/split-supervoxel/5", content=b"\x01junk").status_code == 400
    # renumber
    assert c.post(seg + "/renumber", json=[9000, 3]).status_code == 200
    assert c.get(seg + "/label/5_100_3").json() == {"Label": 9000}
    assert c.post(seg + "/renumber", json=[1, 2, 3]).status_code == 400
    # the mutation log (DVID's -complete records, Go timestamps, sorted keys)
    recs = c.get(seg + "/mutations").json()
    assert [r["Action"] for r in recs] == ["merge-complete", "cleave-complete",
                                          "split-supervoxel-complete", "renumber-complete"]
    assert recs[0]["Target"] == 2 and recs[0]["Labels"] == [4, 5] and recs[0]["UUID"] == root
    assert recs[0]["Timestamp"].endswith(" +0000 UTC")
    lm = c.get(seg + "/lastmod/2").json()
    assert lm["mutation id"] == 3 and set(lm) == {"mutation id", "last mod user", "last mod app",
                                                  "last mod time"}
    # nextlabel allocation is an inclusive range, never reused
    a = c.post(seg + "/nextlabel/3").json()
    b = c.post(seg + "/nextlabel/1").json()
    assert a["end"] - a["start"] == 2 and b["start"] == a["end"] + 1


def test_labelmap_post_raw_lz4(srv: Served) -> None:
    import lz4.block

    c = srv.client
    root, _ = _edit_repo(srv, "rawlz4")
    blk = np.full((64, 64, 64), 31337, np.uint64)
    body = lz4.block.compress(blk.tobytes(), store_size=False)
    r = c.post(f"/api/node/{root}/seg/raw/0_1_2/64_64_64/64_64_64?compression=lz4", content=body)
    assert r.status_code == 200, r.text
    assert c.get(f"/api/node/{root}/seg/size/31337").json() == {"voxels": 64 ** 3}
    r = c.post(f"/api/node/{root}/seg/raw/0_1_2/64_64_64/0_0_0?compression=lz4",
               content=b"garbage")
    assert r.status_code == 400


# --- keyvalue --------------------------------------------------------------------------------

def _kv_classes():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="kv_test.proto", package="kvtest", syntax="proto3")
    kvm = fd.message_type.add(name="KeyValue")
    kvm.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    kvm.field.add(name="value", number=2, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    kr = fd.message_type.add(name="KeyRange")
    kr.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    kr.field.add(name="byte_start", number=2, type=F.TYPE_UINT64, label=F.LABEL_OPTIONAL)
    kr.field.add(name="byte_end", number=3, type=F.TYPE_UINT64, label=F.LABEL_OPTIONAL)
    ks = fd.message_type.add(name="Keys")
    ks.field.add(name="keys", number=1, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    ks.field.add(name="key_ranges", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                 type_name=".kvtest.KeyRange")
    kvs = fd.message_type.add(name="KeyValues")
    kvs.field.add(name="kvs", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                  type_name=".kvtest.KeyValue")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    get = message_factory.GetMessageClass
    return get(pool.FindMessageTypeByName("kvtest.Keys")), \
        get(pool.FindMessageTypeByName("kvtest.KeyValues"))


def test_keyvalue_reads(srv: Served) -> None:
    c = srv.client
    kv = srv.node("kv")
    assert c.get(kv + "/keys").json() == ["a", "b/c.json", "c", "d"]
    assert c.get(kv + "/key/a").content == b"hello"
    assert c.get(kv + "/key/b/c.json").content == b'{"x": 1}'
    r = c.get(kv + "/key/nope")
    assert r.status_code == 404 and r.text.strip() == 'Key "nope" not found'
    assert c.head(kv + "/key/a").status_code == 200 and c.head(kv + "/key/nope").status_code == 404
    assert c.get(kv + "/keyrange/b/c").json() == ["b/c.json", "c"]
    assert c.get(kv + "/keyrange/c/b").json() == []
    r = c.get(kv + "/keyrangevalues/b/c?json=true")
    assert r.json() == {"b/c.json": {"x": 1}, "c": [1, 2]}
    with tarfile.open(fileobj=io.BytesIO(c.get(kv + "/keyrangevalues/a/b?tar=true").content)) as t:
        assert {m.name: t.extractfile(m).read() for m in t.getmembers()} == {"a": b"hello"}
    _, KeyValues = _kv_classes()
    got = KeyValues()
    got.ParseFromString(c.get(kv + "/keyrangevalues/a/c").content)
    assert [(x.key, x.value) for x in got.kvs] == [("a", b"hello"), ("b/c.json", b'{"x": 1}'),
                                                  ("c", b"[1,2]")]


def test_keyvalue_byte_ranges(srv: Served) -> None:
    c = srv.client
    kv = srv.node("kv")
    r = c.get(kv + "/key/d", headers={"Range": "bytes=2-4"})
    assert r.status_code == 206 and r.content == b"234"
    assert r.headers["content-range"] == "bytes 2-4/10" and r.headers["accept-ranges"] == "bytes"
    assert c.get(kv + "/key/d", headers={"Range": "bytes=-3"}).content == b"789"
    assert c.get(kv + "/key/d", headers={"Range": "bytes=7-"}).content == b"789"
    assert c.get(kv + "/key/d", headers={"Range": "bytes=20-30"}).status_code == 416
    r = c.get(kv + "/key/d", params={"byte_start": 1, "byte_end": 3})
    assert r.status_code == 206 and r.content == b"123"
    assert c.get(kv + "/key/d", params={"byte_start": "x"}).status_code == 400


def test_keyvalue_keyvalues_protobuf_and_json(srv: Served) -> None:
    Keys, KeyValues = _kv_classes()
    c = srv.client
    kv = srv.node("kv")
    req = Keys()
    req.keys.extend(["a", "nope"])
    rng = req.key_ranges.add()
    rng.key, rng.byte_start, rng.byte_end = "d", 3, 5
    got = KeyValues()
    got.ParseFromString(c.request("GET", kv + "/keyvalues", content=req.SerializeToString()).content)
    assert [(x.key, x.value) for x in got.kvs] == [("a", b"hello"), ("nope", b""), ("d", b"345")]
    r = c.request("GET", kv + "/keyvalues?json=true", content=b'["b/c.json", "nope"]')
    assert r.json() == {"b/c.json": {"x": 1}, "nope": {}}
    assert c.request("GET", kv + "/keyvalues", content=b"\xff\xff\xff").status_code == 400


def test_keyvalue_writes(srv: Served) -> None:
    _, KeyValues = _kv_classes()
    c = srv.client
    root = c.post("/api/repos", json={"alias": "kvw"}).json()["root"]
    c.post(f"/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"})
    kv = f"/api/node/{root}/kv"
    assert c.post(kv + "/key/x/y.bin", content=b"\x00\x01").status_code == 200
    assert c.get(kv + "/key/x/y.bin").content == b"\x00\x01"
    msg = KeyValues()
    for k, val in [("p", b"1"), ("q", b"22")]:
        item = msg.kvs.add()
        item.key, item.value = k, val
    assert c.post(kv + "/keyvalues", content=msg.SerializeToString()).status_code == 200
    assert c.get(kv + "/keys").json() == ["p", "q", "x/y.bin"]
    assert c.delete(kv + "/key/p").status_code == 200
    assert c.get(kv + "/key/p").status_code == 404
    # keys that try to escape or are malformed
    for bad in ("%2E%2E/etc/passwd", "a/%2E%2E/b", "x" * 300):  # encoded: clients normalise '..'
        r = c.post(kv + "/key/" + bad, content=b"x")
        assert r.status_code == 400, bad
    assert c.post(kv + "/key/%01ctl", content=b"x").status_code == 400
    assert c.get(kv + "/keys").json() == ["q", "x/y.bin"]
