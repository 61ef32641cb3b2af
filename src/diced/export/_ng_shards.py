"""Neuroglancer ``neuroglancer_uint64_sharded_v1`` shard files: a streaming writer and a reader.

Private to :mod:`diced.export.convert_shards`. The format (neuroglancer's
``sharded.md``): a shard file starts with the *shard index*, ``2**minishard_bits`` pairs of
uint64 LE ``[start, end)`` byte offsets of each minishard index, counted from the end of the
shard index (never compressed). Chunk data and the minishard indexes follow. A minishard index
(raw or gzip, as ``minishard_index_encoding`` says) is a ``[3, n]`` uint64 LE array: the chunk
ids, their start offsets (from the end of the shard index) and their sizes; ids and offsets are
delta-encoded, an offset delta counting from the end of the previous chunk. Chunk data is raw
or gzip (``data_encoding``). Chunks here are written in (minishard, chunk id) order, as
TensorStore writes them, so every delta is non-negative.

The writer streams chunk bytes to a local temporary file and remembers only ``(id, offset,
size)`` per chunk; at :meth:`ShardFileWriter.commit` it appends the minishard indexes, fills in
the shard index at the front and publishes the file whole: ``os.replace`` of a temporary file
next to the target on local disks, a single PUT of the finished file on object stores (an object
appears whole or not at all). A killed writer leaves at most a hidden ``.*.tmp-*`` file.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import tempfile
import uuid
import zlib
from collections.abc import Sequence
from typing import Any

import fsspec
import numpy as np

from diced.errors import CorruptDataError

__all__ = ["ShardFileWriter", "decode_chunk", "encode_chunk", "read_chunks",
           "read_shard_index", "tmp_name"]


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def tmp_name(path: str) -> str:
    """A hidden temporary name next to ``path`` (ignored by readers and listings)."""
    head, tail = posixpath.split(path)
    return posixpath.join(head, f".{tail}.tmp-{uuid.uuid4().hex}")


_ZLIB: Any = None


def _zlib() -> Any:
    """zlib-ng's drop-in zlib when installed (the same format and levels, ~2x faster)."""
    global _ZLIB
    if _ZLIB is None:
        try:
            from zlib_ng import zlib_ng as impl
        except ImportError:
            impl = zlib
        _ZLIB = impl
    return _ZLIB


def gzip_bytes(data: bytes | memoryview, level: int) -> bytes:
    """gzip member with mtime 0 (deterministic output for a given zlib implementation)."""
    return _zlib().compress(data, level, wbits=31)


def gunzip_bytes(data: bytes, what: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptDataError(f"{what}: bad gzip data: {exc}") from exc


class ShardFileWriter:
    """Write one shard file in a single streaming pass; chunks must come in
    (minishard, chunk id) order.

    Parameters
    ----------
    fs, path : the target (any fsspec filesystem).
    minishard_bits : int
    minishard_index_encoding, data_encoding : {"raw", "gzip"}
    gzip_level : int
        zlib level for gzip-encoded data and minishard indexes.
    tmp_dir : str, optional
        Local directory for the staging file of a remote target (default: the system's).
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, minishard_bits: int,
                 minishard_index_encoding: str = "raw", data_encoding: str = "raw",
                 gzip_level: int = 6, tmp_dir: str | None = None) -> None:
        self.fs = fs
        self.path = path
        self.minishard_bits = minishard_bits
        self.index_gzip = minishard_index_encoding == "gzip"
        self.data_gzip = data_encoding == "gzip"
        self.gzip_level = gzip_level
        self._index_bytes = 16 << minishard_bits
        self._local = _is_local(fs)
        if self._local:
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
            self._tmp = tmp_name(path)
        else:
            fd, self._tmp = tempfile.mkstemp(prefix="diced-ngshard-", suffix=".tmp", dir=tmp_dir)
            os.close(fd)
        self._fh = open(self._tmp, "w+b")  # noqa: SIM115 - closed in commit/abort
        self._fh.write(b"\0" * self._index_bytes)
        self._pos = 0  # bytes of data written after the shard index
        self._ids: list[int] = []
        self._minis: list[int] = []
        self._starts: list[int] = []
        self._sizes: list[int] = []
        self._last = (-1, -1)

    @property
    def chunks(self) -> int:
        return len(self._ids)

    def add(self, chunk_id: int, minishard: int, data: bytes | memoryview) -> None:
        """Append one chunk's encoded bytes (gzip is applied here if the spec says so)."""
        key = (int(minishard), int(chunk_id))
        if key <= self._last:
            raise CorruptDataError(
                f"{self.path}: chunks out of (minishard, id) order or repeated at id {chunk_id}")
        self._last = key
        if self.data_gzip:
            data = gzip_bytes(data, self.gzip_level)
        self._fh.write(data)
        self._ids.append(key[1])
        self._minis.append(key[0])
        self._starts.append(self._pos)
        self._sizes.append(len(data))
        self._pos += len(data)

    def _finish_file(self) -> int:
        ids = np.asarray(self._ids, dtype=np.uint64)
        minis = np.asarray(self._minis, dtype=np.int64)
        starts = np.asarray(self._starts, dtype=np.uint64)
        sizes = np.asarray(self._sizes, dtype=np.uint64)
        index = np.zeros((1 << self.minishard_bits, 2), dtype="<u8")
        bounds = np.searchsorted(minis, np.arange((1 << self.minishard_bits) + 1))
        for m in np.flatnonzero(bounds[1:] > bounds[:-1]):
            lo, hi = bounds[m], bounds[m + 1]
            arr = np.empty((3, hi - lo), dtype="<u8")
            arr[0] = np.diff(ids[lo:hi], prepend=np.uint64(0))
            ends = starts[lo:hi] + sizes[lo:hi]
            prev_end = np.concatenate([[np.uint64(0)], ends[:-1]]).astype(np.uint64)
            arr[1] = starts[lo:hi] - prev_end
            arr[2] = sizes[lo:hi]
            raw = arr.tobytes()
            if self.index_gzip:
                raw = gzip_bytes(raw, self.gzip_level)
            index[m] = (self._pos, self._pos + len(raw))
            self._fh.write(raw)
            self._pos += len(raw)
        self._fh.seek(0)
        self._fh.write(index.tobytes())
        self._fh.flush()
        return self._index_bytes + self._pos

    def commit(self) -> int:
        """Publish the shard file whole; returns its size in bytes."""
        try:
            nbytes = self._finish_file()
            self._fh.close()
            if self._local:
                os.replace(self._tmp, self.path)
            else:
                self.fs.put_file(self._tmp, self.path)
                os.unlink(self._tmp)
        except BaseException:
            self.abort()
            raise
        self._fh = None
        return nbytes

    def abort(self) -> None:
        """Drop everything written so far; nothing appears at ``path``."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)


def read_shard_index(fs: fsspec.AbstractFileSystem, path: str, minishard_bits: int,
                     minishard_index_encoding: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chunk ids (sorted), absolute byte offsets and sizes of every chunk in a shard file.

    Raises
    ------
    CorruptDataError
        The file is too short, or an index points outside it or does not decode.
    """
    nindex = 16 << minishard_bits
    size = fs.size(path)
    if size < nindex:
        raise CorruptDataError(f"{path}: {size} bytes, shorter than its {nindex}-byte shard index")
    head = fs.cat_file(path, start=0, end=nindex)
    index = np.frombuffer(head, dtype="<u8").reshape(-1, 2).astype(np.int64)
    used = np.flatnonzero(index[:, 1] > index[:, 0])
    if not len(used):
        empty = np.zeros(0, np.int64)
        return empty.astype(np.uint64), empty, empty
    lo = int(index[used, 0].min())
    hi = int(index[used, 1].max())
    if lo < 0 or nindex + hi > size:
        raise CorruptDataError(f"{path}: minishard index points past the end of the file")
    region = fs.cat_file(path, start=nindex + lo, end=nindex + hi)
    ids, starts, sizes = [], [], []
    for m in used:
        raw = region[index[m, 0] - lo:index[m, 1] - lo]
        if minishard_index_encoding == "gzip":
            raw = gunzip_bytes(raw, f"{path} minishard {m} index")
        if len(raw) % 24:
            raise CorruptDataError(f"{path}: minishard {m} index has {len(raw)} bytes")
        arr = np.frombuffer(raw, dtype="<u8").reshape(3, -1)
        ids.append(np.cumsum(arr[0], dtype=np.uint64))
        ends = np.cumsum(arr[1] + arr[2], dtype=np.uint64)
        starts.append((ends - arr[2]).astype(np.int64) + nindex)
        sizes.append(arr[2].astype(np.int64))
    all_ids = np.concatenate(ids)
    all_starts = np.concatenate(starts)
    all_sizes = np.concatenate(sizes)
    if len(all_sizes) and (all_starts.min() < nindex or (all_starts + all_sizes).max() > size):
        raise CorruptDataError(f"{path}: a chunk lies outside the file")
    order = np.argsort(all_ids, kind="stable")
    return all_ids[order], all_starts[order], all_sizes[order]


def read_chunks(fs: fsspec.AbstractFileSystem, path: str, starts: Sequence[int],
                sizes: Sequence[int]) -> list[bytes]:
    """The bytes of several chunks of one file (concurrent range reads on object stores)."""
    if not len(starts):
        return []
    if _is_local(fs):
        out = []
        with open(path, "rb") as f:
            for s, n in zip(starts, sizes, strict=True):
                out.append(os.pread(f.fileno(), int(n), int(s)))
        return out
    ends = [int(s) + int(n) for s, n in zip(starts, sizes, strict=True)]
    return list(fs.cat_ranges([path] * len(ends), [int(s) for s in starts], ends))


def encode_chunk(zyx: np.ndarray, encoding: str, block_size: Sequence[int]) -> bytes:
    """Encode a (z, y, x) uint64 chunk (already clipped to the volume) as neuroglancer does."""
    if encoding == "raw":
        return np.ascontiguousarray(zyx, dtype="<u8").tobytes()
    import compressed_segmentation as cseg

    xyz = np.asfortranarray(zyx.transpose(2, 1, 0)[..., None], dtype=np.uint64)
    return cseg.compress(xyz, block_size=tuple(block_size), order="F")


def decode_chunk(data: bytes, shape_xyz: Sequence[int], encoding: str,
                 block_size: Sequence[int], what: str) -> np.ndarray:
    """Decode one neuroglancer chunk of shape ``shape_xyz`` to a (z, y, x) uint64 array."""
    sx, sy, sz = (int(v) for v in shape_xyz)
    if encoding == "raw":
        if len(data) != 8 * sx * sy * sz:
            raise CorruptDataError(f"{what}: raw chunk has {len(data)} bytes, expected "
                                   f"{8 * sx * sy * sz}")
        return np.frombuffer(data, dtype="<u8").reshape(sz, sy, sx).astype(np.uint64)
    import compressed_segmentation as cseg

    try:
        arr = cseg.decompress(data, (sx, sy, sz, 1), np.uint64, tuple(block_size), order="F")
    except Exception as exc:  # the package raises its own DecodeError and ValueErrors
        raise CorruptDataError(f"{what}: bad compressed_segmentation chunk: {exc}") from exc
    return np.ascontiguousarray(np.asarray(arr)[..., 0].transpose(2, 1, 0))
