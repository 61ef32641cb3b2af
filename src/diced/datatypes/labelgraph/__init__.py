"""The ``labelgraph`` datatype (DVID's ``labelgraph``): a weighted graph over labels,
versioned per vertex and per edge, opened as :class:`LabelGraph`; and
:func:`contact_graph`, the supervoxel contact graph of a label volume (numba, contact areas
as weights)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from diced.datatypes.base import Datatype
from diced.datatypes.labelgraph.adjacency import contact_graph
from diced.datatypes.labelgraph.labelgraph import LabelGraph, describe_key
from diced.datatypes.registry import register_datatype
from diced.repo.context import InstanceContext
from diced.repo.resolve import VersionCtx

__all__ = ["LabelGraph", "LabelGraphType", "contact_graph"]


class LabelGraphType(Datatype):
    """``repo.create_instance(name, "labelgraph")`` (no options). Vertices and edges merge
    one by one (a conflict's key is ``("vertex", label)`` or ``("edge", a, b)``); the
    reverse edge index is rebuilt for touched edges at merges."""

    name = "labelgraph"
    dvid_names = ("labelgraph",)

    def allocate(self, config: dict[str, Any], new_space: Callable[[], int]) -> None:
        config["spaces"] = {"rev": new_space()}

    def open(self, context: InstanceContext) -> LabelGraph:
        return LabelGraph(context)

    def describe_key(self, ckey: str, suffix: str = "") -> Any:
        return describe_key(ckey)

    def after_merge(self, instance: Any, ctx: VersionCtx, touched: Sequence[str],
                    parents: Sequence[VersionCtx]) -> None:
        instance._after_merge(ctx, touched)


register_datatype(LabelGraphType)
