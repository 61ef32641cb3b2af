"""Bad input gets a clear diced error and changes nothing (issue 7, items 12 and 13)."""

from __future__ import annotations

import numpy as np
import pytest

from diced.datatypes.keyvalue import KEY_MAX_BYTES
from diced.errors import (
    DtypeError,
    DuplicateNameError,
    InvalidArgumentError,
    NotFoundError,
)
from diced.repo import keys as K
from diced.repo.repo import NAME_MAX


@pytest.fixture
def repo(store):
    return store.create_repo("fly")


def _state(store):
    """Everything stored, to show a refused call changed nothing."""
    keys = list(store.raw_backend.list_keys())
    return dict(zip(keys, store.raw_backend.get_many(keys), strict=True))


# --- item 12 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "...", "a" * 20_000, "a" * (NAME_MAX + 1),
                                  "a/b", "", "log"])
def test_bad_names_are_refused(store, repo, name):
    before = _state(store)
    for make in (lambda n: repo.create_array(n, "uint8", (4,)), repo.create_keyvalue,
                 store.create_repo):
        with pytest.raises(InvalidArgumentError):
            make(name)
    repo.commit("c")
    for make in (repo.branch, repo.tag):
        with pytest.raises(InvalidArgumentError):
            make(name)
    after = _state(store)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    # the commit: the version's record and lock key, the repo's journal, the remembered head
    # (and on object stores the state snapshot)
    assert changed <= {K.node_key(repo.uuid, 1), K.lock_key(repo.uuid, 1),
                       K.gen_key(repo.uuid), K.head_key(repo.uuid), K.snapshot_key(repo.uuid)}


def test_longest_name_and_hidden_names_are_fine(repo):
    repo.create_keyvalue("n" * NAME_MAX)
    repo.create_keyvalue(".files")
    repo.create_keyvalue("a.b-c_d")
    assert set(repo.instances()) == {"n" * NAME_MAX, ".files", "a.b-c_d"}


@pytest.mark.parametrize("kw", [{"shape": (1.5, 2)}, {"shape": (2.0, 2)}, {"shape": ("3", 2)},
                                {"shape": (True, 2)}, {"shape": (4, 4), "chunks": (1.5, 2)},
                                {"shape": (4, 4), "origin": (0.5, 0)}])
def test_non_integer_shapes_are_refused(repo, kw):
    with pytest.raises(InvalidArgumentError):
        repo.create_array("a", "uint8", **kw)
    assert repo.instances() == {}


def test_numpy_integers_are_integers(repo):
    a = repo.create_array("a", "uint8", (np.int64(4), np.uint32(6)), chunks=(np.int32(2), 3),
                          origin=(np.int16(-1), 0))
    assert a.shape == (4, 6) and a.chunks == (2, 3) and a.origin == (-1, 0)


@pytest.mark.parametrize("dtype", ["float32", "uint8", "int64", "uint32"])
def test_labelblock_codec_needs_uint64(repo, dtype):
    with pytest.raises(DtypeError, match="uint64"):
        repo.create_array("seg", dtype, (64, 64, 64), codec="labelblock")
    assert repo.instances() == {}
    arr = repo.create_array("seg", "uint64", (64, 64, 64), codec="labelblock")
    arr[0:8, 0:8, 0:8] = 3
    assert arr[0, 0, 0] == 3


def test_empty_uuid_is_refused(store, repo):
    with pytest.raises(InvalidArgumentError):
        store.open_repo(uuid="")
    with pytest.raises(NotFoundError):
        store.open_repo("")


def test_failed_duplicate_create_consumes_no_instance_id(store, repo):
    first = repo.create_keyvalue("kv")
    counter = store.backend.get(K.counter_key("instance"))
    for make in (repo.create_keyvalue, lambda n: repo.create_array(n, "uint8", (4,)),
                 lambda n: repo.create_labels(n, (64, 64, 64))):
        with pytest.raises(DuplicateNameError):
            make("kv")
    assert store.backend.get(K.counter_key("instance")) == counter
    second = repo.create_keyvalue("kv2")
    assert second._rec["id"] == first._rec["id"] + 1


@pytest.mark.parametrize("strategy", ["bogus", 7, -1, 1.5, None, ""])
def test_unknown_merge_strategy_is_refused_without_conflicts(repo, strategy):
    kv = repo.create_keyvalue("kv")
    root = repo.commit("root")
    a = repo.branch("a")
    kv["x"] = b"1"
    repo.commit("a")
    repo.checkout(root.uuid)
    repo.branch("b")
    kv["y"] = b"2"
    b = repo.commit("b")
    n = len(repo.versions())
    with pytest.raises(InvalidArgumentError):
        repo.merge(a.uuid, b.uuid, strategy=strategy)
    assert len(repo.versions()) == n
    merged = repo.merge(a.uuid, b.uuid, strategy=0)  # a valid one still merges
    assert sorted(repo.version(merged.uuid).keyvalue("kv").keys()) == ["x", "y"]


# --- item 13 ---------------------------------------------------------------------------------


def test_keyvalue_key_limit_is_the_same_on_every_backend(repo):
    kv = repo.create_keyvalue("kv")
    longest = "k" * KEY_MAX_BYTES
    wide = "é" * (KEY_MAX_BYTES // 2)  # 2 UTF-8 bytes each
    path = ("dir/" * 60)[:KEY_MAX_BYTES - 5] + ".json"
    kv.update({longest: b"1", wide: b"2", path: b"3"})
    assert kv[longest] == b"1" and kv[wide] == b"2" and kv[path] == b"3"
    assert longest in kv and sorted(kv.keys()) == sorted([longest, wide, path])
    assert kv.keys(longest, longest) == [longest]
    repo.commit("c")
    repo.branch("b")
    del kv[wide]
    assert kv.keys() == sorted([longest, path], key=str.encode)
    for too_long in ("k" * (KEY_MAX_BYTES + 1), "é" * (KEY_MAX_BYTES // 2 + 1), "x" * 5000):
        for call in (kv.__setitem__, kv.get, kv.__contains__, kv.delete):
            with pytest.raises(InvalidArgumentError, match=str(KEY_MAX_BYTES)):
                call(too_long, b"v") if call == kv.__setitem__ else call(too_long)


@pytest.mark.parametrize("key", ["\ud800", "a\udfffb", "a\x00b"])
def test_keys_writes_refuse_are_refused_everywhere(repo, key):
    kv = repo.create_keyvalue("kv")
    kv["fine"] = b"1"
    calls = [lambda k: kv.__setitem__(k, b"v"), kv.get, kv.__contains__, kv.delete,
             kv.__getitem__, lambda k: kv.update({k: b"v"}), lambda k: kv.keys(k, "z")]
    for call in calls:
        with pytest.raises(InvalidArgumentError):
            call(key)
    assert kv.keys() == ["fine"]


def test_file_listing_stays_inside_the_store(tmp_path):
    from diced.backends import open_backend

    (tmp_path / "secret.txt").write_text("outside")
    backend = open_backend((tmp_path / "store").as_uri())
    backend.set("a/b", b"1")
    for prefix in ("../", "..", "a/../", "../secret", "/", "./a/"):
        assert [k for k in backend.list_keys(prefix) if "secret" in k or ".." in k] == [], \
            prefix
    assert list(backend.list_keys("../")) == []
    assert list(backend.list_keys("..")) == []
    backend.close()
