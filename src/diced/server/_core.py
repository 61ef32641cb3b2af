"""The few places the server reaches below diced's public label API, kept in one module.

Each function here wraps a private attribute of :class:`diced.datatypes.labels.LabelArray`
because the public API has no equivalent yet (listed in the server's report as wanted public
API): the stored DVID block bytes (to stream ``blocks`` without decoding and re-encoding every
block) and the supervoxel → body mapping table (for ``mappings`` and mapped block streams).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from diced.repo import keys as K

__all__ = ["mapping_table", "stored_block_bytes"]


def stored_block_bytes(view: Any, grid: Sequence[Sequence[int]]) -> list[bytes | None]:
    """DVID block serializations (outer codec removed) of a label array (or one of its scale
    views) at array grid coords (z, y, x); ``None`` where no block is stored."""
    ctx = view._ref.ctx()
    vals = view._space.read_many([K.chunk_ckey(tuple(int(c) for c in g)) for g in grid], ctx)
    codec = view.codec
    return [None if v is None else codec.decode_block_bytes(v, view.chunks) for v in vals]


def mapping_table(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(supervoxels, bodies)`` of every non-identity mapping at the array's version."""
    keys, values = arr._mapping_table(arr._ref.ctx())
    keep = keys != values
    keys, values = keys[keep], values[keep]
    order = np.argsort(keys, kind="stable")
    return keys[order], values[order]
