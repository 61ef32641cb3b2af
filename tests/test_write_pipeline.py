"""Pipelined writes (the next batch encoded while the current one is stored), the array form
of label-index deltas, and reads where the calling thread takes the first chunk group."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from diced.datatypes.array import _common, reading, writing
from diced.datatypes.labels._common import decode_index, encode_index
from diced.datatypes.labels._index_delta import IndexDeltas, block_delta
from diced.errors import CorruptDataError

# --- label-index deltas against the per-label dict reference -----------------------------


def _ref_apply(blocks, store):
    """The dict-based update labels.py used before: deltas[label][block] = count (0: drop)."""
    deltas = defaultdict(dict)
    for bc, old_l, new_l, new_n in blocks:
        for lab, n in zip(new_l.tolist(), new_n.tolist(), strict=True):
            if lab:
                deltas[lab][bc] = n
        for lab in np.setdiff1d(old_l, new_l).tolist():
            if lab:
                deltas[lab][bc] = 0
    out = dict(store)
    for lab, d in deltas.items():
        entry = decode_index(store.get(lab))
        for bc, n in d.items():
            if n:
                entry[bc] = n
            else:
                entry.pop(bc, None)
        out[lab] = encode_index(entry)
    return {k: v for k, v in out.items() if v is not None}, set(deltas)


def _uniq(rng, hi, k):
    labs = np.unique(rng.integers(0, hi, size=k).astype(np.uint64))
    return labs, rng.integers(1, 1000, size=len(labs)).astype(np.uint64)


@pytest.mark.parametrize("seed", range(25))
def test_index_deltas_equal_the_dict_reference(seed):
    rng = np.random.default_rng(seed)
    # existing entries, some of them for blocks the batch rewrites (and unsorted on purpose
    # in one seed out of five: apply must not rely on the stored order)
    store = {}
    for lab in range(1, 12):
        if rng.random() < 0.6:
            ent = {tuple(int(v) for v in rng.integers(0, 4, 3)): int(rng.integers(1, 99))
                   for _ in range(rng.integers(1, 6))}
            raw = encode_index(ent)
            if seed % 5 == 0 and raw is not None:
                raw = np.frombuffer(raw, "<u8").reshape(-1, 4)[::-1].tobytes()
            store[lab] = raw
    blocks = []
    for _ in range(rng.integers(0, 8)):
        bc = tuple(int(v) for v in rng.integers(0, 4, 3))  # repeats happen: the later wins
        old_l, _ = _uniq(rng, 12, rng.integers(0, 6))
        new_l, new_n = _uniq(rng, 12, rng.integers(0, 6))
        blocks.append((bc, old_l, new_l, new_n))
    want, touched = _ref_apply(blocks, store)
    d = IndexDeltas([(bc, *block_delta(o, nl, nn)) for bc, o, nl, nn in blocks])
    assert set(d.labels.tolist()) == touched
    assert list(d.labels) == sorted(d.labels)
    got = dict(store)
    for lab in d.labels.tolist():
        v = d.apply(lab, store.get(lab))
        if v is None:
            got.pop(lab, None)
        else:
            got[lab] = v
    assert {k: decode_index(v) for k, v in got.items()} == \
        {k: decode_index(v) for k, v in want.items()}
    for lab in d.labels.tolist():  # the stored form stays sorted by block, as encode_index
        v = got.get(lab)
        if v is not None and lab in want and seed % 5:
            assert v == encode_index(decode_index(want[lab]))
    grown = [lab for bc, o, nl, nn in blocks for lab in nl.tolist() if lab]
    assert d.top == (max(grown) if grown else 0)


def test_index_delta_of_an_empty_batch_and_a_corrupt_entry():
    d = IndexDeltas([])
    assert len(d) == 0 and d.top == 0
    d = IndexDeltas([((0, 0, 0), *block_delta(np.zeros(0, np.uint64),
                                              np.array([0, 7], np.uint64),
                                              np.array([5, 3], np.uint64)))])
    assert d.labels.tolist() == [7]
    assert decode_index(d.apply(7, None)) == {(0, 0, 0): 3}
    with pytest.raises(CorruptDataError):
        d.apply(7, b"\0" * 31)


def test_block_delta_matches_setdiff():
    rng = np.random.default_rng(3)
    for _ in range(200):
        old, _ = _uniq(rng, 30, rng.integers(0, 20))
        new, cnt = _uniq(rng, 30, rng.integers(0, 20))
        labs, cnts = block_delta(old, new, cnt)
        gone = [v for v in np.setdiff1d(old, new).tolist() if v]
        keep = new != 0
        assert labs.tolist() == new[keep].tolist() + gone
        assert cnts.tolist() == cnt[keep].tolist() + [0] * len(gone)


# --- pipelined array writes ---------------------------------------------------------------


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of a few chunks, so a small write runs through the pipeline many times."""
    monkeypatch.setattr(writing, "PIPELINE_MIN_BYTES", 3 * 4096)
    monkeypatch.setattr(_common, "BATCH_BYTES", 5 * 4096)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_pipelined_writes_equal_numpy(repo, small_batches, dtype):
    rng = np.random.default_rng(0)
    shape = (70, 50, 45)
    a = repo.create_array("a", dtype, shape, chunks=(16, 16, 16))
    ref = np.zeros(shape, dtype)
    for sel in [(slice(None),) * 3, (slice(3, 61), slice(5, 49), slice(1, 44)),
                (slice(16, 48), slice(0, 32), slice(16, 45)), (slice(60, 2, -3), 7, slice(None)),
                (slice(None),) * 3]:
        val = (rng.random(ref[sel].shape) * 200).astype(dtype)
        a[sel] = val
        ref[sel] = val
        assert np.array_equal(a[...], ref)
    assert np.array_equal(a[5:66, 3:47, 2:40], ref[5:66, 3:47, 2:40])


def test_pipelined_write_of_a_pyramid(repo, small_batches):
    a = repo.create_array("p", "uint8", (64, 64, 64), chunks=(16, 16, 16), max_scale=2)
    data = np.random.default_rng(1).integers(0, 255, (64, 64, 64)).astype(np.uint8)
    a[...] = data
    b = repo.create_array("q", "uint8", (64, 64, 64), chunks=(16, 16, 16), max_scale=2)
    for z in range(0, 64, 16):  # the same data, one layer of chunks at a time
        b[z:z + 16] = data[z:z + 16]
    for level in (1, 2):
        assert np.array_equal(a.scale(level)[...], b.scale(level)[...])


def test_pipelined_write_error_stops_cleanly(repo, small_batches, monkeypatch):
    a = repo.create_array("e", "uint8", (64, 64, 64), chunks=(16, 16, 16))
    calls = {"n": 0}
    real = a.codec.encode

    def flaky(chunk):
        calls["n"] += 1
        if calls["n"] == 20:
            raise CorruptDataError("injected encode failure")
        return real(chunk)

    monkeypatch.setattr(a.codec, "encode", flaky)
    with pytest.raises(CorruptDataError, match="injected"):
        a[...] = 7
    monkeypatch.setattr(a.codec, "encode", real)
    got = a[...]
    # batches before the failure are stored whole, the rest not at all; nothing else
    assert set(np.unique(got).tolist()) <= {0, 7}
    per_chunk = got.reshape(4, 16, 4, 16, 4, 16).transpose(0, 2, 4, 1, 3, 5).reshape(64, -1)
    assert all(len(np.unique(c)) == 1 for c in per_chunk)
    a[...] = 9  # the pool is not wedged
    assert (a[...] == 9).all()


# --- pipelined label writes: the index stays exact ------------------------------------------


def test_pipelined_label_writes_keep_the_index_exact(repo, small_batches, monkeypatch):
    monkeypatch.setattr(_common, "BATCH_BYTES", 3 * 16 ** 3 * 8)  # 3 blocks per batch
    rng = np.random.default_rng(5)
    shape = (48, 40, 40)
    L = repo.create_labels("seg", shape, chunks=(16, 16, 16))
    ref = np.zeros(shape, np.uint64)
    for sel in [(slice(None),) * 3, (slice(5, 40), slice(3, 37), slice(0, 40)),
                (slice(16, 48), slice(0, 32), slice(0, 16))]:
        val = rng.integers(0, 9, size=ref[sel].shape).astype(np.uint64) * 1000
        L[sel] = val
        ref[sel] = val
    assert np.array_equal(L[...], ref)
    labs, counts = np.unique(ref, return_counts=True)
    for lab, n in zip(labs.tolist(), counts.tolist(), strict=True):
        if lab:
            assert L.count(lab) == n
            want = {}
            for z in range(3):
                for y in range(3):
                    for x in range(3):
                        c = int((ref[z * 16:z * 16 + 16, y * 16:y * 16 + 16,
                                     x * 16:x * 16 + 16] == lab).sum())
                        if c:
                            want[(z, y, x)] = c
            assert L.block_counts(lab) == want
    assert L.maxlabel() == int(ref.max())


# --- reads: the caller takes the first group ----------------------------------------------


def test_multi_group_reads_equal_numpy(repo, monkeypatch):
    monkeypatch.setattr(reading, "GROUP_BYTES", 2 * 4096)
    monkeypatch.setattr(reading, "REMOTE_GROUP_BYTES", 2 * 4096)
    data = np.random.default_rng(2).integers(0, 255, (64, 48, 40)).astype(np.uint8)
    a = repo.create_array("r", "uint8", data.shape, chunks=(16, 16, 16))
    a[...] = data
    for sel in [(...,), (slice(3, 61), slice(5, 47), slice(1, 39)), (slice(None, None, -2),),
                (5, slice(None), slice(2, 30))]:
        assert np.array_equal(a[sel], data[sel])


def test_labelblock_encode_counted_equals_encode_and_counts():
    from diced.array.codecs.labelblock import LabelBlockCodec, block_label_counts

    rng = np.random.default_rng(9)
    for outer in ("zstd", "none"):
        codec = LabelBlockCodec(outer)
        for kind in ("random", "solid", "zero", "few"):
            if kind == "random":
                blk = rng.integers(0, 1 << 40, size=(16, 16, 16)).astype(np.uint64)
            elif kind == "solid":
                blk = np.full((16, 16, 16), 77, np.uint64)
            elif kind == "zero":
                blk = np.zeros((16, 16, 16), np.uint64)
            else:
                blk = rng.choice(np.array([0, 5, 1 << 63], np.uint64), size=(16, 16, 16))
            data, labs, counts = codec.encode_counted(blk)
            want_l, want_n = block_label_counts(blk)
            assert labs.tolist() == want_l.tolist() and counts.tolist() == want_n.tolist()
            if kind == "zero":
                assert data is None
            else:
                assert data == codec.encode(blk)
                assert np.array_equal(codec.decode(data, blk.shape, np.uint64), blk)


def test_partial_writes_never_starve_against_a_changing_chunk(repo):
    """A partly covered chunk that keeps changing between the optimistic read and the write
    (another writer winning every race) is merged inside the write after a few rounds:
    the write lands on the current value instead of failing."""
    arr = repo.create_array("starve", "uint16", (32, 32), chunks=(16, 16))
    arr[...] = 7
    space = arr._space
    real = space.read_many
    calls = []

    def stale(keys, ctx):  # the optimistic read always sees an old value
        calls.append(len(keys))
        return [None] * len(keys)

    space.read_many = stale
    try:
        arr[2:5, 3:9] = 9
    finally:
        space.read_many = real
    want = np.full((32, 32), 7, np.uint16)
    want[2:5, 3:9] = 9
    assert np.array_equal(arr[...], want)
    assert len(calls) > 1  # it did retry before merging inside
