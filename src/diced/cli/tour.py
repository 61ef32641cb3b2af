"""``diced tour``: a guided run through diced on the embedded LMDB store."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """Register ``tour``."""
    p = sub.add_parser(
        "tour", help="create a store, write, commit, branch, edit, diff and read old versions",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  diced tour\n  diced tour --store /tmp/tour.diced --keep   "
               "# then: diced log /tmp/tour.diced tour",
        description="A guided tour on the embedded LMDB store: creates a repo, writes a "
                    "grayscale volume and a label volume, commits, branches, edits, merges, "
                    "diffs and reads an old version, printing each step.")
    p.add_argument("--store", default=None,
                   help="where to create the tour store (default: a temporary directory, "
                        "removed afterwards unless --keep)")
    p.add_argument("--size", type=int, default=256,
                   help="edge of the cubic volume, at least 128 (default 256)")
    p.add_argument("--keep", action="store_true", help="keep the store to explore it afterwards")
    p.set_defaults(func=run)


def _cells(n: int, seed: int = 0, cell: int = 16):
    """A synthetic segmentation of an ``n``³ cube: 3-D Voronoi cells of seeds jittered on a
    grid, one seed per ``2 * cell`` voxels (512 cells at n = 256), labels 1..512 (uint64).

    Computed at half resolution, grid cell by grid cell against the 27 seeds around it (plain
    broadcasting, no fancy indexing), then upsampled.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    half = -(-n // 2)  # ceil(n / 2): the half-resolution edge
    g = -(-half // cell)  # grid cells per axis at half resolution (ceil)
    seeds = (np.stack(np.meshgrid(*[np.arange(g)] * 3, indexing="ij"), -1) + 0.15
             + 0.7 * rng.random((g, g, g, 3))).astype(np.float32) * cell
    pad = np.full((g + 2, g + 2, g + 2, 3), 1e9, dtype=np.float32)
    pad[1:-1, 1:-1, 1:-1] = seeds
    ids = np.zeros((g + 2,) * 3, dtype=np.int32)
    ids[1:-1, 1:-1, 1:-1] = np.arange(1, g ** 3 + 1).reshape(g, g, g)
    # voxel centres as (grid, within) along each axis, broadcast to (g, c, g, c, g, c)
    t = (np.arange(g * cell, dtype=np.float32) + 0.5).reshape(g, cell)
    z, y, x = t[:, :, None, None, None, None], t[None, None, :, :, None, None], \
        t[None, None, None, None, :, :]
    best = np.full((g, cell) * 3, np.inf, dtype=np.float32)
    lab = np.zeros((g, cell) * 3, dtype=np.int32)
    for dz in (0, 1, 2):
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                s = pad[dz:dz + g, dy:dy + g, dx:dx + g][:, None, :, None, :, None]
                d = (s[..., 0] - z) ** 2 + (s[..., 1] - y) ** 2 + (s[..., 2] - x) ** 2
                closer = d < best
                np.copyto(best, d, where=closer)
                np.copyto(lab, np.broadcast_to(
                    ids[dz:dz + g, dy:dy + g, dx:dx + g][:, None, :, None, :, None], lab.shape),
                    where=closer)
    half = lab.reshape((g * cell,) * 3).astype(np.uint64)
    return half.repeat(2, 0).repeat(2, 1).repeat(2, 2)[:n, :n, :n]


def _em_like(labels, seed: int = 0):
    """A grayscale volume that looks like stained tissue: each cell a grey of its own, dark
    membranes where cells meet, and noise (uint8)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shade = rng.uniform(130, 200, size=int(labels.max()) + 1).astype(np.float32)
    vol = shade[labels.astype(np.int64)]
    edge = np.zeros(labels.shape, dtype=bool)
    for ax in range(3):
        d = np.diff(labels, axis=ax) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= d
        edge[tuple(hi)] |= d
    vol[edge] = 45
    vol += rng.normal(0, 10, size=vol.shape).astype(np.float32)
    return np.clip(vol, 0, 255).astype(np.uint8)


def run(args: argparse.Namespace) -> int:
    """Run the tour, printing each step."""
    import numpy as np

    import diced

    tmp = None
    if args.store is None:
        tmp = tempfile.mkdtemp(prefix="diced-tour-")
        location = str(Path(tmp) / "tour.diced")
    else:
        location = args.store
    n = args.size
    if n < 128:
        from diced.errors import InvalidArgumentError

        raise InvalidArgumentError(f"--size must be at least 128 (two chunks), got {n}")
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.2f}s] {msg}")

    try:
        store = diced.Store(location)
        say(f"opened the embedded LMDB store at {location}")
        repo = store.create_repo("tour", description="diced tour")
        say(f"created repo {repo.alias!r}; its root version {repo.head.uuid[:12]} is open")
        big = repo.create_array("grayscale", dtype="uint8", shape=(134576, 78317, 94088))
        say(f"created {big.name!r} {big.shape} {big.dtype} in {big.chunks} chunks: "
            f"{big.nbytes / 1e12:.0f} TB addressable, nothing stored yet")
        cells = _cells(n)
        vol = _em_like(cells)
        t = time.perf_counter()
        big[1000:1000 + n, 2000:2000 + n, 3000:3000 + n] = vol
        dt = time.perf_counter() - t
        say(f"wrote a {n}³ block at (1000, 2000, 3000): {vol.nbytes / dt / 1e6:.0f} MB/s, "
            f"{len(big.stored_chunks())} chunks stored")
        seg = repo.create_labels("segmentation", shape=(n, n, n), origin=(1000, 2000, 3000))
        seg[:] = cells
        say(f"created label array {seg.name!r} {seg.shape} at origin {seg.origin} (same place "
            f"as the grayscale data): {int(cells.max())} cells")
        notes = repo.create_keyvalue("notes")
        notes["import.json"] = b'{"source": "synthetic", "step": 1}'
        first = repo.commit("first import", ["wrote grayscale, segmentation and notes"])
        say(f"committed (locked) version {first.uuid[:12]}: {first.note!r}")
        child = repo.branch("proofreading", "fix a bright artifact")
        say(f"branched {child.uuid[:12]} on branch {child.branch!r}; the repo head moved there")
        big[1000:1064, 2000:2064, 3000:3064] = 0
        big[1100, 2100:2110, 3100:3110] = 255
        notes["import.json"] = b'{"source": "synthetic", "step": 2}'
        say("edited the branch: zeroed one 64³ chunk, brightened a row, updated a note")
        s = repo.labels("segmentation")
        c = n // 2
        a = int(s[c, c, c])  # indices count from the origin
        row = s[c, c, :]
        b = int(row[row != a][0])
        s.merge(a, [b])
        say(f"proofread the segmentation: merged body {b} into {a} (a mapping change; no voxel "
            f"rewritten); body {a} now has {s.count(a)} voxels")
        old = repo.version(first.uuid).array("grayscale")
        same = np.array_equal(old[1000:1000 + n, 2000:2000 + n, 3000:3000 + n], vol)
        say(f"read the first version again, no checkout needed: unchanged = {same}")
        d = repo.diff(first.uuid, child.uuid)
        g = d["grayscale"]
        say(f"diff first -> branch: grayscale {len(g.changed)} chunks changed, {len(g.removed)} "
            f"removed (written back to fill); notes changed keys: {d['notes'].changed}")
        repo.commit("proofread")
        repo.checkout(first.uuid)
        side = repo.branch("annotation", "a parallel branch")
        repo.array("grayscale")[1000 + n - 1, 2000 + n - 1, 3000 + n - 1] = 7
        repo.commit("annotated a corner")
        merged = repo.merge(child.uuid, side.uuid, note="merge proofreading and annotation")
        m = repo.array("grayscale")
        say(f"merged both branches into {merged.uuid[:12]} with no conflicts: corner = "
            f"{int(m[1000 + n - 1, 2000 + n - 1, 3000 + n - 1])}, zeroed chunk max = "
            f"{int(m[1000:1064, 2000:2064, 3000:3064].max())}")
        print("\nhistory:")
        for v in repo.versions():
            parents = ",".join(p[:8] for p in v.parents) or "-"
            print(f"  {v.uuid[:12]} branch={v.branch:<12} parents={parents:<17} "
                  f"{'locked' if v.locked else 'open  '} {v.note}")
        say("done")
        store.close()
        print(f"\nnext: look at it in the browser: diced serve {location}\n"
              f"      then open http://127.0.0.1:8000/ (Neuroglancer via the page's button)")
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif args.keep or args.store:
            print(f"store kept at {location}; try: diced log {location} tour")
    return 0
