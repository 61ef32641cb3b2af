"""Read cost of the per-value CRC32C checksums (store format 2) on 512³ reads.

Two stores hold the same data: one as diced stores it (every value framed with its CRC32C,
checked on every read), one through a pass-through wrapper that stores and reads values
without checksums (what format 1 did). Both use the same backend kind; reads of the full
volume alternate between them, and each figure is the best of ``--repeat`` runs.

Columns: best wall time and best CPU time (all threads) of a full read without and with
checksums, and the time of checking every stored chunk alone (one thread), as a share of
the read: on a loaded machine the last is the steadiest estimate of the cost.

Rows: a 512³ uint8 EM-like image (blosc zstd-1 shuffle, 64³ chunks, as bench_core row 1)
and the 512³ pinky40 segmentation as a label array (DVID blocks in zstd, with body mapping
lookups), on LMDB (zero-copy reads from the memory map) and on ``file://`` (one file per
chunk; values are copied once more to strip the trailer).

    python benchmarks/bench_checksum.py                   # lmdb and file, repeat 7
    python benchmarks/bench_checksum.py --quick           # 256³
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import DEFAULT_LABELS, DICED_CODEC, load_labels, make_image

import diced
from diced.backends import open_backend
from diced.backends.checksum import ChecksummedBackend
from diced.repo import keys as K


class NoChecksums(ChecksummedBackend):
    """Values stored and read as they are (only the format record is framed, so that a
    :class:`diced.Store` opens it)."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.raw.get_many(keys)

    def set_many(self, items: Mapping[str, bytes]) -> None:
        self.raw.set_many(items)

    def apply(self, changes: Mapping[str, bytes | None]) -> None:
        self.raw.apply(changes)

    def find_last_many(self, requests, accept):
        return self.raw.find_last_many(requests, accept)

    def visit_last_many(self, requests, accept, visit) -> None:
        self.raw.visit_last_many(requests, accept, visit)

    def visit_many(self, keys, visit) -> None:
        self.raw.visit_many(keys, visit)

    def update(self, keys, fn):
        if list(keys) == [K.FORMAT_KEY]:
            return super().update(keys, fn)
        return self.raw.update(keys, fn)

    def compare_and_set(self, key, expected, new) -> bool:
        if key == K.FORMAT_KEY:
            return super().compare_and_set(key, expected, new)
        return self.raw.compare_and_set(key, expected, new)


def _location(root: Path, kind: str, name: str) -> str:
    return str(root / f"{name}.lmdb") if kind == "lmdb" else (root / name).as_uri()


def _stores(root: Path, kind: str) -> dict[str, diced.Store]:
    with_crc = diced.Store(_location(root, kind, "crc"), durable=False)
    raw = open_backend(_location(root, kind, "plain"), durable=False)
    without = diced.Store(NoChecksums(raw))
    return {"crc32c": with_crc, "none": without}


def _best(fns: dict[str, Callable[[], Any]], repeat: int
          ) -> tuple[dict[str, float], dict[str, float]]:
    """Best wall time and best CPU time (all threads of the process) of each function."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():  # interleaved: machine noise hits both alike
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    return {k: min(v) for k, v in wall.items()}, {k: min(v) for k, v in cpu.items()}


def _stored_bytes(store: diced.Store, inst: int) -> int:
    keys = list(store.raw_backend.list_keys(K.data_prefix(inst)))
    return sum(len(v) for v in store.raw_backend.get_many(keys) if v)


def _verify_time(store: diced.Store, inst: int, repeat: int) -> float:
    """Best time of checking (and stripping, as on LMDB's zero-copy path) every stored chunk
    of an instance in one thread: the work checksums add to a read, measured alone."""
    from diced.backends.checksum import unframe_view

    keys = list(store.raw_backend.list_keys(K.data_prefix(inst)))
    values = [v for v in store.raw_backend.get_many(keys) if v]
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for k, v in zip(keys, values, strict=False):
            unframe_view(k, v)
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: Iterable[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="256³ instead of 512³")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--backends", default="lmdb,file")
    ap.add_argument("--labels", default=DEFAULT_LABELS)
    args = ap.parse_args(list(argv) if argv is not None else None)
    n = 256 if args.quick else 512
    image = make_image(n)
    labels = load_labels(args.labels, n)
    print(f"# bench_checksum {datetime.datetime.now():%Y-%m-%d %H:%M}, n={n}, "
          f"repeat={args.repeat}, load {os.getloadavg()[0]:.1f}")
    print("| backend | data | stored MiB | wall, no checksum (s) | wall, crc32c (s) | cost | "
          "CPU, no checksum (s) | CPU, crc32c (s) | CPU cost | checking alone |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="diced-bench-crc-") as tmp:
        for kind in args.backends.split(","):
            stores = _stores(Path(tmp), kind)
            arrays: dict[str, dict[str, Any]] = {}
            for name, store in stores.items():
                repo = store.create_repo("bench")
                img = repo.create_array("image", "uint8", image.shape, codec=DICED_CODEC)
                img[...] = image
                seg = repo.create_labels("seg", labels.shape)
                seg[...] = labels
                arrays[name] = {"image": img, "seg": seg}
            for data in ("image", "seg"):
                want = image if data == "image" else labels
                for a in arrays.values():  # warm caches, check equality once
                    assert np.array_equal(a[data][...], want)
                best, cpu = _best({name: (lambda a=a, d=data: a[d][...])
                                   for name, a in arrays.items()}, args.repeat)
                inst = arrays["crc32c"][data]._space.inst
                mib = _stored_bytes(stores["crc32c"], inst) / 2**20
                verify_s = _verify_time(stores["crc32c"], inst, args.repeat)
                cost = best["crc32c"] / best["none"] - 1
                ccost = cpu["crc32c"] / cpu["none"] - 1
                print(f"| {kind} | {data} {'uint8' if data == 'image' else 'labels'} | "
                      f"{mib:.1f} | {best['none']:.3f} | {best['crc32c']:.3f} | "
                      f"{cost * 100:+.1f}% | {cpu['none']:.3f} | {cpu['crc32c']:.3f} | "
                      f"{ccost * 100:+.1f}% | {verify_s * 1e3:.1f} ms = "
                      f"{verify_s / best['none'] * 100:.1f}% |", flush=True)
            for store in stores.values():
                store.close()
    from crc32c import crc32c

    buf = np.random.default_rng(0).integers(0, 255, 64 << 20, dtype=np.uint8).tobytes()
    dt = float("inf")
    for _ in range(args.repeat):
        t = time.perf_counter()
        crc32c(buf)
        dt = min(dt, time.perf_counter() - t)
    print(f"\ncrc32c throughput on this machine: {len(buf) / dt / 1e9:.1f} GB/s "
          f"(load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
