"""Annotation benchmark: post N synapses synced to a label array, then time queries by box,
by body and by tag, a merge of two large bodies, and a label block write under elements.

Usage: ``python benchmarks/bench_annotation.py [--elements 100000] [--repeat 3]``
(an LMDB store in a temporary directory, durable=False). Prints one table row per
operation (best of ``--repeat``) and the load average.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import diced


def best(fn, repeat: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--elements", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = 512
    with tempfile.TemporaryDirectory() as tmp:
        store = diced.Store(os.path.join(tmp, "bench.diced"), durable=False)
        repo = store.create_repo("bench")
        seg = repo.create_labels("seg", shape=(n, n, n), chunks=(64, 64, 64))
        cube = 64  # bodies: 8x8x8 cubes of 64^3 voxels
        idx = np.arange(n) // cube
        for z in range(0, n, 64):
            zz = idx[z:z + 64, None, None]
            seg[z:z + 64] = (zz * 64 + idx[None, :, None] * 8 + idx[None, None, :] + 1
                             ).astype(np.uint64)
        ann = repo.create_instance("synapses", "annotation")
        ann.sync("seg")
        pos = rng.integers(0, n, size=(args.elements, 3)).tolist()
        els = [{"Pos": p, "Kind": "PostSyn" if i % 2 else "PreSyn",
                "Tags": ["t"] if i % 100 == 0 else []} for i, p in enumerate(pos)]
        rows = []
        t = time.perf_counter()
        for i in range(0, len(els), 10_000):
            ann.post(els[i:i + 10_000])
        dt = time.perf_counter() - t
        rows.append(("post (batches of 10,000, synced)", dt, f"{len(els) / dt:,.0f} elements/s"))
        lo = rng.integers(0, n - 64, size=(20, 3))
        dt, got = best(lambda: [len(ann.box(a, a + 64)) for a in lo], args.repeat)
        rows.append(("box 64³ (20 boxes)", dt / 20, f"{np.mean(got):.0f} elements/box"))
        bodies = list(range(1, 21))
        dt, got = best(lambda: [len(ann.label(b)) for b in bodies], args.repeat)
        rows.append(("label(body), 20 bodies of 1 supervoxel", dt / 20,
                     f"{np.mean(got):.0f} elements/body"))
        dt, got = best(lambda: len(ann.tag("t")), args.repeat)
        rows.append(("tag (1% of elements)", dt, f"{got} elements"))
        t = time.perf_counter()
        seg.merge(1, list(range(2, 257)))
        rows.append(("merge 256 bodies into one (labels; no index work)",
                     time.perf_counter() - t, ""))
        dt, got = best(lambda: len(ann.label(1)), args.repeat)
        rows.append(("label(body) of the merged body (256 supervoxels)", dt,
                     f"{got} elements"))
        t = time.perf_counter()
        seg[0:64, 0:64, 0:64] = 100_000
        rows.append(("label block write 64³ (re-indexes the elements under it)",
                     time.perf_counter() - t, ""))
        store.close()
    print(f"load average: {os.getloadavg()}")
    print("| operation | ms | notes |\n|---|---|---|")
    for name, sec, note in rows:
        print(f"| {name} | {sec * 1000:,.1f} | {note} |")


if __name__ == "__main__":
    main()
