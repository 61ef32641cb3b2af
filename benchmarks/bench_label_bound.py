"""What bounds a warm read of 20 unaligned 64^3 label boxes: decoding, or writing the result.

Row 6 of ``bench_core.py`` asks warm label boxes to run at twice TensorStore's speed. This
script takes diced's read path apart on the same 20 boxes (pinky40, 256^3, ``random_boxes``
seed 2, as row 6): the 8 cached DVID blocks each box meets, decoded by the kernel diced's
warm reads call (``decode_grid``), into

* **one cached result**: the same 2 MiB destination for every box, so it stays in the
  core's caches: the decode's own cost;
* **fresh results, plain stores**: one of three sets of 20 results in turn, each faulted in
  beforehand (as the result pool's buffers are), written with plain stores;
* **fresh results, staged**: the same, each layer of sub-blocks decoded into a staging
  buffer and written out with streaming stores, which is what diced does for results of
  1 MiB and more (``STREAM_BYTES``);
* **copy from decoded chunks**: no decode, each box copied (streaming stores) out of the
  decoded chunks it meets (``copy_grid``, as diced copies uint8 boxes): what a cache of
  decoded chunks, such as TensorStore's, costs at least, since it reads 42 MB of chunk rows
  from memory besides writing the results;
* **write only**: one decoded box, which stays cached, streamed into each fresh result
  (``copy_boxes``): the floor for writing 42 MB of uint64;

then whole reads: diced's ``h[box]`` (LMDB, a locked version, every block cached) and
TensorStore's zarr3 (file kvstore, blosc zstd-1, a 256 MiB ``cache_pool``, warm: decoded
chunks cached). Medians of ``--reads`` passes over the 20 boxes, interleaved.

Usage: ``python benchmarks/bench_label_bound.py [--labels PATH] [--reads 40]``
"""

from __future__ import annotations

import itertools
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import label_args, load_labels, median_time, random_boxes, zarr3_local_spec


def geometry(box: tuple[slice, ...], c: int = 64) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """The chunks a box meets (C order) and ``decode_grid``'s geometry for a 64^3 uint64
    result of it."""
    geo = [0] * 21
    ranges = []
    for a, d in enumerate(box):
        f = d.start // c
        m = (d.stop - 1) // c - f + 1
        geo[a], geo[3 + a], geo[6 + a], geo[9 + a], geo[12 + a] = d.start, d.stop, f, m, c
        ranges.append(range(f, f + m))
    geo[15:18] = [c * c * 8, c * 8, 8]  # (copy_grid: a decoded chunk's byte strides)
    geo[18:21] = [c * c * 8, c * 8, 8]
    return list(itertools.product(*ranges)), np.array(geo, np.int64)


def main() -> None:
    args = label_args(__doc__, 40)

    import tensorstore as ts

    import diced
    from diced.array._readcache import load_copy_kernels
    from diced.array.codecs.labelblock import encode_block
    from diced.backends.cache import chunk_cache

    n = 256
    data = load_labels(args.labels, n)
    boxes = random_boxes(n, 64, 20, seed=2)
    kernels = load_copy_kernels()
    blocks = {k: np.frombuffer(encode_block(np.ascontiguousarray(
        data[k[0] * 64:k[0] * 64 + 64, k[1] * 64:k[1] * 64 + 64, k[2] * 64:k[2] * 64 + 64])),
        np.uint8) for k in itertools.product(range(n // 64), repeat=3)}
    decoded = {k: np.ascontiguousarray(data[k[0] * 64:k[0] * 64 + 64, k[1] * 64:k[1] * 64 + 64,
                                            k[2] * 64:k[2] * 64 + 64]) for k in blocks}
    jobs = []
    for box in boxes:
        coords, geo = geometry(box)
        jobs.append((np.array([blocks[k].ctypes.data for k in coords], np.int64),
                     np.array([decoded[k].ctypes.data for k in coords], np.int64), geo, box))
    sets = [[np.ones((64, 64, 64), np.uint64) for _ in boxes] for _ in range(3)]
    stage = np.empty(64 ** 3, np.uint64)
    none = np.empty(0, np.uint64)
    for (addrs, _, geo, box), out in zip(jobs, sets[0]):  # every way gives the boxes exactly
        for st in (stage, none):
            out[...] = 0
            kernels.decode_grid(addrs, 0, addrs.size, geo, out.ctypes.data, st)
            assert np.array_equal(out, data[box])
    turn = itertools.cycle(range(3))

    def decode_cached() -> None:
        dst = sets[0][0].ctypes.data
        for addrs, _, geo, _ in jobs:
            kernels.decode_grid(addrs, 0, addrs.size, geo, dst, none)

    def decode_fresh(st: np.ndarray) -> Any:
        def run() -> None:
            for (addrs, _, geo, _), out in zip(jobs, sets[next(turn)]):
                kernels.decode_grid(addrs, 0, addrs.size, geo, out.ctypes.data, st)
        return run

    def copy_decoded() -> None:
        for (_, src, geo, _), out in zip(jobs, sets[next(turn)]):
            kernels.copy_grid(src, 0, src.size, geo, out.ctypes.data, True)

    one = np.ascontiguousarray(data[:64, :64, :64])
    whole = np.array([[64 * 64 * 8, 64 * 8, 64, 64, 64 * 8, 0]], np.int64)

    def write_only() -> None:
        src = np.array([one.ctypes.data], np.int64)
        for out in sets[next(turn)]:
            kernels.copy_boxes(src, whole, out.ctypes.data, 64 * 64 * 8, 64 * 8, True)

    with tempfile.TemporaryDirectory() as tmp:
        chunk_cache().resize(256 << 20)
        store = diced.Store(Path(tmp) / "d.lmdb", durable=False)
        repo = store.create_repo("r")
        seg = repo.create_labels("seg", data.shape)
        seg[...] = data
        h = seg.at(repo.commit("lock"))
        tspec = zarr3_local_spec(f"{tmp}/ts", n, 256 << 20)
        t = ts.open(tspec, create=True).result()
        t.write(data).result()
        for _ in range(2):  # warm: every block (diced) and decoded chunk (TensorStore) cached
            assert all(np.array_equal(h[b], data[b]) for b in boxes)
            assert all(np.array_equal(t[b].read().result(), data[b]) for b in boxes)

        ways = {
            "decode, one cached result": decode_cached,
            "decode, fresh results, plain stores": decode_fresh(none),
            "decode, fresh results, staged (diced)": decode_fresh(stage),
            "copy from decoded chunks (no decode)": copy_decoded,
            "write only (one cached box streamed)": write_only,
            "diced h[box] (LMDB, warm)": lambda: [h[b] for b in boxes],
            "TensorStore (warm cache pool)": lambda: [t[b].read().result() for b in boxes],
        }
        got: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(3):  # interleaved rounds
            for k, fn in ways.items():
                got[k].append(median_time(fn, args.reads) * 1e3)
        store.close()
    mb = 20 * 64 ** 3 * 8 / 1e6
    print(f"20 unaligned 64^3 boxes of pinky40 ({mb:.0f} MB of uint64 results), medians of "
          f"{args.reads} passes, three interleaved rounds (ms):")
    for k, v in got.items():
        print(f"  {k:<40} " + "  ".join(f"{x:6.2f}" for x in v))
    d, t_ = statistics.median(got["diced h[box] (LMDB, warm)"]), \
        statistics.median(got["TensorStore (warm cache pool)"])
    c = statistics.median(got["copy from decoded chunks (no decode)"])
    w = statistics.median(got["write only (one cached box streamed)"])
    print(f"  TensorStore / diced: {t_ / d:.2f}x; copy from decoded chunks / diced: {c / d:.2f}x; "
          f"writes alone {mb / w:.1f} GB/s")


if __name__ == "__main__":
    main()
