"""``diced convert-shards`` and ``diced verify-export``: turn a DVID export-shards directory
into a sharded neuroglancer precomputed volume, and prove the result complete."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from diced.cli._args import ints as _ints

_SOURCE_HELP = ("DVID export directory holding s0/, s1/, ... of <x>_<y>_<z>.arrow + .csv "
                "files: a path or an fsspec URL (gs://, s3://, file://)")
_DEST_HELP = "neuroglancer precomputed volume to write: a path or an fsspec URL"
_SPEC_HELP = ("neuroglancer sharded 'info' JSON (the spec DVID's export-shards used; with "
              "--z-compress, the native-z output spec): a path or URL")


def _shared(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", help=_SOURCE_HELP)
    p.add_argument("dest", metavar="DEST", help=_DEST_HELP)
    p.add_argument("--spec", required=True, metavar="NG_SPEC.json", help=_SPEC_HELP)
    p.add_argument("--z-compress", type=int, default=0, metavar="N",
                   help="scale 0 keeps every (N+1)-th z slice (z-doubled exports; default 0)")
    p.add_argument("--supervoxels", action="store_true",
                   help="supervoxel ids instead of agglomerated body ids")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """Register ``convert-shards`` or ``verify-export``."""
    if name == "verify-export":
        _add_verify(sub, name)
        return
    p = sub.add_parser(
        name, help="convert DVID export-shards files to a neuroglancer precomputed volume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert the Arrow shard files DVID's export-shards wrote into a sharded "
                    "neuroglancer precomputed segmentation volume. Each DVID shard becomes the "
                    "one neuroglancer shard its chunks map to (checked first: a mismatched "
                    "export is refused); --downres scales are made from the scale below of "
                    "the output by 2x majority vote. Shard files appear whole, so a "
                    "conversion that was interrupted is completed with --only-missing.",
        epilog="examples:\n"
               "  diced convert-shards /data/export /data/seg --spec mcns-ng-specs.json\n"
               "  diced convert-shards gs://b/export gs://b/seg --spec spec.json --scales 0 "
               "--downres 1,2,3\n"
               "  diced convert-shards gs://b/export gs://b/seg --spec spec.json --scales 0 "
               "--only-missing\n"
               "  diced convert-shards /data/export /data/seg --spec spec.json --dry-run")
    _shared(p)
    p.add_argument("--scales", type=_ints, default=None,
                   help="scales converted from DVID shards, e.g. 0 or 0,1 (default: every "
                        "s<n>/ in SOURCE, or none when --downres is given)")
    p.add_argument("--downres", type=_ints, default=None,
                   help="scales made from the previous output scale by 2x majority vote, "
                        "e.g. 1,2,3")
    p.add_argument("--only-missing", action="store_true",
                   help="skip shards whose output file exists (resume a conversion)")
    p.add_argument("--overwrite", action="store_true",
                   help="rewrite existing shard files and replace a different info")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and plan (shards, chunks, memory tiers); write nothing")
    p.add_argument("--shards", type=lambda t: [s for s in t.split(",") if s], default=None,
                   help="only these shards: DVID names (x_y_z) or output files (hex.shard)")
    p.add_argument("--workers", type=int, default=None,
                   help="shards converted at once (default: CPU count)")
    p.add_argument("--scheduler", choices=["threads", "processes", "sync"], default="threads",
                   help="dask scheduler on this machine (default threads)")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="run on a dask.distributed scheduler at ADDRESS instead")
    p.add_argument("--memory-limit", type=float, default=None, metavar="GIB",
                   help="memory all running shards may use together, in GiB (default: half "
                        "of RAM); shards are tiered so that none runs out")
    p.add_argument("--gzip-level", type=int, default=6, metavar="L",
                   help="zlib level 0-9 of gzip data and minishard indexes (default 6, as "
                        "TensorStore; 1 is ~2.5x faster and ~20%% larger)")
    p.add_argument("--json-report", default=None, metavar="FILE",
                   help="also write the report as JSON to FILE")
    p.set_defaults(func=run_convert)


def _add_verify(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="check that a converted precomputed volume is complete",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check that every DVID source shard produced its neuroglancer shard file "
                    "holding every chunk (downres scales: every parent of the scale below), "
                    "and with --sample K that K random chunks per scale decode equal to their "
                    "source. Exits 1 and prints retry commands when something is missing.",
        epilog="examples:\n"
               "  diced verify-export /data/export /data/seg --spec spec.json\n"
               "  diced verify-export gs://b/export gs://b/seg --spec spec.json --scales 0 "
               "--z-compress 1 --sample 100 --json-report report.json")
    _shared(p)
    p.add_argument("--scales", type=_ints, default=None,
                   help="scales to check (default: all with DVID shards or output files)")
    p.add_argument("--downres", type=_ints, default=None,
                   help="scales that were made with --downres: checked against the scale "
                        "below, not against DVID shards of that scale")
    p.add_argument("--sample", type=int, default=0, metavar="K",
                   help="compare K random chunks per scale with their source (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    p.add_argument("--json-report", default=None, metavar="FILE",
                   help="also write the report as JSON to FILE")
    p.set_defaults(func=run_verify)


def _client(address: str | None) -> Any:
    if address is None:
        return None
    from diced.errors import BackendUnavailableError

    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(
            "--cluster needs dask.distributed: pip install distributed") from exc
    return Client(address)


def run_convert(args: argparse.Namespace) -> int:
    """Run ``diced convert-shards``; returns the exit code."""
    from diced.export.convert_shards import ConversionError, convert_shards

    client = _client(args.cluster)
    try:
        report = convert_shards(
            args.source, args.dest, args.spec, scales=args.scales, downres=args.downres,
            supervoxels=args.supervoxels, z_compress=args.z_compress,
            only_missing=args.only_missing, overwrite=args.overwrite, dry_run=args.dry_run,
            shards=args.shards, workers=args.workers, scheduler=client or args.scheduler,
            memory_limit=int(args.memory_limit * (1 << 30)) if args.memory_limit else None,
            gzip_level=args.gzip_level, progress=not args.quiet, raise_on_failure=False)
    except ConversionError as exc:  # pragma: no cover - raise_on_failure=False
        report = exc.report
    finally:
        if client is not None:
            client.close()
    if args.json_report:
        with open(args.json_report, "w") as f:
            json.dump(report.to_dict(), f, indent=2)
    if report.dry_run:
        print(f"dry run: nothing written to {report.dest}")
        for s in report.scales:
            tiers = ", ".join(f"{n} shard(s) at {k} at once" for k, n in s.tiers.items())
            print(f"  scale {s.scale} ({s.mode}): {s.planned} shard(s) to convert, "
                  f"{s.skipped} already present" + (f"; tiers: {tiers}" if tiers else ""))
    print(report.summary())
    if not report.ok:
        print(f"{len(report.failures)} shard(s) failed", file=sys.stderr)
        return 1
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Run ``diced verify-export``: 0 when complete, 1 when problems were found."""
    from diced.export.convert_shards import verify_export

    report = verify_export(
        args.source, args.dest, args.spec, scales=args.scales, downres=args.downres,
        z_compress=args.z_compress,
        supervoxels=args.supervoxels, sample=args.sample, seed=args.seed,
        json_report=args.json_report, progress=not args.quiet)
    print(report.summary())
    return 0 if report.ok else 1
