"""numba kernels for the DVID compressed label block format.

Private to :mod:`diced.array.codecs.labelblock`, which owns the format, validates arguments and
maps the integer error codes returned here to :class:`diced.errors.CorruptDataError`.

Every kernel takes and returns numpy arrays only and does no I/O. Byte buffers are 1-D
``uint8`` arrays; voxel arrays are flat C-order ``uint64`` arrays plus their ``(nz, ny, nx)``.
The layout is described in ``docs/dvid-reference.md`` §1.2: a 16-byte header
``gx, gy, gz, N`` (u32 LE), ``N`` u64 labels, then (only when ``N > 1``) ``Ns`` (u16 per
sub-block), the index table (u32 per sub-block label) and MSB-first packed local indices.

Decoding kernels check every count, offset and index against the buffer length before they
read, so that malformed bytes give an error code, never an out-of-bounds access.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Error codes returned by the decoding kernels (0 = success). Messages live in labelblock.py.
OK = 0
ERR_SHORT_HEADER = 1
ERR_ZERO_LABELS = 2
ERR_BAD_GRID = 3
ERR_SHAPE_MISMATCH = 4
ERR_SHORT_LABELS = 5
ERR_SHORT_NS = 6
ERR_NS_TOO_BIG = 7
ERR_SHORT_INDEX = 8
ERR_INDEX_RANGE = 9
ERR_SHORT_VALUES = 10
ERR_VALUE_RANGE = 11

MAX_SUBBLOCKS_PER_AXIS = 128
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)
_EMPTY = np.int32(-1)
_LINEAR_MAX = 16  # sub-blocks with at most this many labels are searched linearly


@njit(cache=True, nogil=True, inline="always")
def _bits_for(n):
    """Bits per packed value for a sub-block with ``n`` labels (DVID ``bitsFor``)."""
    if n <= 1:
        return 0
    b = 0
    m = n - 1
    while m > 0:
        b += 1
        m >>= 1
    return b


@njit(cache=True, nogil=True, inline="always")
def _read_u16(buf, pos):
    return np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)


@njit(cache=True, nogil=True, inline="always")
def _read_u32(buf, pos):
    return (np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)
            | (np.int64(buf[pos + 2]) << 16) | (np.int64(buf[pos + 3]) << 24))


@njit(cache=True, nogil=True, inline="always")
def _read_u64(buf, pos):
    v = np.uint64(0)
    for k in range(8):
        v |= np.uint64(buf[pos + k]) << np.uint64(8 * k)
    return v


@njit(cache=True, nogil=True, inline="always")
def _write_u16(buf, pos, v):
    buf[pos] = np.uint8(v & 0xFF)
    buf[pos + 1] = np.uint8((v >> 8) & 0xFF)


@njit(cache=True, nogil=True, inline="always")
def _write_u32(buf, pos, v):
    for k in range(4):
        buf[pos + k] = np.uint8((v >> (8 * k)) & 0xFF)


@njit(cache=True, nogil=True, inline="always")
def _write_u64(buf, pos, v):
    for k in range(8):
        buf[pos + k] = np.uint8((v >> np.uint64(8 * k)) & np.uint64(0xFF))


# ---------------------------------------------------------------------------------------------
# Open-addressing hash table uint64 -> int32 (block-level label list in first-appearance order)


@njit(cache=True, nogil=True, inline="always")
def _hash_slot(v, shift):
    return np.int64((v * _HASH_MUL) >> np.uint64(shift))


@njit(cache=True, nogil=True)
def _rehash(labels, n, log_cap):
    cap = 1 << log_cap
    keys = np.empty(cap, dtype=np.uint64)
    vals = np.full(cap, _EMPTY, dtype=np.int32)
    shift = 64 - log_cap
    mask = cap - 1
    for g in range(n):
        v = labels[g]
        h = _hash_slot(v, shift)
        while vals[h] != _EMPTY:
            h = (h + 1) & mask
        keys[h] = v
        vals[h] = g
    return keys, vals


@njit(cache=True, nogil=True)
def _grow(a, new_size):
    b = np.empty(new_size, dtype=a.dtype)
    b[: a.shape[0]] = a
    return b


# ---------------------------------------------------------------------------------------------
# Encoding


@njit(cache=True, nogil=True)
def _hash_find(hkeys, hvals, log_hcap, v):
    """Slot of ``v`` in the table: ``(slot, g)`` with ``g = -1`` (and a free slot) if absent."""
    shift = 64 - log_hcap
    hmask = (1 << log_hcap) - 1
    h = _hash_slot(v, shift)
    while True:
        hv = hvals[h]
        if hv == _EMPTY:
            return h, -1
        if hkeys[h] == v:
            return h, np.int64(hv)
        h = (h + 1) & hmask


@njit(cache=True, nogil=True)
def _scan_subblock(flat, row0, nx, plane, sb, local, loclab, index, ipos,
                   glabels, gstamp, gloc, n0, hkeys, hvals, log_hcap):
    """Assign first-appearance local indices to the 512 voxels of one sub-block.

    Fills ``local`` (per voxel), ``loclab`` and ``index[ipos:ipos + nloc]`` (block-list
    positions), appending unseen labels to ``glabels`` and the hash table, whose capacities the
    caller has made large enough for 512 more labels. Returns ``(nloc, n)``.

    Kept separate from :func:`encode_block`, which grows its arrays: numba reference-counts
    reassignable arrays on every loop iteration, which would slow the voxel loop ~20×.
    """
    n = n0
    nloc = 0
    prev_v = np.uint64(0)
    prev_l = -1
    k = 0
    for zz in range(8):
        for yy in range(8):
            row = row0 + zz * plane + yy * nx
            for xx in range(8):
                v = flat[row + xx]
                if prev_l >= 0 and v == prev_v:
                    local[k] = prev_l
                    k += 1
                    continue
                li = -1
                if nloc <= _LINEAR_MAX:
                    for j in range(nloc):
                        if loclab[j] == v:
                            li = j
                            break
                if li < 0:
                    h, g = _hash_find(hkeys, hvals, log_hcap, v)
                    if g < 0:
                        g = n
                        glabels[g] = v
                        gstamp[g] = -1
                        hkeys[h] = v
                        hvals[h] = g
                        n += 1
                    if gstamp[g] == sb:
                        li = gloc[g]
                    else:
                        gstamp[g] = sb
                        gloc[g] = nloc
                        index[ipos + nloc] = g
                        loclab[nloc] = v
                        li = nloc
                        nloc += 1
                local[k] = li
                k += 1
                prev_v = v
                prev_l = li
    return nloc, n


@njit(cache=True, nogil=True)
def encode_block(flat, nz, ny, nx):
    """Encode a flat C-order uint64 volume of shape ``(nz, ny, nx)`` (each a multiple of 8).

    Labels enter the block list in order of first appearance (sub-blocks z, y, x; voxels z, y,
    x inside each), so the output is deterministic and equals DVID's wherever DVID's is.
    Returns the serialization as a uint8 array (24 bytes for a solid block).
    """
    gz, gy, gx = nz // 8, ny // 8, nx // 8
    nsb = gx * gy * gz
    plane = ny * nx

    # Block label list in first-appearance order; per label the last sub-block that used it
    # (stamp) and its local index there, so lookups need no per-sub-block reset.
    cap = 1024
    glabels = np.empty(cap, dtype=np.uint64)
    gstamp = np.empty(cap, dtype=np.int32)
    gloc = np.empty(cap, dtype=np.int32)
    log_hcap = 11
    hkeys = np.empty(1 << log_hcap, dtype=np.uint64)
    hvals = np.full(1 << log_hcap, _EMPTY, dtype=np.int32)
    n = 0

    ns = np.empty(nsb, dtype=np.int32)
    index = np.empty(nsb * 4 + 512, dtype=np.int32)  # grows; sum(Ns) <= nvox
    values = np.empty(nsb * 128 + 576, dtype=np.uint8)  # grows; <= 576 bytes per sub-block
    local = np.empty(512, dtype=np.int32)
    loclab = np.empty(512, dtype=np.uint64)
    ipos = 0
    vpos = 0

    sb = 0
    for sz in range(gz):
        for sy in range(gy):
            for sx in range(gx):
                # room for a sub-block of 512 new labels
                if n + 512 > cap:
                    cap = 2 * (n + 512)
                    glabels = _grow(glabels, cap)
                    gstamp = _grow(gstamp, cap)
                    gloc = _grow(gloc, cap)
                if 2 * (n + 512) > (1 << log_hcap):
                    while 2 * (n + 512) > (1 << log_hcap):
                        log_hcap += 1
                    hkeys, hvals = _rehash(glabels, n, log_hcap)
                if ipos + 512 > index.shape[0]:
                    index = _grow(index, 2 * (ipos + 512))
                if vpos + 576 > values.shape[0]:
                    values = _grow(values, 2 * (vpos + 576))
                row0 = sz * 8 * plane + sy * 8 * nx + sx * 8
                nloc, n = _scan_subblock(flat, row0, nx, plane, sb, local, loclab, index, ipos,
                                         glabels, gstamp, gloc, n, hkeys, hvals, log_hcap)
                ns[sb] = nloc
                ipos += nloc
                bits = _bits_for(nloc)
                if bits > 0:
                    vpos = _pack_subblock(local, bits, values, vpos)
                sb += 1

    if n == 1:
        out = np.empty(24, dtype=np.uint8)
        _write_u32(out, 0, gx)
        _write_u32(out, 4, gy)
        _write_u32(out, 8, gz)
        _write_u32(out, 12, 1)
        _write_u64(out, 16, glabels[0])
        return out

    size = 16 + 8 * n + 2 * nsb + 4 * ipos + vpos
    out = np.empty(size, dtype=np.uint8)
    _write_u32(out, 0, gx)
    _write_u32(out, 4, gy)
    _write_u32(out, 8, gz)
    _write_u32(out, 12, n)
    pos = 16
    for g in range(n):
        _write_u64(out, pos, glabels[g])
        pos += 8
    for i in range(nsb):
        _write_u16(out, pos, ns[i])
        pos += 2
    for j in range(ipos):
        _write_u32(out, pos, index[j])
        pos += 4
    out[pos:pos + vpos] = values[:vpos]
    return out


@njit(cache=True, nogil=True, inline="always")
def _pack_subblock(local, bits, values, vpos):
    """Pack 512 local indices MSB-first, one 8-voxel row (= ``bits`` bytes) at a time."""
    if bits <= 8:
        for r in range(64):
            acc = np.uint64(0)
            base = r * 8
            for k in range(8):
                acc = (acc << np.uint64(bits)) | np.uint64(local[base + k])
            for j in range(bits):
                values[vpos + j] = np.uint8((acc >> np.uint64(8 * (bits - 1 - j))) & np.uint64(0xFF))
            vpos += bits
    else:  # 9 bits: 72 bits per row
        for r in range(64):
            acc = np.uint64(0)
            base = r * 8
            for k in range(7):
                acc = (acc << np.uint64(9)) | np.uint64(local[base + k])
            last = np.uint64(local[base + 7])
            acc = (acc << np.uint64(1)) | (last >> np.uint64(8))
            for j in range(8):
                values[vpos + j] = np.uint8((acc >> np.uint64(8 * (7 - j))) & np.uint64(0xFF))
            values[vpos + 8] = np.uint8(last & np.uint64(0xFF))
            vpos += 9
    return vpos


# ---------------------------------------------------------------------------------------------
# Structure validation (shared by the decoders)


@njit(cache=True, nogil=True)
def parse_header(buf):
    """Return ``(err, gx, gy, gz, n)`` after checking the header and the label list length."""
    size = buf.shape[0]
    if size < 16:
        return ERR_SHORT_HEADER, 0, 0, 0, 0
    gx = _read_u32(buf, 0)
    gy = _read_u32(buf, 4)
    gz = _read_u32(buf, 8)
    n = _read_u32(buf, 12)
    if (gx < 1 or gy < 1 or gz < 1 or gx > MAX_SUBBLOCKS_PER_AXIS
            or gy > MAX_SUBBLOCKS_PER_AXIS or gz > MAX_SUBBLOCKS_PER_AXIS):
        return ERR_BAD_GRID, gx, gy, gz, n
    if n == 0:
        return ERR_ZERO_LABELS, gx, gy, gz, n
    if 16 + 8 * n > size:
        return ERR_SHORT_LABELS, gx, gy, gz, n
    return OK, gx, gy, gz, n


@njit(cache=True, nogil=True)
def _check_structure(buf, nsb, n):
    """Check Ns, the index table and the value-area length of a block with ``n > 1``.

    Returns ``(err, detail, idx_off, val_off)``; ``detail`` is the offending sub-block.
    """
    size = buf.shape[0]
    ns_off = 16 + 8 * n
    if ns_off + 2 * nsb > size:
        return ERR_SHORT_NS, 0, 0, 0
    total = 0
    vbytes = 0
    for i in range(nsb):
        c = _read_u16(buf, ns_off + 2 * i)
        if c > 512:
            return ERR_NS_TOO_BIG, i, 0, 0
        total += c
        vbytes += 64 * _bits_for(c)
    idx_off = ns_off + 2 * nsb
    val_off = idx_off + 4 * total
    if val_off > size:
        return ERR_SHORT_INDEX, 0, 0, 0
    if val_off + vbytes > size:
        return ERR_SHORT_VALUES, 0, 0, 0
    pos = idx_off
    j = 0
    for i in range(nsb):
        c = _read_u16(buf, ns_off + 2 * i)
        for _ in range(c):
            if _read_u32(buf, pos) >= n:
                return ERR_INDEX_RANGE, i, 0, 0
            pos += 4
            j += 1
    return OK, 0, idx_off, val_off


@njit(cache=True, nogil=True)
def validate_block(buf):
    """Full structural check without decoding voxels: ``(err, detail)``.

    Packed values are not checked against ``Ns`` here (that needs unpacking); see
    :func:`decode_block` and :func:`entry_counts`.
    """
    err, gx, gy, gz, n = parse_header(buf)
    if err != OK:
        return err, 0
    if n == 1:
        if buf.shape[0] < 24:
            return ERR_SHORT_LABELS, 0
        return OK, 0
    err, detail, _, _ = _check_structure(buf, gx * gy * gz, n)
    return err, detail


# ---------------------------------------------------------------------------------------------
# Decoding


@njit(cache=True, nogil=True, inline="always")
def _unpack_row(buf, pos, bits, vals):
    """Unpack the 8 MSB-first values of one sub-block row starting at byte ``pos``."""
    if bits <= 8:
        acc = np.uint64(0)
        for j in range(bits):
            acc = (acc << np.uint64(8)) | np.uint64(buf[pos + j])
        mask = np.uint64((1 << bits) - 1)
        for k in range(8):
            vals[k] = np.int64((acc >> np.uint64(bits * (7 - k))) & mask)
    else:
        acc = np.uint64(0)
        for j in range(8):
            acc = (acc << np.uint64(8)) | np.uint64(buf[pos + j])
        mask = np.uint64(0x1FF)
        for k in range(7):
            vals[k] = np.int64((acc >> np.uint64(64 - 9 * (k + 1))) & mask)
        vals[7] = np.int64(((acc & np.uint64(1)) << np.uint64(8)) | np.uint64(buf[pos + 8]))


@njit(cache=True, nogil=True)
def decode_block(buf, out, nz, ny, nx):
    """Decode ``buf`` into the flat C-order uint64 array ``out`` of shape ``(nz, ny, nx)``.

    Returns ``(err, detail)``. On error the contents of ``out`` are unspecified.
    """
    return decode_planes(buf, out, nz, ny, nx, 0, nz)


@njit(cache=True, nogil=True)
def decode_planes(buf, out, nz, ny, nx, z0, z1):
    """:func:`decode_block` of planes ``z0 <= z < z1`` only, into those planes of ``out``
    (the whole block's flat array; its other planes are left as they were). The header and
    the whole structure (counts, index table, lengths) are checked; packed values only in
    the sub-blocks decoded, as only they are unpacked. ``0 <= z0 < z1 <= nz``.
    """
    err, gx, gy, gz, n = parse_header(buf)
    if err != OK:
        return err, 0
    if gx * 8 != nx or gy * 8 != ny or gz * 8 != nz or out.shape[0] != nx * ny * nz:
        return ERR_SHAPE_MISMATCH, 0
    plane = ny * nx
    if n == 1:
        if buf.shape[0] < 24:
            return ERR_SHORT_LABELS, 0
        out[z0 * plane:z1 * plane] = _read_u64(buf, 16)
        return OK, 0
    nsb = gx * gy * gz
    err, detail, idx_off, val_off = _check_structure(buf, nsb, n)
    if err != OK:
        return err, detail

    ns_off = 16 + 8 * n
    lab = np.zeros(512, dtype=np.uint64)
    vals = np.empty(8, dtype=np.int64)
    ipos = idx_off
    vpos = val_off
    sb = 0
    zero = np.uint64(0)
    for sz in range(gz):
        # the planes of this layer of sub-blocks to write (none: skip its sub-blocks)
        za, zb = max(z0 - sz * 8, 0), min(z1 - sz * 8, 8)
        for sy in range(gy):
            for sx in range(gx):
                c = _read_u16(buf, ns_off + 2 * sb)
                bits = _bits_for(c)
                if za < zb:
                    for j in range(c):
                        lab[j] = _read_u64(buf, 16 + 8 * _read_u32(buf, ipos + 4 * j))
                    if bits == 0:
                        fill = lab[0] if c == 1 else zero
                        for zz in range(za, zb):
                            zoff = (sz * 8 + zz) * plane
                            for yy in range(8):
                                row = zoff + (sy * 8 + yy) * nx + sx * 8
                                for xx in range(8):
                                    out[row + xx] = fill
                    else:
                        vmax = 0
                        vrow = vpos + za * 8 * bits
                        for zz in range(za, zb):
                            zoff = (sz * 8 + zz) * plane
                            for yy in range(8):
                                row = zoff + (sy * 8 + yy) * nx + sx * 8
                                _unpack_row(buf, vrow, bits, vals)
                                vrow += bits
                                for xx in range(8):
                                    v = vals[xx]
                                    vmax = max(vmax, v)
                                    out[row + xx] = lab[v]  # lab has 512 slots: in bounds
                        if vmax >= c:
                            return ERR_VALUE_RANGE, sb
                ipos += 4 * c
                vpos += 64 * bits
                sb += 1
    return OK, 0


@njit(cache=True, nogil=True)
def entry_counts(buf):
    """Voxels per label-list entry, without decoding: ``(err, detail, counts, zero_voxels)``.

    ``counts[i]`` counts voxels that point at list entry ``i``; ``zero_voxels`` counts voxels
    of ``Ns == 0`` sub-blocks (label 0, not in the list).
    """
    err, gx, gy, gz, n = parse_header(buf)
    empty = np.zeros(0, dtype=np.int64)
    if err != OK:
        return err, 0, empty, 0
    nsb = gx * gy * gz
    if n == 1:
        if buf.shape[0] < 24:
            return ERR_SHORT_LABELS, 0, empty, 0
        counts = np.zeros(1, dtype=np.int64)
        counts[0] = nsb * 512
        return OK, 0, counts, 0
    err, detail, idx_off, val_off = _check_structure(buf, nsb, n)
    if err != OK:
        return err, detail, empty, 0
    ns_off = 16 + 8 * n
    counts = np.zeros(n, dtype=np.int64)
    hist = np.zeros(512, dtype=np.int64)
    vals = np.empty(8, dtype=np.int64)
    zero_voxels = 0
    ipos = idx_off
    vpos = val_off
    for sb in range(nsb):
        c = _read_u16(buf, ns_off + 2 * sb)
        bits = _bits_for(c)
        if c == 0:
            zero_voxels += 512
        elif c == 1:
            counts[_read_u32(buf, ipos)] += 512
        else:
            hist[:c] = 0
            for _ in range(64):
                _unpack_row(buf, vpos, bits, vals)
                vpos += bits
                for k in range(8):
                    v = vals[k]
                    if v >= c:
                        return ERR_VALUE_RANGE, sb, empty, 0
                    hist[v] += 1
            for j in range(c):
                counts[_read_u32(buf, ipos + 4 * j)] += hist[j]
        ipos += 4 * c
    return OK, 0, counts, zero_voxels


@njit(cache=True, nogil=True)
def _count_chunk(flat, start, stop, labels, counts, n0, keys, slots, log_cap):
    """Count ``flat[start:stop]`` into the table (room for ``stop - start`` new labels)."""
    n = n0
    prev_v = np.uint64(0)
    prev_g = -1
    for i in range(start, stop):
        v = flat[i]
        if prev_g >= 0 and v == prev_v:
            counts[prev_g] += 1
            continue
        h, g = _hash_find(keys, slots, log_cap, v)
        if g < 0:
            g = n
            labels[g] = v
            counts[g] = 0
            keys[h] = v
            slots[h] = g
            n += 1
        counts[g] += 1
        prev_v = v
        prev_g = g
    return n


@njit(cache=True, nogil=True)
def array_label_counts(flat):
    """Distinct values of a flat uint64 array and their counts, sorted by value."""
    chunk = 4096
    cap = 2 * chunk
    labels = np.empty(cap, dtype=np.uint64)
    counts = np.empty(cap, dtype=np.int64)
    log_cap = 14
    keys = np.empty(1 << log_cap, dtype=np.uint64)
    slots = np.full(1 << log_cap, _EMPTY, dtype=np.int32)
    n = 0
    for start in range(0, flat.shape[0], chunk):
        stop = min(start + chunk, flat.shape[0])
        if n + chunk > cap:
            cap = 2 * (n + chunk)
            labels = _grow(labels, cap)
            counts = _grow(counts, cap)
        if 2 * (n + chunk) > (1 << log_cap):
            while 2 * (n + chunk) > (1 << log_cap):
                log_cap += 1
            keys, slots = _rehash(labels, n, log_cap)
        n = _count_chunk(flat, start, stop, labels, counts, n, keys, slots, log_cap)
    order = np.argsort(labels[:n])
    return labels[:n][order], counts[:n][order]


@njit(cache=True, nogil=True)
def remap_label_list(buf, n, sorted_keys, values):
    """Copy of ``buf`` whose ``n`` list entries are mapped through ``sorted_keys -> values``.

    Entries missing from the mapping are kept. The caller has validated the header.
    """
    out = buf.copy()
    m = sorted_keys.shape[0]
    for i in range(n):
        pos = 16 + 8 * i
        v = _read_u64(buf, pos)
        j = np.searchsorted(sorted_keys, v)
        if j < m and sorted_keys[j] == v:
            _write_u64(out, pos, values[j])
    return out
