"""Voxel sizes for every exporter, in one order: **array axis order** (``z, y, x`` for 3-D).

diced indexes arrays ``[z, y, x]``, so voxel sizes are given the same way everywhere
(``export_precomputed``, ``export_zarr``, ``diced export ... --voxel-size z,y,x``), with a
``unit``. Formats that store another order (neuroglancer precomputed: ``x, y, z`` in
nanometres) are converted on write. The default, as in DVID, is 8 nanometres per spatial
axis (the last three axes) and 1 on channel or time axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diced.errors import InvalidArgumentError

__all__ = ["DEFAULT_UNIT", "DEFAULT_VOXEL_SIZE", "UNITS", "check_unit", "check_voxel_size",
           "to_nanometers"]

#: voxel size of a spatial axis when none is given (DVID's default)
DEFAULT_VOXEL_SIZE = 8.0
DEFAULT_UNIT = "nanometer"

#: OME-Zarr (UDUNITS-2) length units diced accepts, with their size in nanometres
UNITS = {"angstrom": 0.1, "nanometer": 1.0, "micrometer": 1e3, "millimeter": 1e6,
         "centimeter": 1e7, "meter": 1e9}
_ALIASES = {"a": "angstrom", "å": "angstrom", "nm": "nanometer", "um": "micrometer",
            "µm": "micrometer", "μm": "micrometer", "micron": "micrometer", "mm": "millimeter",
            "cm": "centimeter", "m": "meter"}


def check_unit(unit: str | None) -> str:
    """The OME-Zarr name of a length unit (``"nm"`` -> ``"nanometer"``); ``None`` -> default."""
    if unit is None:
        return DEFAULT_UNIT
    text = str(unit).strip().lower()
    name = _ALIASES.get(text, text.rstrip("s"))
    if name not in UNITS:
        raise InvalidArgumentError(
            f"unknown unit {unit!r}; use one of {', '.join(UNITS)} (or nm, um, mm)")
    return name


def check_voxel_size(voxel_size: Sequence[float] | None, ndim: int, what: str = "array"
                     ) -> list[float]:
    """Voxel size per axis in array axis order, validated; ``None`` gives the default.

    Raises
    ------
    InvalidArgumentError
        Not ``ndim`` positive finite numbers.
    """
    if voxel_size is None:
        return [1.0] * max(ndim - 3, 0) + [DEFAULT_VOXEL_SIZE] * min(ndim, 3)
    try:
        out = [float(v) for v in voxel_size]
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"voxel_size must be numbers in array axis order, got {voxel_size!r}") from exc
    if len(out) != ndim or any(not (v > 0 and v < float("inf")) for v in out):
        order = ",".join("tczyx"[-ndim:]) if ndim <= 5 else "array axis order"
        raise InvalidArgumentError(
            f"voxel_size needs {ndim} positive numbers in array axis order ({order}) for the "
            f"{ndim}-D {what}, got {voxel_size!r}")
    return out


def to_nanometers(voxel_size: Sequence[float], unit: str | None) -> list[float]:
    """``voxel_size`` converted from ``unit`` to nanometres."""
    factor = UNITS[check_unit(unit)]
    return [float(v) * factor for v in voxel_size]


def refuse_resolution(resolution: Any) -> None:
    """``resolution=`` (x, y, z) was replaced by ``voxel_size=`` (z, y, x): refuse it loudly
    rather than guess which order the caller meant."""
    if resolution is not None:
        raise InvalidArgumentError(
            "resolution= (x, y, z) is no longer accepted: pass voxel_size= in array axis "
            f"order (z, y, x), e.g. voxel_size={tuple(reversed(list(resolution)))!r} for "
            f"resolution={tuple(resolution)!r}, and unit= (default nanometer)")
