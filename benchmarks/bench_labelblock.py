"""Benchmark the DVID label block codec against compressed_segmentation.

Data sets:

a. the 512 blocks of 64³ cut from the real 512³ pinky40 segmentation;
b. the 258 blocks of a real DVID export shard (tests/data/dvid/30720_24576_28672.arrow).

For each, single-threaded: encode and decode throughput (Mvoxels/s, best of ``--repeat``
passes over all blocks, numba JIT excluded) of diced's DVID block codec and of
``compressed_segmentation`` (8³ blocks), and total sizes before and after the outer byte
codecs. Run::

    python benchmarks/bench_labelblock.py [PINKY_NPY_GZ] [--repeat 5] [--markdown BENCHMARKS.md]

With ``--markdown`` the section "## Label block codec" of that file is written (replaced if
present, appended otherwise).
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import re
import sys
import time
import zlib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import zstandard

from diced.array.codecs import labelblock as lb

try:
    import compressed_segmentation as cseg
except ImportError:  # pragma: no cover
    sys.exit("this benchmark needs compressed_segmentation (pip install compressed-segmentation)")
try:
    import lz4.block as lz4block
except ImportError:  # pragma: no cover
    lz4block = None

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PINKY = "/work/shared/data/real/pinky40-segmentation-512.npy.gz"
DEFAULT_ARROW = ROOT / "tests" / "data" / "dvid" / "30720_24576_28672.arrow"
SECTION = "## Label block codec"


def pinky_blocks(path: str) -> list[np.ndarray]:
    with gzip.open(path) as f:
        vol = np.load(f).transpose(2, 1, 0)
    vol = np.ascontiguousarray(vol).astype(np.uint64)
    return [np.ascontiguousarray(vol[z:z + 64, y:y + 64, x:x + 64])
            for z in range(0, vol.shape[0], 64)
            for y in range(0, vol.shape[1], 64)
            for x in range(0, vol.shape[2], 64)]


def shard_blocks(path: Path) -> list[np.ndarray]:
    from pyarrow import ipc

    with open(path, "rb") as f:
        table = ipc.open_stream(f).read_all()
    zd = zstandard.ZstdDecompressor()
    return [lb.decode_block(zd.decompress(b)) for b in table.column("dvid_compressed_block")
            .to_pylist()]


def best_of(fns: dict[str, object], repeat: int) -> dict[str, float]:
    """Best wall time of each function, interleaving them so that load spikes hit all alike."""
    times = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - t)
    return times


def outer_codecs() -> dict[str, tuple[object, object]]:
    z1, z3 = zstandard.ZstdCompressor(level=1), zstandard.ZstdCompressor(level=3)
    zd = zstandard.ZstdDecompressor()
    codecs = {
        "zstd-1": (z1.compress, zd.decompress),
        "zstd-3": (z3.compress, zd.decompress),
        "gzip-6": (lambda d: zlib.compress(d, 6), zlib.decompress),
    }
    if lz4block is not None:
        codecs["lz4"] = (lz4block.compress, lz4block.decompress)
    return codecs


def measure(blocks: list[np.ndarray], repeat: int) -> dict[str, float]:
    shape = blocks[0].shape
    nvox = sum(b.size for b in blocks)
    out = np.empty(shape, dtype=np.uint64)
    cs_kw = {"order": "C", "block_size": (8, 8, 8)}
    cs_shape = shape[::-1]  # cseg takes (x, y, z) sizes; C order then means ZYX in memory

    dvid = [lb.encode_block(b) for b in blocks]  # also warms up numba
    lb.decode_block(dvid[0], out=out)
    cs = [cseg.compress(b, **cs_kw) for b in blocks]
    for d, c, b in zip(dvid, cs, blocks):
        assert np.array_equal(lb.decode_block(d), b)
        assert np.array_equal(cseg.decompress(c, cs_shape, np.uint64, **cs_kw), b)
    codec = lb.LabelBlockCodec()
    stored = [codec.encode(b) for b in blocks]

    t = best_of({
        "dvid_enc": lambda: [lb.encode_block(b) for b in blocks],
        "cseg_enc": lambda: [cseg.compress(b, **cs_kw) for b in blocks],
        # results are dropped at once (not kept in a list), as a chunk cache would do
        "dvid_dec": lambda: all(lb.decode_block(d) is not None for d in dvid),
        "cseg_dec": lambda: all(cseg.decompress(c, cs_shape, np.uint64, **cs_kw) is not None
                                for c in cs),
        "dvid_dec_out": lambda: [lb.decode_block(d, out=out) for d in dvid],
        "codec_enc": lambda: [codec.encode(b) for b in blocks],
        "codec_dec": lambda: [codec.decode(s, shape, np.uint64, out=out) for s in stored],
    }, repeat)
    r: dict[str, float] = {"blocks": len(blocks), "raw": sum(b.nbytes for b in blocks)}
    r.update({k: nvox / 1e6 / v for k, v in t.items()})

    r["size_DVID block"] = sum(map(len, dvid))
    for name, (comp, decomp) in outer_codecs().items():
        packed = [comp(d) for d in dvid]
        r[f"size_DVID block + {name}"] = sum(map(len, packed))
        t = best_of({"c": lambda comp=comp: [comp(d) for d in dvid],
                     "d": lambda decomp=decomp, packed=packed: [decomp(p) for p in packed]},
                    repeat)
        r[f"ctime_DVID block + {name}"] = t["c"] / len(blocks) * 1e3
        r[f"dtime_DVID block + {name}"] = t["d"] / len(blocks) * 1e3
    r["size_cseg"] = sum(map(len, cs))
    for name, (comp, _) in outer_codecs().items():
        if name.startswith("zstd"):
            r[f"size_cseg + {name}"] = sum(len(comp(c)) for c in cs)
    r["size_raw + zstd-1"] = sum(len(outer_codecs()["zstd-1"][0](b.tobytes())) for b in blocks)
    return r


def table(name: str, r: dict[str, float]) -> str:
    def pct(key: str) -> str:
        return f"{100 * r[key] / r['raw']:.3f} %"

    lines = [
        f"### {name}: {int(r['blocks'])} blocks of 64³ ({r['raw'] / 2**20:.0f} MiB of uint64)",
        "",
        "| throughput (Mvoxels/s, 1 thread) | diced | compressed_segmentation | diced / cseg |",
        "|---|---:|---:|---:|",
        (f"| encode | {r['dvid_enc']:.0f} | {r['cseg_enc']:.0f} | "
         f"{r['dvid_enc'] / r['cseg_enc']:.2f}× |"),
        (f"| decode (new array) | {r['dvid_dec']:.0f} | {r['cseg_dec']:.0f} | "
         f"{r['dvid_dec'] / r['cseg_dec']:.2f}× |"),
        (f"| decode into `out` | {r['dvid_dec_out']:.0f} | — | "
         f"{r['dvid_dec_out'] / r['cseg_dec']:.2f}× |"),
        (f"| `LabelBlockCodec()` (zstd-1) encode / decode into `out` | "
         f"{r['codec_enc']:.0f} / {r['codec_dec']:.0f} | — | — |"),
        "",
        ("| size | bytes | % of raw | vs cseg + same outer | outer compress / decompress "
         "(ms per block) |"),
        "|---|---:|---:|---:|---:|",
    ]
    for key in [k for k in r if k.startswith("size_")]:
        name = key[5:]
        cseg_key = "size_cseg" + name[len("DVID block"):]
        vs = f"{r[key] / r[cseg_key]:.2f}×" if name.startswith("DVID") and cseg_key in r else ""
        tm = (f"{r['ctime_' + name]:.3f} / {r['dtime_' + name]:.3f}"
              if "ctime_" + name in r else "")
        label = name + (" (codec default)" if name.endswith("zstd-1") and "DVID" in name else "")
        lines.append(f"| {label} | {int(r[key]):,} | {pct(key)} | {vs} | {tm} |")
    lines.append("")
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{SECTION}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pinky", nargs="?", default=DEFAULT_PINKY,
                    help="gzip'd .npy of the 512³ pinky40 segmentation (axes x, y, z)")
    ap.add_argument("--arrow", default=str(DEFAULT_ARROW), help="DVID export shard (.arrow)")
    ap.add_argument("--repeat", type=int, default=5, help="passes per measurement (best kept)")
    ap.add_argument("--markdown", help="write the results as a section of this markdown file")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()[0]
    parts = []
    results = [("pinky40 512³ segmentation", pinky_blocks(args.pinky)),
               ("mCNS export shard 30720_24576_28672", shard_blocks(Path(args.arrow)))]
    for name, blocks in results:
        r = measure(blocks, args.repeat)
        parts.append(table(name, r))
        print(parts[-1], flush=True)

    cmd = "python benchmarks/bench_labelblock.py " + " ".join(argv if argv is not None
                                                              else sys.argv[1:])
    import numba

    header = (
        f"Command: `{cmd.strip()}`\n\n"
        f"Machine: {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"compressed_segmentation {version('compressed-segmentation')}, zstandard "
        f"{zstandard.__version__}. Single thread; best of {args.repeat} passes; numba JIT "
        f"excluded. diced = DVID block serialization (first-appearance label order); cseg = "
        f"`compressed_segmentation.compress(arr, order='C', block_size=(8, 8, 8))`. "
        f"\"decode (new array)\" allocates each output (and drops it) like cseg does. "
        f"1-minute load average "
        f"{load_before:.1f} before / {os.getloadavg()[0]:.1f} after the run on "
        f"{os.cpu_count()} cores (the machine is shared; compare ratios, which come from "
        f"interleaved passes, rather than absolute rates).\n"
    )
    if args.markdown:
        write_section(Path(args.markdown), header + "\n" + "\n".join(parts))
        print(f"wrote section {SECTION!r} of {args.markdown}")


if __name__ == "__main__":
    main()
