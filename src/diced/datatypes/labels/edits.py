"""Proofreading edits of a label array: merge, cleave, split-supervoxel, renumber, and the
mutation log with DVID's JSON fields (a mixin of
:class:`diced.datatypes.labels.labels.LabelArray`).

Merges and cleaves change only the supervoxel → body mapping and the member lists; every edit
is planned from the current state and stored in one transaction, planned again if another edit
of the instance committed first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from diced.datatypes.labels._common import MAX_LABEL as _MAX_LABEL
from diced.datatypes.labels._common import Retry as _Retry
from diced.datatypes.labels._common import lkey as _lkey
from diced.errors import (
    ConcurrencyError,
    InvalidArgumentError,
    LabelNotFoundError,
)
from diced.repo.resolve import Part, VersionCtx, modify_parts

__all__ = ["LabelEditsMixin"]


class LabelEditsMixin:
    """Edits of a :class:`~diced.datatypes.labels.labels.LabelArray` (see the module docstring)."""

    def _log_mutation(self, ctx: VersionCtx, action: str, fields: dict[str, Any]) -> int:
        mutid = self._ref.next_counter(f"mutation/{self.repo.uuid}")
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

            self._ref.update_record(fn)

    def _existing_body(self, body: int, ctx: VersionCtx) -> np.ndarray:
        svs = self.supervoxels(body)
        if not len(svs):
            raise LabelNotFoundError(f"label {body} does not exist in {self.name!r}")
        return svs

    def _remap(self, ctx: VersionCtx, mapping: dict[int, int], members: dict[int, np.ndarray | None],
               seq: bytes | None = None, new_label: int = 0) -> None:
        """Store mapping and member-list changes atomically. With ``seq`` (the edit counter
        read before the edit was planned), raise :class:`_Retry` if another edit of this
        instance committed in between, so no edit overwrites another's member lists.

        ``new_label``: a label id the edit introduces without writing blocks (renumber, cleave); in
        the same transaction it raises this version's max label and the repo-wide one, as a
        block write does (DVID's ``updateMaxLabel``), so :meth:`allocate`, :meth:`nextlabel`,
        cleaves and splits never hand it out again, in any process."""
        def map_fn(ck: str, base: bytes | None) -> bytes | None:
            sv, body = int(ck, 16), mapping[int(ck, 16)]
            return None if sv == body else body.to_bytes(8, "little")

        def mem_fn(ck: str, base: bytes | None) -> bytes | None:
            svs = members[int(ck, 16)]
            if svs is None or (len(svs) == 1 and int(svs[0]) == int(ck, 16)):
                return None
            return np.sort(np.asarray(svs, dtype="<u8")).tobytes()

        sk = self._meta_key("editseq")
        mk, rk = self._meta_key(f"max/{ctx.vid:08x}"), self._meta_key("maxrepo")
        meta = [sk, mk, rk] if new_label else [sk]

        def bump(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
            if cur[sk] != seq:
                raise _Retry
            out = {sk: str(int(cur[sk] or b"0") + 1).encode()}
            for k in meta[1:]:
                if new_label > int(cur[k] or b"0"):
                    out[k] = str(new_label).encode()
            return out

        self._set_mapped()
        modify_parts(ctx, [Part(self._mapping, [_lkey(s) for s in mapping], map_fn),
                           Part(self._members, [_lkey(b) for b in members], mem_fn)], meta, bump)

    def _edit(self, ctx: VersionCtx, plan: Any, new_label: int | Callable[[], int] = 0) -> Any:
        """Plan ``(mapping, members, result) = plan()`` from the current state and store it,
        planning again if a concurrent edit committed first (optimistic, as block writes).
        ``new_label``: the id the edit introduces (see :meth:`_remap`), or a function giving it
        once ``plan`` has run (a cleave allocates its id while planning)."""
        sk = self._meta_key("editseq")
        for _attempt in range(50):
            seq = self.repo.backend.get(sk)
            mapping, members, result = plan()
            label = new_label() if callable(new_label) else new_label
            try:
                self._remap(ctx, mapping, members, seq, label)
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

        new = self._edit(ctx, plan, new_label=lambda: new_id[0])  # maxlabel is now ``new``
        size = self.count(new)
        self._log_mutation(ctx, "cleave", {"OrigLabel": body, "CleavedLabel": new,
                                           "CleavedSupervoxels": cut.tolist(),
                                           "CleavedSize": size,
                                           "RemainSize": self.count(body)})
        return new

    def renumber(self, new: int, old: int) -> int:
        """Give body ``old`` the id ``new`` (which must be unused). Returns the mutation id.

        ``new`` counts as written: :meth:`maxlabel` includes it and no later
        :meth:`allocate`, :meth:`nextlabel`, cleave or supervoxel split hands it out."""
        ctx = self._writable()
        new, old = int(new), int(old)
        if not 0 < new <= _MAX_LABEL:
            raise InvalidArgumentError(f"renumber target {new} is not a label id (1..2**64-1)")

        def plan():
            if new == 0 or len(self.supervoxels(new)):
                raise InvalidArgumentError(f"renumber target {new} is zero or already in use")
            svs = self._existing_body(old, ctx)
            return {int(s): new for s in svs}, {old: None, new: svs}, None

        self._edit(ctx, plan, new_label=new)
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
