"""Reading DVID ``export-shards`` shards for the converter: listing, CSV indexes, records.

Private to :mod:`diced.export.convert_shards`. Records are fetched through the CSV byte
offsets (``pread`` on local files, concurrent range reads on object stores) and handed out as
numpy views of their record batch (no per-row Python objects); a batch is dropped once all its
rows were used. Old-format CSVs (no offsets) load the stream once.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np

from diced.errors import CorruptDataError, FormatError
from diced.export.shard_reader import ShardIndex

__all__ = ["ArrowRecords", "SourceShard", "block_and_table", "list_source", "parse_csv_index",
           "url"]

_STEM = re.compile(r"^(\d+)_(\d+)_(\d+)$")
_MAX_BLOCK_BYTES = 64 << 20  # refuse zstd frames claiming more than this


@dataclass(frozen=True)
class SourceShard:
    scale: int
    stem: str
    origin: tuple[int, int, int]  #: voxel origin from the file name (source coordinates)
    arrow: str  #: path inside the source filesystem
    csv: str | None
    arrow_bytes: int


def url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    from diced.export._ng_shards import _is_local

    return path if _is_local(fs) else fs.unstrip_protocol(path)


def list_source(fs: fsspec.AbstractFileSystem, root: str, scale: int) -> list[SourceShard]:
    d = posixpath.join(root, f"s{scale}")
    try:
        entries = fs.ls(d, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    files = {posixpath.basename(e["name"].rstrip("/")): e for e in entries
             if e.get("type") == "file"}
    out = []
    for name, e in sorted(files.items()):
        if not name.endswith(".arrow"):
            continue
        stem = name[:-len(".arrow")]
        m = _STEM.match(stem)
        if not m:
            raise FormatError(f"{url(fs, e['name'])}: shard file names must be <x>_<y>_<z>.arrow")
        csv = files.get(stem + ".csv")
        out.append(SourceShard(scale, stem, tuple(int(v) for v in m.groups()),
                                e["name"], csv["name"] if csv else None, int(e.get("size") or 0)))
    return out


def parse_csv_index(data: bytes, name: str) -> ShardIndex:
    """Parse a shard CSV index (new, transitional or old format) with pyarrow's CSV reader."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    schema_size = 0
    pos = 0
    while pos < len(data) and data[pos:pos + 1] in (b"#", b"\n", b"\r"):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end + 1
        line = data[pos:end].strip()
        if line.startswith(b"#"):
            body = line[1:].strip()
            if body.startswith(b"schema_size="):
                try:
                    schema_size = int(body.split(b"=", 1)[1])
                except ValueError as exc:
                    raise FormatError(f"{name}: bad schema_size line {line!r}") from exc
        pos = end
    rest = data[pos:]
    if not rest.strip():
        raise FormatError(f"{name}: CSV index has no header line")
    header = rest.split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(",")
    header = [h.strip() for h in header]
    cols = set(header)
    if not {"x", "y", "z"} <= cols:
        raise FormatError(f"{name}: CSV header {header} lacks x,y,z columns")
    if {"offset", "size", "batch_idx"} <= cols:
        fmt = "new"
    elif {"rec", "offset", "size"} <= cols:
        fmt = "transitional"
    elif "rec" in cols:
        fmt = "old"
    else:
        raise FormatError(f"{name}: CSV header {header} is none of x,y,z,offset,size,batch_idx / "
                          "x,y,z,rec,offset,size / x,y,z,rec")
    try:
        table = pacsv.read_csv(
            io.BytesIO(rest),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(column_types={h: pa.int64() for h in header}))
    except (pa.ArrowInvalid, ValueError) as exc:
        raise FormatError(f"{name}: bad CSV index: {exc}") from exc
    n = table.num_rows

    def col(c: str, default: int) -> np.ndarray:
        if c in cols:
            arr = table.column(c)
            if arr.null_count:
                raise FormatError(f"{name}: CSV column {c!r} has empty values")
            return arr.to_numpy().astype(np.int64)
        return np.full(n, default, np.int64)

    coords = np.stack([col("x", 0), col("y", 0), col("z", 0)], axis=1) if n else \
        np.zeros((0, 3), np.int64)
    old = fmt == "old"
    index = ShardIndex(format=fmt, schema_size=schema_size, coords=np.ascontiguousarray(coords),
                       offsets=np.full(n, -1, np.int64) if old else col("offset", -1),
                       sizes=np.full(n, -1, np.int64) if old else col("size", -1),
                       batch_idx=col("batch_idx", 0), rec=col("rec", -1))
    if not old and n and ((index.offsets < 0).any() or (index.sizes <= 0).any()):
        raise FormatError(f"{name}: CSV index has negative offsets or non-positive sizes")
    if n and (index.batch_idx < 0).any():
        raise FormatError(f"{name}: CSV index has negative batch_idx values")
    return index


class BatchArrays:
    """The columns of one record batch as numpy arrays (no per-row Python objects)."""

    __slots__ = ("blk", "blk_off", "lab", "lab_off", "sv", "sv_off", "usize", "xyz")

    def __init__(self, batch: Any) -> None:
        self.xyz = np.stack([batch.column(c).to_numpy(zero_copy_only=False).astype(np.int64)
                             for c in ("chunk_x", "chunk_y", "chunk_z")], axis=1)
        labels = batch.column("labels")
        svs = batch.column("supervoxels")
        self.lab_off = labels.offsets.to_numpy()
        self.lab = labels.values.to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)
        self.sv_off = svs.offsets.to_numpy()
        self.sv = svs.values.to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)
        blocks = batch.column("dvid_compressed_block")
        bufs = blocks.buffers()
        n = len(blocks)
        self.blk_off = np.frombuffer(bufs[1], dtype=np.int32)[blocks.offset:blocks.offset + n + 1]
        self.blk = memoryview(bufs[2]) if bufs[2] is not None else memoryview(b"")
        self.usize = batch.column("uncompressed_size").to_numpy(zero_copy_only=False)


class ArrowRecords:
    """Records of one DVID shard file, fetched through the CSV byte offsets.

    ``fetch(rows)`` returns the decoded batches holding those CSV rows; a batch is dropped
    once all its rows were handed out. Old-format CSVs (no offsets) load the stream once.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, shard: SourceShard, index: ShardIndex,
                 name: str) -> None:
        from pyarrow import ipc

        from diced.export.shard_reader import _check_schema

        self.fs = fs
        self.shard = shard
        self.index = index
        self.name = name
        from diced.export._ng_shards import _is_local

        self._local = _is_local(fs)
        self._fh = open(shard.arrow, "rb") if self._local else None  # noqa: SIM115
        self._table_rows: dict[tuple[int, int, int], tuple[int, int]] | None = None
        self._batches: dict[int, BatchArrays] = {}
        self._refs: dict[int, int] = {}
        if index.has_offsets:
            if index.schema_size > 0:
                head = self._read(0, index.schema_size)
                try:
                    import pyarrow as pa

                    self.schema = ipc.read_schema(pa.py_buffer(head))
                except Exception as exc:
                    raise FormatError(f"{name}: the first {index.schema_size} bytes (the CSV's "
                                      "schema_size) are not an Arrow schema message") from exc
            else:
                with fs.open(shard.arrow, "rb") as f:
                    try:
                        self.schema = ipc.open_stream(f).schema
                    except Exception as exc:
                        raise CorruptDataError(f"{name}: not an Arrow IPC stream: {exc}") from exc
            _check_schema(self.schema, name)
            for off in index.offsets:
                self._refs[int(off)] = self._refs.get(int(off), 0) + 1
        else:
            self._load_all()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._batches.clear()

    def _read(self, start: int, size: int) -> bytes:
        if self._fh is not None:
            data = os.pread(self._fh.fileno(), size, start)
        else:
            data = self.fs.cat_file(self.shard.arrow, start=start, end=start + size)
        if len(data) != size:
            raise CorruptDataError(f"{self.name}: truncated: {size} bytes wanted at offset "
                                   f"{start}, {len(data)} read")
        return data

    def _load_all(self) -> None:
        import pyarrow as pa
        from pyarrow import ipc

        from diced.export.shard_reader import _check_schema

        with self.fs.open(self.shard.arrow, "rb") as f:
            try:
                reader = ipc.open_stream(f)
                _check_schema(reader.schema, self.name)
                batches = list(reader)
            except pa.ArrowInvalid as exc:
                raise CorruptDataError(f"{self.name}: bad Arrow IPC stream: {exc}") from exc
        self._table_rows = {}
        for b, batch in enumerate(batches):
            arrays = BatchArrays(batch)
            self._batches[b] = arrays
            for r, xyz in enumerate(arrays.xyz):
                self._table_rows[(int(xyz[0]), int(xyz[1]), int(xyz[2]))] = (b, r)
        csv = {tuple(int(v) for v in c) for c in self.index.coords}
        if set(self._table_rows) != csv:
            extra = set(self._table_rows) ^ csv
            raise CorruptDataError(f"{self.name}: the CSV index and the Arrow file list different "
                                   f"chunks, e.g. {min(extra)}")

    def _decode(self, data: bytes) -> BatchArrays:
        import pyarrow as pa
        from pyarrow import ipc

        try:
            reader = ipc.MessageReader.open_stream(pa.BufferReader(data))
            msg = reader.read_next_message()
            if msg is not None and msg.type == "schema":  # DVID's schema_size=0 first row
                msg = reader.read_next_message()
            if msg is None or msg.type != "record batch":
                raise CorruptDataError(f"{self.name}: CSV offset does not point at a record batch")
            return BatchArrays(ipc.read_record_batch(msg, self.schema))
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorruptDataError(f"{self.name}: the CSV offsets do not point at Arrow record "
                                   f"batches: {exc}") from exc

    def rows(self, rows: np.ndarray) -> list[tuple[BatchArrays, int]]:
        """``(batch, row in batch)`` for each CSV row in ``rows``, checked against the CSV."""
        idx = self.index
        out: list[tuple[BatchArrays, int]] = []
        if self._table_rows is not None:
            for r in rows:
                b, i = self._table_rows[tuple(int(v) for v in idx.coords[r])]
                out.append((self._batches[b], i))
            return out
        need = sorted({int(idx.offsets[r]) for r in rows} - set(self._batches))
        if need:
            sizes = {int(idx.offsets[r]): int(idx.sizes[r]) for r in rows}
            if self._local:
                datas = [self._read(o, sizes[o]) for o in need]
            else:
                datas = list(self.fs.cat_ranges([self.shard.arrow] * len(need), need,
                                                [o + sizes[o] for o in need]))
                for o, d in zip(need, datas, strict=True):
                    if len(d) != sizes[o]:
                        raise CorruptDataError(f"{self.name}: truncated at offset {o}")
            for o, d in zip(need, datas, strict=True):
                self._batches[o] = self._decode(d)
        for r in rows:
            o = int(idx.offsets[r])
            batch = self._batches[o]
            i = int(idx.batch_idx[r])
            if i >= len(batch.xyz) or not np.array_equal(batch.xyz[i], idx.coords[r]):
                got = tuple(batch.xyz[i].tolist()) if i < len(batch.xyz) else None
                raise CorruptDataError(
                    f"{self.name}: the CSV disagrees with the Arrow file: row for chunk "
                    f"{tuple(idx.coords[r].tolist())} points at offset {o} row {i}, which holds "
                    f"{'no record' if got is None else f'chunk {got}'}")
            out.append((batch, i))
            self._refs[o] -= 1
        for o in [o for o in self._batches if self._refs.get(o, 1) <= 0]:
            del self._batches[o]
        return out


def block_and_table(batch: BatchArrays, i: int, supervoxels: bool, name: str,
                     dctx: Any) -> tuple[np.ndarray, np.ndarray]:
    """The uncompressed DVID block (uint8) and the label for each entry of its label list."""
    import zstandard

    frame = batch.blk[int(batch.blk_off[i]):int(batch.blk_off[i + 1])]
    chunk = tuple(batch.xyz[i].tolist())
    try:
        block = dctx.decompress(frame, max_output_size=_MAX_BLOCK_BYTES)
    except zstandard.ZstdError as exc:
        raise CorruptDataError(f"{name}: chunk {chunk}: bad zstd frame: {exc}") from exc
    if len(block) != int(batch.usize[i]):
        raise CorruptDataError(f"{name}: chunk {chunk}: block is {len(block)} bytes, "
                               f"uncompressed_size says {int(batch.usize[i])}")
    buf = np.frombuffer(block, dtype=np.uint8)
    if len(buf) < 16:
        raise CorruptDataError(f"{name}: chunk {chunk}: DVID block shorter than its header")
    n = int(buf[12:16].view("<u4")[0])
    if len(buf) < 16 + 8 * n:
        raise CorruptDataError(f"{name}: chunk {chunk}: DVID block truncated in its label list")
    own = buf[16:16 + 8 * n].view("<u8")
    if supervoxels:
        return buf, own.astype(np.uint64)
    svs = batch.sv[batch.sv_off[i]:batch.sv_off[i + 1]]
    labels = batch.lab[batch.lab_off[i]:batch.lab_off[i + 1]]
    if len(labels) != len(svs):
        raise CorruptDataError(f"{name}: chunk {chunk}: {len(labels)} labels for "
                               f"{len(svs)} supervoxels")
    if len(svs) == n and np.array_equal(own, svs):
        return buf, labels
    from diced.export._shard_kernels import map_sorted

    order = np.argsort(svs, kind="stable")
    return buf, map_sorted(own.astype(np.uint64), svs[order], labels[order])
