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


def _smooth_volume(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 220, size=(n // 16 + 1,) * 3).astype(np.float32)
    vol = coarse.repeat(16, 0).repeat(16, 1).repeat(16, 2)[:n, :n, :n]
    vol += rng.normal(0, 6, size=vol.shape).astype(np.float32)
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
        vol = _smooth_volume(n)
        t = time.perf_counter()
        big[1000:1000 + n, 2000:2000 + n, 3000:3000 + n] = vol
        dt = time.perf_counter() - t
        say(f"wrote a {n}³ block at (1000, 2000, 3000): {vol.nbytes / dt / 1e6:.0f} MB/s, "
            f"{len(big.stored_chunks())} chunks stored")
        notes = repo.create_keyvalue("notes")
        notes["import.json"] = b'{"source": "synthetic", "step": 1}'
        first = repo.commit("first import", ["wrote grayscale and notes"])
        say(f"committed (locked) version {first.uuid[:12]}: {first.note!r}")
        child = repo.branch("proofreading", "fix a bright artifact")
        say(f"branched {child.uuid[:12]} on branch {child.branch!r}; the repo head moved there")
        big[1000:1064, 2000:2064, 3000:3064] = 0
        big[1100, 2100:2110, 3100:3110] = 255
        notes["import.json"] = b'{"source": "synthetic", "step": 2}'
        say("edited the branch: zeroed one 64³ chunk, brightened a row, updated a note")
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
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif args.keep or args.store:
            print(f"store kept at {location}; try: diced log {location} tour")
    return 0
