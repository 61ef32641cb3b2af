"""numba kernels for the label contact graph; called only by
:mod:`diced.datatypes.labelgraph.adjacency`.

A contact is a pair of face-adjacent voxels (along z, y or x) holding two different nonzero
labels; an edge's area is its number of contacts. Runs of one pair along x are common (two
labels meeting over a surface), so each kernel counts a run of identical pairs first and
touches the hash table once per run.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.typed import Dict

_NB = {"cache": True, "nogil": True}

PAIR = types.UniTuple(types.uint64, 2)


def new_table() -> Dict:
    """An empty ``(a, b) -> area`` table (``a < b``)."""
    return Dict.empty(key_type=PAIR, value_type=types.int64)


@njit(**_NB)
def _add(table, a, b, n):
    if a > b:
        a, b = b, a
    key = (a, b)
    table[key] = table.get(key, 0) + n


@njit(**_NB)
def count_block(vol, nz, ny, nx, table):
    """Add the contacts of ``vol`` whose lower voxel lies in ``vol[:nz, :ny, :nx]`` (the
    block proper; the rest of ``vol`` is a one-voxel border of the next blocks) to
    ``table``. The neighbour of ``(z, y, x)`` along an axis is the voxel one further along
    it, when inside ``vol``. One pass over the voxels, a pending run per axis."""
    dz, dy, dx = vol.shape
    zero = vol.dtype.type(0)
    # pending runs: labels and lengths, per axis (z, y, x)
    ra = np.zeros(3, dtype=vol.dtype)
    rb = np.zeros(3, dtype=vol.dtype)
    run = np.zeros(3, dtype=np.int64)
    for z in range(nz):
        has_z = z + 1 < dz
        for y in range(ny):
            has_y = y + 1 < dy
            for x in range(nx):
                a = vol[z, y, x]
                if a == zero:
                    continue
                for axis in range(3):
                    if axis == 0:
                        if not has_z:
                            continue
                        b = vol[z + 1, y, x]
                    elif axis == 1:
                        if not has_y:
                            continue
                        b = vol[z, y + 1, x]
                    else:
                        if x + 1 >= dx:
                            continue
                        b = vol[z, y, x + 1]
                    if a == b or b == zero:
                        continue
                    if run[axis] and a == ra[axis] and b == rb[axis]:
                        run[axis] += 1
                        continue
                    if run[axis]:
                        _add(table, np.uint64(ra[axis]), np.uint64(rb[axis]), run[axis])
                    ra[axis] = a
                    rb[axis] = b
                    run[axis] = 1
    for axis in range(3):
        if run[axis]:
            _add(table, np.uint64(ra[axis]), np.uint64(rb[axis]), run[axis])


@njit(**_NB)
def count_planes(lower, upper, ny, nx, table):
    """Add the z contacts between two consecutive planes (``lower[y, x]`` below
    ``upper[y, x]``) for ``y < ny``, ``x < nx``."""
    zero = lower.dtype.type(0)
    for y in range(ny):
        ra = zero
        rb = zero
        run = 0
        for x in range(nx):
            a = lower[y, x]
            b = upper[y, x]
            if a == b or a == zero or b == zero:
                continue
            if run and a == ra and b == rb:
                run += 1
                continue
            if run:
                _add(table, np.uint64(ra), np.uint64(rb), run)
            ra = a
            rb = b
            run = 1
        if run:
            _add(table, np.uint64(ra), np.uint64(rb), run)


@njit(**_NB)
def table_arrays(table):
    """``(edges (n, 2) uint64, areas (n,) int64)`` of a table, in table order."""
    n = len(table)
    edges = np.empty((n, 2), dtype=np.uint64)
    areas = np.empty(n, dtype=np.int64)
    for i, (key, v) in enumerate(table.items()):
        edges[i, 0] = key[0]
        edges[i, 1] = key[1]
        areas[i] = v
    return edges, areas
