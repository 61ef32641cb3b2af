"""The ``roi`` datatype (DVID's ``roi``): a region of interest as block spans
``[z, y, x0, x1]``, opened as :class:`ROI`; point queries, box masks, DVID's ``partition`` and
set operations. Span arithmetic lives in :mod:`diced.datatypes.roi.spans` (pure numpy)."""

from __future__ import annotations

import operator
from typing import Any

from diced.datatypes.base import Datatype
from diced.datatypes.registry import register_datatype
from diced.datatypes.roi.roi import ROI, parse_plane_ckey
from diced.errors import InvalidArgumentError
from diced.repo.context import InstanceContext

__all__ = ["ROI", "RoiType"]


class RoiType(Datatype):
    """``repo.create_instance(name, "roi", block_size=32)``.

    Options: ``block_size``, the side (or ``(x, y, z)`` sides) of an ROI block in voxels
    (default 32, DVID's ``DefaultBlockSize``). One key per plane of blocks: merges compare
    and conflict per plane (a conflict's key is the block ``z``), diffs list planes.
    """

    name = "roi"
    dvid_names = ("roi",)
    http_routes = "diced.server.routes_roi"

    def configure(self, vid: int, *, block_size: Any = 32) -> dict[str, Any]:
        sides = [block_size] * 3 if not isinstance(block_size, (list, tuple)) else block_size
        try:
            if any(isinstance(s, bool) for s in sides):
                raise TypeError
            sides = [operator.index(s) for s in sides]
        except TypeError:
            raise InvalidArgumentError(f"block_size must be integers, got {block_size!r}") from None
        if len(sides) != 3 or not all(1 <= s <= 1 << 20 for s in sides):
            raise InvalidArgumentError(
                f"block_size is one or three positive integers, got {block_size!r}")
        return {"block_size": sides}

    def open(self, context: InstanceContext) -> ROI:
        return ROI(context)

    def describe_key(self, ckey: str, suffix: str = "") -> Any:
        return parse_plane_ckey(ckey)


register_datatype(RoiType)
