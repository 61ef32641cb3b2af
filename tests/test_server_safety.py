"""Safety of ``diced serve``: read-only mode, the mutation token, body limits, parameter
validation, no path traversal through keyvalue keys, and a fuzz run of a few thousand
malformed requests over every route that must never produce a 500."""

from __future__ import annotations

import random
import re
import string

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import diced
from diced.server import serve
from diced.server.app import create_app, is_loopback
from diced.server.run import check_binding


def _store(name: str) -> tuple[diced.Store, diced.Repo]:
    store = diced.Store(f"memory://server-safety-{name}")
    repo = store.create_repo("safe")
    g = repo.create_array("gray", "uint8", (64, 64, 64))
    g[:] = 7
    s = repo.create_labels("seg", (128, 64, 64))
    s[:64] = 1
    s[64:] = 2
    kv = repo.create_keyvalue("kv")
    kv["a"] = b"x"
    return store, repo


MUTATIONS = [
    ("POST", "/api/repos", b'{"alias": "x"}'),
    ("POST", "/api/repo/{u}/instance", b'{"typename": "keyvalue", "dataname": "k2"}'),
    ("POST", "/api/node/{u}/commit", b'{"note": "n"}'),
    ("POST", "/api/node/{u}/note", b'{"note": "n"}'),
    ("POST", "/api/node/{u}/kv/key/b", b"value"),
    ("DELETE", "/api/node/{u}/kv/key/a", b""),
    ("POST", "/api/node/{u}/seg/merge", b"[1, 2]"),
    ("POST", "/api/node/{u}/gray/raw/0_1_2/8_8_8/0_0_0", bytes(512)),
    ("PUT", "/api/node/{u}/kv/key/c", b"value"),
]


def test_read_only_refuses_every_mutation() -> None:
    store, repo = _store("ro")
    with serve(store, port=0, read_only=True) as h, httpx.Client(base_url=h.url) as c:
        for method, path, body in MUTATIONS:
            r = c.request(method, path.format(u=repo.uuid), content=body)
            assert r.status_code == 403, (method, path, r.text)
            assert "read-only" in r.text
        assert c.get(f"/api/node/{repo.uuid}/kv/key/a").content == b"x"
        assert c.get(f"/api/node/{repo.uuid}/status").json() == {"Locked": False}
        assert c.get("/api/server/info").json()["Mode"] == "read only"
    assert repo.keyvalue("kv")["a"] == b"x" and "k2" not in repo.instances()


def test_token_is_required_for_mutations() -> None:
    store, repo = _store("tok")
    token = "s3cret-token-value"
    with serve(store, port=0, token=token) as h, httpx.Client(base_url=h.url) as c:
        u = repo.uuid
        assert c.post(f"/api/node/{u}/kv/key/b", content=b"1").status_code == 401
        r = c.post(f"/api/node/{u}/kv/key/b", content=b"1",
                   headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = c.post(f"/api/node/{u}/kv/key/b", content=b"2",
                   headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert c.post(f"/api/node/{u}/kv/key/c?admintoken={token}", content=b"3").status_code == 200
        # reads need no token
        assert c.get(f"/api/node/{u}/kv/key/b").content == b"2"


def test_non_loopback_binding_makes_a_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.3.4.5") and not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.10") and not is_loopback("example.org")
    assert check_binding("127.0.0.1", None, False) is None
    made = check_binding("0.0.0.0", None, False)
    assert isinstance(made, str) and len(made) >= 24
    assert check_binding("0.0.0.0", "given-token", False) == "given-token"
    assert check_binding("0.0.0.0", None, True) is None  # read-only: nothing to protect
    with pytest.raises(diced.errors.InvalidArgumentError):
        create_app(diced.Store("memory://server-safety-x"), token="  ")


def test_body_size_limit() -> None:
    store, repo = _store("body")
    with serve(store, port=0, max_body_bytes=1000) as h, httpx.Client(base_url=h.url) as c:
        url = f"/api/node/{repo.uuid}/kv/key/big"
        r = c.post(url, content=b"x" * 2000)
        assert r.status_code == 413
        # a chunked body (no Content-Length) is cut off too
        r = c.post(url, content=iter([b"x" * 600, b"x" * 600]))
        assert r.status_code == 413
        assert c.post(url, content=b"x" * 900).status_code == 200
        assert c.get(url).content == b"x" * 900


@pytest.mark.parametrize("path", [
    "/api/node/{u}/gray/raw/0_1_2/100000_100000_100000/0_0_0",    # too many voxels
    "/api/node/{u}/gray/raw/0_1_2/-4_4_4/0_0_0",                   # negative size
    "/api/node/{u}/gray/raw/0_1_2/4_4/0_0_0",                      # wrong arity
    "/api/node/{u}/gray/raw/0_1_2/4_4_4/0_0_99999999999999",       # offset out of range
    "/api/node/{u}/gray/raw/0_3/4_4/0_0_0",                        # bad dims
    "/api/node/{u}/gray/raw/0_1_2/4_4_4/0_0_0?scale=99",           # bad scale
    "/api/node/{u}/gray/raw/0_1_2/4_4_4/0_0_0?scale=abc",
    "/api/node/{u}/seg/label/1_2_x",
    "/api/node/{u}/seg/size/18446744073709551616",                 # > u64
    "/api/node/{u}/seg/sparsevol/1?minx=abc",
    "/api/node/{u}/seg/sparsevol/1?exact=maybe",
    "/api/node/{u}/seg/blocks/64_64_64/0_0_0?compression=snappy",
    "/api/node/{u}/kv/keyrange/a",
    "/api/node/zz$$/kv/keys",
    "/api/node/{u}/bad%20name/info",
])
def test_path_parameters_are_validated(params_server, path: str) -> None:
    c, repo = params_server
    r = c.get(path.format(u=repo.uuid))
    assert r.status_code == 400, (path, r.status_code, r.text)
    assert r.text.strip() and "Traceback" not in r.text


@pytest.fixture(scope="module")
def params_server():
    store, repo = _store("params")
    with serve(store, port=0) as h, httpx.Client(base_url=h.url) as c:
        yield c, repo


def test_keyvalue_keys_cannot_escape(tmp_path) -> None:
    """On a file:// store, no key reaches outside the store directory."""
    root = tmp_path / "store"
    store = diced.Store(f"file://{root}")
    repo = store.create_repo("files")
    repo.create_keyvalue("kv")
    outside = tmp_path / "escaped"
    with serve(store, port=0) as h, httpx.Client(base_url=h.url) as c:
        base = f"/api/node/{repo.uuid}/kv/key/"
        for key in ("%2E%2E/%2E%2E/escaped", "..%2F..%2Fescaped", "a/%2E%2E/%2E%2E/escaped",
                    "%2Fabsolute", "normal/nested/key"):
            r = c.post(base + key, content=b"payload")
            assert r.status_code in (200, 400), (key, r.status_code)
    assert not outside.exists()
    assert not any(p.name == "escaped" for p in tmp_path.rglob("*") if root not in p.parents)
    assert all(k.startswith(("normal/", "/")) or ".." not in k for k in repo.keyvalue("kv"))


# --- fuzz --------------------------------------------------------------------------------------

_TEMPLATES = [
    "/api/help", "/api/help/{w}", "/api/server/info", "/api/server/types", "/api/repos",
    "/api/repos/info", "/api/repo/{u}", "/api/repo/{u}/info", "/api/repo/{u}/log",
    "/api/repo/{u}/instance", "/api/repo/{u}/merge", "/api/repo/{u}/branch-versions/{w}",
    "/api/node/{u}/{w}", "/api/node/{u}/commit", "/api/node/{u}/branch",
    "/api/node/{u}/newversion", "/api/node/{u}/tag", "/api/node/{u}/note", "/api/node/{u}/log",
    "/api/node/{u}/status",
    "/api/node/{u}/{i}/info", "/api/node/{u}/{i}/{w}", "/api/node/{u}/{i}/{w}/{w}",
    "/api/node/{u}/{i}/raw/{d}/{p}/{p}", "/api/node/{u}/{i}/raw/{d}/{p}/{p}/{w}",
    "/api/node/{u}/{i}/isotropic/{d}/{p}/{p}", "/api/node/{u}/{i}/subvolblocks/{p}/{p}",
    "/api/node/{u}/{i}/specificblocks", "/api/node/{u}/{i}/blocks/{p}/{p}",
    "/api/node/{u}/{i}/blocks", "/api/node/{u}/{i}/blocks/{p}/{n}",
    "/api/node/{u}/{i}/label/{p}", "/api/node/{u}/{i}/labels", "/api/node/{u}/{i}/mapping",
    "/api/node/{u}/{i}/mappings", "/api/node/{u}/{i}/supervoxels/{n}",
    "/api/node/{u}/{i}/supervoxel-sizes/{n}", "/api/node/{u}/{i}/size/{n}",
    "/api/node/{u}/{i}/sizes", "/api/node/{u}/{i}/sparsevol/{n}",
    "/api/node/{u}/{i}/sparsevol-size/{n}", "/api/node/{u}/{i}/sparsevol-coarse/{n}",
    "/api/node/{u}/{i}/maxlabel", "/api/node/{u}/{i}/nextlabel", "/api/node/{u}/{i}/nextlabel/{n}",
    "/api/node/{u}/{i}/merge", "/api/node/{u}/{i}/cleave/{n}",
    "/api/node/{u}/{i}/split-supervoxel/{n}", "/api/node/{u}/{i}/renumber",
    "/api/node/{u}/{i}/mutations", "/api/node/{u}/{i}/lastmod/{n}", "/api/node/{u}/{i}/index/{n}",
    "/api/node/{u}/{i}/indices", "/api/node/{u}/{i}/metadata", "/api/node/{u}/{i}/extents",
    "/api/node/{u}/{i}/resolution", "/api/node/{u}/{i}/tags",
    "/api/node/{u}/{i}/keys", "/api/node/{u}/{i}/key/{w}", "/api/node/{u}/{i}/keyrange/{w}/{w}",
    "/api/node/{u}/{i}/keyrangevalues/{w}/{w}", "/api/node/{u}/{i}/keyvalues",
]
_QUERY_KEYS = ["scale", "supervoxels", "compression", "format", "minx", "maxz", "exact",
               "blocks", "json", "tar", "byte_start", "byte_end", "nolookup", "u", "app",
               "split", "remain", "prefetch", "jsontar", "metadata-only"]


def _word(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return ""
    if kind == 1:
        return "".join(rng.choice(string.printable[:94]) for _ in range(rng.randrange(1, 12)))
    if kind == 2:
        return str(rng.choice([0, 1, -1, 2 ** 31, 2 ** 63, 2 ** 64, 10 ** 30, 64, 7]))
    if kind == 3:
        return rng.choice(["..", ".", "%00", "%2F", "%FF%FE", "a" * 500, "null", "[]", "{}"])
    if kind == 4:
        return rng.choice(["gray", "seg", "kv", "info", "raw", "blocks", "master", ":master"])
    return "".join(rng.choice(string.ascii_lowercase + string.digits + "_-.")
                   for _ in range(rng.randrange(1, 10)))


def _point(rng: random.Random) -> str:
    n = rng.choice([1, 2, 3, 3, 3, 4])
    vals = [rng.choice([0, 1, 8, 64, 63, 100, -5, -64, 10 ** 7, 2 ** 40]) for _ in range(n)]
    text = "_".join(map(str, vals))
    return text if rng.random() > 0.1 else _word(rng)


def _body(rng: random.Random) -> bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return b""
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if kind == 2:
        return rng.choice([b"[]", b"{}", b"null", b"[1,2,3]", b"[[1,2,3]]", b'{"note": 5}',
                           b"[0]", b"[-1]", b"[1e400]", b'["a"]', b"[[1,2]]", b'{"parents": 3}',
                           b"[18446744073709551616]", b'{"typename": "labelmap"}', b"[1, 2]"])
    if kind == 3:  # a block-stream-looking header
        import struct

        return struct.pack("<iiii", rng.randrange(-3, 3), 0, 0, rng.choice([0, 4, -1, 1 << 30])) \
            + bytes(rng.randrange(0, 40))
    if kind == 4:  # an RLE-looking body
        import struct

        return b"\x00\x03\x00\x00" + struct.pack("<II", 0, rng.choice([0, 1, 1000])) + \
            bytes(rng.randrange(0, 40))
    return "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, 60))).encode()


def test_fuzz_no_server_errors() -> None:
    """A few thousand random malformed requests over all routes: never a 500."""
    store, repo = _store("fuzz")
    repo.labels("seg").merge(1, [2])
    rng = random.Random(20261201)
    u_choices = [repo.uuid, repo.uuid[:6], f"{repo.uuid[:4]}:master", ":master", "master~0",
                 "master~9", "nope", "", "0" * 32, "%20", "a:b:c"]
    i_choices = ["gray", "seg", "kv", "nosuch", "", "..", "seg%2F..", "a" * 300]
    dims = ["0_1_2", "0_1", "0_2", "1_2", "xy", "xyz", "0_3", "", "0_1_2_3"]
    methods = ["GET", "GET", "GET", "HEAD", "POST", "POST", "DELETE", "PUT"]
    failures = []
    with serve(store, port=0) as h, httpx.Client(base_url=h.url, timeout=30) as c:
        for n in range(2500):
            tmpl = rng.choice(_TEMPLATES)
            fill = {"u": lambda: rng.choice(u_choices), "i": lambda: rng.choice(i_choices),
                    "d": lambda: rng.choice(dims), "p": lambda: _point(rng),
                    "n": lambda: rng.choice([_word(rng), str(rng.randrange(0, 5))]),
                    "w": lambda: _word(rng)}
            path = re.sub(r"\{(\w)\}", lambda m, fill=fill: fill[m.group(1)](), tmpl)
            params = {k: _word(rng) for k in rng.sample(_QUERY_KEYS, rng.randrange(0, 4))}
            headers = {}
            if rng.random() < 0.1:
                headers["Range"] = rng.choice(["bytes=0-1", "bytes=-5", "bytes=x-y", "bytes=5-1",
                                               "items=1-2", "bytes=0-1,3-4"])
            method = rng.choice(methods)
            try:
                r = c.request(method, path, params=params, content=_body(rng), headers=headers)
            except httpx.InvalidURL:
                continue
            except httpx.TimeoutException:
                failures.append((method, path, params, "timeout"))
                continue
            if r.status_code >= 500:
                failures.append((method, path, params, r.status_code, r.text[:200]))
    assert not failures, failures[:10]
    assert np.asarray(repo.labels("seg")[0, 0, :3]).tolist() == [1, 1, 1]
