"""Tests of the neuroglancer sharding math used by DVID shard export (pure, plus tensorstore)."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diced.errors import FormatError, InvalidArgumentError
from diced.export import _shard_kernels as kernels
from diced.export.sharding import ShardedScale, parse_spec

DATA = Path(__file__).parent / "data" / "dvid"


def _mcns() -> dict:
    path = DATA / "mcns-ng-specs.json"
    if not path.exists():
        pytest.skip("mcns-ng-specs.json not available")
    return json.loads(path.read_text())


def _spec(size, preshift, minishard, shard_bits, **extra) -> dict:
    scale = {
        "chunk_sizes": [[64, 64, 64]],
        "encoding": "compressed_segmentation",
        "compressed_segmentation_block_size": [8, 8, 8],
        "key": "8_8_8",
        "resolution": [8, 8, 8],
        "size": list(size),
        "sharding": {
            "@type": "neuroglancer_uint64_sharded_v1",
            "hash": "identity",
            "preshift_bits": preshift,
            "minishard_bits": minishard,
            "shard_bits": shard_bits,
            "minishard_index_encoding": "raw",
            "data_encoding": "raw",
        },
    }
    scale.update(extra)
    return {
        "@type": "neuroglancer_multiscale_volume",
        "type": "segmentation",
        "data_type": "uint64",
        "num_channels": 1,
        "scales": [scale],
    }


def _morton_reference(coord, bits) -> int:
    code = j = 0
    for i in range(max(bits)):
        for d in range(3):
            if i < bits[d]:
                code |= ((int(coord[d]) >> i) & 1) << j
                j += 1
    return code


# -- Morton codes and shard numbers -------------------------------------------------------------


def test_morton_tensorstore_vectors():
    # DVID export_test.go TestMortonCodeMatchesTensorstore
    coords = np.array([[2, 0, 1], [2, 3, 0], [9, 2, 1]], dtype=np.int64)
    codes = kernels.compressed_morton_codes(coords, np.array([4, 2, 1], dtype=np.int64))
    assert codes.dtype == np.uint64
    assert codes.tolist() == [0b1100, 0b11010, 0b1010101]


@settings(max_examples=200, deadline=None)
@given(
    bits=st.tuples(*[st.integers(0, 21)] * 3),
    data=st.data(),
)
def test_morton_matches_reference(bits, data):
    coords = np.array(
        [
            [data.draw(st.integers(0, (1 << b) - 1)) for b in bits]
            for _ in range(data.draw(st.integers(1, 5)))
        ],
        dtype=np.int64,
    )
    got = kernels.compressed_morton_codes(coords, np.array(bits, dtype=np.int64))
    assert got.tolist() == [_morton_reference(c, bits) for c in coords]


def test_shard_and_minishard_identity_hash():
    codes = np.array([0b1010101, 0, 2**40 + 12345], dtype=np.uint64)
    shard, mini = kernels.shard_and_minishard(codes, 1, 2, 3)
    for c, s, m in zip(codes.tolist(), shard.tolist(), mini.tolist(), strict=True):
        h = c >> 1
        assert m == h & 0b11
        assert s == (h >> 2) & 0b111
    # shifts of 64 bits give zero rather than wrapping
    shard, mini = kernels.shard_and_minishard(np.array([2**63 + 5], np.uint64), 64, 0, 64)
    assert shard.tolist() == [0] and mini.tolist() == [0]


def test_mcns_scale0_grid_bits_and_shard_shape():
    vol = parse_spec(_mcns())
    s0 = vol.scale(0)
    assert s0.grid == (1471, 1224, 2103)
    assert s0.bits == (11, 11, 12)
    assert s0.shard_shape == (32, 32, 32)
    assert s0.shard_shape_voxels == (2048, 2048, 2048)
    assert vol.batch_size == 256
    assert len(vol.scales) == 12


def test_mcns_all_scales_shard_shapes():
    vol = parse_spec(_mcns())
    # preshift+minishard = 15 bits -> 32^3 until the grid or the bits run out
    assert vol.scale(1).bits == (10, 10, 11)
    assert vol.scale(1).shard_shape == (32, 32, 32)
    s7 = vol.scale(7)  # grid (12, 10, 17), bits (4, 4, 5); 13 bits -> counts (4, 4, 5)
    assert s7.shard_shape == (12, 10, 17)
    s11 = vol.scale(11)  # grid (1, 1, 2), 1 bit
    assert s11.shard_shape == (1, 1, 2)


def test_fixture_shard_origin_at_scale1():
    s1 = parse_spec(_mcns()).scale(1)
    coords = np.array([[509, 413, 469], [499, 415, 479], [511, 414, 470]])
    origins = s1.shard_voxel_origins(coords)
    assert {tuple(o) for o in origins.tolist()} == {(30720, 24576, 28672)}
    assert s1.shard_name(origins[0]) == "30720_24576_28672"
    assert len(set(s1.shard_numbers(coords).tolist())) == 1


@pytest.mark.parametrize(
    ("size", "preshift", "minishard", "expected"),
    [
        ((640, 384, 256), 1, 1, (2, 2, 1)),  # 2 bits: x, y
        ((640, 384, 256), 2, 2, (4, 2, 2)),  # 4 bits: x, y, z, x
        ((640, 384, 256), 3, 2, (4, 4, 2)),  # 5 bits
        ((640, 128, 64), 2, 1, (4, 2, 1)),  # z has no bits, y runs out after 1
        ((640, 128, 64), 0, 0, (1, 1, 1)),
        ((640, 384, 256), 9, 6, (10, 6, 4)),  # more bits than the grid: one shard, clipped
    ],
)
def test_non_cubic_shard_shapes(size, preshift, minishard, expected):
    sc = parse_spec(_spec(size, preshift, minishard, 20)).scale(0)
    assert sc.shard_shape == expected


def _all_chunks(grid) -> np.ndarray:
    x, y, z = np.meshgrid(*[np.arange(g) for g in grid], indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


@pytest.mark.parametrize(
    ("size", "preshift", "minishard"),
    [
        ((640, 384, 256), 1, 1),
        ((640, 384, 256), 2, 2),
        ((640, 384, 256), 1, 3),
        ((640, 128, 64), 2, 1),
        ((1000, 70, 300), 3, 1),
    ],
)
def test_shard_boxes_are_a_bijection_with_shard_numbers(size, preshift, minishard):
    sc0 = ShardedScale(0, "k", size, (64, 64, 64), preshift, minishard, 0)
    sc = parse_spec(_spec(size, preshift, minishard, sc0.total_bits)).scale(0)
    chunks = _all_chunks(sc.grid)
    numbers = sc.shard_numbers(chunks).tolist()
    origins = [tuple(o) for o in sc.shard_origins(chunks).tolist()]
    by_number: dict[int, set] = {}
    by_origin: dict[tuple, set] = {}
    for n, o in zip(numbers, origins, strict=True):
        by_number.setdefault(n, set()).add(o)
        by_origin.setdefault(o, set()).add(n)
    assert all(len(v) == 1 for v in by_number.values())
    assert all(len(v) == 1 for v in by_origin.values())
    # every box is the clipped shard shape starting at its origin
    for o in by_origin:
        start, stop = sc.shard_box(np.asarray(o) * 64)
        assert start.tolist() == list(o)
        inside = np.all((chunks >= start) & (chunks < stop), axis=1)
        assert {tuple(c) for c in chunks[inside].tolist()} == {
            tuple(c) for c, oo in zip(chunks.tolist(), origins, strict=True) if oo == o
        }
        assert np.all(stop - start <= np.asarray(sc.shard_shape))


def test_shard_file_name():
    sc = parse_spec(_spec((640, 384, 256), 1, 2, 6)).scale(0)
    assert sc.shard_file_name(0x15) == "15.shard"
    assert sc.shard_file_name(0) == "00.shard"
    sc19 = parse_spec(_mcns()).scale(0)
    assert sc19.shard_file_name(0x61C5) == "061c5.shard"


def test_coords_outside_grid_rejected():
    sc = parse_spec(_spec((640, 384, 256), 1, 1, 7)).scale(0)
    with pytest.raises(InvalidArgumentError, match="outside"):
        sc.shard_numbers([[10, 0, 0]])
    with pytest.raises(InvalidArgumentError, match="outside"):
        sc.shard_numbers([[0, -1, 0]])
    with pytest.raises(InvalidArgumentError, match=r"\(n, 3\)"):
        sc.shard_numbers(np.zeros((2, 2), int))


# -- spec validation -------------------------------------------------------------------------------


def _mutate(fn):
    spec = _spec((640, 384, 256), 1, 2, 6)
    fn(spec)
    return spec


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s.update({"@type": "neuroglancer_legacy_mesh"}), "@type"),
        (lambda s: s.update({"data_type": "uint32"}), "data_type"),
        (lambda s: s.update({"num_channels": 2}), "num_channels"),
        (lambda s: s.update({"scales": []}), "scales"),
        (lambda s: s.update({"batch_size": 0}), "batch_size"),
        (lambda s: s["scales"][0].update({"chunk_sizes": [[32, 32, 32]]}), "chunk_sizes"),
        (lambda s: s["scales"][0].pop("chunk_sizes"), "chunk_sizes"),
        (lambda s: s["scales"][0].update({"size": [10, 10]}), "size"),
        (lambda s: s["scales"][0].update({"size": [10, 0, 10]}), "size"),
        (lambda s: s["scales"][0].update({"voxel_offset": [0, 64, 0]}), "voxel_offset"),
        (lambda s: s["scales"][0].pop("sharding"), "sharding"),
        (lambda s: s["scales"][0]["sharding"].update({"@type": "x"}), "@type"),
        (lambda s: s["scales"][0]["sharding"].update({"hash": "murmurhash3_x86_128"}), "hash"),
        (lambda s: s["scales"][0]["sharding"].pop("preshift_bits"), "preshift_bits"),
        (lambda s: s["scales"][0]["sharding"].update({"minishard_bits": -1}), "minishard_bits"),
        (lambda s: s["scales"][0]["sharding"].update({"shard_bits": "6"}), "shard_bits"),
        (lambda s: s["scales"][0]["sharding"].update({"shard_bits": 2}), "shard_bits"),
        (
            lambda s: s["scales"][0]["sharding"].update({"data_encoding": "zstd"}),
            "data_encoding",
        ),
    ],
)
def test_bad_specs_raise_format_error(mutate, field):
    with pytest.raises(FormatError, match=field):
        parse_spec(_mutate(mutate))


def test_bad_json_and_types():
    with pytest.raises(FormatError, match="JSON"):
        parse_spec("{not json")
    with pytest.raises(FormatError):
        parse_spec("[1, 2]")
    assert isinstance(FormatError("x"), InvalidArgumentError)


def test_parse_accepts_text_and_bytes():
    spec = _spec((640, 384, 256), 1, 2, 6)
    a = parse_spec(spec)
    assert parse_spec(json.dumps(spec)) == a
    assert parse_spec(json.dumps(spec).encode()) == a
    assert a.batch_size is None
    with pytest.raises(InvalidArgumentError):
        a.scale(1)


def test_numba_not_imported_by_import_diced():
    code = (
        "import sys, diced, diced.export.sharding, diced.export.arrow_shards;"
        "sys.exit(1 if 'numba' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- against tensorstore ---------------------------------------------------------------------------


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in directory.glob("*.shard")}


@pytest.mark.parametrize(
    ("size", "preshift", "minishard"),
    [
        ((640, 384, 256), 1, 2),  # 3 bits: 2x2x2 chunks
        ((640, 384, 256), 1, 1),  # 2 bits: 2x2x1, non-cubic
        ((640, 128, 64), 2, 1),  # z exhausted: 4x2x1
        ((448, 320, 192), 2, 2),  # 4 bits: 4x2x2
    ],
)
def test_shard_numbers_match_tensorstore(tmp_path, size, preshift, minishard):
    ts = pytest.importorskip("tensorstore")
    sc0 = ShardedScale(0, "k", size, (64, 64, 64), preshift, minishard, 0)
    shard_bits = sc0.total_bits - preshift - minishard
    spec = _spec(size, preshift, minishard, shard_bits)
    sc = parse_spec(spec).scale(0)
    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(tmp_path) + "/"},
            "multiscale_metadata": {
                "type": "segmentation",
                "data_type": "uint64",
                "num_channels": 1,
            },
            "scale_metadata": copy.deepcopy(
                {
                    "key": "s0",
                    "size": list(size),
                    "chunk_size": [64, 64, 64],
                    "encoding": "compressed_segmentation",
                    "compressed_segmentation_block_size": [8, 8, 8],
                    "resolution": [8, 8, 8],
                    "sharding": spec["scales"][0]["sharding"],
                }
            ),
            "create": True,
        }
    ).result()
    scale_dir = tmp_path / "s0"
    rng = np.random.default_rng(sum(size) + preshift)
    chunks = _all_chunks(sc.grid)
    chunks = chunks[rng.permutation(len(chunks))[:40]]
    expected = sc.shard_numbers(chunks)
    for k, (chunk, number) in enumerate(zip(chunks, expected.tolist(), strict=True)):
        before = _digest(scale_dir)
        x, y, z = (int(c) * 64 + 5 for c in chunk)
        store[x, y, z, 0] = k + 1
        after = _digest(scale_dir)
        changed = {n for n in after if before.get(n) != after[n]}
        assert changed == {sc.shard_file_name(number)}, (chunk, number, changed)
