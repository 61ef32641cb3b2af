"""The ``array`` datatype: nD arrays of any numeric dtype (DVID's ``uint8blk``,
``uint16blk``, ... image types), opened as :class:`VersionedArray`.

The instance object lives in :mod:`diced.datatypes.array.array`; what it shares with other
array-like types (grid checks, the indexing planner, codecs, downsampling kernels) lives in
:mod:`diced.array`, which knows nothing about repos or versions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from diced.datatypes.array.array import VersionedArray, array_config
from diced.datatypes.base import Datatype
from diced.datatypes.registry import register_datatype
from diced.repo import keys as K
from diced.repo.context import InstanceContext
from diced.repo.resolve import VersionCtx

__all__ = ["ArrayType", "VersionedArray", "array_config"]

#: DVID's image types, by numpy dtype name (other dtypes keep the ``<dtype>blk`` pattern)
_DVID_BLK = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
             "float32", "float64")


class ArrayType(Datatype):
    """``repo.create_array(...)`` / ``repo.create_instance(name, "array", ...)``.

    Options (see :meth:`Repo.create_array <diced.repo.repo.Repo.create_array>`): ``dtype``,
    ``shape``, ``chunks``, ``fill_value``, ``codec``, ``origin``, ``max_scale``. The shape is
    versioned (``config["shapes"]``, by version id; merged elementwise max); each pyramid
    level is a key space of its own, rebuilt from the merged scale 0 at a merge.
    """

    name = "array"
    dvid_names = tuple(f"{t}blk" for t in _DVID_BLK) + ("imageblk",)
    http_routes = "diced.server.routes_array"

    def configure(self, vid: int, *, dtype: Any = None, shape: Any = None, chunks: Any = None,
                  fill_value: Any = 0, codec: Any = None, origin: Any = None,
                  max_scale: int = 0) -> dict[str, Any]:
        if dtype is None:
            from diced.errors import InvalidArgumentError

            raise InvalidArgumentError("an array needs a dtype")
        return array_config(dtype, shape, chunks, fill_value, codec, origin, vid,
                            max_scale=max_scale)

    def allocate(self, config: dict[str, Any], new_space: Callable[[], int]) -> None:
        if config.get("max_scale"):  # one key space per pyramid level
            config["subinstances"] = [new_space() for _ in range(int(config["max_scale"]))]

    def dvid_typename(self, record: dict[str, Any]) -> str:
        return f"{np.dtype(record['config']['dtype']).name}blk"

    def open(self, context: InstanceContext) -> VersionedArray:
        return VersionedArray(context)

    def describe_key(self, ckey: str, suffix: str = "") -> Any:
        return K.parse_chunk_ckey(ckey)

    def after_merge(self, instance: Any, ctx: VersionCtx, touched: Sequence[str],
                    parents: Sequence[VersionCtx]) -> None:
        instance._after_merge(ctx, touched, parents)

    def merge_record(self, record: dict[str, Any], parents: Sequence[frozenset[int]],
                     vid: int) -> bool:
        """The shape at a merge node: elementwise max of the parents' shapes (when they
        differ)."""
        shapes = record.get("config", {}).get("shapes")
        if not shapes:
            return False
        seen = []
        for anc in parents:
            cands = [int(v) for v in shapes if int(v) in anc]
            if cands:
                seen.append(shapes[str(max(cands))])
        if len(seen) > 1 and any(s != seen[0] for s in seen):
            shapes[str(vid)] = [max(d) for d in zip(*seen, strict=True)]
            return True
        return False


register_datatype(ArrayType)
