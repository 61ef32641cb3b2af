"""``--scheduler ADDRESS`` / ``--workers N``: run a command's work on a dask cluster."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["add_cluster_args", "cluster_client", "wants_cluster"]


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    """Add ``--scheduler`` and ``--workers`` to a subcommand."""
    g = p.add_argument_group("cluster (dask.distributed; needs the 'cluster' extra)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on the dask.distributed scheduler at ADDRESS (tcp://host:8786); "
                        "workers open the store by its URL, so use an object store or a "
                        "shared file system")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run on a local dask cluster of N worker processes (one thread each)")


def wants_cluster(args: argparse.Namespace) -> bool:
    """Whether ``--scheduler`` or ``--workers`` was given."""
    return getattr(args, "scheduler", None) is not None or \
        getattr(args, "workers", None) is not None


@contextmanager
def cluster_client(args: argparse.Namespace) -> Iterator[Any]:
    """A ``distributed.Client`` for ``--scheduler`` / ``--workers`` (closed afterwards)."""
    from diced.errors import BackendUnavailableError, InvalidArgumentError

    if args.scheduler is not None and args.workers is not None:
        raise InvalidArgumentError("give --scheduler or --workers, not both")
    if args.workers is not None and args.workers < 1:
        raise InvalidArgumentError(f"--workers must be at least 1, got {args.workers}")
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise BackendUnavailableError(
            "--scheduler/--workers need dask.distributed: pip install 'diced[cluster]'") from exc
    # the command's own output, not the scheduler's and workers' bookkeeping
    logging.getLogger("distributed").setLevel(logging.ERROR)
    if args.scheduler is not None:
        with Client(args.scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client
