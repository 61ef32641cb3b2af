"""``diced ingest``: stream a volume (HDF5, TIFF, .npy, zarr) into a diced array, resumably."""

from __future__ import annotations

import argparse
import math
from typing import Any

from diced.cli._args import ints as _ints
from diced.cli._cluster import add_cluster_args, cluster_client, wants_cluster


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """Register ``ingest``."""
    p = sub.add_parser(
        name, help="import a volume from HDF5, TIFF, .npy or zarr into an array",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Stream a volume into a diced array at the repo's head version, a slab "
                    "of chunk rows at a time (memory stays around two slabs). If the ingest "
                    "is interrupted, running the same command again resumes after the last "
                    "finished slab.\n\n"
                    "SOURCE may be: an HDF5 file (.h5, .hdf5; use --dataset when it holds "
                    "several), a .npy file, a multi-page TIFF (one page per z-plane), a "
                    "directory of single-page TIFFs or a quoted glob like '/data/z*.tif' "
                    "(sorted naturally, one file per z-plane), or a zarr array/group (a "
                    "directory with zarr.json, or a URL such as gs://bucket/vol.zarr).\n\n"
                    "AXES: diced arrays are indexed z,y,x (t,c,z,y,x in general). A .npy, HDF5 "
                    "or TIFF file does not say which of its axes is z, so its first axis is "
                    "taken as z unless --axes names the source's order, e.g. --axes xyz for "
                    "an array indexed [x, y, z] (it is transposed while streaming). OME-Zarr "
                    "sources declare their axes and need no --axes.",
        epilog="examples:\n"
               "  diced ingest ~/fly.diced fly grayscale /data/raw.h5 --dataset /volumes/raw\n"
               "  diced ingest ~/fly.diced fly grayscale '/data/tiles/z*.tif' --offset 1000,0,0\n"
               "  diced ingest ~/fly.diced fly segmentation seg.npy --labels --create-repo\n"
               "  diced ingest ~/fly.diced fly grayscale fiji_export.npy --axes xyz\n"
               "  diced ingest ~/fly.diced fly channels stack.h5 --axes zcyx")
    p.add_argument("store", metavar="STORE",
                   help="store location: a path (embedded LMDB store) or an fsspec URL")
    p.add_argument("repo", metavar="REPO", help="repo name (alias); its head must be open")
    p.add_argument("name", metavar="NAME", help="name of the array to create (or fill)")
    p.add_argument("source", metavar="SOURCE", help="file, directory, glob or URL to read")
    p.add_argument("--dataset", default=None,
                   help="HDF5 dataset path inside the file, e.g. /volumes/raw")
    p.add_argument("--axes", default=None, metavar="ORDER",
                   help="the SOURCE's axis order, letters from t,c,z,y,x: zyx (first axis "
                        "is z), xyz (indexed [x,y,z]; transposed to z,y,x), czyx, zyxc, yx... "
                        "(default: as the source declares, else zyx with a warning)")
    p.add_argument("--offset", type=_ints, default=None,
                   help="array index of the source's first voxel in diced's order, z,y,x "
                        "(default 0,0,0)")
    p.add_argument("--labels", action="store_true",
                   help="create a label array (uint64 segmentation with a label index)")
    p.add_argument("--dtype", default=None,
                   help="dtype of the new array, e.g. uint16 (default: the source's)")
    p.add_argument("--chunks", type=_ints, default=None,
                   help="chunk shape of the new array, e.g. 64,64,64 (default: diced's)")
    p.add_argument("--max-scale", type=int, default=0,
                   help="keep a downsampled pyramid with this many levels (default 0)")
    p.add_argument("--slab", type=int, default=None,
                   help="planes per slab (rounded up to whole chunk rows; default one row)")
    p.add_argument("--into-existing", action="store_true",
                   help="write into an existing array NAME instead of creating it")
    p.add_argument("--create-repo", action="store_true",
                   help="create the store and repo REPO if they do not exist")
    p.add_argument("--no-resume", action="store_true",
                   help="ignore the record of an interrupted ingest and start from slab 0")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_cluster_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Ingest SOURCE into the repo's head."""
    import diced
    from diced.cli._store import open_existing_store
    from diced.errors import RepoNotFoundError
    from diced.export.ingest import ingest

    if args.create_repo:
        store = diced.Store(args.store)
    else:
        store = open_existing_store(args.store)
    try:
        repo = store.open_repo(args.repo)
    except RepoNotFoundError as exc:
        if not args.create_repo:
            raise RepoNotFoundError(f"{exc}; pass --create-repo to make it") from exc
        repo = store.create_repo(args.repo)
    if wants_cluster(args):
        return _run_cluster(args, repo)
    report = ingest(args.source, repo, args.name, dataset=args.dataset, axes=args.axes,
                    offset=args.offset,
                    create=not args.into_existing, dtype=args.dtype, labels=args.labels,
                    slab=args.slab, chunks=args.chunks, max_scale=args.max_scale,
                    progress=not args.quiet, resume=not args.no_resume)
    resumed = f", resumed after {report.slabs_skipped} slabs" if report.resumed else ""
    print(f"ingested {report.source} {report.shape} into {args.repo}/{report.name} at offset "
          f"{report.offset}: {report.slabs_written} slabs, {report.bytes_written / 1e6:.1f} MB "
          f"in {report.seconds:.1f} s ({report.mb_per_s:.0f} MB/s){resumed}")
    return 0


def _run_cluster(args: argparse.Namespace, repo: Any) -> int:
    """``--scheduler`` / ``--workers``: a cluster job writing a new child of the head (the
    head must be committed; a fresh repo's empty root is committed here). Rerunning an
    interrupted command resumes it."""
    import time

    from diced.cluster import ingest as cluster_ingest
    from diced.cluster.blocks import SourceArray
    from diced.errors import InvalidArgumentError, UnlockedNodeError

    if args.no_resume or args.slab is not None:
        raise InvalidArgumentError(
            "--no-resume and --slab are for the serial ingest; a cluster ingest resumes by "
            "rerunning (diced.cluster.Job.load(repo, name).abandon() drops an unfinished job)")
    head = repo.head
    if not head.locked:
        if len(repo.versions()) == 1 and not repo.instances():
            head = repo.commit("empty root")
        else:
            raise UnlockedNodeError(
                f"the head {head.uuid[:12]} is open: with --scheduler/--workers the ingest "
                "writes a new child version of the head; commit it first ('diced commit')")
    src = SourceArray(args.source, dataset=args.dataset, axes=args.axes)
    create = None
    if not args.into_existing:
        create = {k: v for k, v in (("dtype", args.dtype), ("chunks", args.chunks),
                                    ("max_scale", args.max_scale)) if v}
    t0 = time.perf_counter()
    with cluster_client(args) as client:
        version = cluster_ingest(repo, args.name, src, offset=args.offset, create=create,
                                 labels=args.labels, client=client,
                                 note=f"ingest {args.source}")
    repo.checkout(version.uuid)
    secs = time.perf_counter() - t0
    nbytes = src.dtype.itemsize * math.prod(src.shape)
    print(f"ingested {args.source} {src.shape} into {args.repo}/{args.name} as version "
          f"{version.uuid[:12]} (now the head) on the cluster: {nbytes / 1e6:.1f} MB in "
          f"{secs:.1f} s ({nbytes / max(secs, 1e-9) / 1e6:.0f} MB/s)")
    return 0
