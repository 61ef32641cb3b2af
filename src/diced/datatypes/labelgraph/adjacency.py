"""The supervoxel contact graph of a label volume: which labels touch, and over how many
voxel faces (the contact area), counted along z, y and x.

:func:`contact_graph` works on a numpy array or on a diced label array (any version), which
it reads tile by tile: z slabs of the array's chunk height inside y/x tiles, each slab read
with a one-voxel border on its +y and +x sides and the last plane of the slab below carried
over, so contacts across chunk (and tile) borders are counted exactly once. Label 0 is
background and makes no contacts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from diced.errors import InvalidArgumentError

__all__ = ["contact_graph"]


def _box(shape: Sequence[int], box: Any) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    if box is None:
        return (0, 0, 0), tuple(int(s) for s in shape)  # type: ignore[return-value]
    try:
        (z0, y0, x0), (z1, y1, x1) = box
        lo = (int(z0), int(y0), int(x0))
        hi = (int(z1), int(y1), int(x1))
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"box is [[z0, y0, x0], [z1, y1, x1]], got {box!r}") from None
    if any(a < 0 or b < a or b > s for a, b, s in zip(lo, hi, shape, strict=True)):
        raise InvalidArgumentError(f"box {[list(lo), list(hi)]} is not inside shape {tuple(shape)}")
    return lo, hi


def _steps(lo: int, hi: int, step: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` cut at multiples of ``step``."""
    out = []
    while lo < hi:
        nxt = min(hi, (lo // step + 1) * step)
        out.append((lo, nxt))
        lo = nxt
    return out


def _finish(table: Any) -> tuple[np.ndarray, np.ndarray]:
    from diced.datatypes.labelgraph._labelgraph_kernels import table_arrays

    edges, areas = table_arrays(table)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    return edges[order], areas[order]


def contact_graph(source: Any, box: Any = None, *, supervoxels: bool = True,
                  tile: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Edges between face-adjacent labels and their contact areas.

    Parameters
    ----------
    source : numpy.ndarray or label array
        A 3-d ``(z, y, x)`` integer volume, or a diced (label) array read in tiles.
    box : [[z0, y0, x0], [z1, y1, x1]], optional
        Region of ``source`` (array indices, hi exclusive); default everything. Contacts
        with voxels outside the box are not counted.
    supervoxels : bool, default True
        For label arrays: the supervoxel graph (``False``: the body graph at the array's
        version).
    tile : int, default 512
        Side of the y/x tiles a label array is read in.

    Returns
    -------
    edges : numpy.ndarray of uint64, shape (n, 2)
        ``[a, b]`` with ``a < b``, sorted.
    areas : numpy.ndarray of int64, shape (n,)
        Number of voxel faces where ``a`` meets ``b``.
    """
    from diced.datatypes.labelgraph import _labelgraph_kernels as KK

    table = KK.new_table()
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.dtype.kind not in "iu":
            raise InvalidArgumentError(
                f"contact_graph needs a 3-d integer volume, got {source.ndim}-d {source.dtype}")
        lo, hi = _box(source.shape, box)
        vol = np.ascontiguousarray(source[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
        if vol.size:
            KK.count_block(vol, *vol.shape, table)
        return _finish(table)
    shape = getattr(source, "shape", None)
    if shape is None or len(shape) != 3 or not hasattr(source, "chunks"):
        raise InvalidArgumentError(
            f"contact_graph reads a numpy array or a 3-d diced array, got {type(source).__name__}")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise InvalidArgumentError(f"tile must be a positive integer, got {tile!r}")
    if np.dtype(source.dtype).kind not in "iu":
        raise InvalidArgumentError(f"contact_graph needs integer labels, got {source.dtype}")
    lo, hi = _box(shape, box)
    cz = int(source.chunks[0])
    is_labels = getattr(source, "typename", None) == "labels"

    def read(sel: tuple[slice, slice, slice]) -> np.ndarray:
        if is_labels:
            return np.ascontiguousarray(source.read(sel, supervoxels=supervoxels))
        return np.ascontiguousarray(source[sel])

    # tiles aligned to chunk multiples so a tile reads whole chunks (plus a border)
    ty = max(int(source.chunks[1]), tile // int(source.chunks[1]) * int(source.chunks[1]))
    tx = max(int(source.chunks[2]), tile // int(source.chunks[2]) * int(source.chunks[2]))
    for y0, y1 in _steps(lo[1], hi[1], ty):
        y1e = min(hi[1], y1 + 1)
        for x0, x1 in _steps(lo[2], hi[2], tx):
            x1e = min(hi[2], x1 + 1)
            below = None
            for z0, z1 in _steps(lo[0], hi[0], cz):
                vol = read((slice(z0, z1), slice(y0, y1e), slice(x0, x1e)))
                if below is not None:
                    KK.count_planes(below, vol[0], y1 - y0, x1 - x0, table)
                KK.count_block(vol, z1 - z0, y1 - y0, x1 - x0, table)
                below = np.ascontiguousarray(vol[-1])
    return _finish(table)
