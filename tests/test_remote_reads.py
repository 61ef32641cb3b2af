"""Reads on object stores: the manifests of every ancestor are listed in one concurrent
round (``Backend.list_prefixes``), with results identical to listing them one by one."""

from __future__ import annotations

import numpy as np
import pytest

import diced
from diced.backends.cache import chunk_cache
from diced.backends.checksum import ChecksummedBackend
from diced.repo import resolve

pytestmark = pytest.mark.all_backends


@pytest.fixture(autouse=True)
def no_chunk_cache():
    c = chunk_cache()
    old = c.max_bytes
    c.resize(0)
    yield
    c.resize(old)


def _chain(store, depth):
    """A chain of ``depth`` locked versions, each rewriting a different part; returns the
    last locked version's uuid and what it shows."""
    repo = store.create_repo("r")
    arr = repo.create_array("img", "uint16", (16, 16, 16), chunks=(8, 8, 8))
    ref = np.zeros((16, 16, 16), np.uint16)
    uuid = None
    for i in range(depth):
        z, y = divmod(i % 4, 2)
        ref[8 * z:8 * z + 8, 8 * y:8 * y + 8, :] = i + 1
        arr[8 * z:8 * z + 8, 8 * y:8 * y + 8, :] = i + 1
        uuid = repo.commit(f"v{i}").uuid
        repo.newversion(f"after v{i}")
    return uuid, ref


def test_list_prefixes_equals_list_prefix(store_location):
    store = diced.Store(store_location, **store_location.options)
    try:
        _chain(store, 3)
        b = store.backend
        prefixes = ["w/", "meta/", "nothing-here/", "w/00000001/", ""]
        assert b.list_prefixes(prefixes) == [b.list_prefix(p) for p in prefixes]
        assert b.list_prefixes([]) == []
    finally:
        store.close()


def test_fresh_store_lists_ancestor_manifests_in_one_round(store_location, monkeypatch):
    store = diced.Store(store_location, **store_location.options)
    try:
        uuid, ref = _chain(store, 5)
    finally:
        store.close()
    calls: list[list[str]] = []
    orig = ChecksummedBackend.list_prefixes

    def spy(self, prefixes):
        if any(p.startswith("w/") for p in prefixes):  # manifests (not repo metadata)
            calls.append(list(prefixes))
        return orig(self, prefixes)

    monkeypatch.setattr(ChecksummedBackend, "list_prefixes", spy)
    fresh = diced.Store(store_location, **store_location.options)
    try:
        arr = fresh.open_repo("r").array("img").at(uuid)
        assert np.array_equal(arr[...], ref)
        assert np.array_equal(arr[3:13, 5:9, 2:15], ref[3:13, 5:9, 2:15])
        if store_location.kind != "lmdb":  # LMDB resolves by ordered scans, no manifests
            assert len(calls) == 1 and len(calls[0]) >= 5
        # the same answer when every manifest is listed again, one by one
        resolve._manifests(fresh.backend).forget(arr._space.inst)
        monkeypatch.setattr(ChecksummedBackend, "list_prefixes",
                            lambda self, ps: [self.list_prefix(p) for p in ps])
        assert np.array_equal(arr[...], ref)
    finally:
        fresh.close()
