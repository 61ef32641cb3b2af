"""Chunk-grid arithmetic and array configuration checks (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from diced.errors import DtypeError, InvalidArgumentError

__all__ = [
    "MAX_EXTENT",
    "cast_value",
    "check_chunks",
    "check_dtype",
    "check_shape",
    "default_chunks",
]

#: largest extent of one axis (chunk coordinates are stored as 32-bit numbers)
MAX_EXTENT = 1 << 40


def default_chunks(ndim: int) -> tuple[int, ...]:
    """64³ in 3D; 512² in 2D and 262144 in 1D (as DICED/DVID); 64³ on the last three axes
    (and 1 on the others) above 3D."""
    if ndim == 1:
        return (262144,)
    if ndim == 2:
        return (512, 512)
    return (1,) * (ndim - 3) + (64, 64, 64)


def check_dtype(dtype: Any) -> np.dtype:
    """A numeric numpy dtype from anything ``np.dtype`` (or an enum with ``.value``) takes.

    Parameters
    ----------
    dtype : dtype-like

    Returns
    -------
    numpy.dtype

    Raises
    ------
    DtypeError
        Not a dtype, or not numeric.
    """
    try:
        dt = np.dtype(dtype.value if hasattr(dtype, "value") and not isinstance(dtype, np.dtype)
                      else dtype)
    except TypeError as exc:
        raise DtypeError(f"not a dtype: {dtype!r}") from exc
    if dt.kind not in "biufc" or dt.fields is not None or dt.subdtype is not None:
        raise DtypeError(f"diced arrays hold numeric dtypes (bool, int, uint, float, complex); got {dt}")
    return dt.newbyteorder("<") if dt.byteorder == ">" else dt


def as_int(x: Any) -> int:
    """``x`` as an int, refusing values that are not integers (1.5, "2", True)."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{x!r} is not an integer")
    return int(x)


def check_shape(shape: Iterable[int]) -> tuple[int, ...]:
    """A validated array shape.

    Parameters
    ----------
    shape : sequence of int

    Returns
    -------
    tuple of int

    Raises
    ------
    InvalidArgumentError
        Not a non-empty sequence of non-negative integers.
    """
    try:
        out = tuple(as_int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"shape must be a sequence of integers, got {shape!r}") from exc
    if not out:
        raise InvalidArgumentError("arrays need at least one dimension")
    if any(s < 0 or s > MAX_EXTENT for s in out):
        raise InvalidArgumentError(f"every extent must be in 0..{MAX_EXTENT}, got {out}")
    return out


def check_chunks(chunks: Iterable[int] | None, ndim: int) -> tuple[int, ...]:
    """A validated chunk shape for an ``ndim``-D array (``None``: diced's default).

    Parameters
    ----------
    chunks : sequence of int or None
    ndim : int

    Returns
    -------
    tuple of int

    Raises
    ------
    InvalidArgumentError
        Wrong length or non-positive sides.
    """
    if chunks is None:
        return default_chunks(ndim)
    try:
        out = tuple(as_int(c) for c in chunks)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"chunks must be a sequence of integers, got {chunks!r}") from exc
    if len(out) != ndim:
        raise InvalidArgumentError(f"chunks {out} do not match {ndim} dimensions")
    if any(c <= 0 for c in out) or int(np.prod(out)) > (1 << 28):
        raise InvalidArgumentError(f"chunk sides must be positive and a chunk at most 2**28 items: {out}")
    return out


def cast_value(value: Any, dtype: np.dtype) -> np.ndarray:
    """``value`` as an array of ``dtype``, by one rule for scalars and arrays alike.

    numpy's ``same_kind`` casting, made value-safe:

    * bool values go anywhere; integers go into integer arrays, and into bool arrays,
      when every value fits (bool holds 0 and 1): out-of-range integers are refused instead
      of wrapping (``uint8 <- 256``, ``bool <- 5``);
    * integers and floats go into float arrays; anything numeric into complex arrays;
    * floats into integer or bool arrays and complex into real arrays are refused (even
      ``5.0``): cast explicitly with ``.astype()``.

    Python scalars count by their kind (``5`` is an integer, ``5.0`` a float), so ``a[0] = v``
    and ``a[0:1] = np.array([v])`` accept and refuse the same values.
    """
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            arr = _python_int(value, dtype)
        else:
            arr = np.asarray(value)
    except DtypeError:
        raise
    except Exception as exc:
        raise DtypeError(f"cannot convert {type(value).__name__} to an array: {exc}") from exc
    if arr.dtype == dtype:
        return arr
    src, dst = arr.dtype.kind, dtype.kind
    if src not in "biufc":  # "7" must not be parsed into 7
        raise DtypeError(f"cannot store values of dtype {arr.dtype} in an array of {dtype}")
    if src == "b" or (dst == "f" and src in "iuf") or dst == "c":
        return arr.astype(dtype)
    if src in "iu" and dst in "iub":
        if arr.size:
            lo, hi = (0, 1) if dst == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
            vmin, vmax = int(arr.min()), int(arr.max())
            if vmin < lo or vmax > hi:
                shown = f"value {vmin} does" if arr.ndim == 0 else f"values {vmin}..{vmax} do"
                raise DtypeError(f"{shown} not fit in {dtype}; cast explicitly with .astype()")
        return arr.astype(dtype)
    raise DtypeError(
        f"cannot store {arr.dtype} values in an array of {dtype} without losing information "
        "(floats into integer or bool arrays and complex into real arrays are refused); "
        "cast explicitly with .astype()")


def _python_int(value: int, dtype: np.dtype) -> np.ndarray:
    """A Python integer of any size as a 0-d array, range-checked for integer targets."""
    if dtype.kind in "iub":
        lo, hi = (0, 1) if dtype.kind == "b" else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
        if not lo <= value <= hi:
            raise DtypeError(f"value {value} does not fit in {dtype}; cast explicitly with .astype()")
        return np.asarray(value, dtype=np.uint64 if value > 0 else np.int64)
    try:
        return np.asarray(float(value) if dtype.kind == "f" else complex(value))
    except OverflowError as exc:
        raise DtypeError(f"value {value} does not fit in {dtype}") from exc


def chunk_origin(coords: Sequence[int], chunks: Sequence[int]) -> tuple[int, ...]:
    """Array index of the first element of the chunk at grid ``coords``.

    Parameters
    ----------
    coords : sequence of int
        Chunk grid coordinates.
    chunks : sequence of int
        Chunk shape.

    Returns
    -------
    tuple of int
    """
    return tuple(c * k for c, k in zip(coords, chunks, strict=True))
