"""Small HTTP helpers shared by the route modules: DVID-style errors, JSON and parameter parsing.

Every parameter that comes from a URL or a body goes through a parser here, which raises
:class:`HTTPError` (status 400 and a plain-text message, as DVID answers) on bad input.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.responses import Response

__all__ = [
    "MAX_VOXELS",
    "HTTPError",
    "json_body",
    "json_response",
    "parse_bool",
    "parse_int",
    "parse_label",
    "parse_point",
    "parse_shape",
    "query_int",
    "text_response",
]

#: Largest number of voxels one raw/isotropic/blocks request may cover: 64 Mi voxels, i.e.
#: 512 MiB of uint64 labels or a 400³ uint8 cube (DVID's default MaxDataRequest is similar).
MAX_VOXELS = 1 << 26
#: Largest absolute coordinate accepted (DVID's block keys hold 32-bit block coordinates).
MAX_COORD = 1 << 31
#: Labels are u64 in DVID but JSON clients use doubles; accept the full u64 range.
MAX_LABEL = (1 << 64) - 1

_INT = re.compile(r"^[+-]?\d{1,20}$")


class HTTPError(Exception):
    """An error answered with ``status`` and a plain-text ``message`` (DVID's style)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad(message: str) -> HTTPError:
    return HTTPError(400, message)


def not_found(message: str) -> HTTPError:
    return HTTPError(404, message)


def text_response(message: str, status: int = 200) -> Response:
    return Response(message if message.endswith("\n") else message + "\n", status_code=status,
                    media_type="text/plain; charset=utf-8")


def json_response(obj: Any, status: int = 200) -> Response:
    """JSON as DVID sends it (compact, UTF-8, ``application/json``)."""
    body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    return Response(body, status_code=status, media_type="application/json")


def json_body(body: bytes, what: str = "request body", *, empty: Any = ...) -> Any:
    """Parse a JSON body; ``empty`` is returned for an empty body when given."""
    if not body.strip():
        if empty is not ...:
            return empty
        raise bad(f"{what} must be JSON, got an empty body")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"{what} is not valid JSON: {exc}") from None


def parse_int(text: str, what: str, *, lo: int = -MAX_COORD, hi: int = MAX_COORD) -> int:
    if not isinstance(text, str) or not _INT.match(text.strip()):
        raise bad(f"{what} must be an integer, got {text!r}")
    v = int(text)
    if not lo <= v <= hi:
        raise bad(f"{what} {v} is outside {lo}..{hi}")
    return v


def parse_label(text: str, what: str = "label") -> int:
    return parse_int(text, what, lo=0, hi=MAX_LABEL)


def as_label(value: Any, what: str = "label") -> int:
    """A label from JSON (int, or a float with an integral value, or a decimal string)."""
    if isinstance(value, bool):
        raise bad(f"{what} must be an integer label, got {value!r}")
    if isinstance(value, int):
        v = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer() or isinstance(value, str) and value.strip().isdigit():
        v = int(value)
    else:
        raise bad(f"{what} must be an integer label, got {value!r}")
    if not 0 <= v <= MAX_LABEL:
        raise bad(f"{what} {v} is outside the uint64 range")
    return v


def label_list(obj: Any, what: str, *, limit: int = 1_000_000) -> list[int]:
    if not isinstance(obj, list):
        raise bad(f"{what} must be a JSON array of labels")
    if len(obj) > limit:
        raise bad(f"{what}: at most {limit} labels per request")
    return [as_label(v, what) for v in obj]


def point_list(obj: Any, what: str = "points", *, limit: int = 10_000_000) -> list[tuple[int, int, int]]:
    """``[[x, y, z], ...]`` from JSON."""
    if not isinstance(obj, list):
        raise bad(f"{what} must be a JSON array of [x, y, z] points")
    if len(obj) > limit:
        raise bad(f"{what}: at most {limit} points per request")
    out = []
    for p in obj:
        if not isinstance(p, list) or len(p) != 3 or not all(
                isinstance(c, int) and not isinstance(c, bool) and -MAX_COORD <= c <= MAX_COORD
                for c in p):
            raise bad(f"{what}: each point must be [x, y, z] integers, got {p!r}")
        out.append((p[0], p[1], p[2]))
    return out


def parse_point(text: str, what: str, n: int = 3) -> tuple[int, ...]:
    """``"x_y_z"`` (also ``,``-separated) into a tuple of ``n`` ints (DVID order: x first)."""
    parts = re.split(r"[_,]", text) if isinstance(text, str) else []
    if len(parts) != n:
        raise bad(f"{what} must be {n} integers separated by '_', got {text!r}")
    return tuple(parse_int(p, what) for p in parts)


def parse_shape(text: str, what: str, n: int = 3) -> tuple[int, ...]:
    """A size: ``n`` positive ints, product at most :data:`MAX_VOXELS`."""
    size = parse_point(text, what, n)
    if any(s <= 0 for s in size):
        raise bad(f"{what} must be positive, got {text!r}")
    total = 1
    for s in size:
        total *= s
    if total > MAX_VOXELS:
        raise bad(f"{what} {text} covers {total} voxels; at most {MAX_VOXELS} per request")
    return size


_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no", ""}


def parse_bool(value: str | None, what: str, default: bool = False) -> bool:
    if value is None:
        return default
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise bad(f"query {what} must be true or false, got {value!r}")


def query_int(query: Any, name: str, default: int, *, lo: int = -MAX_COORD,
              hi: int = MAX_COORD) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    return parse_int(value, f"query {name}", lo=lo, hi=hi)
