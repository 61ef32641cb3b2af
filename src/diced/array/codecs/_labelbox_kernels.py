"""numba kernels decoding boxes of DVID label blocks straight into a read's result.

The locked-chunk cache (:mod:`diced.backends.cache`) keeps a label array's chunks as their
DVID block serialization (the outer codec undone), not as decoded uint64 voxels: pinky40's
blocks are 2.5 % of their voxels' bytes, so a cache holds about 40 times as many chunks, and
a warm read decodes only the voxels it returns. Copying decoded uint64 chunks is bound by
memory traffic: a box meets each 512-byte chunk row in part, and the CPU fetches the whole
row (20 unaligned 64^3 boxes of decoded chunks: 8-9 ms). Decoding reads a few bytes per
voxel row and parallelises over cores.

Blocks given to these kernels must have passed a full decode (:func:`diced.array.codecs.
labelblock.decode_block`), which checks every count, offset and value; these kernels trust
them. Addresses are int64 (a read's chunks are looked up in the cache by address, as
:mod:`diced.array._copy_kernels` copies them).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from diced.array._copy_kernels import _words
from diced.array.codecs._labelblock_kernels import (
    _bits_for,
    _read_u16,
    _read_u32,
    _read_u64,
)


@intrinsic
def _bytes_at(typingctx, addr):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """An int64 address as a pointer to bytes."""
    sig = types.CPointer(types.uint8)(types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.uint8)))

    return sig, codegen


@njit(nogil=True, cache=True)
def decode_part(src: int, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int,
                dst: int, d_z: int, d_y: int) -> None:  # pragma: no cover - numba
    """Decode voxels ``[z0:z1, y0:y1, x0:x1]`` of the (validated) DVID block at address
    ``src`` into the uint64 box at address ``dst`` (its rows ``d_y`` bytes apart, planes
    ``d_z``; voxel ``(z0, y0, x0)`` at ``dst``)."""
    p = _bytes_at(src)
    gx, gy, gz, n = _read_u32(p, 0), _read_u32(p, 4), _read_u32(p, 8), _read_u32(p, 12)
    if n == 1:  # a solid block
        v = _read_u64(p, 16)
        for z in range(z1 - z0):
            for y in range(y1 - y0):
                row = _words(dst + z * d_z + y * d_y)
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
    sb = 0
    for sz in range(gz):
        for sy in range(gy):
            for sx in range(gx):
                c = _read_u16(p, ns_off + 2 * sb)
                bits = _bits_for(c)
                if sz0 <= sz <= sz1 and sy0 <= sy <= sy1 and sx0 <= sx <= sx1:
                    za, zb = max(z0, sz * 8), min(z1, sz * 8 + 8)
                    ya, yb = max(y0, sy * 8), min(y1, sy * 8 + 8)
                    xa, xb = max(x0, sx * 8), min(x1, sx * 8 + 8)
                    if bits == 0:
                        v = np.uint64(0) if c == 0 else _read_u64(p, 16 + 8 * _read_u32(p, ipos))
                        for z in range(za, zb):
                            for y in range(ya, yb):
                                row = _words(dst + (z - z0) * d_z + (y - y0) * d_y)
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
                                row = _words(dst + (z - z0) * d_z + (y - y0) * d_y
                                                + (xa - x0) * 8)
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
                dst: int) -> None:  # pragma: no cover - numba
    """Decode blocks ``q0 <= q < q1`` of a 3-d box into the box-shaped uint64 result at
    address ``dst``: :func:`diced.array._copy_kernels.copy_grid`'s geometry (``geo``, 21
    int64: box ``lo``, ``hi``, first chunk, number of chunks, chunk shape, chunk byte
    strides (unused here), result byte strides; one per axis each), the block of chunk
    ``q`` (C order over the box's chunks) at address ``addrs[q]``."""
    n1, n2 = geo[10], geo[11]
    for q in range(q0, q1):
        lz, hz, dz = _part(geo, 0, q // (n1 * n2))
        ly, hy, dy = _part(geo, 1, (q // n2) % n1)
        lx, hx, dx = _part(geo, 2, q % n2)
        decode_part(addrs[q], lz, hz, ly, hy, lx, hx, dst + dz + dy + dx, geo[18], geo[19])
