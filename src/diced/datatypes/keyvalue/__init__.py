"""The ``keyvalue`` datatype (DVID's ``keyvalue``, DICED's files): a versioned mapping of
string keys to bytes, opened as :class:`KeyValue`. One key space, merged key by key; the
defaults of :class:`~diced.datatypes.Datatype` fit it."""

from __future__ import annotations

from typing import Any

from diced.datatypes.base import Datatype
from diced.datatypes.keyvalue.keyvalue import KEY_MAX_BYTES, KeyValue
from diced.datatypes.registry import register_datatype
from diced.repo import keys as K
from diced.repo.context import InstanceContext

__all__ = ["KEY_MAX_BYTES", "KeyValue", "KeyValueType"]


class KeyValueType(Datatype):
    """``repo.create_keyvalue(name)`` / ``repo.create_instance(name, "keyvalue")`` (no
    options)."""

    name = "keyvalue"
    dvid_names = ("keyvalue",)
    http_routes = "diced.server.routes_keyvalue"

    def open(self, context: InstanceContext) -> KeyValue:
        return KeyValue(context)

    def describe_key(self, ckey: str, suffix: str = "") -> Any:
        return K.parse_kv_ckey(ckey)


register_datatype(KeyValueType)
