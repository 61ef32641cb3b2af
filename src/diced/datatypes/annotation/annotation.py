"""Annotation: point annotations (synapses, notes) as DVID's ``annotation`` datatype keeps
them, versioned, with tag and label indexes.

Key spaces of one instance (each versioned; see :mod:`diced.datatypes.annotation.elements`
for the key forms):

* elements: one key per element, ``<block>_<position>`` → the element JSON (with ``Rels``).
  Keys sort by block, so the elements of a block are one key range; merges compare and
  conflict per element position.
* tags: ``<tag>_<position>`` for every tag of every element (derived).
* svof: ``<position>`` → the supervoxel under the element (derived, when synced).
* svidx: ``<supervoxel>_<position>`` (derived, when synced): the label index.

**Label sync** (:meth:`Annotation.sync`): the index is keyed by *supervoxel*, and
``label(body)`` reads the body's supervoxels from the label array at the same version, so
merges, cleaves and renumbers (which change only the supervoxel → body mapping) need no
index update at all. What changes supervoxels under elements (block writes,
split-supervoxel) is reported by the label array right after each write, at that version,
and the index entries of the elements in the changed blocks are recomputed. At a version
merge the derived spaces are recomputed for every element position touched on any side.

Consistency: element edits and their tag/label entries are stored in one transaction
(re-planned if an element changed meanwhile). A label write and its re-indexing are two
transactions, so an element posted *while* another process rewrites the label blocks under
it, or a crash between the two, can leave its label entry stale; :meth:`Annotation.reload`
rebuilds the indexes of an open version.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from diced.datatypes.annotation import elements as E
from diced.errors import (
    ConcurrencyError,
    InstanceNotFoundError,
    InvalidArgumentError,
    LockedNodeError,
    NotFoundError,
)
from diced.repo import keys as K
from diced.repo.resolve import Part, VersionCtx, modify_parts

if TYPE_CHECKING:
    from diced.repo.context import InstanceContext
    from diced.repo.repo import Version

log = logging.getLogger(__name__)

__all__ = ["Annotation"]

Pos = tuple[int, int, int]
#: above this many blocks a box query lists the whole instance once instead of per block
_BOX_SCAN = 256


class _Retry(Exception):
    """An element changed between planning an edit and storing it."""


def _lkey(sv: int) -> str:
    return f"{int(sv):016x}"


class Annotation:
    """Point annotations of one instance at one version (the repo head, or pinned).

    Elements are dicts in DVID's JSON form (§6.2): ``{"Pos": [x, y, z], "Kind": "PreSyn",
    "Tags": [...], "Prop": {...}, "Rels": [{"Rel": "PreSynTo", "To": [x, y, z]}]}``.
    Positions are ``(x, y, z)`` voxel coordinates, as in DVID (label arrays index
    ``(z, y, x)``). Obtain one with ``repo.create_instance(name, "annotation")`` or
    ``repo[name]``.
    """

    typename = "annotation"

    def __init__(self, context: InstanceContext) -> None:
        self.repo, self.name = context.repo, context.name
        self._rec = context.record
        self._ref = context  # the version to read and write: ``self._ref.ctx()``
        cfg = self._rec["config"]
        #: block size (x, y, z) of the per-block element storage
        self.block_size: tuple[int, int, int] = tuple(cfg["block_size"])  # type: ignore[assignment]
        spaces = cfg["spaces"]
        self._elements = context.space()
        self._tags = context.space(spaces["tags"], f"{self.name} (tags)")
        self._svof = context.space(spaces["svof"], f"{self.name} (supervoxels)")
        self._svidx = context.space(spaces["svidx"], f"{self.name} (label index)")

    # --- description ---------------------------------------------------------------------------

    @property
    def synced(self) -> str | None:
        """Name of the label array this instance is synced to, or ``None``."""
        return self._ref.config.get("sync")

    @property
    def version(self) -> Version:
        """The version this handle reads now."""
        return self._ref.version()

    def at(self, version: Any) -> Annotation:
        """The same instance pinned to another version."""
        return self._ref.open_at(version)

    def __repr__(self) -> str:
        sync = f" synced to {self.synced!r}" if self.synced else ""
        return f"<Annotation {self.name!r}{sync} version={self._ref.ctx().uuid[:8]}>"

    # --- reads ---------------------------------------------------------------------------------

    def _load(self, ckeys: Sequence[str], ctx: VersionCtx, relationships: bool
              ) -> list[dict[str, Any]]:
        vals = self._elements.read_many(list(ckeys), ctx)
        return [E.public_element(E.load(v), relationships) for v in vals if v is not None]

    def get(self, pos: Sequence[int], *, relationships: bool = True) -> dict[str, Any] | None:
        """The element at ``pos`` (x, y, z), or ``None``."""
        key = E.element_ckey(E.point(pos), self.block_size)
        got = self._load([key], self._ref.ctx(), relationships)
        return got[0] if got else None

    def __contains__(self, pos: object) -> bool:
        try:
            return self.get(pos, relationships=False) is not None  # type: ignore[arg-type]
        except InvalidArgumentError:
            return False

    def all(self, *, relationships: bool = True) -> list[dict[str, Any]]:
        """Every element, sorted by block then position (DVID's ``all-elements``)."""
        ctx = self._ref.ctx()
        return self._load(self._elements.live_keys(ctx), ctx, relationships)

    def __len__(self) -> int:
        return len(self._elements.live_keys(self._ref.ctx()))

    def _block_keys(self, blocks: Iterable[Pos], ctx: VersionCtx) -> list[str]:
        blocks = sorted(set(blocks))
        if len(blocks) > _BOX_SCAN:
            want = {E.block_ckey(b) for b in blocks}
            return [k for k in self._elements.live_keys(ctx) if k.split("_", 1)[0] in want]
        out: list[str] = []
        for b in blocks:
            out += self._elements.live_keys(ctx, *E.prefix_range(E.block_ckey(b)))
        return out

    def _box_keys(self, lo: Pos, hi: Pos, ctx: VersionCtx) -> list[str]:
        """Keys of the elements with ``lo <= pos < hi`` (x, y, z)."""
        if any(h <= low for low, h in zip(lo, hi, strict=True)):
            return []
        blo = E.block_of(lo, self.block_size)
        bhi = E.block_of([h - 1 for h in hi], self.block_size)
        nblocks = int(np.prod([b - a + 1 for a, b in zip(blo, bhi, strict=True)], dtype=object))
        if nblocks > _BOX_SCAN:
            keys = self._elements.live_keys(ctx)
        else:
            keys = self._block_keys(
                [(x, y, z) for x in range(blo[0], bhi[0] + 1) for y in range(blo[1], bhi[1] + 1)
                 for z in range(blo[2], bhi[2] + 1)], ctx)
        out = []
        for k in keys:
            p = E.parse_pos_key(k.split("_", 1)[1])
            if all(a <= c < b for a, c, b in zip(lo, p, hi, strict=True)):
                out.append(k)
        return out

    def box(self, lo: Sequence[int], hi: Sequence[int], *, relationships: bool = True
            ) -> list[dict[str, Any]]:
        """Elements with ``lo <= Pos < hi`` (x, y, z; ``hi`` exclusive). DVID's
        ``elements/<size>/<offset>`` is ``box(offset, offset + size)``."""
        lo_, hi_ = E.point(lo, "lo"), E.point(hi, "hi")
        ctx = self._ref.ctx()
        return self._load(self._box_keys(lo_, hi_, ctx), ctx, relationships)

    def blocks(self, blocks: Iterable[Sequence[int]]) -> dict[str, list[dict[str, Any]]]:
        """Elements (with ``Rels``) of whole blocks ``(bx, by, bz)``, as DVID's ``blocks``
        answer: ``{"bx,by,bz": [elements]}`` (blocks without elements are left out)."""
        ctx = self._ref.ctx()
        wanted = [E.point(b, "block") for b in blocks]
        out: dict[str, list[dict[str, Any]]] = {}
        for el in self._load(self._block_keys(wanted, ctx), ctx, True):
            b = E.block_of(el["Pos"], self.block_size)
            out.setdefault(f"{b[0]},{b[1]},{b[2]}", []).append(el)
        return out

    def tag(self, tag: str, *, relationships: bool = False) -> list[dict[str, Any]]:
        """Elements having ``tag`` (without ``Rels`` unless asked, as DVID)."""
        if not isinstance(tag, str) or not tag:
            raise InvalidArgumentError(f"a tag is a non-empty string, got {tag!r}")
        ctx = self._ref.ctx()
        keys = self._tags.live_keys(ctx, *E.prefix_range(K.kv_ckey(tag)))
        return self._load(self._position_keys(k.split("_", 1)[1] for k in keys), ctx,
                          relationships)

    def in_roi(self, roi: Any, *, relationships: bool = False) -> list[dict[str, Any]]:
        """Elements inside an ROI (an ROI instance or its name), at this version (DVID's
        ``roi/<roi>``); see :func:`diced.datatypes.roi.queries.annotation_in_roi`."""
        from diced.datatypes.roi.queries import annotation_in_roi

        return annotation_in_roi(self, roi, relationships=relationships)

    def _position_keys(self, pos_keys: Iterable[str]) -> list[str]:
        return sorted(E.element_ckey(E.parse_pos_key(pk), self.block_size) for pk in pos_keys)

    def label(self, body: int, *, relationships: bool = False) -> list[dict[str, Any]]:
        """Elements whose voxel belongs to ``body`` in the synced label array, at this
        version (the body's supervoxels are read from the label array; each supervoxel's
        elements from the label index)."""
        ctx = self._ref.ctx()
        labels = self._synced_labels(ctx, pinned=True)
        svs = labels.supervoxels(int(body))
        pks: list[str] = []
        for sv in svs.tolist():
            pks += [k.split("_", 1)[1]
                    for k in self._svidx.live_keys(ctx, *E.prefix_range(_lkey(sv)))]
        return self._load(self._position_keys(pks), ctx, relationships)

    def _synced_labels(self, ctx: VersionCtx, pinned: bool = False) -> Any:
        name = self.synced
        if name is None:
            raise InvalidArgumentError(f"annotation {self.name!r} is not synced to a label array")
        since = int(self._ref.config.get("sync_vid", 0))
        if since and since not in ctx.ancestors:
            raise InvalidArgumentError(
                f"annotation {self.name!r} was synced to {name!r} after version "
                f"{ctx.uuid[:12]}; label queries work from the sync version on")
        return self._ref.instance(name, ctx.uuid if pinned else None)

    # --- writes --------------------------------------------------------------------------------

    def _writable(self) -> VersionCtx:
        ctx = self._ref.ctx()
        if ctx.locked:
            raise LockedNodeError(f"version {ctx.uuid} is locked: {self.name!r} is read-only there")
        return ctx

    def post(self, elements: Iterable[dict[str, Any]]) -> None:
        """Add or replace elements by position (DVID's POST ``elements``). ``Rels`` are
        stored as given: send both sides of a relationship. All elements are validated
        before anything is stored; an element given twice: the last one wins."""
        if isinstance(elements, dict):
            elements = [elements]
        new = {}
        for el in elements:
            norm = E.normalize_element(el)
            new[tuple(norm["Pos"])] = norm
        if new:
            ctx = self._writable()
            self._edit(ctx, lambda snap: new)

    def delete(self, pos: Sequence[int]) -> None:
        """Delete the element at ``pos``; partners drop their relationships to it."""
        p = E.point(pos)
        ctx = self._writable()

        def plan(snap: _Snapshot) -> dict[Pos, dict[str, Any] | None]:
            el = snap.get(p)
            if el is None:
                raise NotFoundError(f"no element at {list(p)} in {self.name!r}")
            out: dict[Pos, dict[str, Any] | None] = {p: None}
            for q in {tuple(r["To"]) for r in el["Rels"]} - {p}:
                other = snap.get(q)
                if other is not None:
                    other = dict(other, Rels=[r for r in other["Rels"] if tuple(r["To"]) != p])
                    out[q] = other
            return out

        self._edit(ctx, plan)

    def move(self, source: Sequence[int], dest: Sequence[int]) -> None:
        """Move the element at ``source`` to ``dest`` (which must be free); partners'
        relationships follow it."""
        a, b = E.point(source, "source"), E.point(dest, "dest")
        ctx = self._writable()
        if a == b:
            if self.get(a) is None:
                raise NotFoundError(f"no element at {list(a)} in {self.name!r}")
            return

        def plan(snap: _Snapshot) -> dict[Pos, dict[str, Any] | None]:
            el = snap.get(a)
            if el is None:
                raise NotFoundError(f"no element at {list(a)} in {self.name!r}")
            if snap.get(b) is not None:
                raise InvalidArgumentError(f"there is already an element at {list(b)}")

            def moved(rels: list[dict[str, Any]]) -> list[dict[str, Any]]:
                return [dict(r, To=list(b)) if tuple(r["To"]) == a else r for r in rels]

            out: dict[Pos, dict[str, Any] | None] = {a: None,
                                                     b: dict(el, Pos=list(b), Rels=moved(el["Rels"]))}
            for q in {tuple(r["To"]) for r in el["Rels"]} - {a, b}:
                other = snap.get(q)
                if other is not None:
                    out[q] = dict(other, Rels=moved(other["Rels"]))
            return out

        self._edit(ctx, plan)

    def _edit(self, ctx: VersionCtx, plan: Callable[[_Snapshot], dict[Pos, Any]]) -> None:
        """Plan element changes from a snapshot and store them with every derived entry in
        one transaction, planning again if an element changed meanwhile."""
        for _attempt in range(50):
            snap = _Snapshot(self, ctx)
            changes = plan(snap)
            try:
                self._store(ctx, changes, snap)
            except _Retry:
                continue
            return
        raise ConcurrencyError(f"{self.name!r}: elements kept changing under concurrent writers")

    def _supervoxels(self, ctx: VersionCtx, positions: Sequence[Pos]) -> list[int]:
        """Supervoxel under each position at ``ctx`` (0 when not synced there)."""
        if not positions or self.synced is None:
            return [0] * len(positions)
        since = int(self._ref.config.get("sync_vid", 0))
        if since and since not in ctx.ancestors:
            return [0] * len(positions)
        try:
            labels = self._ref.instance(self.synced)
        except InstanceNotFoundError:
            return [0] * len(positions)
        zyx = np.array([(z, y, x) for x, y, z in positions], dtype=np.int64)
        return [int(v) for v in labels._supervoxels_at(zyx, ctx)]

    def _store(self, ctx: VersionCtx, changes: dict[Pos, dict[str, Any] | None],
               snap: _Snapshot) -> None:
        positions = sorted(changes)
        snap.prefetch(positions)
        bs = self.block_size
        ekeys = {p: E.element_ckey(p, bs) for p in positions}
        old_sv = self._read_svof(positions, ctx)
        alive = [p for p in positions if changes[p] is not None]
        new_sv = dict(zip(alive, self._supervoxels(ctx, alive), strict=True))
        elements: dict[str, bytes | None] = {}
        tags: dict[str, bytes | None] = {}
        svof: dict[str, bytes | None] = {}
        svidx: dict[str, bytes | None] = {}
        for p in positions:
            old, new = snap.get(p), changes[p]
            pk = E.pos_key(p)
            elements[ekeys[p]] = None if new is None else E.dump(new)
            for t in old["Tags"] if old else []:
                tags[K.kv_ckey(t) + "_" + pk] = None
            for t in new["Tags"] if new else []:
                tags[K.kv_ckey(t) + "_" + pk] = b"1"
            sv = new_sv.get(p, 0)
            if old_sv[p]:
                svidx[_lkey(old_sv[p]) + "_" + pk] = None
            if sv:
                svidx[_lkey(sv) + "_" + pk] = b"1"
            svof[pk] = sv.to_bytes(8, "little") if sv else None
        expected = {ekeys[p]: snap.raw[p] for p in positions}

        def element_fn(ck: str, base: bytes | None) -> bytes | None:
            if base != expected[ck]:
                raise _Retry
            return elements[ck]

        modify_parts(ctx, [Part(self._elements, list(elements), element_fn),
                           Part(self._tags, list(tags), lambda ck, _b: tags[ck]),
                           Part(self._svof, list(svof), lambda ck, _b: svof[ck]),
                           Part(self._svidx, list(svidx), lambda ck, _b: svidx[ck])])

    def _read_svof(self, positions: Sequence[Pos], ctx: VersionCtx) -> dict[Pos, int]:
        vals = self._svof.read_many([E.pos_key(p) for p in positions], ctx)
        return {p: 0 if v is None else int.from_bytes(v, "little")
                for p, v in zip(positions, vals, strict=True)}

    # --- label sync ----------------------------------------------------------------------------

    def sync(self, labels: str | Any) -> None:
        """Sync to a label array of the same repo (DVID's POST ``sync``): from this (open)
        version on, :meth:`label` answers by body and follows every change of the labels.
        The label index is built now from the elements at this version."""
        name = labels if isinstance(labels, str) else getattr(labels, "name", None)
        ctx = self._writable()
        try:
            target = self._ref.instance(str(name))
        except InstanceNotFoundError:
            raise InstanceNotFoundError(f"no label array {name!r} to sync {self.name!r} to") from None
        if getattr(target, "typename", None) != "labels":
            raise InvalidArgumentError(f"{name!r} is not a label array; annotations sync to labels")
        if self.synced not in (None, name):
            raise InvalidArgumentError(f"{self.name!r} is already synced to {self.synced!r}")

        def mark_labels(rec: dict[str, Any]) -> None:
            by = rec["config"].setdefault("synced_by", [])
            if self.name not in by:
                by.append(self.name)

        def mark_self(rec: dict[str, Any]) -> None:
            rec["config"]["sync"] = name
            rec["config"].setdefault("sync_vid", ctx.vid)

        target._ref.update_record(mark_labels)
        self._ref.update_record(mark_self)
        self.reload()

    def _labels_changed(self, ctx: VersionCtx, blocks: Sequence[Sequence[int]],
                        labels: Any) -> None:
        """Called by the synced label array after it wrote ``blocks`` (z, y, x grid
        coordinates) at ``ctx``: recompute the label index of the elements inside them."""
        if ctx.locked or not blocks:
            return
        kz, ky, kx = labels.chunks
        keys: list[str] = []
        for bz, by, bx in blocks:
            lo = (bx * kx, by * ky, bz * kz)
            keys += self._box_keys(lo, (lo[0] + kx, lo[1] + ky, lo[2] + kz), ctx)
        if keys:
            self._reindex_labels(ctx, sorted({E.parse_pos_key(k.split("_", 1)[1]) for k in keys}))

    def _reindex_labels(self, ctx: VersionCtx, positions: list[Pos]) -> None:
        """Make the svof/svidx entries of ``positions`` (elements at ``ctx``) match the
        labels at ``ctx``."""
        old = self._read_svof(positions, ctx)
        new = dict(zip(positions, self._supervoxels(ctx, positions), strict=True))
        svof: dict[str, bytes | None] = {}
        svidx: dict[str, bytes | None] = {}
        for p in positions:
            pk = E.pos_key(p)
            sv = new[p]
            if sv == old[p]:
                continue
            if old[p]:
                svidx[_lkey(old[p]) + "_" + pk] = None
            if sv:
                svidx[_lkey(sv) + "_" + pk] = b"1"
            svof[pk] = sv.to_bytes(8, "little") if sv else None
        if svof or svidx:
            modify_parts(ctx, [Part(self._svof, list(svof), lambda ck, _b: svof[ck]),
                               Part(self._svidx, list(svidx), lambda ck, _b: svidx[ck])])

    def reload(self) -> None:
        """Rebuild the tag and label indexes of this (open) version from the elements
        (DVID's POST ``reload``); for recovery after an interrupted write."""
        ctx = self._writable()
        elements = self.all()
        positions = [tuple(e["Pos"]) for e in elements]
        svs = dict(zip(positions, self._supervoxels(ctx, positions), strict=True))
        want_tags = {K.kv_ckey(t) + "_" + E.pos_key(tuple(e["Pos"]))
                     for e in elements for t in e["Tags"]}
        want_svof = {E.pos_key(p): svs[p].to_bytes(8, "little") for p in positions if svs[p]}
        want_svidx = {_lkey(svs[p]) + "_" + E.pos_key(p) for p in positions if svs[p]}
        tags = {k: None for k in self._tags.live_keys(ctx) if k not in want_tags}
        tags.update(dict.fromkeys(want_tags, b"1"))
        svof: dict[str, bytes | None] = dict.fromkeys(self._svof.live_keys(ctx))
        svof.update(want_svof)
        svidx: dict[str, bytes | None] = dict.fromkeys(self._svidx.live_keys(ctx))
        svidx.update(dict.fromkeys(want_svidx, b"1"))
        for space, items in ((self._tags, tags), (self._svof, svof), (self._svidx, svidx)):
            for i in range(0, len(items), 4096):
                part = dict(list(items.items())[i:i + 4096])
                space.write(ctx, part)

    # --- version merges ----------------------------------------------------------------------

    def _after_merge(self, ctx: VersionCtx, parents: Sequence[VersionCtx]) -> None:
        """At a merge node (elements already merged): recompute the tag and label entries of
        every element position touched on any side since the merge base."""
        if not parents:
            return
        common = frozenset.intersection(*(p.ancestors for p in parents))
        changed = (ctx.ancestors - {ctx.vid}) - common
        pks: set[str] = set()
        for vid in changed:
            pks.update(k.split("_", 1)[1] for k in self._elements.written_at(vid))
            pks.update(k.split("_", 1)[1] for k in self._tags.written_at(vid))
            pks.update(self._svof.written_at(vid))
            pks.update(k.split("_", 1)[1] for k in self._svidx.written_at(vid))
        if not pks:
            return
        positions = sorted(E.parse_pos_key(pk) for pk in pks)
        keys = [E.element_ckey(p, self.block_size) for p in positions]
        merged = dict(zip(positions, self._elements.read_many(keys, ctx), strict=True))
        tag_cands: dict[Pos, set[str]] = defaultdict(set)
        sv_cands: dict[Pos, set[int]] = defaultdict(set)
        for view in parents:
            for p, raw in zip(positions, self._elements.read_many(keys, view), strict=True):
                if raw is not None:
                    tag_cands[p].update(E.load(raw)["Tags"])
            for p, sv in self._read_svof(positions, view).items():
                sv_cands[p].add(sv)
        tags: dict[str, bytes | None] = {}
        for p in positions:
            pk = E.pos_key(p)
            now = set(E.load(merged[p])["Tags"]) if merged[p] is not None else set()
            for t in tag_cands[p] - now:
                tags[K.kv_ckey(t) + "_" + pk] = None
            for t in now:
                tags[K.kv_ckey(t) + "_" + pk] = b"1"
        if tags:
            self._tags.write(ctx, tags)
        present = {p for p in positions if merged[p] is not None}
        self._reindex_merge(ctx, positions, present, sv_cands)

    def _reindex_merge(self, ctx: VersionCtx, positions: list[Pos], present: set[Pos],
                       candidates: dict[Pos, set[int]]) -> None:
        new = dict(zip(positions, self._supervoxels(ctx, positions), strict=True))
        svof: dict[str, bytes | None] = {}
        svidx: dict[str, bytes | None] = {}
        for p in positions:
            pk = E.pos_key(p)
            sv = new[p] if p in present else 0
            for s in candidates.get(p, set()) - {0, sv}:
                svidx[_lkey(s) + "_" + pk] = None
            if sv:
                svidx[_lkey(sv) + "_" + pk] = b"1"
            svof[pk] = sv.to_bytes(8, "little") if sv else None
        for space, items in ((self._svof, svof), (self._svidx, svidx)):
            if items:
                space.write(ctx, items)


class _Snapshot:
    """Elements read while planning an edit (their raw bytes are the expected values)."""

    def __init__(self, ann: Annotation, ctx: VersionCtx) -> None:
        self.ann, self.ctx = ann, ctx
        self.raw: dict[Pos, bytes | None] = {}

    def prefetch(self, positions: Iterable[Pos]) -> None:
        todo = [p for p in positions if p not in self.raw]
        if todo:
            keys = [E.element_ckey(p, self.ann.block_size) for p in todo]
            self.raw.update(zip(todo, self.ann._elements.read_many(keys, self.ctx), strict=True))

    def get(self, pos: Pos) -> dict[str, Any] | None:
        self.prefetch([pos])
        raw = self.raw[pos]
        return None if raw is None else E.load(raw)
