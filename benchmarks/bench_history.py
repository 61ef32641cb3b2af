"""Version history at scale: DAG operations on repos of 10, 1,000 and 10,000 versions.

Two shapes: a linear history, and a bushy DAG (500 branches and 200 merges once the repo
is large enough; proportionally fewer below). The history is written in bulk
(:func:`diced.repo.history.bulk_append`, the records the operations write, plus packs);
every measured operation then runs through the public API on the newest master version:

* ``open``: ``diced.Store(path)`` + ``open_repo`` + ``repo.array("a")`` (new objects);
* ``read``: the first chunk read of that fresh handle (one 32³ chunk written at the root,
  so resolution looks through the whole depth);
* ``newversion``, ``commit``, ``branch``, ``tag``: on the leaf (each timed separately);
* ``master~N``: resolving ``master~N`` with N half the depth.

Usage: ``python benchmarks/bench_history.py [--sizes 10,1000,10000] [--repeat 15]
[--backends lmdb,lmdb-nosync,file]``. Prints ms per operation (best of ``--repeat``: the
machine is shared, and the best run is the cost without waiting for a CPU),
one row per backend, shape and size, and the load average. ``--clock cpu`` times this
process's CPU time instead of wall-clock time. ``lmdb`` is the default
durable store (one disk sync per metadata change); ``lmdb-nosync`` is ``durable=False``,
which shows the CPU cost alone.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import numpy as np

import diced
from diced.repo.dag import Node, new_uuid
from diced.repo.history import bulk_append

#: the clock timing every operation (``--clock``)
CLOCK = time.perf_counter


def build(store: diced.Store, n: int, shape: str, seed: int = 1) -> diced.Repo:
    """A repo of about ``n`` versions, all locked, master's leaf the head."""
    repo = store.create_repo("h")
    arr = repo.create_array("a", "uint8", (64, 64, 64), chunks=(32, 32, 32))
    arr[:32, :32, :32] = 7
    repo.commit("root")
    rng = random.Random(seed)
    now = time.time()
    nodes: list[Node] = []
    leaves = {"": repo.head.id}  # branch -> leaf id
    next_id = repo.head.id + 1
    n_branches = 500 if n >= 5000 else n // 20
    n_merges = 200 if n >= 5000 else n // 50
    all_ids = [repo.head.id]

    def add(parents: list[int], branch: str) -> None:
        nonlocal next_id
        nodes.append(Node(new_uuid(), next_id, parents, branch, "", [], True, now, now))
        leaves[branch] = next_id
        all_ids.append(next_id)
        next_id += 1

    for i in range(n - 1):
        left = n - 1 - i
        if shape == "linear":
            add([leaves[""]], "")
            continue
        r = rng.random()
        if n_branches and r < n_branches / left:
            n_branches -= 1
            add([rng.choice(all_ids)], f"b{len(leaves)}")
        elif n_merges and len(leaves) > 1 and r < (n_branches + n_merges) / left:
            n_merges -= 1
            a, b = rng.sample(sorted(leaves), 2)
            if a != "" and rng.random() < 0.5:
                a = ""
            add([leaves[a], leaves[b]], a)
        else:
            branch = "" if rng.random() < 0.3 else rng.choice(sorted(leaves))
            add([leaves[branch]], branch)
    if nodes:
        bulk_append(store.backend, repo.uuid, nodes,
                    refs={(b or "master"): v for b, v in leaves.items()})
    repo.refresh(full=True)
    repo.checkout(branch="master")
    return repo


def best_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return min(times) * 1000


def run(kind: str, n: int, shape: str, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.diced")
        loc, opts = {"lmdb": (path, {}), "lmdb-nosync": (path, {"durable": False}),
                     "file": (f"file://{path}", {})}[kind]
        store = diced.Store(loc, **opts)
        repo = build(store, n, shape)
        depth = len(repo.dag.first_parent_chain(repo.head.id))
        out: dict[str, float] = {"versions": len(repo.dag.nodes), "depth": depth}
        holder: dict[str, object] = {}

        def open_all() -> None:
            s = diced.Store(loc, **opts)
            r = s.open_repo("h")
            holder["arr"] = r.array("a")

        def first_read() -> None:
            open_all()
            t = CLOCK()
            block = holder["arr"][:32, :32, :32]
            holder["t"] = CLOCK() - t
            assert int(block[0, 0, 0]) == 7

        out["open"] = best_ms(open_all, repeat)
        reads = []
        for _ in range(repeat):
            first_read()
            reads.append(holder["t"])
        out["read"] = min(reads) * 1000
        nv, cm, br, tg = [], [], [], []
        for i in range(repeat):
            t = CLOCK()
            repo.newversion()
            nv.append(CLOCK() - t)
            t = CLOCK()
            repo.commit()
            cm.append(CLOCK() - t)
            t = CLOCK()
            repo.branch(f"x{i}", parent=repo.head)
            br.append(CLOCK() - t)
            repo.checkout(branch="master")
            t = CLOCK()
            repo.tag(f"t{i}")
            tg.append(CLOCK() - t)
        for name, ts in (("newversion", nv), ("commit", cm), ("branch", br), ("tag", tg)):
            out[name] = min(ts) * 1000
        half = depth // 2
        out["master~N"] = best_ms(lambda: repo.version(f"master~{half}"), repeat)
        fresh = diced.Store(loc, **opts).open_repo("h")
        out["master~N cold"] = best_ms(
            lambda: diced.Store(loc, **opts).open_repo("h").version(f"master~{half}"), 3)
        del fresh
        store.close()
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,1000,10000")
    ap.add_argument("--shapes", default="linear,bushy")
    ap.add_argument("--backends", default="lmdb,lmdb-nosync,file")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall-clock time, or this process's CPU time (on a crowded machine "
                         "the CPU cost alone; it leaves out disk syncs)")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    cols = ["open", "read", "newversion", "commit", "branch", "tag", "master~N",
            "master~N cold"]
    print(f"{'backend':12} {'shape':7} {'versions':>8} {'depth':>6} "
          + " ".join(f"{c:>13}" for c in cols))
    for kind in args.backends.split(","):
        for shape in args.shapes.split(","):
            for n in (int(x) for x in args.sizes.split(",")):
                r = run(kind, n, shape, args.repeat)
                print(f"{kind:12} {shape:7} {int(r['versions']):>8} {int(r['depth']):>6} "
                      + " ".join(f"{r[c]:>13.2f}" for c in cols), flush=True)
    print(f"{args.clock} ms per operation (best of {args.repeat}); load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
