"""Re-reads of a locked label volume with the same cache budget for diced and TensorStore.

diced keeps a label array's cached chunks as DVID label blocks (pinky40's are 2.5 % of the
voxels' bytes) and decodes each warm read from them; TensorStore's cache pool holds decoded
chunks. With the same budget (64 MiB: diced's default), this script reads each selection
``--reads`` times in one process and reports the first (cold) read and the median of the
others, for:

* a 256^3 region at an unaligned offset (125 chunks, 128 MiB decoded),
* a 512 x 512 z-slice (64 chunks, 2 MiB of result), as a viewer reads,
* 20 unaligned 64^3 boxes (160 chunk visits), as a proofreading tool reads,

one selection after the other, so the cache starts each with what the previous ones left.
diced reads an LMDB store (a locked version, labels in their default codec: DVID blocks,
zstd-1); TensorStore reads zarr3 on its file kvstore (uint64, blosc zstd-1 with shuffle, the
codec of ``bench_core.py``), with a ``cache_pool`` of the same size and
``recheck_cached_data: "open"``. Both volumes are written and flushed to disk
(``os.sync``), then each system opens its volume once, with an empty cache, and makes an
untimed read of one chunk (code loading is not counted). diced's copy kernels are waited
for (``load_copy_kernels``).

Usage: ``python benchmarks/bench_label_cache.py [--labels PATH] [--cache-mib 64] [--reads 6]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import CHUNKS, DEFAULT_LABELS, load_labels, random_boxes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", default=DEFAULT_LABELS, help="pinky40 segmentation .npy.gz")
    ap.add_argument("--cache-mib", type=int, default=64, help="cache budget of each system")
    ap.add_argument("--reads", type=int, default=6, help="reads of each selection (>= 2)")
    args = ap.parse_args(argv)
    if args.reads < 2:
        ap.error("--reads must be at least 2")
    if not Path(args.labels).exists():
        ap.error(f"no labels at {args.labels}")

    import tensorstore as ts

    import diced
    from diced.array._readcache import load_copy_kernels
    from diced.backends.cache import chunk_cache

    budget = args.cache_mib << 20
    lab = load_labels(args.labels, 512)
    selections = {
        "256^3 region": [(slice(100, 356), slice(130, 386), slice(70, 326))],
        "512x512 z-slice": [(300, slice(None), slice(None))],
        "20 64^3 boxes": random_boxes(512, 64, 20, seed=2),
    }
    with tempfile.TemporaryDirectory(prefix="bench-label-cache-") as tmp:
        root = Path(tmp)
        store = diced.Store(root / "d.lmdb", durable=False)
        repo = store.create_repo("r")
        seg = repo.create_labels("seg", lab.shape)
        seg[...] = lab
        uuid = repo.commit("locked").uuid
        store.close()
        spec: dict[str, Any] = {
            "driver": "zarr3", "kvstore": {"driver": "file", "path": str(root / "ts")},
            "metadata": {
                "shape": list(lab.shape), "data_type": "uint64", "fill_value": 0,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(CHUNKS)}},
                "chunk_key_encoding": {"name": "default"},
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                           {"name": "blosc", "configuration": {
                               "cname": "zstd", "clevel": 1, "shuffle": "shuffle",
                               "typesize": 8, "blocksize": 0}}]},
        }
        ts.open(spec, create=True).result().write(lab).result()
        os.sync()  # no write-back of the 1 GiB just written during the timed reads
        read_spec = {"driver": "zarr3", "kvstore": spec["kvstore"],
                     "recheck_cached_data": "open",
                     "context": {"cache_pool": {"total_bytes_limit": budget}}}
        old = chunk_cache().max_bytes
        chunk_cache().resize(budget)
        chunk_cache().clear()
        st = diced.Store(root / "d.lmdb", create=False)
        d = st.open_repo("r").version(uuid).labels("seg")
        t = ts.open(read_spec).result()
        d[0:8, 0:8, 0:8]
        t[0:8, 0:8, 0:8].read().result()
        load_copy_kernels()
        print(f"pinky40 512^3 labels, cache budget {args.cache_mib} MiB each, "
              f"{args.reads} reads of each selection (first = cold)\n")
        print("| selection | diced first | diced again | TS first | TS again | "
              "again: TS / diced |")
        print("|---|--:|--:|--:|--:|--:|")
        try:
            for name, sels in selections.items():
                times: dict[str, list[float]] = {"diced": [], "ts": []}
                for _ in range(args.reads):
                    for system in ("diced", "ts"):
                        t0 = time.perf_counter()
                        if system == "diced":
                            got = [d[s] for s in sels]
                        else:
                            got = [t[s].read().result() for s in sels]
                        times[system].append(time.perf_counter() - t0)
                        if len(times[system]) == 1 and not all(
                                np.array_equal(g, lab[s]) for g, s in zip(got, sels)):
                            raise AssertionError(f"{system}: {name} differs")
                        del got
                again = {k: statistics.median(v[1:]) for k, v in times.items()}
                print(f"| {name} | {times['diced'][0] * 1e3:.1f} ms | "
                      f"{again['diced'] * 1e3:.1f} ms | {times['ts'][0] * 1e3:.1f} ms | "
                      f"{again['ts'] * 1e3:.1f} ms | {again['ts'] / again['diced']:.2f}x |")
            stats = chunk_cache().stats()
            print(f"\ndiced cache: {stats['nbytes'] / 2 ** 20:.1f} MiB in {stats['entries']} "
                  f"label blocks, hit rate {stats['hit_rate']:.2f}")
        finally:
            st.close()
            chunk_cache().resize(old)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
