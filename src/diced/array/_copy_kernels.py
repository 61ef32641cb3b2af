"""numba kernels copying boxes of decoded chunks into a read's result, row by row, without
the GIL: :func:`copy_boxes` (one box per row of a geometry table) and :func:`copy_grid`
(every chunk of a step-1 box selection over a regular chunk grid, the geometry computed
here).

A warm read (every chunk in the locked-chunk cache) is nothing but these copies. numpy's
strided assignment of a 64^3 uint8 chunk into a 256^3 result calls its inner loop once per
64-byte row, at about 19 ns a row; 64 such chunks took 4.3-4.6 ms on this VM. Calling
``memmove`` once per row took 1.7-3.1 ms; copying rows of whole 8-byte words in an inline
loop (which LLVM unrolls and vectorises) 1.2-1.5 ms, and 0.85-1.1 ms in two threads. Rows that are
not whole aligned words (an unaligned uint8 box) go to ``memcpy`` (LLVM's intrinsic, a call
of the C library's): there the inline byte loop was slower (20 unaligned 64^3 uint8 boxes:
0.5-0.7 ms calling the C library, 0.6-1.3 ms inline). Chunks and results never overlap.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def _words(typingctx, addr):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """An int64 address as a pointer to uint64 words."""
    sig = types.CPointer(types.uint64)(types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.uint64)))

    return sig, codegen


@intrinsic
def _memcpy(typingctx, dst, src, n):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """``memcpy(dst, src, n)`` of int64 addresses (LLVM's intrinsic: no function pointer
    passed in from Python, inlined for sizes known when compiling)."""
    sig = types.void(types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        d, s, size = args
        cgutils.raw_memcpy(builder, builder.inttoptr(d, cgutils.voidptr_t),
                           builder.inttoptr(s, cgutils.voidptr_t), size, 1)
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True, cache=True)
def _rows(s: int, s_z: int, s_y: int, d: int, d_z: int, d_y: int, nz: int,
          ny: int, w: int) -> None:  # pragma: no cover - numba
    """Copy ``nz * ny`` rows of ``w`` bytes from address ``s`` (rows ``s_y`` bytes apart,
    planes ``s_z``) to address ``d`` (rows ``d_y`` apart, planes ``d_z``)."""
    if w % 8 == 0 and (s | d | s_z | s_y | d_z | d_y) % 8 == 0:
        n = w // 8
        for z in range(nz):
            for y in range(ny):
                sp = _words(s + z * s_z + y * s_y)
                dp = _words(d + z * d_z + y * d_y)
                for x in range(n):
                    dp[x] = sp[x]
    else:
        for z in range(nz):
            for y in range(ny):
                _memcpy(d + z * d_z + y * d_y, s + z * s_z + y * s_y, w)


@njit(nogil=True, cache=True)
def copy_boxes(src: np.ndarray, geometry: np.ndarray, dst: int, d_z: int,
               d_y: int) -> None:  # pragma: no cover - numba
    """For each row ``i`` of ``geometry`` (int64 ``[s_z, s_y, nz, ny, width, d_off]``),
    copy ``nz * ny`` rows of ``width`` bytes from address ``src[i]`` (rows ``s_y`` bytes
    apart, planes ``s_z``) to address ``dst + d_off`` (rows ``d_y`` apart, planes ``d_z``).
    The caller checks that every box lies inside its source and inside the destination."""
    for i in range(src.shape[0]):
        s_z, s_y, nz, ny, w, off = geometry[i]
        _rows(src[i], s_z, s_y, dst + off, d_z, d_y, nz, ny, w)


@njit(nogil=True, cache=True)
def copy_grid(addrs: np.ndarray, q0: int, q1: int, geo: np.ndarray,
              dst: int) -> None:  # pragma: no cover - numba
    """Copy chunks ``q0 <= q < q1`` of a 3-d box into the box-shaped result at address
    ``dst``. ``geo`` (int64, 21: seven groups of one value per axis) holds: the box
    ``lo <= i < hi`` (``geo[0:3]``, ``geo[3:6]``); the first chunk index it meets and the
    number of chunks (``geo[6:9]``, ``geo[9:12]``); the chunk shape (``geo[12:15]``); the
    chunks' byte strides (``geo[15:18]``); the result's byte strides (``geo[18:21]``).
    Chunk ``q`` (C order over the box's chunks) is C-contiguous, at address ``addrs[q]``.
    The caller checks the shapes, so every row copied lies inside its chunk and inside the
    result."""
    n1, n2 = geo[10], geo[11]
    for q in range(q0, q1):
        s = addrs[q]
        d = dst
        nz = ny = nx = 0
        for a in range(3):
            k = q // (n1 * n2) if a == 0 else ((q // n2) % n1 if a == 1 else q % n2)
            c = geo[12 + a]
            base = (geo[6 + a] + k) * c
            a0 = max(geo[a], base)
            a1 = min(geo[3 + a], base + c)
            s += (a0 - base) * geo[15 + a]
            d += (a0 - geo[a]) * geo[18 + a]
            if a == 0:
                nz = a1 - a0
            elif a == 1:
                ny = a1 - a0
            else:
                nx = a1 - a0
        _rows(s, geo[15], geo[16], d, geo[18], geo[19], nz, ny, nx * geo[17])
