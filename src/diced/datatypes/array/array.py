"""VersionedArray: numpy slicing over chunks of a versioned key space (the ``array``
datatype's instance object; the datatype itself is :class:`diced.datatypes.array.ArrayType`).

Everything here that does not need the repo (grids, the indexing planner, codecs, the
downsampling kernels) lives one layer down in :mod:`diced.array`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from diced.array.codecs.base import ChunkCodec, codec_from_dict
from diced.array.grid import as_int, cast_value, check_chunks, check_dtype, check_shape
from diced.datatypes.array import _common
from diced.datatypes.array.indexers import _AbsoluteIndexer
from diced.datatypes.array.reading import ArrayReads
from diced.datatypes.array.writing import ArrayWrites, _all_fill
from diced.errors import InvalidArgumentError, LockedNodeError
from diced.repo import keys as K
from diced.repo.resolve import VersionCtx

if TYPE_CHECKING:
    from diced.repo.context import InstanceContext
    from diced.repo.repo import Version

log = logging.getLogger(__name__)

__all__ = ["VersionedArray", "array_config"]

_OCTANTS = [(z, y, x) for z in (0, 1) for y in (0, 1) for x in (0, 1)]


def array_config(dtype: Any, shape: Iterable[int] | None, chunks: Iterable[int] | None,
                 fill_value: Any, codec: Any, origin: Iterable[int] | None, vid: int,
                 default_codec: dict[str, Any] | None = None, max_scale: int = 0
                 ) -> dict[str, Any]:
    """Validated instance configuration for a new array (stored in the repo document)."""
    dt = check_dtype(dtype)
    if shape is None:
        raise InvalidArgumentError("create_array needs a shape")
    shp = check_shape(shape)
    ch = check_chunks(chunks, len(shp))
    fill = cast_value(fill_value, dt)
    try:
        org = (0,) * len(shp) if origin is None else tuple(as_int(o) for o in origin)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"origin must be integers, got {origin!r}") from exc
    if len(org) != len(shp):
        raise InvalidArgumentError(f"origin {org} does not match {len(shp)} dimensions")
    spec = codec_from_dict(codec if codec is not None else (default_codec or {"name": "blosc"}))
    if spec.name == "labelblock" and dt != np.uint64:
        from diced.errors import DtypeError

        raise DtypeError(f"the labelblock codec stores uint64 labels, not {dt}; use "
                         "create_labels, or dtype='uint64'")
    if not isinstance(max_scale, int) or max_scale < 0 or max_scale > 20:
        raise InvalidArgumentError(f"max_scale must be an integer in 0..20, got {max_scale!r}")
    if max_scale and len(shp) != 3:
        raise InvalidArgumentError("multiscale pyramids (max_scale > 0) are for 3-D arrays")
    if max_scale and any(c % 2 for c in ch):
        raise InvalidArgumentError("multiscale pyramids need even chunk sides")
    return {"max_scale": max_scale, "dtype": dt.str, "chunks": list(ch), "fill_value": fill.item() if dt.kind != "c"
            else [fill.real.item(), fill.imag.item()], "codec": spec.to_dict(),
            "origin": list(org), "shapes": {str(vid): list(shp)}}


class VersionedArray(ArrayReads, ArrayWrites):
    """An nD array of one numeric dtype, chunked, versioned and sparse.

    Indexing follows numpy basic indexing: integers (negative from the end; the axis is
    dropped), slices with steps (negative too), ``...`` and ``None``, plus a full-shape
    boolean mask (``arr[mask]``); :attr:`oindex` and :attr:`vindex` give zarr's orthogonal
    and vectorized (point) indexing. Reads return new numpy arrays; writes broadcast scalars
    and smaller arrays, cast by one rule for scalars and arrays
    (:func:`diced.array.grid.cast_value`), and are read-modify-write per chunk (atomic per
    batch on LMDB). Unwritten chunks read as ``fill_value`` and cost nothing; a chunk written
    back to all-fill (bitwise: ``-0.0`` is not a ``0.0`` fill) is removed.

    ``origin`` is the absolute coordinate of index 0 along each axis (DVID/DICED style
    coordinates, which may be negative). :attr:`abs` indexes by absolute coordinates.

    Obtain arrays from a repo (``repo.create_array``, ``repo.array(name)``, follows the repo
    head) or a version (``repo.version(uuid).array(name)``, pinned).
    """

    typename = "array"

    def __init__(self, context: InstanceContext) -> None:
        repo, record = context.repo, context.record
        self.repo = repo
        self.name = context.name
        self._rec = record
        self._ref = context  # the version to read and write: ``self._ref.ctx()``
        cfg = record["config"]
        self.dtype = np.dtype(cfg["dtype"])
        self.chunks: tuple[int, ...] = tuple(cfg["chunks"])
        fv = cfg["fill_value"]
        self.fill_value = (np.asarray(complex(*fv), dtype=self.dtype) if self.dtype.kind == "c"
                           else np.asarray(fv, dtype=self.dtype))[()]
        self._origin0: tuple[int, ...] = tuple(cfg.get("origin", (0,) * len(self.chunks)))
        self.origin: tuple[int, ...] = self._origin0
        self.codec: ChunkCodec = codec_from_dict(cfg["codec"])
        self.max_scale: int = int(cfg.get("max_scale", 0))
        self._level = 0
        name = self.name
        self._levels = [context.space(None, name, "chunk")] + [
            context.space(sid, f"{name} (scale {i})", "chunk")
            for i, sid in enumerate(cfg.get("subinstances", []), 1)]
        self._space = self._levels[0]

    # --- description ---------------------------------------------------------------------

    @property
    def _cfg(self) -> dict[str, Any]:
        return self._ref.config

    def _shape_at(self, ctx: VersionCtx) -> tuple[int, ...]:
        shapes = self._cfg["shapes"]
        best = max((int(v) for v in shapes if int(v) in ctx.ancestors), default=None)
        if best is None:
            best = min(int(v) for v in shapes)
        shape = tuple(shapes[str(best)])
        if self._level:
            f = 1 << self._level
            shape = tuple(-(-n // f) for n in shape)
        return shape

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape at the handle's version (``resize`` changes it per version)."""
        return self._shape_at(self._ref.ctx())

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.chunks)

    @property
    def size(self) -> int:
        """Number of elements (a Python int: may exceed 2**63)."""
        return int(np.prod(self.shape, dtype=object))

    @property
    def nbytes(self) -> int:
        """Bytes the array would take dense in memory (nothing like what is stored)."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def version(self) -> Version:
        """The version this handle reads now (the head, for handles that follow it)."""
        return self._ref.version()

    @property
    def locked(self) -> bool:
        """Whether that version is locked (writes raise ``LockedNodeError``)."""
        return self._ref.ctx().locked

    def at(self, version: str | Version) -> VersionedArray:
        """The same array pinned to another version."""
        return self._ref.open_at(version)

    def info(self) -> dict[str, Any]:
        """The array's configuration as a plain dict.

        Returns
        -------
        dict
            ``name``, ``type``, ``dtype``, ``shape``, ``chunks``, ``fill_value``, ``origin``,
            ``codec`` and ``version`` (UUID).
        """
        return {"name": self.name, "type": self.typename, "dtype": str(self.dtype),
                "shape": self.shape, "chunks": self.chunks, "fill_value": self.fill_value.item(),
                "origin": self.origin, "codec": self.codec.to_dict(),
                "version": self._ref.ctx().uuid}

    def __repr__(self) -> str:
        ctx = self._ref.ctx()
        return (f"<{type(self).__name__} {self.name!r} shape={self.shape} dtype={self.dtype} "
                f"chunks={self.chunks} version={ctx.uuid[:8]}{' locked' if ctx.locked else ''}>")

    # --- chunk-level access ------------------------------------------------------------------

    def _decode(self, data: bytes, out: np.ndarray | None = None) -> np.ndarray:
        return self.codec.decode(data, self.chunks, self.dtype, out=out)

    def _encode(self, chunk: np.ndarray) -> bytes | None:
        """Chunk bytes, or ``None`` when the chunk is entirely fill (stored as nothing).

        A uniform chunk compresses to a few bytes, so the full fill check runs only on
        small encodings (raw-coded chunks are always checked)."""
        data = self.codec.encode(chunk)
        if (len(data) <= max(1024, chunk.nbytes >> 6) or self.codec.name == "raw") \
                and _all_fill(chunk, self.fill_value):
            return None
        return data

    def _empty_chunk(self) -> np.ndarray:
        return np.full(self.chunks, self.fill_value, dtype=self.dtype)

    def stored_chunks(self) -> list[tuple[int, ...]]:
        """Grid coordinates of the chunks holding data at this version."""
        return [K.parse_chunk_ckey(c) for c in self._space.live_keys(self._ref.ctx())]

    def read_chunks(self, coords: Sequence[Sequence[int]]) -> list[np.ndarray | None]:
        """Decoded chunks at grid ``coords`` (``None`` where nothing is stored)."""
        ctx = self._ref.ctx()
        vals = self._space.read_many([K.chunk_ckey(c) for c in coords], ctx)
        return [None if v is None else self._decode(v) for v in vals]

    def _chunk_nbytes(self) -> int:
        n = 1
        for c in self.chunks:  # (np.prod costs more than the rest of a cached read's planning)
            n *= c
        return n * self.dtype.itemsize

    # --- multiscale ------------------------------------------------------------------------

    def scale(self, level: int) -> VersionedArray:
        """Read-only view of pyramid level ``level`` (each level halves every axis; the
        view's ``origin`` is the level-0 origin divided by ``2**level``, rounded down)."""
        if not isinstance(level, (int, np.integer)) or not 0 <= level <= self.max_scale:
            raise InvalidArgumentError(
                f"{self.name!r} has scales 0..{self.max_scale}, not {level!r}")
        view = type(self).__new__(type(self))
        view.__dict__.update(self.__dict__)
        view._level = int(level)
        view._space = self._levels[int(level)]
        # level n's voxel i covers level-0 voxels 2**n * i ...: its origin is floor(origin / 2**n)
        # (as the precomputed and zarr exports write it)
        view.origin = tuple(o // (1 << int(level)) for o in self._origin0)
        return view

    def _downsample_octants(self, octants: dict[int, np.ndarray | None]) -> np.ndarray:
        from diced.array.downres import downsample_image_octants

        return downsample_image_octants(octants, self.chunks, dtype=self.dtype)

    def _update_pyramid(self, ctx: VersionCtx, coords: Iterable[tuple[int, ...]]) -> None:
        """Recompute the lower-resolution chunks above changed scale-0 chunks."""
        changed = sorted(set(coords))
        for level in range(1, self.max_scale + 1):
            parents = sorted({tuple(c // 2 for c in cc) for cc in changed})
            lower, upper = self._levels[level - 1], self._levels[level]
            children = [tuple(2 * p + o for p, o in zip(par, off, strict=True))
                        for par in parents for off in _OCTANTS]
            vals = lower.read_many([K.chunk_ckey(c) for c in children], ctx)
            new: dict[str, bytes | None] = {}
            for i, par in enumerate(parents):
                octs = {}
                for j, off in enumerate(_OCTANTS):
                    data = vals[8 * i + j]
                    if data is not None:
                        octs[off[0] << 2 | off[1] << 1 | off[2]] = self._decode(data)
                lores = self._downsample_octants(octs)
                new[K.chunk_ckey(par)] = self._encode(lores)
            upper.write(ctx, new)
            changed = parents

    def _after_merge(self, ctx: VersionCtx, ckeys: Sequence[str],
                     parents: Sequence[VersionCtx] = ()) -> None:
        """Called by :meth:`ArrayType.after_merge` (from :meth:`Repo.merge`) before the merge node is published, with the scale-0
        chunks written on any side since the merge base: the pyramid above them is rebuilt
        from the merged scale 0 (merging each level on its own could disagree with it)."""
        if not self.max_scale or not ckeys:
            return
        coords = sorted(K.parse_chunk_ckey(c) for c in ckeys)
        step = max(1, _common.BATCH_BYTES // max(1, 8 * self._chunk_nbytes()))
        for i in range(0, len(coords), step):
            self._update_pyramid(ctx, coords[i:i + step])

    # --- shape -----------------------------------------------------------------------------

    def resize(self, *shape: int | Iterable[int]) -> None:
        """Change the shape at the current (open) version. Data outside the new shape is
        removed at this version (it stays readable at older versions)."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])  # type: ignore[arg-type]
        new = check_shape(shape)  # type: ignore[arg-type]
        ctx = self._ref.ctx()
        if ctx.locked:
            raise LockedNodeError(f"version {ctx.uuid} is locked; cannot resize {self.name!r}")
        old = self._shape_at(ctx)
        if len(new) != len(old):
            raise InvalidArgumentError(f"resize keeps the number of dimensions ({len(old)})")
        if any(n < o for n, o in zip(new, old, strict=True)):
            self._clear_outside(ctx, new)

        def fn(rec: dict[str, Any]) -> None:
            rec["config"]["shapes"][str(ctx.vid)] = list(new)

        self._ref.update_record(fn)

    def _clear_outside(self, ctx: VersionCtx, new: tuple[int, ...]) -> None:
        drop, trim = [], []
        for ckey in self._space.live_keys(ctx):
            coords = K.parse_chunk_ckey(ckey)
            lo = [c * k for c, k in zip(coords, self.chunks, strict=True)]
            if any(l >= n for l, n in zip(lo, new, strict=True)):
                drop.append(ckey)
            elif any(l + k > n for l, k, n in zip(lo, self.chunks, new, strict=True)):
                trim.append((ckey, tuple(slice(max(0, n - l), None) for l, n in zip(lo, new, strict=True))))
        if drop:
            self._space.delete(ctx, drop)
        trims = dict(trim)

        def modify(ckey: str, base: bytes | None) -> bytes | None:
            if base is None:
                return None
            chunk = self._decode(base).copy()
            region = trims[ckey]
            for ax, sl in enumerate(region):
                if sl.start < self.chunks[ax]:
                    idx = [slice(None)] * len(region)
                    idx[ax] = sl
                    chunk[tuple(idx)] = self.fill_value
            return self._encode(chunk)

        if trims:
            self._space.modify(ctx, list(trims), modify)
        if self.max_scale and (drop or trims):
            self._update_pyramid(ctx, [K.parse_chunk_ckey(c) for c in [*drop, *trims]])

    # --- 2-D views (logic in diced.datatypes.array.slicing) ----------------------------------

    def slice(self, plane: str, index: int, scale: int = 0, *, box: Any = None) -> np.ndarray:
        """One axis-aligned plane of a 3-D array, reading one layer of chunks.

        Parameters
        ----------
        plane
            ``"xy"`` (fixed z; result axes (y, x), numpy ``a[index]``), ``"xz"`` (fixed y;
            (z, x), ``a[:, index]``) or ``"yz"`` (fixed x; (z, y), ``a[:, :, index]``);
            DVID's ``"0_1"``, ``"0_2"``, ``"1_2"`` are the same planes.
        index
            Position on the fixed axis at that scale (negative counts from the end).
        scale
            Pyramid level (``arr.slice(p, i, scale=n)`` is ``arr.scale(n).slice(p, i)``).
        box
            Optional part of the plane: two ``(start, stop)`` pairs or slices, in result
            axis order (e.g. ``((y0, y1), (x0, x1))`` for ``"xy"``).

        Returns
        -------
        numpy.ndarray
            2-D array of the array's dtype.
        """
        from diced.datatypes.array.slicing import slice_plane

        return slice_plane(self, plane, index, scale, box=box)

    def oblique(self, center: Sequence[float], u: Sequence[float], v: Sequence[float],
                size: int | tuple[int, int], step: float = 1.0, *,
                order: int | None = None) -> np.ndarray:
        """An arbitrarily oriented plane, sampled from only the chunks it crosses.

        Sample ``(i, j)`` lies at ``center + (i - (h-1)/2)·step·û + (j - (w-1)/2)·step·v̂``
        in (z, y, x) voxel coordinates of this scale (``arr.scale(n).oblique(...)`` for
        others); samples outside the array give ``fill_value``. Equals
        ``scipy.ndimage.map_coordinates(a, coords, order=order, mode="grid-constant",
        cval=fill_value)``; see :mod:`diced.datatypes.array.slicing`.

        Parameters
        ----------
        center
            (z, y, x) centre of the plane, in voxels (floats allowed).
        u, v
            Directions (z, y, x) of the rows and the columns; normalised; not parallel.
        size
            ``(h, w)`` samples (or one int for a square).
        step
            Distance between neighbouring samples, in voxels.
        order
            0: nearest; 1: trilinear (default for numeric images; integer results rounded).

        Returns
        -------
        numpy.ndarray
            ``(h, w)`` array of the array's dtype.
        """
        from diced.datatypes.array.slicing import oblique

        return oblique(self, center, u, v, size, step, order=order)

    def tile(self, plane: str, scale: int, ty: int, tx: int, index: int = 0, *,
             size: int = 512, format: str | None = None) -> np.ndarray | bytes:
        """Tile ``(ty, tx)`` of a plane at a scale (DVID's ``imagetile``), for viewers.

        Parameters
        ----------
        plane
            ``"xy"``, ``"xz"``, ``"yz"`` (or ``"0_1"``, ``"0_2"``, ``"1_2"``); axes as
            :meth:`slice`.
        scale
            0 is full resolution; each scale halves both plane axes. Read from pyramid level
            ``scale`` when the array has it, else downsampled on the fly from the deepest
            level (4x the voxels read per scale beyond it).
        ty, tx
            Tile row and column at that scale (covering rows ``ty*size ...``).
        index
            Position on the fixed axis in **scale-0** voxels (the same plane at every scale).
        size
            Tile side in pixels; edge tiles are padded with ``fill_value``.
        format
            ``None`` for an array, ``"png"`` or ``"jpeg"`` for encoded bytes (Pillow;
            uint8, or uint16 for PNG).

        Returns
        -------
        numpy.ndarray or bytes
        """
        from diced.datatypes.array.slicing import tile

        return tile(self, plane, scale, ty, tx, index, size=size, format=format)

    # --- dask and xarray (logic in diced.cluster.arrays) -------------------------------------

    def to_dask(self, *, version: Any = None, scale: int = 0, **options: Any) -> Any:
        """A lazy dask array of this array at a version (default: the handle's version now),
        one block per storage chunk. See :func:`diced.cluster.to_dask`.

        Returns
        -------
        dask.array.Array
        """
        from diced.cluster.arrays import to_dask

        return to_dask(self, version=version, scale=scale, **options)

    def to_xarray(self, *, version: Any = None, scale: int = 0, **options: Any) -> Any:
        """The array at a version as an ``xarray.DataArray`` (dims ``z, y, x``; coordinates
        from the origin, and ``voxel_size=`` if given). See :func:`diced.cluster.to_xarray`.

        Returns
        -------
        xarray.DataArray
        """
        from diced.cluster.arrays import to_xarray

        return to_xarray(self, version=version, scale=scale, **options)

    def from_dask(self, data: Any, *, offset: Sequence[int] | None = None,
                  client: Any = None, **options: Any) -> None:
        """Write a dask array into this (open) version, chunk-aligned blocks in parallel on
        a dask cluster (default: the active client, else local threads). See
        :func:`diced.cluster.from_dask`."""
        from diced.cluster.arrays import from_dask

        from_dask(self, data, offset=offset, client=client, **options)

    # --- absolute coordinates ----------------------------------------------------------------

    @property
    def abs(self) -> _AbsoluteIndexer:
        """Index by absolute (origin-shifted) coordinates: ``arr.abs[-64:0, ...]``."""
        return _AbsoluteIndexer(self)
