"""Bare concurrent fetch of N objects from the GCS emulator: gcsfs ``cat`` against the
candidate native clients for gs:// reads (issue 12 §3; see BENCHMARKS.md, "Native GCS reads").

    PYTHONPATH=src python benchmarks/bench_gcs_fetch.py [--latency 0,20] [--size 262144]
        [--count 64] [--repeat 9] [--cold-reads 256]

The emulator (benchmarks/gcs_emulator.py) runs in a child process, behind bench_core.py's
delaying proxy when a latency is given. Candidates, interleaved, each checked against the
stored values before timing (wall time and this process's CPU time, medians):

* ``gcsfs cat``: what diced used before (``fs.cat(paths)``);
* ``diced GCSReader``: diced's native path (``backends/_native.py``: JSON-API media
  downloads on one aiohttp session on the native-reads loop);
* ``obstore GCSStore``: obstore's Rust client (XML API, ``base_url`` at the emulator);
* ``urllib3 threads``: JSON-API downloads on a urllib3 pool, 32 threads.

``--cold-reads N`` adds an A/B of whole diced cold reads (bench_core.py row 6's uint8 N^3
array and 20 unaligned 64^3 boxes: a new ``Store``, then ``open_repo`` + version + array +
read timed, chunk cache cleared), gcsfs reads against native reads, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).parent))
# gcsfs reads this when imported; left on, it spends a minute probing the emulator for gRPC
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def candidates(ep: str, bucket: str, paths: list[str]) -> dict[str, Any]:
    """name -> function returning the values of ``paths`` in order."""
    import gcsfs

    from diced.backends._native import native_reader

    fs = gcsfs.GCSFileSystem(token="anon", endpoint_url=ep, skip_instance_cache=True)
    keys = [p.partition("/")[2] for p in paths]
    out: dict[str, Any] = {}

    def gcsfs_cat() -> list[bytes]:
        got = fs.cat(paths)
        return [got[p] for p in paths]

    out["gcsfs cat"] = gcsfs_cat
    reader = native_reader(fs, bucket)
    if reader is not None:
        out["diced GCSReader"] = lambda: reader.read(keys)
    try:
        import obstore
        from obstore.store import GCSStore
    except ImportError:
        pass
    else:
        store = GCSStore(bucket, config={"base_url": ep, "skip_signature": True},
                         client_options={"allow_http": True})
        loop = asyncio.new_event_loop()

        async def ob_all() -> list[bytes]:
            async def one(k: str) -> bytes:
                got = await obstore.get_async(store, k)
                return bytes(await got.bytes_async())

            return list(await asyncio.gather(*(one(k) for k in keys)))

        out["obstore GCSStore"] = lambda: loop.run_until_complete(ob_all())
    import urllib3

    pool = urllib3.PoolManager(maxsize=32)
    threads = ThreadPoolExecutor(32)

    def u_one(k: str) -> bytes:
        url = f"{ep}/download/storage/v1/b/{bucket}/o/{quote(k, safe='')}?alt=media"
        return pool.request("GET", url).data

    out["urllib3 threads"] = lambda: list(threads.map(u_one, keys))
    return out


def cold_reads(direct: str, port: int, n: int, latencies: list[float], repeat: int) -> None:
    """diced cold reads through gcsfs vs through the native reader, interleaved."""
    import numpy as np
    from bench_core import CHUNKS, DICED_CODEC, ProxyProcess, make_image, random_boxes

    import diced
    from diced.backends.cache import chunk_cache

    url = "gs://fetch/cold"
    data = make_image(n)
    store = diced.Store(url, create=True, durable=False, token="anon", endpoint_url=direct)
    repo = store.create_repo("remote")
    repo.create_array("a", data.dtype, data.shape, chunks=CHUNKS, codec=DICED_CODEC)[...] = data
    uuid = repo.commit("locked").uuid
    store.close()
    boxes = random_boxes(n, 64, 20, seed=2)
    print(f"diced cold reads of a {n}^3 uint8 array, gcsfs vs native gs:// reads, median of "
          f"{repeat}")
    for lat in latencies:
        proxy = ProxyProcess(port, lat / 1000) if lat else None
        ep = f"http://127.0.0.1:{proxy.port}" if proxy else direct
        t: dict[tuple[str, str], list[tuple[float, float]]] = {}
        try:
            for rep in range(repeat):
                for mode in ("gcsfs", "native"):
                    for what, sels in (("whole", [Ellipsis]), ("boxes", boxes)):
                        chunk_cache().clear()
                        st = diced.Store(url, create=False, token="anon", endpoint_url=ep)
                        if mode == "gcsfs":
                            st.raw_backend._objects._native = None
                        t0, c0 = time.perf_counter(), time.process_time()
                        h = st.open_repo("remote").version(uuid).array("a")
                        got = [h[s] for s in sels]
                        t.setdefault((what, mode), []).append(
                            (time.perf_counter() - t0, time.process_time() - c0))
                        if rep == 0 and not all(np.array_equal(g, data[s])
                                                for g, s in zip(got, sels, strict=True)):
                            raise AssertionError(f"{mode} {what} read differs")
                        st.close()
        finally:
            if proxy is not None:
                proxy.close()
        for (what, mode), v in sorted(t.items()):
            print(f"  {lat:g} ms  {what:5s} {mode:6s}  wall "
                  f"{statistics.median(x[0] for x in v) * 1e3:7.1f} ms  (min "
                  f"{min(x[0] for x in v) * 1e3:6.1f})  client CPU "
                  f"{statistics.median(x[1] for x in v) * 1e3:6.1f} ms", flush=True)


def main(argv: list[str] | None = None) -> int:
    from bench_core import ProxyProcess, start_gcs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", default="0,20", help="comma-separated ms per request")
    ap.add_argument("--size", type=int, default=256 * 1024, help="bytes per object")
    ap.add_argument("--count", type=int, default=64, help="objects per fetch")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--cold-reads", type=int, default=0, metavar="N",
                    help="also time diced cold reads of an N^3 array, gcsfs vs native")
    args = ap.parse_args(argv)
    bucket = "fetch"
    server, port = start_gcs(bucket)
    try:
        import gcsfs

        direct = f"http://127.0.0.1:{port}"
        data = {f"{bucket}/obj/k {i:03d}%": os.urandom(args.size) for i in range(args.count)}
        gcsfs.GCSFileSystem(token="anon", endpoint_url=direct, skip_instance_cache=True).pipe(data)
        paths = list(data)
        want = [data[p] for p in paths]
        print(f"{args.count} objects of {args.size} B, GCS emulator on loopback, median of "
              f"{args.repeat}, load average {os.getloadavg()[0]:.1f}")
        latencies = [float(x) for x in args.latency.split(",") if x.strip()]
        for lat in latencies:
            proxy = ProxyProcess(port, lat / 1000) if lat else None
            ep = f"http://127.0.0.1:{proxy.port}" if proxy else direct
            try:
                fns = candidates(ep, bucket, paths)
                for name, fn in fns.items():
                    if fn() != want:
                        raise AssertionError(f"{name} read wrong values")
                wall: dict[str, list[float]] = {n: [] for n in fns}
                cpu: dict[str, list[float]] = {n: [] for n in fns}
                for _ in range(args.repeat):
                    for name, fn in fns.items():
                        t0, c0 = time.perf_counter(), time.process_time()
                        fn()
                        wall[name].append(time.perf_counter() - t0)
                        cpu[name].append(time.process_time() - c0)
                for name in fns:
                    print(f"  {lat:g} ms  {name:18s} wall {statistics.median(wall[name]) * 1e3:7.1f} ms"
                          f"  (min {min(wall[name]) * 1e3:6.1f})  client CPU "
                          f"{statistics.median(cpu[name]) * 1e3:6.1f} ms", flush=True)
            finally:
                if proxy is not None:
                    proxy.close()
        if args.cold_reads:
            cold_reads(direct, port, args.cold_reads, latencies, args.repeat)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
