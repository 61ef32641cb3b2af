"""Pieces shared by the shard writer and reader: the block protocols and the DVID block header.

Private: :mod:`diced.export.arrow_shards` re-exports :class:`BlockSource` and
:class:`BlockSink`, which is where users import them from.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import fsspec
import numpy as np

from diced.errors import CorruptDataError

__all__ = ["BlockSink", "BlockSource"]


def _label_list(block: bytes | memoryview) -> np.ndarray:
    """The label list of a DVID block serialization (16-byte header, then N x u64 LE)."""
    n_bytes = len(block)
    if n_bytes < 24:
        raise CorruptDataError(f"DVID block is {n_bytes} bytes; at least 24 are needed")
    n = int.from_bytes(bytes(block[12:16]), "little")
    if n == 0:
        raise CorruptDataError("DVID block has 0 labels")
    if n_bytes < 16 + 8 * n:
        raise CorruptDataError(
            f"DVID block of {n_bytes} bytes is too short for its {n}-entry label list"
        )
    return np.frombuffer(block, dtype="<u8", count=n, offset=16).astype(np.uint64)


def _with_label_list(block: bytes, labels: np.ndarray) -> bytes:
    """``block`` with its label-list entries replaced by ``labels`` (same length); voxels untouched."""
    n = int.from_bytes(block[12:16], "little")
    if len(labels) != n:
        raise CorruptDataError(f"label list has {n} entries but {len(labels)} replacements given")
    body = np.ascontiguousarray(labels, dtype="<u8").tobytes()
    return bytes(block[:16]) + body + bytes(block[16 + 8 * n :])


@runtime_checkable
class BlockSource(Protocol):
    """Where :func:`export_shards` gets DVID blocks from (a label array implements this).

    Block coordinates are arrays of shape ``(n, 3)``, int64, in ``(bx, by, bz)`` order, with
    64-voxel blocks at the given scale.
    """

    def scale_shape(self, scale: int) -> tuple[int, int, int]:
        """Voxel shape ``(nz, ny, nx)`` of the volume at ``scale``."""
        ...

    def block_coords(self, scale: int) -> np.ndarray:
        """Coordinates ``(n, 3)`` of the stored blocks at ``scale`` (absent blocks are not exported)."""
        ...

    def read_dvid_blocks(self, coords: np.ndarray, scale: int) -> list[bytes]:
        """Uncompressed DVID block serializations (supervoxel ids), one per row of ``coords``."""
        ...

    def map_labels(self, labels: np.ndarray) -> np.ndarray:
        """Map supervoxel ids (uint64) to body ids; ids without a mapping map to themselves."""
        ...


@runtime_checkable
class BlockSink(Protocol):
    """Where :func:`import_shards` puts blocks."""

    def write_dvid_blocks(self, coords: np.ndarray, blocks: list[bytes], scale: int) -> None:
        """Store DVID block serializations at block coordinates ``(n, 3)`` ``(bx, by, bz)``."""
        ...


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)
