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


@intrinsic
def _bytes_at(typingctx, addr):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """An int64 address as a pointer to bytes."""
    sig = types.CPointer(types.uint8)(types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.uint8)))

    return sig, codegen


@njit(nogil=True, cache=True, inline="always")
def _u16(p, i):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    return np.int64(p[i]) | (np.int64(p[i + 1]) << 8)


@njit(nogil=True, cache=True, inline="always")
def _u32(p, i):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    return (np.int64(p[i]) | (np.int64(p[i + 1]) << 8) | (np.int64(p[i + 2]) << 16)
            | (np.int64(p[i + 3]) << 24))


@njit(nogil=True, cache=True, inline="always")
def _u64(p, i):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    v = np.uint64(0)
    for j in range(7, -1, -1):
        v = (v << np.uint64(8)) | np.uint64(p[i + j])
    return v


#: bits per packed value of a sub-block with ``n`` labels (0 for 0 or 1), ``n <= 512``
_BITS = np.array([0, 0] + [int(n - 1).bit_length() for n in range(2, 513)], np.int64)


@njit(nogil=True, cache=True)
def decode_part(src: int, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int,
                dst: int, d_z: int, d_y: int) -> None:  # pragma: no cover - numba
    """Decode voxels ``[z0:z1, y0:y1, x0:x1]`` of the (validated) DVID block at address
    ``src`` into the uint64 box at address ``dst`` (its rows ``d_y`` bytes apart, planes
    ``d_z``; voxel ``(z0, y0, x0)`` at ``dst``)."""
    p = _bytes_at(src)
    gx, gy, gz, n = _u32(p, 0), _u32(p, 4), _u32(p, 8), _u32(p, 12)
    if n == 1:  # a solid block
        v = _u64(p, 16)
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
        total += _u16(p, ns_off + 2 * i)
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
                c = _u16(p, ns_off + 2 * sb)
                bits = _BITS[c]
                if sz0 <= sz <= sz1 and sy0 <= sy <= sy1 and sx0 <= sx <= sx1:
                    za, zb = max(z0, sz * 8), min(z1, sz * 8 + 8)
                    ya, yb = max(y0, sy * 8), min(y1, sy * 8 + 8)
                    xa, xb = max(x0, sx * 8), min(x1, sx * 8 + 8)
                    if bits == 0:
                        v = _u64(p, 16 + 8 * _u32(p, ipos)) if c == 1 else np.uint64(0)
                        for z in range(za, zb):
                            for y in range(ya, yb):
                                row = _words(dst + (z - z0) * d_z + (y - y0) * d_y)
                                for x in range(xa, xb):
                                    row[x - x0] = v
                    else:
                        for j in range(c):
                            lab[j] = _u64(p, 16 + 8 * _u32(p, ipos + 4 * j))
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
        d = dst
        lo = np.empty(3, np.int64)
        hi = np.empty(3, np.int64)
        for a in range(3):
            k = q // (n1 * n2) if a == 0 else ((q // n2) % n1 if a == 1 else q % n2)
            c = geo[12 + a]
            base = (geo[6 + a] + k) * c
            a0 = max(geo[a], base)
            a1 = min(geo[3 + a], base + c)
            d += (a0 - geo[a]) * geo[18 + a]
            lo[a] = a0 - base
            hi[a] = a1 - base
        decode_part(addrs[q], lo[0], hi[0], lo[1], hi[1], lo[2], hi[2], d, geo[18], geo[19])
