"""numba kernels copying boxes of decoded chunks into a read's result, row by row, without
the GIL: :func:`copy_boxes` (one box per row of a geometry table) and :func:`copy_grid`
(every chunk of a step-1 box selection over a regular chunk grid, the geometry computed
here).

A warm read (every chunk in the locked-chunk cache) is nothing but these copies. numpy's
strided assignment of a 64^3 uint8 chunk into a 256^3 result calls its inner loop once per
64-byte row, at about 19 ns a row; 64 such chunks took 4.3-4.6 ms on this VM. Calling
``memmove`` once per row took 1.7-3.1 ms; copying rows of whole 8-byte words in an inline
loop (which LLVM unrolls and vectorises) 1.2-1.5 ms, and 0.85-1.1 ms in two threads.
Rows of up to 64 bytes that are not whole aligned words (an unaligned uint8 box meets each
chunk in rows of about 32 bytes) are copied as two fixed-size moves that may overlap, the
way C libraries copy short ranges, but inline; longer ones call ``memcpy`` (LLVM's intrinsic,
a call of the C library's). For 20 unaligned 64^3 uint8 boxes (8,192 short rows each) the
kernel took 0.74-0.89 ms calling ``memcpy`` per row, 0.35-0.63 ms with the inline moves (an
inline byte loop had been slower than the calls). Chunks and results never overlap.

Results of :data:`~diced.array._readcache.STREAM_BYTES` and more are written with
non-temporal ("streaming") stores (``stream``): every whole 64-byte line of a row goes
straight to memory, where a plain store to a line that is not cached first reads it in
(and evicts the chunks being read to make room). Copying 64 cached 64^3 uint8 chunks into
a 256^3 result (rows of one line) took 2.1-3.3 ms in one thread with plain stores and
0.8-1.3 ms with streaming stores; a warm read of that region, in two threads, 1.5-2.4 ms
before and 1.0-1.4 ms after. Rotating over 8 results of 1-64 MiB (so none stays cached),
streaming was 1.7-5x faster, and summing each result after the copy did not make it
slower; at 256 KiB, where a result stays in the core's cache, it gained nothing and the sum
after it was 15 % slower, hence the threshold. The head and tail of a row that are not
whole aligned lines are copied with plain stores, so no line is written partly by
streaming stores (those go to memory as separate small writes). A kernel that streamed
ends with a fence, so its stores are visible before it returns.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

#: bytes of a cache line: the unit of a streaming store
LINE = 64


@intrinsic
def _pointer(typingctx, addr, kind):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """An int64 address as a pointer to ``kind`` (a numpy scalar type, such as
    ``np.uint64`` for words or ``np.uint8`` for bytes)."""
    if not isinstance(kind, types.NumberClass):
        return None
    ptr = types.CPointer(kind.instance_type)
    sig = ptr(types.int64, kind)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(ptr))

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


@intrinsic
def _stream_line(typingctx, dst, src):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """Copy one 64-byte line from int64 address ``src`` (any alignment) to ``dst`` (64-byte
    aligned) with a non-temporal store (LLVM's ``!nontemporal``: ``movnt*`` on x86-64;
    other targets lower it as they can, a plain store at worst)."""
    sig = types.void(types.int64, types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        d, s = args
        line = ir.VectorType(ir.IntType(64), LINE // 8)
        value = builder.load(builder.inttoptr(s, line.as_pointer()), align=1)
        store = builder.store(value, builder.inttoptr(d, line.as_pointer()), align=LINE)
        store.set_metadata("nontemporal",
                           builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _store_fence(typingctx):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """A full fence (``mfence`` on x86-64): orders the streaming stores before it, which
    are weakly ordered, before everything after it."""
    sig = types.void()

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True, cache=True, inline="always")
def _ends(d: int, s: int, w: int, n: int) -> None:  # pragma: no cover - numba
    """Copy the first and the last ``n <= w`` of ``w`` bytes (a constant ``n``: each
    ``memcpy`` of a constant size is emitted inline, no call)."""
    _memcpy(d, s, n)
    _memcpy(d + w - n, s + w - n, n)


@njit(nogil=True, cache=True, inline="always")
def _copy_short(d: int, s: int, w: int) -> None:  # pragma: no cover - numba
    """Copy ``1 <= w <= 64`` bytes from ``s`` to ``d`` as two fixed-size moves that may
    overlap."""
    if w >= 32:
        _ends(d, s, w, 32)
    elif w >= 16:
        _ends(d, s, w, 16)
    elif w >= 8:
        _ends(d, s, w, 8)
    elif w >= 4:
        _ends(d, s, w, 4)
    elif w >= 2:
        _ends(d, s, w, 2)
    else:
        _memcpy(d, s, 1)


@njit(nogil=True, cache=True, inline="always")
def _stream_row(d: int, s: int, w: int) -> None:  # pragma: no cover - numba
    """Copy ``w`` bytes from ``s`` to ``d``: the whole aligned lines of the destination
    with streaming stores, the head and tail before and after them with ``memcpy``."""
    head = (-d) & (LINE - 1)
    if head >= w or w - head < LINE:
        _memcpy(d, s, w)
        return
    if head:
        _memcpy(d, s, head)
    n = (w - head) // LINE
    for i in range(n):
        _stream_line(d + head + i * LINE, s + head + i * LINE)
    tail = w - head - n * LINE
    if tail:
        _memcpy(d + w - tail, s + w - tail, tail)


@njit(nogil=True, cache=True)
def _rows(s: int, s_z: int, s_y: int, d: int, d_z: int, d_y: int, nz: int,
          ny: int, w: int, stream: bool) -> None:  # pragma: no cover - numba
    """Copy ``nz * ny`` rows of ``w`` bytes from address ``s`` (rows ``s_y`` bytes apart,
    planes ``s_z``) to address ``d`` (rows ``d_y`` apart, planes ``d_z``); the whole
    lines of each row with streaming stores if ``stream`` (the caller ends with
    :func:`_store_fence`)."""
    if stream and w >= LINE:
        for z in range(nz):
            for y in range(ny):
                _stream_row(d + z * d_z + y * d_y, s + z * s_z + y * s_y, w)
    elif w % 8 == 0 and (s | d | s_z | s_y | d_z | d_y) % 8 == 0:
        n = w // 8
        for z in range(nz):
            for y in range(ny):
                sp = _pointer(s + z * s_z + y * s_y, np.uint64)
                dp = _pointer(d + z * d_z + y * d_y, np.uint64)
                for x in range(n):
                    dp[x] = sp[x]
    elif w <= 64:
        for z in range(nz):
            for y in range(ny):
                _copy_short(d + z * d_z + y * d_y, s + z * s_z + y * s_y, w)
    else:
        for z in range(nz):
            for y in range(ny):
                _memcpy(d + z * d_z + y * d_y, s + z * s_z + y * s_y, w)


@njit(nogil=True, cache=True)
def copy_boxes(src: np.ndarray, geometry: np.ndarray, dst: int, d_z: int,
               d_y: int, stream: bool) -> None:  # pragma: no cover - numba
    """For each row ``i`` of ``geometry`` (int64 ``[s_z, s_y, nz, ny, width, d_off]``),
    copy ``nz * ny`` rows of ``width`` bytes from address ``src[i]`` (rows ``s_y`` bytes
    apart, planes ``s_z``) to address ``dst + d_off`` (rows ``d_y`` apart, planes ``d_z``),
    with streaming stores if ``stream``.
    The caller checks that every box lies inside its source and inside the destination."""
    for i in range(src.shape[0]):
        s_z, s_y, nz, ny, w, off = geometry[i]
        _rows(src[i], s_z, s_y, dst + off, d_z, d_y, nz, ny, w, stream)
    if stream:
        _store_fence()


@njit(nogil=True, cache=True)
def copy_grid(addrs: np.ndarray, q0: int, q1: int, geo: np.ndarray,
              dst: int, stream: bool) -> None:  # pragma: no cover - numba
    """Copy chunks ``q0 <= q < q1`` of a 3-d box into the box-shaped result at address
    ``dst``. ``geo`` (int64, 21: seven groups of one value per axis) holds: the box
    ``lo <= i < hi`` (``geo[0:3]``, ``geo[3:6]``); the first chunk index it meets and the
    number of chunks (``geo[6:9]``, ``geo[9:12]``); the chunk shape (``geo[12:15]``); the
    chunks' byte strides (``geo[15:18]``); the result's byte strides (``geo[18:21]``).
    Chunk ``q`` (C order over the box's chunks) is C-contiguous, at address ``addrs[q]``.
    With ``stream``, the result's whole lines are written with streaming stores.
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
        _rows(s, geo[15], geo[16], d, geo[18], geo[19], nz, ny, nx * geo[17], stream)
    if stream:
        _store_fence()
