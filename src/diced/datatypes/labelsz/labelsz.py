"""LabelSz: per-body counts of annotation elements by kind (DVID's ``labelsz``).

A labelsz instance is synced to an annotation instance (which is synced to a label array)
and optionally restricted to an ROI. It stores no counts: every answer is derived at the
version asked from the annotation's label index and the label array, so it is current after
any element edit, body merge, cleave, renumber, supervoxel split or block write, and after
version merges, with nothing to keep in step.

* ``count(body, kind)`` and ``counts(bodies, kind)`` read the bodies' elements through the
  annotation's label index (:meth:`Annotation.label`), cost proportional to those elements;
* ``top(n, kind)`` and ``threshold(t, kind)`` rank every body: they read all elements once
  and the body under each (a point read of the label array), and aggregate with numpy. A
  handle keeps that table for a locked version (locked versions never change).

Kinds (DVID's index types): ``PostSyn``, ``PreSyn``, ``Gap``, ``Note``, ``Unknown`` and
``AllSyn`` (PostSyn + PreSyn + Gap, DVID's synaptic kinds).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from diced.errors import InstanceNotFoundError, InvalidArgumentError, LockedNodeError

if TYPE_CHECKING:
    from diced.repo.context import InstanceContext
    from diced.repo.repo import Version
    from diced.repo.resolve import VersionCtx

__all__ = ["INDEX_TYPES", "LabelSz"]

_KINDS = ("Unknown", "PostSyn", "PreSyn", "Gap", "Note")
_SYNAPTIC = ("PostSyn", "PreSyn", "Gap")
#: the index types a count can be asked for
INDEX_TYPES = (*_KINDS[1:], "Unknown", "AllSyn")
#: DVID's page size for ``threshold``
MAX_RETURNED = 10_000
#: up to this many bodies, ``counts`` reads each body's elements; beyond, the whole table
_PER_BODY = 32


def _kind(kind: Any) -> str:
    if kind not in INDEX_TYPES:
        raise InvalidArgumentError(f"index type must be one of {INDEX_TYPES}, got {kind!r}")
    return str(kind)


def _body(b: Any) -> int:
    if isinstance(b, str) and b.isdigit():
        return int(b)
    try:
        if isinstance(b, (bool, np.bool_)):
            raise TypeError
        v = operator.index(b)
    except TypeError:
        raise InvalidArgumentError(f"a body id is a non-negative integer, got {b!r}") from None
    if not 0 <= v < 1 << 64:
        raise InvalidArgumentError(f"a body id is a uint64, got {v}")
    return v


def _matches(kind: str, element_kind: str) -> bool:
    return element_kind in _SYNAPTIC if kind == "AllSyn" else element_kind == kind


class LabelSz:
    """Body rankings by element counts at one version (the repo head, or pinned).

    ``lsz = repo.create_instance("syn_labelsz", "labelsz")``, ``lsz.sync("synapses")``, then
    ``lsz.count(body, "PreSyn")``, ``lsz.top(10, "AllSyn")``, ``lsz.threshold(5, "PostSyn")``.
    Answers are DVID's JSON: ``{"Label": body, "<kind>": n}``.
    """

    typename = "labelsz"

    def __init__(self, context: InstanceContext) -> None:
        self.repo, self.name = context.repo, context.name
        self._ref = context
        self._table: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def synced(self) -> str | None:
        """Name of the annotation instance counted, or ``None``."""
        return self._ref.config.get("sync")

    @property
    def roi(self) -> str | None:
        """Name of the ROI restricting the counts (``None``: everywhere)."""
        return self._ref.config.get("roi")

    @property
    def version(self) -> Version:
        """The version this handle reads now."""
        return self._ref.version()

    def at(self, version: Any) -> LabelSz:
        """The same instance pinned to another version."""
        return self._ref.open_at(version)

    def __repr__(self) -> str:
        sync = f" synced to {self.synced!r}" if self.synced else ""
        return f"<LabelSz {self.name!r}{sync} version={self._ref.ctx().uuid[:8]}>"

    # --- sync ----------------------------------------------------------------------------------

    def sync(self, annotation: str | Any) -> None:
        """Count the elements of an annotation instance (DVID's POST ``sync``); it must be
        synced to a label array for bodies to be known. Syncs cannot change afterwards."""
        name = annotation if isinstance(annotation, str) else getattr(annotation, "name", None)
        ctx = self._ref.ctx()
        if ctx.locked:
            raise LockedNodeError(f"version {ctx.uuid} is locked: {self.name!r} is read-only there")
        try:
            target = self._ref.instance(str(name))
        except InstanceNotFoundError:
            raise InstanceNotFoundError(f"no annotation instance {name!r} to sync {self.name!r} to"
                                        ) from None
        if getattr(target, "typename", None) != "annotation":
            raise InvalidArgumentError(f"{name!r} is not an annotation instance; labelsz syncs "
                                       "to annotations")
        if self.synced not in (None, name):
            raise InvalidArgumentError(f"{self.name!r} is already synced to {self.synced!r}")

        def mark(rec: dict[str, Any]) -> None:
            rec["config"]["sync"] = name

        self._ref.update_record(mark)

    def _sources(self, ctx: VersionCtx) -> tuple[Any, Any, Any]:
        """The annotation, its label array and the ROI (or None), pinned to ``ctx``."""
        if self.synced is None:
            raise InvalidArgumentError(f"labelsz {self.name!r} is not synced to an annotation")
        ann = self._ref.instance(self.synced, ctx.uuid)
        if ann.synced is None:
            raise InvalidArgumentError(
                f"annotation {self.synced!r} is not synced to a label array, so labelsz "
                f"{self.name!r} cannot count by body")
        labels = self._ref.instance(ann.synced, ctx.uuid)
        roi = None if self.roi is None else self._ref.instance(self.roi, ctx.uuid)
        return ann, labels, roi

    # --- counts --------------------------------------------------------------------------------

    def _count_body(self, ann: Any, roi: Any, body: int, kind: str) -> int:
        els = [e for e in ann.label(body) if _matches(kind, e["Kind"])]
        if roi is not None and els:
            inside = roi.contains(np.array([e["Pos"] for e in els], np.int64))
            return int(inside.sum())
        return len(els)

    def count(self, body: int, kind: str) -> dict[str, int]:
        """``{"Label": body, kind: n}``: the body's elements of ``kind`` (DVID's GET
        ``count/<label>/<index type>``)."""
        kind = _kind(kind)
        b = _body(body)
        ann, _labels, roi = self._sources(self._ref.ctx())
        return {"Label": b, kind: self._count_body(ann, roi, b, kind)}

    def counts(self, bodies: Iterable[int], kind: str) -> list[dict[str, int]]:
        """:meth:`count` for many bodies, in the order given (DVID's ``counts``)."""
        kind = _kind(kind)
        ids = [_body(b) for b in bodies]
        ctx = self._ref.ctx()
        if len(ids) <= _PER_BODY:
            ann, _labels, roi = self._sources(ctx)
            return [{"Label": b, kind: self._count_body(ann, roi, b, kind)} for b in ids]
        labels, sizes = self._ranked(ctx, kind)
        found = dict(zip(labels.tolist(), sizes.tolist(), strict=True))
        return [{"Label": b, kind: int(found.get(b, 0))} for b in ids]

    def _ranked(self, ctx: VersionCtx, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """``(bodies, counts)`` of every body with an element of ``kind``, by descending
        count then ascending body (DVID's order)."""
        key = (ctx.vid, kind)
        if ctx.locked and key in self._table:
            return self._table[key]
        ann, labels, roi = self._sources(ctx)
        els = ann.all(relationships=False)
        els = [e for e in els if _matches(kind, e["Kind"])]
        if not els:
            out = (np.zeros(0, np.uint64), np.zeros(0, np.int64))
        else:
            pos = np.array([e["Pos"] for e in els], np.int64)
            if roi is not None:
                pos = pos[roi.contains(pos)]
            org = np.asarray(getattr(labels, "origin", (0, 0, 0)), np.int64)
            zyx = pos[:, ::-1] - org
            shape = np.asarray(labels.shape)
            ok = np.all((zyx >= 0) & (zyx < shape), axis=1)
            zyx = zyx[ok]
            if not len(zyx):
                out = (np.zeros(0, np.uint64), np.zeros(0, np.int64))
            else:
                bodies = np.asarray(labels.vindex[zyx[:, 0], zyx[:, 1], zyx[:, 2]], np.uint64)
                bodies = bodies[bodies != 0]
                ids, counts = np.unique(bodies, return_counts=True)
                order = np.lexsort((ids, -counts))
                out = (ids[order], counts[order].astype(np.int64))
        if ctx.locked:
            self._table = {k: v for k, v in self._table.items() if k[0] == ctx.vid}
            self._table[key] = out
        return out

    def top(self, n: int, kind: str) -> list[dict[str, int]]:
        """The ``n`` bodies with the most elements of ``kind``, most first (ties by
        ascending body id), as DVID's GET ``top/<N>/<index type>``."""
        kind = _kind(kind)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise InvalidArgumentError(f"N must be a non-negative integer, got {n!r}")
        if n == 0:
            return []
        labels, sizes = self._ranked(self._ref.ctx(), kind)
        return [{"Label": int(b), kind: int(s)}
                for b, s in zip(labels[:n].tolist(), sizes[:n].tolist(), strict=True)]

    def threshold(self, t: int, kind: str, *, offset: int = 0, n: int = 0
                  ) -> list[dict[str, int]]:
        """Bodies with at least ``t`` elements of ``kind``, most first, ranks ``offset`` to
        ``offset + n`` (``n=0``: DVID's page of 10,000), as DVID's GET
        ``threshold/<T>/<index type>?offset=&n=``."""
        kind = _kind(kind)
        for what, v in (("T", t), ("offset", offset), ("n", n)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise InvalidArgumentError(f"{what} must be a non-negative integer, got {v!r}")
        labels, sizes = self._ranked(self._ref.ctx(), kind)
        keep = int(np.count_nonzero(sizes >= t))
        take = MAX_RETURNED if n == 0 else n
        sel = slice(offset, min(keep, offset + take))
        return [{"Label": int(b), kind: int(s)}
                for b, s in zip(labels[sel].tolist(), sizes[sel].tolist(), strict=True)]
