"""Reading DVID ``export-shards`` files: CSV indexes, shard streams, and import into a sink.

The format is described in :mod:`diced.export.arrow_shards`, which writes it.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

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
from diced.export._shard_common import BlockSink, _is_local, _label_list, _with_label_list

__all__ = [
    "ImportReport",
    "ShardFile",
    "ShardIndex",
    "ShardRecord",
    "import_shards",
    "read_shard_index",
]

_MAX_DECOMPRESSED = 1 << 30  # refuse zstd frames claiming more than this


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
