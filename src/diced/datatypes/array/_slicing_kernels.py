"""numba kernels of :mod:`diced.datatypes.array.slicing` (oblique planes through chunks).

A plane is ``h x w`` samples; sample ``(i, j)`` sits at ``c + (i - (h-1)/2) du + (j - (w-1)/2) dv``
in voxel coordinates (z, y, x; voxel ``k`` is centred at ``k``). Nearest sampling takes voxel
``floor(p + 0.5)`` per axis; trilinear takes ``floor(p)`` and ``floor(p) + 1`` weighted by the
fraction, skipping a neighbour whose weight is exactly 0 (so an axis-aligned plane on integer
coordinates needs one chunk layer, not two). Voxels outside the array count as ``fill``
(scipy's ``mode="grid-constant"``).

Chunks are named by a linear id inside the plane's chunk bounding box ``lo + [0, dims)``;
``chunk_ids`` lists the ids the samples need, ``sample_*`` read them from a stack of decoded
chunks through ``slots`` (sorted ids -> slot in the stack, ``-1``: stored as nothing (fill),
``-2``: in another group of chunks, skipped in this pass).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["chunk_ids", "sample_linear", "sample_nearest"]


@njit(cache=True, nogil=True)
def _pos(center, du, dv, h, w, i, j, ax):
    return center[ax] + (i - (h - 1) * 0.5) * du[ax] + (j - (w - 1) * 0.5) * dv[ax]


@njit(cache=True, nogil=True)
def _find(ids, key):
    """Index of ``key`` in sorted ``ids`` (``-1`` if absent)."""
    lo, hi = 0, ids.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if ids[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    if lo < ids.shape[0] and ids[lo] == key:
        return lo
    return -1


@njit(cache=True, nogil=True)
def _neighbours(p, n, linear, idx, wts):
    """Voxel indices (inside ``0..n-1`` or not) and weights one axis contributes; count."""
    if linear:
        k0 = np.floor(p)
        f = p - k0
        k = np.int64(k0)
        if f == 0.0:
            idx[0] = k
            wts[0] = 1.0
            return 1
        idx[0] = k
        wts[0] = 1.0 - f
        idx[1] = k + 1
        wts[1] = f
        return 2
    idx[0] = np.int64(np.floor(p + 0.5))
    wts[0] = 1.0
    return 1


@njit(cache=True, nogil=True)
def chunk_ids(center, du, dv, h, w, shape, chunks, lo, dims, linear, out, i0, i1):
    """Write the linear ids of the chunks the samples of rows ``i0:i1`` read into ``out``;
    return the count (``-1`` if ``out`` is too small). Ids repeat at most a few times (the
    previous id and a small cache of the last ids written drop most repeats); the caller
    sorts and dedupes."""
    iz = np.empty(2, np.int64)
    iy = np.empty(2, np.int64)
    ix = np.empty(2, np.int64)
    wz = np.empty(2, np.float64)
    wy = np.empty(2, np.float64)
    wx = np.empty(2, np.float64)
    recent = np.full(16, -1, np.int64)
    r = 0
    count = 0
    prev = -1
    cap = out.shape[0]
    for i in range(i0, i1):
        for j in range(w):
            nz = _neighbours(_pos(center, du, dv, h, w, i, j, 0), shape[0], linear, iz, wz)
            ny = _neighbours(_pos(center, du, dv, h, w, i, j, 1), shape[1], linear, iy, wy)
            nx = _neighbours(_pos(center, du, dv, h, w, i, j, 2), shape[2], linear, ix, wx)
            for a in range(nz):
                if iz[a] < 0 or iz[a] >= shape[0]:
                    continue
                cz = iz[a] // chunks[0] - lo[0]
                for b in range(ny):
                    if iy[b] < 0 or iy[b] >= shape[1]:
                        continue
                    cy = iy[b] // chunks[1] - lo[1]
                    for c in range(nx):
                        if ix[c] < 0 or ix[c] >= shape[2]:
                            continue
                        cx = ix[c] // chunks[2] - lo[2]
                        cid = (cz * dims[1] + cy) * dims[2] + cx
                        if cid == prev:
                            continue
                        prev = cid
                        seen = False
                        for q in range(16):
                            if recent[q] == cid:
                                seen = True
                                break
                        if seen:
                            continue
                        if count >= cap:
                            return -1
                        out[count] = cid
                        count += 1
                        recent[r] = cid
                        r = (r + 1) & 15
    return count


@njit(cache=True, nogil=True)
def _slot(ids, slots, cid, last):
    """Slot of chunk ``cid`` (``last`` caches the previous lookup: [cid, slot])."""
    if last[0] == cid:
        return last[1]
    k = _find(ids, cid)
    s = slots[k] if k >= 0 else -1
    last[0] = cid
    last[1] = s
    return s


@njit(cache=True, nogil=True)
def sample_nearest(center, du, dv, h, w, shape, chunks, lo, dims, ids, slots, data, out, hit,
                   i0, i1):
    """Nearest-neighbour samples of rows ``i0:i1`` from the chunks of this group into ``out``;
    ``hit[i, j] = 1`` where the value came from a stored chunk (the rest keep their value:
    the fill)."""
    last = np.full(2, -3, np.int64)
    for i in range(i0, i1):
        pz = _pos(center, du, dv, h, w, i, 0, 0) + 0.5
        py = _pos(center, du, dv, h, w, i, 0, 1) + 0.5
        px = _pos(center, du, dv, h, w, i, 0, 2) + 0.5
        for j in range(w):
            z = np.int64(np.floor(pz + j * dv[0]))
            y = np.int64(np.floor(py + j * dv[1]))
            x = np.int64(np.floor(px + j * dv[2]))
            if z < 0 or z >= shape[0] or y < 0 or y >= shape[1] or x < 0 or x >= shape[2]:
                continue
            cz, cy, cx = z // chunks[0], y // chunks[1], x // chunks[2]
            cid = ((cz - lo[0]) * dims[1] + (cy - lo[1])) * dims[2] + (cx - lo[2])
            s = _slot(ids, slots, cid, last)
            if s >= 0:
                out[i, j] = data[s, z - cz * chunks[0], y - cy * chunks[1], x - cx * chunks[2]]
                hit[i, j] = 1


@njit(cache=True, nogil=True)
def sample_linear(center, du, dv, h, w, shape, chunks, lo, dims, ids, slots, data, fill,
                  first, acc, i0, i1):
    """Add to ``acc`` (rows ``i0:i1``) the trilinear contributions of the voxels in this
    group's chunks; with ``first``, also those of voxels outside the array or in absent
    chunks (``fill``). Samples whose 8 neighbours lie in one chunk (most of them) take a
    fast path with one chunk lookup."""
    iz = np.empty(2, np.int64)
    iy = np.empty(2, np.int64)
    ix = np.empty(2, np.int64)
    wz = np.empty(2, np.float64)
    wy = np.empty(2, np.float64)
    wx = np.empty(2, np.float64)
    last = np.full(2, -3, np.int64)
    for i in range(i0, i1):
        qz = _pos(center, du, dv, h, w, i, 0, 0)
        qy = _pos(center, du, dv, h, w, i, 0, 1)
        qx = _pos(center, du, dv, h, w, i, 0, 2)
        for j in range(w):
            pz, py, px = qz + j * dv[0], qy + j * dv[1], qx + j * dv[2]
            fz, fy, fx = np.floor(pz), np.floor(py), np.floor(px)
            z, y, x = np.int64(fz), np.int64(fy), np.int64(fx)
            if 0 <= z and z + 1 < shape[0] and 0 <= y and y + 1 < shape[1] and 0 <= x \
                    and x + 1 < shape[2]:
                cz, cy, cx = z // chunks[0], y // chunks[1], x // chunks[2]
                lz, ly, lx = z - cz * chunks[0], y - cy * chunks[1], x - cx * chunks[2]
                if lz + 1 < chunks[0] and ly + 1 < chunks[1] and lx + 1 < chunks[2]:
                    cid = ((cz - lo[0]) * dims[1] + (cy - lo[1])) * dims[2] + (cx - lo[2])
                    s = _slot(ids, slots, cid, last)
                    if s == -2 or (s == -1 and not first):
                        continue
                    tz, ty, tx = pz - fz, py - fy, px - fx
                    if s == -1:
                        acc[i, j] += fill
                        continue
                    d = data[s]
                    c00 = d[lz, ly, lx] * (1.0 - tx) + d[lz, ly, lx + 1] * tx
                    c01 = d[lz, ly + 1, lx] * (1.0 - tx) + d[lz, ly + 1, lx + 1] * tx
                    c10 = d[lz + 1, ly, lx] * (1.0 - tx) + d[lz + 1, ly, lx + 1] * tx
                    c11 = d[lz + 1, ly + 1, lx] * (1.0 - tx) + d[lz + 1, ly + 1, lx + 1] * tx
                    acc[i, j] += ((c00 * (1.0 - ty) + c01 * ty) * (1.0 - tz)
                                  + (c10 * (1.0 - ty) + c11 * ty) * tz)
                    continue
            nz = _neighbours(pz, shape[0], True, iz, wz)
            ny = _neighbours(py, shape[1], True, iy, wy)
            nx = _neighbours(px, shape[2], True, ix, wx)
            total = acc[i, j]
            for a in range(nz):
                z = iz[a]
                zin = z >= 0 and z < shape[0]
                for b in range(ny):
                    y = iy[b]
                    yin = y >= 0 and y < shape[1]
                    for c in range(nx):
                        x = ix[c]
                        wt = wz[a] * wy[b] * wx[c]
                        if not (zin and yin and x >= 0 and x < shape[2]):
                            if first:
                                total += wt * fill
                            continue
                        cz, cy, cx = z // chunks[0], y // chunks[1], x // chunks[2]
                        cid = ((cz - lo[0]) * dims[1] + (cy - lo[1])) * dims[2] + (cx - lo[2])
                        s = _slot(ids, slots, cid, last)
                        if s >= 0:
                            total += wt * data[s, z - cz * chunks[0], y - cy * chunks[1],
                                               x - cx * chunks[2]]
                        elif s == -1 and first:
                            total += wt * fill
            acc[i, j] = total
