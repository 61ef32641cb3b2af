"""``GET .../written-extents`` (diced extension): the box of the chunks stored at a version,
where the page and its Neuroglancer link open; and the truthful ``Base.Checksum``."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import diced
from diced.server import extents


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    extents.clear_cache()
    # the embedded LMDB store (ordered keys: the listing can stop early)
    store = diced.Store(str(tmp_path_factory.mktemp("extents") / "s.diced"))
    repo = store.create_repo("r")
    big = repo.create_array("big", dtype="uint8", shape=(20000, 30000, 40000))  # sparse
    big[1000:1100, 2000:2010, 3000:3300] = 9
    repo.create_array("empty", dtype="uint8", shape=(100, 100, 100))
    seg = repo.create_labels("seg", shape=(64, 64, 64), origin=(128, 256, 512))
    seg[8:20, 8:20, 8:20] = 5
    repo.create_keyvalue("kv")["a"] = b"1"
    first = repo.commit("first")
    repo.newversion()
    big[5000, 6000, 7000] = 1  # grows the written box at the open version only
    with store.serve(port=0) as handle, httpx.Client(base_url=handle.url, timeout=30) as c:
        yield {"c": c, "first": first.uuid, "head": repo.head.uuid, "repo": repo}


def get(site, uuid, name):
    return site["c"].get(f"/api/node/{uuid}/{name}/written-extents")


def test_written_box_of_a_sparse_array(site):
    r = get(site, site["first"], "big")
    assert r.status_code == 200
    w = r.json()
    # chunk-aligned (64³ chunks) in x, y, z order, MaxPoint inclusive
    assert w["MinPoint"] == [2944, 1984, 960] and w["MaxPoint"] == [3327, 2047, 1151]
    assert w["Complete"] is True and w["Chunks"] == 6 * 1 * 3
    assert w["Declared"] == {"MinPoint": [0, 0, 0], "MaxPoint": [39999, 29999, 19999]}
    # the data is inside the box
    assert all(lo <= p <= hi for lo, p, hi in zip(w["MinPoint"], (3150, 2005, 1050), w["MaxPoint"]))


def test_each_version_has_its_own_box(site):
    w = get(site, site["head"], "big").json()
    assert w["MinPoint"] == [2944, 1984, 960] and w["MaxPoint"] == [7039, 6015, 5055]
    assert w["Chunks"] == 19


def test_labels_box_is_clipped_to_the_array(site):
    w = get(site, site["first"], "seg").json()
    assert w["MinPoint"] == [512, 256, 128] and w["MaxPoint"] == [512 + 63, 256 + 63, 128 + 63]
    assert w["Chunks"] == 1


def test_nothing_written(site):
    w = get(site, site["first"], "empty").json()
    assert w["MinPoint"] is None and w["MaxPoint"] is None and w["Chunks"] == 0
    assert w["Complete"] is True


def test_not_for_keyvalue_or_unknown(site):
    assert get(site, site["first"], "kv").status_code in (400, 404)
    assert get(site, site["first"], "nosuch").status_code == 404


def test_locked_versions_are_cached_open_ones_are_not(site, monkeypatch):
    extents.clear_cache()
    calls = []
    real = extents._compute
    monkeypatch.setattr(extents, "_compute", lambda arr, n: calls.append(1) or real(arr, n))
    a = get(site, site["first"], "big").json()
    b = get(site, site["first"], "big").json()
    assert a == b and len(calls) == 1
    get(site, site["head"], "big")
    get(site, site["head"], "big")
    assert len(calls) == 3


def test_too_many_chunks_answers_the_declared_extent(site, monkeypatch):
    """The listing stops early: the chunks are never all listed."""
    extents.clear_cache()
    monkeypatch.setattr(extents, "MAX_CHUNKS", 5)
    monkeypatch.setattr(diced.VersionedArray, "stored_chunks",
                        lambda self: pytest.fail("listed every chunk"))
    w = get(site, site["first"], "big").json()
    assert w["Complete"] is False and w["Chunks"] == 6  # counting stopped at MAX_CHUNKS + 1
    assert w["MinPoint"] == [0, 0, 0] and w["MaxPoint"] == [39999, 29999, 19999]
    extents.clear_cache()


def test_checksum_is_reported(site):
    for name in ("big", "seg", "kv"):
        base = site["c"].get(f"/api/node/{site['first']}/{name}/info").json()["Base"]
        assert base["Checksum"] == "CRC32C checksum"


def test_too_many_chunks_without_ordered_keys(monkeypatch):
    """Backends without ordered keys list the version's manifests, then apply the bound."""
    extents.clear_cache()
    store = diced.Store("memory://server-extents-unordered")
    repo = store.create_repo("r")
    arr = repo.create_array("a", dtype="uint8", shape=(256, 256, 256))
    arr[:] = 1
    monkeypatch.setattr(extents, "MAX_CHUNKS", 5)
    w = extents.written_extents(arr, repo_root=repo.uuid, instance_id=1,
                                version_uuid=repo.head.uuid, locked=False)
    assert w["Complete"] is False and w["Chunks"] == 64 and w["MaxPoint"] == [255, 255, 255]
    monkeypatch.setattr(extents, "MAX_CHUNKS", 64)
    w = extents.written_extents(arr, repo_root=repo.uuid, instance_id=1,
                                version_uuid=repo.head.uuid, locked=False)
    assert w["Complete"] is True and w["MinPoint"] == [0, 0, 0]
    store.close()


def test_a_tag_made_again_has_the_extents_of_its_new_version():
    """The locked-version cache of the extents is keyed by version id: a deleted tag made
    again on another version (same UUID, its name) answers for that version."""
    extents.clear_cache()
    store = diced.Store("memory://server-extents-tag")
    repo = store.create_repo("r")
    arr = repo.create_array("a", dtype="uint8", shape=(128, 128, 128))
    arr[:64, :64, :64] = 1
    a = repo.commit("a")
    repo.newversion("b")
    arr[64:, 64:, 64:] = 2
    b = repo.commit("b")

    def ext(tag):
        node = repo.version(tag)
        return extents.written_extents(node.array("a"), repo_root=repo.uuid, instance_id=1,
                                       version_uuid=node.uuid, version_id=node.id,
                                       locked=True)

    repo.tag("t1", parent=a.uuid)
    assert ext("t1")["MaxPoint"] == [63, 63, 63]
    repo.delete_version("t1")
    repo.tag("t1", parent=b.uuid)
    assert ext("t1")["MaxPoint"] == [127, 127, 127]
    store.close()
