"""Datatype benchmark: ROI point queries, masks, partition and set operations on a
realistic ROI; the supervoxel contact graph (labelgraph adjacency) of the 512³ pinky40
segmentation; neuronjson queries.

Usage: ``python benchmarks/bench_datatypes.py [--points 1000000] [--repeat 3]
[--pinky /work/shared/data/real/pinky40-segmentation-512.npy.gz] [--skip-pinky]``
(an LMDB store in a temporary directory, durable=False). Prints one table row per operation
(best of ``--repeat``) and the load average.

The ROI is brain-region-like: a lumpy ellipsoid (radii 160 x 110 x 130 blocks of 32 voxels,
i.e. about 10 x 7 x 8 µm-scale voxel extents of 5,000 x 3,500 x 4,200 voxels) with tunnels,
so rows hold several spans, as FlyEM ROIs do.
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time

import numpy as np

import diced
from diced.datatypes.labelgraph import contact_graph


def best(fn, repeat: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def lumpy_roi(rng: np.random.Generator) -> np.ndarray:
    """Spans of a lumpy ellipsoid with tunnels along x (z, y, x0, x1 in blocks)."""
    rz, ry, rx = 130, 110, 160
    z = np.arange(-rz, rz + 1)[:, None]
    y = np.arange(-ry, ry + 1)[None, :]
    bump = 1 + 0.08 * np.sin(z / 9.0) * np.cos(y / 7.0)
    r2 = 1 - (z / rz) ** 2 - (y / ry) ** 2
    half = np.where(r2 > 0, rx * np.sqrt(np.clip(r2, 0, None)) * bump, -1).astype(np.int64)
    rows = []
    for (iz, iy), h in np.ndenumerate(half):
        if h < 0:
            continue
        x0, x1 = -int(h), int(h)
        # tunnels: cut up to three gaps into the row
        cuts = sorted(rng.integers(x0, x1 + 1, size=2 * int(rng.integers(0, 4))).tolist())
        edges = [x0, *cuts, x1]
        for k in range(0, len(edges) - 1, 2):
            a, b = edges[k], edges[k + 1]
            if b >= a:
                rows.append((iz + 200, iy + 150, a + 200, b + 200))
    return np.array(rows, np.int64)


def bench_roi(repo, rng, args, rows) -> None:
    spans = lumpy_roi(rng)
    roi = repo.create_instance("region", "roi")
    t = time.perf_counter()
    roi.put(spans)
    dt = time.perf_counter() - t
    stored = roi.get()
    note = (f"{len(spans):,} spans in, {len(stored):,} stored, "
            f"{len(np.unique(stored[:, 0])):,} plane keys, {len(roi):,} blocks")
    rows.append(("ROI put (replace)", dt, note))
    dt, _ = best(roi.get, args.repeat)
    rows.append(("ROI get (all spans)", dt, ""))
    lo, hi = roi.bounds()
    pts = rng.integers(lo, hi, size=(args.points, 3))
    dt, inside = best(lambda: roi.contains(pts), args.repeat)
    rows.append((f"ptquery {args.points:,} random points in the bounding box", dt,
                 f"{args.points / dt:,.0f} points/s ({inside.mean():.0%} inside)"))
    small = [pts[i * 1000:(i + 1) * 1000] for i in range(20)]
    dt, _ = best(lambda: [roi.contains(p) for p in small], args.repeat)
    rows.append(("ptquery 1,000 scattered points (20 calls)", dt / 20,
                 f"{1000 * 20 / dt:,.0f} points/s"))
    v = repo.commit("roi")
    repo.newversion()
    pinned = repo.version(v.uuid)["region"]
    pinned.contains(small[0])  # the handle keeps the locked ROI's spans
    dt, _ = best(lambda: [pinned.contains(p) for p in small], args.repeat)
    rows.append(("ptquery 1,000 scattered points at a locked version (20 calls)", dt / 20,
                 f"{1000 * 20 / dt:,.0f} points/s"))
    local = [np.array(c) + rng.integers(0, 256, size=(1000, 3))
             for c in rng.integers(lo, np.array(hi) - 256, size=(20, 3))]
    dt, _ = best(lambda: [roi.contains(p) for p in local], args.repeat)
    rows.append(("ptquery 1,000 points within 256³ (20 calls)", dt / 20,
                 f"{1000 * 20 / dt:,.0f} points/s"))
    c = (np.array(lo) + np.array(hi)) // 2
    dt, m = best(lambda: roi.mask(c - 256, c + 256), args.repeat)
    rows.append(("mask of a 512³ box", dt, f"{m.mean():.0%} inside"))
    dt, part = best(lambda: roi.partition(8), args.repeat)
    rows.append(("partition(batchsize=8)", dt, f"{part['NumSubvolumes']:,} subvolumes"))
    other = stored.copy()
    other[:, 0] += 17
    dt, u = best(lambda: roi.union(other), args.repeat)
    rows.append(("union with a shifted copy (spans in memory)", dt, f"{len(u):,} spans"))
    dt, d = best(lambda: roi.difference(other), args.repeat)
    rows.append(("difference with a shifted copy", dt, f"{len(d):,} spans"))


def bench_adjacency(repo, args, rows) -> None:
    t = time.perf_counter()
    with gzip.open(args.pinky) as f:
        vol = np.ascontiguousarray(np.load(f).transpose(2, 1, 0))
    rows.append(("load pinky40 512³ (gunzip + transpose)", time.perf_counter() - t,
                 f"{len(np.unique(vol)):,} labels, {vol.dtype}"))
    contact_graph(vol[:8, :8, :8])  # compile / load the numba cache
    dt, (edges, areas) = best(lambda: contact_graph(vol), args.repeat)
    note = (f"{len(edges):,} edges, {int(areas.sum()):,} contact faces, "
            f"{vol.size / dt / 1e6:,.0f} Mvoxel/s")
    rows.append(("contact graph of the numpy volume", dt, note))
    seg = repo.create_labels("pinky", shape=vol.shape, chunks=(64, 64, 64))
    t = time.perf_counter()
    for z in range(0, vol.shape[0], 64):
        seg[z:z + 64] = vol[z:z + 64].astype(np.uint64)
    rows.append(("write it as a label array (64³ chunks)", time.perf_counter() - t, ""))
    dt, (e2, a2) = best(lambda: contact_graph(seg), args.repeat)
    same = np.array_equal(e2, edges) and np.array_equal(a2, areas)
    rows.append(("contact graph of the label array (tiles, chunk by chunk)", dt,
                 f"{vol.size / dt / 1e6:,.0f} Mvoxel/s; same graph: {same}"))
    g = repo.create_instance("pinky_graph", "labelgraph")
    t = time.perf_counter()
    g.add_edges(edges, areas.astype(np.float64))
    rows.append(("store the graph (labelgraph.add_edges)", time.perf_counter() - t,
                 f"{len(edges):,} edges"))
    top = np.bincount(edges.ravel().astype(np.int64) % (1 << 40)).argmax()
    dt, nb = best(lambda: g.neighbors(int(top)), args.repeat)
    rows.append(("neighbors() of the best-connected label", dt, f"{len(nb)} neighbours"))
    dt, sg = best(lambda: g.subgraph(list(nb)[:200] + [int(top)]), args.repeat)
    rows.append(("subgraph of it and 200 neighbours", dt, f"{sg.number_of_edges():,} edges"))


def bench_neuronjson(repo, rng, args, rows) -> None:
    nj = repo.create_instance("neurons", "neuronjson")
    classes = [f"class{i}" for i in range(50)]
    docs = {int(b): {"class": classes[i % 50], "status": ["Traced", "Anchor", "Orphan"][i % 3],
                     "soma_side": "LHS" if i % 2 else "RHS", "group": int(i // 4)}
            for i, b in enumerate(rng.choice(10**9, size=20_000, replace=False))}
    t = time.perf_counter()
    nj.post_many(docs, user="bench")
    rows.append(("neuronjson post_many 20,000 documents", time.perf_counter() - t, ""))
    dt, got = best(lambda: nj.query({"class": ["class3", "class7"], "status": "re/^Tr"}),
                   args.repeat)
    rows.append(("neuronjson query (list OR + regex) over 20,000", dt, f"{len(got)} matches"))


def bench_labelsz(repo, rng, args, rows) -> None:
    n = 256
    seg = repo.create_labels("cubes", shape=(n, n, n), chunks=(64, 64, 64))
    idx = np.arange(n) // 32  # 512 bodies of 32³
    for z in range(0, n, 64):
        seg[z:z + 64] = (idx[z:z + 64, None, None] * 64 + idx[None, :, None] * 8
                         + idx[None, None, :] + 1).astype(np.uint64)
    ann = repo.create_instance("syn", "annotation")
    ann.sync("cubes")
    pos = rng.integers(0, n, size=(args.synapses, 3)).tolist()
    kinds = ("PreSyn", "PostSyn")
    for i in range(0, len(pos), 10_000):
        ann.post([{"Pos": p, "Kind": kinds[(i + j) % 2]} for j, p in enumerate(pos[i:i + 10_000])])
    lsz = repo.create_instance("syn_labelsz", "labelsz")
    lsz.sync("syn")
    dt, got = best(lambda: lsz.top(10, "PreSyn"), args.repeat)
    rows.append((f"labelsz top(10) over {args.synapses:,} synapses (open version)", dt,
                 f"best body {got[0]['PreSyn']} PreSyn"))
    dt, got = best(lambda: lsz.count(got[0]["Label"], "AllSyn"), args.repeat)
    rows.append(("labelsz count(body, AllSyn)", dt, f"{got['AllSyn']} elements"))
    v = repo.commit("labelsz")
    repo.newversion()
    pinned = repo.version(v.uuid)["syn_labelsz"]
    pinned.top(10, "PreSyn")
    dt, _ = best(lambda: pinned.threshold(60, "PreSyn"), args.repeat)
    rows.append(("labelsz threshold at a locked version (table kept)", dt, ""))
    seg = repo["cubes"]
    seg.merge(1, list(range(2, 65)))
    dt, got = best(lambda: lsz.count(1, "AllSyn"), args.repeat)
    rows.append(("labelsz count of a body merged from 64", dt, f"{got['AllSyn']} elements"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pinky", default="/work/shared/data/real/pinky40-segmentation-512.npy.gz")
    ap.add_argument("--skip-pinky", action="store_true")
    ap.add_argument("--synapses", type=int, default=50_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = diced.Store(os.path.join(tmp, "bench.diced"), durable=False)
        repo = store.create_repo("bench")
        bench_roi(repo, rng, args, rows)
        bench_neuronjson(repo, rng, args, rows)
        bench_labelsz(repo, rng, args, rows)
        if not args.skip_pinky:
            bench_adjacency(repo, args, rows)
        store.close()
    print("| operation | ms | notes |\n|---|---|---|")
    for name, dt, note in rows:
        print(f"| {name} | {dt * 1000:,.1f} | {note} |")
    print(f"\nload average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
