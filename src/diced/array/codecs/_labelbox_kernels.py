"""numba kernels decoding boxes of DVID label blocks straight into a read's result.

The locked-chunk cache (:mod:`diced.backends.cache`) keeps a label array's chunks as their
DVID block serialization (the outer codec undone), not as decoded uint64 voxels: pinky40's
blocks are 2.5 % of their voxels' bytes, so a cache holds about 40 times as many chunks, and
a warm read decodes only the voxels it returns. Copying decoded uint64 chunks is bound by
memory traffic: a box meets each 512-byte chunk row in part, and the CPU fetches the whole
row (20 unaligned 64^3 boxes of decoded chunks: 8-9 ms). Decoding reads a few bytes per
voxel row and parallelises over cores.

What is left is writing the result: each sub-block writes 64 rows of 64 bytes spread over 8
planes, and a plain store to a line that is not cached first reads it in. So results of
:data:`~diced.array._readcache.STREAM_BYTES` and more are decoded a layer of sub-blocks at a
time (8 planes) into a staging buffer that stays in the core's cache, and each layer is
then written out with streaming stores (:func:`diced.array._copy_kernels._stream_row`).
On LMDB with everything cached (medians of 30 reads, four alternating runs), a 256^3
region of pinky40 took 14-20 ms before and 8-11 ms after, and 20 unaligned 64^3 boxes
9.5-13 ms before and 6.2-9.4 ms after.

Blocks given to these kernels must have passed a full decode (:func:`diced.array.codecs.
labelblock.decode_block`), which checks every count, offset and value; these kernels trust
them. Addresses are int64 (a read's chunks are looked up in the cache by address, as
:mod:`diced.array._copy_kernels` copies them).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from diced.array._copy_kernels import _pointer, _store_fence, _stream_row
from diced.array.codecs._labelblock_kernels import (
    _bits_for,
    _read_u16,
    _read_u32,
    _read_u64,
)


@njit(nogil=True, cache=True)
def decode_part(src: int, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int,
                dst: int, d_z: int, d_y: int) -> None:  # pragma: no cover - numba
    """Decode voxels ``[z0:z1, y0:y1, x0:x1]`` of the (validated) DVID block at address
    ``src`` into the uint64 box at address ``dst`` (its rows ``d_y`` bytes apart, planes
    ``d_z``; voxel ``(z0, y0, x0)`` at ``dst``)."""
    _decode(src, z0, z1, y0, y1, x0, x1, dst, d_z, d_y, np.empty(0, np.uint64))


@njit(nogil=True, cache=True)
def _decode(src: int, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int,
            dst: int, d_z: int, d_y: int,
            buffer: np.ndarray) -> None:  # pragma: no cover - numba
    """:func:`decode_part`; with a ``buffer`` of at least ``8 * (y1 - y0) * (x1 - x0)``
    uint64 (else empty), each layer of sub-blocks (8 planes) is decoded there and then
    copied to ``dst`` with streaming stores (the caller ends with a fence). The buffer is
    an argument, not an address, so that it stays alive while it is written (numba frees
    an array after its last use, and an address is not a use)."""
    stage = buffer.ctypes.data if buffer.size else 0
    p = _pointer(src, np.uint8)
    gx, gy, gz, n = _read_u32(p, 0), _read_u32(p, 4), _read_u32(p, 8), _read_u32(p, 12)
    w = (x1 - x0) * 8
    if n == 1:  # a solid block
        v = _read_u64(p, 16)
        if stage:  # one row of it, streamed to every row of the result
            row = _pointer(stage, np.uint64)
            for x in range(x1 - x0):
                row[x] = v
            for z in range(z1 - z0):
                for y in range(y1 - y0):
                    _stream_row(dst + z * d_z + y * d_y, stage, w)
            return
        for z in range(z1 - z0):
            for y in range(y1 - y0):
                row = _pointer(dst + z * d_z + y * d_y, np.uint64)
                for x in range(x1 - x0):
                    row[x] = v
        return
    nsb = gx * gy * gz
    ns_off = 16 + 8 * n
    idx_off = ns_off + 2 * nsb
    total = 0
    for i in range(nsb):
        total += _read_u16(p, ns_off + 2 * i)
    ipos = idx_off
    vpos = idx_off + 4 * total
    lab = np.empty(512, np.uint64)
    sz0, sz1 = z0 // 8, (z1 - 1) // 8
    sy0, sy1 = y0 // 8, (y1 - 1) // 8
    sx0, sx1 = x0 // 8, (x1 - 1) // 8
    # where voxel (z, y, x) goes: out + (z - zref) * o_z + (y - y0) * o_y + (x - x0) * 8
    out, o_z, o_y, zref = dst, d_z, d_y, z0
    sb = 0
    for sz in range(gz):
        za, zb = max(z0, sz * 8), min(z1, sz * 8 + 8)
        if stage:
            out, o_z, o_y, zref = stage, (y1 - y0) * w, w, za
        for sy in range(gy):
            for sx in range(gx):
                c = _read_u16(p, ns_off + 2 * sb)
                bits = _bits_for(c)
                if sz0 <= sz <= sz1 and sy0 <= sy <= sy1 and sx0 <= sx <= sx1:
                    ya, yb = max(y0, sy * 8), min(y1, sy * 8 + 8)
                    xa, xb = max(x0, sx * 8), min(x1, sx * 8 + 8)
                    if bits == 0:
                        v = np.uint64(0) if c == 0 else _read_u64(p, 16 + 8 * _read_u32(p, ipos))
                        for z in range(za, zb):
                            for y in range(ya, yb):
                                row = _pointer(out + (z - zref) * o_z + (y - y0) * o_y, np.uint64)
                                for x in range(xa, xb):
                                    row[x - x0] = v
                    else:
                        for j in range(c):
                            lab[j] = _read_u64(p, 16 + 8 * _read_u32(p, ipos + 4 * j))
                        k0, k1 = xa - sx * 8, xb - sx * 8
                        mask = np.uint64((1 << bits) - 1)
                        for z in range(za, zb):
                            for y in range(ya, yb):
                                # the row's 8 values: ``bits`` bytes, MSB first
                                at = vpos + ((z - sz * 8) * 8 + (y - sy * 8)) * bits
                                row = _pointer(out + (z - zref) * o_z + (y - y0) * o_y
                                               + (xa - x0) * 8, np.uint64)
                                if bits <= 8:
                                    acc = np.uint64(0)
                                    for j in range(bits):
                                        acc = (acc << np.uint64(8)) | np.uint64(p[at + j])
                                    for k in range(k0, k1):
                                        row[k - k0] = lab[(acc >> np.uint64(bits * (7 - k)))
                                                          & mask]
                                else:  # 9 bits: 72 bits a row
                                    acc = np.uint64(0)
                                    for j in range(8):
                                        acc = (acc << np.uint64(8)) | np.uint64(p[at + j])
                                    for k in range(k0, k1):
                                        if k < 7:
                                            v = (acc >> np.uint64(55 - 9 * k)) & mask
                                        else:
                                            v = ((acc & np.uint64(1)) << np.uint64(8)) \
                                                | np.uint64(p[at + 8])
                                        row[k - k0] = lab[v]
                ipos += 4 * c
                vpos += 64 * bits
                sb += 1
        if stage and sz0 <= sz <= sz1:  # the layer, decoded: out to the result
            for z in range(za, zb):
                for y in range(y1 - y0):
                    _stream_row(dst + (z - z0) * d_z + y * d_y, stage + (z - za) * o_z + y * w, w)


@njit(nogil=True, cache=True, inline="always")
def _part(geo: np.ndarray, a: int, k: int) -> tuple[int, int, int]:  # pragma: no cover
    """The part of the ``k``-th chunk along axis ``a`` that a box (``geo``, see
    :func:`decode_grid`) covers: chunk-local ``lo``, ``hi``, and the result's byte offset."""
    c = geo[12 + a]
    base = (geo[6 + a] + k) * c
    a0 = max(geo[a], base)
    return a0 - base, min(geo[3 + a], base + c) - base, (a0 - geo[a]) * geo[18 + a]


@njit(nogil=True, cache=True)
def decode_grid(addrs: np.ndarray, q0: int, q1: int, geo: np.ndarray,
                dst: int, stage: np.ndarray) -> None:  # pragma: no cover - numba
    """Decode blocks ``q0 <= q < q1`` of a 3-d box into the box-shaped uint64 result at
    address ``dst``: :func:`diced.array._copy_kernels.copy_grid`'s geometry (``geo``, 21
    int64: box ``lo``, ``hi``, first chunk, number of chunks, chunk shape, chunk byte
    strides (unused here), result byte strides; one per axis each), the block of chunk
    ``q`` (C order over the box's chunks) at address ``addrs[q]``. With a ``stage`` of
    ``8 * geo[13] * geo[14]`` uint64 or more (else empty), each layer of sub-blocks is
    decoded there, in the core's cache, then written to the result with streaming stores
    (see :mod:`diced.array._copy_kernels`)."""
    n1, n2 = geo[10], geo[11]
    for q in range(q0, q1):
        lz, hz, dz = _part(geo, 0, q // (n1 * n2))
        ly, hy, dy = _part(geo, 1, (q // n2) % n1)
        lx, hx, dx = _part(geo, 2, q % n2)
        _decode(addrs[q], lz, hz, ly, hy, lx, hx, dst + dz + dy + dx, geo[18], geo[19], stage)
    if stage.size:
        _store_fence()
