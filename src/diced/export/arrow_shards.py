"""DVID ``export-shards`` files: Arrow IPC shard streams plus CSV indexes.

This module writes and reads the files DVID's ``export-shards`` produces and the BRAID
reader (``janelia-flyem/tensorstore-export``) consumes. It does not care where blocks come
from: an exporter reads them from any :class:`BlockSource`, and an importer writes them into
any :class:`BlockSink`.

Layout, per scale: ``<dest>/s<scale>/<ox>_<oy>_<oz>.arrow`` and ``.csv``, where ``o`` is the
voxel origin of the shard at that scale. The ``.arrow`` file is an Arrow IPC *stream*
(schema message, record batches of ``batch_size`` rows, end-of-stream marker) with the
7-field :data:`ARROW_SCHEMA`. The ``.csv`` has a ``# schema_size=<bytes>`` line, the header
``x,y,z,offset,size,batch_idx`` and one row per block giving the byte span of the record-batch
message that holds it and its row in that batch.

Unlike DVID, rows inside a shard are in a deterministic order: ascending compressed Morton
code (the neuroglancer chunk id) of the chunk coordinate. Shards are cut per axis, so
non-cubic shard shapes are handled. The CSV ``schema_size`` is the true length of the schema
message, so every ``offset`` is usable for range reads.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol, Self, runtime_checkable

import fsspec
import numpy as np
import pyarrow as pa
import zstandard
from pyarrow import ipc

from diced.errors import (
    CorruptDataError,
    FormatError,
    InvalidArgumentError,
    NotFoundError,
)
from diced.export.sharding import ShardedScale, VolumeSpec, parse_spec

__all__ = [
    "ARROW_SCHEMA",
    "ArraySource",
    "BlockSink",
    "BlockSource",
    "ExportReport",
    "ImportReport",
    "ShardFile",
    "ShardIndex",
    "ShardRecord",
    "ShardSummary",
    "export_shards",
    "import_shards",
    "read_shard_index",
]

logger = logging.getLogger(__name__)

#: The Arrow schema of a DVID export-shards stream (DVID ``export.go`` ``blockSchema``).
ARROW_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("chunk_x", pa.int32(), nullable=False),
        pa.field("chunk_y", pa.int32(), nullable=False),
        pa.field("chunk_z", pa.int32(), nullable=False),
        pa.field("labels", pa.list_(pa.field("item", pa.uint64(), nullable=True)), nullable=False),
        pa.field(
            "supervoxels", pa.list_(pa.field("item", pa.uint64(), nullable=True)), nullable=False
        ),
        pa.field(
            "dvid_compressed_block",
            pa.binary(),
            nullable=False,
            metadata={"compression": "true", "codec": "zstd"},
        ),
        pa.field("uncompressed_size", pa.uint32(), nullable=False),
    ]
)

_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # IPC end-of-stream: continuation + zero length
_CSV_HEADER = "x,y,z,offset,size,batch_idx"
_BLOCK_SIZE = 64
_UNIT_BLOCKS = 64  # blocks read+compressed per thread-pool task
_SPILL_BYTES = 64 << 20  # remote shard files larger than this are staged on local disk
_MAX_DECOMPRESSED = 1 << 30  # refuse zstd frames claiming more than this


# ---------------------------------------------------------------------------------------------
# DVID block header (the only part of the block format this module needs)


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


# ---------------------------------------------------------------------------------------------
# Protocols


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


# ---------------------------------------------------------------------------------------------
# Export


@dataclass(frozen=True)
class ShardSummary:
    """One written shard."""

    origin: tuple[int, int, int]  #: voxel origin at this scale, x, y, z (the file stem)
    shard_number: int  #: neuroglancer shard number
    arrow_path: str
    csv_path: str
    blocks: int  #: rows written
    nbytes: int  #: size of the ``.arrow`` file
    csv_nbytes: int  #: size of the ``.csv`` file


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_shards` did."""

    scale: int
    dest: str  #: the ``s<scale>`` directory
    shards: tuple[ShardSummary, ...]
    blocks_written: int
    blocks_skipped: int  #: blocks whose mapped labels were all 0
    bytes_written: int  #: ``.arrow`` plus ``.csv`` bytes
    uncompressed_bytes: int  #: DVID block bytes before zstd
    seconds: float

    @property
    def shards_written(self) -> int:
        """Number of shards (pairs of files) written."""
        return len(self.shards)

    @property
    def arrow_paths(self) -> list[str]:
        return [s.arrow_path for s in self.shards]

    @property
    def csv_paths(self) -> list[str]:
        return [s.csv_path for s in self.shards]


@dataclass
class _ShardTask:
    origin: tuple[int, int, int]
    number: int
    coords: np.ndarray  # (m, 3) int64, ascending chunk id
    arrow_path: str
    csv_path: str


@dataclass
class _Rows:
    """Encoded rows of one unit of blocks (only blocks that are kept)."""

    coords: np.ndarray
    labels: list[np.ndarray]
    supervoxels: list[np.ndarray]
    compressed: list[bytes]
    sizes: list[int]
    skipped: int = 0


_tls = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_tls, "zstd", None)
    if cache is None:
        cache = _tls.zstd = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(
            level=level, write_checksum=True, write_content_size=True
        )
    return c


def _encode_rows(source: BlockSource, coords: np.ndarray, scale: int, level: int) -> _Rows:
    """Read, label-map, filter and zstd-compress one unit of blocks."""
    from diced.export._shard_kernels import segments_nonzero

    blocks = source.read_dvid_blocks(coords, scale)
    if len(blocks) != len(coords):
        raise InvalidArgumentError(
            f"block source returned {len(blocks)} blocks for {len(coords)} coordinates"
        )
    svs = [_label_list(b) for b in blocks]
    lengths = np.fromiter((len(s) for s in svs), dtype=np.int64, count=len(svs))
    offsets = np.zeros(len(svs) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(svs) if svs else np.empty(0, np.uint64)
    mapped = np.asarray(source.map_labels(flat))
    if mapped.shape != flat.shape:
        raise InvalidArgumentError(
            f"map_labels returned shape {mapped.shape} for {flat.shape} labels"
        )
    mapped = np.ascontiguousarray(mapped, dtype=np.uint64)
    keep = segments_nonzero(mapped, offsets)
    cctx = _compressor(level)
    rows = _Rows(coords[keep], [], [], [], [], skipped=int((~keep).sum()))
    for i in np.flatnonzero(keep):
        rows.supervoxels.append(svs[i])
        rows.labels.append(mapped[offsets[i] : offsets[i + 1]])
        rows.compressed.append(cctx.compress(blocks[i]))
        rows.sizes.append(len(blocks[i]))
    return rows


class _Output:
    """A file being written: a temp file next to it (local) or memory spilling to disk (remote).

    Nothing appears at the final path until :meth:`commit`; :meth:`abort` leaves no trace.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        self.fs = fs
        self.path = path
        self._local = _is_local(fs)
        self._size = 0
        self._tmp_name: str | None = None
        if self._local:
            self._tmp_name = f"{path}.tmp-{uuid.uuid4().hex}"
            self._fh: Any = open(self._tmp_name, "wb")  # noqa: SIM115 - closed in commit/abort
        else:
            self._fh = io.BytesIO()

    def write(self, data: bytes | memoryview | pa.Buffer) -> None:
        self._fh.write(data)
        self._size += len(data)
        if not self._local and self._tmp_name is None and self._size > _SPILL_BYTES:
            fd, self._tmp_name = tempfile.mkstemp(prefix="diced-shard-", suffix=".tmp")
            spill = os.fdopen(fd, "wb")
            spill.write(self._fh.getbuffer())
            self._fh = spill

    def tell(self) -> int:
        return self._size

    def commit(self) -> int:
        if self._local:
            self._fh.close()
            os.replace(self._tmp_name, self.path)
        elif self._tmp_name is None:
            self.fs.pipe_file(self.path, self._fh.getvalue())
        else:
            self._fh.close()
            try:
                self.fs.put_file(self._tmp_name, self.path)
            finally:
                os.unlink(self._tmp_name)
        self._fh = None
        return self._size

    def abort(self) -> None:
        if self._fh is None:
            return
        self._fh.close()
        self._fh = None
        if self._tmp_name is not None and os.path.exists(self._tmp_name):
            os.unlink(self._tmp_name)


class _ShardWriter:
    """Serializes rows of one shard into an Arrow IPC stream plus its CSV index."""

    _schema_bytes: bytes | None = None

    def __init__(self, task: _ShardTask, fs: fsspec.AbstractFileSystem, batch_size: int) -> None:
        self.task = task
        self.fs = fs
        self.batch_size = batch_size
        self.out: _Output | None = None  # created on the first kept row
        self.rows = 0
        self.uncompressed = 0
        self._pending: list[tuple] = []
        self._csv: list[str] = []
        self._schema_size = 0

    @classmethod
    def schema_bytes(cls) -> bytes:
        if cls._schema_bytes is None:
            cls._schema_bytes = ARROW_SCHEMA.serialize().to_pybytes()
        return cls._schema_bytes

    def add(self, rows: _Rows) -> None:
        for k in range(len(rows.compressed)):
            x, y, z = (int(v) for v in rows.coords[k])
            self._pending.append(
                (x, y, z, rows.labels[k], rows.supervoxels[k], rows.compressed[k], rows.sizes[k])
            )
            if len(self._pending) >= self.batch_size:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self.out is None:
            self.out = _Output(self.fs, self.task.arrow_path)
            schema = self.schema_bytes()
            self.out.write(schema)
            self._schema_size = len(schema)
        batch = _record_batch(self._pending)
        msg = batch.serialize()
        offset = self.out.tell()
        self.out.write(msg)
        size = msg.size
        for i, row in enumerate(self._pending):
            self._csv.append(f"{row[0]},{row[1]},{row[2]},{offset},{size},{i}")
            self.uncompressed += row[6]
        self.rows += len(self._pending)
        self._pending = []

    def finish(self) -> ShardSummary | None:
        """Write the end-of-stream marker and publish both files; None if no row was kept."""
        try:
            self._flush()
            if self.out is None:
                return None
            self.out.write(_EOS)
            nbytes = self.out.commit()
            self.out = None
        except BaseException:
            self.abort()
            raise
        text = f"# schema_size={self._schema_size}\n{_CSV_HEADER}\n" + "\n".join(self._csv) + "\n"
        csv_bytes = text.encode()
        _write_whole(self.fs, self.task.csv_path, csv_bytes)
        return ShardSummary(
            origin=self.task.origin,
            shard_number=self.task.number,
            arrow_path=_display_path(self.fs, self.task.arrow_path),
            csv_path=_display_path(self.fs, self.task.csv_path),
            blocks=self.rows,
            nbytes=nbytes,
            csv_nbytes=len(csv_bytes),
        )

    def abort(self) -> None:
        if self.out is not None:
            self.out.abort()
            self.out = None


def _record_batch(rows: list[tuple]) -> pa.RecordBatch:
    n = len(rows)
    lab_len = np.fromiter((len(r[3]) for r in rows), dtype=np.int32, count=n)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lab_len, out=offsets[1:])
    pa_offsets = pa.array(offsets, type=pa.int32())
    labels = pa.ListArray.from_arrays(pa_offsets, pa.array(np.concatenate([r[3] for r in rows])))
    svs = pa.ListArray.from_arrays(pa_offsets, pa.array(np.concatenate([r[4] for r in rows])))
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.fromiter((r[0] for r in rows), np.int32, n), type=pa.int32()),
            pa.array(np.fromiter((r[1] for r in rows), np.int32, n), type=pa.int32()),
            pa.array(np.fromiter((r[2] for r in rows), np.int32, n), type=pa.int32()),
            labels,
            svs,
            pa.array([r[5] for r in rows], type=pa.binary()),
            pa.array(np.fromiter((r[6] for r in rows), np.uint32, n), type=pa.uint32()),
        ],
        schema=ARROW_SCHEMA,
    )


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _display_path(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if _is_local(fs) else fs.unstrip_protocol(path)


def _write_whole(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    out = _Output(fs, path)
    try:
        out.write(data)
        out.commit()
    except BaseException:
        out.abort()
        raise


def _load_spec(spec: Any, storage_options: Mapping[str, Any] | None) -> VolumeSpec:
    if isinstance(spec, VolumeSpec):
        return spec
    if isinstance(spec, Mapping | bytes):
        return parse_spec(spec)
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        return parse_spec(spec)
    if isinstance(spec, str | os.PathLike):
        try:
            with fsspec.open(os.fspath(spec), "rb", **dict(storage_options or {})) as f:
                return parse_spec(f.read())
        except FileNotFoundError as exc:
            raise InvalidArgumentError(f"spec file {os.fspath(spec)!r} not found") from exc
    raise InvalidArgumentError(
        f"spec must be a VolumeSpec, a mapping, JSON text or a path, got {type(spec).__name__}"
    )


def _check_block_coords(coords: Any) -> np.ndarray:
    arr = np.asarray(coords)
    if arr.size == 0:
        return np.empty((0, 3), np.int64)
    if arr.ndim != 2 or arr.shape[1] != 3 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgumentError(
            f"block_coords must return an integer array of shape (n, 3), got {arr.dtype} {arr.shape}"
        )
    return np.ascontiguousarray(arr, dtype=np.int64)


def _plan(sc: ShardedScale, coords: np.ndarray, root: str) -> list[_ShardTask]:
    """Group block coordinates by shard, in chunk-id (Morton) order."""
    from diced.export._shard_kernels import sort_and_group

    if len(coords) == 0:
        return []
    ids = sc.chunk_ids(coords)  # raises if any block lies outside the grid
    shards = sc.shard_numbers_of_ids(ids)
    order, starts, status = sort_and_group(ids, shards)
    if status == 1:
        dup = np.unique(coords, axis=0, return_counts=True)
        example = dup[0][np.argmax(dup[1] > 1)]
        raise InvalidArgumentError(f"block_coords has duplicates, e.g. {tuple(example.tolist())}")
    if status == 2:  # cannot happen for a spec that passed parse_spec
        raise FormatError(f"scale {sc.index}: shard numbers are not monotonic in chunk id")
    tasks = []
    for g in range(len(starts) - 1):
        idx = order[starts[g] : starts[g + 1]]
        sub = coords[idx]
        origin = tuple(int(v) for v in sc.shard_voxel_origins(sub[:1])[0])
        stem = sc.shard_name(origin)
        tasks.append(
            _ShardTask(
                origin=origin,
                number=int(shards[idx[0]]),
                coords=sub,
                arrow_path=posixpath.join(root, stem + ".arrow"),
                csv_path=posixpath.join(root, stem + ".csv"),
            )
        )
    return tasks


def _prepare_dest(fs: fsspec.AbstractFileSystem, root: str, overwrite: bool) -> None:
    try:
        existing = [e["name"] for e in fs.ls(root, detail=True) if e.get("type") == "file"]
    except (FileNotFoundError, NotADirectoryError):
        existing = []
    if existing and not overwrite:
        raise InvalidArgumentError(
            f"{_display_path(fs, root)} already holds {len(existing)} file(s); "
            "pass overwrite=True to replace the shard files of this scale"
        )
    old = [p for p in existing if p.endswith((".arrow", ".csv")) or ".tmp-" in p]
    if old:
        logger.info("removing %d old shard files from %s", len(old), root)
        fs.rm(old)
    fs.makedirs(root, exist_ok=True)


def _export_one_shard(
    source: BlockSource,
    scale: int,
    batch_size: int,
    level: int,
    fs: fsspec.AbstractFileSystem,
    task: _ShardTask,
) -> tuple[ShardSummary | None, int, int]:
    """Export one shard sequentially (the unit of work for dask). Returns (summary, skipped, raw)."""
    writer = _ShardWriter(task, fs, batch_size)
    skipped = 0
    try:
        for start in range(0, len(task.coords), _UNIT_BLOCKS):
            rows = _encode_rows(source, task.coords[start : start + _UNIT_BLOCKS], scale, level)
            skipped += rows.skipped
            writer.add(rows)
        summary = writer.finish()
    except BaseException:
        writer.abort()
        raise
    return summary, skipped, writer.uncompressed


def _run_threads(
    source: BlockSource,
    scale: int,
    tasks: list[_ShardTask],
    batch_size: int,
    level: int,
    fs: fsspec.AbstractFileSystem,
    threads: int,
    bar: Any,
) -> tuple[list[ShardSummary], int, int]:
    """Pipeline: units of blocks are read+compressed in a pool, shards are assembled in order."""
    summaries: list[ShardSummary] = []
    skipped = 0
    uncompressed = 0
    window: deque[tuple[int, bool, Future]] = deque()
    publishing: deque[Future] = deque()
    writers: dict[int, _ShardWriter] = {}
    max_window = 2 * threads

    def finish(w: _ShardWriter) -> tuple[ShardSummary | None, int]:
        return w.finish(), w.uncompressed

    def collect_published(limit: int) -> None:
        nonlocal uncompressed
        while len(publishing) > limit:
            summary, raw = publishing.popleft().result()
            uncompressed += raw
            if summary is not None:
                summaries.append(summary)

    def consume() -> None:
        nonlocal skipped
        t, last, fut = window.popleft()
        rows = fut.result()
        skipped += rows.skipped
        w = writers[t]
        w.add(rows)
        bar.update(len(rows.coords) + rows.skipped)
        if last:
            del writers[t]
            publishing.append(pool.submit(finish, w))
            collect_published(threads)

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="diced-export")
    try:
        for t, task in enumerate(tasks):
            writers[t] = _ShardWriter(task, fs, batch_size)
            n = len(task.coords)
            for start in range(0, n, _UNIT_BLOCKS):
                unit = task.coords[start : start + _UNIT_BLOCKS]
                fut = pool.submit(_encode_rows, source, unit, scale, level)
                window.append((t, start + _UNIT_BLOCKS >= n, fut))
                while len(window) >= max_window:
                    consume()
        while window:
            consume()
        collect_published(0)
    except BaseException:
        for _, _, fut in window:
            fut.cancel()
        for fut in publishing:
            fut.cancel()
        pool.shutdown(wait=True)
        for w in writers.values():
            w.abort()
        raise
    pool.shutdown(wait=True)
    return summaries, skipped, uncompressed


def _run_dask(
    source: BlockSource,
    scale: int,
    tasks: list[_ShardTask],
    batch_size: int,
    level: int,
    fs: fsspec.AbstractFileSystem,
    dask_client: Any,
    bar: Any,
) -> list[tuple[ShardSummary | None, int, int]]:
    func = partial(_export_one_shard, source, scale, batch_size, level, fs)
    if hasattr(dask_client, "map") and hasattr(dask_client, "gather"):
        futures = dask_client.map(func, tasks, pure=False)
        results = []
        for task, fut in zip(tasks, futures, strict=True):
            results.append(fut.result())
            bar.update(len(task.coords))
        return results
    import dask

    delayed = [dask.delayed(func, pure=False)(task) for task in tasks]
    scheduler = dask_client if isinstance(dask_client, str) else None
    results = list(dask.compute(*delayed, scheduler=scheduler))
    bar.update(sum(len(t.coords) for t in tasks))
    return results


def export_shards(
    source: BlockSource,
    spec: VolumeSpec | Mapping[str, Any] | str | os.PathLike,
    dest: str | os.PathLike,
    *,
    scale: int = 0,
    batch_size: int | None = None,
    overwrite: bool = False,
    threads: int | None = None,
    dask_client: Any = None,
    progress: bool = True,
    zstd_level: int = 3,
    storage_options: Mapping[str, Any] | None = None,
) -> ExportReport:
    """Write the blocks of ``source`` at ``scale`` as DVID export-shards Arrow + CSV files.

    Parameters
    ----------
    source : BlockSource
        Gives block coordinates, DVID block bytes (supervoxel ids) and the label mapping.
    spec : VolumeSpec, mapping, JSON text, or path/URL of a JSON file
        Neuroglancer precomputed ``info`` spec that defines the shards (see
        :func:`diced.export.sharding.parse_spec`).
    dest : str or path
        Local directory or fsspec URL; files go to ``<dest>/s<scale>/``.
    scale : int
        Scale level; selects both the spec scale and the source scale.
    batch_size : int, optional
        Rows per Arrow record batch. Default: the spec's top-level ``"batch_size"`` if it has
        one, else 1 (what DVID's RPC uses).
    overwrite : bool
        If ``<dest>/s<scale>`` already holds files, raise unless True; when True, the old
        ``.arrow``/``.csv`` files of that scale are deleted first (files are never appended).
    threads : int, optional
        Worker threads reading and compressing blocks (default ``os.cpu_count()``).
    dask_client : optional
        Run one task per shard on dask instead: a ``distributed.Client`` (anything with
        ``map`` and ``gather``; ``source`` must then be picklable), or a dask scheduler name
        such as ``"threads"`` or ``"processes"`` used with :func:`dask.compute`.
    progress : bool
        Show a tqdm progress bar over blocks.
    zstd_level : int
        zstd level of ``dvid_compressed_block`` (3 ~ Go ``SpeedDefault``). Frames carry the
        content size and a checksum.
    storage_options : mapping, optional
        Passed to fsspec for ``dest`` (and for ``spec`` if it is a path).

    Returns
    -------
    ExportReport

    Notes
    -----
    Rows inside a shard are sorted by compressed Morton code (chunk id). Blocks whose mapped
    labels are all 0 are skipped, and a shard with no rows left writes no files. Each file is
    written to a temporary name (or staged in memory/local disk for remote filesystems) and
    appears whole; a failed export may leave the shards that were already complete.

    Raises
    ------
    FormatError
        The spec is invalid.
    InvalidArgumentError
        Bad arguments, blocks outside the spec's grid, duplicate blocks, or a non-empty
        destination without ``overwrite=True``.
    CorruptDataError
        The source returned bytes that are not DVID blocks.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    opts = dict(storage_options or {})
    vspec = _load_spec(spec, opts)
    if isinstance(scale, bool) or not isinstance(scale, int | np.integer):
        raise InvalidArgumentError(f"scale must be an int, got {scale!r}")
    scale = int(scale)
    sc = vspec.scale(scale)
    if batch_size is None:
        batch_size = vspec.batch_size or 1
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
    if (
        isinstance(zstd_level, bool)
        or not isinstance(zstd_level, int)
        or not -7 <= zstd_level <= 22
    ):
        raise InvalidArgumentError(f"zstd_level must be an int in [-7, 22], got {zstd_level!r}")
    if threads is None:
        threads = os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidArgumentError(f"threads must be a positive int, got {threads!r}")
    if not isinstance(source, BlockSource):
        raise InvalidArgumentError(
            f"source must implement BlockSource, got {type(source).__name__}"
        )

    shape_zyx = tuple(int(s) for s in source.scale_shape(scale))
    if shape_zyx[::-1] != sc.size:
        logger.warning(
            "source scale %d shape (x,y,z) %s differs from spec size %s",
            scale,
            shape_zyx[::-1],
            sc.size,
        )
    coords = _check_block_coords(source.block_coords(scale))
    fs, base = fsspec.core.url_to_fs(os.fspath(dest), **opts)
    root = posixpath.join(base, f"s{scale}") if base else f"s{scale}"
    tasks = _plan(sc, coords, root)
    _prepare_dest(fs, root, overwrite)
    logger.info(
        "exporting %d blocks in %d shards (shard shape %s chunks) to %s",
        len(coords),
        len(tasks),
        sc.shard_shape,
        _display_path(fs, root),
    )

    with tqdm(
        total=len(coords), unit="block", disable=not progress, desc=f"export s{scale}"
    ) as bar:
        if dask_client is not None:
            results = _run_dask(source, scale, tasks, batch_size, zstd_level, fs, dask_client, bar)
            summaries = [r[0] for r in results if r[0] is not None]
            skipped = sum(r[1] for r in results)
            uncompressed = sum(r[2] for r in results)
        else:
            summaries, skipped, uncompressed = _run_threads(
                source, scale, tasks, batch_size, zstd_level, fs, threads, bar
            )

    summaries.sort(key=lambda s: s.shard_number)
    report = ExportReport(
        scale=scale,
        dest=_display_path(fs, root),
        shards=tuple(summaries),
        blocks_written=sum(s.blocks for s in summaries),
        blocks_skipped=skipped,
        bytes_written=sum(s.nbytes + s.csv_nbytes for s in summaries),
        uncompressed_bytes=uncompressed,
        seconds=time.perf_counter() - t0,
    )
    logger.info(
        "exported %d blocks (%d skipped) into %d shards, %d bytes, in %.2f s",
        report.blocks_written,
        report.blocks_skipped,
        report.shards_written,
        report.bytes_written,
        report.seconds,
    )
    return report


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class ShardIndex:
    """A parsed shard CSV index.

    Attributes
    ----------
    format : {"new", "transitional", "old"}
        ``new``: ``x,y,z,offset,size,batch_idx``; ``transitional``: ``x,y,z,rec,offset,size``;
        ``old``: ``x,y,z,rec``. The new format wins when its columns are all present.
    schema_size : int
        From the ``# schema_size=N`` line, else 0.
    coords : ndarray of int64, shape (n, 3)
        Chunk coordinates x, y, z, in file order.
    offsets, sizes : ndarray of int64, shape (n,)
        Byte span of the record-batch message holding each row; -1 in the old format.
    batch_idx : ndarray of int64, shape (n,)
        Row inside that batch (0 when the format has no ``batch_idx``).
    rec : ndarray of int64, shape (n,)
        Record index (-1 when the format has no ``rec``).
    """

    format: Literal["new", "transitional", "old"]
    schema_size: int
    coords: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    batch_idx: np.ndarray
    rec: np.ndarray

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def has_offsets(self) -> bool:
        """True if rows carry byte offsets (new or transitional format)."""
        return self.format != "old"

    def row_of(self) -> dict[tuple[int, int, int], int]:
        """``{(x, y, z): row}``."""
        return {(int(x), int(y), int(z)): i for i, (x, y, z) in enumerate(self.coords)}


def read_shard_index(
    source: str | os.PathLike | bytes, *, storage_options: Mapping[str, Any] | None = None
) -> ShardIndex:
    """Parse a shard ``.csv`` index in the new, transitional or old format (BRAID rules).

    Parameters
    ----------
    source : str, path or bytes
        CSV text (``bytes``, or a ``str`` containing a newline), or a local path / fsspec URL.
    storage_options : mapping, optional
        fsspec options when ``source`` is a URL.

    Raises
    ------
    FormatError
        Unknown header, wrong field counts, or non-integer values.
    """
    if isinstance(source, bytes):
        text = source.decode("utf-8")
    elif isinstance(source, str) and "\n" in source:
        text = source
    else:
        with fsspec.open(os.fspath(source), "rt", **dict(storage_options or {})) as f:
            text = f.read()
    schema_size = 0
    header: list[str] | None = None
    rows: list[list[str]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            body = line[1:].strip()
            if body.startswith("schema_size="):
                try:
                    schema_size = int(body.split("=", 1)[1])
                except ValueError as exc:
                    raise FormatError(f"line {lineno}: bad schema_size {body!r}") from exc
                if schema_size < 0:
                    raise FormatError(f"line {lineno}: negative schema_size")
            continue
        fields = [f.strip() for f in line.split(",")]
        if header is None:
            header = fields
            continue
        if len(fields) != len(header):
            raise FormatError(
                f"line {lineno}: {len(fields)} fields where the header has {len(header)}"
            )
        rows.append(fields)
    if header is None:
        raise FormatError("shard index has no header line")
    cols = {name: i for i, name in enumerate(header)}
    if not {"x", "y", "z"} <= cols.keys():
        raise FormatError(f"shard index header {header} lacks x,y,z columns")
    if {"offset", "size", "batch_idx"} <= cols.keys():
        fmt = "new"
    elif {"rec", "offset", "size"} <= cols.keys():
        fmt = "transitional"
    elif "rec" in cols:
        fmt = "old"
    else:
        raise FormatError(
            f"shard index header {header} is none of x,y,z,offset,size,batch_idx / "
            "x,y,z,rec,offset,size / x,y,z,rec"
        )
    try:
        table = np.array(rows, dtype=np.int64).reshape(len(rows), len(header))
    except ValueError as exc:
        raise FormatError(f"shard index has a non-integer value: {exc}") from exc

    def col(name: str, default: int) -> np.ndarray:
        if name in cols:
            return table[:, cols[name]].copy()
        return np.full(len(rows), default, np.int64)

    index = ShardIndex(
        format=fmt,
        schema_size=schema_size,
        coords=np.ascontiguousarray(table[:, [cols["x"], cols["y"], cols["z"]]]),
        offsets=col("offset", -1) if fmt != "old" else np.full(len(rows), -1, np.int64),
        sizes=col("size", -1) if fmt != "old" else np.full(len(rows), -1, np.int64),
        batch_idx=col("batch_idx", 0),
        rec=col("rec", -1),
    )
    if fmt != "old" and len(rows) and ((index.offsets < 0).any() or (index.sizes <= 0).any()):
        raise FormatError("shard index has negative offsets or non-positive sizes")
    if (index.batch_idx < 0).any():
        raise FormatError("shard index has negative batch_idx values")
    return index


@dataclass(frozen=True)
class ShardRecord:
    """One row of a shard file."""

    chunk: tuple[int, int, int]  #: chunk coordinate x, y, z
    labels: np.ndarray  #: mapped (body) id per label-list entry
    supervoxels: np.ndarray  #: the block's label list
    compressed: bytes  #: zstd frame of the DVID block
    uncompressed_size: int

    def dvid_block(self, labels: Literal["supervoxels", "labels"] = "supervoxels") -> bytes:
        """The DVID block serialization, with body ids in its label list if ``labels="labels"``.

        Raises
        ------
        CorruptDataError
            The frame does not decompress, its size differs from ``uncompressed_size``, or the
            lists do not fit the block's label list.
        """
        try:
            block = zstandard.ZstdDecompressor().decompress(
                self.compressed, max_output_size=_MAX_DECOMPRESSED
            )
        except zstandard.ZstdError as exc:
            raise CorruptDataError(f"chunk {self.chunk}: bad zstd frame: {exc}") from exc
        if len(block) != self.uncompressed_size:
            raise CorruptDataError(
                f"chunk {self.chunk}: block is {len(block)} bytes, "
                f"uncompressed_size says {self.uncompressed_size}"
            )
        if labels == "supervoxels":
            return block
        if labels != "labels":
            raise InvalidArgumentError(f"labels must be 'supervoxels' or 'labels', got {labels!r}")
        table = _label_list(block)
        if len(self.labels) != len(self.supervoxels):
            raise CorruptDataError(
                f"chunk {self.chunk}: {len(self.labels)} labels for "
                f"{len(self.supervoxels)} supervoxels"
            )
        if np.array_equal(table, self.supervoxels):
            mapped = self.labels
        else:  # map the block's entries through the (supervoxel -> label) pairs, like BRAID
            order = np.argsort(self.supervoxels, kind="stable")
            keys = self.supervoxels[order]
            pos = np.minimum(np.searchsorted(keys, table), max(len(keys) - 1, 0))
            hit = keys[pos] == table if len(keys) else np.zeros(len(table), bool)
            mapped = np.where(hit, self.labels[order][pos] if len(keys) else table, table)
        return _with_label_list(block, np.asarray(mapped, dtype=np.uint64))


_REQUIRED_COLUMNS = (
    "chunk_x",
    "chunk_y",
    "chunk_z",
    "labels",
    "supervoxels",
    "dvid_compressed_block",
    "uncompressed_size",
)


def _check_schema(schema: pa.Schema, where: str) -> None:
    missing = [c for c in _REQUIRED_COLUMNS if schema.get_field_index(c) < 0]
    if missing:
        raise FormatError(f"{where}: Arrow schema lacks column(s) {missing}")


def _list_values(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)
    return offsets, values


def _records(batch: pa.RecordBatch) -> list[ShardRecord]:
    xs = batch.column("chunk_x").to_numpy(zero_copy_only=False)
    ys = batch.column("chunk_y").to_numpy(zero_copy_only=False)
    zs = batch.column("chunk_z").to_numpy(zero_copy_only=False)
    lo, lv = _list_values(batch.column("labels"))
    so, sv = _list_values(batch.column("supervoxels"))
    blocks = batch.column("dvid_compressed_block")
    sizes = batch.column("uncompressed_size").to_numpy(zero_copy_only=False)
    return [
        ShardRecord(
            chunk=(int(xs[i]), int(ys[i]), int(zs[i])),
            labels=lv[lo[i] : lo[i + 1]],
            supervoxels=sv[so[i] : so[i + 1]],
            compressed=blocks[i].as_py(),
            uncompressed_size=int(sizes[i]),
        )
        for i in range(batch.num_rows)
    ]


def _iter_batches(fs: fsspec.AbstractFileSystem, path: str, name: str) -> Iterator[pa.RecordBatch]:
    with fs.open(path, "rb") as f:
        try:
            reader = ipc.open_stream(f)
            _check_schema(reader.schema, name)
            yield from reader
        except pa.ArrowInvalid as exc:
            raise CorruptDataError(f"{name}: bad Arrow IPC stream: {exc}") from exc


class ShardFile:
    """One shard (``.arrow`` plus optional ``.csv``), local or at an fsspec URL.

    With a CSV index that has byte offsets and a non-zero ``schema_size`` (what
    :func:`export_shards` writes), :meth:`get` reads only the record batch it needs. Otherwise
    (DVID's own CSVs may say ``schema_size=0``, old-format CSVs, or no CSV at all) the stream
    is read once and indexed by its ``chunk_x/y/z`` columns.

    Parameters
    ----------
    arrow_path : str or path
    csv_path : str or path, optional
        Default: the ``.arrow`` path with ``.csv`` if that file exists.
    storage_options : mapping, optional
        fsspec options.
    """

    def __init__(
        self,
        arrow_path: str | os.PathLike,
        csv_path: str | os.PathLike | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        opts = dict(storage_options or {})
        self._fs, self._path = fsspec.core.url_to_fs(os.fspath(arrow_path), **opts)
        self.name = os.fspath(arrow_path)
        if csv_path is None and self._path.endswith(".arrow"):
            candidate = self._path[: -len(".arrow")] + ".csv"
            if self._fs.exists(candidate):
                csv_path = self._fs.unstrip_protocol(candidate)
        self.index: ShardIndex | None = (
            read_shard_index(csv_path, storage_options=opts) if csv_path is not None else None
        )
        self._ranged = (
            self.index is not None and self.index.has_offsets and self.index.schema_size > 0
        )
        self._schema: pa.Schema | None = None
        self._rows: dict[tuple[int, int, int], int] | None = None
        self._table: pa.Table | None = None
        self._cached: tuple[int, list[ShardRecord]] | None = None
        if self._ranged:
            head = self._fs.cat_file(self._path, start=0, end=self.index.schema_size)
            try:
                self._schema = ipc.read_schema(pa.py_buffer(head))
            except (pa.ArrowInvalid, OSError) as exc:
                raise FormatError(
                    f"{self.name}: first {self.index.schema_size} bytes are not a schema message"
                ) from exc
            _check_schema(self._schema, self.name)
            self._rows = self.index.row_of()

    def __repr__(self) -> str:
        return f"ShardFile({self.name!r}, blocks={len(self)})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop cached data."""
        self._table = None
        self._cached = None

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the stream."""
        if self._schema is None:
            with self._fs.open(self._path, "rb") as f:
                self._schema = ipc.open_stream(f).schema
        return self._schema

    def _load_table(self) -> pa.Table:
        if self._table is None:
            with self._fs.open(self._path, "rb") as f:
                try:
                    table = ipc.open_stream(f).read_all()
                except pa.ArrowInvalid as exc:
                    raise CorruptDataError(f"{self.name}: not an Arrow IPC stream: {exc}") from exc
            _check_schema(table.schema, self.name)
            self._table = table
            xs = table.column("chunk_x").to_numpy()
            ys = table.column("chunk_y").to_numpy()
            zs = table.column("chunk_z").to_numpy()
            self._rows = {
                (int(x), int(y), int(z)): i
                for i, (x, y, z) in enumerate(zip(xs, ys, zs, strict=True))
            }
        return self._table

    @property
    def coords(self) -> np.ndarray:
        """Chunk coordinates ``(n, 3)`` x, y, z (CSV order if indexed, else stream order)."""
        if self.index is not None:
            return self.index.coords
        self._load_table()
        return np.array(list(self._rows), dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else len(self._load_table())

    def __contains__(self, chunk: object) -> bool:
        try:
            key = tuple(int(c) for c in chunk)  # type: ignore[union-attr]
        except TypeError:
            return False
        if self._rows is None:
            if self.index is not None:
                self._rows = self.index.row_of()
            else:
                self._load_table()
        return key in self._rows

    def get(self, x: int, y: int, z: int) -> ShardRecord:
        """The record of chunk ``(x, y, z)``; raises :class:`~diced.errors.NotFoundError`."""
        key = (int(x), int(y), int(z))
        if not self._ranged:
            table = self._load_table()
            row = self._rows.get(key)
            if row is None:
                raise NotFoundError(f"chunk {key} is not in {self.name}")
            return _records(table.slice(row, 1).to_batches()[0])[0]
        row = self._rows.get(key)
        if row is None:
            raise NotFoundError(f"chunk {key} is not in {self.name}")
        offset = int(self.index.offsets[row])
        if self._cached is None or self._cached[0] != offset:
            data = self._fs.cat_file(
                self._path, start=offset, end=offset + int(self.index.sizes[row])
            )
            try:
                batch = ipc.read_record_batch(ipc.read_message(pa.py_buffer(data)), self._schema)
            except (pa.ArrowInvalid, OSError) as exc:
                raise CorruptDataError(
                    f"{self.name}: bytes {offset}+{len(data)} are not a record batch: {exc}"
                ) from exc
            self._cached = (offset, _records(batch))
        records = self._cached[1]
        b = int(self.index.batch_idx[row])
        if b >= len(records) or records[b].chunk != key:
            raise CorruptDataError(f"{self.name}: index row for chunk {key} points elsewhere")
        return records[b]

    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        """Stream the record batches in file order (one batch in memory at a time)."""
        return _iter_batches(self._fs, self._path, self.name)

    def __iter__(self) -> Iterator[ShardRecord]:
        for batch in self.iter_batches():
            yield from _records(batch)


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_shards` did."""

    shards: int
    blocks: int
    seconds: float


def _shard_paths(
    paths_or_dir: str | os.PathLike | Sequence[str | os.PathLike],
    scale: int,
    opts: dict[str, Any],
) -> list[str]:
    if isinstance(paths_or_dir, str | os.PathLike):
        url = os.fspath(paths_or_dir)
        fs, path = fsspec.core.url_to_fs(url, **opts)
        if not fs.isdir(path):
            if not fs.exists(path):
                raise InvalidArgumentError(f"{url!r} does not exist")
            return [url]
        sub = posixpath.join(path.rstrip("/"), f"s{scale}")
        if fs.isdir(sub):
            path = sub
        found = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".arrow"))
        return [fs.unstrip_protocol(p) if not _is_local(fs) else p for p in found]
    return [os.fspath(p) for p in paths_or_dir]


def import_shards(
    paths_or_dir: str | os.PathLike | Sequence[str | os.PathLike],
    sink: BlockSink,
    *,
    scale: int = 0,
    labels: Literal["supervoxels", "labels"] = "supervoxels",
    blocks_per_write: int = 256,
    progress: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> ImportReport:
    """Write the blocks of shard files into ``sink``.

    Parameters
    ----------
    paths_or_dir : path, URL, or sequence of them
        ``.arrow`` files, or a directory holding them directly or under ``s<scale>/``.
    sink : BlockSink
        Receives ``write_dvid_blocks(coords, blocks, scale)`` calls of up to
        ``blocks_per_write`` blocks.
    scale : int
        Passed to the sink, and selects ``s<scale>/`` under a directory.
    labels : {"supervoxels", "labels"}
        Write blocks as stored (supervoxel ids), or with each label-list entry replaced by the
        row's ``labels`` value (body ids; voxels are not touched).
    blocks_per_write : int
    progress : bool
        Show a tqdm progress bar over shards.
    storage_options : mapping, optional

    Returns
    -------
    ImportReport
    """
    from tqdm.auto import tqdm

    if labels not in ("supervoxels", "labels"):
        raise InvalidArgumentError(f"labels must be 'supervoxels' or 'labels', got {labels!r}")
    if isinstance(blocks_per_write, bool) or not isinstance(blocks_per_write, int):
        raise InvalidArgumentError("blocks_per_write must be a positive int")
    if blocks_per_write < 1:
        raise InvalidArgumentError("blocks_per_write must be a positive int")
    if not isinstance(sink, BlockSink):
        raise InvalidArgumentError(f"sink must implement BlockSink, got {type(sink).__name__}")
    t0 = time.perf_counter()
    opts = dict(storage_options or {})
    paths = _shard_paths(paths_or_dir, scale, opts)
    total = 0

    def flush(coords: list[tuple[int, int, int]], blocks: list[bytes]) -> None:
        if blocks:
            sink.write_dvid_blocks(np.array(coords, dtype=np.int64).reshape(-1, 3), blocks, scale)

    for path in tqdm(paths, unit="shard", disable=not progress, desc=f"import s{scale}"):
        coords: list[tuple[int, int, int]] = []
        blocks: list[bytes] = []
        fs, p = fsspec.core.url_to_fs(os.fspath(path), **opts)
        records = (r for b in _iter_batches(fs, p, os.fspath(path)) for r in _records(b))
        for rec in records:
            coords.append(rec.chunk)
            blocks.append(rec.dvid_block(labels))
            if len(blocks) >= blocks_per_write:
                flush(coords, blocks)
                total += len(blocks)
                coords, blocks = [], []
        flush(coords, blocks)
        total += len(blocks)
    return ImportReport(shards=len(paths), blocks=total, seconds=time.perf_counter() - t0)
