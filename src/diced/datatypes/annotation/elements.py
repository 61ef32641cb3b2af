"""Annotation elements (DVID's §6.2 JSON): validation into one canonical form, and the key
layout of the annotation key spaces. Pure functions, no I/O."""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Sequence
from typing import Any

from diced.errors import InvalidArgumentError

__all__ = [
    "KINDS",
    "RELS",
    "block_ckey",
    "block_of",
    "normalize_element",
    "parse_pos_key",
    "point",
    "pos_key",
    "public_element",
]

#: element kinds, in DVID's numeric order
KINDS = ("Unknown", "PostSyn", "PreSyn", "Gap", "Note")
#: relationship types, in DVID's numeric order
RELS = ("UnknownRelationship", "PostSynTo", "PreSynTo", "ConvergentTo", "GroupedWith")

_BIAS = 1 << 31  # int32 coordinates (and block coordinates) as sortable unsigned hex
_I32 = (-(1 << 31), (1 << 31) - 1)

Pos = tuple[int, int, int]


def _point(value: Any, what: str) -> Pos:
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise InvalidArgumentError(f"{what} must be [x, y, z], got {value!r}")
    items = list(value)  # lists, tuples, numpy arrays
    if len(items) != 3:
        raise InvalidArgumentError(f"{what} must be [x, y, z], got {value!r}")
    out = []
    for v in items:
        if isinstance(v, bool):
            raise InvalidArgumentError(f"{what} must hold integers, got {value!r}")
        try:
            v = operator.index(v)
        except TypeError:
            raise InvalidArgumentError(f"{what} must hold integers, got {value!r}") from None
        if not _I32[0] <= v <= _I32[1]:
            raise InvalidArgumentError(f"{what} {value!r} is outside the int32 range")
        out.append(v)
    return out[0], out[1], out[2]


def point(value: Any, what: str = "position") -> Pos:
    """A validated ``(x, y, z)`` int32 point."""
    return _point(value, what)


def normalize_element(el: Any) -> dict[str, Any]:
    """An element in canonical stored form ``{"Pos", "Kind", "Tags", "Prop", "Rels"}``.

    ``Kind`` defaults to ``"Unknown"``; ``Tags``, ``Prop`` and ``Rels`` may be missing or
    ``null`` (stored as empty). Raises :class:`InvalidArgumentError` on anything else."""
    if not isinstance(el, dict):
        raise InvalidArgumentError(f"an element is a JSON object, got {type(el).__name__}")
    unknown = set(el) - {"Pos", "Kind", "Tags", "Prop", "Rels"}
    if unknown:
        raise InvalidArgumentError(f"unknown element fields {sorted(unknown)}")
    if "Pos" not in el:
        raise InvalidArgumentError("an element needs a Pos")
    pos = _point(el["Pos"], "Pos")
    kind = el.get("Kind") or "Unknown"
    if kind not in KINDS:
        raise InvalidArgumentError(f"element Kind {kind!r} is not one of {KINDS}")
    tags = el.get("Tags") or []
    if isinstance(tags, str) or not isinstance(tags, list) or not all(
            isinstance(t, str) and t for t in tags):
        raise InvalidArgumentError(f"element Tags must be a list of non-empty strings: {tags!r}")
    prop = el.get("Prop") or {}
    if not isinstance(prop, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in prop.items()):
        raise InvalidArgumentError(f"element Prop must map strings to strings: {prop!r}")
    rels = []
    for r in el.get("Rels") or []:
        if not isinstance(r, dict) or set(r) - {"Rel", "To"} or "To" not in r:
            raise InvalidArgumentError(f"a relationship is {{'Rel': ..., 'To': [x, y, z]}}: {r!r}")
        rel = r.get("Rel") or "UnknownRelationship"
        if rel not in RELS:
            raise InvalidArgumentError(f"relationship {rel!r} is not one of {RELS}")
        rels.append({"Rel": rel, "To": list(_point(r["To"], "Rels To"))})
    return {"Pos": list(pos), "Kind": kind, "Tags": list(dict.fromkeys(tags)),
            "Prop": dict(prop), "Rels": rels}


def public_element(el: dict[str, Any], relationships: bool = True) -> dict[str, Any]:
    """An element as returned to users (DVID's field order; ``Rels`` only on request)."""
    out = {"Pos": list(el["Pos"]), "Kind": el["Kind"], "Tags": list(el["Tags"]),
           "Prop": dict(el["Prop"])}
    if relationships:
        out["Rels"] = [dict(r, To=list(r["To"])) for r in el["Rels"]]
    return out


def dump(el: dict[str, Any]) -> bytes:
    """Stored bytes of a canonical element (compact JSON, as DVID stores plain JSON)."""
    return json.dumps(el, separators=(",", ":")).encode()


def load(raw: bytes) -> dict[str, Any]:
    """A stored element back from its bytes."""
    return json.loads(raw)


def pos_key(pos: Iterable[int]) -> str:
    """Sortable key of a position ``(x, y, z)``: z, y, x as biased 8-digit hex."""
    x, y, z = pos
    return f"{z + _BIAS:08x}.{y + _BIAS:08x}.{x + _BIAS:08x}"


def parse_pos_key(key: str) -> Pos:
    """The position ``(x, y, z)`` of a :func:`pos_key`."""
    z, y, x = (int(p, 16) - _BIAS for p in key.split("."))
    return x, y, z


def block_of(pos: Iterable[int], block_size: Sequence[int]) -> Pos:
    """Block coordinates ``(bx, by, bz)`` of a position (floor division)."""
    x, y, z = pos
    return x // block_size[0], y // block_size[1], z // block_size[2]


def block_ckey(block: Iterable[int]) -> str:
    """Sortable key of a block ``(bx, by, bz)`` (same form as :func:`pos_key`)."""
    return pos_key(block)


def element_ckey(pos: Iterable[int], block_size: Sequence[int]) -> str:
    """Key of an element in the elements space: its block, then its position."""
    pos = tuple(pos)
    return block_ckey(block_of(pos, block_size)) + "_" + pos_key(pos)


def prefix_range(prefix: str) -> tuple[str, str]:
    """``(start, stop)`` of the keys ``prefix + "_" + ...`` ("_" < "`", hex never has either)."""
    return prefix + "_", prefix + "`"
