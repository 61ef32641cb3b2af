"""LabelArray: uint64 segmentation in DVID compressed label blocks, with a label index,
supervoxel → body mapping, sparse volumes and proofreading edits.

Storage, per label instance (each a versioned key space, so every query and edit is versioned
and branches/merges/diffs like everything else):

* blocks: DVID compressed label blocks (§1 of the DVID reference) in an outer byte codec;
* index: supervoxel → its blocks and voxel count per block, updated incrementally in the same
  transaction as every block write (never by scanning the volume);
* mapping: supervoxel → body, only for supervoxels that were merged, cleaved or split;
* members: body → its supervoxels, only for bodies that are not a lone supervoxel.

Merges and cleaves touch only mapping and members (cost ∝ supervoxels involved); supervoxel
splits rewrite the blocks of that supervoxel. Every edit is recorded in a mutation log with
DVID's JSON fields.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from diced.array.indexing import ChunkProjection
from diced.datatypes.array.array import VersionedArray, array_config
from diced.datatypes.labels._common import Retry as _Retry
from diced.datatypes.labels._common import decode_index as _decode_index
from diced.datatypes.labels._common import lkey as _lkey
from diced.datatypes.labels._index_delta import IndexDeltas, block_delta
from diced.datatypes.labels.edits import LabelEditsMixin
from diced.datatypes.labels.merge import LabelMergeMixin
from diced.errors import (
    ConcurrencyError,
    CorruptDataError,
    InvalidArgumentError,
    LabelNotFoundError,
    LockedNodeError,
)
from diced.repo import keys as K
from diced.repo.meta import update_docs
from diced.repo.resolve import Part, VersionCtx, modify_parts

log = logging.getLogger(__name__)

__all__ = ["LabelArray", "labels_config", "meta_prefix"]

#: the label array's key spaces besides its blocks (allocated by LabelsType.allocate)
SPACES = ("index", "mapping", "members")


def labels_config(shape: Iterable[int] | None, vid: int, *, chunks: Iterable[int] | None = None,
                  max_scale: int = 0, codec: Any = None, origin: Iterable[int] | None = None
                  ) -> dict[str, Any]:
    """Validated instance configuration of a new label array (uint64, 3-D, chunk sides
    multiples of 8, labelblock codec by default), as stored in the repo document.

    Parameters
    ----------
    shape : sequence of int
        z, y, x.
    vid : int
        Id of the version creating it.
    chunks, max_scale, codec, origin
        As for :meth:`diced.Repo.create_labels`.

    Returns
    -------
    dict
    """
    cfg = array_config("uint64", shape, chunks or (64, 64, 64), 0, codec, origin, vid,
                       default_codec={"name": "labelblock", "outer": "zstd", "level": 1},
                       max_scale=max_scale)
    if len(cfg["chunks"]) != 3 or any(c % 8 or c < 8 for c in cfg["chunks"]):
        raise InvalidArgumentError("label arrays are 3-D with chunk sides that are multiples of 8")
    return cfg


def meta_prefix(record: dict[str, Any]) -> str:
    """Prefix of a label instance's unversioned metadata keys (max labels, label allocation,
    the mutation log)."""
    return f"meta/label/{record['id']:08x}/"


class LabelArray(LabelEditsMixin, LabelMergeMixin, VersionedArray):
    """A uint64 label volume (see module docstring). Reads return bodies (the supervoxel →
    body mapping applied) unless ``supervoxels=True`` is used via :meth:`read`."""

    typename = "labels"

    def __init__(self, context) -> None:
        super().__init__(context)
        spaces = self._rec["config"]["spaces"]
        name = self.name
        self._index = context.space(spaces["index"], f"{name} (label index)", "label")
        self._mapping = context.space(spaces["mapping"], f"{name} (mapping)", "label")
        self._members = context.space(spaces["members"], f"{name} (members)", "label")
        self._meta_prefix = meta_prefix(self._rec)

    # --- reads -----------------------------------------------------------------------------

    def __getitem__(self, selection: Any) -> Any:
        return self.read(selection)

    def read(self, selection: Any = Ellipsis, *, supervoxels: bool = False,
             roi: Any = None) -> Any:
        """Voxels of a selection: body ids, or supervoxel ids with ``supervoxels=True``.

        The body mapping is applied chunk by chunk in the decoding threads. ``arr.oindex``,
        ``arr.vindex`` and boolean masks read bodies the same way. With ``roi`` (an ROI
        instance; box selections of 3-d arrays), voxels outside the ROI read as 0."""
        return self._get(selection, "basic", supervoxels=supervoxels, roi=roi)

    def slice(self, plane: str, index: int, scale: int = 0, *, box: Any = None,
              supervoxels: bool = False) -> np.ndarray:
        """:meth:`VersionedArray.slice` of bodies (supervoxels with ``supervoxels=True``)."""
        from diced.datatypes.array.slicing import slice_plane

        return slice_plane(self, plane, index, scale, box=box, supervoxels=supervoxels)

    def oblique(self, center: Sequence[float], u: Sequence[float], v: Sequence[float],
                size: int | tuple[int, int], step: float = 1.0, *, order: int | None = None,
                supervoxels: bool = False) -> np.ndarray:
        """:meth:`VersionedArray.oblique` of bodies (supervoxels with ``supervoxels=True``);
        always nearest (``order=0``)."""
        from diced.datatypes.array.slicing import oblique

        return oblique(self, center, u, v, size, step, order=order, labels=True,
                       supervoxels=supervoxels)

    def tile(self, plane: str, scale: int, ty: int, tx: int, index: int = 0, *,
             size: int = 512, format: str | None = None,
             supervoxels: bool = False) -> np.ndarray | bytes:
        """:meth:`VersionedArray.tile` of bodies; beyond the pyramid, scales subsample
        (every ``2**k``-th voxel) instead of averaging."""
        from diced.datatypes.array.slicing import tile

        return tile(self, plane, scale, ty, tx, index, size=size, format=format, labels=True,
                    supervoxels=supervoxels)

    def _read_post(self, ctx: VersionCtx, *, supervoxels: bool = False) -> Any:
        if supervoxels:
            return None
        keys, values = self._mapping_table(ctx)
        if not len(keys):
            return None
        from diced.array.labelstats import relabel_inplace

        def post(region: np.ndarray) -> None:
            relabel_inplace(region, keys, values)

        return post

    def _mapping_table(self, ctx: VersionCtx) -> tuple[np.ndarray, np.ndarray]:
        """Sorted (supervoxel, body) arrays of every non-identity mapping at ``ctx``."""
        if not self._cfg.get("mapped"):
            return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        keys = self._mapping.live_keys(ctx)
        vals = self._mapping.read_many(keys, ctx)
        sv = np.array([int(k, 16) for k in keys], dtype=np.uint64)
        body = np.array([int.from_bytes(v, "little") for v in vals], dtype=np.uint64)
        return sv, body

    # --- writes ----------------------------------------------------------------------------

    def _batch_items(self, batch: list[ChunkProjection], arr: np.ndarray
                     ) -> list[tuple[tuple[int, ...], Any]]:
        """``(coords, make(base) -> block)`` for the blocks of a batch of array writes."""
        def region(p: ChunkProjection, base: np.ndarray | None) -> np.ndarray:
            if p.full and base is None and all(s.start == 0 and s.stop == c for s, c in
                                               zip(p.chunk_sel, self.chunks, strict=True)):
                return np.ascontiguousarray(arr[p.out_sel], dtype=np.uint64)
            blk = self._empty_chunk() if base is None else base.copy()
            blk[p.chunk_sel] = arr[p.out_sel]
            return blk

        return [(p.coords, lambda base, p=p: region(p, base)) for p in batch]

    def _encode_ahead(self, ctx: VersionCtx, batch: list[ChunkProjection], arr: np.ndarray
                      ) -> tuple[list[tuple[tuple[int, ...], Any]], _BlockPlan]:
        """Start planning the batch (blocks encoded with their index deltas in the pool)
        while the previous batch is stored."""
        items = self._batch_items(batch, arr)
        return items, self._plan_blocks(ctx, items, [K.chunk_ckey(c) for c, _ in items])

    def _batch_limit(self, total: int) -> int:
        from diced.datatypes.array._common import BATCH_BYTES

        # larger batches than plain arrays: each batch rewrites the index entries of the
        # labels it touches (pinky40 512^3: 6334 entry writes in batches of 16 blocks, 4274
        # in batches of 64), and a batch holds only its encoded blocks (~1/30 of raw)
        return max(BATCH_BYTES, min(4 * BATCH_BYTES, total // 8))

    def _drop_ahead(self, ahead: Any) -> None:
        if ahead is not None:
            ahead[1].cancel()

    def _write_batch(self, ctx: VersionCtx, batch: list[ChunkProjection], arr: np.ndarray,
                     ahead: Any = None) -> None:
        items, plan = ahead if ahead is not None else (self._batch_items(batch, arr), None)
        # VersionedArray._write updates the pyramid after each batch: not here a second time
        self._write_blocks(ctx, items, pyramid=False, plan=plan)

    def _write_blocks(self, ctx: VersionCtx, items: Sequence[tuple[tuple[int, ...], Any]],
                      pyramid: bool = True, plan: _BlockPlan | None = None) -> None:
        """Write blocks given as ``(coords, make(base_block_or_None) -> new block)``, keeping
        the label index, max labels and (unless ``pyramid=False``) the pyramid in step,
        atomically per batch. ``plan``: the first attempt's plan, started ahead."""

        ckeys = [K.chunk_ckey(c) for c, _ in items]
        for _attempt in range(50):
            if plan is None:
                plan = self._plan_blocks(ctx, items, ckeys)
            if self._try_write_blocks(ctx, items, ckeys, plan):
                if self.max_scale and pyramid:
                    self._update_pyramid(ctx, [c for c, _ in items])
                self._notify_synced(ctx, [tuple(int(x) for x in c) for c, _ in items])
                return
            plan = None
        raise ConcurrencyError(f"{self.name!r}: blocks kept changing under a concurrent writer")

    def _prepare_block(self, make: Any, current: Any) -> tuple[bytes | None, np.ndarray,
                                                                np.ndarray]:
        """New block from ``make(base)``: its payload (``None``: all zero) and index delta."""
        from diced.array.labelstats import block_label_counts

        base = None if current is None or current[1] is None else self._decode(current[1])
        new = make(base)
        old_l = block_label_counts(base)[0] if base is not None else np.zeros(0, np.uint64)
        counted = getattr(self.codec, "encode_counted", None)
        if counted is not None:  # labelblock: counted from the packed block (cheaper)
            data, new_l, new_n = counted(new)
        else:
            new_l, new_n = block_label_counts(new)
            data = None if (len(new_l) == 1 and new_l[0] == 0) else self.codec.encode(new)
        return (data, *block_delta(old_l, new_l, new_n))

    def _plan_blocks(self, ctx: VersionCtx, items: Sequence[tuple[tuple[int, ...], Any]],
                     ckeys: list[str]) -> _BlockPlan:
        """Read the blocks' current values and start preparing the new ones in the pool."""
        from diced.datatypes.array._common import _pool

        cur = self._space.resolve_many(ckeys, ctx)
        parent = self._space.resolve_many(ckeys, ctx, strict=True)
        if len(items) > 2:
            pool = _pool()
            jobs: list[Any] = [pool.submit(self._prepare_block, make, c)
                               for (_, make), c in zip(items, cur, strict=True)]
        else:
            jobs = [_Done(self._prepare_block(make, c)) for (_, make), c in
                    zip(items, cur, strict=True)]
        return _BlockPlan(cur, parent, jobs)

    def _try_write_blocks(self, ctx: VersionCtx, items: Sequence[tuple[tuple[int, ...], Any]],
                          ckeys: list[str], plan: _BlockPlan) -> bool:
        """One optimistic attempt of :meth:`_write_blocks`: the plan was made from the
        current blocks; store blocks, index entries and max labels in one transaction if no
        block changed in between. Returns whether it was stored."""
        cur, parent = plan.cur, plan.parent
        try:
            results = [job.result() for job in plan.jobs]
        except BaseException:
            plan.cancel()
            raise
        new_bytes = {ck: data for ck, (data, _, _) in zip(ckeys, results, strict=True)}
        expected = {ck: None if c is None else c[1] for ck, c in zip(ckeys, cur, strict=True)}
        deltas = IndexDeltas([(tuple(int(x) for x in coords), labs, cnts) for (coords, _), (
            _, labs, cnts) in zip(items, results, strict=True)])
        top = deltas.top

        def block_fn(ck: str, base: bytes | None) -> bytes | None:
            if base != expected[ck]:
                raise _Retry
            return new_bytes[ck]

        def index_fn(lk: str, base: bytes | None) -> bytes | None:
            return deltas.apply(int(lk, 16), base)

        lkeys = [_lkey(lab) for lab in deltas.labels.tolist()]
        mk, rk = self._meta_prefix + f"max/{ctx.vid:08x}", self._meta_prefix + "maxrepo"

        def extra(cur_meta: dict[str, bytes | None]) -> dict[str, bytes | None]:
            out = {}
            for k in (mk, rk):
                old = int(cur_meta[k] or b"0")
                if top > old:
                    out[k] = str(top).encode()
            return out

        try:
            modify_parts(ctx, [Part(self._space, ckeys, block_fn, parent),
                               Part(self._index, lkeys, index_fn)], [mk, rk], extra)
        except _Retry:
            return False
        return True

    def _clear_outside(self, ctx: VersionCtx, new: tuple[int, ...]) -> None:
        """Shrinking (``resize``): blocks past the new shape are emptied or trimmed through
        :meth:`_write_blocks`, so the label index and the pyramid follow."""
        items = []
        for ckey in self._space.live_keys(ctx):
            coords = K.parse_chunk_ckey(ckey)
            lo = [c * k for c, k in zip(coords, self.chunks, strict=True)]
            if all(a + k <= n for a, k, n in zip(lo, self.chunks, new, strict=True)):
                continue
            keep = tuple(slice(0, max(0, min(k, n - a)))
                         for a, k, n in zip(lo, self.chunks, new, strict=True))

            def make(base: np.ndarray | None, keep=keep) -> np.ndarray:
                out = self._empty_chunk()
                if base is not None:
                    out[keep] = base[keep]
                return out

            items.append((coords, make))
        for i in range(0, len(items), 256):
            self._write_blocks(ctx, items[i:i + 256])

    def _downsample_octants(self, octants):
        from diced.array.downres import downsample_labels_octants

        return downsample_labels_octants(octants, self.chunks)

    def write_blocks(self, coords: np.ndarray, blocks: Sequence[np.ndarray]) -> None:
        """Write whole blocks at grid ``coords`` (n, 3) (z, y, x) at the current version."""
        ctx = self._writable()
        # a block given twice: the last one wins (one write per block keeps the index exact)
        last = {tuple(int(x) for x in c): b
                for c, b in zip(np.asarray(coords).reshape(-1, 3), blocks, strict=True)}
        items = [(c, lambda base, b=b: np.ascontiguousarray(b, np.uint64)) for c, b in last.items()]
        for b in blocks:
            if np.shape(b) != self.chunks:
                raise InvalidArgumentError(f"blocks must have shape {self.chunks}")
        grid = np.array([-(-n // k) for n, k in zip(self._shape_at(ctx), self.chunks, strict=True)])
        cc = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
        if len(cc) and ((cc < 0).any() or (cc >= grid).any()):
            from diced.errors import IndexOutOfBoundsError

            raise IndexOutOfBoundsError(
                f"block coordinates outside the block grid {tuple(grid)} of {self.name!r}")
        for i in range(0, len(items), 256):
            self._write_blocks(ctx, items[i:i + 256])

    def _writable(self) -> VersionCtx:
        ctx = self._ref.ctx()
        if ctx.locked:
            raise LockedNodeError(f"version {ctx.uuid} is locked: {self.name!r} is read-only there")
        if self._level:
            raise InvalidArgumentError("write at scale 0; lower scales are computed")
        return ctx

    # --- label index queries ------------------------------------------------------------------

    def supervoxels(self, body: int) -> np.ndarray:
        """Supervoxels of a body (a body that was never merged is its own single supervoxel)."""
        ctx = self._ref.ctx()
        data = self._members.read_many([_lkey(body)], ctx)[0]
        if data is not None:
            return np.frombuffer(data, dtype="<u8").astype(np.uint64)
        if self._cfg.get("mapped"):
            mapped = self._mapping.read_many([_lkey(body)], ctx)[0]
            if mapped is not None and int.from_bytes(mapped, "little") != body:
                return np.zeros(0, np.uint64)  # body id retired (merged into another)
        return np.array([body], dtype=np.uint64) if self._index_of([body], ctx)[body] else \
            np.zeros(0, np.uint64)

    def body(self, supervoxel: int) -> int:
        """The body a supervoxel belongs to at this version."""
        if not self._cfg.get("mapped"):
            return int(supervoxel)
        got = self._mapping.read_many([_lkey(supervoxel)], self._ref.ctx())[0]
        return int(supervoxel) if got is None else int.from_bytes(got, "little")

    def _index_of(self, labels: Sequence[int], ctx: VersionCtx) -> dict[int, dict]:
        vals = self._index.read_many([_lkey(x) for x in labels], ctx)
        out = {}
        for x, v in zip(labels, vals, strict=True):
            try:
                out[int(x)] = _decode_index(v)
            except CorruptDataError as exc:
                raise self._index.locate(exc, ctx, _lkey(x)) from exc
        return out

    def _svs(self, label: int, supervoxels: bool) -> np.ndarray:
        if supervoxels:
            return np.array([label], dtype=np.uint64)
        return self.supervoxels(label)

    def block_counts(self, label: int, *, supervoxels: bool = False) -> dict[tuple[int, int, int], int]:
        """Blocks (z, y, x grid coords) holding the label, with its voxel count in each."""
        svs = self._svs(label, supervoxels)
        out: dict[tuple[int, int, int], int] = defaultdict(int)
        for entry in self._index_of(svs.tolist(), self._ref.ctx()).values():
            for bc, n in entry.items():
                out[bc] += n
        return dict(sorted(out.items()))

    def blocks(self, label: int, *, supervoxels: bool = False) -> np.ndarray:
        """(n, 3) int64 grid coordinates (z, y, x) of the blocks holding the label."""
        bc = self.block_counts(label, supervoxels=supervoxels)
        return np.array(list(bc), dtype=np.int64).reshape(-1, 3)

    def count(self, label: int, *, supervoxels: bool = False) -> int:
        """Voxel count of a body (or supervoxel); 0 when absent."""
        return int(sum(self.block_counts(label, supervoxels=supervoxels).values()))

    size_of = count

    def bbox(self, label: int, *, supervoxels: bool = False, exact: bool = False
             ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(min, max) voxel corners (z, y, x; max exclusive): block-accurate, or exact."""
        b = self.blocks(label, supervoxels=supervoxels)
        if not len(b):
            raise LabelNotFoundError(f"label {label} is not in {self.name!r}")
        ch = np.array(self.chunks)
        if not exact:
            return tuple((b.min(0) * ch).tolist()), tuple(((b.max(0) + 1) * ch).tolist())
        coords = self.coords(label, supervoxels=supervoxels)
        return tuple(coords.min(0).tolist()), tuple((coords.max(0) + 1).tolist())

    def _label_blocks(self, label: int, supervoxels: bool, scale: int = 0
                      ) -> tuple[np.ndarray, list[np.ndarray | None], np.ndarray]:
        svs = self._svs(label, supervoxels)
        blocks = self.blocks(label, supervoxels=supervoxels)
        if not len(blocks):
            raise LabelNotFoundError(f"label {label} is not in {self.name!r}")
        if scale:
            blocks = np.unique(blocks >> scale, axis=0)
        space = self._levels[scale]
        vals = space.read_many([K.chunk_ckey(c) for c in blocks], self._ref.ctx())
        return blocks, [None if v is None else self._decode(v) for v in vals], svs

    def mask_blocks(self, label: int, *, supervoxels: bool = False, scale: int = 0):
        """Yield ``(block origin (z, y, x) in voxels, bool mask)`` for each block of the label."""
        from diced.array.labelstats import mask_of_labels

        blocks, data, svs = self._label_blocks(label, supervoxels, scale)
        svs = np.sort(svs)
        for bc, blk in zip(blocks, data, strict=True):
            if blk is None:
                continue
            m = mask_of_labels(blk, svs)
            if m.any():
                yield tuple(int(c) * k for c, k in zip(bc, self.chunks, strict=True)), m

    def runs(self, label: int, *, supervoxels: bool = False, scale: int = 0) -> np.ndarray:
        """Runs ``[x, y, z, length]`` (int32) along +X covering the label, merged across blocks."""
        from diced.array.sparsevol import mask_to_runs, merge_runs

        parts = [mask_to_runs(m, org) for org, m in
                 self.mask_blocks(label, supervoxels=supervoxels, scale=scale)]
        if not parts:
            return np.zeros((0, 4), np.int32)
        return merge_runs(parts)

    def sparsevol(self, label: int, *, supervoxels: bool = False, scale: int = 0,
                  format: str = "rles") -> Any:
        """The label's sparse volume: ``"rles"`` (DVID legacy RLE bytes, §5.1), ``"coords"``
        ((n, 3) z, y, x voxel coordinates), ``"runs"`` or ``"coarse"`` (§5.4 block spans)."""
        from diced.array import sparsevol as sv

        if format == "coarse":
            blocks = self.blocks(label, supervoxels=supervoxels)
            if not len(blocks):  # DVID: 404 when the label has no index (§5.4)
                raise LabelNotFoundError(f"label {label} is not in {self.name!r}")
            return sv.block_spans(blocks)
        runs = self.runs(label, supervoxels=supervoxels, scale=scale)
        if format == "runs":
            return runs
        if format == "rles":
            return sv.encode_rles(runs)
        if format == "coords":
            return sv.coords_from_runs(runs)
        raise InvalidArgumentError(f"unknown sparsevol format {format!r}")

    def mask(self, label: int, *, supervoxels: bool = False
             ) -> tuple[np.ndarray, tuple[int, int, int]]:
        """A bool mask of the label over its block-accurate bounding box, and the box origin."""
        lo, hi = self.bbox(label, supervoxels=supervoxels)
        out = np.zeros(tuple(h - l for l, h in zip(lo, hi, strict=True)), dtype=bool)
        for org, m in self.mask_blocks(label, supervoxels=supervoxels):
            sl = tuple(slice(o - l, o - l + k) for o, l, k in zip(org, lo, m.shape, strict=True))
            out[sl] |= m
        return out, lo

    def coords(self, label: int, *, supervoxels: bool = False) -> np.ndarray:
        """Coordinates of every voxel of ``label`` (``sparsevol(format="coords")``).

        Parameters
        ----------
        label : int
            Body id (or supervoxel id with ``supervoxels=True``).
        supervoxels : bool

        Returns
        -------
        numpy.ndarray
            ``(n, 3)`` int array of z, y, x.
        """
        return self.sparsevol(label, supervoxels=supervoxels, format="coords")

    def label_at(self, point: Sequence[int], *, supervoxels: bool = False) -> int:
        """Label at a voxel (z, y, x)."""
        return int(self.read(tuple(int(p) for p in point), supervoxels=supervoxels))

    def labels_at(self, points: Any, *, supervoxels: bool = False) -> np.ndarray:
        """Labels at many voxels ((n, 3) z, y, x), reading each touched block once."""
        pts = np.asarray(points, dtype=np.int64).reshape(-1, 3)
        shape = np.array(self.shape)
        if len(pts) and ((pts < 0).any() or (pts >= shape).any()):
            from diced.errors import IndexOutOfBoundsError

            raise IndexOutOfBoundsError(f"points outside the array shape {tuple(shape)}")
        ch = np.array(self.chunks)
        blocks, inverse = np.unique(pts // ch, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        vals = self._space.read_many([K.chunk_ckey(b) for b in blocks], self._ref.ctx())
        out = np.zeros(len(pts), dtype=np.uint64)
        for i, v in enumerate(vals):
            if v is None:
                continue
            blk = self._decode(v)
            sel = inverse == i
            local = pts[sel] - blocks[i] * ch
            out[sel] = blk[local[:, 0], local[:, 1], local[:, 2]]
        if not supervoxels:
            keys, values = self._mapping_table(self._ref.ctx())
            if len(keys):
                from diced.array.labelstats import relabel

                out = relabel(out, keys, values)
        return out

    def _supervoxels_at(self, points: Any, ctx: VersionCtx) -> np.ndarray:
        """Supervoxel ids at ``(n, 3)`` (z, y, x) voxels at ``ctx`` (0 outside the array),
        reading each touched block once; for synced instances, which may read at a merge
        node that is not published yet."""
        pts = np.asarray(points, dtype=np.int64).reshape(-1, 3)
        out = np.zeros(len(pts), dtype=np.uint64)
        inside = ((pts >= 0) & (pts < np.array(self._shape_at(ctx)))).all(axis=1)
        if not inside.any():
            return out
        idx = np.flatnonzero(inside)
        ch = np.array(self.chunks)
        blocks, inverse = np.unique(pts[idx] // ch, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        vals = self._space.read_many([K.chunk_ckey(b) for b in blocks], ctx)
        for i, v in enumerate(vals):
            if v is None:
                continue
            blk = self._decode(v)
            sel = idx[inverse == i]
            local = pts[sel] - blocks[i] * ch
            out[sel] = blk[local[:, 0], local[:, 1], local[:, 2]]
        return out

    def _notify_synced(self, ctx: VersionCtx, coords: list[tuple[int, ...]]) -> None:
        """Tell the instances synced to this one (annotations) which blocks changed at
        ``ctx``. Instances deleted, not visible there or synced elsewhere are skipped."""
        names = self._cfg.get("synced_by")
        if not names:
            return
        from diced.errors import InstanceNotFoundError

        for name in names:
            try:
                inst = self._ref.instance(name, ctx.uuid)
            except InstanceNotFoundError:
                continue
            hook = getattr(inst, "_labels_changed", None)
            if hook is not None and getattr(inst, "synced", None) == self.name:
                hook(ctx, coords, self)

    def labels_in(self, selection: Any = Ellipsis, *, supervoxels: bool = False) -> np.ndarray:
        """Sorted distinct non-zero labels in a box."""
        vals = np.unique(self.read(selection, supervoxels=supervoxels))
        return vals[vals != 0]

    # --- label bookkeeping ---------------------------------------------------------------------

    def maxlabel(self) -> int:
        """Largest label written at this version or its ancestors, counting the ids edits
        introduce (a cleave's new body, a renumber target), as DVID's ``maxlabel``."""
        anc = self._ref.ctx().ancestors
        best = 0
        keys = list(self.repo.backend.list_keys(self._meta_prefix + "max/"))
        vals = self.repo.backend.get_many([k for k in keys if int(k[-8:], 16) in anc])
        for v in vals:
            if v:
                best = max(best, int(v))
        return best

    def _meta_key(self, name: str) -> str:
        return self._meta_prefix + name

    def nextlabel(self) -> int:
        """The label :meth:`allocate` would hand out next."""
        nk, rk = self._meta_key("next"), self._meta_key("maxrepo")
        n, r = self.repo.backend.get_many([nk, rk])
        return max(int(n or b"0"), int(r or b"0")) + 1

    def allocate(self, count: int = 1) -> tuple[int, int]:
        """Reserve ``count`` new label ids, never handed out twice (also across processes).
        Returns the inclusive range ``(start, end)`` as DVID's POST nextlabel."""
        if not isinstance(count, (int, np.integer)) or count < 1:
            raise InvalidArgumentError(f"count must be a positive integer, got {count!r}")
        nk, rk = self._meta_key("next"), self._meta_key("maxrepo")
        got = {}

        def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
            start = max(int(cur[nk] or b"0"), int(cur[rk] or b"0")) + 1
            got["r"] = (start, start + count - 1)
            return {nk: str(start + count - 1).encode()}

        update_docs(self.repo.backend, [nk, rk], body)
        return got["r"]

    # --- diff ----------------------------------------------------------------------------------

    def label_diff(self, a: Any, b: Any = None, *, supervoxels: bool = False) -> dict[int, int]:
        """Labels that gained (positive) or lost (negative) voxels from version ``a`` to ``b``
        (default: this handle's version).

        Bodies by default, as reads: each side's voxels counted under that side's own
        supervoxel → body mapping, so proofreading shows up: after ``merge(1, [2])`` the diff
        is ``{1: +n, 2: -n}``; a cleave moves the cleaved supervoxels' voxels to the new body;
        ``renumber(new, old)`` moves all of ``old`` to ``new``; a supervoxel split changes no
        body (``supervoxels=True`` shows it: the old supervoxel loses what the two new ones
        gain). Computed from the changed blocks and the changed mapping entries only (a
        remapped supervoxel's voxels in unchanged blocks come from the label index).
        """
        from diced.array.labelstats import block_label_counts
        from diced.repo.diff import diff_space

        ca = self._ref.ctx_at(a)
        cb = self._ref.ctx() if b is None else self._ref.ctx_at(b)
        added, removed, changed = diff_space(self._space, ca, cb)
        keys = added + removed + changed
        va, vb = self._space.read_many(keys, ca), self._space.read_many(keys, cb)
        in_a: dict[int, int] = defaultdict(int)  # supervoxel voxels in the changed blocks
        in_b: dict[int, int] = defaultdict(int)
        for vals, acc in ((va, in_a), (vb, in_b)):
            for data in vals:
                if data is not None:
                    labs, cnt = block_label_counts(self._decode(data))
                    for lab, n in zip(labs.tolist(), cnt.tolist(), strict=True):
                        if lab:
                            acc[lab] += n
        if supervoxels:
            delta = defaultdict(int, in_b)
            for lab, n in in_a.items():
                delta[lab] -= n
            return dict(sorted((k, v) for k, v in delta.items() if v))
        remapped = self._remapped(ca, cb)
        svs = sorted(set(in_a) | set(in_b) | set(remapped))
        body_a, body_b = self._bodies_of(svs, ca), self._bodies_of(svs, cb)
        delta = defaultdict(int)
        for sv, n in in_b.items():
            delta[body_b[sv]] += n
        for sv, n in in_a.items():
            delta[body_a[sv]] -= n
        if remapped:  # voxels of remapped supervoxels in the blocks that did not change
            total = self._index_of(remapped, ca)
            for sv in remapped:
                rest = sum(total[sv].values()) - in_a.get(sv, 0)
                delta[body_b[sv]] += rest
                delta[body_a[sv]] -= rest
        return dict(sorted((k, v) for k, v in delta.items() if v))

    def _remapped(self, ca: VersionCtx, cb: VersionCtx) -> list[int]:
        """Supervoxels whose body differs between two versions (from the mapping's changes)."""
        from diced.repo.diff import diff_space

        added, removed, changed = diff_space(self._mapping, ca, cb)
        return sorted(int(k, 16) for k in added + removed + changed)

    def _bodies_of(self, svs: Sequence[int], ctx: VersionCtx) -> dict[int, int]:
        """Body of each supervoxel at ``ctx``."""
        if not svs or not self._cfg.get("mapped"):
            return {int(s): int(s) for s in svs}
        vals = self._mapping.read_many([_lkey(s) for s in svs], ctx)
        return {int(s): int(s) if v is None else int.from_bytes(v, "little")
                for s, v in zip(svs, vals, strict=True)}


class _Done:
    """A finished job (the interface of a Future that :class:`_BlockPlan` uses)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value

    def cancel(self) -> bool:
        return False


class _BlockPlan(NamedTuple):
    """A batch of block writes in preparation: the blocks' current values (visible and at
    the parent) and one job (a Future or :class:`_Done`) per block."""

    cur: list[Any]
    parent: list[Any]
    jobs: list[Any]

    def cancel(self) -> None:
        """Drop the jobs that have not started."""
        for job in self.jobs:
            job.cancel()
