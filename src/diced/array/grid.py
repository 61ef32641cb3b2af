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
    """``value`` as an array of ``dtype``, refusing casts that would change values.

    Same-kind casts are allowed as in numpy (int64 -> int8 wraps only if a value is out of
    range, which is refused here); integer arrays of another signedness are accepted when
    every value fits; floats are not silently truncated to integers.
    """
    if isinstance(value, (bool, int, float, complex, np.generic)) or np.ndim(value) == 0:
        try:
            arr = np.asarray(value)
            if arr.dtype.kind not in "biufc":  # "7" must not be parsed into 7
                raise DtypeError(f"cannot store {value!r} ({arr.dtype}) in an array of {dtype}")
            if arr.dtype.kind in "iu" and dtype.kind in "iu":
                info = np.iinfo(dtype)
                if not info.min <= int(arr) <= info.max:
                    raise DtypeError(f"value {value!r} does not fit in {dtype}")
            if arr.dtype.kind in "fc" and dtype.kind in "iub" and not float(np.real(arr)).is_integer():
                raise DtypeError(f"cannot store {value!r} in an integer array of {dtype}")
            if arr.dtype.kind == "c" and dtype.kind != "c" and np.imag(arr) != 0:
                raise DtypeError(f"cannot store complex {value!r} in {dtype}")
            return np.asarray(np.real(arr) if dtype.kind != "c" else arr).astype(dtype)
        except (OverflowError, ValueError, TypeError) as exc:
            raise DtypeError(f"cannot store {value!r} in an array of {dtype}: {exc}") from exc
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise DtypeError(f"cannot convert {type(value).__name__} to an array: {exc}") from exc
    if arr.dtype == dtype:
        return arr
    if arr.dtype.kind not in "biufc":
        raise DtypeError(f"cannot store values of dtype {arr.dtype} in an array of {dtype}")
    if np.can_cast(arr.dtype, dtype, casting="same_kind") and not (
            arr.dtype.kind in "iu" and dtype.kind in "iu"):
        return arr.astype(dtype)
    if arr.dtype.kind in "biu" and dtype.kind in "iu":
        if arr.size:
            info = np.iinfo(dtype)
            lo, hi = arr.min(), arr.max()
            if lo < info.min or hi > info.max:
                raise DtypeError(
                    f"values {lo}..{hi} do not fit in {dtype}; cast explicitly with .astype()")
        return arr.astype(dtype)
    if arr.dtype.kind == "b" or np.can_cast(arr.dtype, dtype, casting="safe"):
        return arr.astype(dtype)
    raise DtypeError(
        f"cannot store {arr.dtype} values in an array of {dtype} without losing information; "
        "cast explicitly with .astype()")


def chunk_origin(coords: Sequence[int], chunks: Sequence[int]) -> tuple[int, ...]:
    return tuple(c * k for c, k in zip(coords, chunks, strict=True))
