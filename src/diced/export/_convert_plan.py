"""Planning a shard conversion: the per-shard tasks (picklable), the checks of every DVID
source shard against the spec before anything is written, and the direct and downres plans
of one scale.

Private to :mod:`diced.export.convert_shards` (and :mod:`diced.export._verify`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np

from diced.errors import CorruptDataError, FormatError, NotFoundError
from diced.export._convert_spec import (
    _BASE_TASK_BYTES,
    _BLOCK,
    _NG_SHARD,
    _WINDOW_ROWS,
    _OutScale,
    _shard_origin_chunk,
    _span,
)
from diced.export._dvid_source import SourceShard as _SourceShard
from diced.export._dvid_source import list_source as _list_source
from diced.export._dvid_source import parse_csv_index
from diced.export._dvid_source import url as _url
from diced.export.shard_reader import ShardIndex


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
