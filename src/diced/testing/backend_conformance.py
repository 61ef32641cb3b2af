"""A conformance suite every storage backend must pass (like ``zarr.testing.store``).

Subclass :class:`BackendConformance` in a test module and provide its fixtures::

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend(self, tmp_path):
            b = MyBackend(tmp_path / "store")
            yield b
            b.close()

        @pytest.fixture
        def reopen_backend(self, tmp_path):
            return lambda: MyBackend(tmp_path / "store")

Fixtures the suite uses:

``backend``
    An open, empty backend; the fixture closes it afterwards (``close`` must tolerate a
    second call, since some tests close it themselves).
``reopen_backend``
    A callable returning a *new* backend object on the same location (each call a new
    one; the fixture closes them). Default: tests that need it are skipped.
``backend_process_location``
    ``(url, options)`` that a spawned process can pass to
    :func:`diced.backends.open_backend` to reach the same store, or ``None`` (default) when
    the store is private to this process; enables the multi-process tests.
``many_keys_count``
    How many keys the bulk test writes in one ``set_many`` (default 10 000; lower it for
    slow remote emulators).
``model_examples``
    How many hypothesis examples the dict-model test runs (default 25).

Concurrency tests run only for backends whose :class:`~diced.backends.Capabilities`
declare ``atomic_update`` or ``compare_and_set``: a backend that claims them must really
have them.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from diced.backends import Backend, Capabilities, open_backend
from diced.errors import DicedError, InvalidArgumentError

__all__ = ["BackendConformance"]

COUNTER = "meta/counter"
#: how many increments each thread or process makes in the concurrency tests
INCREMENTS = 200
LARGE_VALUE_SIZE = (8 << 20) + 3
PROCESS_TIMEOUT = 120.0

#: keys like diced's chunk keys, chosen so that str order differs from a directory walk
#: ('-' < '.' < '/' < '0') and that prefixes cut through directory names
LAYOUT_KEYS = [
    "d/0000000a/7fffffff.80000000.80000000/00000001",
    "d/0000000a/80000000.80000001.80000000/00000003",
    "d/0000000a/80000000.80000001.80000000/00000004",
    "d/0000000a/80000001.80000000.80000000/00000001",
    "d/0000000a-/80000000.80000000.80000000/00000001",
    "d/0000000a.b/80000000.80000000.80000000/00000001",
    "d/0000000a0/80000000.80000000.80000000/00000001",
    "d/0000000b/80000000.80000000.80000000/00000001",
    "meta/repos/6b1d5c1e-8c3a-4a8e-9a59-1f0c2b7d9e41",
]
LIST_PREFIXES = [
    "d/0000000a/",                                      # a directory
    "d/0000000a",                                       # inside a directory name
    "d/0000000a/8000",                                  # inside a subdirectory name
    "d/0000000a/80000000.80000001.80000000/",
    "d/0000000a/80000000.80000001.80000000/0000000",
    "d/0000000a/80000000.80000001.80000000/00000003",   # a whole key
    "d/0000000a/80000000.80000001.80000000/000000031",  # longer than any key
    "d/",
    "meta/",
    "m",
    "x",
]
#: (prefix, start, stop) for list_keys
LIST_BOUNDS: list[tuple[str, str | None, str | None]] = [
    ("", "d/0000000a/8", "d/0000000b"),
    ("d/", "d/0000000a/80000000.80000001.80000000/00000004", None),
    ("d/", None, "d/0000000a/80000000.80000001.80000000/00000004"),
    ("d/0000000a", "d/0000000a-", "d/0000000a/"),
    ("d/0000000b", "a", "z"),                           # bounds around the prefix
    ("d/", "d/0000000a0", "d/0000000a0"),               # empty range
    ("d/", "d/0000000b", "d/0000000a"),                 # stop before start
    ("meta/", "d/", "e/"),                              # range outside the prefix
    ("", LAYOUT_KEYS[1], LAYOUT_KEYS[2]),               # start is inclusive
]


def _number(value: bytes | None) -> int:
    return int(value) if value else 0


def _increment_by_update(backend: Backend, key: str) -> None:
    backend.update([key], lambda cur: {key: b"%d" % (_number(cur[key]) + 1)})


def _increment_by_cas(backend: Backend, key: str) -> None:
    while True:
        current = backend.get(key)
        if backend.compare_and_set(key, current, b"%d" % (_number(current) + 1)):
            return


_INCREMENTERS: dict[str, Callable[[Backend, str], None]] = {
    "update": _increment_by_update, "cas": _increment_by_cas,
}


def _counter_worker(url: str, options: Mapping[str, Any], mode: str, n: int,
                    barrier: Any) -> None:
    """Process target: open the store, wait for the others, increment ``n`` times."""
    backend = open_backend(url, **options)
    try:
        barrier.wait()
        for _ in range(n):
            _INCREMENTERS[mode](backend, COUNTER)
    finally:
        backend.close()


def _wait_and_read_worker(url: str, options: Mapping[str, Any], prefix: str, ready: Any,
                          go: Any, results: Any) -> None:
    """Process target: open the store, say so, wait, then report ``{key: len(value)}``."""
    backend = open_backend(url, **options)
    try:
        ready.set()
        go.wait(PROCESS_TIMEOUT)
        keys = list(backend.list_keys(prefix))
        values = backend.get_many(keys)
        results.put({k: -1 if v is None else len(v) for k, v in zip(keys, values, strict=True)})
    finally:
        backend.close()


def run_counter_processes(location: tuple[str, Mapping[str, Any]], mode: str,
                          processes: int = 2, n: int = INCREMENTS) -> None:
    """Start ``processes`` spawned workers incrementing ``COUNTER`` ``n`` times each."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes, timeout=PROCESS_TIMEOUT)
    url, options = location
    procs = [ctx.Process(target=_counter_worker, args=(url, dict(options), mode, n, barrier))
             for _ in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(PROCESS_TIMEOUT)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * processes


def run_counter_threads(backend: Backend, mode: str, threads: int = 2,
                        n: int = INCREMENTS) -> None:
    """Run ``threads`` threads incrementing ``COUNTER`` ``n`` times each through ``backend``."""
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(n):
                _INCREMENTERS[mode](backend, COUNTER)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors


def _model_list(model: Mapping[str, bytes], prefix: str, start: str | None,
                stop: str | None) -> list[str]:
    return sorted(k for k in model if k.startswith(prefix) and (start is None or k >= start)
                  and (stop is None or k < stop))


class BackendConformance:
    """Tests every :class:`~diced.backends.Backend` must pass; see the module docstring."""

    # --- fixtures a subclass may override ------------------------------------------------

    @pytest.fixture
    def reopen_backend(self) -> Callable[[], Backend]:
        pytest.skip("this suite was given no `reopen_backend` fixture")

    @pytest.fixture
    def backend_process_location(self) -> tuple[str, dict[str, Any]] | None:
        return None

    @pytest.fixture
    def many_keys_count(self) -> int:
        return 10_000

    @pytest.fixture
    def model_examples(self) -> int:
        return 25

    # --- single keys ---------------------------------------------------------------------

    def test_capabilities_and_url(self, backend: Backend) -> None:
        assert isinstance(backend.capabilities, Capabilities)
        assert isinstance(backend.url, str) and backend.url
        assert backend.url in repr(backend)

    def test_missing_key(self, backend: Backend) -> None:
        assert backend.get("no/such/key") is None
        assert not backend.exists("no/such/key")
        assert backend.get_many([]) == []

    def test_set_get_overwrite(self, backend: Backend) -> None:
        backend.set("a/b", b"one")
        assert backend.get("a/b") == b"one"
        assert backend.exists("a/b")
        backend.set("a/b", b"two")
        assert backend.get("a/b") == b"two"
        assert type(backend.get("a/b")) is bytes

    def test_bytes_like_values(self, backend: Backend) -> None:
        backend.set_many({"x/ba": bytearray(b"ba"), "x/mv": memoryview(b"mv")})
        assert backend.get_many(["x/ba", "x/mv"]) == [b"ba", b"mv"]

    def test_empty_value(self, backend: Backend) -> None:
        backend.set("e/empty", b"")
        assert backend.get("e/empty") == b""
        assert backend.exists("e/empty")
        assert list(backend.list_keys("e/")) == ["e/empty"]
        assert backend.find_last_many([("e/", "e/z")], lambda k: True) == [("e/empty", b"")]

    def test_binary_values(self, backend: Backend) -> None:
        value = bytes(range(256)) * 3 + b"\x00\r\n\x00"
        backend.set("bin/all", value)
        assert backend.get("bin/all") == value

    def test_delete(self, backend: Backend) -> None:
        backend.set("k/1", b"v")
        backend.delete("k/1")
        assert backend.get("k/1") is None
        backend.delete("k/1")  # absent: ignored
        backend.delete_many(["never/was", "k/1"])
        assert list(backend.list_keys()) == []

    def test_bad_key_is_refused(self, backend: Backend) -> None:
        with pytest.raises(DicedError):
            backend.set("", b"v")

    # --- batches -------------------------------------------------------------------------

    def test_values_ending_in_line_breaks(self, backend: Backend) -> None:
        # multipart uploads must not take a value's last bytes for the boundary's line break
        tails = [b"\r", b"\n", b"\r\n", b"\n\n", b" ", b"\t", b"--", b"\r\n--x--\r\n"]
        items = {f"t/{i}": b"abc" + t for i, t in enumerate(tails)}
        items["t/only"] = b"\r"
        backend.set_many(items)
        assert backend.get_many(list(items)) == list(items.values())
        for key, value in items.items():
            backend.set(key, value)
            assert backend.get(key) == value, key

    def test_long_keys(self, backend: Backend) -> None:
        # 490 characters with a 300-character segment: within LMDB's 511-byte keys, past
        # the 255-byte file names of local filesystems
        seg = "ab" * 150
        keys = [f"lk/{seg}/{i:08x}d" for i in range(3)] + [f"lk/{seg}{'c' * 160}/x"]
        backend.set_many({k: k.encode() for k in keys})
        assert backend.get_many(keys) == [k.encode() for k in keys]
        assert list(backend.list_keys("lk/")) == sorted(keys)
        assert list(backend.list_keys(f"lk/{seg}/")) == sorted(keys[:3])
        assert list(backend.list_keys(f"lk/{seg}c")) == [keys[3]]
        assert list(backend.list_keys("lk/", keys[1], keys[2])) == [keys[1]]
        assert backend.find_last_many([(f"lk/{seg}/", f"lk/{seg}/00000002")],
                                      lambda k: True) == [(keys[1], keys[1].encode())]
        backend.delete_many(keys)
        assert list(backend.list_keys()) == []

    def test_listing_never_leaves_the_store(self, backend: Backend) -> None:
        backend.set_many({"a/b": b"1", "c": b"2"})
        for prefix in ("../", "..", "a/../", "a/../c", "./", "/", "//", "a//", "a/./"):
            assert [k for k in backend.list_keys(prefix) if not k.startswith(("a/b", "c"))
                    ] == [], prefix
        assert list(backend.list_keys("../")) == []
        assert list(backend.list_keys("a/../")) == []
        assert list(backend.list_keys("", "../", "../z")) == []

    def test_is_empty(self, backend: Backend) -> None:
        assert backend.is_empty()
        backend.set("x/y", b"")
        assert not backend.is_empty()
        backend.delete("x/y")
        assert backend.is_empty()

    def test_get_many_order_and_missing(self, backend: Backend) -> None:
        backend.set_many({"m/1": b"1", "m/3": b"3", "m/2": b""})
        keys = ["m/3", "m/0", "m/1", "m/2", "m/3", "m/9"]
        assert backend.get_many(keys) == [b"3", None, b"1", b"", b"3", None]

    def test_get_ranges(self, backend: Backend) -> None:
        value = bytes(range(256)) * 40
        backend.set_many({"r/a": value, "r/b": b"xyz"})
        reqs = [("r/a", 0, 10), ("r/b", 1, 3), ("r/a", 9000, 10240), ("r/missing", 0, 1),
                ("r/b", 0, 4), ("r/a", 5, 6), ("r/b", 5, 9)]
        assert backend.get_ranges(reqs) == [value[:10], b"yz", value[9000:], None, None,
                                            value[5:6], None]
        assert backend.get_ranges([]) == []
        for bad in (("r/a", 5, 5), ("r/a", -1, 3), ("r/a", 4, 2)):
            with pytest.raises(InvalidArgumentError):
                backend.get_ranges([bad])

    def test_stream_ranges(self, backend: Backend) -> None:
        value = bytes(range(256)) * 40
        big = bytes(range(251)) * 12000  # ~3 MB: streamed in many pieces where it streams
        backend.set_many({"r/a": value, "r/b": b"xyz", "r/big": big})
        reqs = [("r/a", 0, 10), ("r/b", 1, 3), ("r/a", 9000, 10240), ("r/missing", 0, 1),
                ("r/b", 0, 4), ("r/big", 7, len(big) - 5), ("r/b", 5, 9)]
        want = [value[:10], b"yz", value[9000:], None, None, big[7:-5], None]
        arriving = backend.stream_ranges(reqs)
        assert len(arriving) == len(reqs)
        # each mark of on_filled is reported once, in order, with the bytes in
        seen: list[int] = []
        marks = list(range(0, len(big) - 12, 100_000))[1:] + [len(big) - 12]
        arriving[5].on_filled(marks, seen.append)
        for a, (_, start, end), w in zip(arriving, reqs, want, strict=True):
            assert a.size == end - start
            got = a.wait(a.size)
            assert (None if got is None else bytes(got)) == w
            if w is not None:  # a prefix is there too, and the same bytes
                assert bytes(a.wait(1)[:1]) == w[:1]
        deadline = time.monotonic() + 10  # the producer reports marks after it lets readers go
        while len(seen) < len(marks) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert seen == list(range(len(marks)))
        assert backend.stream_ranges([]) == []
        for bad in (("r/a", 5, 5), ("r/a", -1, 3), ("r/a", 4, 2)):
            with pytest.raises(InvalidArgumentError):
                backend.stream_ranges([bad])

    def test_set_many_delete_many(self, backend: Backend) -> None:
        backend.set_many({})
        backend.delete_many([])
        items = {f"s/{i:08x}": b"%d" % i for i in range(30)}
        backend.set_many(items)
        assert backend.get_many(list(items)) == list(items.values())
        backend.delete_many([k for i, k in enumerate(items) if i % 2])
        assert list(backend.list_keys("s/")) == [k for i, k in enumerate(items) if not i % 2]

    def test_apply_mixed(self, backend: Backend) -> None:
        backend.set_many({"a/1": b"1", "a/2": b"2", "a/3": b"3"})
        backend.apply({"a/1": None, "a/2": b"two", "a/4": b"4", "a/5": None})
        assert backend.get_many(["a/1", "a/2", "a/3", "a/4", "a/5"]) == [
            None, b"two", b"3", b"4", None]
        backend.apply({})

    # --- listing -------------------------------------------------------------------------

    def test_list_keys_sorted(self, backend: Backend) -> None:
        keys = list(LAYOUT_KEYS)
        random.Random(7).shuffle(keys)
        backend.set_many({k: k.encode() for k in keys})
        assert list(backend.list_keys()) == sorted(LAYOUT_KEYS)
        assert backend.list_prefix("") == sorted(LAYOUT_KEYS)
        assert list(backend.list_keys("nothing/")) == []
        assert list(backend.list_keys("e")) == []

    def test_list_keys_on_empty_store(self, backend: Backend) -> None:
        assert list(backend.list_keys()) == []
        assert list(backend.list_keys("d/0000000a/8000", "d/0", "d/1")) == []

    def test_list_keys_prefix(self, backend: Backend) -> None:
        backend.set_many({k: b"" for k in LAYOUT_KEYS})
        for prefix in LIST_PREFIXES:
            expected = sorted(k for k in LAYOUT_KEYS if k.startswith(prefix))
            assert list(backend.list_keys(prefix)) == expected, prefix
            assert backend.list_prefix(prefix) == expected, prefix

    def test_list_keys_bounds(self, backend: Backend) -> None:
        backend.set_many({k: b"" for k in LAYOUT_KEYS})
        model = dict.fromkeys(LAYOUT_KEYS, b"")
        for prefix, start, stop in LIST_BOUNDS:
            assert list(backend.list_keys(prefix, start, stop)) == _model_list(
                model, prefix, start, stop), (prefix, start, stop)

    # --- find_last_many ------------------------------------------------------------------

    def test_find_last_many(self, backend: Backend) -> None:
        backend.set_many({"p/x/00000001": b"1", "p/x/00000005": b"5", "p/x/00000009": b"9",
                          "p/x0/00000001": b"other", "p/w/00000007": b"w",
                          "p/xy/00000003": b"xy"})
        everything: Callable[[str], bool] = lambda key: True
        requests = [
            ("p/x/", "p/x/00000006"),
            ("p/x/", "p/x/00000001"),   # stop is exclusive
            ("p/x/", "p/x/00000002"),
            ("p/x/", "p/x/ffffffff"),
            ("p/x/", "p/y"),            # stop beyond the prefix's keys, other keys between
            ("p/x/", "p/a"),            # stop before the prefix's keys
            ("p/q/", "p/q/00000005"),   # no such prefix
            ("p/x/", "p/x/00000006"),   # duplicate request
        ]
        assert backend.find_last_many(requests, everything) == [
            ("p/x/00000005", b"5"), None, ("p/x/00000001", b"1"), ("p/x/00000009", b"9"),
            ("p/x/00000009", b"9"), None, None, ("p/x/00000005", b"5"),
        ]
        seen: list[str] = []

        def odd_versions(key: str) -> bool:
            seen.append(key)
            return key.endswith(("1", "9"))

        assert backend.find_last_many([("p/x/", "p/x/00000006")], odd_versions) == [
            ("p/x/00000001", b"1")]
        assert all(k.startswith("p/x/") for k in seen)
        assert backend.find_last_many([("p/x/", "p/x/ffffffff")], lambda k: False) == [None]
        assert backend.find_last_many([], everything) == []

    # --- read-modify-write ---------------------------------------------------------------

    def test_update(self, backend: Backend) -> None:
        backend.set_many({"u/a": b"1", "u/b": b"2"})
        seen: list[dict[str, bytes | None]] = []

        def fn(current: dict[str, bytes | None]) -> dict[str, bytes | None]:
            seen.append(dict(current))
            return {"u/a": current["u/a"] + b"!", "u/b": None, "u/new": b"n"}

        changes = backend.update(["u/a", "u/b", "u/c"], fn)
        assert seen == [{"u/a": b"1", "u/b": b"2", "u/c": None}]
        assert changes == {"u/a": b"1!", "u/b": None, "u/new": b"n"}
        assert backend.get_many(["u/a", "u/b", "u/c", "u/new"]) == [b"1!", None, None, b"n"]
        assert backend.update(["u/a"], lambda current: {}) == {}
        assert backend.get("u/a") == b"1!"

    def test_update_error_writes_nothing(self, backend: Backend) -> None:
        backend.set("u/a", b"1")

        class Boom(Exception):
            pass

        def fn(current: dict[str, bytes | None]) -> dict[str, bytes | None]:
            raise Boom

        with pytest.raises(Boom):
            backend.update(["u/a"], fn)
        assert backend.get("u/a") == b"1"

    def test_compare_and_set(self, backend: Backend) -> None:
        assert backend.compare_and_set("ref", None, b"a")           # absent -> created
        assert backend.get("ref") == b"a"
        assert not backend.compare_and_set("ref", None, b"b")       # present: not absent
        assert not backend.compare_and_set("ref", b"x", b"b")       # mismatch
        assert backend.get("ref") == b"a"
        assert backend.compare_and_set("ref", b"a", b"")            # match
        assert backend.get("ref") == b""
        assert not backend.compare_and_set("ref", None, b"c")       # b"" is not absent
        assert backend.compare_and_set("ref", b"", None)            # None deletes
        assert backend.get("ref") is None
        assert not backend.compare_and_set("ref", b"", b"d")        # absent is not b""
        assert backend.get("ref") is None

    # --- persistence ---------------------------------------------------------------------

    def test_second_handle_sees_writes(self, backend: Backend,
                                       reopen_backend: Callable[[], Backend]) -> None:
        backend.set_many({"r/1": b"1", "r/2": b""})
        other = reopen_backend()
        assert other.get_many(["r/1", "r/2"]) == [b"1", b""]
        other.set("r/3", b"3")
        other.delete("r/1")
        assert list(backend.list_keys("r/")) == ["r/2", "r/3"]
        assert backend.get_many(["r/1", "r/3"]) == [None, b"3"]
        other.close()  # closing one handle leaves the other working
        backend.set("r/4", b"4")
        assert backend.get("r/4") == b"4"

    def test_reopen_after_close(self, backend: Backend,
                                reopen_backend: Callable[[], Backend]) -> None:
        backend.set_many({"c/1": b"1", "c/2": b"2"})
        backend.close()
        backend.close()  # twice is harmless
        again = reopen_backend()
        assert again.get_many(["c/1", "c/2"]) == [b"1", b"2"]
        assert list(again.list_keys("c/")) == ["c/1", "c/2"]

    # --- size ----------------------------------------------------------------------------

    def test_large_value(self, backend: Backend) -> None:
        value = random.Random(3).randbytes(LARGE_VALUE_SIZE)
        backend.set("big/one", value)
        assert backend.get("big/one") == value
        backend.set("big/one", b"small")
        assert backend.get("big/one") == b"small"

    def test_many_keys(self, backend: Backend, many_keys_count: int) -> None:
        n = many_keys_count
        items = {f"n/{i % 37:08x}/{i:08x}": i.to_bytes(4, "little") for i in range(n)}
        backend.set_many(items)
        keys = sorted(items)
        assert list(backend.list_keys("n/")) == keys
        assert backend.get_many(keys) == [items[k] for k in keys]
        lo, hi = keys[n // 3], keys[2 * n // 3]
        assert list(backend.list_keys("n/", lo, hi)) == keys[n // 3: 2 * n // 3]
        backend.delete_many(keys)
        assert list(backend.list_keys("n/")) == []

    # --- a model ---------------------------------------------------------------------------

    def test_matches_dict_model(self, backend: Backend, model_examples: int) -> None:
        """Random writes, deletes, listings and seeks agree with a dict (hypothesis)."""
        from hypothesis import given, settings
        from hypothesis import strategies as st

        # keys of exactly three segments: no key is a directory of another
        segments = st.sampled_from(["a", "a-", "a.b", "a0", "b", "00000001", "00000002",
                                    "8000.1"])
        keys = st.builds(lambda a, b, c: f"{a}/{b}/{c}", segments, segments, segments)
        cuts = st.tuples(keys, st.integers(0, 30)).map(lambda t: t[0][: t[1]])
        bounds = st.none() | cuts

        def accept(key: str) -> bool:
            return not key.endswith("2")

        @settings(max_examples=model_examples, deadline=None, database=None)
        @given(writes=st.dictionaries(keys, st.binary(max_size=3), max_size=12),
               deletes=st.lists(keys, max_size=4),
               queries=st.lists(st.tuples(cuts, bounds, bounds), min_size=1, max_size=4),
               finds=st.lists(st.tuples(cuts, cuts), max_size=4))
        def check(writes: dict[str, bytes], deletes: list[str],
                  queries: list[tuple[str, str | None, str | None]],
                  finds: list[tuple[str, str]]) -> None:
            backend.delete_many(list(backend.list_keys()))
            backend.set_many(writes)
            backend.delete_many(deletes)
            model = {k: v for k, v in writes.items() if k not in deletes}
            assert list(backend.list_keys()) == sorted(model)
            for prefix, start, stop in queries:
                assert list(backend.list_keys(prefix, start, stop)) == _model_list(
                    model, prefix, start, stop)
            expected: list[tuple[str, bytes] | None] = []
            for prefix, stop in finds:
                below = [k for k in _model_list(model, prefix, None, stop) if accept(k)]
                expected.append((below[-1], model[below[-1]]) if below else None)
            assert backend.find_last_many(finds, accept) == expected
            # the backend's fast path equals the base class's derived default
            assert Backend.find_last_many(backend, finds, accept) == expected

        check()

    # --- concurrency (only for what a backend claims) ------------------------------------

    def test_update_is_atomic_across_threads(self, backend: Backend) -> None:
        if not backend.capabilities.atomic_update:
            pytest.skip("backend does not claim atomic_update")
        run_counter_threads(backend, "update")
        assert backend.get(COUNTER) == b"%d" % (2 * INCREMENTS)

    def test_update_is_atomic_across_processes(
            self, backend: Backend,
            backend_process_location: tuple[str, dict[str, Any]] | None) -> None:
        if not backend.capabilities.atomic_update:
            pytest.skip("backend does not claim atomic_update")
        if backend_process_location is None:
            pytest.skip("the store is private to this process")
        run_counter_processes(backend_process_location, "update")
        assert backend.get(COUNTER) == b"%d" % (2 * INCREMENTS)

    def test_compare_and_set_is_atomic_across_threads(self, backend: Backend) -> None:
        if not backend.capabilities.compare_and_set:
            pytest.skip("backend does not claim compare_and_set")
        run_counter_threads(backend, "cas", n=INCREMENTS // 2)
        assert backend.get(COUNTER) == b"%d" % INCREMENTS

    def test_compare_and_set_is_atomic_across_processes(
            self, backend: Backend,
            backend_process_location: tuple[str, dict[str, Any]] | None) -> None:
        if not backend.capabilities.compare_and_set:
            pytest.skip("backend does not claim compare_and_set")
        if backend_process_location is None:
            pytest.skip("the store is private to this process")
        run_counter_processes(backend_process_location, "cas", n=INCREMENTS // 2)
        assert backend.get(COUNTER) == b"%d" % INCREMENTS
