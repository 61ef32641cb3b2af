"""Merging versions of a label array: which key spaces merge key by key, and how the label
index and member lists (derived data) are rebuilt at a merge node (a mixin of
:class:`diced.datatypes.labels.labels.LabelArray`; the datatype,
:class:`diced.datatypes.labels.LabelsType`, says which key spaces merge key by key)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diced.datatypes.labels._common import encode_index as _encode_index
from diced.datatypes.labels._common import lkey as _lkey
from diced.repo import keys as K
from diced.repo.resolve import VersionCtx

__all__ = ["LabelMergeMixin"]


class LabelMergeMixin:
    """Merge support of a :class:`~diced.datatypes.labels.labels.LabelArray` (see the module docstring)."""

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
