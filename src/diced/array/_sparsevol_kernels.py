"""numba kernels for run-length sparse volumes; called only by :mod:`diced.array.sparsevol`.

Runs are ``int32 (n, 4)`` rows ``[x, y, z, length]`` along +X.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_NB = {"cache": True, "nogil": True}


@njit(**_NB)
def count_runs(mask):
    """Number of maximal runs of True along x in a C-contiguous bool (nz, ny, nx) mask."""
    nz, ny, nx = mask.shape
    m = mask.ravel()
    n = 0
    i = 0
    for _ in range(nz * ny):
        prev = False
        for x in range(nx):
            v = m[i + x]
            if v and not prev:
                n += 1
            prev = v
        i += nx
    return n


@njit(**_NB)
def fill_runs(mask, z0, y0, x0, runs):
    """Write the runs of ``mask`` (offset by z0, y0, x0) into ``runs`` in z, y, x order."""
    nz, ny, nx = mask.shape
    m = mask.ravel()
    k = 0
    i = 0
    for z in range(nz):
        for y in range(ny):
            x = 0
            while x < nx:
                if m[i + x]:
                    start = x
                    while x < nx and m[i + x]:
                        x += 1
                    runs[k, 0] = x0 + start
                    runs[k, 1] = y0 + y
                    runs[k, 2] = z0 + z
                    runs[k, 3] = x - start
                    k += 1
                else:
                    x += 1
            i += nx
    return k


@njit(**_NB)
def paint_runs(runs, z0, y0, x0, mask):
    """Set the voxels of ``runs`` inside the box at (z0, y0, x0) of ``mask``; clip the rest."""
    nz, ny, nx = mask.shape
    for r in range(runs.shape[0]):
        z = np.int64(runs[r, 2]) - z0
        y = np.int64(runs[r, 1]) - y0
        if z < 0 or z >= nz or y < 0 or y >= ny:
            continue
        xa = np.int64(runs[r, 0]) - x0
        xb = xa + runs[r, 3]
        xa = max(xa, 0)
        xb = min(xb, nx)
        for x in range(xa, xb):
            mask[z, y, x] = True


@njit(**_NB)
def expand_runs(runs, total, out):
    """Write the (z, y, x) coordinates of every voxel of ``runs`` into ``out`` (total rows)."""
    k = 0
    for r in range(runs.shape[0]):
        x = runs[r, 0]
        y = runs[r, 1]
        z = runs[r, 2]
        for j in range(runs[r, 3]):
            out[k, 0] = z
            out[k, 1] = y
            out[k, 2] = x + j
            k += 1
    return k


@njit(**_NB)
def merge_sorted_runs(runs, out):
    """Merge touching or overlapping runs of the same row; ``runs`` sorted by (z, y, x).

    Zero-length runs are dropped. Returns the number of rows written to ``out``.
    """
    k = -1
    for r in range(runs.shape[0]):
        length = np.int64(runs[r, 3])
        if length <= 0:
            continue
        x = np.int64(runs[r, 0])
        y = runs[r, 1]
        z = runs[r, 2]
        if k >= 0 and out[k, 2] == z and out[k, 1] == y and x <= np.int64(out[k, 0]) + out[k, 3]:
            end = max(np.int64(out[k, 0]) + out[k, 3], x + length)
            out[k, 3] = end - out[k, 0]
        else:
            k += 1
            out[k, 0] = x
            out[k, 1] = y
            out[k, 2] = z
            out[k, 3] = length
    return k + 1


@njit(**_NB)
def decode_binary_block(buf, pos, gz, gy, gx, out):
    """Parse one mixed block's sub-block flags and masks from ``buf[pos:]`` into ``out``.

    ``out`` is a zeroed bool (8*gz, 8*gy, 8*gx) array. Returns the position after the block,
    ``-1`` if the bytes end early, or ``-2 - flag`` for an unknown sub-block flag.
    """
    n = buf.shape[0]
    for sz in range(gz):
        for sy in range(gy):
            for sx in range(gx):
                if pos >= n:
                    return -1
                flag = buf[pos]
                pos += 1
                if flag == 0:
                    continue
                if flag == 1:
                    for z in range(8):
                        for y in range(8):
                            for x in range(8):
                                out[sz * 8 + z, sy * 8 + y, sx * 8 + x] = True
                elif flag == 2:
                    if pos + 64 > n:
                        return -1
                    for k in range(512):
                        if (buf[pos + (k >> 3)] >> (k & 7)) & 1:
                            out[sz * 8 + (k >> 6), sy * 8 + ((k >> 3) & 7), sx * 8 + (k & 7)] = True
                    pos += 64
                else:
                    return -2 - np.int64(flag)
    return pos
