"""DVID's storage forms for bytes: key-value value wrapping and the POST /blocks stream.

:func:`dvid_serialize` / :func:`dvid_deserialize` wrap and unwrap values the way DVID stores
them in its key-value store (``docs/dvid-reference.md`` §1.8: format byte, optional CRC32,
gzip / lz4 / no compression). :func:`parse_block_stream` / :func:`write_block_stream` read and
write the labelmap POST /blocks stream (§4.5). The gzip and lz4 helpers here are also the
``gzip`` and ``lz4`` outer codecs of :class:`~diced.array.codecs.labelblock.LabelBlockCodec`.

Nothing here needs numba; :mod:`diced.array.codecs.labelblock` re-exports these functions.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

import numpy as np

from diced.errors import CorruptDataError, InvalidArgumentError

__all__ = [
    "MAX_STREAM_BLOCK_BYTES",
    "MAX_STREAM_BYTES",
    "dvid_deserialize",
    "dvid_serialize",
    "parse_block_stream",
    "write_block_stream",
]

BytesLike = bytes | bytearray | memoryview | np.ndarray


def _lz4_block():
    try:
        import lz4.block
    except ImportError as exc:  # pragma: no cover - lz4 is a dependency
        raise InvalidArgumentError("the lz4 outer codec needs the 'lz4' package "
                                   "(pip install lz4)") from exc
    return lz4.block


def _lz4_compress(data: bytes, level: int) -> bytes:
    mode = "high_compression" if level > 0 else "default"
    return _lz4_block().compress(data, mode=mode, compression=level, store_size=True)


def _lz4_decompress(data: BytesLike, limit: int) -> bytes:
    """Decompress ``u32 LE size`` + raw LZ4 block (the lz4.block / DVID 0x80 layout)."""
    if len(data) < 4:
        raise CorruptDataError("lz4 data is shorter than its 4-byte size prefix")
    size = struct.unpack_from("<I", data, 0)[0]
    if size > limit:
        raise CorruptDataError(f"lz4 data claims {size} bytes, more than the {limit} allowed")
    try:
        return _lz4_block().decompress(memoryview(data)[4:], uncompressed_size=size)
    except Exception as exc:  # lz4 raises LZ4BlockError and others
        raise CorruptDataError(f"corrupt lz4 data: {exc}") from exc


def _gzip_compress(data: bytes, level: int) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def _gzip_decompress(data: BytesLike, limit: int | None = None) -> bytes:
    """Decompress one or more concatenated gzip members, at most ``limit`` bytes."""
    parts: list[bytes] = []
    total = 0
    rest = bytes(data)
    try:
        while True:
            d = zlib.decompressobj(31)
            chunk = d.decompress(rest, 0 if limit is None else limit - total + 1)
            total += len(chunk)
            parts.append(chunk)
            if limit is not None and (total > limit or d.unconsumed_tail):
                raise CorruptDataError(f"gzip data expands beyond the {limit} bytes allowed")
            if not d.eof:
                raise CorruptDataError("gzip data is truncated")
            rest = d.unused_data
            if not rest:
                break
            if not rest.startswith(b"\x1f\x8b"):  # Go's gzip reader rejects this too
                raise CorruptDataError("gzip data is followed by trailing garbage")
    except zlib.error as exc:
        raise CorruptDataError(f"corrupt gzip data: {exc}") from exc
    return b"".join(parts)



_COMPRESSION_CODES = {"none": 0, "snappy": 1, "gzip": 2, "lz4": 4, "jpeg": 5}
_CODE_NAMES = {v: k for k, v in _COMPRESSION_CODES.items()}


def dvid_serialize(block_bytes: BytesLike, compression: str = "gzip", checksum: bool = False,
                   level: int | None = None) -> bytes:
    """Wrap bytes the way DVID stores them in its key-value store.

    Parameters
    ----------
    block_bytes
        The payload, usually a DVID block serialization.
    compression
        ``"gzip"`` (labelmap's storage form: ``0x40`` + gzip), ``"lz4"`` (``0x80`` + ``u32 LE``
        size + LZ4 block) or ``"none"`` (``0x00`` + bytes).
    checksum
        Add a CRC32 (IEEE, LE) of the payload after the format byte. As in DVID, gzip forces no
        checksum, so ``checksum=True`` with gzip raises.
    level
        Compression level (gzip default 6; lz4 default 0 = fast mode).

    Returns
    -------
    bytes
        ``[format byte][optional CRC32][payload]``; empty input gives an empty value.
    """
    data = bytes(block_bytes)
    if compression not in ("gzip", "lz4", "none"):
        raise InvalidArgumentError(f"compression must be 'gzip', 'lz4' or 'none', got {compression!r}")
    if checksum and compression == "gzip":
        raise InvalidArgumentError("DVID stores gzip values without a checksum")
    if not data:
        return b""
    if compression == "gzip":
        payload = _gzip_compress(data, 6 if level is None else level)
    elif compression == "lz4":
        payload = _lz4_compress(data, 0 if level is None else level)
    else:
        payload = data
    fmt = (_COMPRESSION_CODES[compression] & 0x07) << 5 | (int(checksum) & 0x03) << 3
    crc = struct.pack("<I", zlib.crc32(payload)) if checksum else b""
    return bytes([fmt]) + crc + payload


def dvid_deserialize(value: BytesLike, max_size: int | None = None) -> bytes:
    """Unwrap a value stored by DVID: ``0x00`` none, ``0x40`` gzip, ``0x80`` lz4, CRC32 flag.

    Parameters
    ----------
    value
        The stored value.
    max_size
        Refuse payloads that decompress to more than this many bytes (guards against
        decompression bombs). ``None`` means no limit.

    Raises
    ------
    CorruptDataError
        On an unknown or unsupported format byte (snappy, JPEG), a checksum mismatch, or
        undecodable compressed data.
    """
    data = memoryview(bytes(value)) if not isinstance(value, bytes) else memoryview(value)
    if len(data) == 0:
        return b""
    fmt = data[0]
    if fmt & 0x07:
        raise CorruptDataError(f"DVID value has reserved bits set in format byte 0x{fmt:02x}")
    code, check = fmt >> 5, (fmt >> 3) & 0x03
    pos = 1
    if check == 1:
        if len(data) < 5:
            raise CorruptDataError("DVID value is truncated inside its CRC32")
        want = struct.unpack_from("<I", data, 1)[0]
        pos = 5
        if zlib.crc32(data[pos:]) != want:
            raise CorruptDataError("DVID value fails its CRC32 check")
    elif check != 0:
        raise CorruptDataError(f"DVID value has unknown checksum type {check}")
    payload = data[pos:]
    if code == 0:
        if max_size is not None and len(payload) > max_size:
            raise CorruptDataError(f"DVID value holds more than {max_size} bytes")
        return bytes(payload)
    if code == 2:
        return _gzip_decompress(payload, max_size)
    if code == 4:
        if len(payload) >= 4 and struct.unpack_from("<I", payload, 0)[0] == 0:
            return bytes(payload[4:])  # legacy: stored length 0, data kept as-is
        return _lz4_decompress(payload, max_size if max_size is not None else 2**31 - 1)
    name = _CODE_NAMES.get(code, f"code {code}")
    raise CorruptDataError(f"DVID value uses unsupported compression {name!r}")


_STREAM_HEADER = struct.Struct("<iiii")


#: default limit on what :func:`parse_block_stream` decompresses in total
MAX_STREAM_BYTES = 64 << 20
#: default limit per block: the largest possible serialization of a 64³ block
MAX_STREAM_BLOCK_BYTES = 16 + 8 * 64 ** 3 + 2 * 512 + 4 * 64 ** 3 + 64 * 9 * 512


def parse_block_stream(data: BytesLike, decompress: bool = True, *,
                       max_bytes: int | None = MAX_STREAM_BYTES,
                       max_block_bytes: int | None = MAX_STREAM_BLOCK_BYTES,
                       ) -> list[tuple[tuple[int, int, int], bytes]]:
    """Split a labelmap POST /blocks stream into ``((bx, by, bz), block_bytes)`` items.

    The stream is a sequence of ``i32 bx, i32 by, i32 bz, i32 nbytes`` (LE) headers, each
    followed by ``nbytes`` of gzip(DVID block).

    Parameters
    ----------
    data
        The stream bytes.
    decompress
        Gunzip each payload (default). With ``False`` the gzip bytes are returned verbatim,
        which is what DVID stores behind its 0x40 format byte.
    max_bytes
        Refuse streams whose blocks decompress to more than this in total (default
        :data:`MAX_STREAM_BYTES`, 64 MiB; ``None``: no limit). Guards against
        decompression bombs: gzip expands up to 1000-fold.
    max_block_bytes
        Refuse a block that decompresses to more than this (default: the largest
        serialization of a 64³ block, DVID's label block size; ``None``: no limit).

    Raises
    ------
    CorruptDataError
        If a header or payload is truncated, a length is not positive, gzip fails, or a
        limit is exceeded.
    """
    view = memoryview(data).cast("B")
    items: list[tuple[tuple[int, int, int], bytes]] = []
    pos = 0
    total = 0
    while pos < len(view):
        if pos + 16 > len(view):
            raise CorruptDataError(f"block stream is truncated inside the header at byte {pos}")
        bx, by, bz, nbytes = _STREAM_HEADER.unpack_from(view, pos)
        pos += 16
        if nbytes <= 0:
            raise CorruptDataError(f"block ({bx}, {by}, {bz}) has length {nbytes} in the stream")
        if pos + nbytes > len(view):
            raise CorruptDataError(f"block stream is truncated inside block ({bx}, {by}, {bz})")
        payload = view[pos:pos + nbytes]
        pos += nbytes
        if not decompress:
            items.append(((bx, by, bz), bytes(payload)))
            continue
        limits = [x for x in (max_block_bytes,
                              None if max_bytes is None else max_bytes - total) if x is not None]
        try:
            block = _gzip_decompress(payload, min(limits) if limits else None)
        except CorruptDataError as exc:
            raise CorruptDataError(f"block ({bx}, {by}, {bz}) of the stream: {exc} "
                                   f"(limits: {max_block_bytes} bytes per block, "
                                   f"{max_bytes} in total)") from exc
        total += len(block)
        items.append(((bx, by, bz), block))
    return items


def write_block_stream(items: Iterable[tuple[tuple[int, int, int], BytesLike]],
                       level: int = 6, compressed: bool = False) -> bytes:
    """Build a labelmap POST /blocks stream from ``((bx, by, bz), block_bytes)`` items.

    Parameters
    ----------
    items
        Block coordinates and DVID block serializations.
    level
        gzip level for the payloads.
    compressed
        The items already hold gzip bytes (as returned by ``parse_block_stream(...,
        decompress=False)``); write them verbatim.
    """
    parts: list[bytes] = []
    for coord, block in items:
        if len(coord) != 3:
            raise InvalidArgumentError(f"block coordinates must be (bx, by, bz), got {coord!r}")
        payload = bytes(block) if compressed else _gzip_compress(bytes(block), level)
        bx, by, bz = (int(c) for c in coord)
        parts.append(_STREAM_HEADER.pack(bx, by, bz, len(payload)))
        parts.append(payload)
    return b"".join(parts)
