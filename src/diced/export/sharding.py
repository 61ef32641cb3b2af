"""Neuroglancer precomputed sharding math for DVID-style shard exports (pure, no I/O).

A neuroglancer ``info`` spec (as given to DVID ``export-shards``) is parsed into a
:class:`VolumeSpec` of :class:`ShardedScale` objects. Each scale knows its chunk grid, the
bits per dimension of the compressed Morton code (the neuroglancer chunk id), the shard
number of a chunk under the ``identity`` hash, and the spatial box of chunks that one shard
covers. Chunk coordinates are always arrays of shape ``(n, 3)`` in **x, y, z** order.

Unlike DVID, shard boxes are computed per axis, so specs whose ``preshift_bits +
minishard_bits`` is not a multiple of 3 give correct, non-cubic shards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diced.errors import FormatError, InvalidArgumentError

__all__ = ["DVID_CHUNK_SIZE", "ShardedScale", "VolumeSpec", "parse_spec"]

#: The only chunk (block) size DVID export-shards accepts.
DVID_CHUNK_SIZE = (64, 64, 64)

_SHARDING_TYPE = "neuroglancer_uint64_sharded_v1"
_VOLUME_TYPE = "neuroglancer_multiscale_volume"


def _kernels():  # numba is imported only when sharding math is actually run
    from diced.export import _shard_kernels

    return _shard_kernels


def _bits_for(n: int) -> int:
    """Bits needed to index ``n`` chunks along one axis (0 for ``n <= 1``)."""
    return 0 if n <= 1 else int(n - 1).bit_length()


def _shard_bit_counts(bits: Sequence[int], nbits: int) -> tuple[int, int, int]:
    """How many of the lowest ``nbits`` Morton bits go to x, y and z (round-robin)."""
    count = [0, 0, 0]
    nbits = min(nbits, sum(bits))
    i = j = 0
    while j < nbits:
        for d in range(3):
            if i < bits[d] and j < nbits:
                count[d] += 1
                j += 1
        i += 1
    return count[0], count[1], count[2]


@dataclass(frozen=True)
class ShardedScale:
    """One scale of a sharded neuroglancer precomputed volume, with the derived shard geometry.

    Parameters
    ----------
    index : int
        Position of the scale in the spec's ``scales`` list (the DVID scale level).
    key : str
        The scale's ``key`` (directory name in neuroglancer precomputed).
    size : tuple of int
        Volume size in voxels, x, y, z.
    chunk_size : tuple of int
        Chunk size in voxels, x, y, z (always 64, 64, 64 for DVID exports).
    preshift_bits, minishard_bits, shard_bits : int
        The ``sharding`` parameters.
    resolution, encoding, minishard_index_encoding, data_encoding, hash :
        Copied from the spec; informational here.

    Attributes
    ----------
    grid : tuple of int
        Chunks per axis, ``ceil(size / chunk_size)``, x, y, z.
    bits : tuple of int
        Morton bits per axis, ``bit_length(grid - 1)`` (0 when the grid is 1).
    shard_shape : tuple of int
        Chunks per shard along each axis (clipped to the grid), x, y, z. May be non-cubic.
    """

    index: int
    key: str
    size: tuple[int, int, int]
    chunk_size: tuple[int, int, int]
    preshift_bits: int
    minishard_bits: int
    shard_bits: int
    resolution: tuple[float, ...] = (1.0, 1.0, 1.0)
    encoding: str = "compressed_segmentation"
    minishard_index_encoding: str = "raw"
    data_encoding: str = "raw"
    hash: str = "identity"
    grid: tuple[int, int, int] = field(init=False)
    bits: tuple[int, int, int] = field(init=False)
    shard_shape: tuple[int, int, int] = field(init=False)
    _shard_span: tuple[int, int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        grid = tuple(math.ceil(s / c) for s, c in zip(self.size, self.chunk_size, strict=True))
        bits = tuple(_bits_for(g) for g in grid)
        counts = _shard_bit_counts(bits, self.preshift_bits + self.minishard_bits)
        span = tuple(1 << c for c in counts)
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "_shard_span", span)
        object.__setattr__(
            self, "shard_shape", tuple(min(g, s) for g, s in zip(grid, span, strict=True))
        )

    # -- derived geometry ---------------------------------------------------------------------

    @property
    def shard_shape_voxels(self) -> tuple[int, int, int]:
        """Voxels per shard along each axis (before clipping to the volume), x, y, z."""
        return tuple(s * c for s, c in zip(self.shard_shape, self.chunk_size, strict=True))

    @property
    def total_bits(self) -> int:
        """Number of bits of the compressed Morton code."""
        return sum(self.bits)

    def _coords(self, coords: Any) -> np.ndarray:
        arr = np.asarray(coords)
        if arr.ndim == 1 and arr.shape[0] == 3:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise InvalidArgumentError(
                f"chunk coordinates must have shape (n, 3) (x, y, z), got {arr.shape}"
            )
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise InvalidArgumentError(f"chunk coordinates must be integers, got {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        if arr.size:
            bad = ~self.contains(arr)
            if bad.any():
                x, y, z = (int(v) for v in arr[np.argmax(bad)])
                raise InvalidArgumentError(
                    f"{int(bad.sum())} chunk coordinate(s) lie outside the scale {self.index} "
                    f"grid {self.grid}, e.g. ({x}, {y}, {z})"
                )
        return np.ascontiguousarray(arr)

    def contains(self, coords: Any) -> np.ndarray:
        """Boolean mask of the chunk coordinates (n, 3) that lie inside the grid."""
        arr = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
        return np.all((arr >= 0) & (arr < np.asarray(self.grid, dtype=np.int64)), axis=1)

    def chunk_ids(self, coords: Any) -> np.ndarray:
        """Compressed Morton codes (neuroglancer chunk ids) of chunk coordinates (n, 3) -> uint64."""
        arr = self._coords(coords)
        return _kernels().compressed_morton_codes(arr, np.asarray(self.bits, dtype=np.int64))

    def shard_numbers_of_ids(self, chunk_ids: np.ndarray) -> np.ndarray:
        """Shard numbers (uint64) of compressed Morton codes under the identity hash."""
        ids = np.ascontiguousarray(chunk_ids, dtype=np.uint64).reshape(-1)
        shard, _ = _kernels().shard_and_minishard(
            ids, self.preshift_bits, self.minishard_bits, self.shard_bits
        )
        return shard

    def shard_numbers(self, coords: Any) -> np.ndarray:
        """Neuroglancer shard number (uint64) of each chunk coordinate (n, 3)."""
        return self.shard_numbers_of_ids(self.chunk_ids(coords))

    def minishard_numbers(self, coords: Any) -> np.ndarray:
        """Neuroglancer minishard number (uint64) of each chunk coordinate (n, 3)."""
        _, mini = _kernels().shard_and_minishard(
            self.chunk_ids(coords), self.preshift_bits, self.minishard_bits, self.shard_bits
        )
        return mini

    def shard_origins(self, coords: Any) -> np.ndarray:
        """Chunk coordinate (n, 3) of the first chunk of the shard holding each chunk."""
        arr = self._coords(coords)
        span = np.asarray(self._shard_span, dtype=np.int64)
        return (arr // span) * span

    def shard_voxel_origins(self, coords: Any) -> np.ndarray:
        """Voxel origin (n, 3) at this scale of the shard holding each chunk (DVID file name)."""
        return self.shard_origins(coords) * np.asarray(self.chunk_size, dtype=np.int64)

    def shard_box(self, voxel_origin: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Chunk range ``[start, stop)`` (x, y, z) covered by the shard at ``voxel_origin``."""
        start = np.asarray(voxel_origin, dtype=np.int64) // np.asarray(self.chunk_size)
        stop = np.minimum(start + np.asarray(self._shard_span), np.asarray(self.grid))
        return start, stop

    @staticmethod
    def shard_name(voxel_origin: Sequence[int]) -> str:
        """DVID shard file stem ``"<x>_<y>_<z>"`` from a shard voxel origin."""
        x, y, z = (int(v) for v in voxel_origin)
        return f"{x}_{y}_{z}"

    def shard_file_name(self, shard_number: int) -> str:
        """Neuroglancer shard file name: zero-padded lower-case hex plus ``.shard``."""
        width = max(1, -(-self.shard_bits // 4))
        return f"{int(shard_number):0{width}x}.shard"


@dataclass(frozen=True)
class VolumeSpec:
    """A parsed neuroglancer precomputed ``info`` spec for a sharded uint64 volume.

    Attributes
    ----------
    scales : tuple of ShardedScale
        One entry per scale, in spec order (index = DVID scale level).
    batch_size : int or None
        The top-level ``"batch_size"`` if the spec has one (DVID's RPC ignores it).
    data_type, type : str
    num_channels : int
    raw : dict
        The spec as given (not compared, not shown).
    """

    scales: tuple[ShardedScale, ...]
    batch_size: int | None = None
    data_type: str = "uint64"
    type: str = "segmentation"
    num_channels: int = 1
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    def scale(self, index: int) -> ShardedScale:
        """The :class:`ShardedScale` at ``index``; raises InvalidArgumentError if absent."""
        if not isinstance(index, int | np.integer) or not 0 <= index < len(self.scales):
            raise InvalidArgumentError(
                f"scale {index!r} is not in the spec (it has {len(self.scales)} scales)"
            )
        return self.scales[int(index)]


def _int_field(obj: Mapping, name: str, where: str, lo: int, hi: int) -> int:
    if name not in obj:
        raise FormatError(f"{where}: missing field {name!r}")
    v = obj[name]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise FormatError(f"{where}: field {name!r} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _int_triple(obj: Mapping, name: str, where: str, *, positive: bool) -> tuple[int, int, int]:
    v = obj.get(name)
    ok = (
        isinstance(v, list | tuple)
        and len(v) == 3
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        and all(x > 0 if positive else x >= 0 for x in v)
    )
    if not ok:
        kind = "positive" if positive else "non-negative"
        raise FormatError(f"{where}: field {name!r} must be a list of 3 {kind} integers, got {v!r}")
    return int(v[0]), int(v[1]), int(v[2])


def _parse_scale(i: int, sc: Any) -> ShardedScale:
    where = f"scales[{i}]"
    if not isinstance(sc, Mapping):
        raise FormatError(f"{where} must be an object, got {type(sc).__name__}")
    chunk_sizes = sc.get("chunk_sizes")
    if not isinstance(chunk_sizes, list) or not chunk_sizes:
        raise FormatError(f"{where}: field 'chunk_sizes' must be a non-empty list")
    first = chunk_sizes[0]
    if not isinstance(first, list | tuple) or list(first) != list(DVID_CHUNK_SIZE):
        raise FormatError(
            f"{where}: field 'chunk_sizes' must start with [64, 64, 64] (DVID block size), "
            f"got {first!r}"
        )
    size = _int_triple(sc, "size", where, positive=True)
    if "voxel_offset" in sc and list(sc["voxel_offset"] or [0, 0, 0]) != [0, 0, 0]:
        raise FormatError(f"{where}: field 'voxel_offset' must be [0, 0, 0] for DVID exports")
    sh = sc.get("sharding")
    if not isinstance(sh, Mapping):
        raise FormatError(f"{where}: field 'sharding' must be an object (unsharded is unsupported)")
    swhere = f"{where}.sharding"
    if sh.get("@type") != _SHARDING_TYPE:
        raise FormatError(
            f"{swhere}: field '@type' must be {_SHARDING_TYPE!r}, got {sh.get('@type')!r}"
        )
    if sh.get("hash") != "identity":
        raise FormatError(
            f"{swhere}: field 'hash' must be 'identity' (the only hash implemented), "
            f"got {sh.get('hash')!r}"
        )
    preshift = _int_field(sh, "preshift_bits", swhere, 0, 64)
    minishard = _int_field(sh, "minishard_bits", swhere, 0, 64)
    shard = _int_field(sh, "shard_bits", swhere, 0, 64)
    if minishard + shard > 64:
        raise FormatError(f"{swhere}: minishard_bits + shard_bits must be at most 64")
    for enc_name in ("minishard_index_encoding", "data_encoding"):
        if sh.get(enc_name, "raw") not in ("raw", "gzip"):
            raise FormatError(f"{swhere}: field {enc_name!r} must be 'raw' or 'gzip'")
    resolution = sc.get("resolution", [1.0, 1.0, 1.0])
    if not isinstance(resolution, list | tuple) or len(resolution) != 3:
        raise FormatError(f"{where}: field 'resolution' must be a list of 3 numbers")
    scale = ShardedScale(
        index=i,
        key=str(sc.get("key", f"s{i}")),
        size=size,
        chunk_size=DVID_CHUNK_SIZE,
        preshift_bits=preshift,
        minishard_bits=minishard,
        shard_bits=shard,
        resolution=tuple(float(r) for r in resolution),
        encoding=str(sc.get("encoding", "compressed_segmentation")),
        minishard_index_encoding=str(sh.get("minishard_index_encoding", "raw")),
        data_encoding=str(sh.get("data_encoding", "raw")),
        hash="identity",
    )
    if scale.total_bits > 64:
        raise FormatError(f"{where}: field 'size' needs {scale.total_bits} chunk-id bits (> 64)")
    if scale.total_bits > preshift + minishard + shard:
        raise FormatError(
            f"{swhere}: preshift_bits + minishard_bits + shard_bits = "
            f"{preshift + minishard + shard} is less than the {scale.total_bits} chunk-id bits "
            f"the grid {scale.grid} needs (bits {scale.bits}); shard numbers would collide"
        )
    return scale


def parse_spec(spec: Mapping[str, Any] | str | bytes) -> VolumeSpec:
    """Parse and validate a neuroglancer precomputed ``info`` spec for DVID shard export.

    Parameters
    ----------
    spec : mapping, str or bytes
        The decoded JSON object, or its JSON text.

    Returns
    -------
    VolumeSpec

    Raises
    ------
    FormatError
        If the JSON is malformed or a field is missing or unsupported: ``@type`` must be
        ``neuroglancer_multiscale_volume``, ``data_type`` ``uint64``, ``num_channels`` 1; each
        scale needs ``chunk_sizes[0] == [64, 64, 64]``, a ``size``, and ``sharding`` of
        ``@type`` ``neuroglancer_uint64_sharded_v1`` with ``hash`` ``identity`` and enough
        ``preshift_bits + minishard_bits + shard_bits`` for its grid. The message names the field.
    """
    if isinstance(spec, bytes | str):
        try:
            obj = json.loads(spec)
        except ValueError as exc:
            raise FormatError(f"spec is not valid JSON: {exc}") from exc
    else:
        obj = spec
    if not isinstance(obj, Mapping):
        raise FormatError(f"spec must be a JSON object, got {type(obj).__name__}")
    if obj.get("@type", _VOLUME_TYPE) != _VOLUME_TYPE:
        raise FormatError(f"spec field '@type' must be {_VOLUME_TYPE!r}, got {obj.get('@type')!r}")
    if obj.get("data_type", "uint64") != "uint64":
        raise FormatError(f"spec field 'data_type' must be 'uint64', got {obj.get('data_type')!r}")
    if obj.get("num_channels", 1) != 1:
        raise FormatError(f"spec field 'num_channels' must be 1, got {obj.get('num_channels')!r}")
    batch_size = obj.get("batch_size")
    if batch_size is not None:
        batch_size = _int_field(obj, "batch_size", "spec", 1, 2**31 - 1)
    scales = obj.get("scales")
    if not isinstance(scales, list) or not scales:
        raise FormatError("spec field 'scales' must be a non-empty list")
    parsed = tuple(_parse_scale(i, sc) for i, sc in enumerate(scales))
    return VolumeSpec(
        scales=parsed,
        batch_size=batch_size,
        data_type="uint64",
        type=str(obj.get("type", "segmentation")),
        num_channels=1,
        raw=dict(obj),
    )
