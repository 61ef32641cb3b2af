"""Run the server: uvicorn in a background thread (:func:`serve`), or in the foreground for
``diced serve``."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any, Self

from diced.errors import BackendError, InvalidArgumentError

log = logging.getLogger(__name__)

__all__ = ["ServerHandle", "serve", "show_url"]


class ServerHandle:
    """A server running in a background thread. ``url`` is its base URL; :meth:`stop` ends it
    (also on leaving a ``with`` block)."""

    def __init__(self, server: Any, thread: threading.Thread, url: str, app: Any,
                 token: str | None) -> None:
        self._server, self._thread, self.url, self.app, self.token = server, thread, url, app, token

    @property
    def running(self) -> bool:
        """Whether the server thread is still running."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting requests, finish the ones under way, and join the thread."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():  # pragma: no cover - a stuck client
            self._server.force_exit = True
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ServerHandle {self.url} {'running' if self.running else 'stopped'}>"


def check_binding(host: str, token: str | None, read_only: bool) -> str | None:
    """The token to use: binding anything but loopback needs one for mutations (a random one
    is made when none is given)."""
    from diced.server.app import is_loopback

    if token is None and not read_only and not is_loopback(host):
        token = secrets.token_urlsafe(24)
        log.warning("binding %s: mutations need the token %s", host, token)
    return token


def serve(store: Any, host: str = "127.0.0.1", port: int = 8000, *, read_only: bool = False,
          token: str | None = None, cors_origins: tuple[str, ...] | list[str] = (),
          max_body_bytes: int | None = None, log_level: str = "warning",
          timeout: float = 30.0) -> ServerHandle:
    """Serve a store over HTTP (DVID's API) from a background thread.

    Parameters
    ----------
    store:
        A :class:`diced.Store` or a location.
    host, port:
        Where to listen; ``port=0`` picks a free port (see ``handle.url``). Binding anything
        but loopback makes mutations require ``token`` (a random one is made and logged, and
        kept in ``handle.token``, when none is given).
    read_only, token, cors_origins, max_body_bytes:
        See :func:`diced.server.app.create_app`.

    Returns
    -------
    ServerHandle
        With ``.url`` and ``.stop()``; usable as a context manager.
    """
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - the server extra is missing
        raise InvalidArgumentError("serving needs the server extra: pip install 'diced[server]'"
                                   ) from exc
    from diced.server.app import DEFAULT_MAX_BODY, create_app

    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgumentError(f"port must be 0..65535, got {port!r}")
    token = check_binding(host, token, read_only)
    app = create_app(store, read_only=read_only, token=token, cors_origins=cors_origins,
                     max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off",
                            access_log=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    def run() -> None:
        try:
            server.run()
        except SystemExit:  # uvicorn exits its thread when it cannot bind; reported below
            log.debug("uvicorn exited on %s:%s", host, port)

    thread = threading.Thread(target=run, name=f"diced-serve-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise BackendError(f"the server could not start on {host}:{port} (port in use?)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise BackendError(f"the server did not start on {host}:{port} in {timeout} s")
        time.sleep(0.01)
    sock = server.servers[0].sockets[0].getsockname()
    shown = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    url = f"http://{shown}:{sock[1]}"
    return ServerHandle(server, thread, url, app, token)


def show_url(url: str, open_browser: bool | None = None) -> bool:
    """Open ``url`` in a browser when a display exists (or ``open_browser=True``), else print
    it. Returns whether a browser was asked to open it."""
    import os
    import sys

    if open_browser is None:
        open_browser = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) \
            or sys.platform in ("darwin", "win32")
    if open_browser:
        import webbrowser

        try:
            if webbrowser.open(url):
                return True
        except webbrowser.Error:
            pass
    print(f"diced: open {url}")
    return False
