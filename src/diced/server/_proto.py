"""A tiny protobuf (proto3 wire format) encoder/decoder for DVID's messages.

Messages (``datatype/common/proto/labelops.proto`` and ``keyvalue.proto`` in DVID):

* ``SVCount{map<uint64, uint32> counts = 1; uint64 surface_mutid = 2}``
* ``LabelIndex{map<uint64, SVCount> blocks = 1; uint64 label = 2; uint64 last_mutid = 3;
  string last_mod_time = 4; string last_mod_user = 5; string last_mod_app = 6}``
* ``LabelIndices{repeated LabelIndex indices = 1}``
* ``MappingOp{uint64 mutid = 1; uint64 mapped = 2; repeated uint64 original = 3}``,
  ``MappingOps{repeated MappingOp mappings = 1}``
* ``KeyValue{string key = 1; bytes value = 2}``, ``KeyValues{repeated KeyValue kvs = 1}``,
  ``KeyRange{string key = 1; uint64 byte_start = 2; uint64 byte_end = 3}``,
  ``Keys{repeated string keys = 1; repeated KeyRange key_ranges = 2}``

Encoders write fields in field-number order and skip proto3 default values, as Go's
``proto.Marshal`` does; map entries are written sorted by key (Go's deterministic order).
The decoder accepts any valid encoding (packed or unpacked repeated scalars, unknown fields)
and raises :class:`ProtoError` on malformed input.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["ProtoError", "decode_keys", "decode_keyvalues", "decode_mapping_ops",
           "encode_keyvalues", "encode_label_index", "encode_label_indices", "fields"]


class ProtoError(ValueError):
    """Malformed protobuf bytes."""


def _varint(v: int) -> bytes:
    out = bytearray()
    v &= (1 << 64) - 1
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _uint_field(field: int, v: int) -> bytes:
    return _key(field, 0) + _varint(v) if v else b""


def _str_field(field: int, s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return _len_field(field, b) if b else b""


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & ((1 << 64) - 1), pos
        shift += 7
        if shift >= 70:
            raise ProtoError("varint too long")


def fields(data: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield ``(field number, wire type, value)``; value is an int or a byte view."""
    buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ProtoError("field number 0")
        if wire == 0:
            v, pos = _read_varint(buf, pos)
            yield field, wire, v
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            if pos + n > len(buf):
                raise ProtoError("truncated length-delimited field")
            yield field, wire, buf[pos:pos + n]
            pos += n
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ProtoError("truncated fixed64")
            yield field, wire, int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ProtoError("truncated fixed32")
            yield field, wire, int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        else:
            raise ProtoError(f"unsupported wire type {wire}")


def _packed_uints(v: memoryview) -> list[int]:
    out, pos = [], 0
    while pos < len(v):
        x, pos = _read_varint(v, pos)
        out.append(x)
    return out


def _as_str(v: int | memoryview, what: str) -> str:
    if not isinstance(v, memoryview):
        raise ProtoError(f"{what} must be a string")
    try:
        return bytes(v).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError(f"{what} is not UTF-8") from None


# --- label index -----------------------------------------------------------------------------

def encode_label_index(label: int, blocks: dict[int, dict[int, int]], *, last_mutid: int = 0,
                       last_mod_time: str = "", last_mod_user: str = "",
                       last_mod_app: str = "") -> bytes:
    """``LabelIndex``: ``blocks`` maps a packed block key (§4.6) to ``{supervoxel: count}``."""
    parts = []
    for bkey in sorted(blocks):
        counts = b"".join(_len_field(1, _uint_field(1, sv) + _uint_field(2, n))
                          for sv, n in sorted(blocks[bkey].items()))
        entry = _uint_field(1, bkey) + _len_field(2, counts)
        parts.append(_len_field(1, entry))
    parts += [_uint_field(2, label), _uint_field(3, last_mutid), _str_field(4, last_mod_time),
              _str_field(5, last_mod_user), _str_field(6, last_mod_app)]
    return b"".join(parts)


def encode_label_indices(indices: list[bytes]) -> bytes:
    return b"".join(_len_field(1, x) for x in indices)


# --- mapping ops -----------------------------------------------------------------------------

def decode_mapping_ops(data: bytes) -> list[tuple[int, int, list[int]]]:
    """``MappingOps`` -> ``[(mutid, mapped, [original, ...]), ...]``."""
    out = []
    for f, w, v in fields(data):
        if f != 1:
            continue
        if w != 2:
            raise ProtoError("MappingOps.mappings must be messages")
        mutid, mapped, orig = 0, 0, []
        for f2, w2, v2 in fields(v):  # type: ignore[arg-type]
            if f2 == 1 and w2 == 0:
                mutid = int(v2)  # type: ignore[arg-type]
            elif f2 == 2 and w2 == 0:
                mapped = int(v2)  # type: ignore[arg-type]
            elif f2 == 3:
                orig += _packed_uints(v2) if w2 == 2 else [int(v2)]  # type: ignore[arg-type]
        out.append((mutid, mapped, orig))
    return out


# --- keyvalue --------------------------------------------------------------------------------

def encode_keyvalues(items: list[tuple[str, bytes]]) -> bytes:
    """``KeyValues{kvs: [KeyValue{key, value}]}``."""
    return b"".join(_len_field(1, _str_field(1, k) + _str_field(2, v)) for k, v in items)


def decode_keyvalues(data: bytes) -> list[tuple[str, bytes]]:
    out = []
    for f, w, v in fields(data):
        if f != 1:
            continue
        if w != 2:
            raise ProtoError("KeyValues.kvs must be messages")
        key, value = "", b""
        for f2, w2, v2 in fields(v):  # type: ignore[arg-type]
            if f2 == 1:
                key = _as_str(v2, "KeyValue.key")
            elif f2 == 2:
                if not isinstance(v2, memoryview):
                    raise ProtoError("KeyValue.value must be bytes")
                value = bytes(v2)
        out.append((key, value))
    return out


def decode_keys(data: bytes) -> tuple[list[str], list[tuple[str, int, int]]]:
    """``Keys`` -> ``(keys, [(key, byte_start, byte_end), ...])``."""
    keys: list[str] = []
    ranges: list[tuple[str, int, int]] = []
    for f, _w, v in fields(data):
        if f == 1:
            keys.append(_as_str(v, "Keys.keys"))
        elif f == 2:
            if not isinstance(v, memoryview):
                raise ProtoError("Keys.key_ranges must be messages")
            key, start, end = "", 0, 0
            for f2, w2, v2 in fields(v):
                if f2 == 1:
                    key = _as_str(v2, "KeyRange.key")
                elif f2 == 2 and w2 == 0:
                    start = int(v2)  # type: ignore[arg-type]
                elif f2 == 3 and w2 == 0:
                    end = int(v2)  # type: ignore[arg-type]
            ranges.append((key, start, end))
    return keys, ranges
