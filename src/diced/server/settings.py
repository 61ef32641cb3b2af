"""DVID instance settings (``POST /api/repo/{uuid}/instance``; all values are strings)."""

from __future__ import annotations

from typing import Any

from diced.server import props as P
from diced.server._http import bad

__all__ = ["block_size", "check_props", "create_props"]


def _floats(text: str, what: str) -> list[float]:
    parts = text.replace(" ", "").split(",")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise bad(f"{what} must be 3 numbers 'x,y,z', got {text!r}") from None
    if len(vals) == 1:
        vals *= 3
    if len(vals) != 3 or not all(0 < v < 1e12 for v in vals):
        raise bad(f"{what} must be 3 positive numbers 'x,y,z', got {text!r}")
    return vals


def block_size(settings: dict[str, str], default: int) -> tuple[int, int, int]:
    """``BlockSize`` ("64,64,64") as (x, y, z) ints."""
    text = settings.get("blocksize")
    if not text:
        return (default,) * 3
    vals = _floats(text, "BlockSize")
    if not all(v.is_integer() and 8 <= v <= 512 for v in vals):
        raise bad(f"BlockSize must be integers in 8..512, got {text!r}")
    return tuple(int(v) for v in vals)  # type: ignore[return-value]


def create_props(repo: Any, name: str, settings: dict[str, str]) -> None:
    """Store VoxelSize, VoxelUnits and Tags given at instance creation."""
    changes = check_props(settings)
    if changes:
        rec = repo._doc["instances"][name]
        P.set_props(repo.backend, repo.uuid, rec["id"], changes)


def check_props(settings: dict[str, str]) -> dict[str, Any]:
    """The properties :func:`create_props` would store, validated (400 on bad values); call
    it before creating an instance so that bad settings create nothing."""
    changes: dict[str, Any] = {}
    if settings.get("voxelsize"):
        changes["VoxelSize"] = _floats(settings["voxelsize"], "VoxelSize")
    if settings.get("voxelunits"):
        units = [u.strip() for u in settings["voxelunits"].split(",")]
        changes["VoxelUnits"] = units * 3 if len(units) == 1 else units
        if len(changes["VoxelUnits"]) != 3:
            raise bad("VoxelUnits must be one unit or three 'x,y,z'")
    if settings.get("tags"):
        tags = {}
        for item in settings["tags"].split(","):
            k, _, v = item.partition("=")
            if k.strip():
                tags[k.strip()] = v.strip()
        changes["Tags"] = tags
    return changes
