"""Server-level endpoints: ``/api/help``, ``/api/server/info``, ``/api/server/types``."""

from __future__ import annotations

import html
import os
import platform
import time

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from diced.server._http import json_response, text_response
from diced.server.registry import TYPES

__all__ = ["routes"]

#: The general endpoints listed by /api/help (the instance types add theirs).
HELP = """\
GET  /api/help                                 this page
GET  /api/help/{typename}                      endpoints of one data type
GET  /api/server/info                          server description (JSON)
GET  /api/server/types                         data types this server knows
POST /api/repos                                create a repo {"alias", "description", "root"?}
GET  /api/repos/info                           every repo: root UUID -> repo JSON
HEAD /api/repo/{uuid}                          200 when the repo exists
GET  /api/repo/{uuid}/info                     repo JSON (DAG, instances)
POST /api/repo/{uuid}/info                     change alias / description
POST /api/repo/{uuid}/instance                 create an instance {"typename", "dataname", ...}
GET  /api/repo/{uuid}/log                      repo log; POST {"log": [...]} appends
POST /api/repo/{uuid}/merge                    {"mergeType": "conflict-free", "parents": [...], "note"}
GET  /api/repo/{uuid}/branch-versions/{name}   UUIDs of a branch, leaf to root
GET  /api/node/{uuid}/commit|status            {"Locked": bool}
POST /api/node/{uuid}/commit                   {"note", "log": [...]} -> {"committed": uuid}
POST /api/node/{uuid}/branch                   {"branch", "note"?, "uuid"?} -> {"child": uuid}
POST /api/node/{uuid}/newversion               {"note"?, "uuid"?} -> {"child": uuid}
POST /api/node/{uuid}/tag                      {"tag", "note"?} -> {"child": tag}
GET  /api/node/{uuid}/note|log                 POST {"note"} / {"log": [...]}
ANY  /api/node/{uuid}/{instance}/{keyword}/... instance endpoints (see /api/help/{typename})

A {uuid} is a UUID, a unique prefix, 'prefix:branch', ':branch' (one repo only) or 'branch~N'.
"""


async def api_help(request: Request) -> Response:
    """``GET /api/help``: the API overview as HTML."""
    types = "".join(f'<li><a href="/api/help/{html.escape(n)}">{html.escape(n)}</a></li>'
                    for n in sorted(TYPES))
    page = (f"<html><head><title>diced: DVID-compatible API</title></head><body>"
            f"<h1>diced: DVID-compatible HTTP API</h1><pre>{html.escape(HELP)}</pre>"
            f"<h2>Data types</h2><ul>{types}</ul></body></html>")
    return HTMLResponse(page)


async def type_help(request: Request) -> Response:
    """``GET /api/help/{typename}``: one type's endpoints as text."""
    name = request.path_params["typename"]
    t = TYPES.get(name)
    if t is None:
        return text_response(f"no data type {name!r} on this server", 404)
    lines = [f"{t.name}: {t.help}".rstrip(), ""]
    for kw, ep in sorted(t.endpoints.items()):
        lines.append(f"{','.join(sorted(ep.methods)):16s} /api/node/{{uuid}}/{{name}}/{kw:20s} "
                     f"{ep.help}")
    return text_response("\n".join(lines))


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60}m{s % 60}s"


async def server_info(request: Request) -> Response:
    """``GET /api/server/info``: DVID's server info JSON."""
    import diced

    st = request.app.state.diced
    host = request.url.hostname or platform.node()
    info = {
        "Cores": str(os.cpu_count() or 1),
        "Maximum Cores": str(os.cpu_count() or 1),
        "Datastore Version": "diced-format-1",
        "DVID Version": f"diced {diced.__version__} (DVID-compatible API)",
        "Storage backend": str(st.store.location),
        "Server time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "Server uptime": _uptime(time.time() - st.started),
        "RPC Address": "",
        "Host": f"{host}:{request.url.port}" if request.url.port else host,
        "Note": "diced serve" + (" (read-only)" if st.read_only else ""),
        "TOML location": "",
        "Mode": "read only" if st.read_only else "",
    }
    return json_response(info)


async def server_types(request: Request) -> Response:
    """``GET /api/server/types``: the served DVID type names and URLs."""
    return json_response({n: t.url for n, t in sorted(TYPES.items())})


def routes() -> list[Route]:
    """The ``/api/help`` and ``/api/server/...`` routes."""
    return [
        Route("/api/help", api_help, methods=["GET"]),
        Route("/api/help/{typename}", type_help, methods=["GET"]),
        Route("/api/server/info", server_info, methods=["GET"]),
        Route("/api/server/types", server_types, methods=["GET"]),
        Route("/api/server/compiled-types", server_types, methods=["GET"]),
    ]
