"""Partial decode of blosc2 chunks: only the internal blocks holding a range of items.

python-blosc2 has no binding for ``blosc2_getitem``; this calls it in the ``libblosc2``
shipped inside the ``blosc2`` wheel through ctypes (which releases the GIL during the call).
``blosc2_getitem`` uses a fresh context per call, so it is safe from several threads. A
C-ordered chunk's leading-axis rows ``[lo, hi)`` are one contiguous item range, so a read
that needs a few planes of a chunk decompresses only the blocks (32 KiB by default) holding
them. When the library cannot be loaded, :func:`decode_rows` returns ``False`` and the caller
decodes the whole chunk.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

import numpy as np

from diced.errors import CorruptDataError, InvalidArgumentError

_LIB: Any = None
_GETITEM: Any = None  # blosc2_getitem as a ctypes function object numba kernels can call
_TRIED = False
_LOCK = threading.Lock()


def _lib() -> Any:
    global _LIB, _GETITEM, _TRIED
    if _TRIED:
        return _LIB
    with _LOCK:
        if not _TRIED:
            try:
                import blosc2

                base = os.path.join(os.path.dirname(blosc2.__file__), "lib")
                name = next((n for n in ("libblosc2.so", "libblosc2.dylib", "blosc2.dll",
                                         "libblosc2.so.9") if os.path.exists(os.path.join(base, n))),
                            None)
                if name is not None:
                    lib = ctypes.CDLL(os.path.join(base, name))
                    fn = lib.blosc2_getitem
                    fn.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_void_p, ctypes.c_int32]
                    fn.restype = ctypes.c_int
                    lib.blosc2_init()
                    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int32,
                                             ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                             ctypes.c_int32)
                    _GETITEM = proto(ctypes.cast(fn, ctypes.c_void_p).value)
                    _LIB = lib
            except (OSError, AttributeError, ImportError):
                _LIB = None
            _TRIED = True
    return _LIB


def decode_rows(data: Any, out: np.ndarray, lo: int, hi: int) -> bool:
    """Decode rows ``lo:hi`` (leading axis) of blosc2 chunk ``data`` into the same rows of the
    C-contiguous, chunk-shaped ``out``. ``False`` (nothing written) when partial decoding is
    unavailable; raises :class:`~diced.errors.CorruptDataError` on a damaged chunk."""
    lib = _lib()
    if lib is None or not out.flags.c_contiguous or not 0 <= lo < hi <= out.shape[0]:
        return False
    src = np.frombuffer(data, dtype=np.uint8)
    row = out.nbytes // out.shape[0] // out.dtype.itemsize  # items per row
    nitems = (hi - lo) * row
    dest = out[lo:hi]
    n = lib.blosc2_getitem(src.ctypes.data, src.nbytes, lo * row, nitems, dest.ctypes.data,
                           dest.nbytes)
    if n != dest.nbytes:
        raise CorruptDataError(f"corrupt blosc2 chunk (partial decode returned {n})")
    return True


def decode_box(data: Any, lo: int, hi: int, box: np.ndarray, origin: np.ndarray,
               scratch: np.ndarray, out: np.ndarray) -> bool:
    """Decode rows ``lo:hi`` of blosc2 chunk ``data`` into the chunk-shaped, C-contiguous 3-d
    ``scratch`` and copy ``scratch[box]`` (``box`` = int64 ``[z0, z1, y0, y1, x0, x1]``) into
    the 3-d ``out`` at ``origin`` (int64 ``[z, y, x]``), in one numba call that releases
    the GIL (:mod:`diced.array.codecs._blosc_kernels`). ``False`` (nothing written) when the
    library is unavailable or numba does not compile the dtype (float16, big-endian);
    :class:`~diced.errors.CorruptDataError` on a damaged chunk;
    :class:`~diced.errors.InvalidArgumentError` when the rows, the box or its place in
    ``out`` do not fit (nothing written)."""
    dt = scratch.dtype
    if _lib() is None or out.dtype != dt or scratch.ndim != 3 or out.ndim != 3 \
            or not scratch.flags.c_contiguous or not dt.isnative \
            or not (dt.kind in "biu" or dt.char in "fdFD"):  # types numba compiles
        return False
    from diced.array.codecs._blosc_kernels import (
        ODD_TYPESIZE,
        OUT_OF_BOUNDS,
        WRONG_SIZE,
        decode_copy,
    )

    src = np.frombuffer(data, dtype=np.uint8)
    n = decode_copy(_GETITEM, ctypes.memmove, src, lo, hi, box, origin, scratch, out)
    if n == (hi - lo) * (scratch.nbytes // scratch.shape[0]):
        return True
    if n == ODD_TYPESIZE:
        return False
    if n == OUT_OF_BOUNDS:
        raise InvalidArgumentError(
            f"rows {lo}:{hi}, box {box.tolist()} at {origin.tolist()} do not fit a chunk of "
            f"shape {scratch.shape} and an output of shape {out.shape}")
    if n == WRONG_SIZE:
        raise CorruptDataError(f"blosc2 chunk does not hold {scratch.nbytes} bytes")
    raise CorruptDataError(f"corrupt blosc2 chunk (partial decode returned {n})")
