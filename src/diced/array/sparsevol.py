"""Sparse volume encodings of DVID (reference §5) and LabelIndex block keys (§4.6).

Runs
    ``int32 (n, 4)`` arrays of rows ``[x, y, z, length]``: ``length`` voxels along +X starting
    at voxel ``(x, y, z)``. :func:`mask_to_runs` makes them from a boolean mask,
    :func:`runs_to_mask` and :func:`coords_from_runs` expand them, :func:`merge_runs` sorts and
    joins runs that touch along x (so runs computed block by block become DVID's merged runs).

Byte formats
    * legacy RLE, ``format=rles`` (§5.1): :func:`encode_rles` / :func:`decode_rles`;
    * streaming RLE, ``format=srles`` (§5.2): :func:`encode_srles` / :func:`decode_srles`;
    * binary blocks, ``format=blocks`` (§5.3): :func:`encode_binary_blocks` /
      :func:`decode_binary_blocks`;
    * coarse sparse volume (§5.4): :func:`block_spans` / :func:`decode_block_spans`, and the
      per-label ``sparsevols-coarse`` stream :func:`encode_coarse_stream` /
      :func:`decode_coarse_stream`.

Block keys
    :func:`encode_block_index` / :func:`decode_block_index` pack block coordinates into the
    u64 keys of ``LabelIndex.blocks``.

Bytes that do not decode raise :class:`~diced.errors.CorruptDataError`; bad arguments raise
:class:`~diced.errors.InvalidArgumentError`. The kernels live in
:mod:`diced.array._sparsevol_kernels`; importing this module imports numba.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from diced.array import _sparsevol_kernels as _k
from diced.errors import CorruptDataError, DtypeError, InvalidArgumentError

__all__ = [
    "RUN_DTYPE",
    "BinaryBlocks",
    "block_span_runs",
    "block_spans",
    "coords_from_runs",
    "decode_binary_blocks",
    "decode_block_index",
    "decode_block_spans",
    "decode_coarse_stream",
    "decode_rles",
    "decode_srles",
    "encode_binary_blocks",
    "encode_block_index",
    "encode_coarse_stream",
    "encode_rles",
    "encode_srles",
    "mask_to_runs",
    "merge_runs",
    "runs_to_mask",
]

RUN_DTYPE = np.dtype(np.int32)
"""dtype of run arrays (DVID writes i32 coordinates and lengths)."""

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_RLE_HEADER = struct.Struct("<BBBBII")  # descriptor, ndims, run dim, reserved, #voxels, #spans
_SPAN_BYTES = 16
_WIRE_RUN = np.dtype("<i4")
_BIN_HEADER = struct.Struct("<IIIQ")  # gx, gy, gz, label
_BIN_BLOCK = struct.Struct("<iiiB")  # x0, y0, z0, flag
_COARSE_LABEL = struct.Struct("<Qi")  # label, numSpans
_MAX_SUBBLOCKS_PER_AXIS = 64


# -- runs ---------------------------------------------------------------------------------------


def _empty_runs() -> np.ndarray:
    return np.zeros((0, 4), dtype=RUN_DTYPE)


def _as_runs(runs: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Validate and return ``runs`` as a C-contiguous int32 (n, 4) array."""
    arr = np.asarray(runs)
    if arr.size == 0:
        return _empty_runs()
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InvalidArgumentError(
            f"runs must have shape (n, 4) [x, y, z, length], got {arr.shape}"
        )
    if arr.dtype.kind not in "ui":
        raise DtypeError(f"runs must be integers, got dtype {arr.dtype}")
    if arr.dtype != RUN_DTYPE:
        if int(arr.min()) < _I32_MIN or int(arr.max()) > _I32_MAX:
            raise InvalidArgumentError("run coordinates and lengths must fit in int32")
        arr = arr.astype(RUN_DTYPE)
    if int(arr[:, 3].min()) < 0:
        raise InvalidArgumentError("run lengths must be non-negative")
    return np.ascontiguousarray(arr)


def _as_triple(value: Sequence[int], what: str) -> tuple[int, int, int]:
    try:
        triple = tuple(int(v) for v in value)
    except TypeError as exc:
        raise InvalidArgumentError(f"{what} must be 3 ints (z, y, x), got {value!r}") from exc
    if len(triple) != 3:
        raise InvalidArgumentError(f"{what} must be 3 ints (z, y, x), got {value!r}")
    return triple  # type: ignore[return-value]


def mask_to_runs(mask: np.ndarray, offset: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Runs along +X of the True voxels of a 3-d mask.

    Parameters
    ----------
    mask
        Boolean array (z, y, x); other dtypes are tested for non-zero.
    offset
        Voxel coordinate (z, y, x) of ``mask[0, 0, 0]``.

    Returns
    -------
    numpy.ndarray
        int32 (n, 4) rows ``[x, y, z, length]``, maximal within each row of the mask, in z, y,
        x order.
    """
    m = np.asarray(mask)
    if m.ndim != 3:
        raise InvalidArgumentError(f"mask must be 3-d (z, y, x), got shape {m.shape}")
    z0, y0, x0 = _as_triple(offset, "offset")
    lo = (z0, y0, x0)
    hi = (z0 + m.shape[0], y0 + m.shape[1], x0 + m.shape[2])
    if min(lo) < _I32_MIN or max(hi) - 1 > _I32_MAX:
        raise InvalidArgumentError(f"mask at offset {lo} exceeds the int32 coordinate range")
    m = np.ascontiguousarray(m if m.dtype == np.bool_ else m != 0)
    n = _k.count_runs(m)
    runs = np.empty((n, 4), dtype=RUN_DTYPE)
    if n:
        _k.fill_runs(m, z0, y0, x0, runs)
    return runs


def runs_to_mask(
    runs: np.ndarray, box_offset: Sequence[int], box_shape: Sequence[int]
) -> np.ndarray:
    """Paint runs into a boolean box; voxels outside the box are ignored (clipped).

    Parameters
    ----------
    runs
        (n, 4) rows ``[x, y, z, length]``.
    box_offset
        Voxel coordinate (z, y, x) of the box's first voxel.
    box_shape
        Shape (z, y, x) of the box.

    Returns
    -------
    numpy.ndarray
        bool array of shape ``box_shape``.
    """
    r = _as_runs(runs)
    z0, y0, x0 = _as_triple(box_offset, "box_offset")
    shape = _as_triple(box_shape, "box_shape")
    if min(shape) < 0:
        raise InvalidArgumentError(f"box_shape must be non-negative, got {shape}")
    mask = np.zeros(shape, dtype=bool)
    if len(r) and mask.size:
        _k.paint_runs(r, z0, y0, x0, mask)
    return mask


def coords_from_runs(runs: np.ndarray) -> np.ndarray:
    """Voxel coordinates of runs, as an int32 (n, 3) array of (z, y, x), run after run."""
    r = _as_runs(runs)
    total = int(r[:, 3].sum(dtype=np.int64)) if len(r) else 0
    out = np.empty((total, 3), dtype=RUN_DTYPE)
    if total:
        _k.expand_runs(r, total, out)
    return out


def merge_runs(runs: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Sort runs by (z, y, x) and join those that touch or overlap along x.

    Feeding the runs of several blocks (e.g. :func:`mask_to_runs` per block, concatenated or
    as a list) gives the runs of the union, merged across block boundaries the way DVID
    emits them, in a canonical sorted order. Zero-length runs are dropped.

    Parameters
    ----------
    runs
        (n, 4) rows ``[x, y, z, length]``, or a sequence of such 2-d arrays.

    Returns
    -------
    numpy.ndarray
        int32 (m, 4) sorted, maximal runs.
    """
    if isinstance(runs, (list, tuple)) and runs and all(np.ndim(p) == 2 for p in runs):
        r = np.concatenate([_as_runs(p) for p in runs])  # a sequence of run arrays
    else:
        r = _as_runs(runs)
    if len(r) == 0:
        return _empty_runs()
    order = np.lexsort((r[:, 0], r[:, 1], r[:, 2]))
    srt = np.ascontiguousarray(r[order])
    out = np.empty_like(srt)
    n = _k.merge_sorted_runs(srt, out)
    return out[:n].copy()


# -- legacy and streaming RLE -------------------------------------------------------------------


def _as_bytes(data: bytes | bytearray | memoryview) -> memoryview:
    try:
        return memoryview(data).cast("B")
    except TypeError as exc:
        raise InvalidArgumentError(
            f"expected a bytes-like object, got {type(data).__name__}"
        ) from exc


def _spans_to_bytes(runs: np.ndarray) -> bytes:
    return runs.astype(_WIRE_RUN, copy=False).tobytes()


def _spans_from_bytes(buf: memoryview, what: str) -> np.ndarray:
    runs = np.frombuffer(buf, dtype=_WIRE_RUN).reshape(-1, 4).astype(RUN_DTYPE)
    if len(runs) and int(runs[:, 3].min()) < 0:
        bad = int(np.argmax(runs[:, 3] < 0))
        raise CorruptDataError(f"{what}: span {bad} has negative length {int(runs[bad, 3])}")
    return runs


def _rle_header(n_spans: int) -> bytes:
    return _RLE_HEADER.pack(0, 3, 0, 0, 0, n_spans)


def encode_rles(runs: np.ndarray) -> bytes:
    """Legacy sparsevol RLE bytes (``format=rles``, §5.1) of runs.

    The 12-byte header (descriptor 0, 3 dims, run dimension 0, reserved 0, u32 voxel count
    written as 0 as DVID does, u32 span count) is followed by ``i32 x, y, z, length`` spans,
    little-endian. No runs give ``b""``: DVID's empty body.
    """
    r = _as_runs(runs)
    if len(r) == 0:
        return b""
    return _rle_header(len(r)) + _spans_to_bytes(r)


def decode_rles(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Runs of legacy sparsevol RLE bytes (§5.1); ``b""`` gives no runs.

    Raises
    ------
    CorruptDataError
        On a non-binary payload descriptor, dimensions other than 3, a run dimension other than
        X, a span count that disagrees with the length (12 + 16 * spans bytes exactly), or a
        negative run length.
    """
    buf = _as_bytes(data)
    if len(buf) == 0:
        return _empty_runs()
    return _decode_rle_body(buf, "legacy RLE")


def _decode_rle_body(buf: memoryview, what: str) -> np.ndarray:
    if len(buf) < _RLE_HEADER.size:
        raise CorruptDataError(f"{what}: {len(buf)} bytes is shorter than the 12-byte header")
    desc, ndims, rundim, _reserved, _nvox, nspans = _RLE_HEADER.unpack_from(buf)
    if desc != 0:
        raise CorruptDataError(
            f"{what}: payload descriptor 0x{desc:02x} is not supported (only 0x00, binary)"
        )
    if ndims != 3:
        raise CorruptDataError(f"{what}: {ndims} dimensions, expected 3")
    if rundim != 0:
        raise CorruptDataError(f"{what}: run dimension {rundim}, expected 0 (X)")
    expected = _RLE_HEADER.size + _SPAN_BYTES * nspans
    if len(buf) != expected:
        raise CorruptDataError(
            f"{what}: header says {nspans} spans ({expected} bytes) but got {len(buf)} bytes"
        )
    return _spans_from_bytes(buf[_RLE_HEADER.size :], what)


def encode_srles(runs: np.ndarray) -> bytes:
    """Streaming RLE bytes (``format=srles``, §5.2): the 16-byte spans with no header."""
    return _spans_to_bytes(_as_runs(runs))


def decode_srles(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Runs of streaming RLE bytes (§5.2).

    Raises
    ------
    CorruptDataError
        If the length is not a multiple of 16 or a run length is negative.
    """
    buf = _as_bytes(data)
    if len(buf) % _SPAN_BYTES:
        raise CorruptDataError(f"streaming RLE: {len(buf)} bytes is not a multiple of 16")
    return _spans_from_bytes(buf, "streaming RLE")


# -- coarse sparse volumes ----------------------------------------------------------------------


def block_span_runs(block_coords_zyx: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Spans ``[bx, by, bz, length]`` of a block list: maximal runs of consecutive x blocks.

    Parameters
    ----------
    block_coords_zyx
        (n, 3) block coordinates (z, y, x), in any order, duplicates allowed.

    Returns
    -------
    numpy.ndarray
        int32 (m, 4) spans from the sorted (z, then y, then x) unique block list.
    """
    c = np.asarray(block_coords_zyx)
    if c.size == 0:
        return _empty_runs()
    if c.ndim != 2 or c.shape[1] != 3:
        raise InvalidArgumentError(f"block coordinates must have shape (n, 3), got {c.shape}")
    if c.dtype.kind not in "ui":
        raise DtypeError(f"block coordinates must be integers, got dtype {c.dtype}")
    if int(c.min()) < _I32_MIN or int(c.max()) > _I32_MAX:
        raise InvalidArgumentError("block coordinates must fit in int32")
    c = np.unique(c.astype(np.int64), axis=0)  # sorted lexicographically: z, y, x
    z, y, x = c[:, 0], c[:, 1], c[:, 2]
    brk = np.ones(len(c), dtype=bool)
    brk[1:] = (z[1:] != z[:-1]) | (y[1:] != y[:-1]) | (x[1:] != x[:-1] + 1)
    starts = np.flatnonzero(brk)
    lengths = np.diff(np.append(starts, len(c)))
    return np.stack([x[starts], y[starts], z[starts], lengths], axis=1).astype(RUN_DTYPE)


def block_spans(block_coords_zyx: np.ndarray | Sequence[Sequence[int]]) -> bytes:
    """Coarse sparse volume bytes (``sparsevol-coarse``, §5.4) of a block list.

    The legacy RLE header (descriptor 0, 3, 0, 0, u32 0, u32 span count) followed by spans
    ``i32 bx, by, bz, length`` of :func:`block_span_runs`. An empty list gives the header with
    0 spans.
    """
    spans = block_span_runs(block_coords_zyx)
    return _rle_header(len(spans)) + _spans_to_bytes(spans)


def decode_block_spans(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Block coordinates (z, y, x) of coarse sparse volume bytes, as int32 (n, 3)."""
    buf = _as_bytes(data)
    if len(buf) == 0:
        return np.zeros((0, 3), dtype=RUN_DTYPE)
    return coords_from_runs(_decode_rle_body(buf, "coarse sparse volume"))


def encode_coarse_stream(
    items: Iterable[tuple[int, np.ndarray | Sequence[Sequence[int]]]],
) -> bytes:
    """``sparsevols-coarse`` bytes: per label ``u64 label, i32 numSpans, spans...``, no header.

    Parameters
    ----------
    items
        ``(label, block_coords_zyx)`` pairs, written in the order given.
    """
    out = bytearray()
    for label, coords in items:
        label = int(label)
        if not 0 <= label < 2**64:
            raise InvalidArgumentError(f"label {label} does not fit in uint64")
        spans = block_span_runs(coords)
        out += _COARSE_LABEL.pack(label, len(spans))
        out += _spans_to_bytes(spans)
    return bytes(out)


def decode_coarse_stream(data: bytes | bytearray | memoryview) -> list[tuple[int, np.ndarray]]:
    """``(label, block_coords_zyx)`` pairs of ``sparsevols-coarse`` bytes, in stream order."""
    buf = _as_bytes(data)
    out: list[tuple[int, np.ndarray]] = []
    pos = 0
    while pos < len(buf):
        if pos + _COARSE_LABEL.size > len(buf):
            raise CorruptDataError(f"coarse stream: truncated label header at byte {pos}")
        label, nspans = _COARSE_LABEL.unpack_from(buf, pos)
        pos += _COARSE_LABEL.size
        if nspans < 0:
            raise CorruptDataError(f"coarse stream: label {label} has negative span count {nspans}")
        end = pos + _SPAN_BYTES * nspans
        if end > len(buf):
            raise CorruptDataError(
                f"coarse stream: label {label} needs {nspans} spans but the data ends early"
            )
        spans = _spans_from_bytes(buf[pos:end], "coarse stream")
        out.append((label, coords_from_runs(spans)))
        pos = end
    return out


# -- binary blocks ------------------------------------------------------------------------------


class BinaryBlocks(NamedTuple):
    """Decoded ``format=blocks`` sparse volume."""

    label: int | None
    """Foreground label from the header, or None for empty data."""
    block_shape: tuple[int, int, int] | None
    """Block shape (z, y, x) = 8 * (gz, gy, gx), or None for empty data."""
    blocks: list[tuple[tuple[int, int, int], np.ndarray]]
    """``(voxel_offset_xyz, mask)`` per block in stream order; masks are bool (z, y, x)."""


def _subblock_view(mask: np.ndarray) -> np.ndarray:
    """(gz*gy*gx, 512) view of the 8³ sub-blocks of a (8gz, 8gy, 8gx) mask in z, y, x order."""
    nz, ny, nx = mask.shape
    gz, gy, gx = nz // 8, ny // 8, nx // 8
    sub = mask.reshape(gz, 8, gy, 8, gx, 8).transpose(0, 2, 4, 1, 3, 5)
    return sub.reshape(gz * gy * gx, 512)


def _encode_binary_block(mask: np.ndarray) -> bytes:
    sub = _subblock_view(mask)
    counts = sub.sum(axis=1)
    flags = np.where(counts == 0, 0, np.where(counts == 512, 1, 2)).astype(np.uint8)
    mixed = flags == 2
    sizes = 1 + 64 * mixed.astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    buf = np.zeros(int(sizes.sum()), dtype=np.uint8)
    buf[starts] = flags
    if mixed.any():
        packed = np.packbits(sub[mixed], axis=1, bitorder="little")  # (m, 64), LSB-first
        idx = starts[mixed][:, None] + 1 + np.arange(64)
        buf[idx] = packed
    return buf.tobytes()


def encode_binary_blocks(label: int, blocks: Iterable[tuple[Sequence[int], np.ndarray]]) -> bytes:
    """Binary-block sparse volume bytes (``format=blocks``, §5.3).

    Parameters
    ----------
    label
        The foreground label written in the header.
    blocks
        ``(voxel_offset_xyz, mask)`` pairs: the voxel coordinate (x, y, z) of the block's first
        voxel and a bool (z, y, x) mask of its foreground; every mask has the same shape, each
        axis a positive multiple of 8 (64³ for DVID).

    Returns
    -------
    bytes
        ``u32 gx, gy, gz, u64 label`` then per block with any foreground ``i32 x0, y0, z0``,
        a flag (1: all foreground, 2: mixed) and for mixed blocks one flag per 8³ sub-block
        (0, 1, or 2 followed by a 64-byte LSB-first mask). Blocks without foreground are
        skipped; if none is left the result is ``b""``, as DVID writes the header only with
        the first block.
    """
    label = int(label)
    if not 0 <= label < 2**64:
        raise InvalidArgumentError(f"label {label} does not fit in uint64")
    out = bytearray()
    shape: tuple[int, ...] | None = None
    for offset, mask in blocks:
        x0, y0, z0 = _as_triple(offset, "voxel offset (x, y, z)")
        if not all(_I32_MIN <= v <= _I32_MAX for v in (x0, y0, z0)):
            raise InvalidArgumentError(f"block offset {(x0, y0, z0)} does not fit in int32")
        m = np.asarray(mask)
        if m.dtype != np.bool_:
            m = m != 0
        if (
            m.ndim != 3
            or any(n <= 0 or n % 8 for n in m.shape)
            or any(n // 8 > _MAX_SUBBLOCKS_PER_AXIS for n in m.shape)
        ):
            raise InvalidArgumentError(
                f"block masks must be 3-d with each axis a multiple of 8 (at most "
                f"{8 * _MAX_SUBBLOCKS_PER_AXIS}), got shape {m.shape}"
            )
        if shape is None:
            shape = m.shape
        elif m.shape != shape:
            raise InvalidArgumentError(f"block masks differ in shape: {m.shape} vs {shape}")
        if not m.any():
            continue
        if not out:
            gz, gy, gx = (n // 8 for n in shape)
            out += _BIN_HEADER.pack(gx, gy, gz, label)
        if m.all():
            out += _BIN_BLOCK.pack(x0, y0, z0, 1)
        else:
            out += _BIN_BLOCK.pack(x0, y0, z0, 2)
            out += _encode_binary_block(np.ascontiguousarray(m))
    return bytes(out)


def decode_binary_blocks(data: bytes | bytearray | memoryview) -> BinaryBlocks:
    """Decode binary-block sparse volume bytes (§5.3); block flags 0, 1 and 2 are accepted.

    Raises
    ------
    CorruptDataError
        On a truncated header or block, a zero or oversized sub-block grid, or an unknown flag.
    """
    buf = _as_bytes(data)
    if len(buf) == 0:
        return BinaryBlocks(None, None, [])
    if len(buf) < _BIN_HEADER.size:
        raise CorruptDataError(
            f"binary blocks: {len(buf)} bytes is shorter than the 20-byte header"
        )
    gx, gy, gz, label = _BIN_HEADER.unpack_from(buf)
    if not all(0 < g <= _MAX_SUBBLOCKS_PER_AXIS for g in (gx, gy, gz)):
        raise CorruptDataError(f"binary blocks: bad sub-block grid gx, gy, gz = {gx}, {gy}, {gz}")
    shape = (8 * gz, 8 * gy, 8 * gx)
    arr = np.frombuffer(buf, dtype=np.uint8)
    blocks: list[tuple[tuple[int, int, int], np.ndarray]] = []
    pos = _BIN_HEADER.size
    while pos < len(buf):
        if pos + _BIN_BLOCK.size > len(buf):
            raise CorruptDataError(f"binary blocks: truncated block header at byte {pos}")
        x0, y0, z0, flag = _BIN_BLOCK.unpack_from(buf, pos)
        pos += _BIN_BLOCK.size
        if flag == 0:
            mask = np.zeros(shape, dtype=bool)
        elif flag == 1:
            mask = np.ones(shape, dtype=bool)
        elif flag == 2:
            mask = np.zeros(shape, dtype=bool)
            end = _k.decode_binary_block(arr, pos, gz, gy, gx, mask)
            if end == -1:
                raise CorruptDataError(
                    f"binary blocks: block at {(x0, y0, z0)} is truncated (data ends early)"
                )
            if end < -1:
                raise CorruptDataError(
                    f"binary blocks: block at {(x0, y0, z0)} has unknown sub-block flag {-2 - end}"
                )
            pos = int(end)
        else:
            raise CorruptDataError(
                f"binary blocks: block at {(x0, y0, z0)} has unknown flag {flag}"
            )
        blocks.append(((x0, y0, z0), mask))
    return BinaryBlocks(int(label), shape, blocks)


# -- LabelIndex block keys ----------------------------------------------------------------------

_FIELD_BITS = 21
_MAG_MASK = (1 << 20) - 1
_SIGN_BIT = 1 << 20


def _sign_magnitude(v: np.ndarray) -> np.ndarray:
    neg = v < 0
    return np.abs(v).astype(np.uint64) | (neg.astype(np.uint64) << np.uint64(20))


def encode_block_index(
    bx: int | np.ndarray, by: int | np.ndarray, bz: int | np.ndarray
) -> int | np.ndarray:
    """Pack block coordinates into LabelIndex block keys (DVID ``EncodeBlockIndex``, §4.6).

    Three 21-bit sign-magnitude fields: x in bits 0-20, y in 21-41, z in 42-62 (bit 20 of a
    field is the sign, bits 0-19 the magnitude).

    Parameters
    ----------
    bx, by, bz
        Block coordinates; ints or broadcastable integer arrays, each ``|c| < 2**20``.

    Returns
    -------
    int or numpy.ndarray
        A Python int when all inputs are scalars, else a uint64 array.
    """
    scalar = all(np.ndim(v) == 0 for v in (bx, by, bz))
    try:
        x, y, z = np.broadcast_arrays(*(np.asarray(v, dtype=np.int64) for v in (bx, by, bz)))
    except (OverflowError, ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"block coordinates must be integers: {exc}") from exc
    for name, v in (("x", x), ("y", y), ("z", z)):
        if v.size and int(np.abs(v).max()) > _MAG_MASK:
            raise InvalidArgumentError(
                f"block {name} coordinate out of range: |{name}| must be < 2**20"
            )
    key = (
        (_sign_magnitude(z) << np.uint64(42))
        | (_sign_magnitude(y) << np.uint64(21))
        | _sign_magnitude(x)
    )
    return int(key) if scalar else key


def decode_block_index(key: int | np.ndarray) -> tuple[int, int, int] | tuple[np.ndarray, ...]:
    """Unpack LabelIndex block keys into ``(bx, by, bz)`` (DVID ``DecodeBlockIndex``, §4.6).

    Bit 63 is ignored, as in DVID; a sign bit with zero magnitude decodes to 0.

    Returns
    -------
    tuple
        ``(bx, by, bz)`` as ints for a scalar key, else three int32 arrays of the key's shape.
    """
    scalar = np.ndim(key) == 0
    try:
        k = np.asarray(key, dtype=np.uint64)
    except (OverflowError, ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"block keys must be uint64 integers: {exc}") from exc
    out = []
    for shift in (0, 21, 42):
        field = (k >> np.uint64(shift)) & np.uint64((1 << _FIELD_BITS) - 1)
        mag = (field & np.uint64(_MAG_MASK)).astype(np.int32)
        neg = (field & np.uint64(_SIGN_BIT)) != 0
        out.append(np.where(neg, -mag, mag).astype(np.int32))
    if scalar:
        return int(out[0]), int(out[1]), int(out[2])
    return out[0], out[1], out[2]
