"""Keyvalue endpoints (DVID ``keyvalue``; dvid-reference §4.7): ``keys``, ``keyrange``,
``keyrangevalues``, ``key`` (GET with byte ranges, POST, DELETE, HEAD), ``keyvalues``.

Keys come from the URL path after ``key/`` (everything after it, so keys may hold ``/``).
They are stored hex-encoded by diced, so no key can reach outside its instance; the server
still refuses control characters, ``..`` segments and keys over :data:`MAX_KEY_BYTES`.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

from starlette.responses import Response

from diced.server._http import HTTPError, bad, json_body, parse_bool, parse_int
from diced.server._proto import ProtoError, decode_keys, decode_keyvalues, encode_keyvalues
from diced.server.registry import Endpoint, InstanceRequest, InstanceType, register
from diced.server.routes_array import common_endpoints

__all__ = ["MAX_KEY_BYTES", "check_key"]

#: Longest key accepted (UTF-8 bytes); LMDB keys are at most 511 bytes and diced hex-encodes.
MAX_KEY_BYTES = 200


def check_key(key: Any, what: str = "key") -> str:
    """Validate a keyvalue key from a request (length, control characters, ``..``); returns it."""
    if not isinstance(key, str) or not key:
        raise bad(f"{what} must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise bad(f"{what} is longer than {MAX_KEY_BYTES} bytes")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise bad(f"{what} {key!r} contains control characters")
    if any(part == ".." for part in key.split("/")):
        raise bad(f"{what} {key!r} contains a '..' segment")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise bad(f"{what} is not valid UTF-8") from None
    return key


def _info(repo: Any, name: str, record: dict[str, Any], handle: Any) -> dict[str, Any]:
    from diced.server.instance_json import base_json

    return {"Base": base_json(repo, name, record, "LZ4 compression, level -1"), "Extended": {}}


def _json_keys(keys: list[str]) -> Response:
    return Response(json.dumps(keys, separators=(",", ":"), ensure_ascii=False).encode(),
                    media_type="application/json")


def _keys(req: InstanceRequest) -> Response:
    return _json_keys(req.instance().keys())


def _range_args(req: InstanceRequest) -> tuple[str, str]:
    if len(req.parts) != 2:
        raise bad(f"expected {req.keyword}/<key1>/<key2>")
    return check_key(req.parts[0], "key1"), check_key(req.parts[1], "key2")


def _keyrange(req: InstanceRequest) -> Response:
    k1, k2 = _range_args(req)
    return _json_keys(req.instance().keys(k1, k2) if k1 <= k2 else [])


def _json_values(items: list[tuple[str, bytes | None]]) -> Response:
    parts = []
    for k, v in items:
        if v is None or v == b"":
            text = "{}"
        else:
            try:
                json.loads(v)
            except (ValueError, UnicodeDecodeError):
                raise bad(f"value of key {k!r} is not JSON") from None
            text = v.decode("utf-8")
        parts.append(json.dumps(k, ensure_ascii=False) + ":" + text)
    return Response(("{" + ",".join(parts) + "}").encode(), media_type="application/json")


def _tar(items: list[tuple[str, bytes | None]]) -> Response:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for k, v in items:
            data = v or b""
            info = tarfile.TarInfo(name=k)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return Response(buf.getvalue(), media_type="application/tar")


def _keyrangevalues(req: InstanceRequest) -> Response:
    k1, k2 = _range_args(req)
    kv = req.instance()
    items = kv.items(k1, k2) if k1 <= k2 else []
    if parse_bool(req.query.get("json"), "json"):
        return _json_values(items)
    if parse_bool(req.query.get("tar"), "tar"):
        return _tar(items)
    return Response(encode_keyvalues(items), media_type="application/octet-stream")


def _key_of(req: InstanceRequest) -> str:
    if not req.parts:
        raise bad("DVID requires a key to follow 'key' command")
    return check_key("/".join(req.parts))


def _parse_range(header: str, n: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` (one range) -> inclusive (start, end); None if not satisfiable."""
    if not header.startswith("bytes=") or "," in header:
        raise bad(f"only one 'bytes=start-end' range is supported, got {header!r}")
    a, _, b = header[6:].strip().partition("-")
    if a == "":
        if not b.isdigit():
            raise bad(f"bad Range header {header!r}")
        k = int(b)
        return (max(0, n - k), n - 1) if k and n else None
    if not a.isdigit() or (b and not b.isdigit()):
        raise bad(f"bad Range header {header!r}")
    start, end = int(a), (int(b) if b else n - 1)
    if start >= n or end < start:
        return None
    return start, min(end, n - 1)


def _key(req: InstanceRequest) -> Response:
    key = _key_of(req)
    if req.method == "POST":
        req.writable()[key] = req.body
        return Response(b"", 200)
    if req.method == "DELETE":
        req.writable().delete(key)
        return Response(b"", 200)
    value = req.instance().get(key)
    if value is None:
        if req.method == "HEAD":
            return Response(b"", 404)
        raise HTTPError(404, f'Key "{key}" not found')
    headers = {"Accept-Ranges": "bytes"}
    if req.method == "HEAD":
        return Response(b"", 200, headers=headers)
    q = req.query
    rng = None
    if q.get("byte_start") is not None or q.get("byte_end") is not None:
        start = parse_int(q.get("byte_start") or "0", "byte_start", lo=0, hi=1 << 62)
        end = parse_int(q.get("byte_end") or str(len(value) - 1), "byte_end", lo=0, hi=1 << 62)
        if start >= len(value) or end < start:
            raise HTTPError(416, f"byte range {start}-{end} is outside the {len(value)}-byte value")
        rng = (start, min(end, len(value) - 1))
    elif req.request.headers.get("range"):
        rng = _parse_range(req.request.headers["range"], len(value))
        if rng is None:
            return Response(b"", 416, headers={"Content-Range": f"bytes */{len(value)}"})
    if rng is not None:
        a, b = rng
        headers["Content-Range"] = f"bytes {a}-{b}/{len(value)}"
        return Response(value[a:b + 1], 206, media_type="application/octet-stream",
                        headers=headers)
    return Response(value, media_type="application/octet-stream", headers=headers)


def _requested(req: InstanceRequest) -> tuple[list[str], list[tuple[str, int, int]]]:
    """Keys (and byte ranges) asked for by a GET keyvalues body (protobuf Keys or JSON)."""
    q = req.query
    if any(parse_bool(q.get(k), k) for k in ("json", "jsontar", "tar")):
        doc = json_body(req.body, "keyvalues request body")
        if not isinstance(doc, list):
            raise bad("keyvalues JSON body must be a list of keys or of "
                      '{"key", "byte_start", "byte_end"} objects')
        keys, ranges = [], []
        for item in doc:
            if isinstance(item, str):
                keys.append(check_key(item))
            elif isinstance(item, dict) and isinstance(item.get("key"), str):
                s, e = item.get("byte_start", 0), item.get("byte_end", 0)
                if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                           for v in (s, e)):
                    raise bad("byte_start and byte_end must be non-negative integers")
                ranges.append((check_key(item["key"]), s, e))
            else:
                raise bad(f"bad keyvalues request item {item!r}")
        return keys, ranges
    try:
        keys, ranges = decode_keys(req.body)
    except ProtoError as exc:
        raise bad(f"keyvalues body is not a protobuf Keys message: {exc}") from None
    return [check_key(k) for k in keys], [(check_key(k), s, e) for k, s, e in ranges]


def _keyvalues(req: InstanceRequest) -> Response:
    if req.method == "POST":
        try:
            items = decode_keyvalues(req.body)
        except ProtoError as exc:
            raise bad(f"keyvalues body is not a protobuf KeyValues message: {exc}") from None
        data = {check_key(k): v for k, v in items}
        if len(data) > 100_000:
            raise bad("at most 100000 keys per POST keyvalues")
        req.writable().update(data)
        return Response(b"", 200)
    keys, ranges = _requested(req)
    if len(keys) + len(ranges) > 100_000:
        raise bad("at most 100000 keys per GET keyvalues")
    kv = req.instance()
    vals = kv.get_many(keys) if keys else []
    items: list[tuple[str, bytes | None]] = list(zip(keys, vals, strict=True))
    if ranges:
        rvals = kv.get_many([k for k, _, _ in ranges])
        for (k, s, e), v in zip(ranges, rvals, strict=True):
            items.append((k, None if v is None else (v[s:e + 1] if e or s else v)))
    q = req.query
    if parse_bool(q.get("json"), "json"):
        return _json_values(items)
    if parse_bool(q.get("jsontar"), "jsontar") or parse_bool(q.get("tar"), "tar"):
        return _tar(items)
    return Response(encode_keyvalues([(k, v or b"") for k, v in items]),
                    media_type="application/octet-stream")


def _create(repo: Any, name: str, settings: dict[str, str]) -> Any:
    from diced.server.settings import create_props

    kv = repo.create_keyvalue(name)
    create_props(repo, name, settings)
    return kv


def build_type() -> InstanceType:
    """The ``keyvalue`` HTTP type with its endpoints."""
    t = InstanceType(name="keyvalue", url="github.com/janelia-flyem/dvid/datatype/keyvalue",
                     info=_info, create=_create, help="a versioned key-value store")
    t.endpoints.update(common_endpoints())
    E = Endpoint
    t.endpoints.update({
        "keys": E({"GET": _keys}, "JSON list of every key"),
        "keyrange": E({"GET": _keyrange}, "<k1>/<k2>: keys with k1 <= key <= k2"),
        "keyrangevalues": E({"GET": _keyrangevalues},
                            "<k1>/<k2>: protobuf KeyValues, ?json=true or ?tar=true"),
        "key": E({"GET": _key, "POST": _key, "DELETE": _key},
                 "<key>: raw value (byte_start/byte_end or Range), POST, DELETE, HEAD"),
        "keyvalues": E({"GET": _keyvalues, "POST": _keyvalues},
                       "GET body protobuf Keys (or JSON with ?json=true); POST KeyValues"),
    })
    return t


register(build_type())
