"""Cluster (dask) benchmark: ingest a synthetic volume into a new version, then export it
to zarr and read it back through ``to_dask``, on a LocalCluster of 1, 2, ... worker
processes (one thread each).

Usage: ``python benchmarks/bench_cluster.py [--size 1024] [--workers 1,2] [--store file]
[--chunks 64]`` (``--store s3`` uses an in-process moto server: slow, it serves one request
at a time in Python). The source is generated on the workers (smooth data plus noise,
uint8, in 64-plane x 256 x 256 blocks aligned to the chunks), so nothing moves from the
driver. Prints one row per (workers, step): wall time, and the CPU seconds the workers and the
driver spent (load-independent: on N idle cores a CPU-bound step takes about
worker CPU / N), and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid

import numpy as np


def _synth(block_info=None):
    info = block_info[None]
    (z0, z1), (y0, y1), (x0, x1) = info["array-location"]
    z = np.arange(z0, z1, dtype=np.float32)[:, None, None]
    y = np.arange(y0, y1, dtype=np.float32)[None, :, None]
    x = np.arange(x0, x1, dtype=np.float32)[None, None, :]
    smooth = 100 + 60 * np.sin(z / 37.0) * np.cos(y / 23.0) + 40 * np.sin(x / 51.0)
    rng = np.random.default_rng(z0 * 1_000_003 + y0 * 1009 + x0)
    noise = rng.integers(0, 12, (z1 - z0, y1 - y0, x1 - x0), dtype=np.uint8)
    return (smooth.astype(np.uint8) + noise).astype(np.uint8)


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Step:
    """Wall time, and CPU seconds of the workers and of the driver, over one step."""

    def __init__(self, client) -> None:
        self.client = client

    def __enter__(self):
        self.w0 = sum(self.client.run(_cpu).values())
        self.d0 = _cpu()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        self.driver = _cpu() - self.d0
        self.workers = sum(self.client.run(_cpu).values()) - self.w0


def _s3():
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing"
                 ).create_bucket(Bucket="bench")
    opts = {"key": "testing", "secret": "testing", "anon": False,
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    return server, opts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--store", choices=["file", "lmdb", "s3"], default="file")
    ap.add_argument("--chunks", type=int, default=64)
    args = ap.parse_args()

    import dask.array as da
    import distributed

    import diced
    from diced import cluster

    n, c = args.size, args.chunks
    nbytes = n ** 3
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}")
    print("| workers | step | wall s | MB/s | worker CPU s | driver CPU s |")
    print("|---|---|---|---|---|---|")
    server, opts = (None, {})
    if args.store == "s3":
        server, opts = _s3()
    src_dir = os.path.dirname(os.path.dirname(os.path.abspath(diced.__file__)))
    os.environ["PYTHONPATH"] = src_dir + os.pathsep + os.environ.get("PYTHONPATH", "")
    tmp = tempfile.mkdtemp(prefix="bench-cluster-")
    try:
        for w in [int(x) for x in args.workers.split(",")]:
            tag = uuid.uuid4().hex[:8]
            if args.store == "file":
                loc = f"file://{tmp}/store-{tag}"
            elif args.store == "lmdb":
                loc = f"{tmp}/store-{tag}.diced"
            else:
                loc = f"s3://bench/store-{tag}"
            store = diced.Store(loc, **opts)
            repo = store.create_repo("bench")
            repo.commit("root")
            with distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                                          dashboard_address=":0") as lc, \
                    distributed.Client(lc) as client:
                src = da.map_blocks(_synth, dtype=np.uint8,
                                    chunks=((64,) * (n // 64), (256,) * (n // 256),
                                            (256,) * (n // 256)))

                def row(step, st, w=w):
                    print(f"| {w} | {step} | {st.wall:.1f} | {nbytes / st.wall / 1e6:.0f} | "
                          f"{st.workers:.1f} | {st.driver:.1f} |", flush=True)

                client.run(lambda: __import__("diced.cluster.blocks"))  # imports: not timed
                with _Step(client) as st:
                    client.compute(src.sum(dtype=np.uint64)).result()
                row("source alone (generate + sum, no diced)", st)
                with _Step(client) as st:
                    v = cluster.ingest(repo, "img", src, create={"chunks": [c, c, c]},
                                       client=client, lock=True)
                row(f"ingest {n}³ uint8 ({args.store})", st)
                arr = repo.version(v.uuid).array("img")
                dest = f"{tmp}/export-{tag}.zarr"
                with _Step(client) as st:
                    cluster.export_zarr(arr, dest, client=client)
                row("export zarr (local dir)", st)
                with _Step(client) as st:
                    client.compute(arr.to_dask().sum(dtype=np.uint64)).result()
                row(f"to_dask().sum() ({c}³ blocks)", st)
                with _Step(client) as st:
                    client.compute(arr.to_dask(chunks=(4 * c,) * 3).sum(
                        dtype=np.uint64)).result()
                row(f"to_dask(chunks={4 * c}³).sum()", st)
                shutil.rmtree(dest, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if server is not None:
            server.stop()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
