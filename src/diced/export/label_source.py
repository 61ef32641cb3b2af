"""A LabelArray as the block source and sink of the Arrow export-shards format."""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diced.errors import InvalidArgumentError
from diced.repo import keys as K

__all__ = ["LabelBlockSource", "export_label_shards", "export_shards", "import_label_shards",
           "sharded_spec"]


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
        """Shape (z, y, x) of pyramid level ``scale``."""
        shape = self.labels._shape_at(self._ctx)
        f = 1 << scale
        return tuple(-(-n // f) for n in shape)  # type: ignore[return-value]

    def block_coords(self, scale: int) -> np.ndarray:
        """Block coordinates (x, y, z) of the stored blocks at ``scale``.

        Returns
        -------
        numpy.ndarray
            ``(n, 3)`` int64.
        """
        zyx = [K.parse_chunk_ckey(c) for c in self._level(scale).live_keys(self._ctx)]
        arr = np.array(zyx, dtype=np.int64).reshape(-1, 3)
        return np.ascontiguousarray(arr[:, ::-1])

    def read_dvid_blocks(self, coords: np.ndarray, scale: int) -> list[bytes]:
        """DVID block serializations (supervoxel ids) of the blocks at ``coords`` (x, y, z).

        Parameters
        ----------
        coords : numpy.ndarray
            ``(n, 3)`` block coordinates, x, y, z.
        scale : int

        Returns
        -------
        list of bytes
            Unstored blocks come back as all-zero blocks.
        """
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
        """Body ids of supervoxel ids (unchanged with ``supervoxels=True``).

        Parameters
        ----------
        labels : numpy.ndarray

        Returns
        -------
        numpy.ndarray
            A new uint64 array.
        """
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
        """Write DVID blocks at ``coords`` (x, y, z) into the label array (scale 0 only).

        Parameters
        ----------
        coords : numpy.ndarray
            ``(n, 3)`` block coordinates, x, y, z.
        blocks : list of bytes
            DVID block serializations.
        scale : int
            Must be 0: lower scales are computed.
        """
        from diced.array.codecs.labelblock import decode_block

        if scale != 0:
            raise InvalidArgumentError("import blocks at scale 0; lower scales are computed")
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
        arrays = [decode_block(b, self.labels.chunks) for b in blocks]
        self.labels.write_blocks(coords[:, ::-1], arrays)


def _sharding_for(grid_xyz: Sequence[int], chunk_bytes: int, shard_bits: int | None,
                  minishard_bits: int | None, preshift_bits: int | None,
                  shard_bytes: int | None) -> dict[str, Any]:
    """The ``sharding`` object of one scale: explicit bits (missing ones derived so the
    three cover the grid's chunk-id bits), else shards of at most ``shard_bytes``."""
    from diced.export.precomputed import SHARD_BYTES, default_sharding
    from diced.export.sharding import _bits_for

    total = sum(_bits_for(int(g)) for g in grid_xyz)
    given = [b for b in (shard_bits, minishard_bits, preshift_bits) if b is not None]
    if not given:
        return default_sharding(grid_xyz, chunk_bytes, data_encoding="gzip",
                                shard_bytes=shard_bytes or SHARD_BYTES)
    for name, b in (("shard_bits", shard_bits), ("minishard_bits", minishard_bits),
                    ("preshift_bits", preshift_bits)):
        if b is not None and (isinstance(b, bool) or not isinstance(b, int | np.integer)
                              or not 0 <= b <= 64):
            raise InvalidArgumentError(f"{name} must be an integer in 0..64, got {b!r}")
    if shard_bits is not None:
        span = max(0, total - int(shard_bits))  # bits that select chunks within one shard
        pre = min(3, span) if preshift_bits is None else int(preshift_bits)
        mini = max(0, span - pre) if minishard_bits is None else int(minishard_bits)
        shard = int(shard_bits)
    else:
        pre = 0 if preshift_bits is None else int(preshift_bits)
        mini = 0 if minishard_bits is None else int(minishard_bits)
        shard = max(0, total - pre - mini)
    if pre + mini + shard < total:
        raise InvalidArgumentError(
            f"preshift_bits + minishard_bits + shard_bits = {pre + mini + shard} cannot number "
            f"the {total} chunk-id bits of a {tuple(grid_xyz)} chunk grid; raise one of them")
    if mini + shard > 64:
        raise InvalidArgumentError("minishard_bits + shard_bits must be at most 64")
    return {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity",
            "preshift_bits": pre, "minishard_bits": mini, "shard_bits": shard,
            "minishard_index_encoding": "gzip", "data_encoding": "gzip"}


def sharded_spec(labels: Any, *, shard_bits: int | None = None,
                 minishard_bits: int | None = None, preshift_bits: int | None = None,
                 shard_bytes: int | None = None, shard_voxels: int | None = None,
                 voxel_size: Sequence[float] | None = None, unit: str = "nanometer"
                 ) -> dict[str, Any]:
    """A neuroglancer sharded ``info`` spec for every scale of a label array, as DVID's
    ``export-shards`` and :func:`export_shards` take it.

    Parameters
    ----------
    labels : LabelArray
        A 3-D label array with 64³ chunks (DVID's block size).
    shard_bits, minishard_bits, preshift_bits : int, optional
        The neuroglancer ``sharding`` parameters, used for every scale. Those left out are
        derived per scale so that the three cover the scale's chunk-id bits (given
        ``shard_bits``, the rest select chunks inside a shard, at most 3 of them as
        ``preshift_bits``; without it, ``shard_bits`` takes the remaining bits).
    shard_bytes : int, optional
        Instead of bits: the largest raw (uncompressed uint64) size of one shard; shards
        are then the largest power-of-two boxes of chunks that fit. Default:
        :data:`diced.export.precomputed.SHARD_BYTES` (128 MiB).
    shard_voxels : int, optional
        The same target in voxels (``shard_bytes = 8 * shard_voxels``).
    voxel_size : 3 numbers, optional
        Voxel size of scale 0 in z, y, x order, in ``unit`` (default 8 nm); written as the
        scales' x, y, z ``resolution`` in nanometres.
    unit : str
        Unit of ``voxel_size`` (default ``"nanometer"``).

    Returns
    -------
    dict
        The spec (``@type`` ``neuroglancer_multiscale_volume``), one scale per pyramid level,
        keys ``"s0"``, ``"s1"``, ...

    Raises
    ------
    InvalidArgumentError
        Not a 64³-chunked label array, conflicting or impossible sharding parameters.
    """
    from diced.datatypes.labels import LabelArray
    from diced.export.sharding import DVID_CHUNK_SIZE
    from diced.export.voxels import check_voxel_size, to_nanometers

    if not isinstance(labels, LabelArray):
        raise InvalidArgumentError(f"export-shards needs a label array, got {type(labels).__name__}")
    if tuple(labels.chunks) != DVID_CHUNK_SIZE:
        raise InvalidArgumentError(
            f"DVID export-shards uses 64³ blocks; {labels.name!r} has chunks {labels.chunks}")
    bits_given = any(b is not None for b in (shard_bits, minishard_bits, preshift_bits))
    if shard_voxels is not None:
        if shard_bytes is not None:
            raise InvalidArgumentError("give shard_bytes or shard_voxels, not both")
        shard_bytes = int(shard_voxels) * 8
    if shard_bytes is not None:
        if bits_given:
            raise InvalidArgumentError("give sharding bits or a shard size, not both")
        if isinstance(shard_bytes, bool) or int(shard_bytes) <= 0:
            raise InvalidArgumentError(f"the shard size must be positive, got {shard_bytes!r}")
        shard_bytes = int(shard_bytes)
    res = list(reversed(to_nanometers(check_voxel_size(voxel_size, 3, "label array"), unit)))
    chunk_bytes = int(np.prod(DVID_CHUNK_SIZE)) * 8
    scales = []
    shape = tuple(labels.shape)
    for s in range(labels.max_scale + 1):
        size = [-(-n // (1 << s)) for n in reversed(shape)]
        grid = [-(-n // c) for n, c in zip(size, DVID_CHUNK_SIZE, strict=True)]
        scales.append({
            "key": f"s{s}", "size": size, "resolution": [r * (1 << s) for r in res],
            "chunk_sizes": [list(DVID_CHUNK_SIZE)], "encoding": "compressed_segmentation",
            "compressed_segmentation_block_size": [8, 8, 8], "voxel_offset": [0, 0, 0],
            "sharding": _sharding_for(grid, chunk_bytes, shard_bits, minishard_bits,
                                      preshift_bits, shard_bytes)})
    return {"@type": "neuroglancer_multiscale_volume", "data_type": "uint64",
            "num_channels": 1, "type": "segmentation", "scales": scales}


def export_shards(labels: Any, dest: str | os.PathLike[str], spec: Any = None, *,
                  version: Any = None, supervoxels: bool = False,
                  shard_bits: int | None = None, minishard_bits: int | None = None,
                  preshift_bits: int | None = None, shard_bytes: int | None = None,
                  shard_voxels: int | None = None, voxel_size: Sequence[float] | None = None,
                  unit: str = "nanometer", **kwargs: Any) -> Any:
    """Export a version of a label array as DVID export-shards files (Arrow IPC + CSV index).

    Parameters
    ----------
    labels : LabelArray
        The label array (64³ chunks).
    dest : str or path
        Local directory or fsspec URL; shard files go to ``<dest>/s<scale>/``.
    spec : mapping, JSON text, or path/URL of a JSON file, optional
        The neuroglancer sharded ``info`` that decides the shard layout (as DVID's
        ``export-shards`` takes it). Default: made by :func:`sharded_spec` from the sharding
        arguments below and written to ``<dest>/info``, so readers find it there.
    version : str or Version, optional
        Version to export (UUID, prefix, branch, ``branch~N``, tag); default: the handle's.
    supervoxels : bool
        Put supervoxel ids in the label column too (no mapping applied).
    shard_bits, minishard_bits, preshift_bits, shard_bytes, shard_voxels, voxel_size, unit
        Passed to :func:`sharded_spec` when ``spec`` is not given (refused with a spec).
    **kwargs
        ``scale``, ``batch_size``, ``overwrite``, ``threads``, ``dask_client``,
        ``progress``, ``zstd_level``, ``storage_options``: see
        :func:`diced.export.arrow_shards.export_shards`.

    Returns
    -------
    ExportReport

    Raises
    ------
    InvalidArgumentError
        Not a label array, a spec together with sharding arguments, bad sharding
        parameters, or a non-empty destination without ``overwrite``.
    FormatError
        The spec is invalid.
    """
    from diced.export.arrow_shards import export_shards as write_shards

    made = {"shard_bits": shard_bits, "minishard_bits": minishard_bits,
            "preshift_bits": preshift_bits, "shard_bytes": shard_bytes,
            "shard_voxels": shard_voxels, "voxel_size": voxel_size}
    if version is not None and hasattr(labels, "at"):
        labels = labels.at(version)
    source = LabelBlockSource(labels, supervoxels=supervoxels)
    if spec is not None:
        if any(v is not None for v in made.values()):
            raise InvalidArgumentError(
                "give a spec or the sharding arguments (shard_bits, shard_bytes, ...), not both")
        return write_shards(source, spec, dest, **kwargs)
    spec = sharded_spec(labels, unit=unit, **made)
    report = write_shards(source, spec, dest, **kwargs)
    import fsspec

    fs, base = fsspec.core.url_to_fs(os.fspath(dest), **dict(kwargs.get("storage_options") or {}))
    fs.pipe_file(posixpath.join(base, "info") if base else "info",
                 json.dumps(spec, indent=1).encode())
    return report


def export_label_shards(labels: Any, spec: Any, dest: str | os.PathLike[str],
                        **kwargs: Any) -> Any:
    """Old argument order of :func:`export_shards`: ``(labels, spec, dest, **kwargs)``.

    Parameters
    ----------
    labels : LabelArray
        The label array.
    spec : mapping, JSON text or path
        The neuroglancer sharded ``info`` spec.
    dest : str or path
        Output directory or URL.
    **kwargs
        As for :func:`export_shards` (``version=``, ``supervoxels=``, ``scale=``, ...).

    Returns
    -------
    ExportReport
    """
    return export_shards(labels, dest, spec, **kwargs)


def import_label_shards(paths_or_dir: Any, labels: Any, *, bodies: bool = False,
                        **kwargs: Any) -> Any:
    """Import export-shards files (DVID-written or diced's) into a label array at its
    (open) version; ``bodies=True`` writes the agglomerated labels instead of supervoxels."""
    from diced.export.shard_reader import import_shards

    sink: Mapping[str, Any] | Any = LabelBlockSource(labels, supervoxels=True)
    return import_shards(paths_or_dir, sink, labels="labels" if bodies else "supervoxels",
                         **kwargs)
