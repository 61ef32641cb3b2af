"""The ``annotation`` datatype (DVID's ``annotation``): point annotations such as synapses,
stored per block and per tag, optionally synced to a label array so that elements can be
asked for by body. Opened as :class:`Annotation`; see
:mod:`diced.datatypes.annotation.annotation` for the storage and the sync rules, and
:mod:`diced.datatypes.annotation.elements` for the element JSON.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

from diced.datatypes.annotation import elements as E
from diced.datatypes.annotation.annotation import Annotation
from diced.datatypes.base import Datatype
from diced.datatypes.registry import register_datatype
from diced.errors import InvalidArgumentError
from diced.repo.context import InstanceContext
from diced.repo.resolve import VersionCtx

__all__ = ["Annotation", "AnnotationType"]

_SPACES = ("tags", "svof", "svidx")


class AnnotationType(Datatype):
    """``repo.create_instance(name, "annotation", block_size=64)``; then
    ``ann.sync(labels_name)`` to query by body.

    Options: ``block_size``, the side (or ``(x, y, z)`` sides) of the blocks elements are
    grouped by (default 64, DVID's default). Elements merge per position (a conflict names
    the position ``(x, y, z)``); the tag and label indexes are rebuilt at merges.
    """

    name = "annotation"
    dvid_names = ("annotation",)
    http_routes = "diced.server.routes_annotation"

    def configure(self, vid: int, *, block_size: Any = 64) -> dict[str, Any]:
        sides = [block_size] * 3 if not isinstance(block_size, (list, tuple)) else block_size
        if any(isinstance(s, bool) for s in sides):
            raise InvalidArgumentError(f"block_size must be integers, got {block_size!r}")
        try:
            sides = [operator.index(s) for s in sides]
        except TypeError:
            raise InvalidArgumentError(f"block_size must be integers, got {block_size!r}") from None
        if len(sides) != 3 or any(not 1 <= s <= 1 << 20 for s in sides):
            raise InvalidArgumentError(
                f"block_size is one or three positive integers, got {block_size!r}")
        return {"block_size": sides}

    def allocate(self, config: dict[str, Any], new_space: Callable[[], int]) -> None:
        config["spaces"] = {n: new_space() for n in _SPACES}

    def open(self, context: InstanceContext) -> Annotation:
        return Annotation(context)

    def merge_spaces(self, record: dict[str, Any]) -> list[tuple[str, int]]:
        """Only the elements merge key by key; the indexes are derived from them."""
        return [("", record["id"])]

    def describe_key(self, ckey: str, suffix: str = "") -> Any:
        return E.parse_pos_key(ckey.split("_", 1)[1])

    def after_merge(self, instance: Any, ctx: VersionCtx, touched: Sequence[str],
                    parents: Sequence[VersionCtx]) -> None:
        instance._after_merge(ctx, parents)


register_datatype(AnnotationType)
