"""``diced serve``: a DVID-compatible HTTP API (and, with the viewer, a web page) over a store.

The server is an optional extra (``pip install 'diced[server]'``: Starlette + uvicorn); nothing
in the core imports this package. :func:`create_app` builds the ASGI application,
:func:`serve` runs it with uvicorn in a background thread and returns a
:class:`ServerHandle`. The endpoints and their JSON shapes are listed in
:mod:`diced.server.api_notes`.
"""

from __future__ import annotations

from diced.server.app import create_app
from diced.server.run import ServerHandle, serve

__all__ = ["ServerHandle", "create_app", "serve"]
