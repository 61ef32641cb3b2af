"""``diced export precomputed|zarr`` and ``diced export-shards``: write a version of an array
out of diced, for neuroglancer, zarr/OME-Zarr readers, or DVID's Arrow shard readers."""

from __future__ import annotations

import argparse
import json
from typing import Any

from diced.cli._args import floats as _floats
from diced.cli._args import ints as _ints
from diced.cli._cluster import add_cluster_args, cluster_client, wants_cluster

_STORE_HELP = "store location: a path (embedded LMDB store) or an fsspec URL (gs://..., s3://...)"
_VERSION_HELP = ("version to export: a UUID, a unique UUID prefix, or 'branch~N' "
                 "or tag (default: the repo's head, marked * by 'diced log')")



class _Replaced(argparse.Action):
    """A flag that no longer exists: refuse it and name its replacement."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        text = values if isinstance(values, str) else ""
        zyx = ",".join(reversed(text.split(","))) if text else "Z,Y,X"
        parser.error(f"{option_string} (x,y,z) was replaced by --voxel-size in z,y,x order, "
                     f"as everywhere in diced: use --voxel-size {zyx}")


def _voxel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voxel-size", type=_floats, default=None, metavar="Z,Y,X",
                   help="voxel size of level 0 in array axis order (z,y,x for 3-D, as "
                        "everywhere in diced), in --unit (default 8 per spatial axis, DVID's "
                        "default)")
    p.add_argument("--unit", default="nanometer",
                   help="unit of --voxel-size: nanometer (nm, default), micrometer (um), "
                        "angstrom, millimeter")
    p.add_argument("--resolution", action=_Replaced, help=argparse.SUPPRESS)


def _common(p: argparse.ArgumentParser, what: str = "array") -> None:
    p.add_argument("store", metavar="STORE", help=_STORE_HELP)
    p.add_argument("repo", metavar="REPO", help="repo name (alias), as listed by 'diced info'")
    p.add_argument(what, metavar=what.upper(), help=f"name of the {what} instance to export")


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """Register ``export`` (with ``precomputed`` and ``zarr``) or ``export-shards``."""
    if name == "export-shards":
        _add_shards(sub, name)
        return
    p = sub.add_parser(
        name, help="export a version of an array as neuroglancer precomputed or zarr",
        description="Write one version of an image or label array, with its whole "
                    "multiscale pyramid, to a directory or fsspec URL in another format.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  diced export precomputed ~/fly.diced fly grayscale /tmp/gray\n"
               "  diced export zarr ~/fly.diced fly grayscale /tmp/gray.zarr\n\n"
               "Run 'diced export precomputed --help' or 'diced export zarr --help'.")
    fmt = p.add_subparsers(dest="format", metavar="FORMAT", required=True)

    pc = fmt.add_parser(
        "precomputed", help="neuroglancer precomputed volume (raw, jpeg, compressed_segmentation)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a neuroglancer precomputed volume: an 'info' file plus one "
                    "directory per scale (pyramid level). Label arrays default to "
                    "compressed_segmentation, images to raw. Open the result in neuroglancer "
                    "as precomputed://<url of DEST>.",
        epilog="examples:\n"
               "  diced export precomputed ~/fly.diced fly grayscale /tmp/gray --encoding jpeg\n"
               "  diced export precomputed ~/fly.diced fly segmentation gs://bucket/seg \\\n"
               "      --version 3f2a --sharded --voxel-size 40,8,8")
    _common(pc)
    pc.add_argument("dest", metavar="DEST",
                    help="output directory or URL (memory://, file://, gs://, s3://); must be "
                         "empty unless --overwrite")
    pc.add_argument("--version", default=None, help=_VERSION_HELP)
    pc.add_argument("--scales", type=_ints, default=None,
                    help="comma-separated pyramid levels to write, e.g. 0,1 (default: all)")
    pc.add_argument("--encoding", choices=["raw", "jpeg", "png", "compressed_segmentation"],
                    default=None,
                    help="chunk encoding (default: compressed_segmentation for labels, raw "
                         "for images; jpeg is lossy and uint8 only)")
    pc.add_argument("--sharded", action="store_true",
                    help="write the sharded format (few large files; best for cloud storage)")
    _voxel_args(pc)
    pc.add_argument("--supervoxels", action="store_true",
                    help="label arrays: write supervoxel ids instead of body ids")
    pc.add_argument("--jpeg-quality", type=int, default=75, help="jpeg quality 0-100 (default 75)")
    pc.add_argument("--overwrite", action="store_true",
                    help="replace an existing volume at DEST")
    pc.add_argument("--quiet", action="store_true", help="no progress bar")
    add_cluster_args(pc)
    pc.set_defaults(func=run_precomputed)

    zp = fmt.add_parser(
        "zarr", help="zarr v3 group with OME-Zarr 0.5 multiscale metadata",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a zarr v3 group holding one array per pyramid level ('0', '1', "
                    "...) and OME-Zarr 0.5 'multiscales' attributes, readable by zarr, dask, "
                    "xarray, napari and neuroglancer (zarr3://).",
        epilog="examples:\n"
               "  diced export zarr ~/fly.diced fly grayscale /tmp/gray.zarr\n"
               "  diced export zarr ~/fly.diced fly grayscale gs://bucket/gray.zarr "
               "--version 3f2a --voxel-size 40,8,8")
    _common(zp)
    zp.add_argument("dest", metavar="DEST", help="output directory or URL; must be empty unless "
                                                 "--overwrite")
    zp.add_argument("--version", default=None, help=_VERSION_HELP)
    zp.add_argument("--scales", type=_ints, default=None,
                    help="comma-separated pyramid levels to write (default: all)")
    _voxel_args(zp)
    zp.add_argument("--supervoxels", action="store_true",
                    help="label arrays: write supervoxel ids instead of body ids")
    zp.add_argument("--overwrite", action="store_true",
                    help="delete everything at DEST first")
    zp.add_argument("--quiet", action="store_true", help="no progress bar")
    add_cluster_args(zp)
    zp.set_defaults(func=run_zarr)


def _size(text: str) -> int:
    """``"2GB"``, ``"512MiB"``, ``"1e9"`` -> bytes."""
    units = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
             "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
             "tib": 2**40}
    t = text.strip().lower()
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    try:
        value = float(num) * units[t[len(num):].strip()]
    except (ValueError, KeyError) as exc:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 512MiB, 2GB or 1000000, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"the size must be positive, got {text!r}")
    return int(value)


def _add_shards(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="export a label array as DVID export-shards Arrow files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write the blocks of a label array at one scale as DVID 'export-shards' "
                    "files: per shard an Arrow IPC stream (.arrow) of compressed label blocks "
                    "with their supervoxel and body ids, plus a CSV index (.csv), under "
                    "DEST/s<scale>/. The shard layout is a neuroglancer sharded 'info' spec: "
                    "give one as SPEC (a JSON file or URL, as DVID takes it), or let diced "
                    "make it from --shard-bits/--minishard-bits/--preshift-bits or a target "
                    "--shard-size (default: shards of at most 128 MiB of raw voxels); a spec "
                    "made here is written to DEST/info.",
        epilog="examples:\n"
               "  diced export-shards ~/fly.diced fly segmentation /tmp/shards\n"
               "  diced export-shards ~/fly.diced fly segmentation /tmp/shards --shard-size 1GB\n"
               "  diced export-shards ~/fly.diced fly segmentation /tmp/shards \\\n"
               "      --shard-bits 15 --minishard-bits 6 --preshift-bits 9 --scale 1\n"
               "  diced export-shards ~/fly.diced fly segmentation spec.json /tmp/shards \\\n"
               "      --version 3f2a --batch-size 256")
    _common(p, "labels")
    p.add_argument("paths", metavar="[SPEC] DEST", nargs="+",
                   help="optional neuroglancer sharded info (JSON file path or URL), then the "
                        "output directory or URL")
    p.add_argument("--version", default=None, help=_VERSION_HELP)
    p.add_argument("--scale", type=int, default=0, help="pyramid level to export (default 0)")
    p.add_argument("--shard-bits", type=int, default=None, help="sharding: shard_bits")
    p.add_argument("--minishard-bits", type=int, default=None, help="sharding: minishard_bits")
    p.add_argument("--preshift-bits", type=int, default=None, help="sharding: preshift_bits")
    p.add_argument("--shard-size", type=_size, default=None, metavar="BYTES",
                   help="largest raw (uint64) size of one shard, e.g. 512MiB or 2GB")
    p.add_argument("--shard-voxels", type=int, default=None, metavar="N",
                   help="largest number of voxels in one shard")
    p.add_argument("--voxel-size", type=_floats, default=None, metavar="Z,Y,X",
                   help="voxel size written to a generated spec, z,y,x in --unit (default 8)")
    p.add_argument("--unit", default="nanometer", help="unit of --voxel-size (default nanometer)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="blocks per Arrow record batch (default: the exporter's)")
    p.add_argument("--overwrite", action="store_true", help="replace existing shard files")
    p.add_argument("--supervoxels", action="store_true",
                   help="label every block by supervoxel id also in the body column "
                        "(no mapping applied)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_cluster_args(p)
    p.set_defaults(func=run_shards)


def _open_array(args: argparse.Namespace, name: str) -> Any:
    from diced.cli._store import open_existing_store

    repo = open_existing_store(args.store).open_repo(args.repo)
    if args.version:
        return repo.version(args.version).array(name)
    return repo.array(name)


def run_precomputed(args: argparse.Namespace) -> int:
    """Run ``diced export precomputed``."""
    from diced.export.precomputed import export_precomputed

    arr = _open_array(args, args.array)
    options = {"scales": args.scales, "encoding": args.encoding, "sharded": args.sharded,
               "voxel_size": args.voxel_size, "unit": args.unit,
               "supervoxels": args.supervoxels, "overwrite": args.overwrite,
               "jpeg_quality": args.jpeg_quality}
    if wants_cluster(args):
        from diced.cluster import export_precomputed as on_cluster

        with cluster_client(args) as client:
            info = on_cluster(arr, args.dest, client=client, **options)
    else:
        info = export_precomputed(arr, args.dest, progress=not args.quiet, **options)
    scales = ", ".join(f"{s['key']} {s['size']}" for s in info["scales"])
    print(f"wrote precomputed {info['type']} volume to {args.dest}: {scales}")
    return 0


def run_zarr(args: argparse.Namespace) -> int:
    """Run ``diced export zarr``."""
    from diced.export.zarr_export import export_zarr

    arr = _open_array(args, args.array)
    options = {"scales": args.scales, "voxel_size": args.voxel_size, "unit": args.unit,
               "supervoxels": args.supervoxels, "overwrite": args.overwrite}
    if wants_cluster(args):
        from diced.cluster import export_zarr as on_cluster

        with cluster_client(args) as client:
            group = on_cluster(arr, args.dest, client=client, **options)
    else:
        group = export_zarr(arr, args.dest, progress=not args.quiet, **options)
    levels = sorted(name for name, _ in group.arrays())
    print(f"wrote zarr v3 group to {args.dest}: levels {', '.join(levels)}; "
          f"{json.dumps(dict(group.attrs).get('diced', {}))}")
    return 0


def run_shards(args: argparse.Namespace) -> int:
    """Run ``diced export-shards``."""
    from diced.errors import InvalidArgumentError
    from diced.export import export_shards

    if len(args.paths) > 2:
        raise InvalidArgumentError(f"expected [SPEC] DEST, got {len(args.paths)} paths")
    spec, dest = (None, args.paths[0]) if len(args.paths) == 1 else args.paths
    sharding = {"shard_bits": args.shard_bits, "minishard_bits": args.minishard_bits,
                "preshift_bits": args.preshift_bits, "shard_bytes": args.shard_size,
                "shard_voxels": args.shard_voxels, "voxel_size": args.voxel_size}
    if spec is not None and any(v is not None for v in sharding.values()):
        raise InvalidArgumentError(
            "give SPEC or --shard-bits/--minishard-bits/--preshift-bits/--shard-size/"
            "--shard-voxels/--voxel-size, not both")
    labels = _open_array(args, args.labels)
    kwargs = {} if spec is not None else {**sharding, "unit": args.unit}
    kwargs.update(supervoxels=args.supervoxels, scale=args.scale, batch_size=args.batch_size,
                  overwrite=args.overwrite, progress=not args.quiet)
    if wants_cluster(args):
        from diced.cluster import export_shards as on_cluster

        with cluster_client(args) as client:
            report = on_cluster(labels, dest, spec, client=client, **kwargs)
    else:
        report = export_shards(labels, dest, spec, **kwargs)
    made = "" if spec is not None else f"; spec written to {dest.rstrip('/')}/info"
    print(f"wrote {report.shards_written} shards ({report.blocks_written} blocks, "
          f"{report.bytes_written / 1e6:.1f} MB) in {report.seconds:.1f} s to {report.dest}{made}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run whichever export the parsed arguments describe."""
    if getattr(args, "format", None) == "precomputed":
        return run_precomputed(args)
    if getattr(args, "format", None) == "zarr":
        return run_zarr(args)
    return run_shards(args)
