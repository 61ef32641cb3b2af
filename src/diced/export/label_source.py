"""A LabelArray as the block source and sink of the Arrow export-shards format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from diced.errors import InvalidArgumentError
from diced.repo import keys as K

__all__ = ["LabelBlockSource", "export_label_shards", "import_label_shards"]


class LabelBlockSource:
    """Adapts a :class:`diced.datatypes.labels.labels.LabelArray` (at its version) to
    :class:`diced.export.arrow_shards.BlockSource` and ``BlockSink``.

    Stored blocks are already DVID block serializations inside an outer byte codec, so
    exporting only strips that codec: no voxel is decoded or re-encoded.
    """

    def __init__(self, labels: Any, *, supervoxels: bool = False) -> None:
        from diced.datatypes.labels.labels import LabelArray

        if not isinstance(labels, LabelArray):
            raise InvalidArgumentError(f"export-shards needs a label array, got {type(labels).__name__}")
        self.labels = labels
        self.supervoxels = supervoxels
        self._ctx = labels._ref.ctx()  # pin the version for the whole export
        self._map: tuple[np.ndarray, np.ndarray] | None = None

    def _level(self, scale: int):
        if not 0 <= scale <= self.labels.max_scale:
            raise InvalidArgumentError(
                f"{self.labels.name!r} has scales 0..{self.labels.max_scale}, not {scale}")
        return self.labels._levels[scale]

    def scale_shape(self, scale: int) -> tuple[int, int, int]:
        shape = self.labels._shape_at(self._ctx)
        f = 1 << scale
        return tuple(-(-n // f) for n in shape)  # type: ignore[return-value]

    def block_coords(self, scale: int) -> np.ndarray:
        zyx = [K.parse_chunk_ckey(c) for c in self._level(scale).live_keys(self._ctx)]
        arr = np.array(zyx, dtype=np.int64).reshape(-1, 3)
        return np.ascontiguousarray(arr[:, ::-1])

    def read_dvid_blocks(self, coords: np.ndarray, scale: int) -> list[bytes]:
        from diced.array.codecs.labelblock import encode_block

        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
        ckeys = [K.chunk_ckey((int(z), int(y), int(x))) for x, y, z in coords]
        vals = self._level(scale).read_many(ckeys, self._ctx)
        codec = self.labels.codec
        out = []
        for v in vals:
            if v is None:
                out.append(encode_block(np.zeros(self.labels.chunks, np.uint64)))
            elif hasattr(codec, "decode_block_bytes"):
                out.append(bytes(codec.decode_block_bytes(v, self.labels.chunks)))
            else:
                out.append(encode_block(self.labels._decode(v)))
        return out

    def map_labels(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.uint64)
        if self.supervoxels:
            return labels.copy()
        if self._map is None:
            self._map = self.labels._mapping_table(self._ctx)
        keys, values = self._map
        if not len(keys):
            return labels.copy()
        from diced.array.labelstats import relabel

        return relabel(labels, keys, values)

    def write_dvid_blocks(self, coords: np.ndarray, blocks: list[bytes], scale: int) -> None:
        from diced.array.codecs.labelblock import decode_block

        if scale != 0:
            raise InvalidArgumentError("import blocks at scale 0; lower scales are computed")
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
        arrays = [decode_block(b, self.labels.chunks) for b in blocks]
        self.labels.write_blocks(coords[:, ::-1], arrays)


def export_label_shards(labels: Any, spec: Any, dest: str, *, supervoxels: bool = False,
                        **kwargs: Any) -> Any:
    """Export a label array (at the version of the handle) as DVID export-shards Arrow files.

    ``spec`` is a neuroglancer sharded ``info`` (path, URL or dict); see
    :func:`diced.export.arrow_shards.export_shards` for the other options.
    """
    from diced.export.arrow_shards import export_shards

    return export_shards(LabelBlockSource(labels, supervoxels=supervoxels), spec, dest, **kwargs)


def import_label_shards(paths_or_dir: Any, labels: Any, *, bodies: bool = False,
                        **kwargs: Any) -> Any:
    """Import export-shards files (DVID-written or diced's) into a label array at its
    (open) version; ``bodies=True`` writes the agglomerated labels instead of supervoxels."""
    from diced.export.shard_reader import import_shards

    sink: Mapping[str, Any] | Any = LabelBlockSource(labels, supervoxels=True)
    return import_shards(paths_or_dir, sink, labels="labels" if bodies else "supervoxels",
                         **kwargs)
