"""2x downsampling of label and image blocks (DVID's multiscale rules, reference §7).

Each call halves every axis of a 3-d block (z, y, x); an odd axis of length ``n`` gives
``ceil(n / 2)``, the last group holding only the voxels that exist.

* Labels (:func:`downsample_labels`): per 2x2x2 group, the most frequent **non-zero** label
  wins, ties go to the numerically smallest label, and a group of zeros gives 0 (DVID
  ``downresArray``).
* Images (:func:`downsample_image`): the mean of the group, rounded down (floor) for integer
  dtypes, computed without overflow; the plain mean for floats.

A lores block at scale s+1 is built from up to 8 hires blocks at scale s, one per octant
``(z & 1) << 2 | (y & 1) << 1 | (x & 1)`` of the hires block coordinates
(:func:`downsample_labels_octants`, :func:`downsample_image_octants`), and updated in place of
only the touched octants by :func:`update_lores_block` (DVID's incremental rule).

The kernels live in :mod:`diced.array._downres_kernels`; importing this module imports numba.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from diced.array import _downres_kernels as _k
from diced.errors import DtypeError, InvalidArgumentError, ShapeMismatchError

__all__ = [
    "downsample_image",
    "downsample_image_octants",
    "downsample_labels",
    "downsample_labels_octants",
    "octant_index",
    "octant_slices",
    "update_lores_block",
]

_UINT64_SIGN = np.uint64(1 << 63)


def _as_native_3d(block: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(block, np.ndarray):
        block = np.asarray(block)
    if block.ndim != 3:
        raise InvalidArgumentError(f"{what} must be 3-d (z, y, x), got shape {block.shape}")
    if not block.dtype.isnative:
        block = block.astype(block.dtype.newbyteorder("="))
    return np.ascontiguousarray(block)


def _half_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return tuple((n + 1) // 2 for n in shape)  # type: ignore[return-value]


def _check_label_dtype(dtype: np.dtype) -> None:
    if dtype.kind not in "ui":
        raise DtypeError(f"label blocks must have an integer dtype, got {dtype}")


def _check_image_dtype(dtype: np.dtype) -> None:
    if dtype.kind not in "uifc":
        raise DtypeError(f"image blocks must have a numeric dtype, got {dtype}")
    if (dtype.kind == "f" and dtype.itemsize > 8) or (dtype.kind == "c" and dtype.itemsize > 16):
        raise DtypeError(f"extended-precision dtype {dtype} is not supported")


def _labels_into(src: np.ndarray, out: np.ndarray) -> None:
    if src.size:
        _k.downsample_labels(src, out)


def _image_into(src: np.ndarray, out: np.ndarray) -> None:
    """Downsample ``src`` (native, contiguous, numeric) into ``out`` of the same dtype."""
    if src.size == 0:
        return
    dt = src.dtype
    if dt.kind == "c":
        re = np.empty(out.shape, dtype=src.real.dtype)
        im = np.empty(out.shape, dtype=src.real.dtype)
        _image_into(np.ascontiguousarray(src.real), re)
        _image_into(np.ascontiguousarray(src.imag), im)
        out.real = re
        out.imag = im
    elif dt.kind == "f":
        if dt.itemsize < 4:  # numba has no float16: widen, and round the float64 mean once
            tmp = np.empty(out.shape, dtype=np.float64)
            _k.downsample_float(src.astype(np.float32), tmp)
            out[...] = tmp
        else:
            _k.downsample_float(src, out)
    elif dt.itemsize <= 4:
        _k.downsample_int_narrow(src, out)
    elif dt.kind == "u":
        _k.downsample_uint64(src, out)
    else:  # int64: shift to uint64 order-preservingly, floor-mean there, shift back
        tmp = np.empty(out.shape, dtype=np.uint64)
        _k.downsample_uint64(src.view(np.uint64) ^ _UINT64_SIGN, tmp)
        tmp ^= _UINT64_SIGN
        out[...] = tmp.view(np.int64)


def downsample_labels(block: np.ndarray) -> np.ndarray:
    """Halve every axis of a label block by majority vote of non-zero labels.

    Parameters
    ----------
    block
        3-d integer array (normally uint64) in z, y, x order; any size, odd sizes allowed.

    Returns
    -------
    numpy.ndarray
        Array of the same dtype and shape ``ceil(n / 2)`` per axis. Each voxel is the label
        with the most votes among the non-zero voxels of its 2x2x2 group (fewer voxels at odd
        edges); ties go to the numerically smallest label; a group of zeros gives 0.

    Raises
    ------
    InvalidArgumentError
        If ``block`` is not 3-d.
    DtypeError
        If the dtype is not an integer dtype.
    """
    src = _as_native_3d(block, "label block")
    _check_label_dtype(src.dtype)
    out = np.empty(_half_shape(src.shape), dtype=src.dtype)
    _labels_into(src, out)
    return out


def downsample_image(block: np.ndarray) -> np.ndarray:
    """Halve every axis of an image block by averaging each 2x2x2 group.

    Parameters
    ----------
    block
        3-d array of any integer, float or complex dtype, in z, y, x order.

    Returns
    -------
    numpy.ndarray
        Array of the same dtype and shape ``ceil(n / 2)`` per axis. Integer dtypes get the
        floor of the mean (towards minus infinity, also for signed values), computed exactly
        without overflow; floats get the mean accumulated in float64 (complex: per component).
        At odd edges the mean is over the voxels that exist.

    Raises
    ------
    InvalidArgumentError
        If ``block`` is not 3-d.
    DtypeError
        If the dtype is not numeric (bool, string, object, ...).
    """
    src = _as_native_3d(block, "image block")
    _check_image_dtype(src.dtype)
    out = np.empty(_half_shape(src.shape), dtype=src.dtype)
    _image_into(src, out)
    return out


def octant_index(z: int, y: int, x: int) -> int:
    """Octant of hires block (z, y, x) inside its lores parent: ``(z&1)<<2 | (y&1)<<1 | (x&1)``."""
    return (int(z) & 1) << 2 | (int(y) & 1) << 1 | (int(x) & 1)


def octant_slices(
    octant: int, block_shape: tuple[int, int, int] = (64, 64, 64)
) -> tuple[slice, slice, slice]:
    """The region (z, y, x slices) of a lores block that hires octant ``octant`` fills."""
    octant = _check_octant(octant)
    hz, hy, hx = (n // 2 for n in block_shape)
    oz, oy, ox = (octant >> 2) & 1, (octant >> 1) & 1, octant & 1
    return (
        slice(oz * hz, (oz + 1) * hz),
        slice(oy * hy, (oy + 1) * hy),
        slice(ox * hx, (ox + 1) * hx),
    )


def _check_octant(octant: object) -> int:
    if isinstance(octant, bool) or not isinstance(octant, (int, np.integer)) or not 0 <= octant < 8:
        raise InvalidArgumentError(f"octant index must be an int in 0..7, got {octant!r}")
    return int(octant)


def _check_block_shape(block_shape: tuple[int, ...]) -> tuple[int, int, int]:
    try:
        shape = tuple(int(n) for n in block_shape)
    except TypeError as exc:
        raise InvalidArgumentError(f"block_shape must be 3 ints, got {block_shape!r}") from exc
    if len(shape) != 3 or any(n <= 0 or n % 2 for n in shape):
        raise InvalidArgumentError(f"block_shape must be 3 positive even ints, got {block_shape!r}")
    return shape  # type: ignore[return-value]


def _fill_octants(
    out: np.ndarray,
    octants: Mapping[int, np.ndarray | None],
    block_shape: tuple[int, int, int],
    labels: bool,
) -> None:
    """Write each octant's downsampled block into its region of ``out``; None means zeros."""
    for octant, hires in octants.items():
        region = out[octant_slices(_check_octant(octant), block_shape)]
        if hires is None:
            region[...] = 0
            continue
        src = _as_native_3d(hires, f"octant {octant}")
        if src.shape != block_shape:
            raise ShapeMismatchError(
                f"octant {octant} has shape {src.shape}, expected block shape {block_shape}"
            )
        if src.dtype != out.dtype:
            raise DtypeError(f"octant {octant} has dtype {src.dtype}, expected {out.dtype}")
        if labels:
            solid, value = _k.solid_value(src)
            if solid:
                region[...] = value
                continue
            lo = np.empty(region.shape, dtype=out.dtype)
            _labels_into(src, lo)
        else:
            lo = np.empty(region.shape, dtype=out.dtype)
            _image_into(src, lo)
        region[...] = lo


def _octant_dtype(octants: Mapping[int, np.ndarray | None], dtype: object) -> np.dtype | None:
    if dtype is not None:
        return np.dtype(dtype)
    for hires in octants.values():
        if hires is not None:
            return np.asarray(hires).dtype.newbyteorder("=")
    return None


def downsample_labels_octants(
    octants: Mapping[int, np.ndarray | None],
    block_shape: tuple[int, int, int] = (64, 64, 64),
    dtype: np.dtype | type = np.uint64,
) -> np.ndarray:
    """Build one lores label block from up to 8 hires label blocks.

    Parameters
    ----------
    octants
        Map from octant index (``(z&1)<<2 | (y&1)<<1 | (x&1)`` of the hires block coordinates,
        see :func:`octant_index`) to a hires block of shape ``block_shape``. Missing octants and
        ``None`` values are all-zero blocks.
    block_shape
        Shape of hires and lores blocks (z, y, x); every axis even. Default 64³.
    dtype
        Label dtype of the result (default uint64); every given block must have it.

    Returns
    -------
    numpy.ndarray
        The lores block of shape ``block_shape``: octant ``o`` fills the half-size region
        :func:`octant_slices` ``(o)`` with :func:`downsample_labels` of its hires block. When
        every octant is solid with one label (missing octants being solid 0) the result is
        solid with that label, as in DVID.
    """
    block_shape = _check_block_shape(block_shape)
    dt = np.dtype(dtype)
    _check_label_dtype(dt)
    out = np.zeros(block_shape, dtype=dt)
    _fill_octants(out, octants, block_shape, labels=True)
    return out


def downsample_image_octants(
    octants: Mapping[int, np.ndarray | None],
    block_shape: tuple[int, int, int] = (64, 64, 64),
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Build one lores image block from up to 8 hires image blocks (missing octants are 0).

    Parameters
    ----------
    octants
        Map from octant index to a hires block of shape ``block_shape``, or ``None`` (zeros).
    block_shape
        Shape of hires and lores blocks (z, y, x); every axis even. Default 64³.
    dtype
        Dtype of the result; by default that of the first given block. Required when no
        block is given.

    Returns
    -------
    numpy.ndarray
        The lores block; each octant region holds :func:`downsample_image` of its hires block.
    """
    block_shape = _check_block_shape(block_shape)
    dt = _octant_dtype(octants, dtype)
    if dt is None:
        raise InvalidArgumentError("no octant block given: pass dtype= to build an all-zero block")
    _check_image_dtype(dt)
    out = np.zeros(block_shape, dtype=dt)
    _fill_octants(out, octants, block_shape, labels=False)
    return out


def update_lores_block(
    existing_lores: np.ndarray | None,
    touched_octants: Mapping[int, np.ndarray | None],
    *,
    method: Literal["labels", "image"] = "labels",
    block_shape: tuple[int, int, int] | None = None,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Recompute the touched octants of a lores block, keeping the rest (DVID ``downresOctant``).

    Parameters
    ----------
    existing_lores
        The stored lores block, or ``None`` if absent (then it starts as zeros).
    touched_octants
        Map from octant index to the new hires block of that octant (``None``: the hires block
        was deleted, i.e. all zero). Only these octants' regions are overwritten.
    method
        ``"labels"`` (majority of non-zero labels, default) or ``"image"`` (floor mean).
    block_shape
        Block shape; inferred from ``existing_lores`` or the touched blocks when omitted.
    dtype
        Result dtype when it cannot be inferred (no lores block and no hires block given).

    Returns
    -------
    numpy.ndarray
        A new lores block; ``existing_lores`` is not modified. When all 8 octants are touched
        the result equals a from-scratch :func:`downsample_labels_octants`.
    """
    if method not in ("labels", "image"):
        raise InvalidArgumentError(f"method must be 'labels' or 'image', got {method!r}")
    given = [np.asarray(b) for b in touched_octants.values() if b is not None]
    if existing_lores is not None:
        out = _as_native_3d(existing_lores, "existing lores block").copy()
        shape = out.shape
    else:
        if block_shape is not None:
            shape = tuple(block_shape)
        elif given:
            shape = given[0].shape
        else:
            shape = (64, 64, 64)
        dt = (
            np.dtype(dtype)
            if dtype is not None
            else (given[0].dtype.newbyteorder("=") if given else np.dtype(np.uint64))
        )
        out = np.zeros(_check_block_shape(shape), dtype=dt)
    shape = _check_block_shape(shape)
    if block_shape is not None and tuple(block_shape) != shape:
        raise ShapeMismatchError(
            f"existing lores block has shape {shape}, not {tuple(block_shape)}"
        )
    if method == "labels":
        _check_label_dtype(out.dtype)
    else:
        _check_image_dtype(out.dtype)
    _fill_octants(out, touched_octants, shape, labels=(method == "labels"))
    return out
