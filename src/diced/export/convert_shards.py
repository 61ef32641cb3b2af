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

This module holds the entry point and its reports; the parts live in private siblings: the
spec and output scales (:mod:`~diced.export._convert_spec`), the per-shard tasks and their
planning (:mod:`~diced.export._convert_plan`), converting one shard
(:mod:`~diced.export._convert_workers`), running the tasks (:mod:`~diced.export._convert_schedule`)
and verification (:mod:`~diced.export._verify`).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from diced.errors import (
    ConversionError,
    InvalidArgumentError,
    NotFoundError,
)
from diced.export._convert_plan import (
    _Common,
    _fs,
    _list_output,
    _plan_direct,
    _plan_downres,
    _Result,
)
from diced.export._convert_schedule import _default_memory_limit, _run_tier, _tiers
from diced.export._convert_spec import (
    _BLOCK,
    _check_scales,
    _info_json,
    _load_spec_obj,
    _output_scales,
    _OutScale,
)
from diced.export._convert_workers import _convert_direct, _convert_downres
from diced.export._dvid_source import url as _url

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


def _failure_lines(failures: Sequence[Any]) -> list[str]:
    """Report lines for failed shards (``scale``, ``shard``, ``output``, ``reason``), then
    the distinct commands that retry them."""
    lines = [f"FAILED s{f.scale} {f.shard} -> {f.output}: {f.reason}" for f in failures]
    if failures:
        lines.append("retry with:")
        lines.extend(f"  {cmd}" for cmd in dict.fromkeys(f.retry for f in failures))
    return lines


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
