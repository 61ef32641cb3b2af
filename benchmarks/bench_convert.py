"""Benchmark DVID export-shards -> neuroglancer precomputed conversion, one worker (one core).

Cases
-----
* ``real``: the mCNS scale-1 DVID shard ``30720_24576_28672`` (258 blocks, mCNS spec, raw data
  encoding, gzip minishard indexes).
* ``synthetic``: one large DVID shard of 4096 blocks (16^3 chunks = 1024^3 voxels): the pinky40
  512^3 segmentation cut into 512 blocks, repeated 8 times with the ids of each copy offset,
  bodies = supervoxels // 3, written by diced's ``export_shards``; spec with gzip data and
  gzip minishard indexes, as mCNS scale 0.

Pipelines (each run in its own subprocess, after a warm-up run in that process)
--------------------------------------------------------------------------------
* ``diced``: :func:`diced.export.convert_shards.convert_shards` with one worker.
* ``seed``: the seed's worker pipeline (``tensorstore-export`` ``src/worker.py``
  ``process_shard``): BRAID's ``ShardReader`` (whole Arrow file in RAM) and its C DVID
  decompressor (``read_chunk`` with the label mapping), transpose to x,y,z, and TensorStore
  writing the sharded volume to local staging in explicit transactions committed every 100
  chunks (``BATCH_SIZE``). BRAID is imported from ``--braid`` (the ``braid/src`` directory of
  a local checkout with ``csrc/libdvid_decompress.so`` built); nothing of it is part of diced.
  Without ``--braid`` the same loop runs on diced's own block decoder (``braid-style``).

Reported: blocks/s, and peak RSS of the worker process above its RSS right before the
conversion (``/proc/self/clear_refs`` resets the high-water mark), next to the output shard size.

Usage::

    python benchmarks/bench_convert.py [--braid /path/to/tensorstore-export/braid/src]
        [--cases real,synthetic] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DVID = ROOT / "tests" / "data" / "dvid"
PINKY = "/work/shared/data/real/pinky40-segmentation-512.npy.gz"
STEM = "30720_24576_28672"


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# --- inputs ---------------------------------------------------------------------------------


def _synthetic_spec() -> dict:
    return {"@type": "neuroglancer_multiscale_volume", "data_type": "uint64", "num_channels": 1,
            "type": "segmentation",
            "scales": [{"chunk_sizes": [[64, 64, 64]], "encoding": "compressed_segmentation",
                        "compressed_segmentation_block_size": [8, 8, 8], "key": "s0",
                        "resolution": [8.0, 8.0, 8.0], "size": [1024, 1024, 1024],
                        "sharding": {"@type": "neuroglancer_uint64_sharded_v1",
                                     "hash": "identity", "preshift_bits": 9,
                                     "minishard_bits": 3, "shard_bits": 0,
                                     "minishard_index_encoding": "gzip",
                                     "data_encoding": "gzip"}}]}


class _SyntheticSource:
    """A BlockSource of 4096 pre-encoded DVID blocks (pinky40 tiled 2x2x2 with new ids)."""

    def __init__(self, path: str) -> None:
        from diced.array.codecs.labelblock import encode_block

        with gzip.open(path) as f:
            vol = np.load(f).transpose(2, 1, 0).astype(np.uint64)
        base = {}
        for z in range(8):
            for y in range(8):
                for x in range(8):
                    base[(x, y, z)] = vol[z * 64:(z + 1) * 64, y * 64:(y + 1) * 64,
                                          x * 64:(x + 1) * 64]
        self.blocks = {}
        for k in range(8):
            ox, oy, oz = (k & 1) * 8, ((k >> 1) & 1) * 8, ((k >> 2) & 1) * 8
            for (x, y, z), blk in base.items():
                shifted = np.where(blk > 0, blk + np.uint64(k * 10_000_000), blk)
                self.blocks[(ox + x, oy + y, oz + z)] = encode_block(shifted)

    def scale_shape(self, scale: int) -> tuple[int, int, int]:
        return (1024, 1024, 1024)

    def block_coords(self, scale: int) -> np.ndarray:
        return np.array(sorted(self.blocks), np.int64)

    def read_dvid_blocks(self, coords: np.ndarray, scale: int) -> list[bytes]:
        return [self.blocks[tuple(int(v) for v in c)] for c in coords]

    def map_labels(self, labels: np.ndarray) -> np.ndarray:
        return np.asarray(labels, np.uint64) // np.uint64(3)


def prepare(case: str, work: Path) -> tuple[Path, dict, int]:
    """Source export dir, spec and scale of one case."""
    src = work / f"{case}-export"
    if case == "real":
        spec = json.loads((DVID / "mcns-ng-specs.json").read_text())
        (src / "s1").mkdir(parents=True, exist_ok=True)
        shutil.copy(DVID / f"{STEM}.arrow", src / "s1" / f"{STEM}.arrow")
        shutil.copy(DVID / f"{STEM}-newformat.csv", src / "s1" / f"{STEM}.csv")
        return src, spec, 1
    spec = _synthetic_spec()
    if not (src / "s0").exists():
        from diced.export.arrow_shards import export_shards

        export_shards(_SyntheticSource(PINKY), spec, str(src), scale=0, batch_size=1,
                      progress=False)
    return src, spec, 0


# --- the pipelines (run inside a worker subprocess) --------------------------------------------


def run_diced(src: Path, dest: Path, spec: dict, scale: int) -> int:
    from diced.export.convert_shards import convert_shards

    report = convert_shards(src, dest, spec, scales=[scale], workers=1, scheduler="sync",
                            progress=False, overwrite=True)
    return report.scales[0].chunks


def run_seed(src: Path, dest: Path, spec: dict, scale: int, braid: str | None) -> int:
    """The seed worker's process_shard loop (see the module docstring)."""
    import tensorstore as ts

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    info = {k: v for k, v in spec.items() if k != "batch_size"}
    for sc in info["scales"]:
        sc.setdefault("compressed_segmentation_block_size", [8, 8, 8])
    (dest / "info").write_text(json.dumps(info))
    store = ts.open({"driver": "neuroglancer_precomputed",
                     "kvstore": {"driver": "file", "path": str(dest)},
                     "scale_index": scale, "open": True}).result()
    arrow = next((src / f"s{scale}").glob("*.arrow"))
    if braid:
        sys.path.insert(0, braid)
        from braid import LabelType, ShardReader

        reader = ShardReader(str(arrow), str(arrow.with_suffix(".csv")))
        chunks = reader.available_chunks

        def read(cx: int, cy: int, cz: int) -> np.ndarray:
            return reader.read_chunk(cx, cy, cz, label_type=LabelType.LABELS)
    else:  # braid-style: whole file in RAM, decode + map per chunk with diced's decoder
        from diced.export.shard_reader import ShardFile

        shard = ShardFile(str(arrow))
        shard._load_table()
        chunks = [tuple(int(v) for v in c) for c in shard.coords]

        def read(cx: int, cy: int, cz: int) -> np.ndarray:
            from diced.array.codecs.labelblock import decode_block

            return decode_block(shard.get(cx, cy, cz).dvid_block("labels"))
    shape = store.shape
    txn = ts.Transaction()
    pending = 0
    n = 0
    for cx, cy, cz in chunks:
        data = read(cx, cy, cz).transpose(2, 1, 0)
        x0, y0, z0 = cx * 64, cy * 64, cz * 64
        x1, y1, z1 = min(x0 + 64, shape[0]), min(y0 + 64, shape[1]), min(z0 + 64, shape[2])
        store.with_transaction(txn)[x0:x1, y0:y1, z0:z1, 0].write(
            data[:x1 - x0, :y1 - y0, :z1 - z0]).result()
        pending += 1
        n += 1
        if pending >= 100:
            txn.commit_async().result()
            txn = ts.Transaction()
            pending = 0
    if pending:
        txn.commit_async().result()
    return n


def worker(args: argparse.Namespace) -> None:
    src, dest, scale = Path(args.src), Path(args.dest), args.scale
    spec = json.loads(Path(args.spec).read_text())

    def once() -> tuple[int, float]:
        t0 = time.perf_counter()
        if args.pipeline == "diced":
            n = run_diced(src, dest, spec, scale)
        else:
            n = run_seed(src, dest, spec, scale, args.braid)
        return n, time.perf_counter() - t0

    once()  # warm-up: imports, numba and TensorStore initialisation
    best = None
    peak = 0
    for _ in range(args.repeat):
        base = _status("VmRSS")
        _reset_peak()
        n, dt = once()
        peak = max(peak, _status("VmHWM") - base)
        best = dt if best is None else min(best, dt)
    out = sum(p.stat().st_size for p in dest.rglob("*.shard"))
    print(json.dumps({"blocks": n, "seconds": best, "peak_rss_growth": peak,
                      "peak_rss": _status("VmHWM"), "shard_bytes": out}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--braid", default=None, help="braid/src of a tensorstore-export checkout")
    p.add_argument("--cases", default="real,synthetic")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--pipeline", help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--dest", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--scale", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-convert-"))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs")
    seed_name = "seed (BRAID + TensorStore)" if args.braid else "braid-style + TensorStore"
    for case in args.cases.split(","):
        src, spec, scale = prepare(case, work)
        spec_path = work / f"{case}-spec.json"
        spec_path.write_text(json.dumps(spec))
        rows = {}
        for pipeline in ("diced", "seed"):
            cmd = [sys.executable, __file__, "--worker", "--pipeline", pipeline, "--src",
                   str(src), "--dest", str(work / f"{case}-{pipeline}"), "--spec",
                   str(spec_path), "--scale", str(scale), "--repeat", str(args.repeat)]
            if args.braid:
                cmd += ["--braid", args.braid]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            rows[pipeline] = json.loads(out.stdout.strip().splitlines()[-1])
        arrow = next((src / f"s{scale}").glob("*.arrow")).stat().st_size
        print(f"\n{case}: {rows['diced']['blocks']} blocks, Arrow file {arrow / 2**20:.1f} MiB")
        print(f"{'pipeline':<28} {'blocks/s':>9} {'seconds':>8} {'peak RSS growth MiB':>20} "
              f"{'peak RSS MiB':>13} {'shard MiB':>10}")
        for pipeline, r in rows.items():
            name = "diced convert_shards" if pipeline == "diced" else seed_name
            print(f"{name:<28} {r['blocks'] / r['seconds']:>9.0f} {r['seconds']:>8.2f} "
                  f"{r['peak_rss_growth'] / 2**20:>20.1f} {r['peak_rss'] / 2**20:>13.1f} "
                  f"{r['shard_bytes'] / 2**20:>10.1f}")
        ratio = (rows["diced"]["blocks"] / rows["diced"]["seconds"]) / (
            rows["seed"]["blocks"] / rows["seed"]["seconds"])
        print(f"diced / {seed_name}: {ratio:.1f}x blocks/s per core")


if __name__ == "__main__":
    main()
