"""HTTP throughput of ``diced serve`` against in-process reads of the same data.

    python benchmarks/bench_server.py [--path /work/shared/data/real/pinky40-segmentation-512.npy.gz]
                                      [--repeat 3] [--soak 30] [--markdown BENCHMARKS.md]

Builds an LMDB store with a 256³ uint8 image and the first 256³ of the pinky40 segmentation
(64³ label blocks), starts ``diced serve`` in a separate process on a free loopback port, and
measures with httpx clients (threads in this process):

* GET ``raw/0_1_2/256_256_256/0_0_0`` of the uint8 image, 1 and 8 concurrent clients;
* GET ``blocks/256_256_256/0_0_0`` of the labels (``compression=blocks``, DVID's gzip'd label
  blocks as neuclease asks, and the default lz4), 1 and 8 concurrent clients;
* the same reads in-process (``gray[:]``, ``seg.read(...)``) with 1 and 8 threads;
* p50 / p90 latency of a 64³ label ``raw`` with ``compression=googlegzip`` (Neuroglancer's
  request) at random block-aligned offsets, one client;
* with ``--soak S``: 16 readers and 2 writers for S seconds; reports requests, errors and lost
  writes (must be 0 and 0).

MB/s always counts uncompressed voxel bytes (256³ = 16 MiB of uint8, 128 MiB of uint64), so
HTTP and in-process numbers compare directly whatever the wire encoding.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATH = Path("/work/shared/data/real/pinky40-segmentation-512.npy.gz")
N = 256


def _load_labels(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        vol = np.load(f)
    return np.ascontiguousarray(vol[:N, :N, :N]).astype(np.uint64)


def _gray() -> np.ndarray:
    rng = np.random.default_rng(0)
    coarse = rng.integers(40, 220, size=(N // 16 + 1,) * 3).astype(np.float32)
    vol = coarse.repeat(16, 0).repeat(16, 1).repeat(16, 2)[:N, :N, :N]
    vol += rng.normal(0, 6, size=vol.shape).astype(np.float32)
    return np.clip(vol, 0, 255).astype(np.uint8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(store_path: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "diced", "serve", store_path, "--port",
                             str(port)], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/api/server/info", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("diced serve did not start")


def _concurrent(fn, clients: int, per_client: int) -> float:
    """Seconds for ``clients`` threads each calling ``fn(i)`` ``per_client`` times."""
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            for _ in range(per_client):
                fn(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return dt


def _best(fn, clients: int, per_client: int, repeat: int) -> float:
    return min(_concurrent(fn, clients, per_client) for _ in range(repeat))


def main(argv: list[str] | None = None) -> int:
    import httpx
    import lz4.block

    import diced

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", type=Path, default=DEFAULT_PATH, help="pinky40 .npy.gz")
    ap.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    ap.add_argument("--soak", type=float, default=0.0, help="seconds of 16 readers + 2 writers")
    ap.add_argument("--latency-requests", type=int, default=200)
    ap.add_argument("--markdown", type=Path, default=None, help="print the table for this file")
    args = ap.parse_args(argv)

    load0 = os.getloadavg()[0]
    tmp = tempfile.mkdtemp(prefix="bench-server-")
    store_path = os.path.join(tmp, "bench.diced")
    store = diced.Store(store_path)
    repo = store.create_repo("bench")
    gray = repo.create_array("gray", "uint8", (N, N, N))
    gray[:] = _gray()
    seg = repo.create_labels("seg", (N, N, N))
    seg[:] = _load_labels(args.path)
    uuid = repo.uuid
    store.close()

    proc, url = _start_server(store_path)
    rows: list[tuple[str, int, float, float, float]] = []
    try:
        local = diced.Store(store_path).open_repo("bench")
        lgray, lseg = local.array("gray"), local.labels("seg")
        clients = [httpx.Client(base_url=url, timeout=300) for _ in range(8)]
        raw_url = f"/api/node/{uuid}/gray/raw/0_1_2/{N}_{N}_{N}/0_0_0"
        blocks_url = f"/api/node/{uuid}/seg/blocks/{N}_{N}_{N}/0_0_0"

        def get_raw(i: int) -> None:
            r = clients[i].get(raw_url)
            assert r.status_code == 200 and len(r.content) == N ** 3

        def get_blocks(comp: str):
            def fn(i: int) -> None:
                r = clients[i].get(blocks_url, params={"compression": comp})
                assert r.status_code == 200
                data, pos, n = r.content, 0, 0
                while pos < len(data):  # walk the stream (the payloads stay encoded)
                    pos += 16 + int.from_bytes(data[pos + 12:pos + 16], "little")
                    n += 1
                assert n == (N // 64) ** 3
            return fn

        def local_gray(i: int) -> None:
            lgray[:]

        def local_seg(i: int) -> None:
            lseg.read(...)

        get_raw(0)  # warm up (numba JIT in the server, caches)
        get_blocks("blocks")(0)
        local_seg(0)
        for name, fn, nbytes in [
                ("GET raw 256³ uint8", get_raw, N ** 3),
                ("in-process gray[:] 256³ uint8", local_gray, N ** 3),
                ("GET blocks 256³ labels (compression=blocks)", get_blocks("blocks"), 8 * N ** 3),
                ("GET blocks 256³ labels (lz4, default)", get_blocks("lz4"), 8 * N ** 3),
                ("in-process seg.read() 256³ labels", local_seg, 8 * N ** 3)]:
            for c in (1, 8):
                per = 2 if c == 1 else 1
                dt = _best(fn, c, per, args.repeat)
                nreq = c * per
                rows.append((name, c, dt / per if c == 1 else dt, nreq / dt,
                             nreq * nbytes / dt / 1e6))
                print(f"{name:50s} clients={c} {nreq / dt:7.2f} req/s "
                      f"{nreq * nbytes / dt / 1e6:8.1f} MB/s", flush=True)

        # Neuroglancer's request: one 64³ label chunk with compressed_segmentation + gzip
        rng = random.Random(0)
        lat = []
        c0 = clients[0]
        for _ in range(args.latency_requests):
            x, y, z = (rng.randrange(N // 64) * 64 for _ in range(3))
            t0 = time.perf_counter()
            r = c0.get(f"/api/node/{uuid}/seg/raw/0_1_2/64_64_64/{x}_{y}_{z}",
                       params={"compression": "googlegzip", "scale": 0})
            lat.append(time.perf_counter() - t0)
            assert r.status_code == 200
        lat.sort()
        p50, p90 = statistics.median(lat) * 1e3, lat[int(0.9 * len(lat))] * 1e3
        t0 = time.perf_counter()
        for _ in range(20):
            lseg.read((slice(64, 128), slice(64, 128), slice(64, 128)))
        inproc64 = (time.perf_counter() - t0) / 20 * 1e3
        print(f"64³ label raw googlegzip: p50 {p50:.1f} ms, p90 {p90:.1f} ms "
              f"(in-process 64³ read {inproc64:.1f} ms)", flush=True)
        # the lz4 block check keeps the import honest (payload format as DVID's)
        lz4.block  # noqa: B018

        soak = None
        if args.soak:
            soak = _soak(url, uuid, args.soak)
            print(f"soak {args.soak:.0f} s: {soak}", flush=True)
        for c in clients:
            c.close()
    finally:
        proc.terminate()
        proc.wait(30)
    load1 = os.getloadavg()[0]
    if args.markdown:
        print()
        print(f"1-minute load average {load0:.1f} before / {load1:.1f} after, {os.cpu_count()} cores.")
        print()
        print("| request | clients | req/s | MB/s (voxel bytes) |")
        print("|---|---:|---:|---:|")
        for name, c, _dt, rps, mbs in rows:
            print(f"| {name} | {c} | {rps:.2f} | {mbs:.0f} |")
        print()
        print(f"64³ label `raw?compression=googlegzip`: p50 {p50:.1f} ms, p90 {p90:.1f} ms "
              f"({args.latency_requests} requests, one client).")
        if soak:
            print(f"Soak: {soak}")
    return 0


def _soak(url: str, uuid: str, seconds: float) -> str:
    """16 readers + 2 writers for ``seconds`` on the bench store; counts errors and lost writes."""
    import httpx

    stop = time.monotonic() + seconds
    errors: list[str] = []
    done = {"reads": 0}
    written: dict[int, list[str]] = {0: [], 1: []}
    lock = threading.Lock()

    def reader(i: int) -> None:
        paths = [f"/api/node/{uuid}/gray/raw/0_1_2/64_64_64/{(i % 4) * 64}_0_0",
                 f"/api/node/{uuid}/seg/raw/0_1_2/64_64_64/0_{(i % 4) * 64}_0?compression=googlegzip",
                 f"/api/node/{uuid}/seg/label/10_20_30", f"/api/node/{uuid}/kv/keys",
                 "/api/repos/info"]
        n = 0
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.monotonic() < stop:
                r = c.get(paths[n % len(paths)])
                n += 1
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:80]}")
        with lock:
            done["reads"] += n

    def writer(w: int) -> None:
        n = 0
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.monotonic() < stop:
                key = f"w{w}-{n:06d}"
                r = c.post(f"/api/node/{uuid}/kv/key/{key}", content=key.encode())
                z = (2 * n + w) % 256
                plane = np.full((1, 64, 64), 5_000_000 + z, np.uint64).tobytes()
                r2 = c.post(f"/api/node/{uuid}/seg/raw/0_1_2/64_64_1/0_0_{z}", content=plane)
                if r.status_code == 200 and r2.status_code == 200:
                    written[w].append(key)
                else:
                    errors.append(f"write {r.status_code} {r2.status_code}")
                n += 1

    with httpx.Client(base_url=url) as c:
        c.post(f"/api/repo/{uuid}/instance", json={"typename": "keyvalue", "dataname": "kv"})
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(16)]
    threads += [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with httpx.Client(base_url=url) as c:
        keys = set(c.get(f"/api/node/{uuid}/kv/keys").json())
    lost = sum(1 for ks in written.values() for k in ks if k not in keys)
    nw = sum(len(v) for v in written.values())
    return (f"{done['reads']} reads and {nw} writes (each a key POST and a 64×64 label plane POST "
            f"into shared blocks) in {seconds:.0f} s, {len(errors)} errors, {lost} lost writes")


if __name__ == "__main__":
    sys.exit(main())
