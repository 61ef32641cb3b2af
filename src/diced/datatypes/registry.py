"""The datatype registry: type names (diced's and DVID's) to :class:`Datatype` objects.

Built-in types are imported on first lookup (their modules register themselves), so
``import diced`` loads none of them; other packages add types through the entry-point group
``diced.datatypes`` (each entry point loads a :class:`Datatype` subclass or instance), read
once, on the first lookup of a name no built-in has.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any

from diced.datatypes.base import Datatype
from diced.errors import DuplicateNameError, InvalidArgumentError, UnknownDatatypeError

log = logging.getLogger(__name__)

__all__ = ["ENTRY_POINT_GROUP", "datatypes", "get_datatype", "register_datatype"]

#: the entry-point group third-party datatypes register under
ENTRY_POINT_GROUP = "diced.datatypes"

#: built-in types: name -> module that registers it when imported
_BUILTIN = {
    "array": "diced.datatypes.array",
    "labels": "diced.datatypes.labels",
    "keyvalue": "diced.datatypes.keyvalue",
    "annotation": "diced.datatypes.annotation",
    "roi": "diced.datatypes.roi",
    "neuronjson": "diced.datatypes.neuronjson",
    "labelgraph": "diced.datatypes.labelgraph",
    "labelsz": "diced.datatypes.labelsz",
}
#: DVID names of the built-in types (known before their modules are imported)
_BUILTIN_ALIASES = {
    **{f"{t}blk": "array" for t in ("uint8", "uint16", "uint32", "uint64", "int8", "int16",
                                     "int32", "int64", "float32", "float64")},
    "imageblk": "array",
    "labelmap": "labels",
    "keyvalue": "keyvalue",
    "annotation": "annotation",
    "roi": "roi",
    "neuronjson": "neuronjson",
    "labelgraph": "labelgraph",
    "labelsz": "labelsz",
}

_TYPES: dict[str, Datatype] = {}
_ALIASES: dict[str, str] = {}
_LOCK = threading.RLock()
_entry_points_loaded = False


def register_datatype(datatype: Datatype | type[Datatype], *, replace: bool = False
                      ) -> Datatype:
    """Make a datatype known by its :attr:`~Datatype.name` and :attr:`~Datatype.dvid_names`.

    Parameters
    ----------
    datatype : Datatype or Datatype subclass
        The type (a class is instantiated without arguments).
    replace : bool, default False
        Replace a registered type of the same name (tests, reloading).

    Returns
    -------
    Datatype
        The registered object.

    Raises
    ------
    InvalidArgumentError
        Not a :class:`Datatype`, or it has no name.
    DuplicateNameError
        Another type already has this name (or one of its DVID names).
    """
    if isinstance(datatype, type) and issubclass(datatype, Datatype):
        datatype = datatype()
    if not isinstance(datatype, Datatype):
        raise InvalidArgumentError(
            f"a datatype must be a diced.datatypes.Datatype, got {type(datatype).__name__}")
    name = datatype.name
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"{type(datatype).__name__} has no name")
    names = [str(n) for n in datatype.dvid_names if n != name]
    with _LOCK:
        old = _TYPES.get(name)
        if old is not None and not replace and type(old) is not type(datatype):
            raise DuplicateNameError(f"datatype {name!r} is already registered ({old!r})")
        for alias in names:
            owner = _ALIASES.get(alias) or (alias if alias in _TYPES else None)
            if owner not in (None, name) and not replace:
                raise DuplicateNameError(f"DVID type name {alias!r} already means {owner!r}")
        _TYPES[name] = datatype
        for alias in names:
            _ALIASES[alias] = name
    return datatype


def get_datatype(name: str) -> Datatype:
    """The datatype called ``name`` (diced's name or one of DVID's).

    Raises
    ------
    UnknownDatatypeError
        No built-in, registered or entry-point type has that name.
    """
    if not isinstance(name, str):
        raise UnknownDatatypeError(f"datatype names are strings, got {name!r}")
    found = _lookup(name)
    if found is None:
        _load_entry_points()
        found = _lookup(name)
    if found is None:
        raise UnknownDatatypeError(
            f"unknown datatype {name!r}; known: {', '.join(sorted(datatypes()))} (a package "
            f"adds types with an entry point in the group {ENTRY_POINT_GROUP!r})")
    return found


def datatypes() -> dict[str, Datatype]:
    """Every known datatype by its diced name: built-ins, registered and entry-point ones
    (this imports them all)."""
    for name in _BUILTIN:
        _lookup(name)
    _load_entry_points()
    with _LOCK:
        return dict(sorted(_TYPES.items()))


def _lookup(name: str) -> Datatype | None:
    with _LOCK:
        name = _ALIASES.get(name, name)
        hit = _TYPES.get(name)
        if hit is not None:
            return hit
        builtin = _BUILTIN_ALIASES.get(name, name)
        module = _BUILTIN.get(builtin)
    if module is None:
        return None
    importlib.import_module(module)  # registers the type
    with _LOCK:
        return _TYPES.get(builtin)


def _load_entry_points() -> None:
    """Register the datatypes of installed packages (entry-point group ``diced.datatypes``),
    once. A broken entry point is logged and skipped, never fatal to the others."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _LOCK:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj: Any = ep.load()
                register_datatype(obj)
            except Exception as exc:  # noqa: BLE001  # one broken package must not break the rest
                log.warning("datatype entry point %s = %s failed: %s", ep.name, ep.value, exc)


def _reset_entry_points() -> None:
    """Read the entry points again on the next unknown name (tests installing a package)."""
    global _entry_points_loaded
    with _LOCK:
        _entry_points_loaded = False
