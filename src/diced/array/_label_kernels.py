"""numba kernels for per-block label statistics; called only by :mod:`diced.array.labelstats`.

Label blocks are mostly runs of one label along x, so the lookup kernels remember the last
value they saw and only do real work (hashing, binary search) when the value changes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_NB = {"cache": True, "nogil": True}
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier
_CACHE_BITS = 7  # lookup cache of 128 recent labels


@njit(**_NB)
def label_counts(flat, bits):
    """Unique values of non-empty 1-d ``flat`` (sorted) and their counts.

    Runs of equal values are counted first, then added to an open-addressing hash table of
    ``2**bits`` slots (Fibonacci hashing, linear probing), with the slot of the last label
    cached. Returns ``(ok, labels, counts)``; ``ok`` is False, with empty arrays, when more
    than ``2**(bits-1)`` distinct values occur (the caller then falls back to sorting).
    """
    size = 1 << bits
    mask = size - 1
    limit = size >> 1
    shift = np.uint64(64 - bits)
    keys = np.empty(size, dtype=flat.dtype)
    counts = np.zeros(size, dtype=np.int64)
    used = np.zeros(size, dtype=np.bool_)
    nuniq = 0
    n = flat.shape[0]
    prev = flat[0]
    start = 0
    last_key = prev
    last_slot = -1
    for i in range(1, n + 1):
        if i < n:
            v = flat[i]
            if v == prev:
                continue
        else:
            v = prev
        run = i - start  # the run of ``prev`` ends here
        if last_slot >= 0 and last_key == prev:
            counts[last_slot] += run
        else:
            h = np.int64((np.uint64(prev) * _GOLDEN) >> shift)
            while used[h] and keys[h] != prev:
                h = (h + 1) & mask
            if used[h]:
                counts[h] += run
            else:
                if nuniq == limit:
                    return False, keys[:0], counts[:0]
                used[h] = True
                keys[h] = prev
                counts[h] = run
                nuniq += 1
            last_key = prev
            last_slot = h
        prev = v
        start = i
    ukeys = np.empty(nuniq, dtype=flat.dtype)
    ucounts = np.empty(nuniq, dtype=np.int64)
    k = 0
    for j in range(size):
        if used[j]:
            ukeys[k] = keys[j]
            ucounts[k] = counts[j]
            k += 1
    order = np.argsort(ukeys)
    return True, ukeys[order], ucounts[order]


@njit(**_NB)
def label_bbox(block, label, out):
    """Inclusive bounding box of ``label`` in a C-contiguous 3-d block into ``out``.

    ``out`` receives (zmin, ymin, xmin, zmax, ymax, xmax); returns False if ``label`` is absent.
    """
    nz, ny, nx = block.shape
    flat = block.ravel()
    found = False
    zmin = ymin = xmin = np.int64(0)
    zmax = ymax = xmax = np.int64(-1)
    i = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if flat[i + x] == label:
                    if not found:
                        found = True
                        zmin = z
                        ymin = y
                        xmin = x
                        zmax = z
                        ymax = y
                        xmax = x
                    else:
                        ymin = min(ymin, y)
                        xmin = min(xmin, x)
                        zmax = z
                        ymax = max(ymax, y)
                        xmax = max(xmax, x)
            i += nx
    out[0] = zmin
    out[1] = ymin
    out[2] = xmin
    out[3] = zmax
    out[4] = ymax
    out[5] = xmax
    return found


@njit(**_NB)
def _search(sorted_keys, v):
    """Index of ``v`` in ``sorted_keys`` (ascending), or -1."""
    lo = 0
    hi = sorted_keys.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_keys[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    if lo < sorted_keys.shape[0] and sorted_keys[lo] == v:
        return lo
    return -1


@njit(**_NB)
def mask_of_labels(flat, sorted_labels, out):
    """``out[i] = flat[i] in sorted_labels`` for non-empty 1-d ``flat`` and ``out``.

    On a change of value the answer comes from a small direct-mapped cache of recent values,
    else from a binary search.
    """
    ckeys = np.empty(1 << _CACHE_BITS, dtype=flat.dtype)
    chits = np.zeros(1 << _CACHE_BITS, dtype=np.bool_)
    cused = np.zeros(1 << _CACHE_BITS, dtype=np.bool_)
    shift = np.uint64(64 - _CACHE_BITS)
    prev = flat[0]
    hit = _search(sorted_labels, prev) >= 0
    for i in range(flat.shape[0]):
        v = flat[i]
        if v != prev:
            prev = v
            h = np.int64((np.uint64(v) * _GOLDEN) >> shift)
            if cused[h] and ckeys[h] == v:
                hit = chits[h]
            else:
                hit = _search(sorted_labels, v) >= 0
                cused[h] = True
                ckeys[h] = v
                chits[h] = hit
        out[i] = hit


@njit(**_NB)
def relabel(flat, sorted_keys, values, out):
    """``out[i] = values[j]`` where ``flat[i] == sorted_keys[j]``, else ``flat[i]``.

    ``flat`` is non-empty and 1-d; ``out`` may be ``flat`` itself (in-place relabelling).
    Lookups on a change of value go through the same cache as :func:`mask_of_labels`.
    """
    ckeys = np.empty(1 << _CACHE_BITS, dtype=flat.dtype)
    cvals = np.empty(1 << _CACHE_BITS, dtype=flat.dtype)
    cused = np.zeros(1 << _CACHE_BITS, dtype=np.bool_)
    shift = np.uint64(64 - _CACHE_BITS)
    prev = flat[0]
    j = _search(sorted_keys, prev)
    new = values[j] if j >= 0 else prev
    for i in range(flat.shape[0]):
        v = flat[i]
        if v != prev:
            prev = v
            h = np.int64((np.uint64(v) * _GOLDEN) >> shift)
            if cused[h] and ckeys[h] == v:
                new = cvals[h]
            else:
                j = _search(sorted_keys, v)
                new = values[j] if j >= 0 else v
                cused[h] = True
                ckeys[h] = v
                cvals[h] = new
        out[i] = new
