#!/usr/bin/env python
"""2-D views benchmark: oblique 1024² planes and multiscale tiles through 512³ volumes.

Rows
  a  oblique 1024 x 1024 plane (step 1 voxel) through the centre of a 512³ volume, diagonal
     (u = (0, 1, 1)/√2, v = (2, 1, -1)/√6, normal (-1, 1, -1)/√3), on LMDB with 64³
     chunks; for a uint8 image (trilinear, order=1, and nearest, order=0) and the pinky40
     labels (nearest, bodies):
       diced   ``arr.oblique(...)``: reads only the chunks the samples use
       bbox    read the plane's bounding box (``arr[bbox]``) then scipy ``map_coordinates``
               on it: what a client without an oblique read does
       scipy   ``map_coordinates`` on the whole volume already in memory (no I/O at all)
  b  tiles per second for a viewer paging through 512² XY and XZ tiles at scales 0-2, at
     random tile positions and slices: from a pyramid (``max_scale=2``) and, for the same
     data without a pyramid, downsampled on the fly from scale 0 (the tile cache cleared
     before each run, so every chunk is decoded); and paging through 64 consecutive XY
     slices of one tile, where the tile cache decodes the chunk layer once.

Every timing is the best of ``--repeat`` runs (page cache warm, numba kernels compiled by a
first untimed call). diced opens LMDB with ``durable=False``.

    python benchmarks/bench_slicing.py                  # about two minutes
    python benchmarks/bench_slicing.py --dir /scratch --repeat 5
"""

from __future__ import annotations

import argparse
import datetime
import gc
import gzip
import os
import platform
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
N = 512
SIZE = (1024, 1024)
CENTER = (251.3, 259.7, 255.2)  # generic: not on a chunk corner
U = (0.0, 1.0, 1.0)
V = (2.0, 1.0, -1.0)


def load_labels(path: str) -> np.ndarray:
    with gzip.open(path) as f:
        raw = np.load(f)
    return np.ascontiguousarray(raw.transpose(2, 1, 0), dtype=np.uint64)


def smooth_image(n: int, seed: int = 0) -> np.ndarray:
    """A uint8 volume with structure at several scales (compresses like EM, roughly)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:n, :n, :n]
    f = (np.sin(z / 17.0) + np.cos(y / 23.0) + np.sin((x + y) / 31.0)) * 35 + 128
    return np.clip(f + rng.normal(0, 12, (n, n, n)), 0, 255).astype(np.uint8)


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def sample_points(center, u, v, size, step=1.0) -> np.ndarray:
    h, w = size
    uh = np.asarray(u, float) / np.linalg.norm(u)
    vh = np.asarray(v, float) / np.linalg.norm(v)
    i, j = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    return (np.asarray(center, float)[:, None, None]
            + step * (i * uh[:, None, None] + j * vh[:, None, None]))


def count_reads(arr: Any, fn: Callable[[], Any]) -> int:
    space = arr._space
    n = [0]
    visit, read_many = space.visit, space.read_many

    def v(ckeys, ctx, f):
        n[0] += len(ckeys)
        return visit(ckeys, ctx, f)

    def r(ckeys, ctx):
        n[0] += len(ckeys)
        return read_many(ckeys, ctx)

    space.visit, space.read_many = v, r
    try:
        fn()
    finally:
        del space.visit, space.read_many
    return n[0]


def oblique_rows(name: str, arr: Any, vol: np.ndarray, order: int, repeat: int,
                 **opts: Any) -> None:
    from scipy.ndimage import map_coordinates

    pts = sample_points(CENTER, U, V, SIZE)
    lo = np.clip(np.floor(pts.reshape(3, -1).min(1)) - 1, 0, N - 1).astype(int)
    hi = np.clip(np.floor(pts.reshape(3, -1).max(1)) + 2, 0, N).astype(int)
    bbox = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    local = pts - lo[:, None, None]

    def diced_fn():
        return arr.oblique(CENTER, U, V, SIZE, order=order, **opts)

    def bbox_fn():
        block = arr.read(bbox, **opts) if opts else arr[bbox]
        return map_coordinates(block, local, order=order, mode="grid-constant", cval=0)

    def scipy_fn():
        return map_coordinates(vol, pts, order=order, mode="grid-constant", cval=0)

    diced_fn()  # compile
    t_d, out_d = best(diced_fn, repeat)
    t_b, _ = best(bbox_fn, max(1, repeat // 2))
    t_s, out_s = best(scipy_fn, max(1, repeat // 2))
    n_d = count_reads(arr, diced_fn)
    n_b = count_reads(arr, lambda: arr.read(bbox, **opts) if opts else arr[bbox])
    same = np.array_equal(out_d, out_s) if order == 0 else \
        int(np.abs(out_d.astype(int) - out_s.astype(int)).max()) <= 1
    print(f"  {name:<28} diced {t_d * 1e3:7.0f} ms ({n_d:3d} chunks) | bbox read + "
          f"map_coordinates {t_b * 1e3:7.0f} ms ({n_b:3d} chunks) | scipy in memory "
          f"{t_s * 1e3:7.0f} ms | equal to scipy: {same}")


def tile_rows(name: str, arr: Any, repeat: int, count: int) -> None:
    from diced.datatypes.array.slicing import _TILE_CACHE

    rng = np.random.default_rng(1)
    for plane in ("xy", "xz"):
        cells = []
        for s in (0, 1, 2):
            n = -(-N // (1 << s))
            tiles = -(-n // 512)
            picks = [(int(rng.integers(tiles)), int(rng.integers(tiles)), int(rng.integers(N)))
                     for _ in range(count)]
            arr.tile(plane, s, *picks[0][:2], picks[0][2])  # compile / warm

            def run(picks=picks, s=s, plane=plane):
                _TILE_CACHE.clear()  # random tiles: every chunk decoded anew
                for ty, tx, idx in picks:
                    arr.tile(plane, s, ty, tx, idx)

            t, _ = best(run, repeat)
            cells.append(f"scale {s}: {count / t:6.1f} tiles/s ({t / count * 1e3:5.1f} ms)")
        print(f"  {name:<26} {plane}  " + " | ".join(cells))

    def paging():
        _TILE_CACHE.clear()
        for idx in range(100, 164):  # one chunk layer: decoded by the first tile
            arr.tile("xy", 0, 0, 0, idx)

    t, _ = best(paging, repeat)
    print(f"  {name:<26} xy  paging through 64 consecutive slices at scale 0 (tile cache): "
          f"{64 / t:6.1f} tiles/s ({t / 64 * 1e3:5.1f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=None, help="where the temporary stores go")
    ap.add_argument("--labels", default=DEFAULT_LABELS)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tiles", type=int, default=20, help="tiles per timed run")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import diced

    print(f"# bench_slicing {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
          f"{platform.node()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, commit "
          + subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, check=False,
                           text=True, cwd=Path(__file__).parent).stdout.strip())
    tmp = Path(tempfile.mkdtemp(prefix="bench-slicing-", dir=args.dir))
    try:
        store = diced.Store(str(tmp / "s.lmdb"), durable=False)
        repo = store.create_repo("bench")
        img = smooth_image(N)
        flat = repo.create_array("img", "uint8", img.shape, chunks=CHUNKS)
        flat[...] = img
        pyr = repo.create_array("img_pyr", "uint8", img.shape, chunks=CHUNKS, max_scale=2)
        pyr[...] = img
        print(f"a  oblique {SIZE[0]}x{SIZE[1]} plane, step 1, through the centre of {N}^3, "
              f"{CHUNKS[0]}^3 chunks ({(N // CHUNKS[0]) ** 3} in the volume)")
        oblique_rows("uint8 trilinear (order=1)", flat, img, 1, args.repeat)
        oblique_rows("uint8 nearest (order=0)", flat, img, 0, args.repeat)
        lab = load_labels(args.labels)
        seg = repo.create_labels("seg", lab.shape, chunks=CHUNKS)
        seg[...] = lab
        oblique_rows("pinky40 labels (bodies)", seg, lab, 0, args.repeat, supervoxels=False)
        del lab
        print(f"b  tiles/s, 512^2 tiles at random positions and slices ({args.tiles} per run)")
        tile_rows("uint8 with pyramid", pyr, args.repeat, args.tiles)
        tile_rows("uint8 on the fly", flat, args.repeat, args.tiles)
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
