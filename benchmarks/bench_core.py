"""Core benchmark of diced: array I/O against zarr-python v3 and TensorStore, history depth,
branch/lock latency and memory.

All three systems run in this one process on the same data, on local disk under a temporary
directory (removed at exit), with the OS page cache warm. Every timing is the best of
``--repeat`` runs; the systems are interleaved within each repeat so that machine noise hits
them alike, and every write goes into a fresh, empty array.

Codec everywhere: blosc, zstd level 1, byte shuffle, 64^3 chunks (diced: blosc2 chunks;
zarr-python: ``zarr.codecs.BloscCodec``; TensorStore: zarr3 driver ``blosc`` codec).
diced stores are opened with ``durable=False`` for the throughput rows (neither zarr-python
nor TensorStore fsync); the branch/lock row reports both the default (``durable=True``,
fsync per commit) and ``durable=False``.

Rows
  1  512^3 uint8 synthetic EM-like image: full write, full aligned read, 20 unaligned 100^3
     box reads (same boxes for all systems).
  2  512^3 uint64 real segmentation (pinky40) as a plain uint64 array: write, read.
  3  History (diced only): a 256^3 region at unaligned offsets written at depth 1, then a
     chain of 100 versions (commit + newversion each; 50 rewrite the region, 50 make small
     32^3 writes elsewhere); read time of the region at depth 101 vs depth 1. The depth-1
     write holds the same bytes as the last rewrite, so both reads decode identical chunks.
  4  commit / branch / newversion / "write one 64^3 chunk + commit" latency on a store with
     1 GiB of raw (uncompressed, random) uint8 chunk bytes, and on a 16 MiB store.
  6  Remote (diced vs TensorStore zarr3 on one moto S3 server, then one GCS emulator
     (benchmarks/gcs_emulator.py), each in a child process, through a
     loopback proxy (another child) adding --latency ms to every request; --remote): whole --remote-size^3 array and
     20 unaligned 64^3 boxes, uint8 and the pinky40 labels, cold (fresh handles, empty
     caches, a locked version) and warm (same handles again, WARM_READS reads each: a warm
     read takes milliseconds, so one sample of it is mostly noise). Median of --repeat. With
     --pack, diced's version is committed with pack=True (its chunks also stored several per
     object and read with ranged GETs; TensorStore's zarr3 stays unsharded).
  8  Remote history depth (moto S3): cold read of a 128^3 box at a locked version at depth 1
     and --depth versions deep (requests counted); not in the default --only.
  7  Latency: one aligned 64^3 chunk and one voxel, median of 200 interleaved reads
     (diced at an open and at a locked version; TensorStore without and with a cache pool;
     zarr-python).
  5  Memory: heap peak (tracemalloc) of region reads from the 1 GiB array; time, heap and
     RSS of opening the 1 GiB store and its repo in a fresh process (uses row 4's stores).

MB/s are 10^6 bytes per second of uncompressed array data. Ratios are
``time(other) / time(diced)``: above 1 means diced is faster.

    python benchmarks/bench_core.py                 # full run (~5 min idle, 8-12 loaded)
    python benchmarks/bench_core.py --quick         # 256^3 arrays, 256 MiB big store
    python benchmarks/bench_core.py --only 1,2 --systems diced   # e.g. under py-spy
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

# gcsfs reads this when imported; left on, it spends a minute probing the emulator for gRPC
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

CHUNKS = (64, 64, 64)
DICED_CODEC = {"name": "blosc", "cname": "zstd", "clevel": 1, "shuffle": "shuffle"}
DEFAULT_LABELS = "/work/shared/data/real/pinky40-segmentation-512.npy.gz"
MB = 1e6
NOISE = 4.0
AMP = (30.0, 10.0)
SYSTEMS = ("diced", "tensorstore", "zarr")
SHORT = {"diced": "diced", "tensorstore": "TS", "zarr": "zarr"}
#: chunk cache of both systems in the warm remote rows (diced's locked-chunk cache is resized
#: to this for row 6; TensorStore gets a cache pool of the same size)
CACHE_BYTES = 256 << 20
#: warm reads timed after each cold read in row 6 (the median is over all of them)
WARM_READS = 5


# --------------------------------------------------------------------------------------------
# data


def make_image(n: int, seed: int = 0) -> np.ndarray:
    """Deterministic EM-like uint8 volume: two octaves of smooth (trilinearly upsampled)
    random fields plus per-voxel noise (std ~18 grey levels); compresses about 1.3x with
    blosc zstd-1 shuffle, like typical EM grayscale."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, n, n), dtype=np.uint8)

    def upsampler(step: int, amp: float) -> np.ndarray:
        m = n // step + 2
        a = rng.normal(0.0, amp, size=(m, m, m)).astype(np.float32)
        pos = np.arange(n, dtype=np.float32) / step
        i0 = pos.astype(np.int64)
        f = (pos - i0).astype(np.float32)
        for axis in (1, 2):  # y, x now; z per slab below
            shape = [1, 1, 1]
            shape[axis] = n
            fr = f.reshape(shape)
            a = np.take(a, i0, axis=axis) * (1 - fr) + np.take(a, i0 + 1, axis=axis) * fr
        return a, i0, f

    fields = [upsampler(16, AMP[0]), upsampler(4, AMP[1])]
    slab = 64
    for z0 in range(0, n, slab):
        z1 = min(n, z0 + slab)
        acc = np.full((z1 - z0, n, n), 128.0, dtype=np.float32)
        for a, i0, f in fields:
            fz = f[z0:z1, None, None]
            acc += a[i0[z0:z1]] * (1 - fz) + a[i0[z0:z1] + 1] * fz
        acc += NOISE * rng.standard_normal(size=acc.shape, dtype=np.float32)
        np.clip(acc, 0, 255, out=acc)
        out[z0:z1] = acc.astype(np.uint8)
    return out


def load_labels(path: str, n: int) -> np.ndarray:
    with gzip.open(path) as f:
        raw = np.load(f)
    lab = np.ascontiguousarray(raw.transpose(2, 1, 0), dtype=np.uint64)
    del raw
    if n < lab.shape[0]:
        lab = np.ascontiguousarray(lab[:n, :n, :n])
    return lab


def label_args(doc: str, reads: int) -> argparse.Namespace:
    """``--labels PATH`` and ``--reads N`` (default ``reads``), for the label read scripts
    (``bench_label_bound.py``, ``bench_label_open.py``)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--labels", default=DEFAULT_LABELS)
    ap.add_argument("--reads", type=int, default=reads)
    return ap.parse_args()


def zarr3_local_spec(path: str, n: int, cache_bytes: int, dtype: Any = np.uint64
                     ) -> dict[str, Any]:
    """TensorStore's zarr3 spec of an n^3 array of ``dtype`` (uint64 labels by default) at
    ``path`` on its file kvstore, in this file's codec (blosc zstd-1, shuffle, 64^3 chunks),
    with a ``cache_pool`` of ``cache_bytes`` (0: none; else ``recheck_cached_data: "open"``)."""
    dt = np.dtype(dtype)
    spec: dict[str, Any] = {
        "driver": "zarr3", "kvstore": {"driver": "file", "path": path},
        "context": {"cache_pool": {"total_bytes_limit": cache_bytes}},
        "metadata": {"shape": [n] * 3, "data_type": dt.name, "fill_value": 0,
                     "chunk_grid": {"name": "regular",
                                    "configuration": {"chunk_shape": list(CHUNKS)}},
                     "chunk_key_encoding": {"name": "default"},
                     "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}
                                if dt.itemsize > 1 else {"name": "bytes"},
                                {"name": "blosc", "configuration": {
                                    "cname": "zstd", "clevel": 1, "shuffle": "shuffle",
                                    "typesize": dt.itemsize, "blocksize": 0}}]}}
    if cache_bytes:
        spec["recheck_cached_data"] = "open"
    return spec


def random_boxes(n: int, size: int, count: int, seed: int = 1) -> list[tuple[slice, ...]]:
    """Boxes at random offsets, none aligned to the chunk grid on any axis."""
    rng = np.random.default_rng(seed)
    boxes = []
    while len(boxes) < count:
        o = rng.integers(0, n - size, size=3)
        if any(int(v) % CHUNKS[0] == 0 for v in o):
            continue
        boxes.append(tuple(slice(int(v), int(v) + size) for v in o))
    return boxes


# --------------------------------------------------------------------------------------------
# systems under test


class Diced:
    name = "diced"

    def __init__(self, root: Path) -> None:
        import diced

        self.store = diced.Store(root / "diced.lmdb", durable=False)
        self.repo = self.store.create_repo("bench")
        self._n = 0

    def create(self, dtype: Any, shape: tuple[int, ...]) -> Any:
        self._n += 1
        return self.repo.create_array(f"a{self._n}", dtype, shape, chunks=CHUNKS, codec=DICED_CODEC)

    def write(self, h: Any, data: np.ndarray) -> None:
        h[...] = data

    def read(self, h: Any, sel: Any = Ellipsis) -> np.ndarray:
        return h[sel]

    def drop(self, h: Any) -> None:
        self.repo.delete_instance(h.name)

    def close(self) -> None:
        self.store.close()


class TensorStore:
    name = "tensorstore"

    def __init__(self, root: Path) -> None:
        import tensorstore as ts

        self.ts = ts
        self.root = root / "ts"
        self._n = 0

    def create(self, dtype: Any, shape: tuple[int, ...]) -> Any:
        self._n += 1
        dt = np.dtype(dtype)
        codecs: list[dict[str, Any]] = [
            {"name": "bytes", "configuration": {"endian": "little"}} if dt.itemsize > 1
            else {"name": "bytes"},
            {"name": "blosc", "configuration": {"cname": "zstd", "clevel": 1, "shuffle": "shuffle",
                                                "typesize": dt.itemsize, "blocksize": 0}},
        ]
        path = self.root / f"a{self._n}"
        spec = {
            "driver": "zarr3",
            "kvstore": {"driver": "file", "path": str(path)},
            "metadata": {
                "shape": list(shape), "data_type": dt.name, "fill_value": 0,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(CHUNKS)}},
                "chunk_key_encoding": {"name": "default"}, "codecs": codecs,
            },
        }
        return self.ts.open(spec, create=True, delete_existing=True).result(), path

    def write(self, h: Any, data: np.ndarray) -> None:
        h[0].write(data).result()

    def read(self, h: Any, sel: Any = Ellipsis) -> np.ndarray:
        return (h[0] if sel is Ellipsis else h[0][sel]).read().result()

    def drop(self, h: Any) -> None:
        shutil.rmtree(h[1], ignore_errors=True)

    def close(self) -> None:
        pass


class Zarr:
    name = "zarr"

    def __init__(self, root: Path) -> None:
        import zarr
        from zarr.codecs import BloscCodec
        from zarr.storage import LocalStore

        self.zarr, self.codec, self.LocalStore = zarr, BloscCodec, LocalStore
        self.root = root / "zarr"
        self._n = 0

    def create(self, dtype: Any, shape: tuple[int, ...]) -> Any:
        self._n += 1
        path = self.root / f"a{self._n}"
        h = self.zarr.create_array(
            store=self.LocalStore(str(path)), shape=shape, chunks=CHUNKS, dtype=dtype,
            compressors=self.codec(cname="zstd", clevel=1, shuffle="shuffle"), fill_value=0,
            overwrite=True)
        return h, path

    def write(self, h: Any, data: np.ndarray) -> None:
        h[0][...] = data

    def read(self, h: Any, sel: Any = Ellipsis) -> np.ndarray:
        return h[0][sel]

    def drop(self, h: Any) -> None:
        shutil.rmtree(h[1], ignore_errors=True)

    def close(self) -> None:
        pass


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --------------------------------------------------------------------------------------------
# timing and reporting


def clock(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


class Results:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []  # throughput rows
        self.lines: list[str] = []  # other sections, preformatted
        self.checks: list[tuple[str, str, bool | None]] = []  # (target, measured, pass)

    def add(self, row: str, nbytes: int, times: dict[str, float]) -> None:
        self.rows.append({"row": row, "nbytes": nbytes, "times": times})
        print(f"  {row:<36}" + "  ".join(
            f"{SHORT[s]} {t:7.3f}s {nbytes / MB / t:7.0f} MB/s" for s, t in times.items()), flush=True)

    def say(self, line: str = "") -> None:
        self.lines.append(line)
        print(line, flush=True)

    def check(self, target: str, measured: str, ok: bool | None) -> None:
        self.checks.append((target, measured, ok))

    def table(self) -> str:
        hdr = ["row", "MB"]
        for s in SYSTEMS:
            hdr += [f"{SHORT[s]} s", f"{SHORT[s]} MB/s"]
        hdr += ["diced/TS", "diced/zarr"]
        out = [hdr]
        for r in self.rows:
            t = r["times"]
            line = [r["row"], f"{r['nbytes'] / MB:.0f}"]
            for s in SYSTEMS:
                if s in t:
                    line += [f"{t[s]:.3f}", f"{r['nbytes'] / MB / t[s]:.0f}"]
                else:
                    line += ["-", "-"]
            for s in ("tensorstore", "zarr"):
                line.append(f"{t[s] / t['diced']:.2f}x" if s in t and "diced" in t else "-")
            out.append(line)
        widths = [max(len(x[i]) for x in out) for i in range(len(hdr))]

        def fmt(cells: list[str]) -> str:
            return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                     for i, (c, w) in enumerate(zip(cells, widths))) + " |"

        sep = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":"
                             for i, w in enumerate(widths)) + "|"
        return "\n".join([fmt(out[0]), sep] + [fmt(x) for x in out[1:]])

    def summary(self) -> str:
        w = max(len(t) for t, _, _ in self.checks) if self.checks else 10
        lines = []
        for target, measured, ok in self.checks:
            mark = "INFO" if ok is None else ("PASS" if ok else "MISS")
            lines.append(f"  {mark}  {target:<{w}}  {measured}")
        return "\n".join(lines)


def bench_io(res: Results, label: str, systems: list[Any], data: np.ndarray,
             boxes: list[tuple[slice, ...]] | None, repeat: int) -> dict[str, dict[str, float]]:
    """Write (fresh array each repeat), full read and optional box reads for every system."""
    shape, dtype = data.shape, data.dtype
    best: dict[str, dict[str, float]] = {op: {} for op in ("write", "read", "boxes")}
    handles: dict[str, Any] = {}
    for rep in range(repeat):
        for s in systems:
            if s.name in handles:
                s.drop(handles.pop(s.name))
            h = s.create(dtype, shape)
            t, _ = clock(lambda s=s, h=h: s.write(h, data))
            handles[s.name] = h
            best["write"][s.name] = min(t, best["write"].get(s.name, float("inf")))
    for rep in range(repeat):
        for s in systems:
            h = handles[s.name]
            t, got = clock(lambda s=s, h=h: s.read(h))
            if rep == 0 and not np.array_equal(got, data):
                raise AssertionError(f"{s.name}: full read differs from what was written")
            del got
            best["read"][s.name] = min(t, best["read"].get(s.name, float("inf")))
    # box reads after all full reads: their many small results would change the memory state
    # (free huge pages) that the full reads' 128 MiB-1 GiB results are faulted in from
    for rep in range(repeat if boxes else 0):
        for s in systems:
            h = handles[s.name]
            t, got = clock(lambda s=s, h=h: [s.read(h, b) for b in boxes])
            if rep == 0 and not all(np.array_equal(g, data[b]) for g, b in zip(got, boxes)):
                raise AssertionError(f"{s.name}: box read differs")
            del got
            best["boxes"][s.name] = min(t, best["boxes"].get(s.name, float("inf")))
    sizes = {}
    for s in systems:
        if s.name != "diced":
            sizes[SHORT[s.name]] = dir_bytes(handles[s.name][1])
    for s in systems:
        s.drop(handles.pop(s.name))
    n = data.nbytes
    res.add(f"{label} write", n, best["write"])
    res.add(f"{label} read", n, best["read"])
    if boxes:
        bsize = boxes[0][0].stop - boxes[0][0].start
        res.add(f"{label} {len(boxes)}x{bsize}^3 unaligned reads",
                len(boxes) * bsize ** 3 * dtype.itemsize, best["boxes"])
    if sizes:
        res.say("  stored bytes: " + ", ".join(f"{k} {v / MB:.1f} MB ({n / v:.2f}x compression)"
                                                for k, v in sizes.items()))
    return best


def throughput_checks(res: Results, label: str, best: dict[str, dict[str, float]],
                      ts_target: float, zarr_target: float) -> None:
    for op, times in best.items():
        if "diced" not in times:
            continue
        for other, target in (("tensorstore", ts_target), ("zarr", zarr_target)):
            if other in times:
                r = times[other] / times["diced"]
                res.check(f"{label} {op}: diced >= {target:g}x {SHORT[other]}", f"{r:.2f}x",
                          r >= target)


# --------------------------------------------------------------------------------------------
# rows


def row_history(res: Results, root: Path, n: int, region: int, depth: int, repeat: int) -> None:
    import diced

    rng = np.random.default_rng(3)
    # unaligned offsets on every axis, chosen deterministically
    off = []
    while len(off) < 3:
        v = int(rng.integers(1, n - region))
        if v % CHUNKS[0]:
            off.append(v)
    reg = tuple(slice(o, o + region) for o in off)
    # the same-size box in the octant farthest from the region (disjoint from it at full size)
    other = tuple(slice(0, region) if o + region / 2 >= n / 2 else slice(n - region, n)
                  for o in off)
    overlap = int(np.prod([max(0, min(a.stop, b.stop) - max(a.start, b.start))
                           for a, b in zip(reg, other)]))
    res.say(f"\n[3] history: {n}^3 uint8 image, {region}^3 region at unaligned offset {tuple(off)} "
            f"({int(np.prod([(o + region - 1) // 64 - o // 64 + 1 for o in off]))} chunks)")
    img = make_image(n, seed=5)
    base = np.ascontiguousarray(img[reg])
    last_odd = depth if depth % 2 else depth - 1
    # rewrite k writes base + k; the depth-1 write holds the same bytes as the last rewrite,
    # so both reads decode identical chunks and differ only in version resolution
    final = base + np.uint8(last_odd)
    with diced.Store(root / "history.lmdb", durable=False) as store:
        repo = store.create_repo("bench")
        arr = repo.create_array("img", "uint8", (n, n, n), chunks=CHUNKS, codec=DICED_CODEC)
        arr[...] = img
        arr[reg] = final
        v1 = repo.commit("depth 1")
        t0 = time.perf_counter()
        rewrites = small = 0
        t_rewrite: list[float] = []
        for i in range(1, depth + 1):
            repo.newversion(f"v{i}")
            if i % 2:  # rewrite the region
                new = base + np.uint8(i)
                t, _ = clock(lambda: arr.__setitem__(reg, new))  # noqa: B023
                t_rewrite.append(t)
                rewrites += 1
            else:  # small 32^3 write elsewhere (outside the region)
                p = [int(rng.integers(0, n - 32)) for _ in range(3)]
                while all(r.start - 32 < q < r.stop for q, r in zip(p, reg)):
                    p = [int(rng.integers(0, n - 32)) for _ in range(3)]
                arr[p[0]:p[0] + 32, p[1]:p[1] + 32, p[2]:p[2] + 32] = np.uint8(i)
                small += 1
            last = repo.commit(f"v{i}")
        t_chain = time.perf_counter() - t0
        deep = repo.version(last.uuid).array("img")
        shallow = repo.version(v1.uuid).array("img")
        nlev = len(repo.log(last.uuid))
        res.say(f"  chain: {depth} versions ({rewrites} region rewrites, {small} small writes) "
                f"built in {t_chain:.1f} s; region rewrite median {statistics.median(t_rewrite) * 1e3:.0f} ms; "
                f"deep node is {nlev} versions deep")
        # also a same-size region outside the rewrites (only the few small writes may hit it)
        at_d1 = img.copy()
        at_d1[reg] = final
        untouched = [(shallow, reg, final), (deep, reg, final), (shallow, other, at_d1[other]),
                     (deep, other, None)]
        best = [float("inf")] * len(untouched)
        for rep in range(max(5 * repeat, 15)):  # cheap reads: more repeats against noise
            for k, (a, sel, want) in enumerate(untouched):
                t, got = clock(lambda: a[sel])  # noqa: B023
                if rep == 0 and want is not None and not np.array_equal(got, want):
                    raise AssertionError(f"history read {k} differs")
                best[k] = min(best[k], t)
    mbs = region ** 3 / MB
    ratio = best[1] / best[0]
    ratio_u = best[3] / best[2]
    res.say(f"  rewritten region (same bytes at both depths): depth 1 {best[0] * 1e3:.1f} ms ({mbs / best[0]:.0f} MB/s), "
            f"depth {nlev} {best[1] * 1e3:.1f} ms ({mbs / best[1]:.0f} MB/s) -> ratio {ratio:.2f}")
    res.say(f"  region outside the rewrites {tuple((s.start, s.stop) for s in other)} "
            f"({100 * overlap / region ** 3:.0f}% overlap with the rewritten one): depth 1 {best[2] * 1e3:.1f} ms, depth {nlev} {best[3] * 1e3:.1f} ms -> "
            f"ratio {ratio_u:.2f}")
    res.check(f"history: {region}^3 read at depth {nlev} / depth 1 <= 1.2 (rewritten region)",
              f"{ratio:.2f}", ratio <= 1.2)
    res.check(f"history: {region}^3 read at depth {nlev} / depth 1 <= 1.2 (region outside rewrites)",
              f"{ratio_u:.2f}", ratio_u <= 1.2)


def build_big(path: Path, zdim: int, yx: int = 1024) -> int:
    """A store with ``zdim x yx x yx`` uint8 random bytes in raw chunks; returns bytes."""
    import diced

    rng = np.random.default_rng(7)
    with diced.Store(path, durable=False) as store:
        repo = store.create_repo("bench")
        arr = repo.create_array("big", "uint8", (zdim, yx, yx), chunks=CHUNKS,
                                codec={"name": "raw"})
        for z0 in range(0, zdim, 64):
            slab = rng.integers(0, 256, size=(min(64, zdim - z0), yx, yx), dtype=np.uint8)
            arr[z0:z0 + slab.shape[0]] = slab
        repo.commit("bulk load")
        repo.newversion("work")
    os.sync()  # flush the bulk load so that later fsyncs time only their own commit
    time.sleep(1.0)
    return zdim * yx * yx


def dag_ops(path: Path, durable: bool, iters: int) -> dict[str, list[float]]:
    import diced

    rng = np.random.default_rng(11)
    out: dict[str, list[float]] = {k: [] for k in ("write 1 chunk + commit", "commit (lock)",
                                                   "branch", "newversion")}
    tag = f"{'d' if durable else 'n'}{os.getpid()}"
    with diced.Store(path, durable=durable) as store:
        repo = store.open_repo("bench")
        if repo.head.locked:  # master leaf locked by an earlier run: start a branch
            repo.branch(f"start{tag}")
        arr = repo.array("big")
        grid = [s // c for s, c in zip(arr.shape, CHUNKS)]
        for i in range(iters):
            c = [int(rng.integers(0, g)) for g in grid]
            sel = tuple(slice(k * 64, k * 64 + 64) for k in c)
            chunk = rng.integers(0, 256, size=CHUNKS, dtype=np.uint8)
            gc.collect()
            t0 = time.perf_counter()
            arr[sel] = chunk
            repo.commit(f"one chunk {i}")
            out["write 1 chunk + commit"].append(time.perf_counter() - t0)
            t, _ = clock(lambda: repo.branch(f"b{tag}x{i}"))  # noqa: B023
            out["branch"].append(t)
            t, _ = clock(lambda: repo.commit(f"lock {i}"))  # noqa: B023
            out["commit (lock)"].append(t)
            t, _ = clock(lambda: repo.newversion(f"nv {i}"))  # noqa: B023
            out["newversion"].append(t)
        nver = len(repo.versions())
    out["_versions"] = [nver]
    return out


def row_dag(res: Results, root: Path, big_z: int, iters: int) -> dict[str, Path]:
    stores = {}
    res.say("\n[4] commit / branch / newversion latency (ms, median / max of "
            f"{iters}; each op on a repo head)")
    for label, zdim, yx in (("big", big_z, 1024), ("small", 64, 512)):
        path = root / f"dag-{label}.lmdb"
        t0 = time.perf_counter()
        nbytes = build_big(path, zdim, yx)
        built = time.perf_counter() - t0
        size = (path / "data.mdb").stat().st_size
        res.say(f"  {label} store: {nbytes / 2**20:.0f} MiB of raw uint8 chunk bytes "
                f"({nbytes // (64**3)} chunks of 64^3), data.mdb {size / 2**20:.0f} MiB, "
                f"built in {built:.1f} s")
        stores[label] = path
    hdr = f"  {'op':<24} " + " ".join(f"{s + ' ' + d:>19}" for s in ("big", "small")
                                        for d in ("durable", "no-fsync"))
    res.say(hdr)
    table: dict[tuple[str, str, bool], list[float]] = {}
    for durable in (True, False):
        for label in ("big", "small"):
            got = dag_ops(stores[label], durable, iters)
            nver = got.pop("_versions")[0]
            for op, ts_ in got.items():
                table[(op, label, durable)] = ts_
    for op in ("commit (lock)", "branch", "newversion", "write 1 chunk + commit"):
        cells = []
        for label in ("big", "small"):
            for durable in (True, False):
                v = table[(op, label, durable)]
                cells.append(f"{statistics.median(v) * 1e3:7.2f} / {max(v) * 1e3:7.2f}")
        res.say(f"  {op:<24} " + " ".join(f"{c:>19}" for c in cells))
    res.say(f"  (repo holds {nver} versions at the end of the last run)")
    for op in ("commit (lock)", "branch", "newversion", "write 1 chunk + commit"):
        for label in ("big", "small"):
            v = table[(op, label, True)]
            med, mx = statistics.median(v) * 1e3, max(v) * 1e3
            res.check(f"{op} on {label} store (durable) < 10 ms",
                      f"median {med:.2f} ms, max {mx:.2f} ms", med < 10)
    return stores


_OPEN_PROBE = r"""
import json, sys, time, tracemalloc
import diced, diced.store, diced.repo.repo, diced.datatypes.array.array
def rss():
    with open("/proc/self/status") as f:
        d = dict(l.split(":", 1) for l in f)
    return int(d["VmRSS"].split()[0]) * 1024
def open_all():
    s = diced.Store(path); repo = s.open_repo("bench"); a = repo.array("big"); a.shape
    return s, repo
path = sys.argv[1]
out = {}
for run in ("cold", "warm"):  # cold: first open in the process (includes lazy imports)
    r0 = rss(); t0 = time.perf_counter()
    s, repo = open_all()
    out[run] = {"time": time.perf_counter() - t0, "rss_delta": rss() - r0}
    s.close()
tracemalloc.start()
s, repo = open_all()
cur, peak = tracemalloc.get_traced_memory()
s.close()
out.update(heap_peak=peak, heap_kept=cur, versions=len(repo.versions()))
print(json.dumps(out))
"""


def row_memory(res: Results, stores: dict[str, Path], big_z: int) -> None:
    import diced

    res.say("\n[5] memory")
    chunk_bytes = 64 ** 3
    with diced.Store(stores["big"], durable=False) as store:
        arr = store.open_repo("bench").array("big")
        for size in ((256, 256, 256), (min(big_z, 512), 512, 512)):
            off = (min(17, big_z - size[0]), 100, 300)
            sel = tuple(slice(o, o + s) for o, s in zip(off, size))
            touched = int(np.prod([(o + s - 1) // 64 - o // 64 + 1 for o, s in zip(off, size)]))
            arr[sel]  # warm
            gc.collect()
            tracemalloc.start()
            got = arr[sel]
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            region = got.nbytes
            del got
            extra = peak - region
            res.say(f"  read {size[0]}x{size[1]}x{size[2]} uint8 at unaligned {off} from the "
                    f"{big_z * 2**20 / 2**30:.2g} GiB raw array ({touched} chunks touched): heap peak "
                    f"{peak / 2**20:.1f} MiB = region {region / 2**20:.1f} MiB + "
                    f"{extra / 2**20:.1f} MiB ({extra / chunk_bytes:.0f} chunk-equivalents)")
            res.check(f"read {size[0]}x{size[1]}x{size[2]}: heap <= region + 64 MiB (one batch)",
                      f"region + {extra / 2**20:.1f} MiB ({extra / chunk_bytes:.0f} chunks of "
                      f"{touched} touched)", extra <= 64 * 2**20 + 4 * chunk_bytes)
    for label in ("big", "small"):
        out = subprocess.run([sys.executable, "-c", _OPEN_PROBE, str(stores[label])],
                             capture_output=True, text=True, check=True)
        d = json.loads(out.stdout)
        c, w = d["cold"], d["warm"]
        res.say(f"  open {label} store + repo + array handle ({d['versions']} versions), fresh "
                f"process: first open {c['time'] * 1e3:.0f} ms, RSS +{c['rss_delta'] / 2**20:.1f} "
                f"MiB (includes lazy imports); again {w['time'] * 1e3:.1f} ms, RSS "
                f"+{w['rss_delta'] / 2**20:.1f} MiB; heap peak {d['heap_peak'] / 1024:.0f} KiB "
                f"(kept {d['heap_kept'] / 1024:.0f} KiB)")
        if label == "big":
            res.check("open big store/repo loads no chunk data (heap < 4 MiB, RSS < 16 MiB)",
                      f"heap {d['heap_peak'] / 1024:.0f} KiB, RSS +{w['rss_delta'] / 2**20:.1f} "
                      f"MiB, {w['time'] * 1e3:.1f} ms", d["heap_peak"] < 4 * 2**20
                      and w["rss_delta"] < 16 * 2**20)
            res.check("first open in a process (lazy imports included) < 100 ms",
                      f"{c['time'] * 1e3:.0f} ms, RSS +{c['rss_delta'] / 2**20:.0f} MiB",
                      c["time"] < 0.1)


# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# rows 6-7: latency of tiny reads, and remote (S3) reads through a delaying proxy


def median_time(fn: Callable[[], Any], n: int) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def row_latency(res: Results, root: Path, n: int, systems: list[str], iters: int) -> None:
    """Median latency of one aligned 64^3 chunk and of one voxel, warm, interleaved: diced at
    an open version (chunk decoded every time), diced at a locked version (served from the
    locked-chunk cache after the first read), TensorStore (no cache pool, and with a
    64 MiB cache pool) and zarr-python."""
    import diced
    from diced.backends.cache import chunk_cache

    print(f"\n[7] latency of single-chunk and single-voxel reads ({n}^3 uint8, median of "
          f"{iters} interleaved)", flush=True)
    img = make_image(n)
    store = diced.Store(root / "latency.lmdb", durable=False)
    repo = store.create_repo("lat")
    a = repo.create_array("a", "uint8", img.shape, chunks=CHUNKS, codec=DICED_CODEC)
    a[...] = img
    locked_uuid = repo.commit("locked").uuid
    repo.newversion("open")
    a_open, a_locked = a, a.at(locked_uuid)
    readers: dict[str, Any] = {"diced open": a_open, "diced locked": a_locked}
    handles = []
    if "tensorstore" in systems:
        ts_sys = TensorStore(root)
        h = ts_sys.create(np.uint8, img.shape)
        ts_sys.write(h, img)
        handles.append((ts_sys, h))
        ts = ts_sys.ts
        spec = h[0].spec().to_json()
        cached = ts.open({**spec, "context": {"cache_pool": {"total_bytes_limit": 64 << 20}},
                          "recheck_cached_data": "open"}).result()
        readers["TS"] = h[0]
        readers["TS cache"] = cached
    if "zarr" in systems:
        z = Zarr(root)
        h = z.create(np.uint8, img.shape)
        z.write(h, img)
        handles.append((z, h))
        readers["zarr"] = h[0]
    c0 = n // 2 // 64 * 64
    cases = {"one 64^3 chunk": (slice(c0, c0 + 64),) * 3, "one voxel": (c0 + 3, c0 + 5, c0 + 7)}
    chunk_cache().reset_stats()
    for case, sel in cases.items():
        ref = img[sel]
        times: dict[str, list[float]] = {k: [] for k in readers}
        for name, r in readers.items():  # warm-up + check
            got = r[sel].read().result() if name.startswith("TS") else r[sel]
            if not np.array_equal(got, ref):
                raise AssertionError(f"{name}: {case} differs")
        for _ in range(iters):
            for name, r in readers.items():
                if name.startswith("TS"):
                    times[name].append(median_time(lambda r=r, sel=sel: r[sel].read().result(), 1))
                else:
                    times[name].append(median_time(lambda r=r, sel=sel: r[sel], 1))
        med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
        res.say(f"  {case:<16}" + "  ".join(f"{k} {v:8.1f} us" for k, v in med.items()))
        res.check(f"latency {case} (diced locked, warm) < 100 us",
                  f"{med['diced locked']:.0f} us", med["diced locked"] < 100)
        res.check(f"latency {case} (diced open version) < 100 us",
                  f"{med['diced open']:.0f} us", med["diced open"] < 100)
    res.say(f"  chunk cache: {chunk_cache().stats()}")
    for s, h in handles:
        s.drop(h)
    store.close()


class DelayProxy:
    """A loopback TCP proxy that holds every HTTP request (a client chunk starting with an
    HTTP method) for ``delay`` seconds before forwarding it: an injected per-request latency.
    Concurrent requests on separate connections are delayed concurrently, as on a WAN."""

    METHODS = (b"GET ", b"PUT ", b"POST", b"HEAD", b"DELE")

    def __init__(self, target_port: int, delay: float, counter: Any = None) -> None:
        import asyncio
        import threading

        self.asyncio, self.target_port, self.delay = asyncio, target_port, delay
        self.counter = counter
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="delay-proxy")
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop)
        self.server = fut.result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: Any, writer: Any, delay: bool) -> None:
        try:
            while data := await reader.read(1 << 16):
                if delay and data[:4] in self.METHODS:
                    if self.counter is not None:
                        with self.counter.get_lock():
                            self.counter.value += 1
                    if self.delay:
                        await self.asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    async def _handle(self, creader: Any, cwriter: Any) -> None:
        sreader, swriter = await self.asyncio.open_connection("127.0.0.1", self.target_port)
        await self.asyncio.gather(self._pipe(creader, swriter, True),
                                  self._pipe(sreader, cwriter, False))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _serve_proxy(target_port: int, delay: float, port: Any, counter: Any, stop: Any) -> None:
    proxy = DelayProxy(target_port, delay, counter)
    port.value = proxy.port
    stop.wait()
    proxy.close()


class ProxyProcess:
    """:class:`DelayProxy` in a child process (so its work does not share the GIL with the
    clients measured); ``.port``, ``.requests`` (forwarded so far), ``.close()``."""

    def __init__(self, target_port: int, delay: float) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._port, self._counter, self._stop = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Event()
        self._proc = ctx.Process(target=_serve_proxy, daemon=True,
                                 args=(target_port, delay, self._port, self._counter, self._stop))
        self._proc.start()
        deadline = time.time() + 30
        while not self._port.value:
            if time.time() > deadline or not self._proc.is_alive():
                raise RuntimeError("the delaying proxy did not start")
            time.sleep(0.02)
        self.port = self._port.value

    @property
    def requests(self) -> int:
        return self._counter.value

    def close(self) -> None:
        self._stop.set()
        self._proc.join(10)


def start_moto() -> tuple[subprocess.Popen, int]:
    """moto's S3 server in a child process on a free loopback port."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)


def start_gcs(bucket: str) -> tuple[subprocess.Popen, int]:
    """gcp-storage-emulator (benchmarks/gcs_emulator.py) in a child process on a free
    loopback port, with ``bucket`` made."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("gcs_emulator.py")),
                             str(port), bucket], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError("the GCS emulator did not start")
    return proc, port


def row_remote(res: Results, labels_path: str, n: int, latencies: list[float], repeat: int,
               systems: list[str], kind: str = "s3", pack: bool = False) -> None:
    """diced vs TensorStore's zarr3 on one moto S3 server (``kind="s3"``) or one GCS
    emulator (``kind="gcs"``; TensorStore reaches it through ``TENSORSTORE_GCS_HTTP_URL``)
    in a child process, through a delaying proxy: cold (timed from opening the repo for diced, from ``ts.open`` for
    TensorStore: fresh handles, empty caches, a locked version; the diced ``Store`` object is
    new but opened before the clock starts, like a TensorStore context) and warm (the same
    handles again: diced's locked-chunk cache and TensorStore's cache pool, both CACHE_BYTES, with
    ``recheck_cached_data: "open"``; :data:`WARM_READS` reads after each cold one) reads of
    the whole n^3 array and of 20 unaligned 64^3
    boxes, for uint8 and the pinky40 labels. Median of ``repeat``, interleaved, after two
    untimed reads of the array by each system on one handle (code for cold and warm reads
    loaded, servers warm, as in the local rows' warm-up)."""
    import logging

    import boto3
    import tensorstore as ts

    import diced
    from diced.array._readcache import load_copy_kernels
    from diced.backends.cache import chunk_cache

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    bucket = "bench"
    if kind == "s3":
        server, port = start_moto()
        direct = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=direct, region_name="us-east-1").create_bucket(
            Bucket=bucket)
    else:
        server, port = start_gcs(bucket)
        direct = f"http://127.0.0.1:{port}"
        os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")

    def s3opts(endpoint: str) -> dict[str, Any]:
        if kind == "gcs":
            return {"token": "anon", "endpoint_url": endpoint}
        return {"key": "testing", "secret": "testing", "anon": False,
                "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}

    def ts_kvstore(endpoint: str, path: str) -> dict[str, Any]:
        if kind == "gcs":  # read by TensorStore at each open
            os.environ["TENSORSTORE_GCS_HTTP_URL"] = endpoint
            return {"driver": "gcs", "bucket": bucket, "path": path}
        return {"driver": "s3", "bucket": bucket, "path": path, "endpoint": endpoint,
                "aws_region": "us-east-1", "aws_credentials": {"type": "environment"}}

    def ts_spec(endpoint: str, path: str, dt: np.dtype, shape: tuple[int, ...] | None,
                cached: bool) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "driver": "zarr3",
            "kvstore": ts_kvstore(endpoint, path),
            "context": {"cache_pool": {"total_bytes_limit": CACHE_BYTES if cached else 0}},
        }
        if cached:
            spec["recheck_cached_data"] = "open"
        if shape is not None:
            codecs: list[dict[str, Any]] = [
                {"name": "bytes", "configuration": {"endian": "little"}} if dt.itemsize > 1
                else {"name": "bytes"},
                {"name": "blosc", "configuration": {"cname": "zstd", "clevel": 1,
                                                    "shuffle": "shuffle",
                                                    "typesize": dt.itemsize, "blocksize": 0}}]
            spec["metadata"] = {
                "shape": list(shape), "data_type": dt.name, "fill_value": 0,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(CHUNKS)}},
                "chunk_key_encoding": {"name": "default"}, "codecs": codecs}
        return spec

    server_name = "moto S3" if kind == "s3" else "GCS emulator"
    print(f"\n[6] remote reads: {server_name} on loopback, {n}^3, latencies {latencies} ms, "
          f"median of {repeat}{', diced packed' if pack else ''}", flush=True)
    datasets = [("uint8", make_image(n))]
    if Path(labels_path).exists():
        datasets.append(("uint64 labels", load_labels(labels_path, n)))
    boxes = random_boxes(n, 64, 20, seed=2)
    old_cache = chunk_cache().max_bytes
    chunk_cache().resize(CACHE_BYTES)
    try:
        for dkind, data in datasets:
            url = f"{'s3' if kind == 's3' else 'gs'}://{bucket}/diced-{dkind.split()[0]}"
            store = diced.Store(url, create=True, durable=False, **s3opts(direct))
            repo = store.create_repo("remote")
            if data.dtype == np.uint64:
                arr = repo.create_labels("a", data.shape)
            else:
                arr = repo.create_array("a", data.dtype, data.shape, chunks=CHUNKS,
                                        codec=DICED_CODEC)
            arr[...] = data
            uuid = repo.commit("locked", pack=pack).uuid
            store.close()
            tspath = f"ts-{dkind.split()[0]}/"
            # (the GCS emulator ignores the listing bounds TensorStore's delete_existing
            # uses, which would delete the whole bucket; the path is new there anyway)
            ts.open(ts_spec(direct, tspath, data.dtype, data.shape, False), create=True,
                    delete_existing=kind == "s3").result().write(data).result()
            for lat in latencies:
                proxy = ProxyProcess(port, lat / 1000)
                ep = f"http://127.0.0.1:{proxy.port}"
                try:
                    def diced_open(st: Any, uuid: str = uuid, labels: bool = data.dtype == np.uint64
                                   ) -> Any:
                        ver = st.open_repo("remote").version(uuid)
                        return ver.labels("a") if labels else ver.array("a")

                    def ts_open(ep: str = ep, tspath: str = tspath, dt: Any = data.dtype) -> Any:
                        return ts.open(ts_spec(ep, tspath, dt, None, True)).result()

                    # untimed: each system's first read in the process loads code (diced's
                    # numba label kernels from their cache, 0.1-0.35 s) and meets servers
                    # that have not yet served a burst of requests (the first diced read
                    # of the S3 labels took 0.44 s against 0.11 after a one-chunk warm-up);
                    # cold means cold handles and caches here, not a cold process or server.
                    # A second read loads each system's warm-read code: diced's copy kernels
                    # load in a background thread that the first cached read starts (waited
                    # for here, as a notebook or viewer that has run for a second has them)
                    if "diced" in systems:
                        st = diced.Store(url, create=False, **s3opts(ep))
                        h = diced_open(st)
                        h[...]
                        h[...]
                        load_copy_kernels()
                        st.close()
                    if "tensorstore" in systems:
                        h = ts_open()
                        h[...].read().result()
                        h[...].read().result()
                    t: dict[str, dict[str, list[float]]] = {}
                    reqs: dict[str, int] = {}
                    for rep in range(repeat):
                        for system in ("diced", "tensorstore"):
                            if system not in systems:
                                continue
                            for what, sels in (("region", [Ellipsis]), ("boxes", boxes)):
                                st = None
                                if system == "diced":  # a new Store: no cached manifests
                                    chunk_cache().clear()
                                    st = diced.Store(url, create=False, **s3opts(ep))
                                before = proxy.requests
                                t0 = time.perf_counter()
                                if system == "diced":
                                    h = diced_open(st)
                                    got = [h[s] for s in sels]
                                else:
                                    h = ts_open()
                                    got = [h[s].read().result() for s in sels]
                                cold = time.perf_counter() - t0
                                reqs[f"{system} {what} cold"] = proxy.requests - before
                                if rep == 0 and not all(np.array_equal(g, data[s])
                                                        for g, s in zip(got, sels)):
                                    raise AssertionError(f"{system} remote {what} differs")
                                del got
                                before = proxy.requests
                                warm = []
                                for _ in range(WARM_READS):
                                    t0 = time.perf_counter()
                                    if system == "diced":
                                        got = [h[s] for s in sels]
                                    else:
                                        got = [h[s].read().result() for s in sels]
                                    warm.append(time.perf_counter() - t0)
                                    del got
                                reqs[f"{system} {what} warm"] = proxy.requests - before
                                if st is not None:
                                    st.close()
                                t.setdefault(f"{what} cold", {}).setdefault(system, []).append(cold)
                                t.setdefault(f"{what} warm", {}).setdefault(system, []).extend(warm)
                    for key, per in t.items():
                        med = {s: statistics.median(v) for s, v in per.items()}
                        what = key.split()[0]
                        nbytes = data.nbytes if what == "region" else 20 * 64 ** 3 * data.itemsize
                        label = f"{kind.upper()}{'+pack' if pack else ''} {lat:g}ms {dkind} {'whole ' + str(n) + '^3' if what == 'region' else '20x64^3 boxes'} {key.split()[1]}"
                        res.add(label, nbytes, med)
                        if "tensorstore" in med and "diced" in med:
                            r = med["tensorstore"] / med["diced"]
                            goal = 2.0 if key.endswith("warm") else 1.0
                            res.check(f"{label}: diced >= {goal:g}x TS", f"{r:.2f}x", r >= goal)
                    res.say(f"  requests at {lat:g} ms (last repeat): " + ", ".join(
                        f"{k} {v}" for k, v in reqs.items()))
                finally:
                    proxy.close()
    finally:
        chunk_cache().resize(old_cache)
        server.terminate()
        server.wait(10)


def row_remote_depth(res: Results, depth: int, repeat: int) -> None:
    """Cold read of a 128^3 uint8 box (8 chunks) at a locked version 1 and ``depth``
    versions deep on moto S3 (issue 8: 0.17 s vs 2.8 s at depth 201 before compacted
    indexes): fresh Store, open_repo, version, read; median of ``repeat``; requests counted
    by a zero-latency proxy."""
    import logging

    import boto3

    import diced
    from diced.backends.cache import chunk_cache

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server, port = start_moto()
    try:
        direct = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=direct, region_name="us-east-1").create_bucket(
            Bucket="depth")

        def opts(ep: str) -> dict[str, Any]:
            return {"key": "testing", "secret": "testing", "anon": False,
                    "client_kwargs": {"endpoint_url": ep, "region_name": "us-east-1"}}

        print(f"\n[8] remote cold read at depth 1 vs {depth} (moto S3)", flush=True)
        url = "s3://depth/store"
        st = diced.Store(url, create=True, **opts(direct))
        repo = st.create_repo("deep")
        img = make_image(128)
        a = repo.create_array("a", "uint8", img.shape, chunks=CHUNKS, codec=DICED_CODEC)
        a[...] = img
        first = last = repo.commit("v1").uuid
        t0 = time.perf_counter()
        for i in range(depth - 1):
            repo.newversion()
            if i % 10 == 0:  # small edits elsewhere now and then
                a[0:8, 0:8, i % 120:i % 120 + 8] = i % 250
            last = repo.commit(f"v{i + 2}").uuid
        build = time.perf_counter() - t0
        expect = a.at(last)[...]
        st.close()
        proxy = ProxyProcess(port, 0)
        try:
            ep = f"http://127.0.0.1:{proxy.port}"
            times: dict[str, list[float]] = {"depth 1": [], f"depth {depth}": []}
            reqs: dict[str, int] = {}
            for _ in range(repeat):
                for name, uuid in (("depth 1", first), (f"depth {depth}", last)):
                    chunk_cache().clear()
                    fresh = diced.Store(url, create=False, **opts(ep))
                    before = proxy.requests
                    t0 = time.perf_counter()
                    got = fresh.open_repo("deep").version(uuid).array("a")[...]
                    times[name].append(time.perf_counter() - t0)
                    reqs[name] = proxy.requests - before
                    fresh.close()
                    ref = img if name == "depth 1" else expect
                    if not np.array_equal(got, ref):
                        raise AssertionError(f"remote read at {name} differs")
        finally:
            proxy.close()
        med = {k: statistics.median(v) for k, v in times.items()}
        res.say(f"  built {depth} versions in {build:.1f} s; cold read "
                + ", ".join(f"{k} {v * 1000:.0f} ms ({reqs[k]} requests)"
                            for k, v in med.items()))
        res.check(f"S3 cold read at depth {depth}: requests <= depth 1",
                  f"{reqs[f'depth {depth}']} vs {reqs['depth 1']}",
                  reqs[f"depth {depth}"] <= reqs["depth 1"])
    finally:
        server.terminate()
        server.wait(10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="rows:\n" + __doc__.split("Rows\n")[1].split("\n\n")[0])
    ap.add_argument("--dir", default=None, help="parent of the temporary directory (local disk; "
                    "default: the system temp dir)")
    ap.add_argument("--labels", default=DEFAULT_LABELS, help="pinky40 segmentation .npy.gz")
    ap.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    ap.add_argument("--quick", action="store_true",
                    help="256^3 arrays, 128^3 history region, 256 MiB big store")
    ap.add_argument("--only", default="1,2,3,4,5,6,7", help="comma-separated rows to run")
    ap.add_argument("--latency", default="0,20",
                    help="comma-separated injected per-request latencies in ms (row 6)")
    ap.add_argument("--remote-size", type=int, default=256, help="edge of the row-6 arrays")
    ap.add_argument("--depth", type=int, default=1000,
                    help="versions of history in row 8 (remote cold read at depth)")
    ap.add_argument("--remote", default="s3,gcs",
                    help="comma-separated object stores of row 6: s3 (moto), gcs (emulator)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma-separated subset of diced,tensorstore,zarr (rows 1-2)")
    ap.add_argument("--pack", action="store_true",
                    help="row 6: commit diced's version with pack=True (ranged reads of packs)")
    ap.add_argument("--iters", type=int, default=20, help="repetitions of each DAG op (row 4)")
    args = ap.parse_args(argv)

    rows = {int(x) for x in args.only.split(",") if x.strip()}
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    if bad := set(names) - set(SYSTEMS):
        ap.error(f"unknown systems {sorted(bad)}")
    n = 256 if args.quick else 512
    region = 128 if args.quick else 256
    big_z = 256 if args.quick else 1024
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="diced-bench-", dir=args.dir))
    res = Results()
    try:
        import diced

        here = Path(__file__).resolve().parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=here, check=False).stdout.strip()
        src = Path(diced.__file__).resolve().parent
        dirty = ""
        if commit and src.is_relative_to(here.parent):
            changed = subprocess.run(["git", "status", "--porcelain", "--", str(src)],
                                     capture_output=True, text=True, cwd=here,
                                     check=False).stdout.strip()
            dirty = " + uncommitted changes" if changed else ""
        import tensorstore  # noqa: F401
        import zarr

        print(f"diced {diced.__version__} from {src} (repo HEAD {commit or '?'}{dirty}), "
              f"zarr {zarr.__version__}, tensorstore {version('tensorstore')}, blosc2 "
              f"{version('blosc2')}, numpy {np.__version__}, python "
              f"{platform.python_version()}, {os.cpu_count()} cpus, load average "
              f"{os.getloadavg()[0]:.1f}, {datetime.datetime.now():%Y-%m-%d %H:%M}; dir {root}; "
              f"best of {args.repeat}", flush=True)
        cls = {"diced": Diced, "tensorstore": TensorStore, "zarr": Zarr}
        systems = [cls[s](root) for s in SYSTEMS if s in names]
        try:
            if 1 in rows:
                print(f"\n[1] {n}^3 uint8 EM-like image", flush=True)
                img = make_image(n)
                boxes = random_boxes(n, 100 if n >= 512 else 50, 20)
                best = bench_io(res, f"uint8 {n}^3", systems, img, boxes, args.repeat)
                throughput_checks(res, f"uint8 {n}^3", best, 1.0, 2.0)
                del img
            if 2 in rows:
                if not Path(args.labels).exists():
                    res.say(f"\n[2] skipped: no labels at {args.labels}")
                else:
                    print(f"\n[2] {n}^3 uint64 segmentation (pinky40)", flush=True)
                    lab = load_labels(args.labels, n)
                    boxes = random_boxes(n, 100 if n >= 512 else 50, 20)
                    best = bench_io(res, f"uint64 {n}^3 labels", systems, lab, boxes, args.repeat)
                    # issue 12's goals against TensorStore: writes 1.5x, reads 2x, boxes 1x
                    lread = {"read": best.pop("read")}
                    lboxes = {"boxes": best.pop("boxes")}
                    throughput_checks(res, f"uint64 {n}^3 labels", best, 1.5, 2.0)
                    throughput_checks(res, f"uint64 {n}^3 labels", lread, 2.0, 2.0)
                    throughput_checks(res, f"uint64 {n}^3 labels", lboxes, 1.0, 1.0)
                    del lab
        finally:
            for s in systems:
                s.close()
        gc.collect()
        if 7 in rows:
            row_latency(res, root, n, names, 200 if not args.quick else 50)
        if 6 in rows:
            for kind in [k.strip() for k in args.remote.split(",") if k.strip()]:
                row_remote(res, args.labels, args.remote_size,
                           [float(x) for x in args.latency.split(",") if x.strip()],
                           args.repeat, names, kind, args.pack)
        if 8 in rows:
            row_remote_depth(res, args.depth, args.repeat)
        gc.collect()
        if 3 in rows:
            row_history(res, root, n, region, 100, args.repeat)
        stores = None
        if 4 in rows or 5 in rows:
            stores = row_dag(res, root, big_z, args.iters)
        if 5 in rows and stores:
            row_memory(res, stores, big_z)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    if res.rows:
        print(f"\nThroughput (best of {args.repeat}; MB/s of uncompressed data; ratio = other "
              "time / diced time, > 1 means diced faster)\n")
        print(res.table())
    print("\nTargets\n" + res.summary())
    print(f"\n(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
