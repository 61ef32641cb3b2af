"""What a worker needs to read and write one array's chunks at one version, picklable.

A :class:`ChunkTarget` names the store (by URL), the key space, the chunk grid and codec,
and the version context; workers read and write through
:class:`~diced.repo.resolve.VersionedSpace` without opening the repo.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from diced.array.codecs.base import ChunkCodec, codec_from_dict
from diced.cluster._ref import StoreRef
from diced.repo import keys as K
from diced.repo.resolve import VersionCtx, VersionedSpace

__all__ = ["ChunkTarget", "aligned_blocks", "chunk_boxes", "grid_of"]

#: raw bytes of chunk data one write batch (one backend transaction) holds
BATCH_BYTES = 32 << 20


def _plain(ctx: VersionCtx) -> VersionCtx:
    return replace(ctx, uuid_of=None)


@dataclass(frozen=True)
class ChunkTarget:
    """One key space of an array (a pyramid level) at one version."""

    store: StoreRef
    space_id: int
    dtype: str
    chunks: tuple[int, ...]
    fill: Any
    codec: dict[str, Any] = field(hash=False)
    ctx: VersionCtx = field(hash=False)
    shape: tuple[int, ...] = ()
    name: str = ""

    @classmethod
    def of(cls, store: StoreRef, record: dict[str, Any], ctx: VersionCtx, level: int = 0,
           shape: Sequence[int] = ()) -> ChunkTarget:
        """The target of level ``level`` of the instance ``record`` at ``ctx``."""
        cfg = record["config"]
        sid = int(record["id"]) if level == 0 else int(cfg["subinstances"][level - 1])
        dt = np.dtype(cfg["dtype"])
        fv = cfg["fill_value"]
        fill = complex(*fv) if dt.kind == "c" else fv
        name = record.get("name", "") or ""
        return cls(store, sid, dt.str, tuple(cfg["chunks"]), fill, cfg["codec"], _plain(ctx),
                   tuple(int(n) for n in shape), name)

    def at(self, ctx: VersionCtx) -> ChunkTarget:
        """The same space at another version."""
        return replace(self, ctx=_plain(ctx))

    # --- per-process state ---------------------------------------------------------------

    @property
    def space(self) -> VersionedSpace:
        """The key space (the store opened once per process)."""
        return VersionedSpace(self.store.open().backend, self.space_id, self.name or None,
                              "chunk")

    @property
    def codec_obj(self) -> ChunkCodec:
        """The chunk codec."""
        return codec_from_dict(self.codec)

    @property
    def np_dtype(self) -> np.dtype:
        """The numpy dtype."""
        return np.dtype(self.dtype)

    @property
    def chunk_nbytes(self) -> int:
        """Raw bytes of one chunk."""
        return int(np.prod(self.chunks)) * self.np_dtype.itemsize

    # --- chunks --------------------------------------------------------------------------

    def empty(self) -> np.ndarray:
        """A chunk of fill."""
        return np.full(self.chunks, self.fill, dtype=self.np_dtype)

    def decode(self, data: bytes | None) -> np.ndarray:
        """A stored payload as a chunk (``None``: fill)."""
        if data is None:
            return self.empty()
        return self.codec_obj.decode(data, self.chunks, self.np_dtype)

    def encode(self, chunk: np.ndarray) -> bytes | None:
        """Chunk bytes, or ``None`` for an all-fill chunk (stored as nothing)."""
        from diced.datatypes.array.writing import _all_fill

        fill = np.asarray(self.fill, dtype=self.np_dtype)[()]
        if _all_fill(chunk, fill):
            return None
        return self.codec_obj.encode(np.ascontiguousarray(chunk, dtype=self.np_dtype))

    def read_raw(self, ckeys: Sequence[str]) -> list[bytes | None]:
        """Payloads visible at the target's version (``None``: nothing stored).

        On stores without ordered scans, reading an open version normally lists its whole
        manifest; here the version's own keys are fetched directly instead (data and
        tombstone, as :func:`~diced.repo.writers.modify_parts` does) and only the others
        are resolved from the (cached) manifests of the locked ancestors, so a task's cost
        does not grow with the size of the job."""
        space = self.space
        ctx = self.ctx
        if space.ordered or ctx.locked or not ckeys:
            return space.read_many(list(ckeys), ctx)
        inst, vid = self.space_id, ctx.vid
        keys = [K.data_key(inst, c, vid, m) for c in ckeys for m in (K.DATA, K.TOMB)]
        got = space.backend.get_many(keys)
        out: list[bytes | None] = [None] * len(ckeys)
        rest = []
        for i in range(len(ckeys)):
            data, tomb = got[2 * i], got[2 * i + 1]
            if data is not None:
                out[i] = bytes(data)
            elif tomb is None:
                rest.append(i)
        if rest:
            parents = space.resolve_many([ckeys[i] for i in rest], ctx, strict=True)
            for i, r in zip(rest, parents, strict=True):
                out[i] = None if r is None else r[1]
        return out

    def read(self, coords: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        """Decoded chunks at ``coords`` (fill where nothing is stored)."""
        vals = self.read_raw([K.chunk_ckey(c) for c in coords])
        return [self.decode(v) for v in vals]

    def write(self, chunks: dict[tuple[int, ...], np.ndarray]) -> None:
        """Store whole chunks at the target's version, in batches."""
        per = max(1, BATCH_BYTES // max(1, self.chunk_nbytes))
        items = list(chunks.items())
        space = self.space
        for i in range(0, len(items), per):
            part = items[i:i + per]
            space.write(self.ctx, {K.chunk_ckey(c): self.encode(a) for c, a in part})

    def paste(self, start: Sequence[int], data: np.ndarray, skip: frozenset[str] = frozenset()
              ) -> int:
        """Write ``data`` with its first element at array index ``start``: whole chunks
        directly, partly covered ones merged into the stored chunk. Whole chunks whose
        ckey is in ``skip`` (already written by an earlier run) are left alone. Returns the
        number of chunks written."""
        whole: dict[tuple[int, ...], np.ndarray] = {}
        partial: dict[str, tuple[tuple[slice, ...], tuple[slice, ...]]] = {}
        for coords, in_chunk, in_data in chunk_boxes(start, data.shape, self.chunks):
            ck = K.chunk_ckey(coords)
            if all(s.start == 0 and s.stop == c for s, c in zip(in_chunk, self.chunks,
                                                                  strict=True)):
                if ck not in skip:
                    whole[coords] = data[in_data]
            else:
                partial[ck] = (in_chunk, in_data)
        self.write(whole)
        if partial:
            def merge(ck: str, base: bytes | None) -> bytes | None:
                chunk = self.decode(base).copy()
                in_chunk, in_data = partial[ck]
                chunk[in_chunk] = data[in_data]
                return self.encode(chunk)

            self.space.modify(self.ctx, list(partial), merge)
        return len(whole) + len(partial)


def grid_of(shape: Sequence[int], chunks: Sequence[int]) -> tuple[int, ...]:
    """Chunks per axis covering ``shape``."""
    return tuple(-(-int(n) // int(c)) for n, c in zip(shape, chunks, strict=True))


def chunk_boxes(start: Sequence[int], shape: Sequence[int], chunks: Sequence[int]
                ) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]]:
    """For a box at ``start`` of ``shape``: ``(chunk coords, slice in chunk, slice in box)``
    of every chunk it overlaps."""
    ranges = []
    for s, n, c in zip(start, shape, chunks, strict=True):
        if n <= 0:
            return
        ranges.append(range(s // c, (s + n - 1) // c + 1))
    for coords in itertools.product(*ranges):
        in_chunk, in_box = [], []
        for ci, s, n, c in zip(coords, start, shape, chunks, strict=True):
            lo, hi = max(s, ci * c), min(s + n, (ci + 1) * c)
            in_chunk.append(slice(lo - ci * c, hi - ci * c))
            in_box.append(slice(lo - s, hi - s))
        yield coords, tuple(in_chunk), tuple(in_box)


def aligned_blocks(offset: Sequence[int], shape: Sequence[int], unit: Sequence[int]
                   ) -> tuple[tuple[int, ...], ...]:
    """dask ``chunks`` for a source of ``shape`` written at ``offset``: block edges fall on
    multiples of ``unit`` in array coordinates, so every array chunk belongs to one block."""
    out = []
    for o, n, u in zip(offset, shape, unit, strict=True):
        sizes, pos = [], o
        while pos < o + n:
            nxt = min(o + n, (pos // u + 1) * u)
            sizes.append(nxt - pos)
            pos = nxt
        out.append(tuple(sizes) if sizes else (0,))
    return tuple(out)


def block_unit(chunks: Sequence[int], itemsize: int, target_bytes: int = 16 << 20
               ) -> tuple[int, ...]:
    """A block shape of whole chunks of about ``target_bytes`` (grown axis 0 first, so a
    block is a slab of chunk rows, as sources such as TIFF stacks read best)."""
    unit = list(chunks)
    nbytes = int(np.prod(unit)) * itemsize
    axis = 0
    while nbytes * 2 <= target_bytes and axis < len(unit):
        unit[axis] *= 2
        nbytes *= 2
        if unit[axis] >= 8 * chunks[axis]:
            axis += 1
    return tuple(unit)
