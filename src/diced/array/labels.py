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

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from diced.array.array import VersionedArray, array_config
from diced.array.indexing import ChunkProjection, normalize_selection
from diced.errors import (
    ConcurrencyError,
    InvalidArgumentError,
    LabelNotFoundError,
    LockedNodeError,
)
from diced.repo import keys as K
from diced.repo.meta import update_docs
from diced.repo.resolve import Part, VersionCtx, VersionedSpace, modify_parts

log = logging.getLogger(__name__)

__all__ = ["LabelArray", "labels_config"]

_SPACES = ("index", "mapping", "members")
_MAX_LABEL = (1 << 64) - 1


def labels_config(shape: Iterable[int] | None, vid: int, *, chunks: Iterable[int] | None = None,
                  max_scale: int = 0, codec: Any = None, origin: Iterable[int] | None = None
                  ) -> dict[str, Any]:
    cfg = array_config("uint64", shape, chunks or (64, 64, 64), 0, codec, origin, vid,
                       default_codec={"name": "labelblock", "outer": "zstd", "level": 1},
                       max_scale=max_scale)
    if len(cfg["chunks"]) != 3 or any(c % 8 or c < 8 for c in cfg["chunks"]):
        raise InvalidArgumentError("label arrays are 3-D with chunk sides that are multiples of 8")
    cfg["allocate"] = list(_SPACES)
    return cfg


def _lkey(label: int) -> str:
    return f"{int(label):016x}"


def _encode_index(entry: dict[tuple[int, int, int], int]) -> bytes | None:
    if not entry:
        return None
    arr = np.array([(*c, n) for c, n in sorted(entry.items())], dtype="<u8")
    return arr.tobytes()


def _decode_index(data: bytes | None) -> dict[tuple[int, int, int], int]:
    if not data:
        return {}
    arr = np.frombuffer(data, dtype="<u8").reshape(-1, 4)
    return {(int(z), int(y), int(x)): int(n) for z, y, x, n in arr}


class _Retry(Exception):
    pass


class LabelArray(VersionedArray):
    """A uint64 label volume (see module docstring). Reads return bodies (the supervoxel →
    body mapping applied) unless ``supervoxels=True`` is used via :meth:`read`."""

    typename = "labels"

    def __init__(self, repo, name, record, ref) -> None:
        super().__init__(repo, name, record, ref)
        spaces = record["config"]["spaces"]
        self._index = VersionedSpace(repo.backend, spaces["index"])
        self._mapping = VersionedSpace(repo.backend, spaces["mapping"])
        self._members = VersionedSpace(repo.backend, spaces["members"])
        self._meta_prefix = f"meta/label/{record['id']:08x}/"

    # --- reads -----------------------------------------------------------------------------

    def __getitem__(self, selection: Any) -> Any:
        return self.read(selection)

    def read(self, selection: Any = Ellipsis, *, supervoxels: bool = False) -> Any:
        """Voxels of a selection: body ids, or supervoxel ids with ``supervoxels=True``.

        The body mapping is applied chunk by chunk in the decoding threads."""
        ctx = self._ref.ctx()
        post = None
        if not supervoxels:
            keys, values = self._mapping_table(ctx)
            if len(keys):
                from diced.array.labelstats import relabel_inplace

                def post(region: np.ndarray) -> None:
                    relabel_inplace(region, keys, values)
        shape = self._shape_at(ctx)
        sel = normalize_selection(selection, shape)
        out = np.empty(sel.shape, dtype=self.dtype)
        self._read_into(ctx, shape, sel, out, post)
        result = out.reshape(sel.result_shape)
        return result[()] if result.ndim == 0 else result

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

    def _write_batch(self, ctx: VersionCtx, batch: list[ChunkProjection], arr: np.ndarray) -> None:
        def region(p: ChunkProjection, base: np.ndarray | None) -> np.ndarray:
            if p.full and base is None and all(s.start == 0 and s.stop == c for s, c in
                                               zip(p.chunk_sel, self.chunks, strict=True)):
                return np.ascontiguousarray(arr[p.out_sel], dtype=np.uint64)
            blk = self._empty_chunk() if base is None else base.copy()
            blk[p.chunk_sel] = arr[p.out_sel]
            return blk

        # VersionedArray._write updates the pyramid after each batch: not here a second time
        self._write_blocks(ctx, [(p.coords, lambda base, p=p: region(p, base)) for p in batch],
                           pyramid=False)

    def _write_blocks(self, ctx: VersionCtx, items: Sequence[tuple[tuple[int, ...], Any]],
                      pyramid: bool = True) -> None:
        """Write blocks given as ``(coords, make(base_block_or_None) -> new block)``, keeping
        the label index, max labels and (unless ``pyramid=False``) the pyramid in step,
        atomically per batch."""

        ckeys = [K.chunk_ckey(c) for c, _ in items]
        for _attempt in range(50):
            if self._try_write_blocks(ctx, items, ckeys):
                if self.max_scale and pyramid:
                    self._update_pyramid(ctx, [c for c, _ in items])
                return
        raise ConcurrencyError(f"{self.name!r}: blocks kept changing under a concurrent writer")

    def _try_write_blocks(self, ctx: VersionCtx, items: Sequence[tuple[tuple[int, ...], Any]],
                          ckeys: list[str]) -> bool:
        """One optimistic attempt of :meth:`_write_blocks`: plan from the current blocks, then
        store blocks, index entries and max labels in one transaction if no block changed
        in between. Returns whether it was stored."""
        from diced.array.labelstats import block_label_counts

        cur = self._space.resolve_many(ckeys, ctx)
        parent = self._space.resolve_many(ckeys, ctx, strict=True)
        new_bytes: dict[str, bytes | None] = {}
        expected: dict[str, bytes | None] = {}
        deltas: dict[int, dict[tuple[int, int, int], int]] = defaultdict(dict)
        top = 0

        def prepare(i: int) -> tuple[str, bytes | None, list, list]:
            (coords, make), ck, c = items[i], ckeys[i], cur[i]
            base = None if c is None or c[1] is None else self._decode(c[1])
            new = make(base)
            old_l = block_label_counts(base)[0] if base is not None else np.zeros(0, np.uint64)
            new_l, new_n = block_label_counts(new)
            data = None if (len(new_l) == 1 and new_l[0] == 0) else self.codec.encode(new)
            return ck, data, (old_l, new_l, new_n), coords

        from diced.array.array import _pool

        results = list(_pool().map(prepare, range(len(items)))) if len(items) > 2 \
            else [prepare(i) for i in range(len(items))]
        for (ck, data, (old_l, new_l, new_n), coords), c in zip(results, cur, strict=True):
            new_bytes[ck] = data
            expected[ck] = None if c is None else c[1]
            bc = tuple(int(x) for x in coords)
            for lab, n in zip(new_l.tolist(), new_n.tolist(), strict=True):
                if lab:
                    deltas[lab][bc] = n
                    top = max(top, lab)
            gone = np.setdiff1d(old_l, new_l)
            for lab in gone.tolist():
                if lab:
                    deltas[lab][bc] = 0

        def block_fn(ck: str, base: bytes | None) -> bytes | None:
            if base != expected[ck]:
                raise _Retry
            return new_bytes[ck]

        def index_fn(lk: str, base: bytes | None) -> bytes | None:
            entry = _decode_index(base)
            for bc, n in deltas[int(lk, 16)].items():
                if n:
                    entry[bc] = n
                else:
                    entry.pop(bc, None)
            return _encode_index(entry)

        lkeys = [_lkey(lab) for lab in sorted(deltas)]
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

    # --- merges of versions ----------------------------------------------------------------

    @staticmethod
    def merge_spaces(rec: dict[str, Any]) -> list[tuple[str, int]]:
        """Key spaces :meth:`Repo.merge` merges key by key: the blocks and the supervoxel →
        body mapping. The label index and member lists are derived from them and rebuilt by
        :meth:`_after_merge`, so a label written on both sides in different blocks, or a body
        that gained supervoxels on both sides, merges to the union."""
        return [("", rec["id"]), (":mapping", rec["config"]["spaces"]["mapping"])]

    @staticmethod
    def describe_key_mapping(ckey: str) -> int:
        return int(ckey, 16)

    def _after_merge(self, ctx: VersionCtx, ckeys: Sequence[str],
                     parents: Sequence[VersionCtx] = ()) -> None:
        super()._after_merge(ctx, ckeys, parents)
        self._rebuild_index(ctx, list(ckeys), parents)
        self._rebuild_members(ctx, parents)

    def _rebuild_index(self, ctx: VersionCtx, ckeys: list[str], parents: Sequence[VersionCtx]
                       ) -> None:
        """Make the index entries of every label in the merged blocks match the merged voxels."""
        from diced.array.labelstats import block_label_counts

        if not ckeys:
            return
        counts: dict[str, dict[int, int]] = {}
        labels: set[int] = set()
        for view in (ctx, *parents):
            for ck, data in zip(ckeys, self._space.read_many(ckeys, view), strict=True):
                if data is None:
                    found: dict[int, int] = {}
                else:
                    labs, cnt = block_label_counts(self._decode(data))
                    found = {int(a): int(b) for a, b in zip(labs, cnt, strict=True) if a}
                labels.update(found)
                if view is ctx:
                    counts[ck] = found
        coords = {ck: tuple(int(c) for c in K.parse_chunk_ckey(ck)) for ck in ckeys}
        todo = sorted(labels)
        for i in range(0, len(todo), 4096):
            part = todo[i:i + 4096]
            entries = self._index_of(part, ctx)
            new: dict[str, bytes | None] = {}
            for lab in part:
                entry = entries[lab]
                for ck, bc in coords.items():
                    n = counts[ck].get(lab, 0)
                    if n:
                        entry[bc] = n
                    else:
                        entry.pop(bc, None)
                new[_lkey(lab)] = _encode_index(entry)
            self._index.write(ctx, new)

    def _rebuild_members(self, ctx: VersionCtx, parents: Sequence[VersionCtx]) -> None:
        """Member lists at a merge node: for each body touched on any side, the supervoxels
        that the merged mapping assigns to it."""
        if not parents:
            return
        common = frozenset.intersection(*(p.ancestors for p in parents))
        changed = (ctx.ancestors - {ctx.vid}) - common
        svs: set[int] = set()
        bodies: set[int] = set()
        for vid in changed:
            svs.update(int(c, 16) for c in self._mapping.written_at(vid))
            bodies.update(int(c, 16) for c in self._members.written_at(vid))
        if not svs and not bodies:
            return

        def body_map(view: VersionCtx, ids: list[int]) -> dict[int, int]:
            vals = self._mapping.read_many([_lkey(x) for x in ids], view)
            return {x: x if v is None else int.from_bytes(v, "little")
                    for x, v in zip(ids, vals, strict=True)}

        sv_list = sorted(svs)
        for view in parents:
            bodies.update(body_map(view, sv_list).values())
        merged_map = body_map(ctx, sv_list)
        bodies.update(merged_map.values())
        body_list = sorted(bodies)
        candidates: dict[int, set[int]] = {b: {b} | {s for s in sv_list} for b in body_list}
        for view in parents:
            vals = self._members.read_many([_lkey(b) for b in body_list], view)
            for b, v in zip(body_list, vals, strict=True):
                if v is not None:
                    candidates[b].update(int(x) for x in np.frombuffer(v, dtype="<u8"))
        every = sorted(set().union(*candidates.values()))
        final_map = body_map(ctx, every)
        exists = {s for s, v in zip(every, self._index.read_many([_lkey(x) for x in every], ctx),
                                    strict=True) if v is not None}
        new: dict[str, bytes | None] = {}
        for b in body_list:
            members = sorted(s for s in candidates[b] if final_map[s] == b and s in exists)
            if not members or members == [b]:
                new[_lkey(b)] = None
            else:
                new[_lkey(b)] = np.asarray(members, dtype="<u8").tobytes()
        self._members.write(ctx, new)

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
        return {int(x): _decode_index(v) for x, v in zip(labels, vals, strict=True)}

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

    def labels_in(self, selection: Any = Ellipsis, *, supervoxels: bool = False) -> np.ndarray:
        """Sorted distinct non-zero labels in a box."""
        vals = np.unique(self.read(selection, supervoxels=supervoxels))
        return vals[vals != 0]

    # --- label bookkeeping ---------------------------------------------------------------------

    def maxlabel(self) -> int:
        """Largest label written at this version or its ancestors."""
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

    # --- edits ---------------------------------------------------------------------------------

    def _log_mutation(self, ctx: VersionCtx, action: str, fields: dict[str, Any]) -> int:
        mutid = self.repo.store._next_counter(f"mutation/{self.repo.uuid}")
        rec = {"Action": action, "UUID": ctx.uuid, "MutationID": mutid,
               "Timestamp": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), **fields}
        key = self._meta_prefix + f"mut/{ctx.vid:08x}/{mutid:016x}"
        self.repo.backend.set(key, json.dumps(rec).encode())
        return mutid

    def mutations(self, *, ancestors: bool = False) -> list[dict[str, Any]]:
        """The mutation log (JSON records with DVID's fields) of this version, or with
        ``ancestors=True`` of its whole ancestry, oldest first."""
        ctx = self._ref.ctx()
        keys = [k for k in self.repo.backend.list_keys(self._meta_prefix + "mut/")
                if (int(k.split("/")[-2], 16) in ctx.ancestors if ancestors
                    else int(k.split("/")[-2], 16) == ctx.vid)]
        recs = [json.loads(v) for v in self.repo.backend.get_many(keys) if v]
        return sorted(recs, key=lambda r: r["MutationID"])

    def _set_mapped(self) -> None:
        if not self._cfg.get("mapped"):
            def fn(rec: dict[str, Any]) -> None:
                rec["config"]["mapped"] = True

            self.repo._update_instance(self.name, fn)

    def _existing_body(self, body: int, ctx: VersionCtx) -> np.ndarray:
        svs = self.supervoxels(body)
        if not len(svs):
            raise LabelNotFoundError(f"label {body} does not exist in {self.name!r}")
        return svs

    def _remap(self, ctx: VersionCtx, mapping: dict[int, int], members: dict[int, np.ndarray | None],
               seq: bytes | None = None) -> None:
        """Store mapping and member-list changes atomically. With ``seq`` (the edit counter
        read before the edit was planned), raise :class:`_Retry` if another edit of this
        instance committed in between, so no edit overwrites another's member lists."""
        def map_fn(ck: str, base: bytes | None) -> bytes | None:
            sv, body = int(ck, 16), mapping[int(ck, 16)]
            return None if sv == body else body.to_bytes(8, "little")

        def mem_fn(ck: str, base: bytes | None) -> bytes | None:
            svs = members[int(ck, 16)]
            if svs is None or (len(svs) == 1 and int(svs[0]) == int(ck, 16)):
                return None
            return np.sort(np.asarray(svs, dtype="<u8")).tobytes()

        sk = self._meta_key("editseq")

        def bump(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
            if cur[sk] != seq:
                raise _Retry
            return {sk: str(int(cur[sk] or b"0") + 1).encode()}

        self._set_mapped()
        modify_parts(ctx, [Part(self._mapping, [_lkey(s) for s in mapping], map_fn),
                           Part(self._members, [_lkey(b) for b in members], mem_fn)], [sk], bump)

    def _edit(self, ctx: VersionCtx, plan: Any) -> Any:
        """Plan ``(mapping, members, result) = plan()`` from the current state and store it,
        planning again if a concurrent edit committed first (optimistic, as block writes)."""
        sk = self._meta_key("editseq")
        for _attempt in range(50):
            seq = self.repo.backend.get(sk)
            mapping, members, result = plan()
            try:
                self._remap(ctx, mapping, members, seq)
            except _Retry:
                continue
            return result
        raise ConcurrencyError(f"{self.name!r}: edits kept colliding with concurrent edits")

    def merge(self, target: int, others: Iterable[int]) -> int:
        """Merge bodies ``others`` into ``target`` (mapping only; no voxel is rewritten).
        Returns the mutation id."""
        ctx = self._writable()
        others = list(dict.fromkeys(int(o) for o in others))  # a label named twice counts once
        if not others or int(target) == 0 or 0 in others or int(target) in others:
            raise InvalidArgumentError("merge needs a non-zero target and other non-zero labels")
        target = int(target)

        def plan():
            tsv = self._existing_body(target, ctx)
            mapping, members = {}, {}
            allsv = [tsv]
            for o in others:
                svs = self._existing_body(o, ctx)
                allsv.append(svs)
                for s in svs.tolist():
                    mapping[s] = target
                members[o] = None
            members[target] = np.unique(np.concatenate(allsv))
            return mapping, members, None

        self._edit(ctx, plan)
        return self._log_mutation(ctx, "merge", {"Target": target, "Labels": others})

    def cleave(self, body: int, supervoxels: Iterable[int]) -> int:
        """Move ``supervoxels`` of ``body`` to a newly allocated body id, which is returned."""
        ctx = self._writable()
        body = int(body)
        cut = np.unique(np.asarray(list(supervoxels), dtype=np.uint64))
        new_id: list[int] = []

        def plan():
            svs = self._existing_body(body, ctx)
            if not len(cut) or not np.isin(cut, svs).all():
                raise InvalidArgumentError(f"cleave needs supervoxels that belong to body {body}")
            if len(cut) == len(svs):
                raise InvalidArgumentError("cleave must leave at least one supervoxel in the body")
            if not new_id:
                new_id.append(self.allocate(1)[0])
            new = new_id[0]
            keep = np.setdiff1d(svs, cut)
            mapping = {int(s): new for s in cut}
            mapping.update({int(s): body for s in keep})
            return mapping, {body: keep, new: cut}, new

        new = self._edit(ctx, plan)
        size = self.count(new)
        self._log_mutation(ctx, "cleave", {"OrigLabel": body, "CleavedLabel": new,
                                           "CleavedSupervoxels": cut.tolist(),
                                           "CleavedSize": size,
                                           "RemainSize": self.count(body)})
        return new

    def renumber(self, new: int, old: int) -> int:
        """Give body ``old`` the id ``new`` (which must be unused). Returns the mutation id."""
        ctx = self._writable()
        new, old = int(new), int(old)

        def plan():
            if new == 0 or len(self.supervoxels(new)):
                raise InvalidArgumentError(f"renumber target {new} is zero or already in use")
            svs = self._existing_body(old, ctx)
            return {int(s): new for s in svs}, {old: None, new: svs}, None

        self._edit(ctx, plan)
        return self._log_mutation(ctx, "renumber", {"NewLabel": new, "OrigLabel": old})

    def split_supervoxel(self, supervoxel: int, region: Any, *, split: int | None = None,
                         remain: int | None = None) -> tuple[int, int]:
        """Split a supervoxel: its voxels inside ``region`` get a new id, the rest another.

        ``region`` is DVID legacy RLE bytes (§5.1), an (n, 4) array of runs ``[x, y, z, len]``
        or ``(mask, origin)`` with a bool mask and its (z, y, x) origin. Both new supervoxels
        keep the old one's body. Returns ``(split_id, remain_id)``.
        """
        from diced.array import sparsevol as spv
        from diced.array.labelstats import mask_of_labels

        ctx = self._writable()
        sv = int(supervoxel)
        body = self.body(sv)
        bc = self.block_counts(sv, supervoxels=True)
        if not bc:
            raise LabelNotFoundError(f"supervoxel {sv} does not exist in {self.name!r}")
        if isinstance(region, (bytes, bytearray, memoryview)):
            runs = spv.decode_rles(region)
        elif isinstance(region, tuple) and len(region) == 2:
            runs = spv.mask_to_runs(np.asarray(region[0], bool), region[1])
        else:
            runs = np.asarray(region, dtype=np.int32).reshape(-1, 4)
        for new_id in (split, remain):
            if new_id is not None and (int(new_id) <= 0 or int(new_id) > _MAX_LABEL or (
                    int(new_id) != sv and (self._index_of([int(new_id)], ctx)[int(new_id)]
                                           or len(self.supervoxels(int(new_id)))))):
                raise InvalidArgumentError(
                    f"split/remain id {new_id} is zero, out of range or an existing supervoxel")
        if split is not None and remain is not None and int(split) == int(remain):
            raise InvalidArgumentError("split and remain ids must differ")
        if split is None or remain is None:
            a, b = self.allocate(2)
            split = a if split is None else split
            remain = b if remain is None else remain
        ch = self.chunks
        key = np.array([sv], np.uint64)
        items = []
        for coords in bc:
            org = tuple(c * k for c, k in zip(coords, ch, strict=True))
            inside = spv.runs_to_mask(runs, org, ch)

            def make(base, inside=inside):
                blk = base.copy()
                m = mask_of_labels(blk, key)
                blk[m & inside] = split
                blk[m & ~inside] = remain
                return blk

            items.append((coords, make))
        for i in range(0, len(items), 256):
            self._write_blocks(ctx, items[i:i + 256])

        def plan():
            # the body's member list; a body without one is the lone supervoxel ``sv`` (read
            # from the members space: the index of ``sv`` is already gone)
            raw = self._members.read_many([_lkey(body)], ctx)[0]
            members = (np.frombuffer(raw, dtype="<u8").astype(np.uint64) if raw is not None
                       else np.array([sv], np.uint64))
            new_members = np.concatenate([members[members != sv], [split, remain]])
            mapping = {int(split): body, int(remain): body}
            return mapping, {body: new_members.astype(np.uint64)}, None

        self._edit(ctx, plan)
        self._log_mutation(ctx, "split-supervoxel", {
            "Supervoxel": sv, "Body": body, "SplitSupervoxel": int(split),
            "RemainSupervoxel": int(remain), "SplitSize": self.count(int(split), supervoxels=True),
            "RemainSize": self.count(int(remain), supervoxels=True)})
        return int(split), int(remain)

    # --- diff ----------------------------------------------------------------------------------

    def label_diff(self, a: Any, b: Any = None, *, supervoxels: bool = True) -> dict[int, int]:
        """Labels that gained (positive) or lost (negative) voxels from version ``a`` to ``b``
        (default: this handle's version), computed from the changed blocks only."""
        from diced.array.labelstats import block_label_counts
        from diced.repo.diff import diff_space

        ca = self.repo._ctx(self.repo._node(a).id)
        cb = self._ref.ctx() if b is None else self.repo._ctx(self.repo._node(b).id)
        added, removed, changed = diff_space(self._space, ca, cb)
        keys = added + removed + changed
        va, vb = self._space.read_many(keys, ca), self._space.read_many(keys, cb)
        delta: dict[int, int] = defaultdict(int)
        for x, y in zip(va, vb, strict=True):
            for data, sign in ((x, -1), (y, 1)):
                if data is not None:
                    labs, cnt = block_label_counts(self._decode(data))
                    for lab, n in zip(labs.tolist(), cnt.tolist(), strict=True):
                        if lab:
                            delta[lab] += sign * n
        out = {k: v for k, v in delta.items() if v}
        if not supervoxels:  # bodies as mapped at version b
            bodies: dict[int, int] = defaultdict(int)
            got = (self._mapping.read_many([_lkey(k) for k in out], cb) if self._cfg.get("mapped")
                   else [None] * len(out))
            for (k, v), m in zip(out.items(), got, strict=True):
                bodies[k if m is None else int.from_bytes(m, "little")] += v
            out = {k: v for k, v in bodies.items() if v}
        return dict(sorted(out.items()))
