"""Deduplicating stores (diced.backends.dedup): identical payloads stored once, and collected
correctly when shared."""

from __future__ import annotations

import numpy as np
import pytest

import diced
from diced.errors import CorruptDataError, InvalidArgumentError


@pytest.fixture
def store(store_location):
    s = diced.Store(store_location, dedup=True, **store_location.options)
    yield s
    s.close()


def _blobs(store) -> set[str]:
    return set(store.raw_backend.list_keys("x/"))


def _noise(seed: int, shape=(16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


@pytest.mark.all_backends
def test_identical_payloads_at_other_versions_and_positions_are_stored_once(store):
    repo = store.create_repo("t")
    a = repo.create_array("img", "uint8", (64, 64), chunks=(16, 16))
    n = _noise(1)
    a[:16, :16] = n
    a[32:48, 16:32] = n  # same payload, another position
    v0 = repo.commit("v0")
    assert len(_blobs(store)) == 1
    repo.newversion()
    a[:16, :16] = _noise(2)  # an edit ...
    repo.commit("edit")
    assert len(_blobs(store)) == 2
    repo.newversion()
    a[:16, :16] = n  # ... and its revert: the payload exists already
    v2 = repo.commit("revert")
    assert len(_blobs(store)) == 2
    assert np.array_equal(repo.version(v2.uuid).array("img")[:16, :16], n)
    assert np.array_equal(repo.version(v0.uuid).array("img")[32:48, 16:32], n)
    # a fresh opener (no flag) follows the store's choice and reads the same
    again = diced.Store(store.location, **getattr(store.location, "options", {}))
    assert again.dedup
    assert np.array_equal(again.open_repo("t").version(v2.uuid).array("img")[:16, :16], n)


def test_rewrite_in_open_version_releases_the_old_payload(store):
    repo = store.create_repo("t")
    a = repo.create_array("img", "uint8", (32, 32), chunks=(16, 16))
    for seed in range(5):  # one chunk rewritten again and again before the commit
        a[:16, :16] = _noise(seed)
    assert len(_blobs(store)) == 5
    assert len(list(store.raw_backend.list_keys("q/"))) == 4
    report = store.gc()
    assert report.blobs == 4
    assert len(_blobs(store)) == 1
    assert np.array_equal(a[:16, :16], _noise(4))
    a[:16, :16] = 0  # back to fill: the value goes, and the payload with the next gc
    assert store.gc().blobs == 1
    assert not _blobs(store) and not list(store.raw_backend.list_keys("r/"))


def test_shared_payload_survives_until_its_last_reference_goes(store):
    repo = store.create_repo("t")
    a = repo.create_array("img", "uint8", (32, 32), chunks=(16, 16))
    kv = repo.create_keyvalue("kv")
    n = _noise(7)
    a[:16, :16] = n
    repo.commit("v0")
    repo.branch("b1")
    a[16:, 16:] = n
    kv["big"] = b"z" * 1000
    repo.commit("b1")
    repo.branch("b2", parent=repo.root.uuid)
    kv["big"] = b"z" * 1000
    a[16:, :16] = n
    repo.commit("b2")
    assert len(_blobs(store)) == 2
    repo.delete_branch("b1")
    store.gc()
    assert len(_blobs(store)) == 2  # both still used by v0 / b2
    assert repo.version(branch="b2").keyvalue("kv")["big"] == b"z" * 1000
    repo.delete_branch("b2")
    store.gc()
    assert len(_blobs(store)) == 1  # the chunk of v0 remains
    assert np.array_equal(repo.version(repo.root.uuid).array("img")[:16, :16], n)


def test_labels_and_merges_read_back(store):
    repo = store.create_repo("t")
    lab = repo.create_labels("seg", (32, 32, 32), chunks=(16, 16, 16))
    vol = np.random.default_rng(3).integers(1, 50, (32, 32, 32), dtype=np.uint64)
    lab[...] = vol
    base = repo.commit("base")
    repo.branch("x")
    lab[:16, :16, :16] = 99
    x = repo.commit("x")
    repo.branch("y", parent=base.uuid)
    lab[:16, :16, :16] = 98
    y = repo.commit("y")
    repo.merge(x.uuid, y.uuid, note="m", strategy=x.uuid)
    got = repo.labels("seg")[...]
    want = vol.copy()
    want[:16, :16, :16] = 99
    assert np.array_equal(got, want)
    assert int(repo.labels("seg").maxlabel()) == 99


def test_dedup_only_for_new_stores(tmp_path):
    s = diced.Store(str(tmp_path / "p.diced"))
    r = s.create_repo("t")
    r.create_array("a", "uint8", (8,))[...] = 1
    s.close()
    with pytest.raises(InvalidArgumentError, match="without deduplication"):
        diced.Store(str(tmp_path / "p.diced"), dedup=True)
    assert not diced.Store(str(tmp_path / "p.diced")).dedup


def test_missing_payload_is_a_clear_error(store):
    repo = store.create_repo("t")
    a = repo.create_array("img", "uint8", (16, 16), chunks=(16, 16))
    a[...] = _noise(5)
    repo.commit("v0")
    store.raw_backend.delete_many(list(_blobs(store)))
    with pytest.raises(CorruptDataError, match="img"):
        repo.array("img")[...]


def test_verify_reads_through_shared_payloads(store):
    repo = store.create_repo("t")
    a = repo.create_array("img", "uint8", (32, 32), chunks=(16, 16))
    a[...] = np.tile(_noise(9), (2, 2))
    lab = repo.create_labels("seg", (16, 16, 16), chunks=(8, 8, 8))
    lab[...] = np.random.default_rng(1).integers(1, 9, (16, 16, 16), dtype=np.uint64)
    repo.commit("v0")
    report = store.verify()
    assert report.problems == [] and report.chunks >= 4



def test_info_counts_shared_payloads_once(store, capsys):
    """``diced info`` on a deduplicating store: the bytes as read (a payload shared by N
    values counts N times) and the bytes stored (once)."""
    from collections import Counter

    from diced.cli import main
    from diced.cli.inspect import _stored

    repo = store.create_repo("t")
    a = repo.create_array("img", "uint8", (64, 64), chunks=(16, 16))
    for i in range(4):
        a[16 * i:16 * i + 16, :16] = _noise(1)  # four values, one payload
    a[:16, 16:32] = _noise(2)
    repo.commit("v")
    values = [k for k in store.raw_backend.list_keys("d/") if k.endswith("d")]
    n, inline, refs = store.backend.value_sizes(values)
    assert n == 5 and inline == 0 and sorted(Counter(refs).values()) == [1, 4]
    sizes = store.backend.payload_bytes(sorted(set(refs)))
    shared = Counter(refs).most_common(1)[0][0]
    other = next(h for h in sizes if h != shared)
    assert _stored(store.backend, repo._doc["instances"]["img"]) == (
        5, 4 * sizes[shared] + sizes[other], sizes[shared] + sizes[other])
    if not isinstance(store.location, str) or "://" in store.location:
        return  # the CLI opens local paths here
    assert main(["info", store.location, "t"]) == 0
    assert "deduplicated" in capsys.readouterr().out
