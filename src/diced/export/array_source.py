"""An in-memory :class:`~diced.export.arrow_shards.BlockSource` over ZYX label volumes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from diced.errors import InvalidArgumentError

__all__ = ["ArraySource"]

_BLOCK_SIZE = 64


def _sorted_mapping(mapping: Mapping[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    if not mapping:
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    keys = np.fromiter((int(k) for k in mapping), dtype=np.uint64, count=len(mapping))
    values = np.fromiter((int(v) for v in mapping.values()), dtype=np.uint64, count=len(mapping))
    order = np.argsort(keys, kind="stable")
    return keys[order], values[order]


class ArraySource:
    """A :class:`BlockSource` over in-memory (or any ndarray-like) ZYX label volumes.

    Blocks are cut from the volume (edge blocks padded with 0) and encoded with
    :func:`diced.array.codecs.labelblock.encode_block`. Every block of the grid is reported as
    stored, including all-zero ones (which :func:`export_shards` then skips).

    Parameters
    ----------
    volume : array-like or mapping of int to array-like
        A 3-D integer ``(nz, ny, nx)`` volume for scale 0, or ``{scale: volume}``. Anything
        that supports 3-D slicing and ``np.asarray`` works (numpy, zarr, memmap, ...).
    mapping : mapping of int to int, optional
        Supervoxel -> body ids for :meth:`map_labels`; missing ids map to themselves.
    """

    def __init__(self, volume: Any, *, mapping: Mapping[int, int] | None = None) -> None:
        volumes = dict(volume) if isinstance(volume, Mapping) else {0: volume}
        for s, v in volumes.items():
            shape = getattr(v, "shape", None)
            if shape is None or len(shape) != 3:
                raise InvalidArgumentError(f"scale {s} volume must be 3-D (z, y, x), got {shape}")
            dtype = np.dtype(getattr(v, "dtype", np.uint64))
            if not np.issubdtype(dtype, np.integer):
                raise InvalidArgumentError(f"scale {s} volume must be integer, got {dtype}")
        self._volumes = {int(s): v for s, v in volumes.items()}
        self._keys, self._values = _sorted_mapping(mapping)
        self._cache: dict[int, dict[tuple[int, int, int], bytes]] = {}

    def _volume(self, scale: int) -> Any:
        try:
            return self._volumes[int(scale)]
        except KeyError:
            raise InvalidArgumentError(
                f"no volume for scale {scale} (have {sorted(self._volumes)})"
            ) from None

    def scale_shape(self, scale: int) -> tuple[int, int, int]:
        """Voxel shape ``(nz, ny, nx)`` at ``scale``."""
        return tuple(int(s) for s in self._volume(scale).shape)

    def block_coords(self, scale: int) -> np.ndarray:
        """All block coordinates ``(bx, by, bz)`` covering the volume, x fastest."""
        nz, ny, nx = (-(-s // _BLOCK_SIZE) for s in self.scale_shape(scale))
        z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
        return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1).astype(np.int64)

    def block_voxels(self, coord: Sequence[int], scale: int) -> np.ndarray:
        """The ``(64, 64, 64)`` uint64 voxels of block ``(bx, by, bz)``, zero-padded at edges."""
        vol = self._volume(scale)
        bx, by, bz = (int(c) for c in coord)
        b = _BLOCK_SIZE
        if min(bx, by, bz) < 0:
            raise InvalidArgumentError(f"block coordinate {(bx, by, bz)} is negative")
        sub = np.asarray(vol[bz * b : (bz + 1) * b, by * b : (by + 1) * b, bx * b : (bx + 1) * b])
        if sub.shape == (b, b, b):
            return np.ascontiguousarray(sub, dtype=np.uint64)
        out = np.zeros((b, b, b), np.uint64)
        out[: sub.shape[0], : sub.shape[1], : sub.shape[2]] = sub
        return out

    def read_dvid_blocks(self, coords: np.ndarray, scale: int) -> list[bytes]:
        """Encoded DVID blocks for ``coords`` ``(n, 3)`` (from the cache if :meth:`preencode`)."""
        cache = self._cache.get(int(scale))
        out = []
        encode = None
        for c in np.asarray(coords, dtype=np.int64).reshape(-1, 3):
            key = (int(c[0]), int(c[1]), int(c[2]))
            if cache is not None and key in cache:
                out.append(cache[key])
                continue
            if encode is None:
                from diced.array.codecs.labelblock import encode_block

                encode = encode_block
            out.append(encode(self.block_voxels(key, scale)))
        return out

    def map_labels(self, labels: np.ndarray) -> np.ndarray:
        """Map ids through the ``mapping`` given at construction (identity where unmapped)."""
        labels = np.ascontiguousarray(labels, dtype=np.uint64)
        if self._keys.size == 0:
            return labels.copy()
        from diced.export._shard_kernels import map_sorted

        return map_sorted(labels, self._keys, self._values)

    def preencode(self, scales: Iterable[int] | None = None) -> ArraySource:
        """Encode and cache every block of ``scales`` (default all) so reads only copy bytes."""
        for s in self._volumes if scales is None else scales:
            self._cache.pop(int(s), None)
            coords = self.block_coords(s)
            blocks = self.read_dvid_blocks(coords, s)
            self._cache[int(s)] = {
                (int(c[0]), int(c[1]), int(c[2])): b for c, b in zip(coords, blocks, strict=True)
            }
        return self
