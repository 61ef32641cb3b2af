"""The ASGI application: routes, error mapping and the safety middleware.

:func:`create_app` returns a Starlette app serving DVID's HTTP API over a diced store (see
:mod:`diced.server.api_notes` for the endpoints) and, when :mod:`diced.server.viewer` is
present, the web page at ``/``.
"""

from __future__ import annotations

import hmac
import importlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from diced import errors as E
from diced.server._http import HTTPError, text_response
from diced.server.catalog import Catalog

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_BODY", "ServerState", "create_app"]

#: Default largest request body (bytes): a 256³ uint64 label POST is 128 MiB.
DEFAULT_MAX_BODY = 256 << 20

_MUTATING = {"POST", "PUT", "DELETE", "PATCH"}


@dataclass
class ServerState:
    """Shared, read-mostly server state (``app.state.diced``)."""

    store: Any
    catalog: Catalog
    read_only: bool = False
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY
    started: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def create_app(store: Any, *, read_only: bool = False, token: str | None = None,
               cors_origins: tuple[str, ...] | list[str] = (),
               max_body_bytes: int = DEFAULT_MAX_BODY) -> Starlette:
    """Build the server application over ``store``.

    Parameters
    ----------
    store:
        A :class:`diced.Store` or a location string (opened as ``diced.Store(location)``).
    read_only:
        Refuse every mutation (POST/PUT/DELETE) with 403.
    token:
        When set, mutations need it, as ``Authorization: Bearer <token>`` or the query
        ``admintoken=<token>`` (DVID's name); compared in constant time.
    cors_origins:
        Origins allowed to call the API from a browser. Empty (the default) sends
        ``Access-Control-Allow-Origin: *`` as DVID does.
    max_body_bytes:
        Largest accepted request body; larger ones get 413.
    """
    import time

    from diced.store import Store

    if isinstance(store, (str, os.PathLike)):
        store = Store(store)
    if token is not None and not (isinstance(token, str) and token.strip()):
        raise E.InvalidArgumentError("token must be a non-empty string")
    if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise E.InvalidArgumentError("max_body_bytes must be a positive integer")
    state = ServerState(store=store, catalog=Catalog(store), read_only=bool(read_only),
                        token=token.strip() if token else None,
                        cors_origins=tuple(cors_origins), max_body_bytes=max_body_bytes,
                        started=time.time())

    from diced.server import routes_node, routes_repo, routes_server
    from diced.server.registry import load_builtin_types

    load_builtin_types()
    routes: list[BaseRoute] = [*routes_server.routes(), *routes_repo.routes(), *routes_node.routes()]
    try:  # the web page (diced.server.viewer) is optional
        viewer = importlib.import_module("diced.server.viewer")
    except ImportError as exc:
        if exc.name != "diced.server.viewer":
            raise
        routes.append(Route("/", _no_viewer, methods=["GET"]))
    else:
        routes.extend(viewer.routes())

    app = Starlette(routes=routes, exception_handlers={
        HTTPError: _http_error, E.DicedError: _internal, 404: _not_found, 405: _bad_method,
        Exception: _internal})
    app.state.diced = state
    app.add_middleware(_GuardMiddleware, state=state)
    return app


async def _no_viewer(request: Request) -> Response:
    return text_response("diced server: the DVID API is under /api (see /api/help)")


# --- error mapping -------------------------------------------------------------------------

def status_of(exc: BaseException) -> int:
    """The HTTP status of a diced error (DVID answers most failures with 400)."""
    if isinstance(exc, HTTPError):
        return exc.status
    if isinstance(exc, E.NotFoundError):
        return 404
    if isinstance(exc, (E.ConcurrencyError, E.MergeConflictError)):
        return 409
    if isinstance(exc, E.BackendError):
        return 503
    if isinstance(exc, E.CorruptMetadataError):
        return 500
    if isinstance(exc, E.DicedError):
        return 400  # invalid argument, locked node, duplicate name, corrupt input, ...
    return 500


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return text_response(exc.message, exc.status)


async def _not_found(request: Request, exc: Exception) -> Response:
    return text_response(f"Could not find the URL: {request.url.path}", 404)


async def _bad_method(request: Request, exc: Exception) -> Response:
    return text_response(f"{request.method} is not allowed on {request.url.path}", 405)


async def _internal(request: Request, exc: Exception) -> Response:
    status = status_of(exc)
    if status >= 500:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return text_response(f"internal server error ({type(exc).__name__}); see the server log",
                             status)
    return text_response(f"{exc} ({request.url.path})", status)


# --- middleware ----------------------------------------------------------------------------

class BodyTooLarge(HTTPError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the server's limit of {limit} bytes")


_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


class _GuardMiddleware:
    """CORS headers, read-only mode, the mutation token and the body size limit."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        st = self.state
        method = scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        cors = self._cors_headers(origin)
        if method == "OPTIONS":
            await self._send_plain(send, 204, b"", cors + [
                (b"access-control-allow-methods", b"GET, HEAD, POST, PUT, DELETE, OPTIONS"),
                (b"access-control-allow-headers",
                 b"Authorization, Content-Type, Range, X-Requested-With"),
                (b"access-control-max-age", b"600")])
            return
        if method in _MUTATING:
            if st.read_only:
                await self._send_plain(send, 403, b"this server is read-only: "
                                       b"mutations are refused\n", cors)
                return
            if st.token is not None and not self._authorized(scope, headers):
                await self._send_plain(send, 401, b"this request changes data and needs the "
                                       b"server's token (Authorization: Bearer TOKEN)\n",
                                       cors + [(b"www-authenticate", b"Bearer")])
                return
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await self._send_plain(send, 400, b"bad Content-Length header\n", cors)
                return
            if int(length) > st.max_body_bytes:
                await self._send_plain(send, 413, BodyTooLarge(st.max_body_bytes).message.encode()
                                       + b"\n", cors)
                return
        limit, seen = st.max_body_bytes, 0

        async def limited_receive() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return msg

        async def send_with_cors(msg: dict) -> None:
            if msg["type"] == "http.response.start" and cors:
                msg = dict(msg)
                msg["headers"] = list(msg.get("headers", [])) + cors
            await send(msg)

        await self.app(scope, limited_receive, send_with_cors)

    def _cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        allowed = self.state.cors_origins
        expose = (b"access-control-expose-headers", b"Content-Range, Content-Length, Content-Type")
        if not allowed or "*" in allowed:
            return [(b"access-control-allow-origin", b"*"), expose]
        if origin is not None and origin in allowed:
            return [(b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"vary", b"Origin"), expose]
        return []

    def _authorized(self, scope: dict, headers: dict[str, str]) -> bool:
        token = self.state.token or ""
        given = ""
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        else:
            from urllib.parse import parse_qs

            qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (qs.get("admintoken") or qs.get("token") or [""])[0]
        return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))

    @staticmethod
    async def _send_plain(send: Any, status: int, body: bytes,
                          extra: list[tuple[bytes, bytes]]) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode())] + extra})
        await send({"type": "http.response.body", "body": body})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` exposes the server only to this machine."""
    import ipaddress

    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
