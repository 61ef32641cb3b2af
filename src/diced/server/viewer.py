"""The web page of ``diced serve``: routes for ``/``, its static assets and a local Neuroglancer.

The page (``static/index.html`` and its ES modules; no build step, nothing loaded from the
internet) reads the DVID-compatible API of the same server: ``/api/repos/info`` for repos and
version DAGs, ``/api/node/{uuid}/{name}/info`` for instances, and 3-D ``raw`` reads of
one-voxel-thick boxes (octet-stream, decoded in the browser by dtype) for its slice views.

Neuroglancer's client comes from the ``neuroglancer`` package on PyPI, which ships its built
client in ``neuroglancer/static/client``. That build is the Python-integrated one: it must be
served under ``.../v/<token>/`` and talks to a Python backend for configuration and
credentials. diced has no such backend, so the page served here loads ``static/ng-offline.js``
first, which answers those calls inside the browser (no config, anonymous credentials). The
viewer state comes from the URL fragment, e.g. a ``dvid://http://host:port/<uuid>/<name>``
layer, which Neuroglancer's DVID data source reads from this server's API.

:func:`routes` returns the Starlette routes; ``diced.server.app.create_app`` mounts them.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

log = logging.getLogger(__name__)

__all__ = ["NEUROGLANCER_PATH", "STATIC_DIR", "neuroglancer_client_dir", "routes"]

#: The page's own files (package data).
STATIC_DIR = Path(__file__).with_name("static")

#: Where the page links to Neuroglancer (relative to the server root); the token after ``v/``
#: is required by the Python-integrated client build and otherwise unused.
NEUROGLANCER_PATH = "neuroglancer/v/diced/"

#: Explicit content types (the system's mimetypes table varies between machines; module
#: scripts need a JavaScript type and WebAssembly streaming compilation needs application/wasm).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
}

#: One file name, no directories: what both static routes accept.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,200}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
#: Injected into Neuroglancer's index.html before its bundles run (see the module docstring).
_SHIM = '<script src="../../../static/ng-offline.js"></script>'
#: Content-hashed bundle names never change content: let browsers keep them.
_IMMUTABLE = "public, max-age=31536000, immutable"


def neuroglancer_client_dir() -> Path | None:
    """The directory of the Neuroglancer client shipped by the ``neuroglancer`` package.

    Found without importing the package (its import is heavy). ``None`` when the package is
    not installed or ships no built client.
    """
    try:
        spec = importlib.util.find_spec("neuroglancer")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        client = Path(root) / "static" / "client"
        if (client / "index.html").is_file():
            return client
    return None


def _file_response(directory: Path, name: str, *, cache: str) -> Response:
    from starlette.responses import FileResponse, PlainTextResponse

    suffix = Path(name).suffix
    if not _NAME.match(name) or ".." in name or suffix not in CONTENT_TYPES:
        return PlainTextResponse(f"no such file: {name!r}\n", status_code=404)
    path = directory / name
    if not path.is_file():
        return PlainTextResponse(f"no such file: {name!r}\n", status_code=404)
    return FileResponse(path, media_type=CONTENT_TYPES[suffix], headers={"Cache-Control": cache})


async def _index(request: Request) -> Response:
    return _file_response(STATIC_DIR, "index.html", cache="no-cache")


async def _static(request: Request) -> Response:
    return _file_response(STATIC_DIR, request.path_params["name"], cache="no-cache")


async def _viewer_config(request: Request) -> Response:
    from starlette.responses import JSONResponse

    from diced import __version__

    client = neuroglancer_client_dir()
    return JSONResponse({
        "diced_version": __version__,
        "neuroglancer": client is not None,
        "neuroglancer_path": NEUROGLANCER_PATH,
    }, headers={"Cache-Control": "no-cache"})


def _no_neuroglancer() -> Response:
    from starlette.responses import PlainTextResponse

    return PlainTextResponse(
        "Neuroglancer's client is not installed on this server: "
        "pip install 'diced[server]' (or pip install neuroglancer)\n", status_code=404)


async def _neuroglancer_root(request: Request) -> Response:
    from starlette.responses import RedirectResponse

    if neuroglancer_client_dir() is None:
        return _no_neuroglancer()
    # a relative Location keeps any path prefix of a reverse proxy; browsers keep the fragment
    target = "v/diced/" if request.url.path.endswith("/") else "neuroglancer/v/diced/"
    return RedirectResponse(target, status_code=307)


async def _neuroglancer_file(request: Request) -> Response:
    from starlette.responses import PlainTextResponse, Response

    client = neuroglancer_client_dir()
    if client is None:
        return _no_neuroglancer()
    token = request.path_params["token"]
    name = request.path_params.get("name", "") or "index.html"
    if not _TOKEN.match(token):
        return PlainTextResponse(f"bad viewer token {token!r}\n", status_code=404)
    if name != "index.html":
        return _file_response(client, name, cache=_IMMUTABLE)
    html = (client / "index.html").read_text(encoding="utf-8")
    head = re.search(r"<head[^>]*>", html)
    at = head.end() if head else 0
    html = html[:at] + _SHIM + html[at:]
    return Response(html, media_type=CONTENT_TYPES[".html"],
                    headers={"Cache-Control": "no-cache"})


def routes() -> list[BaseRoute]:
    """The viewer's routes, for ``create_app`` to mount at the server root.

    * ``/``: the page; ``/static/{name}``: its scripts and styles;
      ``/viewer/config``: what the page needs to know about this server (JSON).
    * ``/neuroglancer/``: redirects to ``/neuroglancer/v/diced/``, the Neuroglancer client of
      the installed ``neuroglancer`` package with its assets (404 with a hint when absent).
    """
    from starlette.routing import Route

    return [
        Route("/", _index, methods=["GET"]),
        Route("/static/{name}", _static, methods=["GET"]),
        Route("/viewer/config", _viewer_config, methods=["GET"]),
        Route("/neuroglancer", _neuroglancer_root, methods=["GET"]),
        Route("/neuroglancer/", _neuroglancer_root, methods=["GET"]),
        Route("/neuroglancer/v/{token}/", _neuroglancer_file, methods=["GET"]),
        Route("/neuroglancer/v/{token}/{name}", _neuroglancer_file, methods=["GET"]),
    ]
