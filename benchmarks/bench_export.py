"""Benchmark neuroglancer precomputed export and HDF5 ingest.

(a) :func:`diced.export.precomputed.export_precomputed` of a 512³ uint8 image (raw and jpeg)
    and of the real 512³ pinky40 segmentation (compressed_segmentation), unsharded and
    sharded, against writing the same in-memory numpy array with TensorStore directly (same
    encoding, chunking and sharding). The ratio is diced time / TensorStore time; the
    difference is the cost of reading (decoding) the data out of diced.
(b) :func:`diced.export.ingest.ingest` of a chunked HDF5 dataset (default 1024³ uint8 = 1 GiB,
    generated in a temporary directory) into an embedded LMDB store: MB/s, tracemalloc peak
    and the RSS high-water mark.

Usage::

    python benchmarks/bench_export.py [--seg PATH] [--repeat 2] [--ingest-size 1024]
        [--skip-export] [--skip-ingest]
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import shutil
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Self

import numpy as np

DEFAULT_SEG = "/work/shared/data/real/pinky40-segmentation-512.npy.gz"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _RssSampler:
    """Peak RSS increase over a block, sampled every 5 ms (all allocators)."""

    def __enter__(self) -> Self:
        self.base = _rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.base) / 1e6


def _image(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    coarse = rng.integers(40, 220, size=(n // 16,) * 3).astype(np.uint8)
    vol = coarse.repeat(16, 0).repeat(16, 1).repeat(16, 2)
    noise = rng.integers(0, 12, size=vol.shape, dtype=np.uint8)
    return vol + noise


def _ts_direct(data: np.ndarray, dest: str, encoding: str, sharding: dict | None,
               chunks: tuple[int, int, int]) -> float:
    """Write ``data`` (z, y, x) with TensorStore alone; seconds."""
    import tensorstore as ts

    meta = {"size": list(reversed(data.shape)), "resolution": [8, 8, 8], "encoding": encoding,
            "chunk_size": list(reversed(chunks)), "voxel_offset": [0, 0, 0]}
    if encoding == "compressed_segmentation":
        meta["compressed_segmentation_block_size"] = [8, 8, 8]
    if sharding:
        meta["sharding"] = sharding
    spec = {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": dest + "/"},
            "scale_metadata": meta,
            "multiscale_metadata": {"data_type": data.dtype.name, "num_channels": 1,
                                    "type": "segmentation" if data.dtype == np.uint64
                                    else "image"}}
    t = time.perf_counter()
    store = ts.open(spec, create=True).result()
    store.T[0].write(data).result()
    return time.perf_counter() - t


def bench_export(seg_path: str, repeat: int, tmp: Path) -> list[tuple]:
    import diced
    from diced.export.precomputed import default_sharding, export_precomputed

    store = diced.Store(str(tmp / "export.diced"))
    repo = store.create_repo("bench")
    img = _image(512)
    gray = repo.create_array("gray", "uint8", img.shape, chunks=(64, 64, 64))
    gray[...] = img
    with gzip.open(seg_path) as f:
        seg = np.ascontiguousarray(np.load(f).transpose(2, 1, 0).astype(np.uint64))
    labels = repo.create_labels("seg", seg.shape, chunks=(64, 64, 64))
    labels[...] = seg
    rows = []
    for what, arr in (("image", gray), ("labels", labels)):
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            arr[...]
            best = min(best, time.perf_counter() - t0)
        print(f"read the whole {what} array from diced: {best:.2f} s "
              f"({arr.nbytes / 1e6 / best:.0f} MB/s)", flush=True)
    cases = [("image 512³ uint8", gray, img, "raw"), ("image 512³ uint8", gray, img, "jpeg"),
             ("pinky40 512³ uint64", labels, seg, "compressed_segmentation")]
    for what, arr, data, enc in cases:
        for sharded in (False, True):
            sharding = (default_sharding([8, 8, 8], 64 ** 3 * data.dtype.itemsize,
                                         data_encoding="raw" if enc == "jpeg" else "gzip")
                        if sharded else None)
            best_d = best_t = float("inf")
            peak = 0.0
            for i in range(repeat):
                d = str(tmp / f"d{i}")
                t = str(tmp / f"t{i}")
                with _RssSampler() as rs:
                    t0 = time.perf_counter()
                    export_precomputed(arr, d, encoding=enc, sharded=sharded, progress=False)
                    best_d = min(best_d, time.perf_counter() - t0)
                peak = max(peak, rs.delta_mb)
                best_t = min(best_t, _ts_direct(data, t, enc, sharding, (64, 64, 64)))
                size = sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file())
                shutil.rmtree(d)
                shutil.rmtree(t)
            mb = data.nbytes / 1e6
            rows.append((what, enc, "sharded" if sharded else "unsharded", best_d, mb / best_d,
                         best_t, mb / best_t, best_d / best_t, size / 1e6, peak))
            print(f"{what:22s} {enc:24s} {'sharded' if sharded else 'unsharded':9s} "
                  f"diced {best_d:6.2f} s ({mb / best_d:6.0f} MB/s)  tensorstore {best_t:6.2f} s "
                  f"({mb / best_t:6.0f} MB/s)  ratio {best_d / best_t:4.2f}  out {size / 1e6:6.1f} MB"
                  f"  peak RSS +{peak:.0f} MB", flush=True)
    store.close()
    return rows


def bench_ingest(n: int, tmp: Path) -> dict:
    import h5py

    import diced
    from diced.export.ingest import ingest

    path = tmp / "big.h5"
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("raw", shape=(n, n, n), dtype="uint8", chunks=(64, 64, 64))
        for z in range(0, n, 64):  # smooth-ish data with noise, written a slab at a time
            coarse = rng.integers(40, 220, size=(4, n // 16, n // 16)).astype(np.uint8)
            slab = coarse.repeat(16, 0).repeat(16, 1).repeat(16, 2)
            ds[z:z + 64] = slab + rng.integers(0, 12, size=slab.shape, dtype=np.uint8)
    print(f"generated {n}³ uint8 HDF5 ({path.stat().st_size / 1e9:.2f} GB) in "
          f"{time.perf_counter() - t:.1f} s", flush=True)
    store = diced.Store(str(tmp / "ingest.diced"))
    repo = store.create_repo("bench")
    slab_bytes = 64 * n * n
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    with _RssSampler() as rs:
        rep = ingest(path, repo, "raw", dataset="/raw", progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with h5py.File(path, "r") as f:
        z = n // 2
        assert np.array_equal(repo.array("raw")[z:z + 8], f["raw"][z:z + 8])
    out = {"MB": rep.bytes_written / 1e6, "s": rep.seconds, "MB/s": rep.mb_per_s,
           "slab MB": slab_bytes / 1e6, "tracemalloc MB": peak / 1e6,
           "RSS delta MB": rs.delta_mb, "ru_maxrss MB": maxrss / 1e6,
           "ru_maxrss before MB": maxrss0 / 1e6}
    print("ingest: " + ", ".join(f"{k} {v:.1f}" for k, v in out.items()), flush=True)
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seg", default=DEFAULT_SEG, help="pinky40 segmentation .npy.gz")
    ap.add_argument("--repeat", type=int, default=2, help="best of N (default 2)")
    ap.add_argument("--ingest-size", type=int, default=1024, help="edge of the HDF5 cube")
    ap.add_argument("--skip-export", action="store_true")
    ap.add_argument("--skip-ingest", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="diced-bench-export-"))
    try:
        if not args.skip_export:
            bench_export(args.seg, args.repeat, tmp)
        if not args.skip_ingest:
            bench_ingest(args.ingest_size, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
