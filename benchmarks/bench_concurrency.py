"""Concurrent writers on one repo, per backend: lost updates (must be 0) and throughput.

For each backend (lmdb, file://, s3:// on moto, gs:// on gcp-storage-emulator; both
emulators run as threads of this process with the preconditions the tests give them, see
``tests/conftest.py``), ``--workers`` processes start together and:

  voxels    each writes its own unaligned box (overlapping the others' boxes and sharing
            chunks outside the overlaps) ``--rounds`` times with values no other write uses;
            lost = voxels whose final value is not the last write to them
  labels    the same with a label array (64^3 blocks); lost = labels whose index (block
            counts) disagrees with the voxels
  allocate  ``--allocs`` ``labels.allocate(1)`` each; lost = ids handed out twice
  commit    writers write until the version is locked while this process commits;
            lost = trials in which a write landed after ``commit()`` returned

Throughput is operations per second of wall time from the common start to the last worker's
end (process start-up excluded), over all workers.

    python benchmarks/bench_concurrency.py                    # all backends
    python benchmarks/bench_concurrency.py --backends file,s3 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
BOXES = [((3, 37), (5, 40), (0, 30)), ((20, 57), (25, 60), (10, 50)),
         ((9, 50), (30, 63), (20, 64)), ((30, 64), (0, 22), (5, 45))]
LABEL_BOXES = [((0, 40), (10, 90), (20, 100)), ((5, 64), (50, 128), (0, 70)),
               ((20, 64), (0, 70), (60, 128)), ((0, 30), (60, 128), (40, 120))]

WORKER = textwrap.dedent("""
    import json, os, sys, time
    import diced
    from diced.errors import LockedNodeError

    url, opts, mode, go, who, args = (sys.argv[1], json.loads(sys.argv[2]), sys.argv[3],
                                      sys.argv[4], int(sys.argv[5]), json.loads(sys.argv[6]))
    store = diced.Store(url, **opts)
    repo = store.open_repo("bench", version=args.get("version"))
    # warm up (imports, numba, connections) on instances the measurement does not look at
    if not args.get("version"):
        repo.array("warm")[0:4, 0:4, 0:4] = who
        repo.labels("warmseg")[0:4, 0:4, 0:4] = who
        repo.labels("warmseg").allocate(1)
    open(f"{go}.ready-{who}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    t0 = time.time()
    box = tuple(slice(a, b) for a, b in args.get("box", []))
    out, ops = [], 0
    if mode == "voxels":
        arr = repo.array("img")
        for i in range(1, args["rounds"] + 1):
            arr[box] = who * 1000 + i
            ops += 1
    elif mode == "labels":
        seg = repo.labels("seg")
        for i in range(1, args["rounds"] + 1):
            seg[box] = who * 100 + i
            ops += 1
    elif mode == "allocate":
        seg = repo.labels("seg")
        out = [seg.allocate(1)[0] for _ in range(args["n"])]
        ops = len(out)
    elif mode == "commit":
        arr = repo.array("img")
        try:
            while True:
                ops += 1
                arr[box] = (who * 1000 + ops) % 65536
        except LockedNodeError:
            pass
    store.close()
    print(json.dumps({"t0": t0, "t1": time.time(), "ops": ops, "out": out}))
""")


def run_workers(url: str, opts: dict[str, Any], mode: str, per_worker: list[dict[str, Any]],
                tmp: Path, during: Any = None) -> tuple[list[dict[str, Any]], float]:
    go = tmp / f"go-{uuid.uuid4().hex}"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, json.dumps(opts), mode,
                               str(go), str(who), json.dumps(a)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who, a in enumerate(per_worker, 1)]
    ready = [Path(f"{go}.ready-{who}") for who in range(1, len(procs) + 1)]
    while not all(r.exists() for r in ready):  # every worker warmed up
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(p.communicate()[1][-2000:])
        time.sleep(0.05)
    go.touch()
    if during is not None:
        during()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=1800)
        if p.returncode:
            raise RuntimeError(err[-2000:])
        results.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    return results, wall


def lost_voxels(got: np.ndarray, boxes: list[Any], rounds: int) -> int:
    masks = []
    for b in boxes:
        m = np.zeros(got.shape, bool)
        m[tuple(slice(*x) for x in b)] = True
        masks.append(m)
    cover = np.sum(masks, axis=0)
    lost = 0
    for who, m in enumerate(masks, 1):
        lost += int(np.count_nonzero(got[m & (cover == 1)] != who * 1000 + rounds))
    last = [who * 1000 + rounds for who in range(1, len(boxes) + 1)]
    lost += int(np.count_nonzero(~np.isin(got[cover > 1], last)))
    return lost + int(np.count_nonzero(got[cover == 0]))


def wrong_labels(seg: Any, vol: np.ndarray, labels: list[int]) -> int:
    wrong = 0
    for lab in labels:
        expect = {}
        zz, yy, xx = np.nonzero(vol == lab)
        for b in set(zip((zz // 64).tolist(), (yy // 64).tolist(), (xx // 64).tolist())):
            sel = vol[tuple(slice(c * 64, (c + 1) * 64) for c in b)]
            expect[b] = int(np.count_nonzero(sel == lab))
        got = {tuple(int(x) for x in k): int(v) for k, v in seg.block_counts(lab).items()}
        wrong += got != expect
    return wrong


def bench_backend(kind: str, url: str, opts: dict[str, Any], tmp: Path, a: argparse.Namespace
                  ) -> dict[str, Any]:
    import diced

    n = a.workers
    row: dict[str, Any] = {"backend": kind}
    store = diced.Store(url, **opts)
    repo = store.create_repo("bench")
    repo.create_array("img", "uint16", (64, 64, 64), chunks=(16, 16, 16))
    repo.create_labels("seg", (64, 128, 128))
    repo.create_array("warm", "uint16", (64, 64, 64), chunks=(16, 16, 16))
    repo.create_labels("warmseg", (64, 64, 64))
    store.close()

    res, wall = run_workers(url, opts, "voxels", [{"box": b, "rounds": a.rounds}
                                                  for b in BOXES[:n]], tmp)
    store = diced.Store(url, **opts)
    got = store.open_repo("bench").array("img")[...]
    store.close()
    voxels = sum(int(np.prod([hi - lo for lo, hi in b])) for b in BOXES[:n]) * a.rounds
    row["voxel writes/s"] = sum(r["ops"] for r in res) / wall
    row["voxel MB/s"] = voxels * 2 / wall / 1e6
    row["lost voxels"] = lost_voxels(got, BOXES[:n], a.rounds)

    res, wall = run_workers(url, opts, "labels", [{"box": b, "rounds": a.label_rounds}
                                                  for b in LABEL_BOXES[:n]], tmp)
    store = diced.Store(url, **opts)
    seg = store.open_repo("bench").labels("seg")
    row["label writes/s"] = sum(r["ops"] for r in res) / wall
    row["wrong label index"] = wrong_labels(
        seg, seg[...], [w * 100 + i for w in range(1, n + 1) for i in range(1, a.label_rounds + 1)])
    store.close()

    res, wall = run_workers(url, opts, "allocate", [{"n": a.allocs}] * n, tmp)
    ids = [i for r in res for i in r["out"]]
    row["allocs/s"] = len(ids) / wall
    row["duplicate ids"] = len(ids) - len(set(ids))

    late = 0
    for trial in range(a.trials):
        store = diced.Store(url, **opts)
        repo = store.open_repo("bench")
        if repo.head.locked:
            repo.newversion(f"trial {trial}")
        version = repo.head.uuid
        seen: dict[str, np.ndarray] = {}

        def commit(repo: Any = repo, version: str = version, seen: dict = seen) -> None:
            time.sleep(0.5)
            repo.commit("race")
            seen["a"] = repo.version(version).array("img")[...]

        run_workers(url, opts, "commit", [{"box": b, "version": version} for b in BOXES[:n]],
                    tmp, during=commit)
        store.close()
        diced.backends.cache.chunk_cache().clear()
        store = diced.Store(url, **opts)
        later = store.open_repo("bench").version(version).array("img")[...]
        store.close()
        late += int(not np.array_equal(later, seen["a"]))
    row["late writes"] = f"{late}/{a.trials}"
    return row


def _fixture(fixture: Any) -> Any:
    """A session fixture of the test suite (a generator) as a context manager."""
    from contextlib import contextmanager

    return contextmanager(fixture.__wrapped__)()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="lmdb,file,s3,gcs")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--label-rounds", type=int, default=3)
    ap.add_argument("--allocs", type=int, default=25)
    ap.add_argument("--trials", type=int, default=3)
    a = ap.parse_args()
    a.workers = min(a.workers, len(BOXES))
    sys.path.insert(0, str(HERE.parent / "tests"))
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import conftest  # the emulators and their precondition patches

    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)  # 404s are normal

    print(f"# {a.workers} writer processes, load {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} cpus, {time.strftime('%Y-%m-%d %H:%M')}")
    rows = []
    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        tmp = Path(d)
        for kind in a.backends.split(","):
            if kind == "lmdb":
                url, opts = str(tmp / "bench.lmdb"), {}
            elif kind == "file":
                url, opts = (tmp / "bench-file").as_uri(), {}
            elif kind == "s3":
                emu = stack.enter_context(_fixture(conftest.s3_emulator))
                url, opts = f"s3://{emu.bucket}/bench", emu.options
            elif kind == "gcs":
                emu = stack.enter_context(_fixture(conftest.gcs_emulator))
                url, opts = f"gs://{emu.bucket}/bench", emu.options
            else:
                raise SystemExit(f"unknown backend {kind!r}")
            rows.append(bench_backend(kind, url, opts, tmp, a))
            print(json.dumps(rows[-1]), flush=True)
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v)
                                for v in r.values()) + " |")


if __name__ == "__main__":
    main()
