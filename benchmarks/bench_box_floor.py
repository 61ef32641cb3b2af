"""Warm reads of 20 unaligned 64^3 boxes against the cost of copying their voxels in numpy.

Row 6 of ``bench_core.py`` asks a warm read of these boxes (every chunk cached) to take at
most half of TensorStore's time. A warm uint8 read copies voxels out of cached decoded
chunks into the results, so it cannot beat copying the same voxels in memory (a warm label
read decodes cached DVID label blocks, which hold far fewer bytes than their voxels). This
script times, on row 6's data (``make_image`` for uint8, pinky40 for the labels; 256^3,
``random_boxes`` seed 2):

* **numpy, one array**: ``out[...] = data[box]`` for each box, out of the whole volume held
  as one C-ordered array: a strided copy of exactly the result's voxels;
* **numpy, decoded chunks**: each box assembled from the 64^3 chunks it meets, held as
  separate arrays, one slice assignment per chunk (what a cache of decoded chunks does);
* **diced** ``h[box]``: LMDB, a locked version, every chunk cached (uint8: decoded chunks;
  labels: DVID label blocks, decoded on each read);
* **TensorStore**: zarr3 on the file kvstore (blosc zstd-1), a 256 MiB ``cache_pool``,
  warm (decoded chunks cached).

The two numpy ways write into results that are already faulted in (one of three sets in
turn, as diced's result pool hands out recycled buffers): the copy alone, without
allocating. Medians of ``--reads`` passes over the 20 boxes, three interleaved rounds,
each result dropped before the next pass. The printed ratios say how far each system is
from the plain numpy copy, and so what "2x TensorStore" asks of diced.

Usage: ``python benchmarks/bench_box_floor.py [--labels PATH] [--reads 40]``
"""

from __future__ import annotations

import itertools
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import (
    CACHE_BYTES,
    DICED_CODEC,
    label_args,
    load_labels,
    make_image,
    median_time,
    random_boxes,
    zarr3_local_spec,
)


def from_chunks(chunks: dict[tuple[int, ...], np.ndarray], box: tuple[slice, ...],
                out: np.ndarray, c: int = 64) -> np.ndarray:
    """``box`` assembled in ``out`` from the decoded chunks it meets, one slice assignment
    each."""
    ranges = [range(s.start // c, (s.stop - 1) // c + 1) for s in box]
    for k in itertools.product(*ranges):
        src, dst = [], []
        for s, i in zip(box, k):
            lo, hi = max(s.start, i * c), min(s.stop, (i + 1) * c)
            src.append(slice(lo - i * c, hi - i * c))
            dst.append(slice(lo - s.start, hi - s.start))
        out[tuple(dst)] = chunks[k][tuple(src)]
    return out


def run(kind: str, data: np.ndarray, reads: int) -> None:
    import tensorstore as ts

    import diced
    from diced.array._readcache import load_copy_kernels
    from diced.backends.cache import chunk_cache

    n = data.shape[0]
    boxes = random_boxes(n, 64, 20, seed=2)
    chunks = {k: np.ascontiguousarray(data[k[0] * 64:k[0] * 64 + 64, k[1] * 64:k[1] * 64 + 64,
                                           k[2] * 64:k[2] * 64 + 64])
              for k in itertools.product(range(n // 64), repeat=3)}
    with tempfile.TemporaryDirectory() as tmp:
        chunk_cache().resize(CACHE_BYTES)
        store = diced.Store(Path(tmp) / "d.lmdb", durable=False)
        repo = store.create_repo("r")
        if kind == "labels":
            arr = repo.create_labels("a", data.shape)
        else:
            arr = repo.create_array("a", data.dtype, data.shape, chunks=(64, 64, 64),
                                    codec=DICED_CODEC)
        arr[...] = data
        h = arr.at(repo.commit("lock"))
        t = ts.open(zarr3_local_spec(f"{tmp}/ts", n, 0, data.dtype), create=True).result()
        t.write(data).result()
        t = ts.open(zarr3_local_spec(f"{tmp}/ts", n, CACHE_BYTES, data.dtype)).result()
        sets = [[np.ones((64, 64, 64), data.dtype) for _ in boxes] for _ in range(3)]
        turn = itertools.cycle(sets)
        for _ in range(2):  # warm: every chunk cached by both; copy kernels loaded
            assert all(np.array_equal(h[b], data[b]) for b in boxes)
            assert all(np.array_equal(t[b].read().result(), data[b]) for b in boxes)
            assert all(np.array_equal(from_chunks(chunks, b, out), data[b])
                       for b, out in zip(boxes, next(turn)))
        load_copy_kernels()

        def one_array() -> None:
            for b, out in zip(boxes, next(turn)):
                out[...] = data[b]

        ways = {
            "numpy, one array": one_array,
            "numpy, decoded chunks": lambda: [from_chunks(chunks, b, out)
                                              for b, out in zip(boxes, next(turn))],
            "diced h[box] (LMDB, warm)": lambda: [h[b] for b in boxes],
            "TensorStore (warm cache pool)": lambda: [t[b].read().result() for b in boxes],
        }
        got: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(3):  # interleaved rounds
            for k, fn in ways.items():
                got[k].append(median_time(fn, reads) * 1e3)
        store.close()
    mb = 20 * 64 ** 3 * data.itemsize / 1e6
    print(f"{kind}: 20 unaligned 64^3 boxes ({mb:.0f} MB of results), medians of {reads} "
          "passes, three interleaved rounds (ms):")
    for k, v in got.items():
        print(f"  {k:<38} " + "  ".join(f"{x:6.2f}" for x in v))
    med = {k: statistics.median(v) for k, v in got.items()}
    copy = med["numpy, one array"]
    d, t_ = med["diced h[box] (LMDB, warm)"], med["TensorStore (warm cache pool)"]
    print(f"  TensorStore / diced {t_ / d:.2f}x; diced / numpy copy {d / copy:.2f}x; "
          f"TensorStore / numpy copy {t_ / copy:.2f}x\n")


def main() -> None:
    args = label_args(__doc__, 40)
    run("uint8", make_image(256), args.reads)
    run("labels", load_labels(args.labels, 256), args.reads)


if __name__ == "__main__":
    main()
