"""ChainedBackend and ReadOnlyBackend: the backend conformance suite, and fall-through,
whiteouts and ordered resolution over a non-empty read-only base."""

from __future__ import annotations

import pytest

from diced.backends import open_backend
from diced.backends.chain import ChainedBackend, ReadOnlyBackend
from diced.errors import InvalidArgumentError, ReadOnlyStoreError
from diced.testing.backend_conformance import BackendConformance


class TestChainConformance(BackendConformance):
    """A chain behaves as one backend (over an empty base: the suite expects an empty store)."""

    @pytest.fixture
    def backend(self, tmp_path):
        base = open_backend(str(tmp_path / "base"))
        b = ChainedBackend(open_backend(str(tmp_path / "local")), base)
        yield b
        b.close()

    @pytest.fixture
    def reopen_backend(self, tmp_path):
        made = []

        def reopen():
            b = ChainedBackend(open_backend(str(tmp_path / "local")),
                               open_backend(str(tmp_path / "base")))
            made.append(b)
            return b

        yield reopen
        for b in made:
            b.close()


# --- a non-empty base: fall-through, whiteouts, ordered resolution ----------------------------

BASE_ITEMS = {
    "meta/x": b"base-x",
    "meta/y": b"base-y",
    "d/0000000a/c1/00000001d": b"v1",
    "d/0000000a/c1/00000003d": b"v3",
    "d/0000000a/c2/00000002d": b"w2",
    "w/0000000a/00000001/c1/d": b"",
    "w/0000000a/00000002/c2/d": b"",
    "w/0000000a/00000003/c1/d": b"",
    "lk/" + "ab" * 253: b"long",
}


def _snapshot(backend):
    keys = list(backend.list_keys())
    return dict(zip(keys, backend.get_many(keys), strict=True))


@pytest.fixture(params=["lmdb", "file"])
def layered(request, tmp_path):
    """``(chain, base snapshot, base opener)`` over a base holding BASE_ITEMS."""
    if request.param == "lmdb":
        loc = str(tmp_path / "base")
        kwargs = {"readonly": True}
    else:
        loc = (tmp_path / "base").as_uri()
        kwargs = {}
    b = open_backend(loc)
    b.set_many(BASE_ITEMS)
    b.close()

    def base_now():
        with open_backend(loc, **kwargs) as bb:
            return _snapshot(bb)

    before = base_now()
    chain = ChainedBackend(open_backend(str(tmp_path / "local")), open_backend(loc, **kwargs))
    yield chain, before, base_now
    chain.close()
    assert base_now() == before  # the base is never written


def test_reads_fall_through_and_local_overrides(layered):
    chain, _, _ = layered
    assert chain.get("meta/x") == b"base-x"
    chain.set("meta/x", b"local-x")
    assert chain.get_many(["meta/x", "meta/y", "nope"]) == [b"local-x", b"base-y", None]
    assert list(chain.list_keys("meta/")) == ["meta/x", "meta/y"]
    got = {}
    chain.visit_many(["meta/y", "meta/x", "nope"], lambda i, v: got.__setitem__(i, bytes(v)))
    assert got == {0: b"base-y", 1: b"local-x"}


def test_deleting_base_keys_leaves_whiteouts(layered):
    chain, before, base_now = layered
    chain.delete_many(["meta/x", "d/0000000a/c1/00000003d", "lk/" + "ab" * 253])
    assert chain.get_many(["meta/x", "d/0000000a/c1/00000003d", "lk/" + "ab" * 253]) == \
        [None, None, None]
    model = {k: v for k, v in BASE_ITEMS.items()
             if k not in ("meta/x", "d/0000000a/c1/00000003d", "lk/" + "ab" * 253)}
    assert list(chain.list_keys()) == sorted(model)
    assert chain.list_prefixes(["d/", "meta/"]) == [
        sorted(k for k in model if k.startswith("d/")), ["meta/y"]]
    # the whiteouts are local bookkeeping, not keys of the chained view
    assert not any(k.startswith("~") for k in chain.list_keys())
    chain.set("meta/x", b"again")
    assert chain.get("meta/x") == b"again"
    chain.delete("meta/x")
    assert chain.get("meta/x") is None
    assert base_now() == before


def test_find_last_many_merges_layers(layered):
    chain, _, _ = layered
    reqs = [("d/0000000a/c1/", "d/0000000a/c1/00000004"), ("d/0000000a/c2/", "d/0000000a/c2/~")]
    everything = lambda k: True
    assert chain.find_last_many(reqs, everything) == [
        ("d/0000000a/c1/00000003d", b"v3"), ("d/0000000a/c2/00000002d", b"w2")]
    chain.set("d/0000000a/c1/00000002d", b"L2")  # below the base's 3: the base still wins
    chain.set("d/0000000a/c2/00000005d", b"L5")  # above the base's 2: local wins
    assert chain.find_last_many(reqs, everything) == [
        ("d/0000000a/c1/00000003d", b"v3"), ("d/0000000a/c2/00000005d", b"L5")]
    chain.delete("d/0000000a/c1/00000003d")  # whited out: the next one down is local 2
    hits = []
    chain.visit_last_many(reqs, everything, lambda i, k, v: hits.append((i, k, bytes(v))))
    assert sorted(hits) == [(0, "d/0000000a/c1/00000002d", b"L2"),
                            (1, "d/0000000a/c2/00000005d", b"L5")]
    chain.delete("d/0000000a/c1/00000002d")
    assert chain.find_last_many(reqs[:1], everything) == [("d/0000000a/c1/00000001d", b"v1")]
    odd = lambda k: int(k[-9:-1], 16) % 2 == 1
    assert chain.find_last_many(reqs[1:], odd) == [("d/0000000a/c2/00000005d", b"L5")]


def test_update_and_cas_see_the_base(layered):
    chain, _, _ = layered
    assert chain.compare_and_set("meta/y", b"base-y", b"mine")
    assert not chain.compare_and_set("meta/y", b"base-y", b"again")
    assert chain.get("meta/y") == b"mine"
    assert chain.compare_and_set("meta/x", b"base-x", None)  # delete through CAS: whiteout
    assert chain.get("meta/x") is None and "meta/x" not in list(chain.list_keys("meta/"))
    assert chain.compare_and_set("meta/x", None, b"new")
    made = chain.update(["meta/x", "meta/new"], lambda cur: {
        "meta/x": cur["meta/x"] + b"!", "meta/new": b"n"})
    assert made == {"meta/x": b"new!", "meta/new": b"n"}
    assert chain.get_many(["meta/x", "meta/new"]) == [b"new!", b"n"]


def test_reserved_keys_are_refused(layered):
    chain, _, _ = layered
    with pytest.raises(InvalidArgumentError, match="reserved"):
        chain.set("~x/meta/x", b"")


def test_random_operations_match_a_dict(layered):
    import random

    chain, _, _ = layered
    model = dict(BASE_ITEMS)
    rng = random.Random(7)
    pool = [*BASE_ITEMS, "meta/z", "d/0000000a/c1/00000005d", "d/0000000a/c3/00000001d",
            "w/0000000a/00000005/c1/d", "lk/" + "ab" * 253 + "z"]
    for step in range(300):
        k = rng.choice(pool)
        op = rng.random()
        if op < 0.4:
            v = b"%d" % step
            chain.set(k, v)
            model[k] = v
        elif op < 0.7:
            chain.delete(k)
            model.pop(k, None)
        else:
            exp = model.get(k) if rng.random() < 0.7 else b"wrong"
            new = None if rng.random() < 0.3 else b"c%d" % step
            assert chain.compare_and_set(k, exp, new) == (exp == model.get(k))
            if exp == model.get(k):
                if new is None:
                    model.pop(k, None)
                else:
                    model[k] = new
        if step % 25 == 0:
            assert list(chain.list_keys()) == sorted(model)
            assert list(chain.list_keys("d/", "d/0000000a/c1/00000002", "d/0000000a/c3")) == \
                sorted(x for x in model if "d/0000000a/c1/00000002" <= x < "d/0000000a/c3")
    assert chain.get_many(pool) == [model.get(k) for k in pool]


def test_read_only_backend_refuses_every_write(tmp_path):
    inner = open_backend((tmp_path / "ro").as_uri())
    inner.set("a", b"1")
    ro = ReadOnlyBackend(inner)
    for call in (lambda: ro.set("a", b"2"), lambda: ro.delete("a"),
                 lambda: ro.apply({"a": None}), lambda: ro.compare_and_set("a", b"1", b"2"),
                 lambda: ro.update(["a"], lambda cur: {"a": b"3"})):
        with pytest.raises(ReadOnlyStoreError, match="read-only"):
            call()
    assert ro.update(["a"], lambda cur: {}) == {}
    assert ro.get("a") == b"1" and isinstance(ReadOnlyStoreError("x"), PermissionError)
    ro.close()


def test_wrappers_delegate_every_backend_method():
    """A method added to Backend must be delegated by the layer wrappers too (else its
    default, possibly non-atomic derivation would bypass the layers' rules)."""
    from diced.backends.base import Backend
    from diced.backends.routed import RoutedBackend

    derived = {"get", "set", "delete", "exists", "list_prefix"}  # one-key forms of *_many
    public = {n for n, v in vars(Backend).items() if callable(v) and not n.startswith("_")}
    for cls in (ChainedBackend, ReadOnlyBackend, RoutedBackend):
        missing = sorted(n for n in public - derived if n not in vars(cls))
        assert missing == [], (cls.__name__, missing)


class _Counting(ReadOnlyBackend):
    def __init__(self, inner):
        super().__init__(inner)
        self.calls = 0

    def get_many(self, keys):
        self.calls += 1
        return super().get_many(keys)

    def list_prefixes(self, prefixes):
        self.calls += 1
        return super().list_prefixes(prefixes)


def test_writes_at_local_versions_ask_the_base_once(tmp_path):
    """The base is immutable: what it lacks (keys of versions it never had, lock marks of
    local versions) is learnt once, so repeated writes cost no base request."""
    loc = (tmp_path / "base").as_uri()
    with open_backend(loc) as b:
        b.set_many(BASE_ITEMS)
    base = _Counting(open_backend(loc))
    chain = ChainedBackend(open_backend(str(tmp_path / "local")), base)
    keys = ["lock/r/00000009", "d/0000000a/c1/00000009d", "d/0000000a/c1/00000009t",
            "w/0000000a/00000009/c1/d"]

    def write(cur):
        assert cur["lock/r/00000009"] is None
        return {"d/0000000a/c1/00000009d": b"x", "d/0000000a/c1/00000009t": None,
                "w/0000000a/00000009/c1/d": b""}

    chain.update(keys, write)
    first = base.calls
    assert first > 0
    for _ in range(3):
        chain.update(keys, write)
        chain.delete_many(["d/0000000a/c1/00000009t"])
    assert base.calls == first
    assert not list(chain.local.list_keys("~x/"))  # nothing to hide: no whiteouts written
    chain.close()
