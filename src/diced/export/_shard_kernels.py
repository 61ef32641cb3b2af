"""numba kernels for neuroglancer sharding math and DVID label-list handling.

Private: only :mod:`diced.export.sharding` and :mod:`diced.export.arrow_shards` call these,
after validating shapes and dtypes. Every kernel works on whole arrays of blocks at once.
Importing this module imports numba, so callers import it lazily.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_ONE = np.uint64(1)
_ZERO = np.uint64(0)
_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True, nogil=True)
def compressed_morton_codes(coords: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Compressed Morton code (neuroglancer chunk id) of each row of ``coords``.

    Parameters
    ----------
    coords : ndarray of int64, shape (n, 3)
        Chunk coordinates in x, y, z order; each must fit in ``bits`` of its dimension.
    bits : ndarray of int64, shape (3,)
        Bits per dimension; their sum must be at most 64.

    Returns
    -------
    ndarray of uint64, shape (n,)
        For i = 0, 1, ... and dims x, y, z in turn, bit i of a coordinate is copied to the
        next output bit (filled from the LSB) while i is below that dimension's bit count.
    """
    n = coords.shape[0]
    out = np.empty(n, np.uint64)
    maxbits = 0
    for d in range(3):
        maxbits = max(maxbits, bits[d])
    for k in range(n):
        code = _ZERO
        j = np.uint64(0)
        for i in range(maxbits):
            for d in range(3):
                if i < bits[d]:
                    bit = (np.uint64(coords[k, d]) >> np.uint64(i)) & _ONE
                    code |= bit << j
                    j += _ONE
        out[k] = code
    return out


@njit(cache=True, nogil=True)
def shard_and_minishard(
    codes: np.ndarray, preshift_bits: int, minishard_bits: int, shard_bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shard and minishard numbers of chunk ids under the identity hash.

    ``h = code >> preshift``; ``minishard = h & (2**minishard_bits - 1)``;
    ``shard = (h >> minishard_bits) & (2**shard_bits - 1)``. Shifts of 64 or more give 0.
    """
    n = codes.shape[0]
    shard = np.empty(n, np.uint64)
    minishard = np.empty(n, np.uint64)
    mini_mask = _ALL_ONES if minishard_bits >= 64 else (_ONE << np.uint64(minishard_bits)) - _ONE
    shard_mask = _ALL_ONES if shard_bits >= 64 else (_ONE << np.uint64(shard_bits)) - _ONE
    for k in range(n):
        h = _ZERO if preshift_bits >= 64 else codes[k] >> np.uint64(preshift_bits)
        minishard[k] = h & mini_mask
        rest = _ZERO if minishard_bits >= 64 else h >> np.uint64(minishard_bits)
        shard[k] = rest & shard_mask
    return shard, minishard


@njit(cache=True, nogil=True)
def sort_and_group(codes: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Sort blocks by chunk id and split the sorted order into runs of equal ``keys``.

    Parameters
    ----------
    codes : ndarray of uint64, shape (n,)
        Sort key (the compressed Morton code); ties keep input order.
    keys : ndarray of uint64, shape (n,)
        Group key (the shard); must be non-decreasing along the sorted ``codes``.

    Returns
    -------
    order : ndarray of int64, shape (n,)
        Permutation that sorts ``codes``.
    starts : ndarray of int64, shape (g + 1,)
        Group g is ``order[starts[g]:starts[g + 1]]``.
    status : int
        0 if fine, 1 if two blocks share a chunk id, 2 if ``keys`` decrease along the order.
    """
    n = codes.shape[0]
    order = np.argsort(codes, kind="mergesort")
    starts = np.empty(n + 1, np.int64)
    g = 0
    status = 0
    if n > 0:
        starts[0] = 0
        g = 1
    for i in range(1, n):
        a = order[i - 1]
        b = order[i]
        if codes[a] == codes[b]:
            status = 1
        if keys[b] != keys[a]:
            if keys[b] < keys[a]:
                status = 2
            starts[g] = i
            g += 1
    starts[g] = n
    return order, starts[: g + 1].copy(), status


@njit(cache=True, nogil=True)
def map_sorted(values: np.ndarray, keys: np.ndarray, mapped: np.ndarray) -> np.ndarray:
    """Map ``values`` through a sorted ``keys -> mapped`` table; unknown values map to themselves.

    ``keys`` must be sorted ascending and have the same length as ``mapped``.
    """
    n = values.shape[0]
    out = np.empty(n, np.uint64)
    m = keys.shape[0]
    if m == 0:
        out[:] = values
        return out
    idx = np.searchsorted(keys, values)
    for k in range(n):
        i = idx[k]
        if i < m and keys[i] == values[k]:
            out[k] = mapped[i]
        else:
            out[k] = values[k]
    return out


@njit(cache=True, nogil=True)
def segments_nonzero(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """For each segment ``values[offsets[i]:offsets[i + 1]]``, whether any entry is non-zero."""
    n = offsets.shape[0] - 1
    out = np.zeros(n, np.bool_)
    for i in range(n):
        for k in range(offsets[i], offsets[i + 1]):
            if values[k] != 0:
                out[i] = True
                break
    return out
