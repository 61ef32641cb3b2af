"""Time the numba block kernels on 64³ blocks of real segmentation.

Usage: ``python benchmarks/bench_kernels.py [path-to-npy.gz] [--blocks N]``

Reports per-block median times for downsample_labels, downsample_image (uint8 and uint64),
block_label_counts vs ``np.unique(return_counts=True)``, mask_to_runs and relabel, over blocks
of the pinky40 segmentation (the numpy file is x, y, z; it is transposed to z, y, x).
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import time
from collections.abc import Callable

import numpy as np

from diced.array.downres import downsample_image, downsample_labels
from diced.array.labelstats import block_label_counts, relabel
from diced.array.sparsevol import mask_to_runs

DEFAULT = "/work/shared/data/real/pinky40-segmentation-512.npy.gz"


def load(path: str) -> np.ndarray:
    with gzip.open(path) as f:
        return np.load(f).transpose(2, 1, 0).astype(np.uint64)


def blocks_of(vol: np.ndarray, n: int, size: int = 64) -> list[np.ndarray]:
    grid = [
        (z, y, x)
        for z in range(0, vol.shape[0], size)
        for y in range(0, vol.shape[1], size)
        for x in range(0, vol.shape[2], size)
    ]
    step = max(1, len(grid) // n)
    return [
        np.ascontiguousarray(vol[z : z + size, y : y + size, x : x + size])
        for z, y, x in grid[::step][:n]
    ]


def per_block(
    fn: Callable[[np.ndarray], object], blocks: list[np.ndarray], repeat: int = 3
) -> float:
    """Median over blocks of the best-of-``repeat`` time of ``fn(block)``, in microseconds."""
    fn(blocks[0])  # JIT / cache load
    times = []
    for b in blocks:
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            fn(b)
            best = min(best, time.perf_counter() - t)
        times.append(best)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=DEFAULT)
    ap.add_argument("--blocks", type=int, default=64, help="number of 64³ blocks to time")
    args = ap.parse_args()

    vol = load(args.path)
    blocks = blocks_of(vol, args.blocks)
    nlabels = [len(np.unique(b)) for b in blocks]
    print(
        f"{len(blocks)} blocks of 64³ from {args.path} {vol.shape}; labels per block: "
        f"median {int(np.median(nlabels))}, max {max(nlabels)}"
    )

    gray = [(b % 251).astype(np.uint8) for b in blocks]
    keys = [np.unique(b)[::2].copy() for b in blocks]  # relabel k -> k + 1
    rows = [
        ("downsample_labels (uint64)", per_block(downsample_labels, blocks)),
        ("downsample_image (uint8)", per_block(downsample_image, gray)),
        ("downsample_image (uint64)", per_block(downsample_image, blocks)),
        (
            "downsample_image (float32)",
            per_block(downsample_image, [g.astype(np.float32) for g in gray]),
        ),
    ]
    ours = per_block(block_label_counts, blocks)
    ref = per_block(lambda b: np.unique(b, return_counts=True), blocks)
    rows += [("block_label_counts", ours), ("np.unique(return_counts=True)", ref)]
    rows.append(
        (
            "mask_to_runs (label of voxel 0)",
            per_block(lambda b: mask_to_runs(b == b.flat[0]), blocks),
        )
    )
    mappings = {id(b): (k, k + 1) for b, k in zip(blocks, keys)}
    rows.append(
        ("relabel (every other label)", per_block(lambda b: relabel(b, *mappings[id(b)]), blocks))
    )

    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"  {name:<{width}}  {us:9.1f} µs / block")
    print(f"block_label_counts vs np.unique: {ref / ours:.1f}x faster")
    solid = np.full((64, 64, 64), 7, np.uint64)
    noisy = np.random.default_rng(0).integers(0, 4, (64, 64, 64)).astype(np.uint64)
    print(
        f"downsample_labels worst cases: solid {per_block(downsample_labels, [solid]):.1f} µs, "
        f"random 4 labels {per_block(downsample_labels, [noisy]):.1f} µs"
    )


if __name__ == "__main__":
    main()
