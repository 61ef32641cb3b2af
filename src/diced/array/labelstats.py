"""Fast per-block label statistics and relabelling, for the label index and label arrays.

* :func:`block_label_counts`: sorted unique labels and voxel counts (like ``np.unique(...,
  return_counts=True)``, a few times faster on label blocks with up to 4096 labels);
* :func:`label_bbox_in_block`: inclusive bounding box of one label;
* :func:`mask_of_labels`: which voxels hold any of a set of labels;
* :func:`relabel` / :func:`relabel_inplace`: apply a sorted key -> value mapping, leaving
  other labels unchanged.

Blocks may have any integer dtype (normally uint64) and, except for the bounding box, any
shape. The kernels live in :mod:`diced.array._label_kernels`; importing this module imports
numba.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diced.array import _label_kernels as _k
from diced.errors import DtypeError, InvalidArgumentError, ShapeMismatchError

__all__ = [
    "block_label_counts",
    "label_bbox_in_block",
    "mask_of_labels",
    "relabel",
    "relabel_inplace",
]

_TABLE_BITS = (8, 13)  # hash tables tried in turn: up to 128, then 4096 distinct labels


def _as_label_block(block: np.ndarray) -> np.ndarray:
    arr = np.asarray(block)
    if arr.dtype.kind not in "ui":
        raise DtypeError(f"label blocks must have an integer dtype, got {arr.dtype}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


def _as_label_list(values: np.ndarray | Sequence[int], dtype: np.dtype, what: str) -> np.ndarray:
    """``values`` as a contiguous 1-d array of ``dtype``; every value must be representable."""
    if not isinstance(values, np.ndarray):  # a list may mix Python ints beyond int64
        objs = np.asarray(values, dtype=object)
        if objs.ndim != 1:
            raise InvalidArgumentError(f"{what} must be 1-d, got shape {objs.shape}")
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in objs):
            raise DtypeError(f"{what} must be integers")
        try:
            return np.array([int(v) for v in objs], dtype=dtype)
        except OverflowError as exc:
            raise InvalidArgumentError(
                f"{what} hold values outside the range of the block dtype {dtype}"
            ) from exc
    arr = values
    if arr.size == 0:
        return np.zeros(0, dtype=dtype)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{what} must be 1-d, got shape {arr.shape}")
    if arr.dtype.kind not in "ui":
        raise DtypeError(f"{what} must be integers, got dtype {arr.dtype}")
    if arr.dtype != dtype:
        info = np.iinfo(dtype)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < info.min or hi > info.max:
            raise InvalidArgumentError(
                f"{what} hold values outside the range of the block dtype {dtype}"
            )
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


def _check_sorted(keys: np.ndarray, what: str, *, unique: bool = True) -> None:
    if len(keys) < 2:
        return
    ok = keys[1:] > keys[:-1] if unique else keys[1:] >= keys[:-1]
    if not bool(np.all(ok)):
        extra = " without duplicates" if unique else ""
        raise InvalidArgumentError(f"{what} must be sorted ascending{extra}")


def block_label_counts(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique labels of a block and how many voxels hold each.

    Parameters
    ----------
    block
        Integer array of any shape (normally a uint64 64³ block).

    Returns
    -------
    labels, counts
        ``labels`` sorted ascending, in the block's dtype (0 included if present); ``counts``
        int64. Equal to ``np.unique(block, return_counts=True)``.
    """
    arr = _as_label_block(block)
    if arr.size == 0:
        return np.zeros(0, dtype=arr.dtype), np.zeros(0, dtype=np.int64)
    flat = arr.reshape(-1)
    for bits in _TABLE_BITS:
        ok, labels, counts = _k.label_counts(flat, bits)
        if ok:
            return labels, counts
    labels, counts = np.unique(flat, return_counts=True)  # thousands of labels: sort instead
    return labels, counts.astype(np.int64, copy=False)


def label_bbox_in_block(
    block: np.ndarray, label: int
) -> tuple[int, int, int, int, int, int] | None:
    """Inclusive bounding box of ``label`` in a 3-d block.

    Returns
    -------
    tuple or None
        ``(zmin, ymin, xmin, zmax, ymax, xmax)`` with inclusive maxima (the box is
        ``block[zmin:zmax+1, ymin:ymax+1, xmin:xmax+1]``), or None if ``label`` does not occur.
    """
    arr = _as_label_block(block)
    if arr.ndim != 3:
        raise InvalidArgumentError(f"block must be 3-d (z, y, x), got shape {arr.shape}")
    info = np.iinfo(arr.dtype)
    if not info.min <= int(label) <= info.max:
        return None
    if arr.size == 0:
        return None
    out = np.empty(6, dtype=np.int64)
    if not _k.label_bbox(arr, arr.dtype.type(int(label)), out):
        return None
    return tuple(int(v) for v in out)  # type: ignore[return-value]


def mask_of_labels(block: np.ndarray, sorted_labels: np.ndarray | Sequence[int]) -> np.ndarray:
    """Boolean array, True where the block holds one of ``sorted_labels``.

    Parameters
    ----------
    block
        Integer array of any shape.
    sorted_labels
        Labels sorted ascending (duplicates allowed), representable in the block's dtype.
    """
    arr = _as_label_block(block)
    labels = _as_label_list(sorted_labels, arr.dtype, "sorted_labels")
    _check_sorted(labels, "sorted_labels", unique=False)
    out = np.zeros(arr.shape, dtype=bool)
    if arr.size and labels.size:
        _k.mask_of_labels(arr.reshape(-1), labels, out.reshape(-1))
    return out


def _mapping(
    block_dtype: np.dtype,
    sorted_keys: np.ndarray | Sequence[int],
    values: np.ndarray | Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    keys = _as_label_list(sorted_keys, block_dtype, "sorted_keys")
    vals = _as_label_list(values, block_dtype, "values")
    if keys.shape != vals.shape:
        raise ShapeMismatchError(f"{len(keys)} keys but {len(vals)} values")
    _check_sorted(keys, "sorted_keys")
    return keys, vals


def relabel(
    block: np.ndarray, sorted_keys: np.ndarray | Sequence[int], values: np.ndarray | Sequence[int]
) -> np.ndarray:
    """A relabelled copy of ``block``: ``sorted_keys[i]`` becomes ``values[i]``.

    Parameters
    ----------
    block
        Integer array of any shape.
    sorted_keys
        Labels to replace, sorted ascending without duplicates.
    values
        New labels, one per key, representable in the block's dtype.

    Returns
    -------
    numpy.ndarray
        New array of the block's shape and dtype; labels not in ``sorted_keys`` are unchanged.
    """
    arr = _as_label_block(block)
    keys, vals = _mapping(arr.dtype, sorted_keys, values)
    out = np.empty_like(arr)
    if arr.size == 0:
        return out
    if keys.size == 0:
        out[...] = arr
        return out
    _k.relabel(arr.reshape(-1), keys, vals, out.reshape(-1))
    return out


def relabel_inplace(
    block: np.ndarray, sorted_keys: np.ndarray | Sequence[int], values: np.ndarray | Sequence[int]
) -> None:
    """Like :func:`relabel`, but overwrite ``block`` (a writable integer numpy array)."""
    if not isinstance(block, np.ndarray):
        raise InvalidArgumentError("relabel_inplace needs a numpy array")
    if block.dtype.kind not in "ui":
        raise DtypeError(f"label blocks must have an integer dtype, got {block.dtype}")
    if not block.flags.writeable:
        raise InvalidArgumentError("relabel_inplace needs a writable array")
    keys, vals = _mapping(block.dtype.newbyteorder("="), sorted_keys, values)
    if block.size == 0 or keys.size == 0:
        return
    if block.flags.c_contiguous and block.dtype.isnative:
        flat = block.reshape(-1)
        _k.relabel(flat, keys, vals, flat)
    else:
        block[...] = relabel(block, keys, vals)
