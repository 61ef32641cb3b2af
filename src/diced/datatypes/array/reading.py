"""Reads of :class:`~diced.datatypes.array.array.VersionedArray` (the :class:`ArrayReads`
mixin): basic, orthogonal and vectorized selections, chunk by chunk in threads, with the
locked-chunk cache, partial decoding, and prefetching for viewers."""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from diced.array._readcache import (
    _cache_ident,
    _copy_out,
    _decode_box,
    _decode_hit,
    _decode_part,
    _locked_cache,
    _serve_box,
    _serve_cached,
    cacheable_block,
)
from diced.array._readplan import IO_WORKERS, io_pool, result_array
from diced.array.indexing import ChunkProjection, Selection, plan_selection
from diced.datatypes.array import _common
from diced.datatypes.array._common import _batches, _chain, _is_whole, _pool, _scratch
from diced.datatypes.array.indexers import _SelectionIndexer
from diced.errors import CorruptDataError, InvalidArgumentError
from diced.repo import keys as K
from diced.repo.chunkpacks import PackRead, arrival_order
from diced.repo.resolve import VersionCtx

__all__ = ["GROUP_BYTES", "REMOTE_GROUP_BYTES", "ArrayReads"]

#: raw bytes of chunk data one reader thread fetches and decodes at a time
GROUP_BYTES = 4 << 20
#: the same on object stores, where a read's groups should all be in flight at once: a 256^3
#: uint64 read (64 chunks of 2 MiB) in groups of 2 took two waves of requests on the 16 I/O
#: threads, one latency more than in groups of 4
REMOTE_GROUP_BYTES = 8 << 20
#: packed chunks are requested in windows of about this many compressed bytes
#: (:meth:`ArrayReads._read_arriving`)
PACK_WINDOW = 64 << 20


class ArrayReads:
    """The read half of :class:`~diced.datatypes.array.array.VersionedArray`."""

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
        out = result_array(sel.shape, self.dtype)
        try:
            self._read_into(ctx, shape, sel, out, self._read_post(ctx, **options))
        except CorruptDataError:
            if not self._ref.squashed_elsewhere():
                raise
            # another process squashed versions since this handle read its index: the
            # handle has re-read the repo and dropped the stale index caches; read again
            ctx = self._ref.ctx()
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

        Local stores (LMDB): one thread per core takes small batches of chunks from one
        queue (:meth:`_run_queue`), each batch one backend visit, decoded as it is read.
        Object stores: groups of chunks are read by the I/O pool, all in flight at once (one
        bulk request round each), and decoded by the thread that fetched them; only a few
        groups of compressed chunks are in memory at once. Packed chunks (of a packed locked
        version) stream in from ranged GETs all sent at once and are decoded as they arrive
        (:meth:`_read_arriving`). Whole chunks whose target is
        contiguous decode straight into ``out``; the others decode into a per-thread scratch
        chunk (no fresh allocation, so no page faults, per chunk), 3-d boxes of blosc2 chunks
        in one GIL-free decode-and-copy call. ``post(region)``, if given, runs on each filled region in
        the same thread (label arrays apply the body mapping there). At a locked version the
        chunks in the locked-chunk cache are served first, in one lookup, and only the others
        are read; a box whose chunks are all cached is copied in one numba call
        (:func:`~diced.array._readcache._serve_box`).
        """
        space = self._space
        # a selection inside one chunk (a voxel, a chunk, a small box: a viewer's reads)
        # skips the general projection, and a cached one the rest of the read path
        one = sel.single_chunk(self.chunks, shape) if isinstance(sel, Selection) else None
        n = 1 if one is not None else sel.count_chunks(self.chunks, shape)
        blocks = self._cached_blocks()
        # (label blocks: decoded through the calling thread's scratch chunk if need be)
        scratch = None if blocks is None else lambda: _scratch(self.chunks, self.dtype)
        cache, keep = _locked_cache(ctx, n * self._cached_chunk_nbytes())
        inst = space.inst
        ident = _cache_ident(self._ref.store_location, ctx, inst)
        found = None  # the chunks a box read looked up already (see _serve_box)
        if cache is not None:
            if one is not None:
                chunk = cache.get((*ident, one.coords))
                if chunk is not None:
                    if blocks is None:
                        _copy_out(one, chunk, out, post)
                    else:
                        _decode_hit(one, chunk, out, post, scratch)  # type: ignore[arg-type]
                    return
            elif isinstance(sel, Selection):  # a box of cached chunks: one kernel call
                served, found = _serve_box(sel, self.chunks, cache, ident, out, post, _pool,
                                           _common._READERS, scratch)
                if served:
                    return
        # 3-d step-1 boxes of blosc2 chunks: a partial chunk is decoded and copied in one
        # GIL-free call (see diced.array.codecs._blosc_kernels)
        boxed = (out.ndim == 3 and hasattr(self.codec, "decode_box") and self.dtype.isnative
                 and (self.dtype.kind in "biu" or self.dtype.char in "fdFD")  # numba's types
                 and isinstance(sel, Selection) and all(d.step == 1 for d in sel.dims))

        def fill(p: ChunkProjection, data: bytes | memoryview | None) -> None:
            if keep and data is not None:  # locked version: decode once, keep, copy out
                if blocks is not None:  # a label block: keep its DVID serialization
                    block = cacheable_block(self.codec.decode_block_bytes(data, blocks))
                    chunk = self._decode_block(block, p, out)  # checks the whole block
                    cache.put((*ident, p.coords), block)  # type: ignore[union-attr]
                    if chunk is None:
                        if post is not None:
                            post(out[p.out_sel])
                        return
                else:
                    chunk = self._decode(data)
                    cache.put((*ident, p.coords), chunk)  # type: ignore[union-attr]
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

        def work(group: list[ChunkProjection], packs: bool = True) -> None:
            space.visit([K.chunk_ckey(p.coords) for p in group], ctx,
                        lambda i, data: fill(group[i], data), packs=packs)

        remote = not space.ordered  # object stores: many groups in flight (see _readplan)
        projections: Iterable[ChunkProjection] = (
            [one] if one is not None else sel.project(self.chunks, shape))
        if cache is not None and one is None:  # locked: cached chunks first, then the others
            projections = _serve_cached(projections, cache, ident, out,
                                        post, _pool, _common._READERS, found, scratch)
            n = len(projections)
        if not remote:
            self._run_queue(list(projections), work)
            return
        # groups of at most REMOTE_GROUP_BYTES, and enough of them that all are in flight
        # at once
        per = max(1, min(REMOTE_GROUP_BYTES // self._chunk_nbytes(), -(-n // IO_WORKERS)))
        if n > 1:  # packed chunks (diced.repo.chunkpacks): streamed ranged GETs
            projections = list(projections)
            # at least one GET per core (each at most chunkpacks.SPAN_MAX compressed bytes;
            # decoding follows the bytes whatever a GET holds, so decoded sizes set no cap)
            cap = -(-n // _common._READERS)
            planned = space.plan_packed([K.chunk_ckey(p.coords) for p in projections], ctx,
                                        max(1, cap))
            if planned is not None:
                reads, rest = planned
                self._read_arriving(reads, projections, ctx, fill, work,
                                    _batches([projections[i] for i in rest], 1, per))
                return
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

    def _cached_blocks(self) -> tuple[int, int, int] | None:
        """The chunk shape when the locked-chunk cache keeps this array's chunks as DVID
        label blocks (a 3-d uint64 array in the ``labelblock`` codec: a cached block is
        2.5 % of the chunk's bytes for pinky40, and a warm read decodes only the voxels it
        returns), else ``None`` (chunks are cached decoded)."""
        if self.codec.name == "labelblock" and self.dtype == np.uint64 and len(self.chunks) == 3:
            return self.chunks  # type: ignore[return-value]
        return None

    def _cached_chunk_nbytes(self) -> int:
        """What a chunk is taken to cost in the locked-chunk cache, to keep one read from
        filling it: the decoded bytes, or an eighth of them for label blocks (pinky40's are
        2.5 %)."""
        n = self._chunk_nbytes()
        return n // 8 if self._cached_blocks() is not None else n

    def _decode_block(self, block: np.ndarray, p: ChunkProjection, out: np.ndarray
                      ) -> np.ndarray | None:
        """Decode a whole label block, which checks all of it: straight into ``out`` when
        ``p`` covers the chunk and its target is contiguous (``None`` returned), else into
        a per-thread scratch chunk (returned, for :func:`_copy_out`)."""
        from diced.array.codecs.labelblock import decode_block

        if not p.fancy and p.full and _is_whole(p, self.chunks):
            target = out[p.out_sel]
            if target.flags.c_contiguous:
                decode_block(block, self.chunks, out=target)
                return None
        return decode_block(block, self.chunks, out=_scratch(self.chunks, self.dtype))

    def _read_arriving(self, reads: list[PackRead], projections: list[ChunkProjection],
                       ctx: VersionCtx, fill: Callable[[ChunkProjection, Any], None],
                       work: Callable[..., None],
                       others: Iterable[list[ChunkProjection]]) -> None:
        """Read packed chunks as TensorStore reads chunk objects: every ranged GET in
        flight at once, this thread and ``_READERS - 1`` pool threads decoding each chunk
        as soon as its bytes are in, in the order they arrive. ``others`` (groups of chunks
        that are not packed) go to the I/O pool meanwhile; a chunk its pack does not hold
        intact is read from its own object at the end.

        Memory: the GETs are sent in windows of about :data:`PACK_WINDOW` bytes, the next
        one once half of the current one is taken, so at most about two windows of
        compressed bytes are held besides ``out``."""
        space = self._space
        windows: list[list[PackRead]] = [[]]
        size = 0
        for r in reads:
            if windows[-1] and size + (r.end - r.start) > PACK_WINDOW:
                windows.append([])
                size = 0
            windows[-1].append(r)
            size += r.end - r.start
        counts = [sum(len(r.values) for r in w) for w in windows]
        total = sum(counts)
        # the claim after which window j + 1 is sent: half-way through window j
        triggers: dict[int, int] = {}
        begin = 0
        for j, c in enumerate(counts[:-1]):
            triggers[begin + max(1, c // 2)] = j + 1
            begin += c
        ready: queue.SimpleQueue[Any] = queue.SimpleQueue()
        lock = threading.Lock()
        claimed = [0]
        failed: list[BaseException] = []
        missing: list[int] = []

        def send(j: int) -> None:
            space.launch_packed(windows[j])
            arrival_order(windows[j], ready)

        def runner() -> None:
            while not failed:
                with lock:
                    if claimed[0] == total:
                        return
                    claimed[0] += 1
                    j = triggers.get(claimed[0])
                try:
                    if j is not None:
                        send(j)
                    p = ready.get()
                    if p is None:  # another runner failed
                        return
                    if not space.take_packed(p, ctx, lambda i, data: fill(projections[i], data)):
                        with lock:
                            missing.append(p.i)
                except BaseException as exc:
                    failed.append(exc)
                    for _ in range(_common._READERS):  # wake runners waiting for values that
                        ready.put(None)                # a failed send will never bring
                    raise

        futures = [io_pool().submit(work, g) for g in others]
        runners: list[Any] = []
        try:
            send(0)
            runners = [_pool().submit(runner) for _ in range(min(_common._READERS, total) - 1)]
            runner()
        except BaseException as exc:
            if not failed:
                failed.append(exc)
            raise
        finally:
            _join_runners(runners, failed)
            if failed:
                for f in futures:
                    f.cancel()
        if failed:
            raise failed[0]
        if missing:  # from their chunk objects (their packs were just found unusable)
            work([projections[i] for i in sorted(missing)], False)
        for f in futures:
            f.result()

    def _run_queue(self, items: list[ChunkProjection],
                   work: Callable[[list[ChunkProjection]], None]) -> None:
        """Read ``items`` with this thread and up to ``_READERS - 1`` pool threads taking
        batches from one shared queue, costliest chunks first, batches shrinking as the
        queue empties (guided self-scheduling), so every thread finishes at about the same
        time. A box read meets chunks that cost very different amounts (a chunk cut to a few
        planes decodes only those), and fixed groups left one core idle while the last,
        heaviest group finished."""
        if not items:
            return
        k = min(_common._READERS, len(items))
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
            _join_runners(futures, failed)
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


def _join_runners(futures: list[Any], failed: list[BaseException]) -> None:
    """Wait for the pool runners of a read once this thread's runner has returned (the work
    is done, or one failed), recording the first failure in ``failed``. A runner no pool
    thread has started yet has nothing left to do, so it is cancelled instead of waited
    for: a busy pool (a server's concurrent reads) adds no latency, and a read called from
    a pool thread cannot wait on itself."""
    for f in futures:
        if f.cancel():
            continue
        try:
            f.result()
        except BaseException as exc:  # noqa: BLE001 - the first failure is raised
            if not failed:
                failed.append(exc)


def _rows(s: Any, lead: int) -> int:
    """Leading-axis rows a chunk's selection covers (the whole chunk for index arrays)."""
    if isinstance(s, slice) and s.step in (None, 1) and s.start is not None \
            and s.stop is not None:
        return s.stop - s.start
    return lead
