"""KeyValue: dict semantics, inclusive key ranges, validation, and versioning of keys."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diced.errors import (
    InvalidArgumentError,
    LockedNodeError,
    MergeConflictError,
    NotFoundError,
)


@pytest.fixture
def kv(repo):
    return repo.create_keyvalue("kv")


def _utf8_sorted(keys):
    return sorted(keys, key=lambda k: k.encode())


# -- dict semantics ---------------------------------------------------------------------------


def test_dict_semantics(kv):
    assert len(kv) == 0 and kv.keys() == [] and list(kv) == [] and kv.items() == []
    kv["a"] = b"1"
    kv["b"] = "zwei"  # str values are stored as UTF-8
    kv.update({"c": b"3"}, d=b"4")
    assert kv["a"] == b"1" and kv["b"] == b"zwei"
    assert kv.get("c") == b"3" and kv.get("nope") is None and kv.get("nope", b"d") == b"d"
    assert kv.get_many(["a", "nope", "d"]) == [b"1", None, b"4"]
    assert "a" in kv and "nope" not in kv and 3 not in kv and "" not in kv
    assert len(kv) == 4 and list(kv) == ["a", "b", "c", "d"]
    assert kv.items() == [("a", b"1"), ("b", b"zwei"), ("c", b"3"), ("d", b"4")]
    assert kv.values() == [b"1", b"zwei", b"3", b"4"]
    kv["a"] = b"one"  # overwrite
    assert kv["a"] == b"one"
    del kv["a"]
    assert "a" not in kv
    with pytest.raises(NotFoundError):
        kv["a"]
    with pytest.raises(KeyError):  # NotFoundError is a KeyError, as dict users expect
        del kv["a"]
    kv.delete("b", "never-there")  # absent keys are ignored
    assert kv.keys() == ["c", "d"]
    kv.update({})  # nothing to do
    assert kv.keys() == ["c", "d"]


def test_empty_value_and_binary_values(kv):
    kv["empty"] = b""
    assert kv["empty"] == b"" and "empty" in kv and kv.keys() == ["empty"]
    blob = bytes(range(256)) * 4096  # 1 MiB of every byte value
    kv["blob"] = bytearray(blob)
    kv["view"] = memoryview(blob)[:10]
    assert kv["blob"] == blob and kv["view"] == blob[:10]
    assert dict(kv.items())["empty"] == b""


def test_unicode_keys(kv):
    keys = ["α", "a", "日本語/ファイル.json", "emoji-🐟", "z", "ß", "A", "~", "a b", "é"]
    kv.update({k: k.encode() * 2 for k in keys})
    assert kv.keys() == _utf8_sorted(keys)
    for k in keys:
        assert kv[k] == k.encode() * 2
    assert kv.keys("a", "z") == [k for k in _utf8_sorted(keys) if "a" <= k <= "z"]
    assert kv.keys("α") == [k for k in _utf8_sorted(keys) if k.encode() >= "α".encode()]
    assert kv.keys("α")[:2] == ["α", "日本語/ファイル.json"]


def test_many_keys_in_one_update(kv):
    items = {f"key/{i:05d}": f"value {i}".encode() for i in range(300)}
    kv.update(items)
    assert len(kv) == 300
    assert kv.keys("key/00100", "key/00109") == [f"key/{i:05d}" for i in range(100, 110)]
    assert dict(kv.items()) == items


@pytest.mark.parametrize("key", ["", None, 1, b"bytes", "nul\x00inside", ("a",)])
def test_bad_keys(kv, key):
    with pytest.raises(InvalidArgumentError):
        kv[key] = b"x"
    with pytest.raises(InvalidArgumentError):
        kv.update({key: b"x"})
    with pytest.raises(InvalidArgumentError):
        kv.delete(key)
    if key is not None and key != "":
        with pytest.raises(InvalidArgumentError):
            kv.get(key)
    assert kv.keys() == []


@pytest.mark.parametrize("value", [None, 1, 1.5, ["a"], {"a": 1}, object()])
def test_bad_values(store, kv, value):
    kv["keep"] = b"1"
    before = list(store.backend.list_keys(""))
    with pytest.raises(InvalidArgumentError):
        kv["k"] = value
    with pytest.raises(InvalidArgumentError):  # all or nothing: the good key is not stored
        kv.update({"good": b"1", "k": value})
    assert list(store.backend.list_keys("")) == before
    assert kv.keys() == ["keep"]


# -- ranges -------------------------------------------------------------------------------


def test_ranges_are_inclusive(kv):
    for k in ["a", "b", "ba", "b0", "b\x01", "bb", "c", "ca", "d"]:
        kv[k] = b"."
    assert kv.keys("b", "c") == ["b", "b\x01", "b0", "ba", "bb", "c"]
    # keys that extend the stop key sort after it and are outside the range
    assert kv.keys("a", "b") == ["a", "b"]
    assert kv.keys("ba", "ba") == ["ba"]
    assert kv.keys("b", None) == ["b", "b\x01", "b0", "ba", "bb", "c", "ca", "d"]
    assert kv.keys(None, "b0") == ["a", "b", "b\x01", "b0"]
    assert kv.keys("bz", "c") == ["c"]
    assert kv.keys("c", "b") == []
    assert kv.keys("e", "f") == []
    assert kv.keys("", "a") == ["a"]
    assert kv.items("c", "ca") == [("c", b"."), ("ca", b".")]


_alphabet = st.sampled_from(["a", "b", "ab", "\x01", "0", "/", "é", "ÿ", "日", "🐟", "z"])
_keys = st.lists(_alphabet, min_size=1, max_size=4).map("".join)


@pytest.mark.backends("lmdb", "memory")  # ordered scans and manifests (file:// = memory's path)
@settings(max_examples=35, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_ranges_against_a_dict(repo, data):
    kv = repo.create_keyvalue(f"kv{uuid.uuid4().hex[:12]}")
    model = {}
    for _ in range(data.draw(st.integers(1, 3))):
        batch = data.draw(st.dictionaries(_keys, st.binary(max_size=3), max_size=8))
        kv.update(batch)
        model.update(batch)
        dead = data.draw(st.lists(_keys, max_size=3))
        kv.delete(*dead)
        for k in dead:
            model.pop(k, None)
    assert kv.keys() == _utf8_sorted(model)
    for _ in range(3):
        start = data.draw(st.none() | _keys)
        stop = data.draw(st.none() | _keys)
        want = [k for k in _utf8_sorted(model)
                if (start is None or k.encode() >= start.encode())
                and (stop is None or k.encode() <= stop.encode())]
        assert kv.keys(start, stop) == want
        assert kv.items(start, stop) == [(k, model[k]) for k in want]


# -- versions ------------------------------------------------------------------------------


def test_locked_keyvalue_is_read_only(repo, kv):
    kv["a"] = b"1"
    root = repo.commit("root")
    pinned = repo.version(root.uuid)["kv"]
    for attempt in [lambda: pinned.__setitem__("a", b"2"), lambda: pinned.update(b=b"2"),
                    lambda: pinned.__delitem__("a"), lambda: pinned.delete("a")]:
        with pytest.raises(LockedNodeError):
            attempt()
    assert pinned.items() == [("a", b"1")]


def test_branch_merge_diff_on_keys(repo, kv):
    kv.update({"shared": b"0", "left-edits": b"0", "right-deletes": b"0", "both": b"0"})
    root = repo.commit("root")
    repo.branch("left")
    k = repo.keyvalue("kv")
    k.update({"left-edits": b"L", "left-new": b"L", "both": b"same"})
    left = repo.commit("left")
    repo.branch("right", parent=root.uuid)
    k = repo.keyvalue("kv")
    k.delete("right-deletes")
    k.update({"right-new": b"R", "both": b"same"})
    right = repo.commit("right")
    assert repo.version(root.uuid)["kv"].items() == [
        ("both", b"0"), ("left-edits", b"0"), ("right-deletes", b"0"), ("shared", b"0")]
    d = repo.diff(left.uuid, right.uuid)["kv"]
    assert d.added == ["right-new"] and d.removed == ["left-new", "right-deletes"]
    assert d.changed == ["left-edits"]
    repo.merge(left.uuid, right.uuid)
    merged = repo.keyvalue("kv")
    assert dict(merged.items()) == {"shared": b"0", "left-edits": b"L", "left-new": b"L",
                                    "right-new": b"R", "both": b"same"}
    assert merged.keys("left", "right") == ["left-edits", "left-new"]  # "right-new" > "right"
    assert merged.keys("left-new", "right-new") == ["left-new", "right-new"]
    m = repo.commit("merged")
    # a conflicting pair of edits on the merge's descendants
    repo.branch("x")
    repo.keyvalue("kv")["shared"] = b"x"
    x = repo.commit("x")
    repo.branch("y", parent=m.uuid)
    repo.keyvalue("kv")["shared"] = b"y"
    y = repo.commit("y")
    with pytest.raises(MergeConflictError) as exc:
        repo.merge(x.uuid, y.uuid)
    (c,) = exc.value.conflicts
    assert (c.instance, c.key, c.base) == ("kv", "shared", root.uuid)
    repo.merge(x.uuid, y.uuid, strategy=y.uuid)
    assert repo.keyvalue("kv")["shared"] == b"y"
    assert repo.diff(m.uuid)["kv"].changed == ["shared"]
