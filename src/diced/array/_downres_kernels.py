"""numba kernels for 2x downsampling; called only by :mod:`diced.array.downres`.

Every kernel halves the three axes of ``src`` into a preallocated ``out`` of shape
``ceil(n / 2)``. A 2x2x2 group at an odd edge holds only the voxels that exist, so its
voxel count ``n`` is 1, 2, 4 or 8, always a power of two (used for exact integer means).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_NB = {"cache": True, "nogil": True}


@njit(**_NB)
def _vote(vals, n):
    """Most frequent non-zero value among ``vals[:n]``; ties go to the smallest; 0 if none."""
    best = vals[0]
    bestc = 0
    for i in range(n):
        v = vals[i]
        if v == 0:
            continue
        seen = False
        for j in range(i):
            if vals[j] == v:
                seen = True
                break
        if seen:
            continue
        c = 1
        for j in range(i + 1, n):
            if vals[j] == v:
                c += 1
        if c > bestc or (c == bestc and v < best):
            best = v
            bestc = c
    return best


@njit(**_NB)
def downsample_labels(src, out):
    """Majority of non-zero labels per 2x2x2 group (DVID ``downresArray``) into ``out``.

    ``src`` must be C-contiguous; ``out`` may be any 3-d view of shape ``ceil(src.shape / 2)``.
    """
    nz, ny, nx = src.shape
    onz, ony, onx = out.shape
    s = src.ravel()
    sy = nx
    sz = nx * ny
    fx = nx // 2  # groups complete along x
    vals = np.empty(8, dtype=src.dtype)
    for oz in range(onz):
        z0 = 2 * oz
        z1 = min(z0 + 2, nz)
        for oy in range(ony):
            y0 = 2 * oy
            y1 = min(y0 + 2, ny)
            if z1 - z0 == 2 and y1 - y0 == 2:
                base = z0 * sz + y0 * sy
                for ox in range(fx):
                    i = base + 2 * ox
                    a = s[i]
                    b = s[i + 1]
                    c = s[i + sy]
                    d = s[i + sy + 1]
                    e = s[i + sz]
                    f = s[i + sz + 1]
                    g = s[i + sz + sy]
                    h = s[i + sz + sy + 1]
                    if a == b and a == c and a == d and a == e and a == f and a == g and a == h:
                        out[oz, oy, ox] = a
                        continue
                    vals[0] = a
                    vals[1] = b
                    vals[2] = c
                    vals[3] = d
                    vals[4] = e
                    vals[5] = f
                    vals[6] = g
                    vals[7] = h
                    out[oz, oy, ox] = _vote(vals, 8)
                first = fx
            else:
                first = 0
            for ox in range(first, onx):  # groups cut short by an odd edge
                x0 = 2 * ox
                x1 = min(x0 + 2, nx)
                n = 0
                for z in range(z0, z1):
                    for y in range(y0, y1):
                        for x in range(x0, x1):
                            vals[n] = s[z * sz + y * sy + x]
                            n += 1
                out[oz, oy, ox] = _vote(vals, n)


@njit(**_NB)
def _log2_small(n):
    if n == 8:
        return 3
    if n == 4:
        return 2
    if n == 2:
        return 1
    return 0


@njit(**_NB)
def downsample_int_narrow(src, out):
    """Floor of the group mean for integer dtypes of at most 32 bits (int64 accumulator)."""
    nz, ny, nx = src.shape
    onz, ony, onx = out.shape
    s = src.ravel()
    sy = nx
    sz = nx * ny
    fx = nx // 2
    for oz in range(onz):
        z0 = 2 * oz
        z1 = min(z0 + 2, nz)
        for oy in range(ony):
            y0 = 2 * oy
            y1 = min(y0 + 2, ny)
            first = 0
            if z1 - z0 == 2 and y1 - y0 == 2:
                base = z0 * sz + y0 * sy
                for ox in range(fx):
                    i = base + 2 * ox
                    acc = np.int64(s[i]) + s[i + 1] + s[i + sy] + s[i + sy + 1]
                    acc += np.int64(s[i + sz]) + s[i + sz + 1] + s[i + sz + sy] + s[i + sz + sy + 1]
                    out[oz, oy, ox] = acc >> 3  # arithmetic shift: floor division by 8
                first = fx
            for ox in range(first, onx):  # groups cut short by an odd edge
                x0 = 2 * ox
                x1 = min(x0 + 2, nx)
                acc = np.int64(0)
                for z in range(z0, z1):
                    for y in range(y0, y1):
                        for x in range(x0, x1):
                            acc += s[z * sz + y * sy + x]
                out[oz, oy, ox] = acc >> _log2_small((z1 - z0) * (y1 - y0) * (x1 - x0))


@njit(**_NB)
def downsample_uint64(src, out):
    """Floor of the group mean for uint64 without overflow.

    ``floor(sum(v) / 2**k) = sum(v >> k) + (sum(v & (2**k - 1)) >> k)``, where the first sum
    cannot exceed the largest input and the second is at most 56.
    """
    nz, ny, nx = src.shape
    onz, ony, onx = out.shape
    s = src.ravel()
    sy = nx
    sz = nx * ny
    fx = nx // 2
    for oz in range(onz):
        z0 = 2 * oz
        z1 = min(z0 + 2, nz)
        for oy in range(ony):
            y0 = 2 * oy
            y1 = min(y0 + 2, ny)
            first = 0
            if z1 - z0 == 2 and y1 - y0 == 2:
                base = z0 * sz + y0 * sy
                for ox in range(fx):
                    i = base + 2 * ox
                    q = np.uint64(0)
                    r = np.uint64(0)
                    for j in (
                        i,
                        i + 1,
                        i + sy,
                        i + sy + 1,
                        i + sz,
                        i + sz + 1,
                        i + sz + sy,
                        i + sz + sy + 1,
                    ):
                        v = s[j]
                        q += v >> np.uint64(3)
                        r += v & np.uint64(7)
                    out[oz, oy, ox] = q + (r >> np.uint64(3))
                first = fx
            for ox in range(first, onx):  # groups cut short by an odd edge
                x0 = 2 * ox
                x1 = min(x0 + 2, nx)
                k = np.uint64(_log2_small((z1 - z0) * (y1 - y0) * (x1 - x0)))
                low = (np.uint64(1) << k) - np.uint64(1)
                q = np.uint64(0)
                r = np.uint64(0)
                for z in range(z0, z1):
                    for y in range(y0, y1):
                        for x in range(x0, x1):
                            v = s[z * sz + y * sy + x]
                            q += v >> k
                            r += v & low
                out[oz, oy, ox] = q + (r >> k)


@njit(**_NB)
def downsample_float(src, out):
    """Plain mean of each group, accumulated in float64 in z, y, x order."""
    nz, ny, nx = src.shape
    onz, ony, onx = out.shape
    s = src.ravel()
    sy = nx
    sz = nx * ny
    fx = nx // 2
    for oz in range(onz):
        z0 = 2 * oz
        z1 = min(z0 + 2, nz)
        for oy in range(ony):
            y0 = 2 * oy
            y1 = min(y0 + 2, ny)
            first = 0
            if z1 - z0 == 2 and y1 - y0 == 2:
                base = z0 * sz + y0 * sy
                for ox in range(fx):
                    i = base + 2 * ox
                    acc = 0.0
                    acc += s[i]
                    acc += s[i + 1]
                    acc += s[i + sy]
                    acc += s[i + sy + 1]
                    acc += s[i + sz]
                    acc += s[i + sz + 1]
                    acc += s[i + sz + sy]
                    acc += s[i + sz + sy + 1]
                    out[oz, oy, ox] = acc / 8.0
                first = fx
            for ox in range(first, onx):  # groups cut short by an odd edge
                x0 = 2 * ox
                x1 = min(x0 + 2, nx)
                acc = 0.0
                for z in range(z0, z1):
                    for y in range(y0, y1):
                        for x in range(x0, x1):
                            acc += s[z * sz + y * sy + x]
                out[oz, oy, ox] = acc / ((z1 - z0) * (y1 - y0) * (x1 - x0))


@njit(**_NB)
def solid_value(src):
    """Return ``(True, v)`` if every voxel of ``src`` equals ``v``, else ``(False, first)``."""
    flat = src.ravel()
    v = flat[0]
    for i in range(1, flat.size):
        if flat[i] != v:
            return False, v
    return True, v
