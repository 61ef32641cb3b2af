"""Viewer-style reads of a label volume at an open version (no cache: every read decodes),
diced against TensorStore without a cache pool, in one process.

At an open version, as a proofreading head is, diced caches nothing (the data may change),
so each read decodes the label blocks it meets; TensorStore with no cache pool decodes every
chunk it meets, too. The reads, of pinky40 (256^3, 64^3 chunks), median per read:

* 64 x 64 tiles of one z-plane inside one chunk (64 planes), as a viewer's 2-d tiles;
* 256 x 256 z-slices (10 planes, 16 chunks each);
* 20 unaligned 64^3 boxes (``random_boxes`` seed 2, as ``bench_core.py`` row 6).

diced reads a label array (DVID blocks, zstd-1) on LMDB at a new open version above the
locked one it was written in; TensorStore reads zarr3 (uint64, blosc zstd-1 with shuffle)
on its file kvstore with ``cache_pool`` 0. Both are checked against numpy first.

Usage: ``python benchmarks/bench_label_open.py [--labels PATH] [--reads 10]``
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import label_args, load_labels, random_boxes, zarr3_local_spec


def main() -> None:
    args = label_args(__doc__, 10)

    import tensorstore as ts

    import diced
    from diced.array._readcache import load_copy_kernels

    n = 256
    data = load_labels(args.labels, n)
    cases = {
        "64x64 tile": [(z, slice(64, 128), slice(128, 192)) for z in range(64, 128)],
        "256x256 z-slice": [(z, slice(None), slice(None)) for z in range(100, 110)],
        "64^3 unaligned box": random_boxes(n, 64, 20, seed=2),
    }
    with tempfile.TemporaryDirectory() as tmp:
        store = diced.Store(Path(tmp) / "d.lmdb", durable=False)
        repo = store.create_repo("r")
        seg = repo.create_labels("seg", data.shape)
        seg[...] = data
        repo.commit("written")
        repo.newversion("open")  # seg now reads at the open version
        load_copy_kernels()
        spec = zarr3_local_spec(f"{tmp}/ts", n, 0)
        t = ts.open(spec, create=True).result()
        t.write(data).result()
        readers = {"diced": lambda s: seg[s], "TensorStore": lambda s: t[s].read().result()}
        for sels in cases.values():
            for read in readers.values():
                assert all(np.array_equal(read(s), data[s]) for s in sels)
        print(f"pinky40 {n}^3 at an open version, no cache; median ms per read over "
              f"{args.reads} passes, interleaved:")
        for case, sels in cases.items():
            got: dict[str, list[float]] = {k: [] for k in readers}
            for _ in range(args.reads):
                for name, read in readers.items():
                    t0 = time.perf_counter()
                    for s in sels:
                        read(s)
                    got[name].append((time.perf_counter() - t0) / len(sels))
            d, o = (statistics.median(got[k]) * 1e3 for k in readers)
            print(f"  {case:<20} diced {d:7.3f}  TensorStore {o:7.3f}  TensorStore/diced "
                  f"{o / d:5.2f}x")
        store.close()


if __name__ == "__main__":
    main()
