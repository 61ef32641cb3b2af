"""The viewer's routes over HTTP (no browser): the page, its assets with their content types,
the local Neuroglancer client, and refusals of bad names. Browser tests are in
test_viewer_browser.py."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import diced
from diced.server import viewer

JS = "text/javascript; charset=utf-8"


@pytest.fixture(scope="module")
def server():
    store = diced.Store("memory://viewer-routes")
    repo = store.create_repo("r", description="routes")
    repo.create_array("img", dtype="uint8", shape=(4, 4, 4))[:] = 7
    with store.serve(port=0) as handle, httpx.Client(base_url=handle.url, timeout=30) as client:
        yield client


def test_page_is_served(server):
    r = server.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="static/app.js">' in r.text
    assert 'href="static/viewer.css"' in r.text
    # nothing from the internet: no absolute URL in any src or href
    assert not re.search(r'(src|href)="(https?:)?//', r.text)


@pytest.mark.parametrize("name", sorted(p.name for p in viewer.STATIC_DIR.iterdir()))
def test_every_static_file_is_served_with_its_type(server, name):
    r = server.get(f"/static/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == viewer.CONTENT_TYPES["." + name.rsplit(".", 1)[1]]
    assert r.content == (viewer.STATIC_DIR / name).read_bytes()


def test_module_imports_resolve(server):
    """Every ES module import of the page names a file the server serves as JavaScript."""
    seen = set()
    todo = ["app.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        r = server.get(f"/static/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"] == JS
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", r.text), \
            f"{name} refers to the internet"
        todo += re.findall(r'from "\./([\w.-]+\.js)"', r.text)
    assert {"app.js", "api.js", "dag.js", "slices.js", "colors.js"} <= seen


@pytest.mark.parametrize("path", [
    "/static/nope.js", "/static/viewer.py", "/static/..%2Fviewer.py", "/static/.hidden.js",
    "/static/%2e%2e%2fapp.py", "/static/index.html%00.js",
])
def test_bad_static_names_are_404(server, path):
    r = server.get(path)
    assert r.status_code == 404


def test_viewer_config(server):
    r = server.get("/viewer/config")
    assert r.status_code == 200
    doc = r.json()
    assert doc["diced_version"] == diced.__version__
    assert doc["neuroglancer"] is (viewer.neuroglancer_client_dir() is not None)
    assert doc["neuroglancer_path"] == "neuroglancer/v/diced/"


needs_ng = pytest.mark.skipif(viewer.neuroglancer_client_dir() is None,
                              reason="the neuroglancer package (its client) is not installed")


@needs_ng
def test_neuroglancer_redirects_to_its_client(server):
    for path, target in [("/neuroglancer/", "v/diced/"), ("/neuroglancer", "neuroglancer/v/diced/")]:
        r = server.get(path, follow_redirects=False)
        assert r.status_code == 307
        assert r.headers["location"] == target
    r = server.get("/neuroglancer/", follow_redirects=True)
    assert r.status_code == 200
    assert str(r.url).endswith("/neuroglancer/v/diced/")


@needs_ng
def test_neuroglancer_client_and_assets_are_served(server):
    r = server.get("/neuroglancer/v/diced/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    html = r.text
    # the offline stand-in for neuroglancer's Python backend runs before the bundles
    shim = html.index('<script src="../../../static/ng-offline.js"></script>')
    scripts = re.findall(r'<script[^>]* src="([^"]+)"', html)
    assert scripts[0] == "../../../static/ng-offline.js"
    assert shim < html.index(scripts[1])
    assert server.get("/static/ng-offline.js").status_code == 200
    styles = re.findall(r'<link[^>]* href="([^"]+\.css)"', html)
    assert styles and len(scripts) > 2
    for name in scripts[1:]:
        a = server.get(f"/neuroglancer/v/diced/{name}")
        assert a.status_code == 200, name
        assert a.headers["content-type"] == JS
        assert "immutable" in a.headers["cache-control"]
    for name in styles:
        a = server.get(f"/neuroglancer/v/diced/{name}")
        assert a.headers["content-type"] == "text/css; charset=utf-8"
    client = viewer.neuroglancer_client_dir()
    wasm = sorted(p.name for p in client.glob("*.wasm"))
    assert wasm, "the neuroglancer client ships WebAssembly decoders"
    a = server.get(f"/neuroglancer/v/diced/{wasm[0]}")
    assert a.status_code == 200
    assert a.headers["content-type"] == "application/wasm"
    assert a.content == (client / wasm[0]).read_bytes()
    # any token works (the Python-integrated client needs one in its path)
    assert server.get("/neuroglancer/v/other-token/").status_code == 200


@needs_ng
@pytest.mark.parametrize("path", [
    "/neuroglancer/v/diced/nope.js", "/neuroglancer/v/diced/..%2F__init__.py",
    "/neuroglancer/v/diced/__init__.py", "/neuroglancer/v/bad.token/",
    "/neuroglancer/v/diced/%2e%2e%2f%2e%2e%2fserver.py",
])
def test_bad_neuroglancer_paths_are_404(server, path):
    assert server.get(path).status_code == 404


def test_without_neuroglancer(monkeypatch):
    """No neuroglancer package: 404s with an install hint, and the page is told."""
    monkeypatch.setattr(viewer, "neuroglancer_client_dir", lambda: None)
    with diced.Store("memory://viewer-no-ng").serve(port=0) as handle, \
            httpx.Client(base_url=handle.url, timeout=30) as client:
        assert client.get("/viewer/config").json()["neuroglancer"] is False
        for path in ("/neuroglancer/", "/neuroglancer/v/diced/", "/neuroglancer/v/diced/main.js"):
            r = client.get(path, follow_redirects=False)
            assert r.status_code == 404
            assert "pip install" in r.text
        assert client.get("/").status_code == 200


def test_neuroglancer_client_found_without_importing_it():
    """neuroglancer's import is heavy: finding its client must not import it."""
    import subprocess
    import sys

    code = ("import sys; from diced.server import viewer; d = viewer.neuroglancer_client_dir(); "
            "viewer.routes(); print(d is not None, 'neuroglancer' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == [str(viewer.neuroglancer_client_dir() is not None), "False"]
