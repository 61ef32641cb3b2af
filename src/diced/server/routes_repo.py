"""Repo endpoints: ``/api/repos``, ``/api/repos/info``, ``/api/repo/{uuid}/...``."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from diced.errors import DicedError
from diced.server._http import bad, json_body, json_response, not_found, text_response
from diced.server._run import blocking
from diced.server.dvidjson import repo_json
from diced.server.instance_json import instance_info
from diced.server.registry import TYPES

__all__ = ["repo_info_json", "routes"]


def _state(request: Request) -> Any:
    return request.app.state.diced


def repo_info_json(repo: Any) -> dict[str, Any]:
    """DVID's repo JSON, with each instance's info at the newest version that sees it."""
    instances: dict[str, Any] = {}
    nodes = sorted(repo.dag.nodes.values(), key=lambda n: -n.id)
    for name, rec in sorted(repo._instance_records().items()):
        at = next((n for n in nodes if rec["created"] in repo.dag.ancestors(n.id)), None)
        if at is None:
            continue
        try:
            instances[name] = instance_info(repo, at.uuid, name)
        except DicedError:
            continue  # deleted while listing
    return repo_json(repo, instances)


async def repos_info(request: Request) -> Response:
    """``GET /api/repos/info``: every repo's DVID JSON, keyed by root UUID."""
    def work() -> dict[str, Any]:
        return {r.uuid: repo_info_json(r) for r in _state(request).catalog.repos()}

    return json_response(await blocking(work))


async def repos_create(request: Request) -> Response:
    """``POST /api/repos``: create a repo (``alias``, ``description``, optional ``root``)."""
    body = json_body(await request.body(), "POST /api/repos body", empty={})
    if not isinstance(body, dict):
        raise bad("POST /api/repos body must be a JSON object")
    alias = body.get("alias") or f"repo-{time.strftime('%Y%m%d-%H%M%S')}"
    desc = body.get("description", "")
    root = body.get("root")
    if not isinstance(alias, str) or not isinstance(desc, str) or \
            (root is not None and not isinstance(root, str)):
        raise bad("alias, description and root must be strings")
    if root is not None and (len(root) != 32 or any(c not in "0123456789abcdef" for c in root)):
        raise bad(f"root UUID must be 32 lowercase hex characters, got {root!r}")
    st = _state(request)

    def work() -> str:
        repo = st.store.create_repo(alias, desc, uuid=root)
        st.catalog.forget()
        return repo.uuid

    return json_response({"root": await blocking(work)})


async def repo_head(request: Request) -> Response:
    """``GET /api/repo/{uuid}``: whether the repo exists, with its root UUID."""
    loc = await blocking(_state(request).catalog.locate, request.path_params["uuid"])
    return text_response(f"Repo available with root UUID {loc.repo.uuid}")


async def repo_info(request: Request) -> Response:
    """``/api/repo/{uuid}/info``: the repo's DVID JSON (GET) or alias/description changes (POST)."""
    st = _state(request)
    loc = await blocking(st.catalog.locate, request.path_params["uuid"])
    if request.method == "POST":
        body = json_body(await request.body(), "repo info body")
        if not isinstance(body, dict):
            raise bad("repo info body must be a JSON object")
        changes = {k.lower(): v for k, v in body.items()}
        for k in ("alias", "description"):
            if k in changes and not isinstance(changes[k], str):
                raise bad(f"{k} must be a string")

        def work() -> None:
            repo = st.catalog.fresh(loc)
            if "alias" in changes and changes["alias"] != repo.alias:
                raise bad("renaming a repo is not supported by diced")
            if "description" in changes:
                def fn(doc: dict[str, Any]) -> None:
                    doc["description"] = changes["description"]

                repo._update_repo(fn)

        await blocking(work)
        return Response(b"", 200)
    return json_response(await blocking(repo_info_json, loc.repo))


async def repo_log(request: Request) -> Response:
    """``/api/repo/{uuid}/log``: the repo's log (GET) or lines appended to it (POST)."""
    st = _state(request)
    loc = await blocking(st.catalog.locate, request.path_params["uuid"])
    if request.method == "POST":
        body = json_body(await request.body(), "repo log body")
        lines = body.get("log") if isinstance(body, dict) else None
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            raise bad('repo log body must be {"log": ["line", ...]}')

        def work() -> None:
            def fn(doc: dict[str, Any]) -> None:
                doc.setdefault("log", []).extend(lines)

            st.catalog.fresh(loc)._update_repo(fn)

        await blocking(work)
        return Response(b"", 200)
    return json_response({"log": list(loc.repo._doc.get("log", []))})


_INSTANCE_KEYS = {"typename", "dataname", "versioned", "compression", "checksum", "tags",
                  "sync"}


async def repo_instance(request: Request) -> Response:
    """``POST /api/repo/{uuid}/instance``: create a data instance from DVID's config JSON."""
    st = _state(request)
    loc = await blocking(st.catalog.locate, request.path_params["uuid"])
    body = json_body(await request.body(), "instance config")
    if not isinstance(body, dict):
        raise bad("instance config must be a JSON object")
    settings: dict[str, str] = {}
    for k, v in body.items():
        if not isinstance(v, str):
            raise bad(f"Setting for '{k}' was not a string")
        settings[k.lower()] = v
    typename, name = settings.get("typename"), settings.get("dataname")
    if not typename or not name:
        raise bad("instance config needs 'typename' and 'dataname'")
    t = TYPES.get(typename)
    if t is None or t.create is None:
        raise bad(f"data type {typename!r} is not supported by this server "
                  f"(known: {', '.join(sorted(TYPES))})")
    if settings.get("versioned", "true").lower() in ("false", "0"):
        raise bad("unversioned instances are not supported by diced")
    if loc.node.locked:
        raise bad(f"cannot create instance {name!r}: node {loc.uuid} is locked")

    def work() -> None:
        repo = st.catalog.fresh(loc)
        t.create(repo, name, settings)

    await blocking(work)
    return json_response({"result": f"Added {name} [{typename}] to node {loc.uuid}"})


async def repo_merge(request: Request) -> Response:
    """``POST /api/repo/{uuid}/merge``: merge locked parents into a new version."""
    st = _state(request)
    loc = await blocking(st.catalog.locate, request.path_params["uuid"])
    body = json_body(await request.body(), "merge body")
    if not isinstance(body, dict):
        raise bad('merge body must be {"mergeType": "conflict-free", "parents": [...], "note": ...}')
    mtype = body.get("mergeType", "conflict-free")
    parents, note = body.get("parents"), body.get("note", "")
    if mtype != "conflict-free":
        raise bad(f"merge type {mtype!r} is not implemented (only 'conflict-free')")
    if not isinstance(parents, list) or len(parents) < 2 or \
            not all(isinstance(p, str) for p in parents) or not isinstance(note, str):
        raise bad("merge needs 'parents': at least two UUID strings, and a string 'note'")

    def work() -> str:
        nodes = [st.catalog.locate(p) for p in parents]
        if any(n.repo.uuid != loc.repo.uuid for n in nodes):
            raise bad("merge parents must be versions of this repo")
        repo = st.catalog.fresh(loc)
        return repo.merge(*[n.uuid for n in nodes], note=note).uuid

    return json_response({"child": await blocking(work)})


async def branch_versions(request: Request) -> Response:
    """``GET /api/repo/{uuid}/branch-versions/{name}``: a branch's versions, leaf first."""
    st = _state(request)
    loc = await blocking(st.catalog.locate, request.path_params["uuid"])
    name = request.path_params["name"]
    try:
        chain = loc.repo.dag.branch_ancestry(name)
    except DicedError:
        raise not_found(f"no branch {name!r} in repo {loc.repo.uuid}") from None
    return json_response([n.uuid for n in chain])


def routes() -> list[Route]:
    """The ``/api/repos`` and ``/api/repo/...`` routes."""
    return [
        Route("/api/repos", repos_create, methods=["POST"]),
        Route("/api/repos/info", repos_info, methods=["GET"]),
        Route("/api/repo/{uuid}", repo_head, methods=["GET", "HEAD"]),
        Route("/api/repo/{uuid}/info", repo_info, methods=["GET", "POST"]),
        Route("/api/repo/{uuid}/log", repo_log, methods=["GET", "POST"]),
        Route("/api/repo/{uuid}/instance", repo_instance, methods=["POST"]),
        Route("/api/repo/{uuid}/merge", repo_merge, methods=["POST"]),
        Route("/api/repo/{uuid}/branch-versions/{name}", branch_versions, methods=["GET"]),
    ]
