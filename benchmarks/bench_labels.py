#!/usr/bin/env python
"""Label-array benchmark of diced on the real 512^3 segmentation (pinky40), in one process.

Rows
  a  full write and full read of the 512^3 uint64 label array: diced LabelArray (DVID
     compressed label blocks + zstd 1, 64^3 blocks, label index maintained on write) on LMDB
     against TensorStore writing and reading the same data as zarr3 + blosc (zstd level 1,
     byte shuffle, 64^3 chunks) on local disk. Target: diced full read >= 1.0x TensorStore.
  b  sparsevol (legacy RLE bytes) of the largest label.
  c  merge of the two largest bodies, and a cleave back.
  d  label_diff against the parent version after rewriting 8 blocks.

Both systems run on local disk in a temporary directory under ``--dir`` (removed at exit),
with the page cache warm; every timing is the best of ``--repeat`` runs, diced and TensorStore
interleaved within each repeat. diced opens LMDB with ``durable=False`` (TensorStore does not
fsync either). Ratios are ``time(TensorStore) / time(diced)``: above 1 means diced is faster.
MB/s are 10^6 bytes per second of uncompressed uint64 data.

    python benchmarks/bench_labels.py                     # full run (about a minute)
    python benchmarks/bench_labels.py --dir /scratch --repeat 5
    python benchmarks/bench_labels.py --profile           # cProfile of the diced full read
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import gzip
import io
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_LABELS = "/work/shared/data/real/pinky40-segmentation-512.npy.gz"
CHUNKS = (64, 64, 64)


def load_labels(path: str, n: int) -> np.ndarray:
    with gzip.open(path) as f:
        raw = np.load(f)
    lab = np.ascontiguousarray(raw.transpose(2, 1, 0), dtype=np.uint64)
    del raw
    if n < lab.shape[0]:
        lab = np.ascontiguousarray(lab[:n, :n, :n])
    return lab


def clock(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t, out = clock(fn)
        times.append(t)
    return min(times), out


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def ts_open(path: Path, shape: tuple[int, ...], create: bool) -> Any:
    import tensorstore as ts

    spec: dict[str, Any] = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
    if create:
        spec["metadata"] = {
            "shape": list(shape), "data_type": "uint64", "fill_value": 0,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(CHUNKS)}},
            "chunk_key_encoding": {"name": "default"},
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                       {"name": "blosc", "configuration": {"cname": "zstd", "clevel": 1,
                                                           "shuffle": "shuffle", "typesize": 8,
                                                           "blocksize": 0}}],
        }
        return ts.open(spec, create=True, delete_existing=True).result()
    return ts.open(spec).result()


def mbps(nbytes: int, t: float) -> str:
    return f"{nbytes / t / 1e6:8.0f} MB/s"


def stages(L: Any, mapped: Any) -> None:
    """Where the time of a full read goes: the work of ``L[...]`` split into stages, each timed
    on one thread over all blocks (the real read runs per-block stages on a thread pool)."""
    from diced.array.codecs.labelblock import decode_block
    from diced.array.labelstats import relabel_inplace
    from diced.repo import keys as K

    ctx = L._ref.ctx()
    grid = [-(-n // c) for n, c in zip(L.shape, L.chunks, strict=True)]
    coords = [(z, y, x) for z in range(grid[0]) for y in range(grid[1]) for x in range(grid[2])]
    ckeys = [K.chunk_ckey(c) for c in coords]
    sls = [tuple(slice(i * k, (i + 1) * k) for i, k in zip(c, L.chunks, strict=True))
           for c in coords]
    t_get, vals = clock(lambda: L._space.read_many(ckeys, ctx))
    t_outer, raw = clock(lambda: [L.codec.decode_block_bytes(v, L.chunks) for v in vals])
    scratch = np.empty(L.chunks, np.uint64)
    t_dec, _ = clock(lambda: [decode_block(b, L.chunks, out=scratch) for b in raw])
    t_new, _ = clock(lambda: [decode_block(b, L.chunks) for b in raw])  # fresh array per block
    t_touch, out = clock(lambda: np.full(L.shape, 1, np.uint64))  # first touch of the output

    def copy() -> None:
        for sl in sls:
            out[sl] = scratch

    t_copy, _ = clock(copy)
    keys, values = mapped._mapping_table(mapped._ref.ctx())
    t_map, _ = clock(lambda: relabel_inplace(out, keys, values))
    compressed = sum(len(v) for v in vals)
    dvid = sum(len(b) for b in raw)
    print(f"  backend get {t_get:.2f} s ({compressed / 1e6:.1f} MB stored) | zstd {t_outer:.2f} s "
          f"(-> {dvid / 1e6:.1f} MB DVID blocks) | DVID decode into a reused 64^3 buffer "
          f"{t_dec:.2f} s (into a fresh array per block {t_new:.2f} s)")
    print(f"  first touch of the 1 GiB output {t_touch:.2f} s | copy of 512 blocks into the "
          f"(strided) output {t_copy:.2f} s | sum (reused buffer) "
          f"{t_get + t_outer + t_dec + t_touch + t_copy:.2f} s")
    print(f"  mapping of {len(keys)} supervoxel(s) applied to the full output: {t_map:.2f} s "
          "(one thread, after the parallel decode)")


def profile(L: Any, mapped: Any, label: int) -> None:
    print("\nprofile of the diced full read (stages timed serially on one thread):")
    stages(L, mapped)
    prof = cProfile.Profile()
    prof.enable()
    L.sparsevol(label)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(8)
    print(f"cProfile of sparsevol({label}) (tottime):")
    print("\n".join(buf.getvalue().splitlines()[4:]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=None, help="parent of the temporary work directory")
    ap.add_argument("--labels", default=DEFAULT_LABELS, help="pinky40 .npy.gz")
    ap.add_argument("--size", type=int, default=512, help="edge of the cube used (<= 512)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the diced full read even if it meets the target")
    args = ap.parse_args(argv)

    import diced

    if not Path(args.labels).exists():
        print(f"missing {args.labels}", file=sys.stderr)
        return 2
    t_load, data = clock(lambda: load_labels(args.labels, args.size))
    shape = data.shape
    nbytes = data.nbytes
    labels, counts = np.unique(data, return_counts=True)
    nz = labels != 0
    order = np.argsort(counts[nz])[::-1]
    big = [int(x) for x in labels[nz][order[:2]]]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parent, check=False
                              ).stdout.strip()
    except OSError:
        head = "?"
    print(f"# diced label benchmark  {datetime.date.today()}  git {head}  "
          f"python {platform.python_version()}  cpus {os.cpu_count()}  "
          f"load avg {os.getloadavg()[0]:.1f}")
    print(f"data: {args.labels} cut {shape}, {nbytes / 1e6:.0f} MB uint64, "
          f"{int(nz.sum())} labels (loaded in {t_load:.1f} s); largest {big[0]} "
          f"({counts[nz][order[0]]} vox), second {big[1]} ({counts[nz][order[1]]} vox)")

    root = Path(tempfile.mkdtemp(prefix="bench_labels_", dir=args.dir))
    rows: list[tuple[str, str, str]] = []
    try:
        store = diced.Store(root / "diced.lmdb", durable=False)
        repo = store.create_repo("bench")
        tspath = root / "ts.zarr"

        # warm-up: numba kernels compile (or load from cache) outside the timings
        w = repo.create_labels("warmup", (128, 128, 128))
        w[...] = data[:128, :128, :128]
        w[...]
        if data[64, 64, 64]:
            w.sparsevol(int(data[64, 64, 64]))
        w.labels_at([[0, 0, 0]])
        repo.delete_instance("warmup")

        # --- (a) full write and full read -------------------------------------------------
        wd, wt, rd, rt = [], [], [], []
        for i in range(args.repeat):
            name = f"seg{i}"
            t, L = clock(lambda name=name: repo.create_labels(name, shape))
            t, _ = clock(lambda L=L: L.__setitem__(Ellipsis, data))
            wd.append(t)
            t, tsa = clock(lambda: ts_open(tspath, shape, create=True))
            t, _ = clock(lambda tsa=tsa: tsa.write(data).result())
            wt.append(t)
            if i < args.repeat - 1:
                repo.delete_instance(name)
        L = repo.labels(f"seg{args.repeat - 1}")
        tsa = ts_open(tspath, shape, create=False)
        assert np.array_equal(L[...], data) and np.array_equal(tsa.read().result(), data)
        for _ in range(args.repeat):  # outputs are dropped at once: one 1 GiB result alive
            rd.append(clock(lambda: L[...] is None)[0])
            rt.append(clock(lambda: tsa.read().result() is None)[0])
        t_sv, _ = best(lambda: L.read(..., supervoxels=True) is None, args.repeat)
        size_d, size_t = dir_bytes(root / "diced.lmdb"), dir_bytes(tspath)
        wd_, wt_, rd_, rt_ = min(wd), min(wt), min(rd), min(rt)
        print(f"\n(a) full 512^3 uint64, best of {args.repeat}")
        print(f"  write   diced {wd_:6.2f} s {mbps(nbytes, wd_)}   TS {wt_:6.2f} s "
              f"{mbps(nbytes, wt_)}   TS/diced {wt_ / wd_:.2f}x")
        print(f"  read    diced {rd_:6.2f} s {mbps(nbytes, rd_)}   TS {rt_:6.2f} s "
              f"{mbps(nbytes, rt_)}   TS/diced {rt_ / rd_:.2f}x  (target >= 1.0x: "
              f"{'PASS' if rt_ / rd_ >= 1.0 else 'MISS'})")
        print(f"  read supervoxels=True (no mapping) {t_sv:6.2f} s")
        print(f"  on disk: diced {size_d / 1e6:.0f} MB (LMDB file incl. free pages of deleted "
              f"repeats), TS {size_t / 1e6:.0f} MB")
        rows += [("full write 512^3 (with label index)", f"{wd_:.2f} s ({mbps(nbytes, wd_).strip()})",
                  f"TS {wt_:.2f} s; TS/diced {wt_ / wd_:.2f}x"),
                 ("full read 512^3", f"{rd_:.2f} s ({mbps(nbytes, rd_).strip()})",
                  f"TS {rt_:.2f} s; TS/diced {rt_ / rd_:.2f}x (target >= 1.0x)")]

        # --- (b) sparsevol of the largest label ---------------------------------------------
        t_rle, rle = best(lambda: L.sparsevol(big[0]), args.repeat)
        t_cnt, n = best(lambda: L.count(big[0]), args.repeat)
        assert n == int(counts[nz][order[0]])
        from diced.array.sparsevol import decode_rles

        runs = decode_rles(rle)
        assert int(runs[:, 3].sum()) == n
        nblocks = len(L.blocks(big[0]))
        print(f"\n(b) sparsevol of label {big[0]}: {n} voxels in {nblocks} blocks, "
              f"{len(runs)} runs, {len(rle) / 1e6:.1f} MB RLE")
        print(f"  sparsevol(rles) {t_rle * 1e3:8.1f} ms   count() {t_cnt * 1e3:.2f} ms")
        rows += [(f"sparsevol RLE, largest label ({n / 1e6:.1f} M vox, {nblocks} blocks)",
                  f"{t_rle * 1e3:.0f} ms", f"{len(runs)} runs; count() {t_cnt * 1e3:.1f} ms")]

        # --- (c) merge of the two largest bodies, cleave back ---------------------------------
        v0 = repo.commit("ingest")
        repo.newversion("edits")
        L = repo.labels(f"seg{args.repeat - 1}")
        t_merge, _ = clock(lambda: L.merge(big[0], [big[1]]))
        merged = L.count(big[0])
        assert merged == int(counts[nz][order[0]] + counts[nz][order[1]])
        t_cleave, new = clock(lambda: L.cleave(big[0], [big[1]]))
        assert L.count(new) == int(counts[nz][order[1]])
        assert int(L.labels_at([np.argwhere(data[::8, ::8, ::8] == big[1])[0] * 8])[0]) == new
        t_read_mapped, _ = best(lambda: L[...] is None, args.repeat)
        changed = repo.diff(v0.uuid)[L.name]
        print(f"\n(c) merge {big[1]} into {big[0]} ({merged} voxels): {t_merge * 1e3:.1f} ms; "
              f"cleave back -> {new}: {t_cleave * 1e3:.1f} ms; blocks rewritten: {len(changed)}")
        print(f"  full read with a mapping in force: {t_read_mapped:.2f} s")
        rows += [("merge two largest bodies", f"{t_merge * 1e3:.1f} ms",
                  f"{merged / 1e6:.1f} M vox; 0 blocks rewritten"),
                 ("cleave back", f"{t_cleave * 1e3:.1f} ms", f"new body {new}"),
                 ("full read with mapping in force", f"{t_read_mapped:.2f} s",
                  "relabel of every block after decode")]

        # --- (d) label_diff after rewriting 8 blocks -----------------------------------------
        v1 = repo.commit("edits")
        repo.newversion("rewrite")
        L = repo.labels(f"seg{args.repeat - 1}")
        c = shape[0] // 128  # the 2x2x2 blocks at the centre
        coords = np.array([(z, y, x) for z in (c - 1, c) for y in (c - 1, c) for x in (c - 1, c)])
        blocks = [data[z * 64:(z + 1) * 64, y * 64:(y + 1) * 64, x * 64:(x + 1) * 64].copy()
                  for z, y, x in coords]
        for b in blocks:
            b[b == b[32, 32, 32]] = 123_456_789  # one label per block changes id
        t_w8, _ = clock(lambda: L.write_blocks(coords, blocks))
        t_diff, diff = best(lambda: L.label_diff(v1.uuid), args.repeat)
        assert diff.get(123_456_789, 0) > 0
        print(f"\n(d) rewrite 8 blocks: {t_w8 * 1e3:.1f} ms; label_diff vs parent: "
              f"{t_diff * 1e3:.1f} ms ({len(diff)} labels changed)")
        rows += [("write_blocks, 8 blocks", f"{t_w8 * 1e3:.1f} ms", "index + max label updated"),
                 ("label_diff after rewriting 8 blocks", f"{t_diff * 1e3:.1f} ms",
                  f"{len(diff)} labels changed")]

        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
        print("\n| step | diced | notes |\n|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} |")

        if args.profile or rt_ / rd_ < 1.0:
            profile(repo.version(v0.uuid).labels(L.name), repo.version(v1.uuid).labels(L.name),
                    big[0])
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
