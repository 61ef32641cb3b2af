"""The ``labelsz`` datatype (DVID's ``labelsz``): per-body counts of an annotation
instance's elements by kind, with ``count``, ``counts``, ``top`` and ``threshold``, opened as
:class:`LabelSz`. Counts are derived at each version from the synced annotation and its
label array, so they follow every element and body change."""

from __future__ import annotations

from typing import Any

from diced.datatypes.base import Datatype
from diced.datatypes.labelsz.labelsz import INDEX_TYPES, LabelSz
from diced.datatypes.registry import register_datatype
from diced.errors import InvalidArgumentError
from diced.repo.context import InstanceContext

__all__ = ["INDEX_TYPES", "LabelSz", "LabelSzType"]


class LabelSzType(Datatype):
    """``repo.create_instance(name, "labelsz", roi=None)``, then ``lsz.sync(annotation)``.

    Options: ``roi``, the name of an ROI instance restricting the counts to elements inside
    it (read at the version asked; DVID's ``ROI`` setting). The instance stores no counts
    (nothing to merge or diff): answers come from the synced annotation at each version.
    """

    name = "labelsz"
    dvid_names = ("labelsz",)
    http_routes = "diced.server.routes_labelsz"

    def configure(self, vid: int, *, roi: Any = None) -> dict[str, Any]:
        if roi is not None and (not isinstance(roi, str) or not roi):
            raise InvalidArgumentError(f"roi is the name of an ROI instance, got {roi!r}")
        return {} if roi is None else {"roi": roi}

    def open(self, context: InstanceContext) -> LabelSz:
        return LabelSz(context)


register_datatype(LabelSzType)
