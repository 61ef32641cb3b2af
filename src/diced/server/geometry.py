"""Boxes in DVID's coordinates (x, y, z; absolute voxel coordinates at a scale) read from and
written to diced arrays (z, y, x; index = coordinate − origin).

DVID volumes are unbounded: a read outside the stored extents returns the background value.
diced arrays have a shape, so reads are clipped to it and the rest is filled. Scales past an
array's stored pyramid (``max_scale``) are computed on the fly from the coarsest stored level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diced.server._http import MAX_VOXELS, bad

__all__ = ["array_extent", "read_box", "scale_view", "zyx"]


def zyx(xyz: tuple[int, ...]) -> tuple[int, ...]:
    """DVID's x,y,z order turned into diced's z,y,x (and back)."""
    return tuple(reversed(xyz))


def scale_view(arr: Any, scale: int) -> tuple[Any, int]:
    """``(view at min(scale, max_scale), extra levels to compute on the fly)``."""
    if scale < 0 or scale > 20:
        raise bad(f"scale must be in 0..20, got {scale}")
    stored = min(scale, int(getattr(arr, "max_scale", 0)))
    view = arr.scale(stored) if stored else arr
    return view, scale - stored


def array_extent(arr: Any, scale: int = 0) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(lo, hi)`` absolute (z, y, x) bounds, hi exclusive, at a scale."""
    f = 1 << scale
    origin = tuple(o // f for o in arr.origin)
    shape = tuple(-(-n // f) for n in arr.shape) if scale else tuple(arr.shape)
    return origin, tuple(o + n for o, n in zip(origin, shape, strict=True))


def read_box(arr: Any, offset_xyz: tuple[int, ...], size_xyz: tuple[int, ...], *,
             scale: int = 0, supervoxels: bool = False) -> np.ndarray:
    """The (z, y, x) box at ``offset`` of ``size`` (DVID x, y, z order), background-filled
    outside the array, at ``scale`` (computed past the stored pyramid)."""
    view, extra = scale_view(arr, scale)
    f = 1 << extra
    off = tuple(o * f for o in zyx(offset_xyz))
    size = tuple(s * f for s in zyx(size_xyz))
    if int(np.prod(size, dtype=object)) > MAX_VOXELS:
        raise bad(f"scale {scale} request reads {np.prod(size, dtype=object)} voxels of the stored "
                  f"scale {scale - extra}; at most {MAX_VOXELS}")
    out = _read_clipped(view, off, size, scale - extra, supervoxels)
    for _ in range(extra):
        out = _downsample(out, arr)
    return out


def _read_clipped(view: Any, off: tuple[int, ...], size: tuple[int, ...], level: int,
                  supervoxels: bool) -> np.ndarray:
    lo_a, hi_a = array_extent(view, 0) if level == 0 else _level_extent(view, level)
    lo = tuple(max(o, a) for o, a in zip(off, lo_a, strict=True))
    hi = tuple(min(o + s, b) for o, s, b in zip(off, size, hi_a, strict=True))
    full = all(l <= o and h >= o + s for l, h, o, s in zip(lo_a, hi_a, off, size, strict=True))
    sel = tuple(slice(l - a, h - a) for l, h, a in zip(lo, hi, lo_a, strict=True))
    empty = any(h <= l for l, h in zip(lo, hi, strict=True))
    if full:
        return _read(view, sel, supervoxels)
    fill = view.fill_value
    out = np.full(size, fill, dtype=view.dtype)
    if not empty:
        dst = tuple(slice(l - o, h - o) for l, h, o in zip(lo, hi, off, strict=True))
        out[dst] = _read(view, sel, supervoxels)
    return out


def _level_extent(view: Any, level: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    f = 1 << level
    origin = tuple(o // f for o in view.origin)
    return origin, tuple(o + n for o, n in zip(origin, view.shape, strict=True))


def _read(view: Any, sel: tuple[slice, ...], supervoxels: bool) -> np.ndarray:
    if view.typename == "labels":
        return np.ascontiguousarray(view.read(sel, supervoxels=supervoxels))
    return np.ascontiguousarray(view[sel])


def _downsample(block: np.ndarray, arr: Any) -> np.ndarray:
    from diced.array.downres import downsample_image, downsample_labels

    if arr.typename == "labels":
        return downsample_labels(block)
    return downsample_image(block)
