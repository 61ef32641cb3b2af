"""numba kernels for the shard converter; called only by :mod:`diced.export.convert_shards`.

* :func:`dvid_to_cseg` transcodes one DVID compressed label block straight into a neuroglancer
  ``compressed_segmentation`` chunk (8x8x8 blocks) without materialising uint64 voxels: a DVID
  8x8x8 sub-block and a cseg block cover the same voxels in the same (z, y, x fastest) order,
  so each sub-block becomes one cseg block: its palette is mapped (supervoxel -> body),
  deduplicated and sorted, and its MSB-first ``ceil(log2 n)``-bit indices are repacked
  LSB-first into 0/1/2/4/8/16-bit words. Identical lookup tables are stored once.
* :func:`morton_decode` inverts the compressed Morton code (neuroglancer chunk id).

The DVID block structure is checked with the label block kernels of
:mod:`diced.array.codecs._labelblock_kernels` (same error codes) before anything is read.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from diced.array.codecs._labelblock_kernels import (
    ERR_SHORT_LABELS,
    ERR_VALUE_RANGE,
    OK,
    _bits_for,
    _check_structure,
    _read_u16,
    _read_u32,
    _unpack_row,
    parse_header,
)

#: returned by :func:`dvid_to_cseg` when the block is not 64x64x64 (8x8x8 sub-blocks)
ERR_NOT_64 = 100
#: returned by :func:`dvid_to_cseg` when ``out`` is too small
ERR_OUT_SMALL = 101

_CACHE_SLOTS = 4096  # open-addressing slots of the lookup-table cache (power of two)
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)


def max_cseg_words(sx: int, sy: int, sz: int) -> int:
    """Upper bound on the uint32 words :func:`dvid_to_cseg` writes for an (sx, sy, sz) chunk."""
    nb = -(-sx // 8) * -(-sy // 8) * -(-sz // 8)
    return 1 + nb * (2 + 2 * 512 + 256)


@njit(cache=True, nogil=True, inline="always")
def _cseg_bits(m):
    if m <= 1:
        return 0
    if m <= 2:
        return 1
    if m <= 4:
        return 2
    if m <= 16:
        return 4
    if m <= 256:
        return 8
    return 16


@njit(cache=True, nogil=True, inline="always")
def _lower_bound(sorted_vals, m, v):
    """First index in ``sorted_vals[:m]`` whose value is not below ``v``."""
    lo = 0
    hi = m
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_vals[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _emit_table(out, pos, uniq, m, cache_hash, cache_off, cache_len):
    """Write ``uniq[:m]`` (2 words per label) at ``pos`` unless an identical table exists.

    Returns ``(table_offset, new_pos)``; offsets are in words from the channel start (word 1).
    """
    h = np.uint64(m)
    for i in range(m):
        h = (h ^ uniq[i]) * _HASH_MUL
    slot = np.int64(h >> np.uint64(52)) & (_CACHE_SLOTS - 1)
    while cache_len[slot] != 0:
        if cache_hash[slot] == h and cache_len[slot] == m:
            off = cache_off[slot]
            same = True
            for i in range(m):
                lo = np.uint64(out[1 + off + 2 * i])
                hi = np.uint64(out[1 + off + 2 * i + 1])
                if (lo | (hi << np.uint64(32))) != uniq[i]:
                    same = False
                    break
            if same:
                return off, pos
        slot = (slot + 1) & (_CACHE_SLOTS - 1)
    off = pos
    for i in range(m):
        v = uniq[i]
        out[1 + pos] = np.uint32(v & np.uint64(0xFFFFFFFF))
        out[1 + pos + 1] = np.uint32(v >> np.uint64(32))
        pos += 2
    if cache_len[slot] == 0:
        cache_hash[slot] = h
        cache_off[slot] = off
        cache_len[slot] = m
    return off, pos


@njit(cache=True, nogil=True)
def dvid_to_cseg(buf, table, sx, sy, sz, out):
    """Transcode a 64^3 DVID block into a single-channel compressed_segmentation chunk.

    Parameters
    ----------
    buf : uint8[:]
        The DVID block serialization (supervoxel ids in its label list).
    table : uint64[:]
        The label for each entry of the block's label list (the list itself, or the bodies
        it maps to); must have as many entries as the list.
    sx, sy, sz : int
        Shape of the output chunk (x, y, z), each 1..64: the chunk clipped to the volume.
    out : uint32[:]
        Output buffer of at least :func:`max_cseg_words` words.

    Returns
    -------
    (err, detail, nwords)
        ``err`` is 0 on success, else a label block error code (``detail`` is the sub-block);
        the chunk is ``out[:nwords]``: a channel offset word (1), 2 header words per 8^3
        block (x fastest), then the lookup tables and packed values they point at.
    """
    err, gx, gy, gz, n = parse_header(buf)
    if err != OK:
        return err, 0, 0
    if gx != 8 or gy != 8 or gz != 8:
        return ERR_NOT_64, 0, 0
    if table.shape[0] != n:
        return ERR_SHORT_LABELS, 0, 0
    gbx = (sx + 7) // 8
    gby = (sy + 7) // 8
    gbz = (sz + 7) // 8
    nblocks = gbx * gby * gbz
    if out.shape[0] < 1 + nblocks * (2 + 2 * 512 + 256):
        return ERR_OUT_SMALL, 0, 0
    out[0] = 1
    pos = 2 * nblocks  # next free word, relative to the channel start (word 1)
    cache_hash = np.zeros(_CACHE_SLOTS, np.uint64)
    cache_off = np.zeros(_CACHE_SLOTS, np.int64)
    cache_len = np.zeros(_CACHE_SLOTS, np.int64)
    uniq = np.empty(512, np.uint64)
    remap = np.empty(512, np.int64)
    pal = np.empty(512, np.uint64)
    vals = np.empty(8, np.int64)

    if n == 1:  # solid block: every cseg block is the one-entry table, 0 bits
        if buf.shape[0] < 24:
            return ERR_SHORT_LABELS, 0, 0
        uniq[0] = table[0]
        off, pos = _emit_table(out, pos, uniq, 1, cache_hash, cache_off, cache_len)
        for b in range(nblocks):
            out[1 + 2 * b] = np.uint32(off)
            out[1 + 2 * b + 1] = np.uint32(pos)
        return OK, 0, 1 + pos

    err, detail, idx_off, val_off = _check_structure(buf, 512, n)
    if err != OK:
        return err, detail, 0
    ns_off = 16 + 8 * n
    # start of each sub-block's index-table slice and packed values
    ipos_of = np.empty(512, np.int64)
    vpos_of = np.empty(512, np.int64)
    ipos = idx_off
    vpos = val_off
    for sb in range(512):
        c = _read_u16(buf, ns_off + 2 * sb)
        ipos_of[sb] = ipos
        vpos_of[sb] = vpos
        ipos += 4 * c
        vpos += 64 * _bits_for(c)

    for bz in range(gbz):
        for by in range(gby):
            for bx in range(gbx):
                b = bx + gbx * (by + gby * bz)
                sb = bx + 8 * (by + 8 * bz)
                c = _read_u16(buf, ns_off + 2 * sb)
                # mapped palette of the sub-block, then sorted unique labels
                if c == 0:
                    pal[0] = np.uint64(0)
                    cnt = 1
                else:
                    for j in range(c):
                        pal[j] = table[_read_u32(buf, ipos_of[sb] + 4 * j)]
                    cnt = c
                m = 0
                for j in range(cnt):  # insertion into the sorted unique list
                    v = pal[j]
                    lo = _lower_bound(uniq, m, v)
                    if lo < m and uniq[lo] == v:
                        continue
                    for k in range(m, lo, -1):
                        uniq[k] = uniq[k - 1]
                    uniq[lo] = v
                    m += 1
                for j in range(cnt):
                    remap[j] = _lower_bound(uniq, m, pal[j])
                toff, pos = _emit_table(out, pos, uniq, m, cache_hash, cache_off, cache_len)
                obits = _cseg_bits(m)
                voff = pos
                if obits > 0:
                    nwords = (512 * obits + 31) // 32
                    for w in range(nwords):
                        out[1 + pos + w] = 0
                    ibits = _bits_for(c)
                    vp = vpos_of[sb]
                    vmax = 0
                    rowbits = 8 * obits  # 8, 16, 32, 64 or 128: rows never straddle words
                    ob = np.uint64(obits)
                    for row in range(64):
                        _unpack_row(buf, vp, ibits, vals)
                        vp += ibits
                        packed = np.uint64(0)
                        for xx in range(7, -1, -1):
                            v = vals[xx]
                            vmax = max(vmax, v)
                            packed = (packed << ob) | np.uint64(remap[v & 511])
                        bit = row * rowbits
                        w = 1 + voff + (bit >> 5)
                        if rowbits < 32:
                            out[w] |= np.uint32(packed) << np.uint32(bit & 31)
                        elif rowbits == 32:
                            out[w] = np.uint32(packed)
                        elif rowbits == 64:
                            out[w] = np.uint32(packed & np.uint64(0xFFFFFFFF))
                            out[w + 1] = np.uint32(packed >> np.uint64(32))
                        else:  # 16 bits per value: 8 values do not fit in 64 bits
                            for xx in range(8):
                                half = np.uint32(remap[vals[xx] & 511])
                                out[w + (xx >> 1)] |= half << np.uint32(16 * (xx & 1))
                    if vmax >= c:
                        return ERR_VALUE_RANGE, sb, 0
                    pos += nwords
                out[1 + 2 * b] = np.uint32(toff) | (np.uint32(obits) << np.uint32(24))
                out[1 + 2 * b + 1] = np.uint32(voff)
    return OK, 0, 1 + pos


@njit(cache=True, nogil=True)
def morton_decode(codes, bits):
    """Chunk coordinates ``(n, 3)`` (x, y, z) of compressed Morton codes with ``bits`` per axis."""
    n = codes.shape[0]
    out = np.zeros((n, 3), np.int64)
    maxbits = 0
    for d in range(3):
        maxbits = max(maxbits, bits[d])
    for k in range(n):
        code = codes[k]
        j = np.uint64(0)
        for i in range(maxbits):
            for d in range(3):
                if i < bits[d]:
                    if (code >> j) & np.uint64(1):
                        out[k, d] |= np.int64(1) << i
                    j += np.uint64(1)
    return out


@njit(cache=True, nogil=True)
def decode_block_into(buf, table, out):
    """Decode a 64^3 DVID block into ``out`` (flat uint64, zyx), mapping its label list
    through ``table`` (one label per list entry). Returns ``(err, detail)``."""
    err, gx, gy, gz, n = parse_header(buf)
    if err != OK:
        return err, 0
    if gx != 8 or gy != 8 or gz != 8:
        return ERR_NOT_64, 0
    if table.shape[0] != n:
        return ERR_SHORT_LABELS, 0
    if n == 1:
        if buf.shape[0] < 24:
            return ERR_SHORT_LABELS, 0
        out[:] = table[0]
        return OK, 0
    err, detail, idx_off, val_off = _check_structure(buf, 512, n)
    if err != OK:
        return err, detail
    ns_off = 16 + 8 * n
    lab = np.zeros(512, np.uint64)
    vals = np.empty(8, np.int64)
    ipos = idx_off
    vpos = val_off
    sb = 0
    for sz in range(8):
        for sy in range(8):
            for sx in range(8):
                c = _read_u16(buf, ns_off + 2 * sb)
                for j in range(c):
                    lab[j] = table[_read_u32(buf, ipos + 4 * j)]
                ipos += 4 * c
                bits = _bits_for(c)
                if bits == 0:
                    fill = lab[0] if c == 1 else np.uint64(0)
                    for zz in range(8):
                        for yy in range(8):
                            row = (sz * 8 + zz) * 4096 + (sy * 8 + yy) * 64 + sx * 8
                            for xx in range(8):
                                out[row + xx] = fill
                else:
                    vmax = 0
                    for zz in range(8):
                        for yy in range(8):
                            row = (sz * 8 + zz) * 4096 + (sy * 8 + yy) * 64 + sx * 8
                            _unpack_row(buf, vpos, bits, vals)
                            vpos += bits
                            for xx in range(8):
                                v = vals[xx]
                                vmax = max(vmax, v)
                                out[row + xx] = lab[v]
                    if vmax >= c:
                        return ERR_VALUE_RANGE, sb
                sb += 1
    return OK, 0


__all__ = ["ERR_NOT_64", "ERR_OUT_SMALL", "decode_block_into", "dvid_to_cseg",
           "max_cseg_words", "morton_decode"]
