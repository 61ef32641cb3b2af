"""The ``labels`` datatype: uint64 segmentation in DVID compressed label blocks (DVID's
``labelmap``), opened as :class:`LabelArray`.

Modules: :mod:`~diced.datatypes.labels.labels` (the instance object: reads, block writes
with the label index, queries), :mod:`~diced.datatypes.labels.edits` (merge, cleave,
split-supervoxel, renumber, mutation log), :mod:`~diced.datatypes.labels.merge` (rebuilding
the label index and member lists at a version merge). The per-voxel kernels they call
(label statistics, sparse volumes, the label block codec) are plain numpy-in, numpy-out
functions in :mod:`diced.array`, shared with the exporters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from diced.datatypes.array import ArrayType
from diced.datatypes.labels.labels import SPACES, LabelArray, labels_config, meta_prefix
from diced.datatypes.registry import register_datatype
from diced.repo import keys as K
from diced.repo.context import InstanceContext
from diced.repo.diff import InstanceDiff, diff_space
from diced.repo.resolve import VersionCtx, VersionedSpace

__all__ = ["LabelArray", "LabelsType", "labels_config"]


class LabelsType(ArrayType):
    """``repo.create_labels(...)`` / ``repo.create_instance(name, "labelmap", ...)``.

    Options: ``shape``, ``chunks`` (multiples of 8, default 64³), ``max_scale``, ``codec``,
    ``origin``. Besides its blocks (and pyramid levels) an instance owns three key spaces:
    ``index`` (supervoxel → blocks and counts; derived, rebuilt at merges), ``mapping``
    (supervoxel → body; merged key by key with the blocks) and ``members`` (body →
    supervoxels; derived), plus unversioned metadata under :func:`meta_prefix`.
    """

    name = "labels"
    dvid_names = ("labelmap",)
    http_routes = "diced.server.routes_labels"

    def configure(self, vid: int, *, shape: Any = None, **options: Any) -> dict[str, Any]:
        return labels_config(shape, vid, **options)

    def allocate(self, config: dict[str, Any], new_space: Callable[[], int]) -> None:
        super().allocate(config, new_space)
        config["spaces"] = {n: new_space() for n in SPACES}

    def dvid_typename(self, record: dict[str, Any]) -> str:
        return "labelmap"

    def open(self, context: InstanceContext) -> LabelArray:
        return LabelArray(context)

    def drop(self, backend: Any, record: dict[str, Any]) -> None:
        super().drop(backend, record)
        backend.delete_many(list(backend.list_keys(meta_prefix(record))))

    def merge_spaces(self, record: dict[str, Any]) -> list[tuple[str, int]]:
        """The blocks and the supervoxel → body mapping merge key by key. The label index
        and member lists are derived from them and rebuilt by :meth:`after_merge`, so a
        label written on both sides in different blocks, or a body that gained supervoxels
        on both sides, merges to the union."""
        return [("", record["id"]), (":mapping", record["config"]["spaces"]["mapping"])]

    def describe_key(self, ckey: str, suffix: str = "") -> Any:
        if suffix == ":mapping":
            return int(ckey, 16)  # a supervoxel id
        return K.parse_chunk_ckey(ckey)

    def diff(self, backend: Any, record: dict[str, Any], a: VersionCtx, b: VersionCtx
             ) -> InstanceDiff:
        """Blocks added, removed and changed, and ``remapped``: the supervoxels whose body
        differs (merges, cleaves, renumbers and supervoxel splits change them)."""
        out = super().diff(backend, record, a, b)
        space = VersionedSpace(backend, record["config"]["spaces"]["mapping"])
        added, removed, changed = diff_space(space, a, b)
        out.remapped = sorted(int(k, 16) for k in added + removed + changed)
        return out

    def after_merge(self, instance: Any, ctx: VersionCtx, touched: Sequence[str],
                    parents: Sequence[VersionCtx]) -> None:
        instance._after_merge(ctx, touched, parents)


register_datatype(LabelsType)
