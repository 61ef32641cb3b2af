"""VersionedArray: numpy slicing over chunks of a versioned key space (the ``array``
datatype's instance object; the datatype itself is :class:`diced.datatypes.array.ArrayType`).

Everything here that does not need the repo (grids, the indexing planner, codecs, the
downsampling kernels) lives one layer down in :mod:`diced.array`."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from diced.array._readcache import (
    _copy_out,
    _decode_box,
    _decode_part,
    _locked_cache,
    _serve_cached,
)
from diced.array._readplan import IO_WORKERS, cpu_workers, io_pool
from diced.array.codecs.base import ChunkCodec, codec_from_dict
from diced.array.grid import (
    as_int,
    cast_value,
    check_chunks,
    check_dtype,
    check_shape,
)
from diced.array.indexing import ChunkProjection, Selection, plan_selection
from diced.errors import (
    IndexOutOfBoundsError,
    InvalidArgumentError,
    LockedNodeError,
    ShapeMismatchError,
)
from diced.repo import keys as K
from diced.repo.resolve import VersionCtx

if TYPE_CHECKING:
    from diced.repo.context import InstanceContext
    from diced.repo.repo import Version

log = logging.getLogger(__name__)

__all__ = ["VersionedArray", "array_config"]

#: raw bytes of chunk data handled per write batch (one transaction)
BATCH_BYTES = 32 << 20
#: smallest write batch when a large write is split for pipelining
PIPELINE_MIN_BYTES = 4 << 20
#: raw bytes of chunk data one reader thread fetches and decodes at a time
GROUP_BYTES = 4 << 20
_POOL: ThreadPoolExecutor | None = None


_WORKERS = cpu_workers()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="diced-chunks")
    return _POOL


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


class VersionedArray:
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

    # --- reads -----------------------------------------------------------------------------

    def __getitem__(self, selection: Any) -> Any:
        return self._get(selection, "basic")

    def _read_post(self, ctx: VersionCtx, **options: Any) -> Any:
        """A function applied to each filled region of a read (label arrays map bodies)."""
        return None

    def read(self, selection: Any = Ellipsis, *, roi: Any = None) -> Any:
        """Voxels of a basic selection; with ``roi`` (an ROI instance), voxels outside the
        ROI read as 0 (``roi`` needs a 3-d array and step-1 slices or integers).

        Parameters
        ----------
        selection : index, default ``...``
        roi : ROI, optional
            A :class:`diced.datatypes.roi.ROI`; its mask of the selected box (in absolute,
            origin-shifted ``(z, y, x)`` coordinates) zeroes the voxels outside.

        Returns
        -------
        numpy.ndarray
        """
        return self._get(selection, "basic", roi=roi)

    def _roi_mask(self, sel: Any, roi: Any) -> np.ndarray:
        """The ROI's boolean mask over a basic selection's (undropped) shape."""
        if not hasattr(roi, "mask_zyx"):
            raise InvalidArgumentError(f"roi must be an ROI instance, got {type(roi).__name__}")
        dims = getattr(sel, "dims", None)
        if dims is None or len(dims) != 3 or any(d.step != 1 for d in dims):
            raise InvalidArgumentError(
                "roi= needs a 3-d array and a box selection (integers or step-1 slices)")
        org = self.origin
        lo = [d.start + o for d, o in zip(dims, org, strict=True)]
        hi = [d.start + d.size + o for d, o in zip(dims, org, strict=True)]
        return roi.mask_zyx((lo, hi))

    def _get(self, selection: Any, mode: str, *, roi: Any = None, **options: Any) -> Any:
        """Read a selection of kind ``mode`` (see :func:`diced.array.indexing.plan_selection`);
        with ``roi``, zero the voxels outside it."""
        ctx = self._ref.ctx()
        shape = self._shape_at(ctx)
        sel = plan_selection(selection, shape, mode)
        mask = None if roi is None else self._roi_mask(sel, roi)
        out = np.empty(sel.shape, dtype=self.dtype)
        self._read_into(ctx, shape, sel, out, self._read_post(ctx, **options))
        if mask is not None:
            out[~mask] = 0
        result = out.reshape(sel.result_shape)
        return result[()] if sel.scalar else result

    @property
    def oindex(self) -> _SelectionIndexer:
        """Orthogonal indexing, as zarr's: per axis an integer, a slice, an integer array or a
        boolean array, each axis selected independently (numpy's ``a[np.ix_(...)]``).
        ``arr.oindex[[1, 5], :, mask_x]`` reads; ``arr.oindex[...] = v`` writes."""
        return _SelectionIndexer(self, "orthogonal")

    @property
    def vindex(self) -> _SelectionIndexer:
        """Vectorized (point) indexing, as zarr's: one integer array per axis, broadcast
        together (``arr.vindex[z, y, x]`` with the columns of an (n, 3) point list gives n
        values), or a full-shape boolean mask. Reads only the chunks holding a point."""
        return _SelectionIndexer(self, "vectorized")

    def _read_into(self, ctx: VersionCtx, shape, sel, out: np.ndarray,
                   post: Any = None) -> None:
        """Fill ``out`` (selection-shaped) chunk by chunk.

        Worker threads each fetch a small group of chunks (one batched backend read) and
        decode it, so I/O overlaps decoding and only a few groups of compressed chunks are
        in memory at once. Whole chunks whose target is contiguous decode straight into
        ``out``; the others decode into a per-thread scratch chunk (no fresh allocation, so
        no page faults, per chunk). ``post(region)``, if given, runs on each filled region in
        the same thread (label arrays apply the body mapping there). At a locked version the
        chunks in the locked-chunk cache are served first, in one lookup, and only the others
        are read.
        """
        space = self._space
        n = sel.count_chunks(self.chunks, shape)
        cache, keep = _locked_cache(ctx, n * self._chunk_nbytes())
        inst = space.inst
        # 3-d step-1 boxes of blosc2 chunks: a partial chunk is decoded and copied in one
        # GIL-free call (see diced.array.codecs._blosc_kernels)
        boxed = (out.ndim == 3 and hasattr(self.codec, "decode_box") and self.dtype.isnative
                 and self.dtype.kind in "biufc" and isinstance(sel, Selection)
                 and all(d.step == 1 for d in sel.dims))

        def work(group: list[ChunkProjection]) -> None:
            def fill(i: int, data: bytes | memoryview | None) -> None:
                p = group[i]
                if keep and data is not None:  # locked version: decode once, keep, copy out
                    chunk = self._decode(data)
                    cache.put((ctx.repo, ctx.uuid, inst, p.coords), chunk)  # type: ignore[union-attr]
                    _copy_out(p, chunk, out, post)
                    return
                if p.fancy:  # index arrays: out[out_sel] would be a copy, so assign into it
                    if data is None:
                        out[p.out_sel] = self.fill_value
                        return
                    vals = self._decode(data, out=_scratch(self.chunks, self.dtype))[p.chunk_sel]
                    if post is not None:
                        post(vals)
                    out[p.out_sel] = vals
                    return
                target = out[p.out_sel]
                if data is None:
                    target[...] = self.fill_value
                    return
                if p.full and _is_whole(p, self.chunks) and target.flags.c_contiguous:
                    self._decode(data, out=target)
                else:
                    scratch = _scratch(self.chunks, self.dtype)
                    if boxed and _decode_box(self.codec, data, p, scratch, out):
                        if post is not None:
                            post(target)
                        return
                    if not _decode_part(self.codec, data, self.chunks, p, scratch):
                        self._decode(data, out=scratch)
                    target[...] = scratch[p.chunk_sel]
                if post is not None:
                    post(target)

            space.visit([K.chunk_ckey(p.coords) for p in group], ctx, fill)

        remote = not space.ordered  # object stores: many groups in flight (see _readplan)
        projections: Iterable[ChunkProjection] = sel.project(self.chunks, shape)
        if cache is not None:  # locked version: cached chunks first, then read the others
            projections = _serve_cached(projections, cache, (ctx.repo, ctx.uuid, inst), out,
                                        post, _pool, _WORKERS)
            n = len(projections)
        if not remote:
            self._run_queue(list(projections), work)
            return
        # groups of at most GROUP_BYTES, and enough of them that all are in flight at once
        per = max(1, min(GROUP_BYTES // self._chunk_nbytes(), -(-n // IO_WORKERS)))
        groups = _batches(projections, 1, per)
        first = next(groups, None)
        if first is None:
            return
        second = next(groups, None)
        if second is None:
            work(first)
            return
        # the pool takes every group but the first, which this thread reads meanwhile
        futures = [io_pool().submit(work, g) for g in _chain([second], groups)]
        try:
            work(first)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        for f in futures:
            f.result()

    def _run_queue(self, items: list[ChunkProjection],
                   work: Callable[[list[ChunkProjection]], None]) -> None:
        """Read ``items`` with this thread and up to ``_WORKERS - 1`` pool threads taking
        batches from one shared queue, costliest chunks first, batches shrinking as the
        queue empties (guided self-scheduling), so every thread finishes at about the same
        time. A box read meets chunks that cost very different amounts (a chunk cut to a few
        planes decodes only those), and fixed groups left one core idle while the last,
        heaviest group finished."""
        if not items:
            return
        k = min(_WORKERS, len(items))
        if k == 1:
            work(items)
            return
        cap = max(1, GROUP_BYTES // self._chunk_nbytes())
        lead = self.chunks[0]
        if hasattr(self.codec, "decode_rows"):  # partial chunks decode only their rows
            items.sort(key=lambda p: _rows(p.chunk_sel[0], lead), reverse=True)
        queue = collections.deque(items)
        lock = threading.Lock()
        failed: list[BaseException] = []

        def runner() -> None:
            while not failed:
                with lock:
                    m = min(cap, max(1, len(queue) // (2 * k)), len(queue))
                    batch = [queue.popleft() for _ in range(m)]
                if not batch:
                    return
                try:
                    work(batch)
                except BaseException as exc:
                    failed.append(exc)
                    raise

        futures = [_pool().submit(runner) for _ in range(k - 1)]
        try:
            runner()
        finally:
            for f in futures:
                try:
                    f.result()
                except BaseException as exc:  # noqa: BLE001 - the first failure is raised
                    if not failed:
                        failed.append(exc)
        if failed:
            raise failed[0]

    def prefetch(self, selection: Any = Ellipsis, *, margin: int = 1) -> Any:
        """Warm the locked-chunk cache (:mod:`diced.backends.cache`) in the background with the
        chunks of ``selection`` grown by ``margin`` chunks on every side, so that a viewer
        scrolling on through a locked version finds them decoded. Opt-in, bounded (nothing
        is done when the region exceeds half the cache), one background thread.

        Returns a :class:`concurrent.futures.Future` of the number of chunks read (``0``:
        nothing to do: the version is open, the cache is off or the region too large)."""
        from diced.array._readcache import prefetch

        return prefetch(self, selection, margin)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self[...]
        arr = np.asarray(arr)
        return arr.astype(dtype) if dtype is not None else arr

    # --- writes ----------------------------------------------------------------------------

    def __setitem__(self, selection: Any, value: Any) -> None:
        self._set(selection, value, "basic")

    def _set(self, selection: Any, value: Any, mode: str) -> None:
        """Write ``value`` to a selection of kind ``mode``: broadcast, cast by the one casting
        rule (:func:`diced.array.grid.cast_value`), read-modify-write per chunk."""
        ctx = self._ref.ctx()
        if self._level:
            raise InvalidArgumentError(
                f"scale {self._level} of {self.name!r} is computed from scale 0; write there")
        if ctx.locked:
            raise LockedNodeError(
                f"version {ctx.uuid} is locked: {self.name!r} is read-only there; "
                "branch or newversion to write")
        shape = self._shape_at(ctx)
        sel = plan_selection(selection, shape, mode)
        arr = cast_value(value, self.dtype)
        # as numpy assignment does, ignore leading length-1 axes beyond the selection's rank
        while arr.ndim > len(sel.result_shape) and arr.shape[0] == 1:
            arr = arr[0]
        try:
            arr = np.broadcast_to(arr, sel.result_shape)
        except ValueError as exc:
            raise ShapeMismatchError(
                f"could not broadcast value of shape {np.shape(value)} to selection of shape "
                f"{sel.result_shape}") from exc
        arr = arr.reshape(sel.shape)
        self._write(ctx, shape, sel, arr)

    def _write(self, ctx: VersionCtx, shape, sel, arr: np.ndarray) -> None:
        """Write ``arr`` (selection-shaped) batch by batch, pipelined: the whole chunks of the
        next batch are encoded in the pool while the current batch is stored (the LMDB
        transaction runs in this thread), so encoding and storing overlap."""
        limit = self._batch_limit(int(np.prod(sel.shape, dtype=np.int64)) * self.dtype.itemsize)
        pending: tuple[list[ChunkProjection], Any] | None = None
        ahead = None
        try:
            for batch in _batches(sel.project(self.chunks, shape), self._chunk_nbytes(), limit):
                ahead = self._encode_ahead(ctx, batch, arr)
                if pending is not None:
                    self._store_batch(ctx, *pending, arr)
                pending = (batch, ahead)
            if pending is not None:
                self._store_batch(ctx, *pending, arr)
        except BaseException:  # drop the encodings not started yet
            self._drop_ahead(ahead)
            if pending is not None:
                self._drop_ahead(pending[1])
            raise

    def _batch_limit(self, total: int) -> int:
        """Raw bytes per write batch (one transaction) for a write of ``total`` bytes: about
        8 batches for a large write (more overlap), each at most ``BATCH_BYTES``."""
        return max(PIPELINE_MIN_BYTES, min(BATCH_BYTES, total // 8))

    def _store_batch(self, ctx: VersionCtx, batch: list[ChunkProjection], ahead: Any,
                     arr: np.ndarray) -> None:
        if ahead is None:
            self._write_batch(ctx, batch, arr)
        else:
            self._write_batch(ctx, batch, arr, ahead)
        if self.max_scale:
            self._update_pyramid(ctx, [p.coords for p in batch])

    def _encode_chunk(self, p: ChunkProjection, arr: np.ndarray) -> tuple[str, bytes | None]:
        """Key and payload of a chunk the write covers whole (``p.full``)."""
        chunk = _scratch(self.chunks, self.dtype)  # per thread; no allocation per chunk
        if not _is_whole(p, self.chunks):  # edge chunk covering the array's remainder
            chunk[...] = self.fill_value
        chunk[p.chunk_sel] = arr[p.out_sel]
        return K.chunk_ckey(p.coords), self._encode(chunk)

    def _encode_ahead(self, ctx: VersionCtx, batch: list[ChunkProjection], arr: np.ndarray
                      ) -> Any:
        """Start encoding the batch's whole chunks in the pool (futures of
        :meth:`_encode_chunk`), or ``None`` when :meth:`_write_batch` encodes by itself."""
        full = [p for p in batch if p.full]
        if len(full) <= 2:
            return None
        pool = _pool()
        return [pool.submit(self._encode_chunk, p, arr) for p in full]

    def _drop_ahead(self, ahead: Any) -> None:
        """Cancel what :meth:`_encode_ahead` started and has not run yet (after an error)."""
        for f in ahead or ():
            f.cancel()

    def _write_batch(self, ctx: VersionCtx, batch: list[ChunkProjection], arr: np.ndarray,
                     ahead: Any = None) -> None:
        """Encode a batch of chunks in the thread pool (or take the encodings started by
        :meth:`_encode_ahead`), then store it in one transaction.

        Partly covered chunks are merged with their current value before the transaction
        opens; inside it, a chunk whose value changed meanwhile (another writer) makes the
        batch start over, so no update is lost and the writer lock is held only for I/O."""
        full = [p for p in batch if p.full]
        partial = [p for p in batch if not p.full]
        if ahead is not None:
            encoded = dict(f.result() for f in ahead)
        else:
            encoded = dict(map(lambda p: self._encode_chunk(p, arr), full))
        keys = [K.chunk_ckey(p.coords) for p in partial]
        proj = dict(zip(keys, partial, strict=True))
        attempt = 0
        while True:
            current = self._space.read_many(keys, ctx)

            def merge(item: tuple[ChunkProjection, bytes | None]) -> bytes | None:
                p, base = item
                chunk = _scratch(self.chunks, self.dtype)
                if base is None:
                    chunk[...] = self.fill_value
                else:
                    self._decode(base, out=chunk)
                chunk[p.chunk_sel] = arr[p.out_sel]
                return self._encode(chunk)

            items = list(zip(partial, current, strict=True))
            merged = list(_pool().map(merge, items) if len(items) > 2 else map(merge, items))
            new = {**encoded, **dict(zip(keys, merged, strict=True))}
            expected = dict(zip(keys, current, strict=True))

            # after a few lost races, merge inside the write itself (holding the writer
            # lock or transaction while decoding): a writer can never starve
            inside = attempt >= _OPTIMISTIC_TRIES

            def modify(ckey: str, base: bytes | None, expected=expected, new=new,
                       inside=inside) -> bytes | None:
                if ckey in expected and base != expected[ckey]:
                    if inside:
                        return merge((proj[ckey], base))
                    raise _Stale
                return new[ckey]

            try:
                self._space.modify(ctx, list(new), modify)
                return
            except _Stale:
                attempt += 1

    def _chunk_nbytes(self) -> int:
        return int(np.prod(self.chunks)) * self.dtype.itemsize

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
        step = max(1, BATCH_BYTES // max(1, 8 * self._chunk_nbytes()))
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


class _AbsoluteIndexer:
    """``arr.abs[...]``: integers and slices in absolute (origin-shifted) coordinates.

    A slice needs explicit bounds, which must lie in the array's absolute extent ``o:o+n``
    (the positions a slice may start or stop at: ``o..o+n`` going up, ``o-1..o+n-1`` going
    down with a negative step); steps of either sign select as Python's ``range``.
    """

    def __init__(self, arr: VersionedArray) -> None:
        self.arr = arr

    def _shift(self, selection: Any) -> tuple[Any, ...]:
        import operator

        from diced.errors import InvalidIndexError

        if not isinstance(selection, tuple):
            selection = (selection,)
        if any(s is Ellipsis or s is None for s in selection) or len(selection) != self.arr.ndim:
            raise InvalidIndexError(
                f"absolute indexing takes exactly {self.arr.ndim} integers or slices")

        def as_int(x: Any, what: str) -> int:
            if isinstance(x, (bool, np.bool_)):
                raise InvalidIndexError(f"absolute {what} must be an integer, got {x!r}")
            try:
                return operator.index(x)
            except TypeError as exc:
                raise InvalidIndexError(f"absolute {what} must be an integer, got {x!r}") from exc

        out: list[Any] = []
        for s, o, n in zip(selection, self.arr.origin, self.arr.shape, strict=True):
            if isinstance(s, slice):
                if s.start is None or s.stop is None:
                    raise InvalidIndexError("absolute slices need explicit start and stop")
                start, stop = as_int(s.start, "slice start"), as_int(s.stop, "slice stop")
                step = 1 if s.step is None else as_int(s.step, "slice step")
                if step == 0:
                    raise InvalidArgumentError("slice step cannot be zero")
                lo, hi = (o, o + n) if step > 0 else (o - 1, o + n - 1)
                if not (lo <= start <= hi and lo <= stop <= hi):
                    raise IndexOutOfBoundsError(
                        f"absolute range {start}:{stop}:{step} is outside {o}:{o + n}")
                r = range(start - o, stop - o, step)
                if not len(r):
                    out.append(slice(0, 0))
                else:  # the same indices as a slice that never wraps around from the end
                    last = r[-1] + (1 if step > 0 else -1)
                    out.append(slice(r[0], None if last < 0 else last, step))
            else:
                i = as_int(s, "index") - o
                if not 0 <= i < n:
                    raise IndexOutOfBoundsError(f"absolute index {s} is outside {o}:{o + n}")
                out.append(i)
        return tuple(out)

    # the array's own basic indexing, not a subclass's __getitem__ (DICED's is absolute)
    def __getitem__(self, selection: Any) -> Any:
        return self.arr._get(self._shift(selection), "basic")

    def __setitem__(self, selection: Any, value: Any) -> None:
        self.arr._set(self._shift(selection), value, "basic")


class _SelectionIndexer:
    """``arr.oindex`` / ``arr.vindex``: reads and writes of one selection kind."""

    def __init__(self, arr: VersionedArray, mode: str) -> None:
        self.arr, self.mode = arr, mode

    def __getitem__(self, selection: Any) -> Any:
        return self.arr._get(selection, self.mode)

    def __setitem__(self, selection: Any, value: Any) -> None:
        self.arr._set(selection, value, self.mode)


#: optimistic rounds (partial chunks merged outside the write) before merging inside it
_OPTIMISTIC_TRIES = 3


class _Stale(Exception):
    """A chunk changed between planning a write and storing it."""


_LOCAL = threading.local()


def _scratch(chunks: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A reusable chunk-sized buffer for the calling thread."""
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or buf.shape != chunks or buf.dtype != dtype:
        buf = np.empty(chunks, dtype=dtype)
        _LOCAL.buf = buf
    return buf


_OCTANTS = [(z, y, x) for z in (0, 1) for y in (0, 1) for x in (0, 1)]


def _is_whole(p: ChunkProjection, chunks: Sequence[int]) -> bool:
    return all(s.start == 0 and s.stop == c for s, c in zip(p.chunk_sel, chunks, strict=True))


def _all_fill(chunk: np.ndarray, fill: Any) -> bool:
    """Whether every element is bitwise the fill value (so ``-0.0`` is not a fill of ``0.0``
    and only the fill's own NaN is), i.e. whether dropping the chunk changes no read."""
    if chunk.dtype.kind in "iub" and fill == 0:
        return not np.any(chunk)  # one pass, no temporary bool array
    if chunk.dtype.kind in "fc":
        unit = min(chunk.dtype.itemsize, 8)
        words = np.dtype(f"<u{unit}")
        per = chunk.dtype.itemsize // unit
        ref = np.asarray(fill, dtype=chunk.dtype).reshape(1).view(words)
        flat = np.ascontiguousarray(chunk).reshape(-1).view(words).reshape(-1, per)
        if per == 1 and not ref[0]:
            return not np.any(flat)  # +0.0 fill: every word zero
        return bool((flat == ref).all())
    return bool((chunk == fill).all())


def _chain(head: list[Any], tail: Iterator[Any]) -> Iterator[Any]:
    yield from head
    yield from tail


def _rows(s: Any, lead: int) -> int:
    """Leading-axis rows a chunk's selection covers (the whole chunk for index arrays)."""
    if isinstance(s, slice) and s.step in (None, 1) and s.start is not None \
            and s.stop is not None:
        return s.stop - s.start
    return lead


def _batches(projections: Iterable[ChunkProjection], chunk_nbytes: int,
             limit: int | None = None) -> Iterator[list[ChunkProjection]]:
    per = max(1, (limit or BATCH_BYTES) // max(1, chunk_nbytes))
    batch: list[ChunkProjection] = []
    for p in projections:
        batch.append(p)
        if len(batch) >= per:
            yield batch
            batch = []
    if batch:
        yield batch

