"""Writes of :class:`~diced.datatypes.array.array.VersionedArray` (the :class:`ArrayWrites`
mixin): broadcast and cast, then read-modify-write chunk by chunk in batches, pipelined
(the next batch encodes while the current one is stored), optimistic for partial chunks."""

from __future__ import annotations

from typing import Any

import numpy as np

from diced.array.grid import cast_value
from diced.array.indexing import ChunkProjection, plan_selection
from diced.datatypes.array import _common
from diced.datatypes.array._common import _batches, _is_whole, _pool, _scratch
from diced.errors import InvalidArgumentError, LockedNodeError, ShapeMismatchError
from diced.repo import keys as K
from diced.repo.resolve import VersionCtx

__all__ = ["PIPELINE_MIN_BYTES", "ArrayWrites"]

#: smallest write batch when a large write is split for pipelining
PIPELINE_MIN_BYTES = 4 << 20

#: optimistic rounds (partial chunks merged outside the write) before merging inside it
_OPTIMISTIC_TRIES = 3


class _Stale(Exception):
    """A chunk changed between planning a write and storing it."""


class ArrayWrites:
    """The write half of :class:`~diced.datatypes.array.array.VersionedArray`."""

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
        return max(PIPELINE_MIN_BYTES, min(_common.BATCH_BYTES, total // 8))

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
