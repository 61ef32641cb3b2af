"""Storage backends: the conformance suite on every backend, plus per-backend specifics."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import pytest

from diced.backends import Backend, Capabilities, open_backend
from diced.backends._fsspec import FsspecBackend
from diced.backends._lmdb import LMDBBackend
from diced.errors import BackendError, BackendUnavailableError, InvalidArgumentError
from diced.testing.backend_conformance import (
    PROCESS_TIMEOUT,
    BackendConformance,
    _wait_and_read_worker,
)

if TYPE_CHECKING:
    from conftest import StoreLocation

LOCAL_KINDS = ("lmdb", "memory", "file")

# --- the conformance suite on all five kinds ---------------------------------------------


class TestConformance(BackendConformance):
    """Every test of the suite, once per backend kind (``backend`` comes from conftest)."""

    @pytest.fixture
    def reopen_backend(self, backend_location: StoreLocation
                       ) -> Iterator[Callable[[], Backend]]:
        opened: list[Backend] = []

        def reopen() -> Backend:
            opened.append(backend_location.open())
            return opened[-1]

        yield reopen
        for b in opened:
            b.close()

    @pytest.fixture
    def backend_process_location(self, backend_location: StoreLocation
                                 ) -> tuple[str, dict[str, Any]] | None:
        if backend_location.kind in ("lmdb", "file"):
            # the workers skip fsync: these tests are about atomicity, not durability
            return backend_location.url, {**backend_location.options, "durable": False}
        if backend_location.kind in ("gcs", "s3"):  # the emulators listen on 127.0.0.1
            return backend_location.url, dict(backend_location.options)
        return None

    @pytest.fixture
    def many_keys_count(self, backend_location: StoreLocation) -> int:
        # the emulators take 5-20 ms a request
        return 10_000 if backend_location.kind in LOCAL_KINDS else 100

    @pytest.fixture
    def model_examples(self, backend_location: StoreLocation) -> int:
        return 25 if backend_location.kind in LOCAL_KINDS else 5


EXPECTED_CAPABILITIES = {
    "lmdb": Capabilities(ordered_scan=True, compare_and_set=True, atomic_update=True),
    "memory": Capabilities(compare_and_set=True, atomic_update=True),
    "file": Capabilities(compare_and_set=True, process_locks=True),
    "gcs": Capabilities(compare_and_set=True),  # conditional requests (ifGenerationMatch)
    "s3": Capabilities(compare_and_set=True),  # If-None-Match / If-Match
}


def test_capabilities(backend_location: StoreLocation, backend: Backend) -> None:
    assert backend.capabilities == EXPECTED_CAPABILITIES[backend_location.kind]


def test_bare_url_reaches_the_store(backend_location: StoreLocation) -> None:
    """Without explicit options (emulator settings are fsspec defaults in the test session)."""
    with backend_location.open() as first:
        first.set("k/1", b"v")
    with open_backend(str(backend_location)) as second:
        assert second.get("k/1") == b"v"


# --- open_backend ---------------------------------------------------------------------------


def test_plain_path_is_lmdb(tmp_path: Path) -> None:
    for location in (str(tmp_path / "a"), tmp_path / "b"):
        backend = open_backend(location)
        try:
            assert isinstance(backend, LMDBBackend)
            assert backend.path == Path(location)
        finally:
            backend.close()


def test_lmdb_url(tmp_path: Path) -> None:
    backend = open_backend(f"lmdb://{tmp_path / 'c'}")
    try:
        assert isinstance(backend, LMDBBackend)
        assert backend.path == tmp_path / "c"
        assert (tmp_path / "c" / "data.mdb").exists()
    finally:
        backend.close()


def test_fsspec_urls(tmp_path: Path) -> None:
    with open_backend(f"memory://diced-open-{os.getpid()}-{id(tmp_path)}") as mem:
        assert isinstance(mem, FsspecBackend)
    with open_backend((tmp_path / "f").as_uri(), durable=False) as local:
        assert isinstance(local, FsspecBackend)


def test_backend_passes_through(tmp_path: Path) -> None:
    backend = open_backend(tmp_path / "s")
    try:
        assert open_backend(backend) is backend
    finally:
        backend.close()


def test_unknown_protocol() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown storage protocol"):
        open_backend("nosuchproto://bucket/x")


def test_missing_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(protocol: str) -> Any:
        raise ImportError(f"Install gcsfs to access {protocol}")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    with pytest.raises(BackendUnavailableError, match="pip install gcsfs") as info:
        open_backend("gs://bucket/store")
    assert isinstance(info.value, BackendError)
    assert isinstance(info.value.__cause__, ImportError)
    with pytest.raises(BackendUnavailableError, match="pip install s3fs"):
        open_backend("s3://bucket/store")


@pytest.mark.parametrize("location", ["", None, 3, b"/tmp/x", ["a"]])
def test_bad_locations(location: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        open_backend(location)


# --- fsspec specifics -----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", "a/./b", "a/../b", "..", "a*",
                                 "a?b", "a[0]", "a\\b", "a\nb", "caf\u00e9",
                                 "x/.~diced-lock"])
def test_fsspec_refuses_keys_that_are_not_paths(key: str) -> None:
    with open_backend(f"memory://diced-keys-{os.getpid()}") as backend:
        with pytest.raises(InvalidArgumentError):
            backend.set(key, b"v")
        with pytest.raises(InvalidArgumentError):
            backend.get(key)


@pytest.mark.parametrize(("url", "first", "second"), [
    ("file", "a/b", "a/b/c"), ("file", "a/b/c", "a/b"), ("memory", "a/b", "a/b/c")])
def test_key_below_a_key_is_an_error(tmp_path: Path, url: str, first: str,
                                     second: str) -> None:
    url = (tmp_path / "s").as_uri() if url == "file" else f"memory://diced-{tmp_path.name}"
    with open_backend(url) as backend:
        backend.set(first, b"1")
        with pytest.raises(BackendError):
            backend.set(second, b"2")
        assert backend.get(first) == b"1"
        assert list(backend.list_keys()) == [first]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("durable", [True, False])
def test_file_writes_replace_whole_values(tmp_path: Path, durable: bool) -> None:
    root = tmp_path / "store"
    with open_backend(root.as_uri(), durable=durable) as backend:
        backend.set_many({f"k/{i}": b"old" for i in range(8)})
        backend.set_many({f"k/{i}": b"new" * 100 for i in range(8)})
        assert backend.get_many([f"k/{i}" for i in range(8)]) == [b"new" * 100] * 8
        # only the values and the writers' lock file are left behind
        assert _files(root) == sorted([".~diced-lock"] + [f"k/{i}" for i in range(8)])


def test_file_crash_before_rename_keeps_old_value(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    with open_backend(root.as_uri()) as backend:
        backend.set("k/a", b"old")

        def crash(src: str, dst: str) -> None:
            raise OSError("disk vanished")

        monkeypatch.setattr(os, "replace", crash)
        with pytest.raises(BackendError, match="disk vanished"):
            backend.set("k/a", b"new" * 1000)
        monkeypatch.undo()
        assert backend.get("k/a") == b"old"
        assert _files(root) == [".~diced-lock", "k/a"]


def test_file_listing_skips_stray_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with open_backend(root.as_uri()) as backend:
        backend.set("k/a", b"1")
        (root / "k" / "a.~diced-tmp-0123456789abcdef").write_bytes(b"half")
        assert list(backend.list_keys()) == ["k/a"]
        assert backend.find_last_many([("k/", "k/z")], lambda k: True) == [("k/a", b"1")]


def test_fsspec_read_errors_are_not_missing_keys(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with open_backend(root.as_uri()) as backend:
        backend.set("k/a", b"1")
        os.chmod(root / "k" / "a", 0)
        try:
            if os.access(root / "k" / "a", os.R_OK):
                pytest.skip("running as a user that ignores permissions")
            with pytest.raises(BackendError):
                backend.get("k/a")
        finally:
            os.chmod(root / "k" / "a", 0o644)


def test_fsspec_closed_backend_refuses_calls() -> None:
    backend = open_backend(f"memory://diced-closed-{os.getpid()}")
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.get("k")


@pytest.mark.backends("gcs", "s3")
def test_emulator_serves_fsspec(store_location: StoreLocation) -> None:
    """The raw filesystem calls the backend relies on work against the emulator."""
    fs, root = fsspec.core.url_to_fs(store_location.url, **store_location.options)
    fs.pipe({f"{root}/a/1": b"1", f"{root}/a/2": b"", f"{root}/b": b"b"})
    assert fs.cat([f"{root}/a/1", f"{root}/a/2"]) == {f"{root}/a/1": b"1", f"{root}/a/2": b""}
    assert sorted(fs.find(root)) == [f"{root}/a/1", f"{root}/a/2", f"{root}/b"]
    assert sorted(p.rstrip("/") for p in fs.ls(root, detail=False)) == [f"{root}/a",
                                                                        f"{root}/b"]
    fs.rm([f"{root}/a/1", f"{root}/b"])
    assert fs.find(root) == [f"{root}/a/2"]


# --- LMDB specifics -------------------------------------------------------------------------

SMALL_MAP = 256 << 10


def _fill(backend: Backend, n: int = 48, size: int = 64 << 10) -> dict[str, bytes]:
    items = {f"g/{i:08x}": bytes([i % 251]) * size for i in range(n)}
    for key, value in items.items():  # one transaction each, so the map grows step by step
        backend.set(key, value)
    return items


def test_lmdb_map_grows(tmp_path: Path) -> None:
    backend = LMDBBackend(tmp_path / "s", map_size=SMALL_MAP, durable=False)
    try:
        assert backend.env.info()["map_size"] == SMALL_MAP
        items = _fill(backend)
        assert backend.env.info()["map_size"] > sum(map(len, items.values()))
        backend.set_many({f"h/{i}": b"x" * (1 << 20) for i in range(4)})  # one big txn
        assert backend.get_many(list(items)) == list(items.values())
    finally:
        backend.close()
    again = LMDBBackend(tmp_path / "s", map_size=SMALL_MAP)
    try:
        assert again.env.info()["map_size"] >= (tmp_path / "s" / "data.mdb").stat().st_size
        assert again.get("h/3") == b"x" * (1 << 20)
    finally:
        again.close()


def test_lmdb_other_process_follows_map_growth(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    backend = LMDBBackend(path, map_size=SMALL_MAP)
    try:
        backend.set("g/first", b"1")
        ctx = multiprocessing.get_context("spawn")
        ready, go, results = ctx.Event(), ctx.Event(), ctx.Queue()
        child = ctx.Process(target=_wait_and_read_worker,
                            args=(path, {"map_size": SMALL_MAP}, "g/", ready, go, results))
        child.start()
        try:
            assert ready.wait(PROCESS_TIMEOUT)
            items = _fill(backend)  # grows the map while the child has it open
            assert backend.env.info()["map_size"] > SMALL_MAP
            go.set()
            seen = results.get(timeout=PROCESS_TIMEOUT)
        finally:
            child.join(PROCESS_TIMEOUT)
            if child.is_alive():
                child.kill()
        assert child.exitcode == 0
        assert seen == {"g/first": 1, **{k: len(v) for k, v in items.items()}}
    finally:
        backend.close()


def test_lmdb_handles_share_one_environment(tmp_path: Path) -> None:
    first = LMDBBackend(tmp_path / "s")
    second = open_backend(str(tmp_path / "s" / ".." / "s"))
    try:
        assert isinstance(second, LMDBBackend)
        assert second.env is first.env
        first.set("k", b"v")
        first.close()
        assert second.get("k") == b"v"
    finally:
        second.close()
    third = LMDBBackend(tmp_path / "s")
    try:
        assert third.get("k") == b"v"
    finally:
        third.close()


def test_lmdb_readonly(tmp_path: Path) -> None:
    with pytest.raises(BackendError):
        LMDBBackend(tmp_path / "missing", readonly=True)
    with LMDBBackend(tmp_path / "s") as writer:
        writer.set("k", b"v")
    reader = LMDBBackend(tmp_path / "s", readonly=True)
    try:
        assert reader.get("k") == b"v"
        with pytest.raises(BackendError):
            reader.set("k", b"w")
    finally:
        reader.close()


def test_forget_memory_drops_one_store_and_only_it() -> None:
    import diced
    from diced.testing.memory import forget_memory

    for name in ("forget-me", "forget-me-not"):
        s = diced.Store(f"memory://{name}")
        s.create_repo("r").create_array("a", "uint8", (4, 4))[...] = 1
        s.close()
    memory = fsspec.filesystem("memory")
    assert memory.find("/forget-me") and memory.find("/forget-me-not")
    forget_memory("memory://forget-me")
    assert not memory.exists("/forget-me") and not memory.find("/forget-me")
    kept = memory.find("/forget-me-not")
    assert kept
    forget_memory("/forget-me-not/")
    assert not memory.find("/forget-me-not") and not memory.exists("/forget-me-not")
