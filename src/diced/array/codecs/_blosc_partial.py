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

from diced.errors import CorruptDataError

_LIB: Any = None
_TRIED = False
_LOCK = threading.Lock()


def _lib() -> Any:
    global _LIB, _TRIED
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
