"""ROI block spans (DVID's ``[z, y, x0, x1]`` RLE, ``x1`` inclusive) as numpy arrays, and
everything computed from them without I/O: normal form, set operations, point queries, box
masks and DVID's ``partition``.

A span array is an ``(n, 4)`` int64 array of ``[z, y, x0, x1]`` rows in *block* coordinates.
Its normal form (:func:`normalize`) is sorted by ``(z, y, x0)`` with overlapping and touching
spans of a row merged, so two ROIs covering the same blocks have equal normal forms.

All set operations run as one vectorised sweep: every span becomes a ``+1`` event at ``x0``
and a ``-1`` event just past ``x1`` on a single axis that lays rows end to end (a row's key
times ``2**33`` plus the biased x), the coverage of each operand is a cumulative sum, and the
result keeps the segments where the operation's predicate holds.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from diced.errors import InvalidArgumentError

__all__ = [
    "as_spans",
    "block_mask",
    "contains_blocks",
    "contains_points",
    "difference",
    "from_block_mask",
    "intersection",
    "normalize",
    "partition",
    "union",
]

_I32 = (-(1 << 31), (1 << 31) - 1)
_XBIAS = 1 << 31  # x + bias >= 0, < 2**32 (one more for x1 + 1)
_ROW = 1 << 33  # spacing of rows on the sweep axis


def as_spans(spans: Any) -> np.ndarray:
    """Validate spans (``[[z, y, x0, x1], ...]``, any integer array-like) into an ``(n, 4)``
    int64 array (not normalised).

    Raises
    ------
    InvalidArgumentError
        Not ``n`` rows of 4 integers, a coordinate outside int32, or ``x1 < x0`` (as DVID).
    """
    if isinstance(spans, np.ndarray) and spans.dtype.kind in "iu" and spans.ndim == 2 \
            and spans.shape[1] == 4:
        arr = spans.astype(np.int64, copy=False)
    else:
        try:
            rows = [[operator.index(v) for v in row] for row in spans]
            flags = [any(isinstance(v, (bool, np.bool_)) for v in row) for row in spans]
        except TypeError:
            raise InvalidArgumentError(
                "ROI spans are a list of [z, y, x0, x1] integer rows") from None
        if any(len(r) != 4 for r in rows) or any(flags):
            raise InvalidArgumentError("every ROI span is [z, y, x0, x1] (four integers)")
        try:
            arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
        except OverflowError:
            raise InvalidArgumentError("ROI span coordinates must fit in int32") from None
    if arr.size and (arr.min() < _I32[0] or arr.max() > _I32[1]):
        raise InvalidArgumentError("ROI span coordinates must fit in int32")
    bad = np.nonzero(arr[:, 3] < arr[:, 2])[0]
    if len(bad):
        raise InvalidArgumentError(f"ROI span {arr[bad[0]].tolist()} has x1 < x0")
    return arr


def _zy_key(zy: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 key of ``(z, y)`` rows (int32 coordinates)."""
    z = (zy[:, 0] + _XBIAS).astype(np.uint64)
    y = (zy[:, 1] + _XBIAS).astype(np.uint64)
    return (z << np.uint64(32)) | y


def _row_keys(spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense row ids of ``spans`` and the sorted unique row keys (:func:`_zy_key`)."""
    rows, inv = np.unique(_zy_key(spans[:, :2]), return_inverse=True)
    return inv.reshape(-1).astype(np.int64), rows


def _unkey(rows: np.ndarray) -> np.ndarray:
    """``(z, y)`` of row keys."""
    z = (rows >> np.uint64(32)).astype(np.int64) - _XBIAS
    y = (rows & np.uint64(0xFFFFFFFF)).astype(np.int64) - _XBIAS
    return np.stack([z, y], axis=1)


def _sweep(operands: Sequence[np.ndarray], keep: Callable[..., np.ndarray]) -> np.ndarray:
    """Normal-form spans where ``keep(covered_0, covered_1, ...)`` holds."""
    nonempty = [s for s in operands if len(s)]
    if not nonempty:
        return np.zeros((0, 4), np.int64)
    allspans = np.concatenate(nonempty)
    _, rows = _row_keys(allspans)
    keys, deltas, which = [], [], []
    for i, s in enumerate(operands):
        if not len(s):
            continue
        rid = _rows_lookup(rows, s[:, :2])
        base = rid * _ROW
        keys += [base + s[:, 2] + _XBIAS, base + s[:, 3] + 1 + _XBIAS]
        deltas += [np.ones(len(s), np.int64), -np.ones(len(s), np.int64)]
        which += [np.full(2 * len(s), i, np.int64)]
    key = np.concatenate(keys)
    delta = np.concatenate(deltas)
    op = np.concatenate(which)
    order = np.argsort(key, kind="stable")
    key, delta, op = key[order], delta[order], op[order]
    covered = []
    for i in range(len(operands)):
        counts = np.cumsum(np.where(op == i, delta, 0))
        covered.append(counts > 0)
    # state after the last event at each distinct key
    last = np.r_[key[1:] != key[:-1], True]
    key = key[last]
    state = keep(*[c[last] for c in covered])
    # segments [key[j], key[j+1]) where the state holds
    if not len(key):
        return np.zeros((0, 4), np.int64)
    change = np.diff(np.r_[False, state].astype(np.int8))
    starts = key[np.nonzero(change == 1)[0]]
    ends_idx = np.nonzero(change == -1)[0]
    ends = key[ends_idx]  # exclusive; state is false after the final event (all closed)
    rid = starts // _ROW
    out = np.empty((len(starts), 4), np.int64)
    out[:, :2] = _unkey(rows[rid])
    out[:, 2] = starts - rid * _ROW - _XBIAS
    out[:, 3] = ends - rid * _ROW - _XBIAS - 1
    return out


def _rows_lookup(rows: np.ndarray, zy: np.ndarray) -> np.ndarray:
    """Index of each ``(z, y)`` of ``zy`` in the sorted unique row keys ``rows`` (-1 when
    absent)."""
    if not len(rows):
        return np.full(len(zy), -1, np.int64)
    qk = _zy_key(zy)
    idx = np.searchsorted(rows, qk)
    idx_c = np.minimum(idx, len(rows) - 1)
    return np.where(rows[idx_c] == qk, idx_c, -1).astype(np.int64)


def normalize(spans: Any) -> np.ndarray:
    """The normal form: sorted by ``(z, y, x0)``, overlapping and touching spans merged."""
    s = as_spans(spans)
    return _sweep([s], lambda a: a)


def union(a: Any, b: Any) -> np.ndarray:
    """Blocks in ``a`` or ``b`` (normal form)."""
    return _sweep([as_spans(a), as_spans(b)], np.logical_or)


def intersection(a: Any, b: Any) -> np.ndarray:
    """Blocks in both ``a`` and ``b`` (normal form)."""
    return _sweep([as_spans(a), as_spans(b)], np.logical_and)


def difference(a: Any, b: Any) -> np.ndarray:
    """Blocks in ``a`` and not in ``b`` (normal form)."""
    return _sweep([as_spans(a), as_spans(b)], lambda x, y: x & ~y)


def contains_blocks(spans: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Whether each block ``(z, y, x)`` of ``blocks`` (``(n, 3)`` int64) lies in a span of
    the normal-form ``spans``; vectorised (one sort of the spans' rows, binary searches)."""
    out = np.zeros(len(blocks), dtype=bool)
    if not len(spans) or not len(blocks):
        return out
    rid_s, rows = _row_keys(spans)
    skey = rid_s * _ROW + spans[:, 2] + _XBIAS
    order = np.argsort(skey, kind="stable")
    skey, x1 = skey[order], spans[order, 3]
    rid_q = _rows_lookup(rows, blocks[:, :2])
    hit = rid_q >= 0
    qkey = rid_q[hit] * _ROW + blocks[hit, 2] + _XBIAS
    i = np.searchsorted(skey, qkey, side="right") - 1
    ok = i >= 0
    ic = np.maximum(i, 0)
    ok &= (skey[ic] // _ROW) == rid_q[hit]
    ok &= blocks[hit, 2] <= x1[ic]
    out[hit] = ok
    return out


#: batches of at least this many points use the threaded kernel
_PARALLEL = 100_000
#: largest dense row table (rows of the spans' bounding z x y range) the kernel path uses
_DENSE_ROWS = 1 << 24


def contains_points(spans: np.ndarray, points: np.ndarray, block_size: Sequence[int]
                    ) -> np.ndarray:
    """Whether each voxel ``(x, y, z)`` of ``points`` (``(n, 3)`` int64) lies in a block of
    the normal-form ``spans`` (blocks of ``block_size`` = ``(x, y, z)`` voxels).

    Uses a numba kernel over a dense table of the spans' rows when that table is small
    (fewer than 2**24 rows between the lowest and highest ``(z, y)``), otherwise the numpy
    path of :func:`contains_blocks`."""
    out = np.zeros(len(points), dtype=bool)
    if not len(spans) or not len(points):
        return out
    bx, by, bz = (int(b) for b in block_size)
    zmin, zmax = int(spans[:, 0].min()), int(spans[:, 0].max())
    ymin, ymax = int(spans[:, 1].min()), int(spans[:, 1].max())
    nz, ny = zmax - zmin + 1, ymax - ymin + 1
    if nz * ny > _DENSE_ROWS:
        blocks = np.stack([points[:, 2] // bz, points[:, 1] // by, points[:, 0] // bx], axis=1)
        return contains_blocks(spans, blocks)
    from diced.datatypes.roi import _roi_kernels as KK

    kernel = KK.points_in_rows_parallel if len(points) >= _PARALLEL else KK.points_in_rows
    row = (spans[:, 0] - zmin) * ny + (spans[:, 1] - ymin)  # nondecreasing (normal form)
    row_start = np.searchsorted(row, np.arange(nz * ny + 1))
    kernel(np.ascontiguousarray(points, dtype=np.int64), bx, by, bz, zmin, ymin, nz, ny,
           row_start.astype(np.int64), np.ascontiguousarray(spans[:, 2]),
           np.ascontiguousarray(spans[:, 3]), out)
    return out


def block_mask(spans: np.ndarray, blo: Sequence[int], bhi: Sequence[int]) -> np.ndarray:
    """Boolean ``(nz, ny, nx)`` mask of the blocks ``blo <= (z, y, x) < bhi`` covered by the
    normal-form ``spans``."""
    shape = tuple(int(h - low) for low, h in zip(blo, bhi, strict=True))
    if any(n <= 0 for n in shape):
        return np.zeros(tuple(max(n, 0) for n in shape), bool)
    s = spans
    sel = ((s[:, 0] >= blo[0]) & (s[:, 0] < bhi[0]) & (s[:, 1] >= blo[1]) & (s[:, 1] < bhi[1])
           & (s[:, 3] >= blo[2]) & (s[:, 2] < bhi[2]))
    s = s[sel]
    edges = np.zeros((shape[0], shape[1], shape[2] + 1), np.int32)
    if len(s):
        z = s[:, 0] - blo[0]
        y = s[:, 1] - blo[1]
        x0 = np.maximum(s[:, 2], blo[2]) - blo[2]
        x1 = np.minimum(s[:, 3], bhi[2] - 1) - blo[2] + 1
        np.add.at(edges, (z, y, x0), 1)
        np.add.at(edges, (z, y, x1), -1)
    return np.cumsum(edges, axis=2)[:, :, :-1] > 0


def from_block_mask(mask: Any, offset: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Normal-form spans of a boolean ``(z, y, x)`` block mask whose index 0 is block
    ``offset`` (``(z, y, x)``); the inverse of :func:`block_mask`."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise InvalidArgumentError(f"a block mask is 3-d (z, y, x), got {m.ndim}-d")
    oz, oy, ox = (int(o) for o in offset)
    pad = np.zeros(m.shape[:2] + (m.shape[2] + 2,), np.int8)
    pad[:, :, 1:-1] = m
    d = np.diff(pad, axis=2)
    zs, ys, x0 = np.nonzero(d == 1)
    _, _, x1 = np.nonzero(d == -1)  # same (z, y, x) order: one end per start
    out = np.stack([zs + oz, ys + oy, x0 + ox, x1 - 1 + ox], axis=1).astype(np.int64)
    return as_spans(out) if len(out) else np.zeros((0, 4), np.int64)


def _pad(lo: int, hi: int, batch: int) -> tuple[int, int]:
    """DVID's centring of a range (inclusive ``lo..hi``): grow by ``(n % batch)`` split
    half before, half after (``addSubvolumesGrid``)."""
    left = (hi - lo + 1) % batch
    before = left // 2
    return lo - before, hi + (left - before)


def partition(spans: np.ndarray, batchsize: int, block_size: Sequence[int]) -> dict[str, Any]:
    """DVID's ``partition?batchsize=N`` answer (``SimplePartition``) for normal-form spans.

    Z is cut into layers of ``batchsize`` blocks starting at ``MinZ - (dz % N) // 2``; in each
    layer the rows of subvolumes along Y, and in each such row the subvolumes along X, are
    centred on the active blocks as DVID does; a subvolume is listed when it holds an active
    block. ``block_size`` is ``(x, y, z)``.

    Returns
    -------
    dict
        ``{"NumTotalBlocks", "NumActiveBlocks", "NumSubvolumes", "ROI": {"MinChunk",
        "MaxChunk"}, "Subvolumes": [{"MinPoint", "MaxPoint", "MinChunk", "MaxChunk",
        "TotalBlocks", "ActiveBlocks"}]}``, points ``[x, y, z]`` (``MaxPoint`` inclusive).
    """
    n = int(batchsize)
    bx, by, bz = (int(b) for b in block_size)
    out: dict[str, Any] = {"NumTotalBlocks": 0, "NumActiveBlocks": 0, "NumSubvolumes": 0,
                           "ROI": {"MinChunk": [0, 0, 0], "MaxChunk": [0, 0, 0]},
                           "Subvolumes": []}
    if not len(spans):
        return out
    zmin, zmax = int(spans[:, 0].min()), int(spans[:, 0].max())
    out["ROI"] = {"MinChunk": [int(spans[:, 2].min()), int(spans[:, 1].min()), zmin],
                  "MaxChunk": [int(spans[:, 3].max()), int(spans[:, 1].max()), zmax]}
    # DVID subtracts half of dz % N (not of the padding) before the first layer
    z_begin = zmin - ((zmax - zmin + 1) % n) // 2
    layer_of = (spans[:, 0] - z_begin) // n
    subs = out["Subvolumes"]
    for layer in np.unique(layer_of).tolist():
        lz0 = z_begin + layer * n
        lz1 = lz0 + n - 1
        ls = spans[layer_of == layer]
        ybeg, yend = _pad(int(ls[:, 1].min()), int(ls[:, 1].max()), n)
        for y0 in range(ybeg, yend + 1, n):
            y1 = y0 + n - 1
            act = ls[(ls[:, 1] >= y0) & (ls[:, 1] <= y1)]
            if not len(act):
                continue
            xbeg, xend = _pad(int(act[:, 2].min()), int(act[:, 3].max()), n)
            for x0 in range(xbeg, xend + 1, n):
                x1 = x0 + n - 1
                lo = np.maximum(act[:, 2], x0)
                hi = np.minimum(act[:, 3], x1)
                active = int(np.maximum(hi - lo + 1, 0).sum())
                total = n * n * (lz1 - lz0 + 1)
                if active:
                    subs.append({
                        "MinPoint": [x0 * bx, y0 * by, lz0 * bz],
                        "MaxPoint": [(x1 + 1) * bx - 1, (y1 + 1) * by - 1, (lz1 + 1) * bz - 1],
                        "MinChunk": [x0, y0, lz0], "MaxChunk": [x1, y1, lz1],
                        "TotalBlocks": total, "ActiveBlocks": active})
                out["NumActiveBlocks"] += active
                out["NumTotalBlocks"] += total
    out["NumSubvolumes"] = len(subs)
    return out
