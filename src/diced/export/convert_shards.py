"""Convert a DVID ``export-shards`` export into a sharded neuroglancer precomputed volume.

SOURCE is a DVID export directory (``s0/``, ``s1/``, ... of ``<x>_<y>_<z>.arrow`` + ``.csv``
files, see :mod:`diced.export.arrow_shards`); DEST is a neuroglancer precomputed volume. Both
may be any fsspec URL. The neuroglancer ``info`` spec (the one DVID's export used) decides
the chunk grid, the shards and the encodings, and is written to ``DEST/info``.

Direct path (a scale exported by DVID)
    Each DVID shard becomes exactly the one neuroglancer shard file its chunks map to. Before
    anything is written every shard is checked (its CSV index is read, all its chunks must lie
    in the spec's grid and map to the shard its file name says, the Arrow file must be as long
    as the CSV says); a mismatched export is refused with an error naming the file. A worker
    then reads the records it needs through the CSV byte offsets, in (minishard, chunk id)
    order, and transcodes each DVID block straight into a ``compressed_segmentation`` chunk
    (:mod:`diced.export._convert_kernels`; no uint64 voxels are materialised) after mapping its
    label list to bodies (the record's ``labels`` column, unless ``supervoxels=True``). The
    shard file is written in one streaming pass (:mod:`diced.export._ng_shards`): no
    read-modify-write, and a memory footprint of a few MiB whatever the shard size.

Downres path (``downres=[n, ...]``)
    Scale *n* is made from scale *n - 1* of the output, shard by shard: each output chunk is
    the DVID 2x majority vote (most frequent non-zero label, ties to the smallest) of its 8
    children, read with range reads from the scale *n - 1* shard files.

``z_compress=N`` keeps every (N+1)-th z slice of scale 0 (for exports of z-doubled volumes);
SPEC is then the native-z output spec, whose scale 0 chunk depth may be 64 / (N+1) (one block
per chunk) or a multiple of it (blocks merged).

Parallelism and resumption: one task per shard, run on dask (``scheduler="threads"`` or
``"processes"``, or a ``dask.distributed`` client); shards are grouped into tiers by their
estimated peak memory so that concurrently running tasks stay inside ``memory_limit``. Every
shard file is published whole (temporary name + rename locally, a single PUT on object
stores), so ``only_missing=True`` completes an interrupted conversion and a killed worker
leaves no partial shard. :func:`verify_export` proves a conversion complete.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np

from diced.errors import (
    ConversionError,
    CorruptDataError,
    DicedError,
    FormatError,
    InvalidArgumentError,
    NotFoundError,
)
from diced.export._dvid_source import ArrowRecords as _ArrowRecords
from diced.export._dvid_source import SourceShard as _SourceShard
from diced.export._dvid_source import block_and_table as _block_and_table
from diced.export._dvid_source import list_source as _list_source
from diced.export._dvid_source import parse_csv_index
from diced.export._dvid_source import url as _url
from diced.export.shard_reader import ShardIndex
from diced.export.sharding import ShardedScale, parse_spec

if TYPE_CHECKING:  # resolved lazily by __getattr__ at the end of this module
    from diced.export._verify import VerifyReport, VerifyScale, verify_export

__all__ = [
    "ConversionError",
    "ConvertReport",
    "ScaleSummary",
    "ShardFailure",
    "VerifyReport",
    "VerifyScale",
    "convert_shards",
    "verify_export",
]

logger = logging.getLogger(__name__)

_NG_SHARD = re.compile(r"^[0-9a-f]+\.shard$")
_BLOCK = 64
_WINDOW_ROWS = 256  # records fetched and encoded per step of a shard
_BASE_TASK_BYTES = 16 << 20  # per-task working set besides what scales with the shard


# ---------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class _OutScale:
    """One scale of the output volume: sharding geometry plus chunk encoding."""

    sc: ShardedScale
    encoding: str
    block_size: tuple[int, int, int]

    @property
    def index(self) -> int:
        return self.sc.index

    @property
    def key(self) -> str:
        return self.sc.key

    def chunk_shape(self, coords: np.ndarray) -> np.ndarray:
        """Clipped (x, y, z) shape of each output chunk ``(n, 3)``."""
        cs = np.asarray(self.sc.chunk_size, dtype=np.int64)
        size = np.asarray(self.sc.size, dtype=np.int64)
        return np.minimum(cs, size - coords * cs)

    def transcodable(self) -> bool:
        return (self.encoding == "compressed_segmentation" and self.block_size == (8, 8, 8)
                and self.sc.chunk_size == (64, 64, 64))


def _load_spec_obj(spec: Any, opts: Mapping[str, Any]) -> tuple[dict, str | None]:
    """The spec as a dict, and its path if it was given as one (for retry commands)."""
    if isinstance(spec, Mapping):
        return dict(spec), None
    if isinstance(spec, bytes) or (isinstance(spec, str) and spec.lstrip().startswith("{")):
        try:
            return json.loads(spec), None
        except ValueError as exc:
            raise FormatError(f"spec is not valid JSON: {exc}") from exc
    if isinstance(spec, str | os.PathLike):
        path = os.fspath(spec)
        try:
            with fsspec.open(path, "rb", **dict(opts)) as f:
                text = f.read()
        except FileNotFoundError as exc:
            raise NotFoundError(f"spec file {path!r} not found") from exc
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise FormatError(f"spec {path}: not valid JSON: {exc}") from exc
        return obj, path
    raise InvalidArgumentError(
        f"spec must be a mapping, JSON text or a path, got {type(spec).__name__}")


def _output_scales(obj: Mapping[str, Any]) -> list[_OutScale]:
    """Parse the spec, allowing output chunk sizes other than 64^3 (z-compressed scale 0)."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("scales"), list):
        raise FormatError("spec must be a JSON object with a 'scales' list")
    patched = dict(obj)
    sizes = []
    for i, s in enumerate(obj["scales"]):
        cs = s.get("chunk_sizes") if isinstance(s, Mapping) else None
        if (not isinstance(cs, list) or not cs or not isinstance(cs[0], list | tuple)
                or len(cs[0]) != 3 or not all(isinstance(v, int) and v > 0 for v in cs[0])):
            raise FormatError(f"scales[{i}]: field 'chunk_sizes' must start with 3 positive "
                              f"integers, got {cs!r}")
        sizes.append(tuple(int(v) for v in cs[0]))
    patched["scales"] = [dict(s, chunk_sizes=[[64, 64, 64]]) for s in obj["scales"]]
    vspec = parse_spec(patched)
    out = []
    for i, (sc, cs) in enumerate(zip(vspec.scales, sizes, strict=True)):
        sc = replace(sc, chunk_size=cs)
        if sc.total_bits > sc.preshift_bits + sc.minishard_bits + sc.shard_bits:
            raise FormatError(f"scales[{i}].sharding: preshift + minishard + shard bits are fewer "
                              f"than the {sc.total_bits} chunk-id bits of grid {sc.grid}")
        raw = obj["scales"][i]
        enc = sc.encoding
        if enc not in ("compressed_segmentation", "raw"):
            raise FormatError(f"scales[{i}]: encoding {enc!r} is not supported for labels "
                              "(use compressed_segmentation or raw)")
        bs = raw.get("compressed_segmentation_block_size", [8, 8, 8])
        if (not isinstance(bs, list | tuple) or len(bs) != 3
                or not all(isinstance(v, int) and v > 0 for v in bs)):
            raise FormatError(f"scales[{i}]: bad compressed_segmentation_block_size {bs!r}")
        out.append(_OutScale(sc, enc, tuple(int(v) for v in bs)))
    return out


def _info_json(obj: Mapping[str, Any]) -> dict:
    """The ``info`` written to DEST: the spec minus DVID-only members, plus the defaults
    neuroglancer readers require (``compressed_segmentation_block_size``)."""
    info = {k: v for k, v in obj.items() if k != "batch_size"}
    info.setdefault("@type", "neuroglancer_multiscale_volume")
    scales = []
    for sc in info["scales"]:
        sc = dict(sc)
        if sc.get("encoding", "compressed_segmentation") == "compressed_segmentation":
            sc.setdefault("encoding", "compressed_segmentation")
            sc.setdefault("compressed_segmentation_block_size", [8, 8, 8])
        scales.append(sc)
    info["scales"] = scales
    return info


def _span(sc: ShardedScale) -> np.ndarray:
    return np.asarray(sc._shard_span, dtype=np.int64)


def _shard_origin_chunk(sc: ShardedScale, number: int) -> np.ndarray:
    """First chunk (x, y, z) of shard ``number``."""
    from diced.export._convert_kernels import morton_decode

    pm = sc.preshift_bits + sc.minishard_bits
    code = int(number) << pm if pm < 64 else 0
    if code >= 1 << 64:
        raise InvalidArgumentError(f"shard {number} does not exist at scale {sc.index}")
    return morton_decode(np.array([code], np.uint64), np.asarray(sc.bits, np.int64))[0]


# ---------------------------------------------------------------------------------------------
# Reports


@dataclass(frozen=True)
class ShardFailure:
    """A shard that could not be converted or verified."""

    scale: int
    shard: str  #: the DVID shard stem, or the output shard file name for downres shards
    output: str  #: output shard file (relative to DEST)
    reason: str
    retry: str  #: the command that retries it


@dataclass
class ScaleSummary:
    """What happened at one scale."""

    scale: int
    mode: str  #: ``"direct"`` or ``"downres"``
    shards: int = 0  #: shard files written
    skipped: int = 0  #: already present (``only_missing``)
    failed: int = 0
    chunks: int = 0
    bytes: int = 0
    seconds: float = 0.0
    planned: int = 0  #: shards planned (what a dry run reports)
    tiers: dict[int, int] = field(default_factory=dict)  #: concurrency -> shards in that tier


@dataclass
class ConvertReport:
    """What :func:`convert_shards` did (or would do, for a dry run)."""

    dest: str
    scales: list[ScaleSummary]
    failures: list[ShardFailure]
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every planned shard was written (no failures)."""
        return not self.failures

    def to_dict(self) -> dict:
        """The report as a JSON-ready dict."""
        return asdict(self)

    def summary(self) -> str:
        """A per-scale table, then the failures with their retry commands."""
        lines = [(f"{'scale':>5} {'mode':>8} {'planned':>8} {'written':>8} {'skipped':>8} "
                  f"{'failed':>7} {'chunks':>10} {'MB':>10} {'seconds':>8}")]
        for s in self.scales:
            lines.append(f"{s.scale:>5} {s.mode:>8} {s.planned:>8} {s.shards:>8} {s.skipped:>8} "
                         f"{s.failed:>7} {s.chunks:>10} {s.bytes / 1e6:>10.1f} "
                         f"{s.seconds:>8.1f}")
        lines.extend(_failure_lines(self.failures))
        return "\n".join(lines)


def _conversion_error(report: ConvertReport) -> ConversionError:
    reasons = "; ".join(f"s{f.scale} {f.shard}: {f.reason}" for f in report.failures[:5])
    more = len(report.failures) - 5
    return ConversionError(f"{len(report.failures)} shard(s) failed: {reasons}"
                           + (f"; and {more} more" if more > 0 else ""), report)


# ---------------------------------------------------------------------------------------------
# The source: shard listing, CSV indexes and record access


# ---------------------------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True)
class _Common:
    """What every task of one run shares (picklable)."""

    source: str
    dest: str
    storage_options: dict
    dest_options: dict
    supervoxels: bool
    gzip_level: int
    tmp_dir: str | None


@dataclass(frozen=True)
class _DirectTask:
    common: _Common
    out: _OutScale
    shard: _SourceShard
    number: int  #: output shard number
    chunks: int
    stride: int  #: z stride (z_compress + 1) at this scale
    est_bytes: int

    @property
    def label(self) -> str:
        return self.shard.stem

    @property
    def output(self) -> str:
        return posixpath.join(self.out.key, self.out.sc.shard_file_name(self.number))


def _failure_lines(failures: Sequence[Any]) -> list[str]:
    """Report lines for failed shards (``scale``, ``shard``, ``output``, ``reason``), then
    the distinct commands that retry them."""
    lines = [f"FAILED s{f.scale} {f.shard} -> {f.output}: {f.reason}" for f in failures]
    if failures:
        lines.append("retry with:")
        lines.extend(f"  {cmd}" for cmd in dict.fromkeys(f.retry for f in failures))
    return lines


@dataclass(frozen=True)
class _DownresTask:
    common: _Common
    out: _OutScale
    prev: _OutScale
    number: int
    children: tuple[int, ...]  #: shard numbers at the previous scale
    est_bytes: int

    @property
    def label(self) -> str:
        return self.out.sc.shard_file_name(self.number)

    @property
    def output(self) -> str:
        return posixpath.join(self.out.key, self.out.sc.shard_file_name(self.number))


@dataclass(frozen=True)
class _Result:
    scale: int
    label: str
    output: str
    chunks: int = 0
    nbytes: int = 0
    seconds: float = 0.0
    error: str | None = None


def _fs(url: str, opts: Mapping[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url, **dict(opts))
    return fs, path.rstrip("/")


def _output_chunks(shard: _SourceShard, coords: np.ndarray, out: _OutScale, stride: int,
                   name: str) -> np.ndarray:
    """Output chunk (x, y, z) of each source chunk; checks the grid."""
    if len(coords) and (coords < 0).any():
        raise FormatError(f"{name}: negative chunk coordinates in the CSV index")
    oc = coords.copy()
    cz = out.sc.chunk_size[2]
    oc[:, 2] = (coords[:, 2] * (_BLOCK // stride)) // cz
    if len(oc):
        bad = ~out.sc.contains(oc)
        if bad.any():
            c = tuple(coords[np.argmax(bad)].tolist())
            raise FormatError(f"{name}: chunk {c} lies outside the spec's scale {out.index} "
                              f"grid {out.sc.grid} (size {out.sc.size}); the spec does not "
                              "match this export")
    return oc


def _check_source_shard(fs: fsspec.AbstractFileSystem, shard: _SourceShard, out: _OutScale,
                        stride: int) -> tuple[ShardIndex, np.ndarray, int]:
    """Validate one DVID shard against the spec (the seed's ``validate-dvid``, on every chunk).

    Returns the CSV index, the output chunk of each row and the output shard number.
    """
    name = _url(fs, shard.arrow)
    if shard.csv is None:
        raise NotFoundError(f"{name}: no CSV index ({shard.stem}.csv) next to it")
    index = parse_csv_index(fs.cat_file(shard.csv), _url(fs, shard.csv))
    ox, oy, oz = shard.origin
    origin = np.array([[ox // _BLOCK, oy // _BLOCK, (oz // stride) // out.sc.chunk_size[2]]])
    if not out.sc.contains(origin).all():
        raise FormatError(f"{name}: the shard origin {shard.origin} lies outside the spec's "
                          f"scale {out.index} grid {out.sc.grid}; the spec does not match")
    expected = int(out.sc.shard_numbers(origin)[0])
    oc = _output_chunks(shard, index.coords, out, stride, name)
    if len(oc):
        numbers = out.sc.shard_numbers(oc)
        bad = numbers != expected
        if bad.any():
            k = int(np.argmax(bad))
            raise FormatError(
                f"{name}: chunk {tuple(index.coords[k].tolist())} maps to neuroglancer shard "
                f"{out.sc.shard_file_name(int(numbers[k]))}, but the shard's name maps to "
                f"{out.sc.shard_file_name(expected)}; {int(bad.sum())} of {len(oc)} chunks "
                "disagree (mismatched export or spec)")
        uniq = np.unique(index.coords, axis=0)
        if len(uniq) != len(index.coords):
            raise FormatError(f"{name}: the CSV index lists a chunk twice")
    if index.has_offsets and len(index):
        end = int((index.offsets + index.sizes).max())
        size = shard.arrow_bytes or fs.size(shard.arrow)
        if size < end:
            raise CorruptDataError(f"{name}: truncated: {size} bytes, but the CSV index has a "
                                   f"record ending at byte {end}")
        if size > end + 8:
            raise CorruptDataError(f"{name}: {size - end} bytes after the last record the CSV "
                                   "indexes: the CSV does not match the Arrow file")
    return index, oc, expected


def _estimate_direct(shard: _SourceShard, chunks: int, has_offsets: bool) -> int:
    per_record = shard.arrow_bytes / max(chunks, 1)
    window = int(min(chunks, _WINDOW_ROWS) * per_record * 12)  # compressed + block + cseg
    est = _BASE_TASK_BYTES + 400 * chunks + window
    if not has_offsets:
        est += 2 * shard.arrow_bytes  # old-format CSVs load the whole stream
    return est


class _Encoder:
    """Per-thread scratch for encoding output chunks."""

    def __init__(self, out: _OutScale) -> None:
        from diced.export._convert_kernels import max_cseg_words

        self.out = out
        self.words = np.empty(max_cseg_words(64, 64, 64), np.uint32)
        self.vox = np.empty(64 ** 3, np.uint64)


def _convert_direct(task: _DirectTask) -> _Result:
    """Convert one DVID shard into its neuroglancer shard file (the unit of work)."""
    t0 = time.perf_counter()
    try:
        nchunks, nbytes = _convert_direct_inner(task)
    except Exception as exc:  # reported per shard; the run goes on
        logger.debug("shard %s failed", task.label, exc_info=True)
        return _Result(task.out.index, task.label, task.output, error=_reason(exc),
                       seconds=time.perf_counter() - t0)
    return _Result(task.out.index, task.label, task.output, nchunks, nbytes,
                   time.perf_counter() - t0)


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, DicedError) else f"{type(exc).__name__}: {exc}"


def _convert_direct_inner(task: _DirectTask) -> tuple[int, int]:
    import zstandard

    from diced.export import _convert_kernels as K
    from diced.export._ng_shards import ShardFileWriter, encode_chunk

    c = task.common
    sfs, _ = _fs(c.source, c.storage_options)
    dfs, droot = _fs(c.dest, c.dest_options)
    out = task.out
    sc = out.sc
    index, oc, number = _check_source_shard(sfs, task.shard, out, task.stride)
    if number != task.number:
        raise FormatError(f"{task.label}: shard number changed since planning")
    name = _url(sfs, task.shard.arrow)
    if not len(oc):
        return 0, 0
    # output chunks in (minishard, chunk id) order; rows grouped per output chunk
    ids = sc.chunk_ids(oc)
    minis = sc.minishard_numbers(oc)
    order = np.lexsort((index.coords[:, 2], ids, minis))
    ids_o, minis_o = ids[order], minis[order]
    starts = np.flatnonzero(np.r_[True, ids_o[1:] != ids_o[:-1]])
    bounds = np.r_[starts, len(order)]
    shapes = out.chunk_shape(oc[order[starts]])
    direct = out.transcodable() and task.stride == 1
    records = _ArrowRecords(sfs, task.shard, index, name)
    writer = ShardFileWriter(dfs, posixpath.join(droot, task.output), sc.minishard_bits,
                             sc.minishard_index_encoding, sc.data_encoding, c.gzip_level,
                             c.tmp_dir)
    enc = _Encoder(out)
    dctx = zstandard.ZstdDecompressor()
    czo = sc.chunk_size[2]
    zper = _BLOCK // task.stride
    try:
        g = 0
        ngroups = len(starts)
        while g < ngroups:
            g_end = g
            while g_end < ngroups and bounds[g_end] - bounds[g] < _WINDOW_ROWS:
                g_end += 1
            g_end = max(g_end, g + 1)
            rows = order[bounds[g]:bounds[g_end]]
            fetched = records.rows(rows)
            k = 0
            for gi in range(g, g_end):
                nrows = int(bounds[gi + 1] - bounds[gi])
                sx, sy, sz = (int(v) for v in shapes[gi])
                if direct:
                    batch, i = fetched[k]
                    buf, table = _block_and_table(batch, i, c.supervoxels, name, dctx)
                    err, det, nw = K.dvid_to_cseg(buf, table, sx, sy, sz, enc.words)
                    if err != 0:
                        _raise_block(err, det, name, batch.xyz[i])
                    data = enc.words[:nw].tobytes()
                else:
                    vol = np.zeros((czo, 64, 64), np.uint64)
                    oz0 = int(oc[order[bounds[gi]], 2]) * czo
                    for r in range(nrows):
                        batch, i = fetched[k + r]
                        buf, table = _block_and_table(batch, i, c.supervoxels, name, dctx)
                        err, det = K.decode_block_into(buf, table, enc.vox)
                        if err != 0:
                            _raise_block(err, det, name, batch.xyz[i])
                        z0 = int(batch.xyz[i, 2]) * zper - oz0
                        vol[z0:z0 + zper] = enc.vox.reshape(64, 64, 64)[::task.stride]
                    data = encode_chunk(vol[:sz, :sy, :sx], out.encoding, out.block_size)
                writer.add(int(ids_o[bounds[gi]]), int(minis_o[bounds[gi]]), data)
                k += nrows
            g = g_end
        nbytes = writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        records.close()
    return writer.chunks, nbytes


def _raise_block(err: int, detail: int, name: str, xyz: np.ndarray) -> None:
    from diced.array.codecs.labelblock import _ERRORS
    from diced.export import _convert_kernels as K

    msg = {K.ERR_NOT_64: "block is not 64x64x64"}.get(err) or _ERRORS.get(err, f"error {err}")
    raise CorruptDataError(f"{name}: chunk {tuple(int(v) for v in xyz)}: corrupt DVID block: "
                           f"{msg} (sub-block {detail})")


# -- downres -----------------------------------------------------------------------------------


def _child_index(fs: fsspec.AbstractFileSystem, root: str, prev: _OutScale,
                 number: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from diced.export._convert_kernels import morton_decode
    from diced.export._ng_shards import read_shard_index

    sc = prev.sc
    path = posixpath.join(root, prev.key, sc.shard_file_name(number))
    ids, starts, sizes = read_shard_index(fs, path, sc.minishard_bits,
                                          sc.minishard_index_encoding)
    coords = morton_decode(ids, np.asarray(sc.bits, np.int64))
    return path, ids, coords, starts, sizes


def _convert_downres(task: _DownresTask) -> _Result:
    t0 = time.perf_counter()
    try:
        nchunks, nbytes = _convert_downres_inner(task)
    except Exception as exc:
        logger.debug("downres shard %s failed", task.label, exc_info=True)
        return _Result(task.out.index, task.label, task.output, error=_reason(exc),
                       seconds=time.perf_counter() - t0)
    return _Result(task.out.index, task.label, task.output, nchunks, nbytes,
                   time.perf_counter() - t0)


def _convert_downres_inner(task: _DownresTask) -> tuple[int, int]:
    from diced.array._downres_kernels import downsample_labels
    from diced.export._ng_shards import (
        ShardFileWriter,
        decode_chunk,
        encode_chunk,
        read_chunks,
    )

    c = task.common
    dfs, droot = _fs(c.dest, c.dest_options)
    out, prev = task.out, task.prev
    sc, pc = out.sc, prev.sc
    where: dict[int, tuple[str, int, int]] = {}  # child chunk id -> (path, start, size)
    parents = []
    for child in task.children:
        path, ids, coords, starts, sizes = _child_index(dfs, droot, prev, child)
        if not len(ids):
            continue
        par = coords // 2
        mine = sc.shard_numbers(par) == task.number
        for cid, s, n in zip(ids[mine].tolist(), starts[mine].tolist(), sizes[mine].tolist(),
                             strict=True):
            where[cid] = (path, s, n)
        parents.append(par[mine])
    if not parents or not sum(len(p) for p in parents):
        return 0, 0
    par = np.unique(np.concatenate(parents), axis=0)
    ids = sc.chunk_ids(par)
    minis = sc.minishard_numbers(par)
    order = np.lexsort((ids, minis))
    par, ids, minis = par[order], ids[order], minis[order]
    shapes = out.chunk_shape(par)
    ccs = np.asarray(pc.chunk_size, np.int64)
    writer = ShardFileWriter(dfs, posixpath.join(droot, task.output), sc.minishard_bits,
                             sc.minishard_index_encoding, sc.data_encoding, c.gzip_level,
                             c.tmp_dir)
    octs = np.array([(dx, dy, dz) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)], np.int64)
    try:
        step = 64
        for g in range(0, len(par), step):
            block = par[g:g + step]
            kids = (block[:, None, :] * 2 + octs[None, :, :]).reshape(-1, 3)
            inside = pc.contains(kids)
            kid_ids = np.zeros(len(kids), np.uint64)
            kid_ids[inside] = pc.chunk_ids(kids[inside])
            wanted: dict[str, list[int]] = {}
            for k in np.flatnonzero(inside):
                hit = where.get(int(kid_ids[k]))
                if hit is not None:
                    wanted.setdefault(hit[0], []).append(int(k))
            datas: dict[int, bytes] = {}
            for path, ks in wanted.items():
                got = read_chunks(dfs, path, [where[int(kid_ids[k])][1] for k in ks],
                                  [where[int(kid_ids[k])][2] for k in ks])
                datas.update(zip(ks, got, strict=True))
            for j in range(len(block)):
                src = np.zeros((2 * ccs[2], 2 * ccs[1], 2 * ccs[0]), np.uint64)
                for o in range(8):
                    k = j * 8 + o
                    data = datas.get(k)
                    if data is None:
                        continue
                    if pc.data_encoding == "gzip":
                        from diced.export._ng_shards import gunzip_bytes

                        data = gunzip_bytes(data, f"scale {pc.index} chunk {kids[k].tolist()}")
                    kshape = prev.chunk_shape(kids[k][None])[0]
                    arr = decode_chunk(data, kshape, prev.encoding, prev.block_size,
                                       f"scale {pc.index} chunk {tuple(kids[k].tolist())}")
                    dx, dy, dz = (octs[o] * ccs).tolist()
                    src[dz:dz + arr.shape[0], dy:dy + arr.shape[1], dx:dx + arr.shape[2]] = arr
                lo = np.empty((ccs[2], ccs[1], ccs[0]), np.uint64)
                downsample_labels(src, lo)
                sx, sy, sz = (int(v) for v in shapes[g + j])
                writer.add(int(ids[g + j]), int(minis[g + j]),
                           encode_chunk(lo[:sz, :sy, :sx], out.encoding, out.block_size))
        nbytes = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return writer.chunks, nbytes


# ---------------------------------------------------------------------------------------------
# Planning


def _plan_direct(common: _Common, sfs: fsspec.AbstractFileSystem, sroot: str, out: _OutScale,
                 stride: int, shards_filter: set[str] | None, threads: int,
                 existing: set[str]) -> tuple[list[_DirectTask], int]:
    """Validate every DVID shard of one scale and make one task per shard.

    Returns the tasks still to run and how many were skipped as already present.
    """
    shards = _list_source(sfs, sroot, out.index)
    if shards_filter is not None:
        shards = [s for s in shards
                  if s.stem in shards_filter or _direct_name(out, s, stride) in shards_filter]
    if out.sc.chunk_size[:2] != (64, 64) or out.sc.chunk_size[2] % (_BLOCK // stride):
        raise FormatError(
            f"scales[{out.index}]: chunk size {out.sc.chunk_size} does not fit DVID's 64^3 "
            f"blocks{' with z_compress' if stride > 1 else ''} (x and y must be 64, z a "
            f"multiple of {_BLOCK // stride})")

    def check(shard: _SourceShard) -> tuple[_SourceShard, ShardIndex, int]:
        index, _, number = _check_source_shard(sfs, shard, out, stride)
        return shard, index, number

    with ThreadPoolExecutor(max(1, threads)) as pool:
        checked = list(pool.map(check, shards))
    seen: dict[int, str] = {}
    tasks, skipped = [], 0
    for shard, index, number in checked:
        if number in seen:
            raise FormatError(
                f"{_url(sfs, shard.arrow)} and {seen[number]} both map to neuroglancer shard "
                f"{out.sc.shard_file_name(number)} (mismatched export or spec)")
        seen[number] = _url(sfs, shard.arrow)
        if not len(index):
            continue
        task = _DirectTask(common, out, shard, number, len(index), stride,
                           _estimate_direct(shard, len(index), index.has_offsets))
        if out.sc.shard_file_name(number) in existing:
            skipped += 1
            continue
        tasks.append(task)
    return tasks, skipped


def _direct_name(out: _OutScale, shard: _SourceShard, stride: int) -> str:
    ox, oy, oz = shard.origin
    origin = np.array([[ox // _BLOCK, oy // _BLOCK, (oz // stride) // out.sc.chunk_size[2]]])
    if not out.sc.contains(origin).all():
        return ""
    return out.sc.shard_file_name(int(out.sc.shard_numbers(origin)[0]))


def _list_output(fs: fsspec.AbstractFileSystem, root: str, key: str) -> dict[str, int]:
    """``{shard file name: size}`` of the finished shard files of one output scale."""
    try:
        entries = fs.ls(posixpath.join(root, key), detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    for e in entries:
        name = posixpath.basename(e["name"].rstrip("/"))
        if e.get("type") == "file" and _NG_SHARD.match(name):
            out[name] = int(e.get("size") or 0)
    return out


def _plan_downres(common: _Common, dfs: fsspec.AbstractFileSystem, droot: str, out: _OutScale,
                  prev: _OutScale, shards_filter: set[str] | None,
                  existing: set[str]) -> tuple[list[_DownresTask], int]:
    if prev.sc.chunk_size != out.sc.chunk_size:
        raise FormatError(f"scales[{out.index}]: downres needs the chunk size of scale "
                          f"{prev.index} ({prev.sc.chunk_size}), got {out.sc.chunk_size}")
    children = _list_output(dfs, droot, prev.key)
    parents: dict[int, list[int]] = {}
    span_c = _span(prev.sc)
    span_p = _span(out.sc)
    for name in children:
        number = int(name[:-len(".shard")], 16)
        start = _shard_origin_chunk(prev.sc, number)
        stop = np.minimum(start + span_c, np.asarray(prev.sc.grid))
        pstart = start // 2
        pstop = np.minimum((stop + 1) // 2, np.asarray(out.sc.grid))
        first = (pstart // span_p) * span_p
        xs = range(int(first[0]), int(pstop[0]), int(span_p[0]))
        ys = range(int(first[1]), int(pstop[1]), int(span_p[1]))
        zs = range(int(first[2]), int(pstop[2]), int(span_p[2]))
        origins = np.array([(x, y, z) for z in zs for y in ys for x in xs], np.int64)
        if not len(origins):
            continue
        for p in out.sc.shard_numbers(origins).tolist():
            parents.setdefault(int(p), []).append(number)
    tasks, skipped = [], 0
    for number, kids in sorted(parents.items()):
        fname = out.sc.shard_file_name(number)
        if shards_filter is not None and fname not in shards_filter:
            continue
        if fname in existing:
            skipped += 1
            continue
        child_bytes = sum(children[prev.sc.shard_file_name(k)] for k in kids)
        est = _BASE_TASK_BYTES + (24 << 20) + min(child_bytes, 64 * 8 * (256 << 10))
        tasks.append(_DownresTask(common, out, prev, number, tuple(sorted(kids)), est))
    return tasks, skipped


# ---------------------------------------------------------------------------------------------
# Execution


def _tiers(tasks: Sequence[Any], workers: int, memory_limit: int) -> dict[int, list[Any]]:
    """Group tasks by how many of them may run at once within ``memory_limit``."""
    tiers: dict[int, list[Any]] = {}
    for t in tasks:
        k = int(max(1, min(workers, memory_limit // max(t.est_bytes, 1))))
        tiers.setdefault(k, []).append(t)
    for tier in tiers.values():  # biggest first: better packing, earlier OOM signals
        tier.sort(key=lambda t: -t.est_bytes)
    return dict(sorted(tiers.items(), reverse=True))


def _run_tier(func: Callable[[Any], _Result], tasks: list[Any], concurrency: int,
              scheduler: Any, on_done: Callable[[_Result], None]) -> list[_Result]:
    if not tasks:
        return []
    is_client = hasattr(scheduler, "map") and hasattr(scheduler, "gather")
    if not is_client and (concurrency <= 1 or scheduler == "sync"):
        results = []
        for t in tasks:
            r = func(t)
            on_done(r)
            results.append(r)
        return results
    if is_client:  # distributed.Client: the cluster decides concurrency
        from distributed import as_completed

        # workers that declare a "memory" resource (dask worker --resources memory=BYTES) run
        # only as many tasks at once as their estimates fit in
        workers = scheduler.scheduler_info().get("workers", {}).values()
        use_memory = bool(workers) and all("memory" in w.get("resources", {}) for w in workers)
        futures = [scheduler.submit(func, t, pure=False,
                                    resources={"memory": t.est_bytes} if use_memory else None)
                   for t in tasks]
        results = []
        for fut in as_completed(futures):
            r = fut.result()
            on_done(r)
            results.append(r)
        return results
    import dask
    from dask.callbacks import Callback

    lock = threading.Lock()

    class _Progress(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if isinstance(result, _Result):
                with lock:
                    on_done(result)

    delayed = [dask.delayed(func, pure=False)(t) for t in tasks]
    with _Progress():
        return list(dask.compute(*delayed, scheduler=scheduler, num_workers=concurrency))


def _default_memory_limit() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4 << 30


def _check_scales(values: Iterable[int] | None, what: str, nscales: int) -> list[int]:
    if values is None:
        return []
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 0 <= v < nscales:
            raise InvalidArgumentError(f"{what}: scale {v!r} is not in the spec "
                                       f"(scales 0..{nscales - 1})")
        out.append(int(v))
    return sorted(set(out))


def _retry_command(source: str, dest: str, spec_path: str | None, scale: int, mode: str,
                   supervoxels: bool, z_compress: int) -> str:
    flag = "--scales" if mode == "direct" else "--downres"
    cmd = (f"diced convert-shards {source} {dest} --spec {spec_path or 'SPEC.json'} "
           f"{flag} {scale} --only-missing")
    if supervoxels:
        cmd += " --supervoxels"
    if z_compress and scale == 0 and mode == "direct":
        cmd += f" --z-compress {z_compress}"
    return cmd


def convert_shards(
    source: str | os.PathLike,
    dest: str | os.PathLike,
    spec: Mapping[str, Any] | str | os.PathLike | bytes,
    *,
    scales: Sequence[int] | None = None,
    downres: Sequence[int] | None = None,
    supervoxels: bool = False,
    z_compress: int = 0,
    only_missing: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    shards: Iterable[str] | None = None,
    workers: int | None = None,
    scheduler: Any = "threads",
    memory_limit: int | None = None,
    gzip_level: int = 6,
    progress: bool = True,
    raise_on_failure: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    dest_options: Mapping[str, Any] | None = None,
    tmp_dir: str | None = None,
) -> ConvertReport:
    """Convert a DVID export-shards directory into a sharded neuroglancer precomputed volume.

    Parameters
    ----------
    source : str or path
        DVID export directory (local or fsspec URL) holding ``s<scale>/<x>_<y>_<z>.arrow``
        and ``.csv`` files.
    dest : str or path
        The precomputed volume (local or fsspec URL); ``info`` and ``<key>/<hex>.shard``.
    spec : mapping, JSON text, or path/URL of a JSON file
        The neuroglancer sharded ``info`` (the spec DVID's export used; with ``z_compress``,
        the native-z output spec).
    scales : sequence of int, optional
        Scales converted directly from DVID shards. Default: every scale with an ``s<n>/``
        directory in ``source``, unless ``downres`` is given (then none).
    downres : sequence of int, optional
        Scales computed from the previous scale of the output by 2x majority vote, in order.
    supervoxels : bool
        Write supervoxel ids instead of the agglomerated (body) ids of the ``labels`` column.
    z_compress : int
        Keep every (z_compress + 1)-th z slice of scale 0.
    only_missing : bool
        Skip shards whose output file already exists (resume an interrupted conversion).
    overwrite : bool
        Allow a DEST whose ``info`` differs from ``spec``, and rewrite existing shard files.
        Without it (and without ``only_missing``) existing shard files are an error.
    dry_run : bool
        Validate and plan (shards, chunks, memory tiers) without writing anything.
    shards : iterable of str, optional
        Only these shards: DVID stems (``"30720_24576_28672"``) or output file names.
    workers : int, optional
        Shards converted at once (default: the number of CPUs).
    scheduler : {"threads", "processes", "sync"} or a ``distributed.Client``
        The dask scheduler running the per-shard tasks.
    memory_limit : int, optional
        Bytes that concurrently running tasks may use together (default half of RAM); shards
        are grouped into tiers so that ``concurrency * estimate <= memory_limit``.
    gzip_level : int
        zlib level for gzip data and minishard index encodings.
    progress : bool
        Show a progress bar per scale.
    raise_on_failure : bool
        Raise :class:`ConversionError` when shards failed (after the others finished);
        otherwise return the report with ``failures``.
    storage_options, dest_options : mapping, optional
        fsspec options for ``source`` (and ``spec``) and for ``dest`` (default: the same).
    tmp_dir : str, optional
        Local directory for staging shard files of a remote ``dest``.

    Returns
    -------
    ConvertReport

    Raises
    ------
    FormatError
        The spec is invalid or does not match the export; a DVID shard's chunks map to a
        neuroglancer shard other than its name's, or two shards map to one; a CSV index is
        malformed. Raised before anything is written; the message names the file.
    CorruptDataError
        An Arrow file is shorter (or longer) than its CSV index says (before writing).
    ConversionError
        Some shards failed while converting (corrupt blocks, a CSV disagreeing with its Arrow
        file, I/O errors); no partial shard is left and the report lists retry commands.
    """
    from tqdm.auto import tqdm

    t_run = time.perf_counter()
    sopts = dict(storage_options or {})
    dopts = dict(dest_options if dest_options is not None else sopts)
    obj, spec_path = _load_spec_obj(spec, sopts)
    outs = _output_scales(obj)
    nsc = len(outs)
    if isinstance(z_compress, bool) or not isinstance(z_compress, int) or z_compress < 0 \
            or _BLOCK % (z_compress + 1):
        raise InvalidArgumentError(f"z_compress must be an int >= 0 with 64 % (z_compress + 1) "
                                   f"== 0, got {z_compress!r}")
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgumentError(f"workers must be a positive int, got {workers!r}")
    if not (isinstance(scheduler, str) and scheduler in ("threads", "processes", "sync")) \
            and not (hasattr(scheduler, "map") and hasattr(scheduler, "gather")):
        raise InvalidArgumentError("scheduler must be 'threads', 'processes', 'sync' or a "
                                   f"distributed.Client, got {scheduler!r}")
    if not isinstance(gzip_level, int) or not 0 <= gzip_level <= 9:
        raise InvalidArgumentError(f"gzip_level must be 0..9, got {gzip_level!r}")
    memory_limit = int(memory_limit or _default_memory_limit())
    source_url, dest_url = os.fspath(source), os.fspath(dest)
    sfs, sroot = _fs(source_url, sopts)
    dfs, droot = _fs(dest_url, dopts)
    if not sfs.isdir(sroot):
        raise NotFoundError(f"source {source_url!r} is not a directory")

    direct = _check_scales(scales, "scales", nsc)
    down = _check_scales(downres, "downres", nsc)
    if scales is None and downres is None:
        direct = [o.index for o in outs if sfs.isdir(posixpath.join(sroot, f"s{o.index}"))]
        if not direct:
            raise NotFoundError(f"{source_url}: no s<scale>/ directories for the spec's scales")
    if set(direct) & set(down):
        raise InvalidArgumentError(f"scales {sorted(set(direct) & set(down))} are both direct "
                                   "and downres")
    for n in down:
        if n == 0:
            raise InvalidArgumentError("scale 0 cannot be made by downres")
    shards_filter = set(shards) if shards is not None else None

    info_path = posixpath.join(droot, "info")
    info = _info_json(obj)
    if dfs.exists(info_path):
        try:
            have = json.loads(dfs.cat_file(info_path))
        except ValueError:
            have = None
        if have != info and not overwrite:
            raise InvalidArgumentError(
                f"{_url(dfs, info_path)} differs from the spec; pass overwrite=True to replace it")

    common = _Common(source_url, dest_url, sopts, dopts, bool(supervoxels), gzip_level, tmp_dir)
    summaries: list[ScaleSummary] = []
    failures: list[ShardFailure] = []
    plans: list[tuple[str, _OutScale, list[Any], int]] = []
    # plan (and validate) every direct scale before writing anything
    for n in direct:
        out = outs[n]
        stride = z_compress + 1 if n == 0 else 1
        existing = set(_list_output(dfs, droot, out.key))
        if existing and not (only_missing or overwrite or dry_run):
            raise InvalidArgumentError(
                f"{_url(dfs, posixpath.join(droot, out.key))} already holds {len(existing)} shard "
                "file(s); complete it with only_missing=True (--only-missing) or rewrite it "
                "with overwrite=True (--overwrite)")
        tasks, skipped = _plan_direct(common, sfs, sroot, out, stride, shards_filter, workers,
                                      existing if (only_missing or dry_run) else set())
        plans.append(("direct", out, tasks, skipped))
    for n in down:
        plans.append(("downres", outs[n], [], 0))

    info_written = False

    def write_info() -> None:
        nonlocal info_written
        if not info_written and not dry_run:
            dfs.makedirs(droot, exist_ok=True)
            dfs.pipe_file(info_path, json.dumps(info, indent=2).encode())
            info_written = True

    for mode, out, tasks, skipped in plans:
        t0 = time.perf_counter()
        n = out.index
        if mode == "downres":
            prev = outs[n - 1]
            if any(f.scale == n - 1 for f in failures):
                failures.append(ShardFailure(n, "*", out.key, f"scale {n - 1} is incomplete",
                                             _retry_command(source_url, dest_url, spec_path, n,
                                                            mode, supervoxels, z_compress)))
                summaries.append(ScaleSummary(n, mode, failed=1))
                continue
            existing = set(_list_output(dfs, droot, out.key))
            if existing and not (only_missing or overwrite or dry_run):
                raise InvalidArgumentError(
                    f"{_url(dfs, posixpath.join(droot, out.key))} already holds shard files; "
                    "complete it with only_missing=True (--only-missing) or rewrite it with "
                    "overwrite=True (--overwrite)")
            tasks, skipped = _plan_downres(common, dfs, droot, out, prev, shards_filter,
                                           existing if (only_missing or dry_run) else set())
        summary = ScaleSummary(n, mode, skipped=skipped, planned=len(tasks))
        tiers = _tiers(tasks, workers, memory_limit)
        summary.tiers = {k: len(v) for k, v in tiers.items()}
        summaries.append(summary)
        if dry_run:
            summary.chunks = sum(getattr(t, "chunks", 0) for t in tasks)
            continue
        func = _convert_direct if mode == "direct" else _convert_downres
        with tqdm(total=len(tasks), unit="shard", disable=not progress,
                  desc=f"{mode} s{n}") as bar:

            def done(r: _Result, summary: ScaleSummary = summary, bar: Any = bar,
                     mode: str = mode, n: int = n) -> None:
                bar.update(1)
                if r.error is None:
                    summary.shards += 1 if r.nbytes else 0
                    summary.chunks += r.chunks
                    summary.bytes += r.nbytes
                    bar.set_postfix(chunks=summary.chunks, refresh=False)
                else:
                    summary.failed += 1
                    failures.append(ShardFailure(
                        r.scale, r.label, r.output, r.error,
                        _retry_command(source_url, dest_url, spec_path, n, mode, supervoxels,
                                       z_compress)))

            for k, tier in tiers.items():
                _run_tier(func, tier, k if workers > 1 else 1, scheduler, done)
        if summary.shards or summary.skipped:
            write_info()  # only once a scale has whole shards: a failed run leaves DEST as it was
        summary.seconds = time.perf_counter() - t0
        logger.info("scale %d (%s): %d shards, %d chunks, %d bytes, %d failed, %.1f s", n, mode,
                    summary.shards, summary.chunks, summary.bytes, summary.failed,
                    summary.seconds)
    report = ConvertReport(_url(dfs, droot), summaries, failures, dry_run,
                           time.perf_counter() - t_run)
    if failures and raise_on_failure:
        raise _conversion_error(report)
    return report


def __getattr__(name: str) -> Any:
    """:func:`verify_export` and its report classes live in :mod:`diced.export._verify`."""
    if name in ("verify_export", "VerifyReport", "VerifyScale"):
        from diced.export import _verify

        return getattr(_verify, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
