"""Garbage collection and deduplication (issue 8 §5): stored bytes on a realistic edit
history with and without ``dedup=True``, read speed with and without, and what a collection
costs as the store grows while the garbage stays the same.

Rows
  1  Edit history on the pinky40 256^3 segmentation (``tests/data/pinky40-256-zyx.npy.gz``)
     as a label array (64^3 blocks) plus a 256^3 uint8 EM-like image: v0 ingest; 12
     proofreading versions (each: 3 label merges, a 48^3 paint of a new label over one body
     and a 32^3 image retouch); a revert version (the painted and retouched boxes written
     back to their v0 voxels); two branches that edit the same blocks differently, merged
     (the first side wins the conflicts, materialised at the merge node); finally the same
     region copied to another position ("copy a good region over a bad one"). Stored bytes
     of versioned values (``d/`` + shared payloads ``x/``, checksums included) and of the
     whole store, plain vs dedup.
  2  Read speed, plain vs dedup stores of row 1 (LMDB): the stored payloads of every chunk
     at the head (resolution + fetch, no decoding: where dedup adds its one extra lookup),
     whole 256^3 label and image volumes, and 20 unaligned 64^3 boxes; best of --repeat,
     interleaved, chunk cache off.
  3  GC cost: a branch of 5 versions (each rewriting 16 image chunks of 16^3) deleted and
     collected in stores holding 1x, 8x and 64x as much other data (16^3 chunks); time, keys deleted, and the time
     a full listing of the store takes (what a scan-everything GC needs at least).

    python benchmarks/bench_gc.py [--repeat 5] [--only 1,2,3]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import diced
from diced.backends.cache import chunk_cache

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data" / "pinky40-256-zyx.npy.gz"


def stored_bytes(store: diced.Store, prefixes: tuple[str, ...]) -> int:
    raw = store.raw_backend
    total = 0
    for p in prefixes:
        keys = list(raw.list_keys(p))
        for i in range(0, len(keys), 4096):
            total += sum(len(v) for v in raw.get_many(keys[i:i + 4096]) if v is not None)
    return total


def em_like(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(128, 30, shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def build_history(path: str, dedup: bool, seg0: np.ndarray) -> tuple[diced.Store, dict]:
    rng = np.random.default_rng(42)
    store = diced.Store(path, dedup=dedup, durable=False)
    repo = store.create_repo("pinky")
    lab = repo.create_labels("seg", seg0.shape, chunks=(64, 64, 64))
    img = repo.create_array("em", "uint8", seg0.shape, chunks=(64, 64, 64))
    em0 = em_like(seg0.shape)
    t0 = time.perf_counter()
    lab[...] = seg0
    img[...] = em0
    v0 = repo.commit("ingest")
    bodies = [int(b) for b in np.unique(seg0) if b]
    painted: list[tuple[slice, ...]] = []
    for i in range(12):
        repo.newversion()
        for _ in range(3):
            a, b = rng.choice(bodies, 2, replace=False)
            try:
                lab.merge(int(a), [int(b)])
            except diced.errors.DicedError:
                pass
        z, y, x = (int(v) for v in rng.integers(0, 256 - 48, 3))
        box = (slice(z, z + 48), slice(y, y + 48), slice(x, x + 48))
        cur = lab.read(box, supervoxels=True)
        cur[cur == np.bincount(cur.ravel() % 4096).argmax()] = 10_000 + i  # paint one body
        lab[box] = cur
        painted.append(box)
        z, y, x = (int(v) for v in rng.integers(0, 256 - 32, 3))
        ibox = (slice(z, z + 32), slice(y, y + 32), slice(x, x + 32))
        img[ibox] = np.clip(img[ibox].astype(int) + 10, 0, 255).astype(np.uint8)
        painted.append(ibox)
        repo.commit(f"proofread {i}")
    repo.newversion()
    for box in painted:  # revert every edit to its v0 voxels
        lab[box] = seg0[box]
        img[box] = em0[box]
    repo.commit("revert")
    base = repo.head
    repo.branch("left")
    lab[64:128, 64:128, 64:128] = 20_001
    img[:64, :64, :64] = 7
    left = repo.commit("left")
    repo.branch("right", parent=base.uuid)
    lab[64:128, 64:128, 64:128] = 20_002
    img[:64, :64, :64] = 9
    right = repo.commit("right")
    repo.checkout(branch="master")
    repo.merge(left.uuid, right.uuid, note="merge", strategy=left.uuid)
    # copy a region over another (identical payloads at another position)
    img[128:192, 128:192, 128:192] = img[0:64, 192:256, 0:64]
    repo.commit("copy region")
    build = time.perf_counter() - t0
    return store, {"versions": len(repo.versions()), "build_s": build, "v0": v0.uuid}


def row1(tmp: str, seg0: np.ndarray) -> dict:
    out = {}
    for dedup in (False, True):
        path = os.path.join(tmp, f"hist-{'dedup' if dedup else 'plain'}.diced")
        store, info = build_history(path, dedup, seg0)
        out[dedup] = {**info, "values": stored_bytes(store, ("d/", "x/")),
                      "total": stored_bytes(store, ("",)), "path": path,
                      "refs": sum(1 for _ in store.raw_backend.list_keys("r/")),
                      "payloads": sum(1 for _ in store.raw_backend.list_keys("x/")),
                      "keys": sum(1 for _ in store.raw_backend.list_keys("d/"))}
        store.close()
    p, d = out[False], out[True]
    print("## row 1: stored bytes, pinky40 256^3 labels + 256^3 uint8 image, "
          f"{p['versions']} versions")
    print("| store | versioned values (d/ + x/) | whole store | build time |")
    print("|---|---|---|---|")
    for name, r in (("plain", p), ("dedup", d)):
        print(f"| {name} | {r['values'] / 1e6:.2f} MB | {r['total'] / 1e6:.2f} MB | "
              f"{r['build_s']:.1f} s |")
    print(f"dedup / plain: values {d['values'] / p['values']:.3f}, "
          f"whole store {d['total'] / p['total']:.3f}; {d['keys']} stored values, "
          f"{d['refs']} by reference to {d['payloads']} distinct payloads")
    return out


def row2(hist: dict, repeat: int) -> None:
    chunk_cache().resize(0)
    rng = np.random.default_rng(5)
    boxes = [tuple(slice(int(o), int(o) + 64) for o in rng.integers(0, 192, 3))
             for _ in range(20)]
    res: dict[bool, dict[str, float]] = {False: {}, True: {}}
    stores = {dd: diced.Store(hist[dd]["path"], durable=False) for dd in (False, True)}
    for _ in range(repeat):
        for dd in ((False, True) if _ % 2 else (True, False)):  # interleaved so machine noise hits both alike
            repo = stores[dd].open_repo("pinky")
            lab, img = repo.labels("seg"), repo.array("em")
            ctx = repo._ctx(repo.head.id)
            lkeys = lab._space.live_keys(ctx)
            ikeys = img._space.live_keys(ctx)
            reads = {
                "fetch payloads: 64 label + 64 image chunks":
                    lambda lab=lab, img=img, ctx=ctx, lk=lkeys, ik=ikeys:
                    (lab._space.read_many(lk, ctx), img._space.read_many(ik, ctx)),
                "labels 256^3": lambda lab=lab: lab[...],
                "image 256^3": lambda img=img: img[...],
                "20 label boxes 64^3": lambda lab=lab: [lab[b] for b in boxes],
                "20 image boxes 64^3": lambda img=img: [img[b] for b in boxes],
            }
            for name, fn in reads.items():
                t = time.perf_counter()
                fn()
                dt = time.perf_counter() - t
                res[dd][name] = min(res[dd].get(name, 1e9), dt)
    print(f"## row 2: reads at the head, LMDB, best of {repeat}, chunk cache off")
    print("| read | plain | dedup | dedup / plain |")
    print("|---|---|---|---|")
    for name in res[False]:
        a, b = res[False][name], res[True][name]
        print(f"| {name} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {b / a:.2f} |")
    for s in stores.values():
        s.close()


def row3(tmp: str, repeat: int) -> None:
    print("## row 3: gc of one deleted 5-version branch (80 chunk writes) as the store grows")
    print("| store | other data in the store | keys in store | gc time | keys deleted | "
          "list every key once |")
    print("|---|---|---|---|---|---|")
    for kind, factor in [(k, f) for k in ("lmdb", "file") for f in (1, 8, 64)]:
        best = None
        for _ in range(max(1, repeat // 2)):
            path = os.path.join(tmp, f"gc-{kind}-{factor}.diced")
            shutil.rmtree(path, ignore_errors=True)
            if kind == "lmdb":
                store = diced.Store(path, durable=False)
            else:
                store = diced.Store(Path(path).as_uri())
            repo = store.create_repo("g")
            img = repo.create_array("big", "uint8", (64 * factor, 128, 128), chunks=(16, 16, 16))
            img[...] = np.random.default_rng(1).integers(0, 255, img.shape, dtype=np.uint8)
            repo.commit("base")
            repo.branch("tmp")
            for i in range(5):
                img[:32, :32, :32] = i + 1
                img[:32, :32, 32:64] = em_like((32, 32, 32), 10 + i)
                repo.commit(f"t{i}")
                if i < 4:
                    repo.newversion()
            repo.delete_branch("tmp")
            nkeys = sum(1 for _ in store.raw_backend.list_keys(""))
            t = time.perf_counter()
            rep = store.gc()
            dt = time.perf_counter() - t
            t = time.perf_counter()
            sum(1 for _ in store.raw_backend.list_keys(""))
            scan = time.perf_counter() - t
            store.close()
            if best is None or dt < best[0]:
                best = (dt, rep.keys, nkeys, scan)
        dt, keys, nkeys, scan = best  # type: ignore[misc]
        size = 64 * factor * 128 * 128
        print(f"| {kind} | {size / 1e6:.0f} MB raw uint8 | {nkeys} | {dt * 1e3:.1f} ms | {keys} | "
              f"{scan * 1e3:.1f} ms |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default="1,2,3")
    args = ap.parse_args()
    only = {int(x) for x in args.only.split(",")}
    print(f"# bench_gc: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, "
          f"python {sys.version.split()[0]}")
    with gzip.open(DATA) as f:
        seg0 = np.load(f).astype(np.uint64)
    tmp = tempfile.mkdtemp(prefix="bench-gc-")
    try:
        hist = None
        if only & {1, 2}:
            hist = row1(tmp, seg0)
        if 2 in only and hist is not None:
            row2(hist, args.repeat)
        if 3 in only:
            row3(tmp, args.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
