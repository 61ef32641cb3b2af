"""2-D views of 3-D arrays: axis-aligned slices, oblique planes and multiscale tiles.

These are the logic behind :meth:`VersionedArray.slice`, :meth:`~VersionedArray.oblique`
and :meth:`~VersionedArray.tile` (label arrays have the same methods and return bodies, or
supervoxels with ``supervoxels=True``). All work at the handle's version and on pyramid
levels (``arr.scale(n)``), read only the chunks the plane needs, and use the array's own
index coordinates (0-based, z, y, x; not the absolute ``origin``-shifted ones).

Planes
------
diced arrays are ``(z, y, x)``. A plane keeps two axes in array order and fixes the third
(the result is what numpy indexing gives, and DVID's 2-D ``raw/<dims>`` image layout:
the first named axis is the image width, so the result's columns)::

    name   DVID  fixed axis   result axes (rows, cols)   numpy equivalent
    "xy"   0_1   z (axis 0)   (y, x)                     a[index, :, :]
    "xz"   0_2   y (axis 1)   (z, x)                     a[:, index, :]
    "yz"   1_2   x (axis 2)   (z, y)                     a[:, :, index]

Oblique planes
--------------
Sample ``(i, j)`` of an ``(h, w)`` oblique plane is at
``center + (i - (h-1)/2) * step * u/|u| + (j - (w-1)/2) * step * v/|v|`` (z, y, x voxel
coordinates; voxel ``k`` is centred at ``k``): rows follow ``u``, columns follow ``v``.
``u`` and ``v`` need not be orthogonal, only not parallel. Nearest sampling (``order=0``,
labels) takes voxel ``floor(p + 0.5)``; trilinear (``order=1``, images) blends the 8
neighbours; voxels outside the array count as the fill value, so a sample within one voxel of
the edge blends towards it. This is exactly scipy's
``map_coordinates(a, coords, order=order, mode="grid-constant", cval=fill_value)``.
Trilinear sums are float64 (complex128 for complex arrays), so 64-bit integers above
2**53 lose precision; integer results are rounded half up and clipped to the dtype.

The chunks read are those holding a voxel some sample uses (a numba pass over the samples,
:mod:`diced.datatypes.array._slicing_kernels`), not the plane's bounding box: a diagonal
plane through a volume touches O(area / chunk side²) chunks, its bounding box
O(area^1.5 / chunk side³). They are fetched in batches by the reader threads, decoded into
groups of at most :data:`GROUP_BYTES` and sampled group by group.

Tiles
-----
``tile(plane, scale, ty, tx, index)`` is DVID's ``imagetile``: the ``size x size`` square
``(ty, tx)`` of the plane through level-0 voxel ``index`` on the fixed axis, at ``scale``
(each scale halves both plane axes). With a pyramid level ``scale`` (``max_scale >= scale``)
the tile is a slice of that level at ``index >> scale``: one chunk layer of ``size²`` voxels.
Beyond the pyramid it is computed on the fly from the deepest level ``m``: the tile's
``(size · 2**(scale-m))²`` voxels are read and halved ``scale - m`` times in 2-D (images:
floor of the 2x2 mean, as the 3-D pyramid rule; labels and bools: every ``2**k``-th
voxel), so each scale past the pyramid reads 4x the voxels and about 2x the chunks of that
level.
Edge tiles are padded to ``size x size`` with the fill value. Tiles keep the chunks they
decode in a small LRU cache (:data:`TILE_CACHE_BYTES`), each entry checked against the stored
bytes read for the tile, so paging through the slices of one chunk layer decodes it once and
a tile is never stale, at any version (:func:`slice_plane` reads through the same cache).
"""

from __future__ import annotations

import logging
import math
import operator
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from diced.errors import (
    BackendUnavailableError,
    DtypeError,
    IndexOutOfBoundsError,
    InvalidArgumentError,
)
from diced.repo import keys as K

if TYPE_CHECKING:
    from diced.datatypes.array.array import VersionedArray

log = logging.getLogger(__name__)

__all__ = ["GROUP_BYTES", "PLANES", "oblique", "plane_axes", "slice_plane", "tile"]

#: decoded chunk bytes an oblique read holds at once (the plane's chunks are sampled in groups)
GROUP_BYTES = 256 << 20
#: most samples one oblique plane may have
MAX_SAMPLES = 1 << 26

#: plane name -> fixed axis (z=0, y=1, x=2); DVID's ``0_1`` / ``0_2`` / ``1_2`` are aliases
PLANES: dict[str, int] = {"xy": 0, "xz": 1, "yz": 2, "0_1": 0, "0_2": 1, "1_2": 2}


def plane_axes(plane: str) -> tuple[int, tuple[int, int]]:
    """The fixed axis of ``plane`` and the two axes it keeps (in result order).

    Parameters
    ----------
    plane
        ``"xy"``, ``"xz"``, ``"yz"`` (any case) or DVID's ``"0_1"``, ``"0_2"``, ``"1_2"``.

    Returns
    -------
    tuple
        ``(fixed, (rows, cols))`` as array axes (z=0, y=1, x=2).
    """
    key = plane.lower() if isinstance(plane, str) else None
    if key not in PLANES:
        raise InvalidArgumentError(
            f"unknown plane {plane!r}: use 'xy', 'xz', 'yz' (or DVID's '0_1', '0_2', '1_2')")
    fixed = PLANES[key]
    keep = tuple(a for a in range(3) if a != fixed)
    return fixed, keep  # type: ignore[return-value]


def _int(x: Any, what: str) -> int:
    if isinstance(x, (bool, np.bool_)):
        raise InvalidArgumentError(f"{what} must be an integer, got {x!r}")
    try:
        return operator.index(x)
    except TypeError as exc:
        raise InvalidArgumentError(f"{what} must be an integer, got {x!r}") from exc


def _check_3d(arr: VersionedArray) -> None:
    if arr.ndim != 3:
        raise InvalidArgumentError(
            f"2-D slices need a 3-D (z, y, x) array; {arr.name!r} has {arr.ndim} dimensions")


def _at_index(index: Any, n: int, what: str) -> int:
    i = _int(index, what)
    if not -n <= i < n:
        raise IndexOutOfBoundsError(f"{what} {i} is outside 0..{n - 1}")
    return i + n if i < 0 else i


def _box(box: Any, extent: tuple[int, int]) -> tuple[slice, slice]:
    if box is None:
        return slice(0, extent[0]), slice(0, extent[1])
    if not isinstance(box, Sequence) or len(box) != 2:
        raise InvalidArgumentError(
            f"box must be two (start, stop) pairs or slices, in result axis order; got {box!r}")
    out = []
    for b, n in zip(box, extent, strict=True):
        if isinstance(b, slice):
            if b.step not in (None, 1):
                raise InvalidArgumentError(f"box slices take no step, got {b!r}")
            lo, hi = (0 if b.start is None else b.start), (n if b.stop is None else b.stop)
        elif isinstance(b, Sequence) and len(b) == 2:
            lo, hi = b
        else:
            raise InvalidArgumentError(f"box entry {b!r} is not a (start, stop) pair or slice")
        lo, hi = _int(lo, "box start"), _int(hi, "box stop")
        if not 0 <= lo <= hi <= n:
            raise IndexOutOfBoundsError(f"box range {lo}:{hi} is outside 0:{n}")
        out.append(slice(lo, hi))
    return out[0], out[1]


def slice_plane(arr: VersionedArray, plane: str, index: Any, scale: int = 0, *,
                box: Any = None, **read_options: Any) -> np.ndarray:
    """One axis-aligned plane (see :meth:`VersionedArray.slice`)."""
    _check_3d(arr)
    fixed, keep = plane_axes(plane)
    view = arr.scale(scale) if scale else arr
    shape = view.shape
    i = _at_index(index, shape[fixed], f"{plane} plane index")
    rows, cols = _box(box, (shape[keep[0]], shape[keep[1]]))
    return _read_plane(view, fixed, keep, i, rows, cols, read_options)


# --- oblique planes -------------------------------------------------------------------------


def _vector(x: Any, what: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{what} must be 3 numbers (z, y, x), got {x!r}") from exc
    if a.shape != (3,):
        raise InvalidArgumentError(f"{what} must be 3 numbers (z, y, x), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InvalidArgumentError(f"{what} must be finite, got {a.tolist()}")
    return a


def _unit(x: Any, what: str) -> np.ndarray:
    a = _vector(x, what)
    n = float(np.linalg.norm(a))
    if n == 0.0 or not math.isfinite(n):
        raise InvalidArgumentError(f"{what} must be a non-zero direction, got {a.tolist()}")
    return a / n


def _size(size: Any) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, (bool, np.bool_)):
        size = (size, size)
    if not isinstance(size, Sequence) or len(size) != 2:
        raise InvalidArgumentError(f"size must be (h, w) samples, got {size!r}")
    h, w = _int(size[0], "size"), _int(size[1], "size")
    if h <= 0 or w <= 0:
        raise InvalidArgumentError(f"size must be positive, got {(h, w)}")
    if h * w > MAX_SAMPLES:
        raise InvalidArgumentError(f"size {(h, w)} exceeds {MAX_SAMPLES} samples")
    return h, w


def _order(arr: VersionedArray, order: Any, labels: bool) -> int:
    default = 0 if labels or arr.dtype.kind == "b" else 1
    if order is None:
        return default
    if isinstance(order, (bool, np.bool_)) or order not in (0, 1):
        raise InvalidArgumentError(f"order must be 0 (nearest) or 1 (trilinear), got {order!r}")
    if order == 1 and default == 0:
        raise InvalidArgumentError(
            f"{arr.name!r} holds {'labels' if labels else 'booleans'}: only order=0 (nearest)")
    return int(order)


def oblique(arr: VersionedArray, center: Any, u: Any, v: Any, size: Any, step: float = 1.0,
            *, order: int | None = None, labels: bool = False,
            **read_options: Any) -> np.ndarray:
    """An arbitrarily oriented plane (see :meth:`VersionedArray.oblique`)."""
    from diced.datatypes.array import _slicing_kernels as _k

    _check_3d(arr)
    c = _vector(center, "center")
    uu, vv = _unit(u, "u"), _unit(v, "v")
    if float(np.linalg.norm(np.cross(uu, vv))) < 1e-9:
        raise InvalidArgumentError(f"u {np.asarray(u).tolist()} and v {np.asarray(v).tolist()} "
                                   "are parallel: they span no plane")
    h, w = _size(size)
    try:
        st = float(step)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"step must be a number of voxels, got {step!r}") from exc
    if not math.isfinite(st) or st <= 0:
        raise InvalidArgumentError(f"step must be a positive finite number, got {step!r}")
    ordr = _order(arr, order, labels)
    du, dv = uu * st, vv * st

    ctx = arr._ref.ctx()
    shape = np.asarray(arr._shape_at(ctx), dtype=np.int64)
    chunks = np.asarray(arr.chunks, dtype=np.int64)
    fill = arr.fill_value
    out = np.full((h, w), fill, dtype=arr.dtype)

    # the chunk bounding box of the samples (clipped to the grid): ids are linear inside it
    corners = np.array([c + (i - (h - 1) / 2) * du + (j - (w - 1) / 2) * dv
                        for i in (0, h - 1) for j in (0, w - 1)])
    lo_vox = np.maximum(np.floor(corners.min(axis=0)) - 1, 0)
    hi_vox = np.minimum(np.floor(corners.max(axis=0)) + 1, shape - 1)
    if (hi_vox < lo_vox).any():  # the plane misses the array entirely
        return out
    lo = (lo_vox.astype(np.int64) // chunks).astype(np.int64)
    dims = (hi_vox.astype(np.int64) // chunks - lo + 1).astype(np.int64)

    found: list[np.ndarray] = []

    def find(i0: int, i1: int) -> None:
        cap = min((i1 - i0) * w * 8, 1 << 16)
        while True:
            buf = np.empty(cap, dtype=np.int64)
            n = _k.chunk_ids(c, du, dv, h, w, shape, chunks, lo, dims, ordr == 1, buf, i0, i1)
            if n >= 0:
                found.append(buf[:n])
                return
            cap *= 4

    _rows(h, w, find)
    ids = np.unique(np.concatenate(found))
    if not len(ids):
        return out
    coords = np.stack([ids // (dims[1] * dims[2]) + lo[0],
                       ids // dims[2] % dims[1] + lo[1],
                       ids % dims[2] + lo[2]], axis=1)
    log.debug("oblique %s: %d chunks of %d in the bounding box", arr.name, len(ids),
              int(np.prod(dims)))

    acc = None
    hit = None
    if ordr == 1:
        acc = np.zeros((h, w), dtype=np.complex128 if arr.dtype.kind == "c" else np.float64)
        fill_acc = acc.dtype.type(fill)
    else:
        hit = np.zeros((h, w), dtype=np.uint8)
    # numba has no float16 arithmetic: such chunks are sampled as float32
    kdt = np.dtype(np.float32) if arr.dtype == np.float16 else arr.dtype
    kout = out if kdt == arr.dtype else out.astype(kdt)
    per = max(1, GROUP_BYTES // arr._chunk_nbytes())
    for g0 in range(0, len(ids), per):
        slots = np.full(len(ids), -2, dtype=np.int64)
        gcoords = coords[g0:g0 + per]
        data = np.empty((len(gcoords), *arr.chunks), dtype=kdt)
        present = _fetch(arr, ctx, gcoords, data)
        slots[g0:g0 + len(gcoords)] = np.where(present, np.arange(len(gcoords)), -1)
        head = (c, du, dv, h, w, shape, chunks, lo, dims, ids, slots, data)
        if ordr == 1:
            tail: tuple = (fill_acc, g0 == 0, acc)
            _rows(h, w, lambda i0, i1, a=head + tail: _k.sample_linear(*a, i0, i1))
        else:
            _rows(h, w, lambda i0, i1, a=head + (kout, hit): _k.sample_nearest(*a, i0, i1))
    if ordr == 1:
        _store_interpolated(acc, out)
    else:
        if kout is not out:
            out[...] = kout
        post = arr._read_post(ctx, **read_options)
        if post is not None:
            mask = hit.view(bool)
            vals = out[mask]
            post(vals)
            out[mask] = vals
    return out


def _rows(h: int, w: int, fn: Any) -> None:
    """Run ``fn(i0, i1)`` (a nogil kernel) over row ranges on the reader threads."""
    from diced.datatypes.array._common import _WORKERS, _pool

    parts = min(_WORKERS, max(1, h * w >> 16), h)
    if parts == 1:
        fn(0, h)
        return
    bounds = [h * k // parts for k in range(parts + 1)]
    for _ in _pool().map(lambda k: fn(bounds[k], bounds[k + 1]), range(parts)):
        pass


def _fetch(arr: VersionedArray, ctx: Any, coords: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Decode the chunks at ``coords`` into ``data[k]``; whether each is stored."""
    from diced.datatypes.array._common import _WORKERS, _pool

    present = np.zeros(len(coords), dtype=bool)
    keys = [K.chunk_ckey(tuple(int(x) for x in cc)) for cc in coords]
    per = max(1, min(-(-len(keys) // _WORKERS), (4 << 20) // arr._chunk_nbytes()))

    def work(start: int) -> None:
        def fill(i: int, payload: Any) -> None:
            if payload is not None:
                if data.dtype == arr.dtype:
                    arr._decode(payload, out=data[start + i])
                else:
                    data[start + i] = arr._decode(payload)
                present[start + i] = True

        arr._space.visit(keys[start:start + per], ctx, fill)

    starts = range(0, len(keys), per)
    if len(starts) == 1:
        work(0)
    else:
        for _ in _pool().map(work, starts):
            pass
    return present


def _store_interpolated(acc: np.ndarray, out: np.ndarray) -> None:
    """Cast trilinear sums to ``out``'s dtype: integers rounded half up and clipped."""
    dt = out.dtype
    if dt.kind in "iu":
        info = np.iinfo(dt)
        r = np.floor(acc + 0.5)
        np.clip(r, info.min, info.max, out=r)
        out[...] = r.astype(dt)
    else:
        out[...] = acc.astype(dt)


# --- tiles ----------------------------------------------------------------------------------


def tile(arr: VersionedArray, plane: str, scale: Any, ty: Any, tx: Any, index: Any = 0, *,
         size: Any = 512, format: str | None = None, labels: bool = False,
         **read_options: Any) -> np.ndarray | bytes:
    """One ``size x size`` tile of a plane at a scale (see :meth:`VersionedArray.tile`)."""
    _check_3d(arr)
    fixed, keep = plane_axes(plane)
    s = _int(scale, "scale")
    if not 0 <= s <= 30:
        raise InvalidArgumentError(f"scale must be in 0..30, got {s}")
    n = _int(size, "tile size")
    if not 0 < n <= 1 << 14:
        raise InvalidArgumentError(f"tile size must be in 1..{1 << 14}, got {n}")
    ty, tx = _int(ty, "tile row ty"), _int(tx, "tile column tx")
    fmt = _format(format, arr.dtype)
    shape0 = arr.shape
    i0 = _at_index(index, shape0[fixed], f"{plane} plane index")
    f_s = 1 << s
    extent = tuple(-(-shape0[a] // f_s) for a in keep)  # the plane's size at this scale
    r0, c0 = ty * n, tx * n
    if ty < 0 or tx < 0 or r0 >= extent[0] or c0 >= extent[1]:
        raise IndexOutOfBoundsError(
            f"tile ({ty}, {tx}) of size {n} is outside the {plane} plane at scale {s} "
            f"({extent[0]} x {extent[1]}: tiles 0..{-(-extent[0] // n) - 1}, "
            f"0..{-(-extent[1] // n) - 1})")
    r1, c1 = min(r0 + n, extent[0]), min(c0 + n, extent[1])
    m = min(s, arr.max_scale)  # the deepest stored level to read from
    view = arr.scale(m) if m else arr
    f = 1 << (s - m)
    mshape = view.shape
    rows = slice(r0 * f, min(r1 * f, mshape[keep[0]]))
    cols = slice(c0 * f, min(c1 * f, mshape[keep[1]]))
    img = _read_plane(view, fixed, keep, i0 >> m, rows, cols, read_options)
    if f > 1:  # labels and booleans subsample; numbers average
        img = img[::f, ::f] if labels or arr.dtype.kind == "b" else _halve_2d(img, s - m)
    if img.shape != (n, n):
        padded = np.full((n, n), arr.fill_value, dtype=arr.dtype)
        padded[:img.shape[0], :img.shape[1]] = img
        img = padded
    return img if fmt is None else _encode_image(img, fmt)


class _ChunkCache:
    """Decoded chunks by (instance, chunk key, format), each kept with the stored bytes it was
    decoded from: a hit needs the bytes read now to be equal, so the cache is right at every
    version, open or locked, without invalidation. Least recently used entries go first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.nbytes = 0
        self._items: OrderedDict[tuple, tuple[bytes, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, payload: Any) -> np.ndarray | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
        stored, chunk = item
        if len(stored) != len(payload):
            return None
        # bytes == memoryview compares item by item (~1 ms per 300 kB); a copy + memcmp does not
        same = stored == (payload if isinstance(payload, bytes) else bytes(payload))
        return chunk if same else None

    def put(self, key: tuple, payload: Any, chunk: np.ndarray) -> None:
        size = chunk.nbytes + len(payload)
        if size > self.limit:
            return
        item = (bytes(payload), chunk)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= old[1].nbytes + len(old[0])
            self._items[key] = item
            self.nbytes += size
            while self.nbytes > self.limit:
                _, (b, c) = self._items.popitem(last=False)
                self.nbytes -= c.nbytes + len(b)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0


#: decoded chunks kept for :func:`slice_plane` and :func:`tile` (a viewer paging through
#: slices decodes each chunk layer once); ``_TILE_CACHE.limit`` may be changed,
#: ``_TILE_CACHE.clear()`` frees it
TILE_CACHE_BYTES = 256 << 20
_TILE_CACHE = _ChunkCache(TILE_CACHE_BYTES)


def _read_plane(view: VersionedArray, fixed: int, keep: tuple[int, int], index: int,
                rows: slice, cols: slice, read_options: dict[str, Any]) -> np.ndarray:
    """``view[...]`` of one plane region (plain slices), through the decoded-chunk cache."""
    from diced.datatypes.array._common import _WORKERS, _pool

    ctx = view._ref.ctx()
    ch = view.chunks
    out = np.empty((rows.stop - rows.start, cols.stop - cols.start), dtype=view.dtype)
    if not out.size:
        return out
    cf, off = divmod(index, ch[fixed])
    kr, kc = keep
    coords, regions = [], []
    for a in range(rows.start // ch[kr], (rows.stop - 1) // ch[kr] + 1):
        r0, r1 = max(rows.start, a * ch[kr]), min(rows.stop, (a + 1) * ch[kr])
        for b in range(cols.start // ch[kc], (cols.stop - 1) // ch[kc] + 1):
            c0, c1 = max(cols.start, b * ch[kc]), min(cols.stop, (b + 1) * ch[kc])
            cc = [0, 0, 0]
            cc[fixed], cc[kr], cc[kc] = cf, a, b
            coords.append(tuple(cc))
            regions.append(((slice(r0 - rows.start, r1 - rows.start),
                             slice(c0 - cols.start, c1 - cols.start)),
                            (slice(r0 - a * ch[kr], r1 - a * ch[kr]),
                             slice(c0 - b * ch[kc], c1 - b * ch[kc]))))
    keys = [K.chunk_ckey(c) for c in coords]
    post = view._read_post(ctx, **read_options)
    fmt = (view._space.inst, view.dtype.str, ch, repr(view.codec.to_dict()))
    per = max(1, -(-len(keys) // _WORKERS))

    def work(start: int) -> None:
        def fill(i: int, payload: Any) -> None:
            dst, src = regions[start + i]
            if payload is None:
                out[dst] = view.fill_value
                return
            key = (fmt, keys[start + i])
            chunk = _TILE_CACHE.get(key, payload)
            if chunk is None:
                chunk = view._decode(payload, out=np.empty(ch, dtype=view.dtype))
                _TILE_CACHE.put(key, payload, chunk)
            region = out[dst]
            region[...] = np.take(chunk, off, axis=fixed)[src]
            if post is not None:
                post(region)

        view._space.visit(keys[start:start + per], ctx, fill)

    starts = range(0, len(keys), per)
    if len(starts) == 1:
        work(0)
    else:
        for _ in _pool().map(work, starts):
            pass
    return out


def _halve_2d(img: np.ndarray, times: int) -> np.ndarray:
    from diced.array.downres import downsample_image

    block = img[None]
    for _ in range(times):
        block = downsample_image(block)
    return block[0]


_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG"}


def _format(format: str | None, dtype: np.dtype) -> str | None:
    if format is None:
        return None
    key = format.lower() if isinstance(format, str) else None
    if key not in _FORMATS:
        raise InvalidArgumentError(f"unknown image format {format!r}: use 'png' or 'jpeg'")
    fmt = _FORMATS[key]
    if dtype != np.uint8 and not (fmt == "PNG" and dtype == np.uint16):
        raise DtypeError(f"{fmt} tiles need uint8 data{' (or uint16)' if fmt == 'PNG' else ''}"
                         f", not {dtype}: read the array and convert it")
    return fmt


def _encode_image(img: np.ndarray, fmt: str) -> bytes:
    import io

    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(
            "encoding tiles as PNG/JPEG needs Pillow: pip install 'diced[imaging]'") from exc
    arr = np.ascontiguousarray(img)
    im = Image.fromarray(arr if arr.dtype == np.uint8 else arr.astype("<u2"))  # L or I;16
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return buf.getvalue()
