"""Verification of a DVID export-shards conversion (:func:`verify_export`).

Re-exported by :mod:`diced.export.convert_shards`, which users import it from.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import fsspec
import numpy as np

from diced.errors import DicedError, InvalidArgumentError
from diced.export._convert_plan import _check_source_shard, _fs, _list_output
from diced.export._convert_spec import (
    _BLOCK,
    _check_scales,
    _load_spec_obj,
    _output_scales,
    _OutScale,
)
from diced.export._convert_workers import _raise_block
from diced.export._dvid_source import ArrowRecords as _ArrowRecords
from diced.export._dvid_source import SourceShard as _SourceShard
from diced.export._dvid_source import block_and_table as _block_and_table
from diced.export._dvid_source import list_source as _list_source
from diced.export._dvid_source import url as _url
from diced.export.convert_shards import ShardFailure, _failure_lines, _retry_command
from diced.export.shard_reader import ShardIndex

__all__ = ["VerifyReport", "VerifyScale", "verify_export"]


@dataclass
class VerifyScale:
    """Verification of one scale."""

    scale: int
    mode: str  #: ``"direct"`` (compared with DVID shards) or ``"downres"``
    shards_expected: int = 0
    shards_found: int = 0
    chunks_expected: int = 0
    chunks_found: int = 0
    bytes: int = 0
    sampled: int = 0
    mismatched: int = 0
    seconds: float = 0.0


@dataclass
class VerifyReport:
    """What :func:`verify_export` found; ``ok`` when nothing is missing or different."""

    dest: str
    scales: list[VerifyScale]
    failures: list[ShardFailure]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def summary(self) -> str:
        lines = [(f"{'scale':>5} {'mode':>8} {'shards':>13} {'chunks':>21} {'MB':>9} "
                  f"{'sampled':>8} {'bad':>5} {'seconds':>8}")]
        for s in self.scales:
            lines.append(f"{s.scale:>5} {s.mode:>8} {s.shards_found:>6}/{s.shards_expected:<6} "
                         f"{s.chunks_found:>10}/{s.chunks_expected:<10} {s.bytes / 1e6:>9.1f} "
                         f"{s.sampled:>8} {s.mismatched:>5} {s.seconds:>8.1f}")
        lines.extend(_failure_lines(self.failures))
        lines.append("OK: the export is complete" if self.ok else
                     f"NOT OK: {len(self.failures)} problem(s)")
        return "\n".join(lines)


def _expected_source_chunk(sfs: fsspec.AbstractFileSystem, shard: _SourceShard,
                           index: ShardIndex, rows: np.ndarray, out: _OutScale, stride: int,
                           supervoxels: bool) -> np.ndarray:
    """The (z, y, x) voxels the output chunk made of source ``rows`` must hold."""
    import zstandard

    from diced.export import _convert_kernels as K

    name = _url(sfs, shard.arrow)
    records = _ArrowRecords(sfs, shard, index, name)
    try:
        fetched = records.rows(rows)
        czo = out.sc.chunk_size[2]
        vol = np.zeros((czo, 64, 64), np.uint64)
        vox = np.empty(64 ** 3, np.uint64)
        zper = _BLOCK // stride
        dctx = zstandard.ZstdDecompressor()
        for batch, i in fetched:
            buf, table = _block_and_table(batch, i, supervoxels, name, dctx)
            err, det = K.decode_block_into(buf, table, vox)
            if err:
                _raise_block(err, det, name, batch.xyz[i])
            bz = int(batch.xyz[i, 2])
            z0 = bz * zper - ((bz * zper) // czo) * czo
            vol[z0:z0 + zper] = vox.reshape(64, 64, 64)[::stride]
        return vol
    finally:
        records.close()


def verify_export(
    source: str | os.PathLike,
    dest: str | os.PathLike,
    spec: Mapping[str, Any] | str | os.PathLike | bytes,
    *,
    scales: Sequence[int] | None = None,
    downres: Sequence[int] | None = None,
    z_compress: int = 0,
    supervoxels: bool = False,
    sample: int = 0,
    seed: int = 0,
    json_report: str | os.PathLike | None = None,
    progress: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    dest_options: Mapping[str, Any] | None = None,
) -> VerifyReport:
    """Check that a conversion is complete: every shard and chunk is there (and, with
    ``sample``, that random chunks decode equal to their source).

    For a scale with DVID shards (``s<n>/`` in ``source``) every DVID shard must have produced
    its output shard file, holding exactly the chunks of its CSV index. For other scales
    (made by downres) the expected chunks are the parents of the chunks of the scale below.
    With ``sample=K``, K random chunks per scale are decoded and compared with the DVID
    blocks (direct scales) or with the 2x majority vote of the scale below (downres scales).

    Parameters
    ----------
    source, dest, spec :
        As for :func:`convert_shards`.
    scales : sequence of int, optional
        Default: every scale of the spec that has DVID shards or output shard files.
    downres : sequence of int, optional
        Scales that were made by downres although the source has DVID shards for them: they
        are checked against the scale below instead of the DVID shards.
    z_compress, supervoxels :
        As the conversion used them.
    sample : int
        Random chunks compared per scale.
    seed : int
        Seed of the random sample.
    json_report : path, optional
        Also write the report as JSON there (local path or fsspec URL).

    Returns
    -------
    VerifyReport
    """
    from tqdm.auto import tqdm

    from diced.export._convert_kernels import morton_decode
    from diced.export._ng_shards import decode_chunk, gunzip_bytes, read_chunks, read_shard_index

    sopts = dict(storage_options or {})
    dopts = dict(dest_options if dest_options is not None else sopts)
    obj, spec_path = _load_spec_obj(spec, sopts)
    outs = _output_scales(obj)
    source_url, dest_url = os.fspath(source), os.fspath(dest)
    sfs, sroot = _fs(source_url, sopts)
    dfs, droot = _fs(dest_url, dopts)
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        raise InvalidArgumentError(f"sample must be an int >= 0, got {sample!r}")
    made_by_downres = set(_check_scales(downres, "downres", len(outs)))
    chosen = _check_scales(scales, "scales", len(outs)) if scales is not None else [
        o.index for o in outs
        if sfs.isdir(posixpath.join(sroot, f"s{o.index}")) or _list_output(dfs, droot, o.key)]
    rng = np.random.default_rng(seed)
    results: list[VerifyScale] = []
    failures: list[ShardFailure] = []
    found_ids: dict[int, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    def scale_index(out: _OutScale) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if out.index not in found_ids:
            names = list(_list_output(dfs, droot, out.key))

            def read(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
                return read_shard_index(dfs, posixpath.join(droot, out.key, name),
                                        out.sc.minishard_bits, out.sc.minishard_index_encoding)

            with ThreadPoolExecutor(16) as pool:  # two small range reads per shard file
                found_ids[out.index] = dict(zip(names, pool.map(read, names), strict=True))
        return found_ids[out.index]

    def read_out_chunk(out: _OutScale, coords: np.ndarray) -> np.ndarray | None:
        cid = int(out.sc.chunk_ids(coords[None])[0])
        name = out.sc.shard_file_name(int(out.sc.shard_numbers(coords[None])[0]))
        ent = scale_index(out).get(name)
        if ent is None:
            return None
        ids, starts, sizes = ent
        k = int(np.searchsorted(ids, np.uint64(cid)))
        if k >= len(ids) or int(ids[k]) != cid:
            return None
        data = read_chunks(dfs, posixpath.join(droot, out.key, name), [starts[k]], [sizes[k]])[0]
        what = f"{out.key}/{name} chunk {tuple(coords.tolist())}"
        if out.sc.data_encoding == "gzip":
            data = gunzip_bytes(data, what)
        return decode_chunk(data, out.chunk_shape(coords[None])[0], out.encoding,
                            out.block_size, what)

    for n in chosen:
        out = outs[n]
        t0 = time.perf_counter()
        stride = z_compress + 1 if n == 0 else 1
        shards = [] if n in made_by_downres else _list_source(sfs, sroot, n)
        mode = "direct" if shards else "downres"
        vs = VerifyScale(n, mode)
        retry = _retry_command(source_url, dest_url, spec_path, n, mode, supervoxels, z_compress)
        have = scale_index(out)
        vs.bytes = sum(_list_output(dfs, droot, out.key).values())
        samples: list[tuple[Any, ...]] = []
        if mode == "direct":
            vs.shards_expected = len(shards)
            for shard in tqdm(shards, unit="shard", disable=not progress, desc=f"verify s{n}"):
                try:
                    index, oc, number = _check_source_shard(sfs, shard, out, stride)
                except DicedError as exc:
                    failures.append(ShardFailure(n, shard.stem, "?", str(exc), retry))
                    continue
                fname = out.sc.shard_file_name(number)
                ids = np.unique(out.sc.chunk_ids(oc)) if len(oc) else np.zeros(0, np.uint64)
                vs.chunks_expected += len(ids)
                if not len(ids):
                    vs.shards_expected -= 1
                    continue
                got = have.get(fname)
                if got is None:
                    failures.append(ShardFailure(n, shard.stem, f"{out.key}/{fname}",
                                                 "output shard file is missing", retry))
                    continue
                vs.shards_found += 1
                present = np.isin(ids, got[0])
                vs.chunks_found += int(present.sum())
                if not present.all():
                    failures.append(ShardFailure(
                        n, shard.stem, f"{out.key}/{fname}",
                        f"{int((~present).sum())} of {len(ids)} chunks missing",
                        retry.replace("--only-missing", f"--overwrite --shards {shard.stem}")))
                extra = np.setdiff1d(got[0], ids)
                if len(extra):
                    failures.append(ShardFailure(n, shard.stem, f"{out.key}/{fname}",
                                                 f"{len(extra)} chunks the source does not have",
                                                 retry))
                if sample:
                    for r in rng.choice(len(oc), size=min(sample, len(oc)), replace=False):
                        samples.append((shard, index, oc, int(r)))
            if sample and samples:
                pick = rng.choice(len(samples), size=min(sample, len(samples)), replace=False)
                for p in pick:
                    shard, index, oc, r = samples[int(p)]
                    rows = np.flatnonzero((oc == oc[r]).all(axis=1))
                    rows = rows[np.argsort(index.coords[rows, 2])]
                    want = _expected_source_chunk(sfs, shard, index, rows, out, stride,
                                                  supervoxels)
                    sx, sy, sz = (int(v) for v in out.chunk_shape(oc[r][None])[0])
                    vs.sampled += 1
                    try:
                        got_vox = read_out_chunk(out, oc[r])
                    except DicedError as exc:
                        got_vox, reason = None, str(exc)
                    else:
                        reason = "chunk is missing"
                    if got_vox is None or not np.array_equal(got_vox, want[:sz, :sy, :sx]):
                        vs.mismatched += 1
                        fname = out.sc.shard_file_name(int(out.sc.shard_numbers(oc[r][None])[0]))
                        failures.append(ShardFailure(
                            n, shard.stem, f"{out.key}/{fname}",
                            reason if got_vox is None else
                            f"chunk {tuple(oc[r].tolist())} differs from its DVID block(s)",
                            retry.replace("--only-missing", f"--overwrite --shards {shard.stem}")))
        else:
            if n == 0:
                failures.append(ShardFailure(n, "*", out.key, "no DVID shards for scale 0",
                                             retry))
                results.append(vs)
                continue
            prev = outs[n - 1]
            kids = [morton_decode(v[0], np.asarray(prev.sc.bits, np.int64))
                    for v in scale_index(prev).values()]
            par = np.unique(np.concatenate(kids) // 2, axis=0) if kids else np.zeros((0, 3),
                                                                                    np.int64)
            par = par[out.sc.contains(par)] if len(par) else par
            ids = out.sc.chunk_ids(par) if len(par) else np.zeros(0, np.uint64)
            numbers = out.sc.shard_numbers_of_ids(ids) if len(ids) else ids
            vs.chunks_expected = len(ids)
            for number in tqdm(np.unique(numbers).tolist(), unit="shard", disable=not progress,
                               desc=f"verify s{n}"):
                vs.shards_expected += 1
                fname = out.sc.shard_file_name(int(number))
                want_ids = ids[numbers == number]
                got = have.get(fname)
                if got is None:
                    failures.append(ShardFailure(n, fname, f"{out.key}/{fname}",
                                                 "output shard file is missing", retry))
                    continue
                vs.shards_found += 1
                present = np.isin(want_ids, got[0])
                vs.chunks_found += int(present.sum())
                if not present.all():
                    failures.append(ShardFailure(
                        n, fname, f"{out.key}/{fname}",
                        f"{int((~present).sum())} of {len(want_ids)} chunks missing",
                        retry.replace("--only-missing", f"--overwrite --shards {fname}")))
            if sample and len(par):
                from diced.array._downres_kernels import downsample_labels

                cs = np.asarray(out.sc.chunk_size)
                for r in rng.choice(len(par), size=min(sample, len(par)), replace=False):
                    pc = par[int(r)]
                    src = np.zeros((2 * cs[2], 2 * cs[1], 2 * cs[0]), np.uint64)
                    for dz in (0, 1):
                        for dy in (0, 1):
                            for dx in (0, 1):
                                kid = pc * 2 + np.array([dx, dy, dz])
                                if not prev.sc.contains(kid[None]).all():
                                    continue
                                arr = read_out_chunk(prev, kid)
                                if arr is None:
                                    continue
                                z0, y0, x0 = dz * cs[2], dy * cs[1], dx * cs[0]
                                src[z0:z0 + arr.shape[0], y0:y0 + arr.shape[1],
                                    x0:x0 + arr.shape[2]] = arr
                    lo = np.empty((cs[2], cs[1], cs[0]), np.uint64)
                    downsample_labels(src, lo)
                    sx, sy, sz = (int(v) for v in out.chunk_shape(pc[None])[0])
                    vs.sampled += 1
                    got_vox = read_out_chunk(out, pc)
                    if got_vox is None or not np.array_equal(got_vox, lo[:sz, :sy, :sx]):
                        vs.mismatched += 1
                        fname = out.sc.shard_file_name(int(out.sc.shard_numbers(pc[None])[0]))
                        failures.append(ShardFailure(
                            n, fname, f"{out.key}/{fname}",
                            f"chunk {tuple(pc.tolist())} differs from the downres of scale "
                            f"{n - 1}",
                            retry.replace("--only-missing", f"--overwrite --shards {fname}")))
        vs.seconds = time.perf_counter() - t0
        results.append(vs)
    report = VerifyReport(_url(dfs, droot), results, failures)
    if json_report is not None:
        target = os.fspath(json_report)
        same = fsspec.utils.get_protocol(target) == fsspec.utils.get_protocol(dest_url)
        with fsspec.open(target, "w", **(dopts if same else {})) as f:
            json.dump(report.to_dict(), f, indent=2)
    return report
