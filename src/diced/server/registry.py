"""Dispatch of instance endpoints by DVID type name.

``/api/node/{uuid}/{name}/{keyword}/...`` finds the instance, maps its diced type to a DVID
type name (:func:`dvid_typename`: ``uint8blk``..., ``labelmap``, ``keyvalue``) and calls the
handler registered for that type and keyword. A datatype adds itself with :func:`register`
(the route modules do so when imported by :func:`load_builtin_types`), so a later datatype
registry can plug more types in without touching the dispatcher.

Handlers are plain (blocking) functions ``handler(req: InstanceRequest) -> Response``; the
dispatcher runs them in a worker thread, so a slow request never blocks the event loop.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from starlette.datastructures import QueryParams
    from starlette.requests import Request

    from diced.server.catalog import Catalog, Located

__all__ = ["TYPES", "Endpoint", "InstanceRequest", "InstanceType", "dvid_typename", "register"]

Handler = "Callable[[InstanceRequest], Response]"


@dataclass
class InstanceRequest:
    """Everything a handler needs about one request on one instance."""

    request: Request
    catalog: Catalog
    loc: Located
    name: str
    record: dict[str, Any]
    typename: str
    keyword: str
    parts: list[str]
    body: bytes
    state: Any

    @property
    def method(self) -> str:
        """The HTTP method of the request."""
        return self.request.method

    @property
    def query(self) -> QueryParams:
        """The request's query parameters."""
        return self.request.query_params

    @property
    def uuid(self) -> str:
        """The full UUID of the version the request addresses."""
        return self.loc.node.uuid

    def instance(self) -> Any:
        """The instance handle pinned to the request's version (shared, read-only use)."""
        return self.loc.repo.version(self.loc.node.uuid).instance(self.name)

    def writable(self) -> Any:
        """A handle on a private repo object, for requests that change data."""
        repo = self.catalog.fresh(self.loc)
        return repo.version(self.loc.node.uuid).instance(self.name)


@dataclass
class Endpoint:
    """Handlers of one keyword, by HTTP method (``HEAD`` falls back to ``GET``)."""

    methods: dict[str, Callable[[InstanceRequest], Any]]
    help: str = ""


@dataclass
class InstanceType:
    """A DVID datatype: its endpoints, info JSON and instance creation from DVID settings."""

    name: str
    url: str
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    #: ``info(repo, name, record, handle) -> {"Base": ..., "Extended": ...}``
    info: Callable[..., dict[str, Any]] | None = None
    #: ``create(repo_at_open_version, name, settings) -> handle`` from DVID instance settings
    create: Callable[[Any, str, dict[str, str]], Any] | None = None
    help: str = ""


TYPES: dict[str, InstanceType] = {}

_BUILTIN = ("diced.server.routes_array", "diced.server.routes_labels",
            "diced.server.routes_keyvalue")


def register(t: InstanceType) -> InstanceType:
    """Register an HTTP instance type under its DVID type name; returns it."""
    TYPES[t.name] = t
    return t


def load_builtin_types() -> dict[str, InstanceType]:
    """Import the route modules of every datatype (:attr:`Datatype.http_routes` of the
    built-in and installed ones, see :mod:`diced.datatypes`) so their types register;
    returns the registry."""
    from diced.datatypes import datatypes

    modules = list(_BUILTIN)
    modules += [dt.http_routes for dt in datatypes().values()
                if dt.http_routes and dt.http_routes not in modules]
    for module in modules:
        importlib.import_module(module)
    return TYPES


#: DVID type names of diced array dtypes (DVID's imageblk family; other dtypes keep the pattern).
_BLK = {"uint8": "uint8blk", "uint16": "uint16blk", "uint32": "uint32blk", "uint64": "uint64blk",
        "float32": "float32blk"}


def dvid_typename(record: dict[str, Any]) -> str:
    """The DVID type name of a diced instance record (its datatype's
    :meth:`~diced.datatypes.Datatype.dvid_typename`; the stored type name for types this
    diced does not know)."""
    typ = record.get("type")
    if typ not in ("labels", "keyvalue", "array"):
        from diced.datatypes import get_datatype
        from diced.errors import UnknownDatatypeError

        try:
            return get_datatype(str(typ)).dvid_typename(record)
        except UnknownDatatypeError:
            return str(typ)
    if typ == "labels":
        return "labelmap"
    if typ == "keyvalue":
        return "keyvalue"
    if typ == "array":
        dt = np.dtype(record["config"]["dtype"]).name
        return _BLK.get(dt, f"{dt}blk")
    return str(typ)
