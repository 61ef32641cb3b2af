"""Node endpoints (``/api/node/{uuid}/commit``, ``branch``, ``newversion``, ``tag``, ``note``,
``log``, ``status``) and the dispatcher of instance endpoints
``/api/node/{uuid}/{name}/{keyword}/...`` (see :mod:`diced.server.registry`)."""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from diced.errors import VersionNotFoundError
from diced.server._http import HTTPError, bad, json_body, json_response, not_found
from diced.server._run import blocking
from diced.server.catalog import Located
from diced.server.registry import TYPES, InstanceRequest, dvid_typename

__all__ = ["routes"]

_NAME = re.compile(r"^\.?[A-Za-z0-9_.-]{1,200}$")
_MUTATING = {"POST", "PUT", "DELETE", "PATCH"}


def _state(request: Request) -> Any:
    return request.app.state.diced


def _obj(body: bytes, what: str, *, empty: Any = ...) -> dict[str, Any]:
    doc = json_body(body, what, empty=empty)
    if not isinstance(doc, dict):
        raise bad(f"{what} must be a JSON object")
    return doc


def _str(doc: dict[str, Any], key: str, what: str, default: str | None = None) -> str | None:
    v = doc.get(key, default)
    if v is not None and not isinstance(v, str):
        raise bad(f"{what}: {key!r} must be a string")
    return v


async def node_action(request: Request) -> Response:
    """``/api/node/{uuid}/{action}``: commit, branch, newversion, tag, note, log, status."""
    st = _state(request)
    action = request.path_params["action"]
    handler = _ACTIONS.get((action, request.method if request.method != "HEAD" else "GET"))
    if handler is None:
        if any(a == action for a, _ in _ACTIONS):
            raise HTTPError(405, f"{request.method} is not allowed on /api/node/{{uuid}}/{action}")
        raise not_found(f"Could not find the URL: {request.url.path}")
    loc = await blocking(st.catalog.locate, request.path_params["uuid"])
    body = await request.body() if request.method in _MUTATING else b""
    return await blocking(handler, st, loc, body)


def _status(st: Any, loc: Located, body: bytes) -> Response:
    return json_response({"Locked": bool(loc.node.locked)})


def _commit(st: Any, loc: Located, body: bytes) -> Response:
    doc = _obj(body, "commit body")
    note = _str(doc, "note", "commit", "")
    lines = doc.get("log", [])
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise bad('commit: "log" must be a list of strings')
    if loc.node.locked:
        raise bad(f"node {loc.uuid} is already committed (locked)")
    st.catalog.fresh(loc).commit(note or "", lines, uuid=loc.uuid)
    return json_response({"committed": loc.uuid})


def _check_child_uuid(uuid: str | None) -> None:
    if uuid is not None and (len(uuid) != 32 or any(c not in "0123456789abcdef" for c in uuid)):
        raise bad(f"an assigned UUID must be 32 lowercase hex characters, got {uuid!r}")


def _branch(st: Any, loc: Located, body: bytes) -> Response:
    doc = _obj(body, "branch body")
    name = _str(doc, "branch", "branch")
    if not name:
        raise bad('branch needs a "branch" name')
    if name == "master":
        raise bad("'master' is the default branch: use newversion")
    note, uuid = _str(doc, "note", "branch", ""), _str(doc, "uuid", "branch")
    _check_child_uuid(uuid)
    if not loc.node.locked:
        raise bad(f"can't branch an unlocked node ({loc.uuid})")
    repo = st.catalog.fresh(loc)
    if name == loc.node.branch:
        child = repo.newversion(note or "", uuid=uuid, parent=loc.uuid)
    else:
        child = repo.branch(name, note or "", uuid=uuid, parent=loc.uuid)
    return json_response({"child": child.uuid})


def _newversion(st: Any, loc: Located, body: bytes) -> Response:
    doc = _obj(body, "newversion body", empty={})
    note, uuid = _str(doc, "note", "newversion", ""), _str(doc, "uuid", "newversion")
    _check_child_uuid(uuid)
    if not loc.node.locked:
        raise bad(f"can't branch an unlocked node ({loc.uuid})")
    child = st.catalog.fresh(loc).newversion(note or "", uuid=uuid, parent=loc.uuid)
    return json_response({"child": child.uuid})


def _tag(st: Any, loc: Located, body: bytes) -> Response:
    doc = _obj(body, "tag body")
    tag, note = _str(doc, "tag", "tag"), _str(doc, "note", "tag", "")
    if not tag:
        raise bad('tag needs a "tag" string')
    if not loc.node.locked:
        raise bad(f"can't tag an unlocked node ({loc.uuid})")
    child = st.catalog.fresh(loc).tag(tag, note or "", parent=loc.uuid)
    return json_response({"child": child.uuid})


def _get_note(st: Any, loc: Located, body: bytes) -> Response:
    return json_response({"note": loc.node.note})


def _post_note(st: Any, loc: Located, body: bytes) -> Response:
    doc = _obj(body, "note body")
    note = _str(doc, "note", "note")
    if note is None:
        raise bad('note body must be {"note": "..."}')
    _update_node(st, loc, lambda rec: rec.__setitem__("note", note))
    return Response(b"", 200)


def _get_log(st: Any, loc: Located, body: bytes) -> Response:
    return json_response({"log": list(loc.node.log)})


def _post_log(st: Any, loc: Located, body: bytes) -> Response:
    doc = _obj(body, "log body")
    lines = doc.get("log")
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise bad('log body must be {"log": ["line", ...]}')
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _update_node(st, loc, lambda rec: rec["log"].extend(f"{stamp}  {x}" for x in lines))
    return Response(b"", 200)


def _update_node(st: Any, loc: Located, fn: Any) -> None:
    """Change a node's note or log (DVID allows this on locked nodes too)."""
    try:
        st.catalog.fresh(loc)._update_node(loc.node.id, fn)
    except VersionNotFoundError:
        raise not_found(f"version {loc.uuid} vanished") from None


_ACTIONS = {
    ("status", "GET"): _status, ("commit", "GET"): _status, ("commit", "POST"): _commit,
    ("branch", "POST"): _branch, ("newversion", "POST"): _newversion, ("tag", "POST"): _tag,
    ("note", "GET"): _get_note, ("note", "POST"): _post_note,
    ("log", "GET"): _get_log, ("log", "POST"): _post_log,
}


# --- instance endpoints ------------------------------------------------------------------

async def instance_endpoint(request: Request) -> Response:
    """``/api/node/{uuid}/{name}/{keyword}/...``: dispatch to the instance type's endpoint."""
    st = _state(request)
    p = request.path_params
    name, keyword = p["name"], p["keyword"]
    if not _NAME.match(name):
        raise bad(f"bad data instance name {name!r}")
    rest = p.get("rest", "")
    parts = [x for x in rest.split("/") if x != ""] if rest else []
    loc = await blocking(st.catalog.locate, p["uuid"])
    record = loc.repo._instance_records().get(name)
    if record is None or record["created"] not in loc.repo.dag.ancestors(loc.node.id):
        raise not_found(f"no data instance {name!r} at version {loc.uuid}")
    typename = dvid_typename(record)
    t = TYPES.get(typename)
    if t is None:
        raise bad(f"instance {name!r} has type {typename!r}, which this server cannot serve")
    ep = t.endpoints.get(keyword)
    if ep is None:
        raise bad(f"{typename} instance {name!r} has no endpoint {keyword!r} "
                  f"(see /api/help/{typename})")
    method = request.method
    handler = ep.methods.get(method) or (ep.methods.get("GET") if method == "HEAD" else None)
    if handler is None:
        raise bad(f"{method} is not supported on endpoint {keyword!r} of {typename} "
                  f"instance {name!r}")
    if method in _MUTATING and loc.node.locked and not getattr(handler, "read_only", False):
        raise bad(f"Cannot do {method} on endpoint {keyword!r} of locked node {loc.uuid}")
    body = await request.body()
    req = InstanceRequest(request=request, catalog=st.catalog, loc=loc, name=name,
                          record=record, typename=typename, keyword=keyword, parts=parts,
                          body=body, state=st)
    return await blocking(handler, req)


def routes() -> list[Route]:
    """The ``/api/node/...`` routes."""
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE"]
    return [
        Route("/api/node/{uuid}/{action}", node_action, methods=methods),
        Route("/api/node/{uuid}/{name}/{keyword}", instance_endpoint, methods=methods),
        Route("/api/node/{uuid}/{name}/{keyword}/{rest:path}", instance_endpoint,
              methods=methods),
    ]
