"""Benchmark DVID export-shards writing on a real 512^3 segmentation.

Measures :func:`diced.export.arrow_shards.export_shards` from an :class:`ArraySource` whose
blocks are pre-encoded (so the numbers are export cost: header parse, label mapping, zstd,
Arrow serialization, file writes), against simply reading + decoding the same DVID blocks,
and reading the shards back. Peak memory during export is sampled from RSS (all allocators)
and tracemalloc (Python + numpy), and compared with the largest shard file.

Usage::

    python benchmarks/bench_export_shards.py [--path pinky40-segmentation-512.npy.gz]
        [--repeat 3] [--threads N]
"""

from __future__ import annotations

import argparse
import gc
import gzip
import os
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

DEFAULT_PATH = "/work/shared/data/real/pinky40-segmentation-512.npy.gz"


def _spec(size_xyz, preshift: int, minishard: int) -> dict:
    bits = sum(max(0, -(-s // 64) - 1).bit_length() for s in size_xyz)
    return {
        "@type": "neuroglancer_multiscale_volume",
        "type": "segmentation",
        "data_type": "uint64",
        "num_channels": 1,
        "scales": [
            {
                "chunk_sizes": [[64, 64, 64]],
                "encoding": "compressed_segmentation",
                "key": "s0",
                "resolution": [8, 8, 8],
                "size": list(size_xyz),
                "sharding": {
                    "@type": "neuroglancer_uint64_sharded_v1",
                    "hash": "identity",
                    "preshift_bits": preshift,
                    "minishard_bits": minishard,
                    "shard_bits": max(0, bits - preshift - minishard),
                },
            }
        ],
    }


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _RssPeak:
    """Samples RSS every 2 ms in a background thread."""

    def __enter__(self):
        self.base = _rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def delta(self) -> int:
        return self.peak - self.base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default=DEFAULT_PATH, help="gzipped .npy (x, y, z) segmentation")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    from diced.array.codecs.labelblock import decode_block
    from diced.export.arrow_shards import ArraySource, ShardFile, export_shards

    t = time.perf_counter()
    with gzip.open(args.path) as f:
        vol = np.load(f).transpose(2, 1, 0).astype(np.uint64)  # -> ZYX
    print(f"loaded {vol.shape} in {time.perf_counter() - t:.1f} s")
    rng = np.random.default_rng(0)
    ids = np.unique(vol)
    mapping = {int(i): int(b) for i, b in zip(ids, rng.integers(1, 2**40, len(ids)), strict=True)}

    source = ArraySource(vol, mapping=mapping)
    t = time.perf_counter()
    source.preencode()
    t_enc = time.perf_counter() - t
    coords = source.block_coords(0)
    blocks = source.read_dvid_blocks(coords, 0)
    raw_mb = sum(len(b) for b in blocks) / 1e6
    n = len(coords)
    print(f"pre-encoded {n} blocks ({raw_mb:.1f} MB DVID) in {t_enc:.2f} s")

    def best(fn):
        times = []
        for _ in range(args.repeat):
            gc.collect()
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    # baseline: read + decode every block
    def read_decode():
        for b in source.read_dvid_blocks(coords, 0):
            decode_block(b)

    t_dec, _ = best(read_decode)

    rows = [("read + decode DVID blocks (baseline)", t_dec, "-", "-", "-")]
    size_xyz = vol.shape[::-1]
    configs = [
        ("8 shards of 4x4x4 chunks, batch 1", 3, 3, 1, args.threads),
        ("8 shards of 4x4x4 chunks, batch 1, 1 thread", 3, 3, 1, 1),
        ("8 shards of 4x4x4 chunks, batch 256", 3, 3, 256, args.threads),
        ("1 shard of 8x8x8 chunks (mCNS bits), batch 256", 9, 6, 256, args.threads),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, pre, mini, batch, threads in configs:
            spec = _spec(size_xyz, pre, mini)
            dest = Path(tmp) / f"{pre}_{mini}_{batch}_{threads}"

            def run(spec=spec, dest=dest, batch=batch, threads=threads):
                return export_shards(
                    source,
                    spec,
                    dest,
                    batch_size=batch,
                    threads=threads,
                    overwrite=True,
                    progress=False,
                )

            t_exp, rep = best(run)
            largest = max(s.nbytes for s in rep.shards)
            gc.collect()
            tracemalloc.start()
            with _RssPeak() as rss:
                run()
            _, tm_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            rows.append(
                (
                    name,
                    t_exp,
                    f"{rep.bytes_written / 1e6:.1f}",
                    f"{largest / 1e6:.2f}",
                    f"{rss.delta / 1e6:.1f} / {tm_peak / 1e6:.1f}",
                )
            )
            if pre == 3 and batch == 1 and threads == args.threads:
                paths = rep.arrow_paths

                def read_back(paths=paths):
                    for p in paths:
                        for rec in ShardFile(p):
                            decode_block(rec.dvid_block("labels"))

                t_rb, _ = best(read_back)
                read_back_row = ("read shards back (stream + zstd + remap + decode)", t_rb)
    rows.append((*read_back_row, "-", "-", "-"))

    print()
    print(f"{n} blocks of 64^3, {raw_mb:.1f} MB of DVID block bytes, {os.cpu_count()} CPUs")
    print()
    print(
        "| operation | seconds | blocks/s | DVID MB/s | output MB | largest shard MB "
        "| peak mem MB (RSS / tracemalloc) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, secs, out_mb, largest, mem in rows:
        print(
            f"| {name} | {secs:.3f} | {n / secs:,.0f} | {raw_mb / secs:,.0f} | {out_mb} "
            f"| {largest} | {mem} |"
        )


if __name__ == "__main__":
    main()
