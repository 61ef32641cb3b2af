"""The ``neuronjson`` datatype (DVID's ``neuronjson``): a JSON document per body id with
per-field user/time stamps and DVID's query language, opened as :class:`NeuronJSON`. The
document and query rules are pure functions in :mod:`diced.datatypes.neuronjson.query`."""

from __future__ import annotations

from typing import Any

from diced.datatypes.base import Datatype
from diced.datatypes.neuronjson.neuronjson import NeuronJSON, parse_body_ckey
from diced.datatypes.registry import register_datatype
from diced.repo.context import InstanceContext

__all__ = ["NeuronJSON", "NeuronJSONType"]


class NeuronJSONType(Datatype):
    """``repo.create_instance(name, "neuronjson")`` (no options). One key per body id:
    merges compare and conflict per body (a conflict's key is the body id), diffs list body
    ids."""

    name = "neuronjson"
    dvid_names = ("neuronjson",)
    http_routes = "diced.server.routes_neuronjson"

    def open(self, context: InstanceContext) -> NeuronJSON:
        return NeuronJSON(context)

    def describe_key(self, ckey: str, suffix: str = "") -> Any:
        return parse_body_ckey(ckey)


register_datatype(NeuronJSONType)
