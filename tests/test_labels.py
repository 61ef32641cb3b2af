"""LabelArray (diced.array.labels): voxels, label index, queries, label ids, versioning, errors.

Every property is checked against a plain numpy recomputation from the voxels read back with
``read(..., supervoxels=True)`` (or from the numpy volume that was written), on every local
backend of tests/conftest.py: ``lmdb`` (ordered keys: version resolution by cursor seeks) and
the fsspec ``memory`` and ``file`` stores (per-version manifests, as object stores).
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import diced
from diced.errors import (
    IndexOutOfBoundsError,
    InvalidArgumentError,
    LabelNotFoundError,
    LockedNodeError,
)

# pinky40 voxels 128:384 on every axis, z, y, x (tests/data/README.md)
REAL = Path(__file__).parent / "data" / "pinky40-256-zyx.npy.gz"


# --------------------------------------------------------------------------------------------
# fixtures (store_location comes from tests/conftest.py: lmdb, memory and file by default)


def open_store(location) -> diced.Store:
    opts = {"durable": False} if location.kind == "lmdb" else {}  # no fsync per transaction
    return diced.Store(location, **location.options, **opts)


@pytest.fixture
def store(store_location):
    s = open_store(store_location)
    yield s
    s.close()


def new_repo(store: diced.Store) -> diced.Repo:
    return store.create_repo(f"r{uuid.uuid4().hex[:12]}")


# --------------------------------------------------------------------------------------------
# numpy references


def ref_index(vol: np.ndarray, chunks: Sequence[int]) -> dict[int, dict[tuple[int, int, int], int]]:
    """label -> {block (z, y, x): voxel count} of a volume, block by block."""
    out: dict[int, dict[tuple[int, int, int], int]] = defaultdict(dict)
    cz, cy, cx = chunks
    for bz in range(-(-vol.shape[0] // cz)):
        for by in range(-(-vol.shape[1] // cy)):
            for bx in range(-(-vol.shape[2] // cx)):
                blk = vol[bz * cz:(bz + 1) * cz, by * cy:(by + 1) * cy, bx * cx:(bx + 1) * cx]
                labs, counts = np.unique(blk, return_counts=True)
                for lab, n in zip(labs.tolist(), counts.tolist(), strict=True):
                    if lab:
                        out[lab][(bz, by, bx)] = n
    return dict(out)


def ref_runs(mask: np.ndarray) -> np.ndarray:
    """Maximal +X runs ``[x, y, z, length]`` of a mask, sorted by z, y, x."""
    pad = np.zeros((mask.shape[0], mask.shape[1], mask.shape[2] + 2), np.int8)
    pad[:, :, 1:-1] = mask
    d = np.diff(pad, axis=2)
    starts, ends = np.argwhere(d == 1), np.argwhere(d == -1)  # both in z, y, x order
    return np.stack([starts[:, 2], starts[:, 1], starts[:, 0], ends[:, 2] - starts[:, 2]],
                    axis=1).astype(np.int64).reshape(-1, 4)


def ref_block_spans(blocks: Iterable[tuple[int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Coarse spans ``(bx, by, bz, length)``: maximal runs of consecutive x blocks (§5.4)."""
    spans: list[list[int]] = []
    for bz, by, bx in sorted(blocks):
        if spans and spans[-1][1] == by and spans[-1][2] == bz and spans[-1][0] + spans[-1][3] == bx:
            spans[-1][3] += 1
        else:
            spans.append([bx, by, bz, 1])
    return [tuple(s) for s in spans]


def parse_rles(data: bytes) -> np.ndarray:
    """Legacy RLE bytes (§5.1) parsed by hand: header checks, then (n, 4) spans as stored."""
    if not data:
        return np.zeros((0, 4), np.int64)
    assert data[:4] == bytes([0, 3, 0, 0])
    nvox, nspans = struct.unpack_from("<II", data, 4)
    assert nvox == 0
    assert len(data) == 12 + 16 * nspans
    return np.frombuffer(data, "<i4", offset=12).reshape(-1, 4).astype(np.int64)


def zyx_sorted(runs: np.ndarray) -> np.ndarray:
    return runs[np.lexsort((runs[:, 0], runs[:, 1], runs[:, 2]))]


def check_label(L, vol: np.ndarray, lab: int, ref: dict | None = None, *,
                supervoxels: bool = True, full: bool = True) -> None:
    """Every index query of one label against the numpy volume ``vol`` (already mapped to the
    label space asked for)."""
    from diced.array.sparsevol import decode_block_spans, decode_rles, runs_to_mask

    ref = ref if ref is not None else ref_index(vol, L.chunks).get(lab, {})
    mask = vol == lab
    total = int(mask.sum())
    assert L.count(lab, supervoxels=supervoxels) == total
    assert L.block_counts(lab, supervoxels=supervoxels) == dict(sorted(ref.items()))
    np.testing.assert_array_equal(L.blocks(lab, supervoxels=supervoxels),
                                  np.array(sorted(ref), dtype=np.int64).reshape(-1, 3))
    if not total:
        return
    ch = np.array(L.chunks)
    bl = np.array(sorted(ref))
    lo, hi = L.bbox(lab, supervoxels=supervoxels)
    assert lo == tuple((bl.min(0) * ch).tolist()) and hi == tuple(((bl.max(0) + 1) * ch).tolist())
    pts = np.argwhere(mask)
    assert L.bbox(lab, supervoxels=supervoxels, exact=True) == (
        tuple(pts.min(0).tolist()), tuple((pts.max(0) + 1).tolist()))
    coarse = L.sparsevol(lab, supervoxels=supervoxels, format="coarse")
    assert parse_rles(coarse).tolist() == [list(x) for x in ref_block_spans(ref)]
    np.testing.assert_array_equal(decode_block_spans(coarse), bl)
    if not full:
        return
    rles = L.sparsevol(lab, supervoxels=supervoxels)
    runs = decode_rles(rles)
    # the RLE bytes cover exactly the label's voxels, each once, with maximal runs
    assert int(runs[:, 3].sum()) == total
    np.testing.assert_array_equal(runs_to_mask(runs, (0, 0, 0), vol.shape), mask)
    np.testing.assert_array_equal(zyx_sorted(parse_rles(rles)), ref_runs(mask))
    np.testing.assert_array_equal(L.sparsevol(lab, supervoxels=supervoxels, format="runs"), runs)
    coords = L.sparsevol(lab, supervoxels=supervoxels, format="coords")
    assert len(coords) == total
    painted = np.zeros(vol.shape, bool)
    painted[tuple(coords.T.astype(np.int64))] = True
    np.testing.assert_array_equal(painted, mask)
    m, org = L.mask(lab, supervoxels=supervoxels)
    assert org == lo
    big = np.zeros(tuple(max(a, b) for a, b in zip(hi, vol.shape, strict=True)), bool)
    big[tuple(slice(o, o + s) for o, s in zip(org, m.shape, strict=True))] = m
    np.testing.assert_array_equal(big[:vol.shape[0], :vol.shape[1], :vol.shape[2]], mask)
    assert not big[vol.shape[0]:].any() and not big[:, vol.shape[1]:].any() \
        and not big[:, :, vol.shape[2]:].any()


def check_index(L, vol: np.ndarray, ever: Iterable[int] = (), *, full: bool = True,
                unmapped: bool = True) -> None:
    """The whole supervoxel index of ``L`` equals a recomputation from the supervoxel volume
    ``vol``; labels in ``ever`` that are gone from ``vol`` are gone from the index too.
    ``unmapped``: no edit mapped supervoxels to bodies, so body queries agree too."""
    ref = ref_index(vol, L.chunks)
    for lab, entry in ref.items():
        check_label(L, vol, lab, entry, full=full)
        if unmapped:
            assert L.count(lab) == L.count(lab, supervoxels=True)
    for lab in set(ever) - set(ref):
        assert L.count(lab, supervoxels=True) == 0
        assert L.block_counts(lab, supervoxels=True) == {}
        assert len(L.blocks(lab, supervoxels=True)) == 0
        with pytest.raises(LabelNotFoundError):
            L.sparsevol(lab, supervoxels=True)
        with pytest.raises(LabelNotFoundError):
            L.bbox(lab, supervoxels=True)


def stored_blocks(vol: np.ndarray, chunks: Sequence[int]) -> list[tuple[int, int, int]]:
    ref = ref_index(vol, chunks)
    return sorted({bc for e in ref.values() for bc in e})


# --------------------------------------------------------------------------------------------
# voxel round trips


SHAPE, CHUNKS = (70, 90, 50), (32, 32, 32)
BIG = 1 << 40  # labels above 32 bits must survive everything


@st.composite
def write_ops(draw):
    ops = []
    for _ in range(draw(st.integers(1, 6))):
        lo, hi = [], []
        for n in SHAPE:
            a = draw(st.integers(0, n - 1))
            b = draw(st.integers(a + 1, min(n, a + 48)))
            lo.append(a)
            hi.append(b)
        kind = draw(st.sampled_from(["const", "random", "random", "zero", "blocky"]))
        labels = draw(st.lists(st.sampled_from([1, 2, 3, 5, 8, 13, BIG + 1, BIG + 7]),
                               min_size=1, max_size=4, unique=True))
        seed = draw(st.integers(0, 2**31))
        ops.append((tuple(lo), tuple(hi), kind, labels, seed))
    return ops


def op_value(op) -> np.ndarray:
    lo, hi, kind, labels, seed = op
    shape = tuple(b - a for a, b in zip(lo, hi, strict=True))
    rng = np.random.default_rng(seed)
    if kind == "const":
        return np.full(shape, labels[0], np.uint64)
    if kind == "zero":
        return np.zeros(shape, np.uint64)
    choices = np.array([0, *labels], dtype=np.uint64)
    if kind == "random":
        return choices[rng.integers(0, len(choices), shape)]
    # blocky: a few slabs of constant labels, as segmentations look
    out = np.empty(shape, np.uint64)
    cuts = np.sort(rng.integers(0, shape[0] + 1, 2))
    out[:cuts[0]], out[cuts[0]:cuts[1]], out[cuts[1]:] = choices[rng.integers(0, len(choices), 3)]
    return out


def test_random_writes_round_trip_and_index(store, store_location):
    """After a random sequence of (unaligned, overlapping, zero) writes the voxels, the stored
    blocks and the whole label index equal a numpy recomputation."""

    @settings(max_examples=6 if store_location.kind == "lmdb" else 3, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(ops=write_ops())
    def run(ops):
        repo = new_repo(store)
        L = repo.create_labels("seg", SHAPE, chunks=CHUNKS)
        ref = np.zeros(SHAPE, np.uint64)
        ever: set[int] = set()
        for op in ops:
            lo, hi = op[0], op[1]
            val = op_value(op)
            sel = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            L[sel] = val
            ref[sel] = val
            ever.update(np.unique(val).tolist())
            np.testing.assert_array_equal(L[sel], ref[sel])
        np.testing.assert_array_equal(L.read(..., supervoxels=True), ref)
        np.testing.assert_array_equal(L[...], ref)
        assert sorted(L.stored_chunks()) == stored_blocks(ref, CHUNKS)
        check_index(L, ref, ever - {0})
        if ref.any():
            assert L.maxlabel() == max(ever)

    run()


def test_round_trip_edges_and_partial_overwrite(store):
    repo = new_repo(store)
    L = repo.create_labels("seg", (100, 130, 70))  # default 64^3 blocks, ragged edges
    rng = np.random.default_rng(1)
    vol = rng.integers(0, 5, (100, 130, 70)).astype(np.uint64) * np.uint64(BIG)
    L[...] = vol
    np.testing.assert_array_equal(L[...], vol)
    # unaligned partial overwrite crossing block boundaries, negative steps and int indexing
    patch = rng.integers(6, 9, (37, 70, 41)).astype(np.uint64)
    L[50:87, 40:110, 20:61] = patch
    vol[50:87, 40:110, 20:61] = patch
    np.testing.assert_array_equal(L[...], vol)
    np.testing.assert_array_equal(L[90:10:-3, 5, ::-2], vol[90:10:-3, 5, ::-2])
    assert int(L[99, 129, 69]) == int(vol[99, 129, 69])
    assert L.label_at((99, 129, 69)) == int(vol[99, 129, 69])
    # broadcast scalar
    L[0:3, 0:3, 0:3] = 42
    vol[0:3, 0:3, 0:3] = 42
    np.testing.assert_array_equal(L.read(np.s_[0:70, 0:70, 0:70], supervoxels=True), vol[:70, :70, :70])
    check_index(L, vol, full=False)


def test_write_blocks_and_zero_removal(store):
    repo = new_repo(store)
    L = repo.create_labels("seg", (64, 96, 128), chunks=(32, 32, 32))
    rng = np.random.default_rng(2)
    coords = np.array([[0, 0, 0], [1, 2, 3], [0, 1, 2]])
    # 4^3 cells of random labels (one block stays pure noise)
    blocks = [np.kron(rng.integers(0, 4, (8, 8, 8)), np.ones((4, 4, 4), int)).astype(np.uint64)
              + np.uint64(10 * i) for i in range(3)]
    blocks[2] = rng.integers(0, 4, (32, 32, 32)).astype(np.uint64) + np.uint64(20)
    L.write_blocks(coords, blocks)
    vol = np.zeros(L.shape, np.uint64)
    for (z, y, x), b in zip(coords, blocks, strict=True):
        vol[z * 32:(z + 1) * 32, y * 32:(y + 1) * 32, x * 32:(x + 1) * 32] = b
    np.testing.assert_array_equal(L[...], vol)
    assert sorted(L.stored_chunks()) == [(0, 0, 0), (0, 1, 2), (1, 2, 3)]
    for got, b in zip(L.read_chunks(coords), blocks, strict=True):
        np.testing.assert_array_equal(got, b)
    check_index(L, vol)
    ever = set(np.unique(vol).tolist()) - {0}
    # zeros remove blocks: as a whole block and as a region write covering one block
    L.write_blocks([[1, 2, 3]], [np.zeros((32, 32, 32), np.uint64)])
    L[0:32, 32:64, 64:96] = 0
    vol[32:64, 64:96, 96:128] = 0
    vol[0:32, 32:64, 64:96] = 0
    assert L.stored_chunks() == [(0, 0, 0)]
    np.testing.assert_array_equal(L[...], vol)
    check_index(L, vol, ever)
    # a partial zero write keeps the block, with exact counts
    L[0:16, 0:32, 0:32] = 0
    vol[0:16, 0:32, 0:32] = 0
    assert L.stored_chunks() == [(0, 0, 0)]
    check_index(L, vol, ever)
    L[...] = 0
    assert L.stored_chunks() == []
    for lab in ever:
        assert L.count(lab) == 0
    with pytest.raises(InvalidArgumentError):
        L.write_blocks([[0, 0, 0]], [np.zeros((32, 32, 31), np.uint64)])
    # a block given twice in one call: the last one wins, in the voxels and in the index
    # (the first one's labels stayed in the index before the fix)
    L.write_blocks([[0, 0, 0], [1, 1, 1], [0, 0, 0]],
                   [np.full((32,) * 3, 7, np.uint64), np.full((32,) * 3, 8, np.uint64),
                    np.full((32,) * 3, 9, np.uint64)])
    vol[...] = 0
    vol[32:64, 32:64, 32:64] = 8
    vol[0:32, 0:32, 0:32] = 9
    np.testing.assert_array_equal(L[...], vol)
    check_index(L, vol, [7], full=False)


def test_point_and_box_queries(store):
    repo = new_repo(store)
    L = repo.create_labels("seg", (80, 96, 112), chunks=(32, 32, 32))
    rng = np.random.default_rng(3)
    vol = np.zeros(L.shape, np.uint64)
    for lab in range(1, 30):
        z, y, x = rng.integers(0, 70, 3)
        d = rng.integers(3, 25, 3)
        vol[z:z + d[0], y:y + d[1], x:x + d[2]] = lab + (BIG if lab % 3 == 0 else 0)
    L[...] = vol
    pts = np.stack([rng.integers(0, n, 2000) for n in vol.shape], axis=1)
    np.testing.assert_array_equal(L.labels_at(pts), vol[tuple(pts.T)])
    np.testing.assert_array_equal(L.labels_at(pts, supervoxels=True), vol[tuple(pts.T)])
    assert L.labels_at(np.zeros((0, 3), int)).shape == (0,)
    for p in pts[:20]:
        assert L.label_at(p) == int(vol[tuple(p)])
    with pytest.raises(IndexOutOfBoundsError):
        L.labels_at([[0, 0, 112]])
    with pytest.raises(IndexOutOfBoundsError):
        L.labels_at([[-1, 0, 0]])
    for box in [np.s_[...], np.s_[10:47, 3:90, 31:33], np.s_[0:1, 0:1, 0:1], np.s_[5, :, 40:80]]:
        want = np.unique(vol[box])
        np.testing.assert_array_equal(L.labels_in(box), want[want != 0])
        assert L.labels_in(box).dtype == np.uint64
    assert len(L.labels_in(np.s_[79:80, 95:96, 111:112])) == int(vol[79, 95, 111] != 0)


# --------------------------------------------------------------------------------------------
# label ids: maxlabel, nextlabel, allocate


def test_maxlabel_per_version(store):
    repo = new_repo(store)
    L = repo.create_labels("seg", (64, 64, 64), chunks=(32, 32, 32))
    assert L.maxlabel() == 0
    L[0:4, 0:4, 0:4] = 10
    root = repo.commit("root")
    assert L.maxlabel() == 10
    a = repo.branch("a")
    La = a.labels("seg")
    La[10:12, 0:4, 0:4] = 50
    assert La.maxlabel() == 50
    # removing the label does not lower maxlabel (it is a high-water mark, as in DVID)
    La[10:12, 0:4, 0:4] = 0
    assert La.maxlabel() == 50
    assert repo.version(root.uuid).labels("seg").maxlabel() == 10
    repo.commit("a done")
    b = repo.branch("b", parent=root.uuid)
    Lb = b.labels("seg")
    assert Lb.maxlabel() == 10  # a sibling's label does not count
    Lb[0:4, 40:44, 0:4] = 30
    assert Lb.maxlabel() == 30
    assert repo.version(a.uuid).labels("seg").maxlabel() == 50
    # ids stay unique across the repo: allocation is above every label of every version
    start, end = Lb.allocate(5)
    assert (start, end) == (51, 55)
    assert Lb.nextlabel() == 56
    repo.commit("b done")
    m = repo.merge(a.uuid, b.uuid)
    assert m.labels("seg").maxlabel() == 50


def test_allocate_unique_and_above_written(store):
    repo = new_repo(store)
    L = repo.create_labels("seg", (64, 64, 64), chunks=(32, 32, 32))
    assert L.nextlabel() == 1
    got = [L.allocate(1) for _ in range(5)]
    assert got == [(i, i) for i in range(1, 6)]
    L[0, 0, 0] = 1000
    s, e = L.allocate(10)
    assert (s, e) == (1001, 1010)
    assert L.nextlabel() == 1011
    L[0, 0, 1] = 1005  # a label below the allocated range does not move it back
    assert L.allocate(1) == (1011, 1011)
    L[0, 0, 2] = BIG
    assert L.allocate(2) == (BIG + 1, BIG + 2)
    ids = []
    for n in (1, 3, 7, 2):
        a, b = L.allocate(n)
        ids.extend(range(a, b + 1))
    assert len(set(ids)) == len(ids) and min(ids) > BIG + 2
    # a second handle (fresh repo object) sees the same counter
    L2 = store.open_repo(repo.alias).labels("seg")
    assert L2.allocate(1)[0] == max(ids) + 1
    for bad in (0, -1, 1.5, "3"):
        with pytest.raises(InvalidArgumentError):
            L.allocate(bad)


_ALLOC_CHILD = textwrap.dedent("""
    import json, sys
    import diced
    store = diced.Store(sys.argv[1])  # durable: each allocation is a synced transaction
    L = store.open_repo(sys.argv[2]).labels("seg")
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.readline()
    ids = [L.allocate(1)[0] for _ in range(int(sys.argv[3]))]
    print(json.dumps(ids))
""")


def test_allocate_across_processes(tmp_path):
    path = tmp_path / "shared.diced"
    with diced.Store(path, durable=False) as s:
        repo = s.create_repo("procs")
        L = repo.create_labels("seg", (64, 64, 64), chunks=(32, 32, 32))
        L[0, 0, 0] = 777
        alias = repo.alias
    env = {**os.environ, "NUMBA_DISABLE_JIT": os.environ.get("NUMBA_DISABLE_JIT", "0")}
    procs = [subprocess.Popen([sys.executable, "-c", _ALLOC_CHILD, str(path), alias, "200"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    for p in procs:  # both are ready before either starts allocating
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    ids = results[0] + results[1]
    assert len(ids) == 400 and len(set(ids)) == 400
    assert min(ids) > 777
    assert all(a < b for a, b in zip(results[0], results[0][1:]))  # monotone per process
    with diced.Store(path, durable=False) as s:
        L = s.open_repo("procs").labels("seg")
        assert L.nextlabel() == max(ids) + 1 == 777 + 400 + 1


@pytest.mark.backends("lmdb", "memory")  # the backends with atomic multi-key updates
def test_concurrent_writers_keep_the_index_exact(store):
    """Threads overwriting the same blocks: each block write and its index update happen
    together (a writer whose base block changed underneath it recomputes), so the index
    matches the final voxels."""
    L = new_repo(store).create_labels("seg", (64, 64, 128), chunks=(32, 32, 32))
    errors = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(12):
                lo = rng.integers(0, [48, 48, 100])
                hi = lo + rng.integers(8, 40, 3)
                L[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = int(rng.integers(0, 5))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    check_index(L, L.read(..., supervoxels=True), range(1, 5), full=False)


# --------------------------------------------------------------------------------------------
# versioning


def test_index_at_old_version_unchanged(store):
    repo = new_repo(store)
    L = repo.create_labels("seg", (64, 96, 96), chunks=(32, 32, 32))
    rng = np.random.default_rng(4)
    v0 = rng.integers(0, 6, L.shape).astype(np.uint64)
    v0[:, :, 64:] = 0
    L[...] = v0
    root = repo.commit("root")
    snap = {lab: L.block_counts(lab) for lab in range(1, 10)}
    runs = {lab: L.sparsevol(lab) for lab in range(1, 6)}
    repo.newversion("child")
    v1 = v0.copy()
    v1[10:50, 20:70, 30:90] = rng.integers(3, 9, (40, 50, 60)).astype(np.uint64)
    v1[:, 0:32, 0:32] = 0
    L[...] = v1
    old = repo.version(root.uuid).labels("seg")
    np.testing.assert_array_equal(old[...], v0)
    assert {lab: old.block_counts(lab) for lab in range(1, 10)} == snap
    assert {lab: old.sparsevol(lab) for lab in range(1, 6)} == runs
    assert old.maxlabel() == 5
    check_index(old, v0, range(1, 10), full=False)
    check_index(L, v1, range(1, 10), full=False)
    assert L.maxlabel() == 8
    # a third version on top
    repo.commit("c")
    repo.newversion("grandchild")
    L[...] = 0
    check_index(L, np.zeros_like(v1), range(1, 10))
    check_index(repo.version(root.uuid).labels("seg"), v0, full=False)


def test_version_pinned_handles_and_branches(store):
    repo = new_repo(store)
    L = repo.create_labels("seg", (32, 32, 96), chunks=(32, 32, 32))
    L[:, :, 0:32] = 1
    root = repo.commit()
    a = repo.branch("a")
    a.labels("seg")[:, :, 32:64] = 1
    a.labels("seg")[:, :, 0:8] = 2
    repo.commit()
    b = repo.branch("b", parent=root.uuid)
    b.labels("seg")[:, :, 64:96] = 1
    La, Lb = repo.version(a.uuid).labels("seg"), b.labels("seg")
    assert La.block_counts(1) == {(0, 0, 0): 32 * 32 * 24, (0, 0, 1): 32 ** 3}
    assert Lb.block_counts(1) == {(0, 0, 0): 32 ** 3, (0, 0, 2): 32 ** 3}
    assert Lb.count(2) == 0 and La.count(2) == 32 * 32 * 8
    assert repo.version(root.uuid).labels("seg").block_counts(1) == {(0, 0, 0): 32 ** 3}


def test_resize_keeps_the_index(store):
    """Shrinking drops and trims blocks; the index followed none of it before the fix."""
    repo = new_repo(store)
    L = repo.create_labels("seg", (64, 80, 128), chunks=(32, 32, 32))
    rng = np.random.default_rng(6)
    vol = np.kron(rng.integers(0, 6, (8, 10, 16)), np.ones((8, 8, 8), int)).astype(np.uint64)
    L[...] = vol
    root = repo.commit()
    repo.newversion()
    L.resize((64, 70, 69))  # drops the x blocks past 69 and trims those across 69 and y 70
    small = vol[:, :70, :69]
    np.testing.assert_array_equal(L.read(..., supervoxels=True), small)
    check_index(L, small, range(1, 6), full=False)
    assert sorted(L.stored_chunks()) == stored_blocks(small, L.chunks)
    L.resize((64, 80, 128))  # grown back: the cut-off data stays gone at this version
    grown = np.zeros_like(vol)
    grown[:, :70, :69] = small
    np.testing.assert_array_equal(L[...], grown)
    check_index(L, grown, range(1, 6), full=False)
    old = repo.version(root.uuid).labels("seg")
    np.testing.assert_array_equal(old[...], vol)
    check_index(old, vol, full=False)


# --------------------------------------------------------------------------------------------
# the real segmentation


@pytest.fixture(scope="module")
def pinky():
    if not REAL.exists():
        pytest.skip(f"{REAL} not present")
    with gzip.open(REAL) as f:
        crop = np.load(f)
    # the full volume's [256:384] on every axis
    return np.ascontiguousarray(crop[128:256, 128:256, 128:256]).astype(np.uint64)


def test_real_segmentation(store, store_location, pinky):
    repo = new_repo(store)
    # a 128^3 cut written at an unaligned offset: blocks on every side are partial
    shape, off = (150, 160, 170), (10, 20, 30)
    L = repo.create_labels("seg", shape)
    sel = tuple(slice(o, o + n) for o, n in zip(off, pinky.shape, strict=True))
    L[sel] = pinky
    vol = np.zeros(shape, np.uint64)
    vol[sel] = pinky
    np.testing.assert_array_equal(L[sel], pinky)
    # queried at the committed version (object stores then list each version's writes once)
    L = repo.version(repo.commit("ingest").uuid).labels("seg")
    got = L.read(..., supervoxels=True)
    np.testing.assert_array_equal(got, vol)
    labs, counts = np.unique(got, return_counts=True)
    for lab, n in zip(labs.tolist(), counts.tolist(), strict=True):
        if lab:
            assert L.count(lab) == n
    assert L.maxlabel() == int(labs.max())
    ref = ref_index(vol, L.chunks)
    assert set(ref) == set(labs.tolist()) - {0}
    for lab in labs.tolist()[1:]:
        assert L.block_counts(lab) == ref[lab]
    # RLEs and exact boxes of the largest labels (and of a few more on lmdb)
    many = 4 if store_location.kind == "lmdb" else 2
    for lab in labs[np.argsort(counts)[::-1]][:many].tolist():
        if lab:
            check_label(L, vol, lab, ref[lab])
    rng = np.random.default_rng(5)
    pts = np.stack([rng.integers(0, n, 3000) for n in shape], axis=1)
    np.testing.assert_array_equal(L.labels_at(pts), vol[tuple(pts.T)])


# --------------------------------------------------------------------------------------------
# errors


def _snapshot(store: diced.Store) -> dict[str, bytes | None]:
    keys = list(store.backend.list_keys(""))
    return dict(zip(keys, store.backend.get_many(keys), strict=True))


def _needs_label(L, lab):
    return [lambda: L.bbox(lab), lambda: L.bbox(lab, exact=True),
            lambda: L.sparsevol(lab), lambda: L.sparsevol(lab, format="coords"),
            lambda: L.sparsevol(lab, format="coarse"),
            lambda: L.runs(lab), lambda: L.mask(lab), lambda: L.coords(lab),
            lambda: L.split_supervoxel(lab, np.zeros((0, 4), np.int32)),
            lambda: L.merge(3, [lab]), lambda: L.merge(lab, [3]),
            lambda: L.cleave(lab, [lab]), lambda: L.renumber(100, lab)]


def _edits(h):
    return [lambda: h.__setitem__((0, 0, 0), 9), lambda: h.__setitem__(np.s_[...], 0),
            lambda: h.write_blocks([[0, 0, 0]], [np.ones((32,) * 3, np.uint64)]),
            lambda: h.merge(3, [5]), lambda: h.cleave(3, [4]), lambda: h.renumber(100, 5),
            lambda: h.split_supervoxel(5, (np.ones((5, 5, 5), bool), (0, 40, 0)))]


def test_absent_labels(store):
    repo = new_repo(store)
    L = repo.create_labels("seg", (64, 64, 64), chunks=(32, 32, 32))
    L[0:10, 0:10, 0:10] = 3
    for lab in (1, 4, BIG):
        assert L.count(lab) == 0 and L.count(lab, supervoxels=True) == 0
        assert L.block_counts(lab) == {}
        assert len(L.supervoxels(lab)) == 0
        for call in _needs_label(L, lab):
            with pytest.raises(LabelNotFoundError):
                call()
    assert L.mutations() == []


def test_locked_version_rejects_writes_and_edits(store):
    repo = new_repo(store)
    L = repo.create_labels("seg", (64, 64, 64), chunks=(32, 32, 32))
    L[0:40, 0:10, 0:10] = 3
    L[0:10, 20:30, 0:10] = 4
    L[0:10, 40:50, 0:10] = 5
    L.merge(3, [4])
    repo.commit("locked")
    before = _snapshot(store)
    pinned = repo.version(repo.head.uuid).labels("seg")
    for handle in (L, pinned):
        for call in _edits(handle):
            with pytest.raises(LockedNodeError):
                call()
    assert _snapshot(store) == before  # nothing stored, not even an allocated id
    assert L.count(3) == 40 * 100 + 1000 and L.body(4) == 3


def test_invalid_arguments(store):
    repo = new_repo(store)
    L = repo.create_labels("seg", (64, 64, 64), chunks=(32, 32, 32))
    L[0:10, 0:10, 0:10] = 1
    L[0:10, 20:30, 0:10] = 2
    L[0:10, 40:50, 0:10] = 3
    L[30:40, 40:50, 0:10] = 4
    before = _snapshot(store)
    bad = [
        lambda: L.merge(0, [1]), lambda: L.merge(1, [0]), lambda: L.merge(1, [2, 0]),
        lambda: L.merge(1, []), lambda: L.merge(1, [1]), lambda: L.merge(1, [2, 1]),
        lambda: L.renumber(2, 1), lambda: L.renumber(0, 1),
        lambda: L.sparsevol(1, format="nope"), lambda: L.allocate(0),
        lambda: L.scale(1), lambda: L.scale(-1),
    ]
    for call in bad:
        with pytest.raises(InvalidArgumentError):
            call()
    assert _snapshot(store) == before
    L.merge(1, [2])
    before = _snapshot(store)
    for call in (lambda: L.cleave(1, [1, 2]), lambda: L.cleave(1, [3]), lambda: L.cleave(1, []),
                 lambda: L.cleave(1, [2, 3]), lambda: L.cleave(3, [3]),
                 lambda: L.renumber(3, 1), lambda: L.renumber(1, 3)):
        with pytest.raises(InvalidArgumentError):
            call()
    assert _snapshot(store) == before
    with pytest.raises(InvalidArgumentError):
        repo.create_labels("odd", (64, 64, 64), chunks=(30, 32, 32))
    with pytest.raises(InvalidArgumentError):
        repo.create_labels("flat", (64, 64), chunks=(32, 32))
