"""Native reads of gs:// objects (``backends/_native.py``: JSON-API media downloads on one
aiohttp session) against the GCS emulator and a scripted HTTP server.

* The native path is taken (gcsfs's own reads are made to fail) and returns exactly what
  gcsfs returns: present, missing, empty and large objects, keys that need URL quoting.
* It keeps working in a forked child (a new loop and session there).
* ``DICED_NATIVE_READS=0`` turns it off; settings it cannot honour leave reads to gcsfs.
* Errors: 404 is ``None``; other statuses raise :class:`~diced.errors.BackendError`
  (transient ones after retries); the backend then falls back to gcsfs.
"""

from __future__ import annotations

import os
import pickle

import pytest
from conftest import GcsFsStub, QuietHandler, gcs_reader_of

import diced
from diced.backends import _native
from diced.errors import BackendError

pytest.importorskip("gcsfs", reason="gs:// tests need gcsfs")

#: keys whose object names need quoting in a URL, and plain ones
ODD_KEYS = ["a b/c%d", "x+y=z&w/v", "t~i_l.d-e/~", "hash#tag/semi;colon", "q/'quote'\"",
            "u/%2F/%25", "comma,at@dollar$/paren(s)"]


def _gcs_store(store_location):
    return diced.Store(store_location, create=True, **store_location.options)


def _values():
    big = os.urandom(3 * 1024 * 1024 + 17)
    values = {f"n/k{i:02d}": os.urandom(1000 + 37 * i) for i in range(40)}
    values.update({k: k.encode() * 3 for k in ODD_KEYS})
    values.update({"e/empty": b"", "big/one": big, "nl/ends-cr": b"abc\r", "nl/crlf": b"\r\n"})
    return values


@pytest.mark.backends("gcs")
def test_gcs_native_reads_equal_gcsfs(store_location, monkeypatch):
    store = _gcs_store(store_location)
    try:
        raw = store.raw_backend
        values = _values()
        raw.set_many(values)
        objects = raw._objects
        assert isinstance(objects._native, _native.GCSReader)
        keys = [*values, "n/absent", "absent/a b%c", "n/k0"]  # k0: a prefix of n/k00...

        calls = []
        real = _native.GCSReader._read_all

        async def counting(self, urls, headers):
            calls.append(len(urls))
            return await real(self, urls, headers)

        def no_gcsfs(*args, **kwargs):
            raise AssertionError("gcsfs read an object")

        with monkeypatch.context() as m:
            m.setattr(_native.GCSReader, "_read_all", counting)
            m.setattr(objects.fs, "cat", no_gcsfs)
            native = raw.get_many(keys)
        assert calls == [len(keys)]  # one concurrent batch through the native reader
        assert objects._native is not None  # no failure made it fall back
        assert native == [values.get(k) for k in keys]
        objects._native = None
        # gcsfs's answer (gcsfs reads a name with "#" as "<name>#<generation>": skip those)
        plain = [i for i, k in enumerate(keys) if "#" not in k]
        assert raw.get_many([keys[i] for i in plain]) == [native[i] for i in plain]
    finally:
        store.close()


@pytest.mark.backends("gcs")
def test_gcs_native_reads_serve_a_repo(store_location):
    import numpy as np

    store = _gcs_store(store_location)
    try:
        repo = store.create_repo("r")
        arr = repo.create_array("img", "uint16", (20, 20, 20), chunks=(8, 8, 8))
        ref = np.arange(20 ** 3, dtype=np.uint16).reshape(20, 20, 20)
        arr[...] = ref
        uuid = repo.commit("v").uuid
    finally:
        store.close()
    fresh = diced.Store(store_location, **store_location.options)
    try:
        assert isinstance(fresh.raw_backend._objects._native, _native.GCSReader)
        assert np.array_equal(fresh.open_repo("r").array("img").at(uuid)[...], ref)
        assert fresh.raw_backend._objects._native is not None
    finally:
        fresh.close()


@pytest.mark.backends("gcs")
def test_gcs_native_reads_work_after_fork(store_location):
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    store = _gcs_store(store_location)
    try:
        raw = store.raw_backend
        values = {k: v for k, v in _values().items() if not k.startswith("big/")}
        raw.set_many(values)
        keys = [*values, "n/absent"]
        assert raw.get_many(keys) == [values.get(k) for k in keys]  # the parent's session
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what it read, and whether natively
            try:
                got = raw.get_many(keys)
                out = pickle.dumps((got, raw._objects._native is not None))
            except BaseException as exc:  # noqa: BLE001 - report it to the parent
                out = pickle.dumps(repr(exc))
            with os.fdopen(write_fd, "wb") as f:
                f.write(out)
            os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as f:
            report = pickle.loads(f.read())
        os.waitpid(pid, 0)
        assert not isinstance(report, str), report
        got, native = report
        assert native and got == [values.get(k) for k in keys]
        assert raw.get_many(keys) == got  # the parent still reads
    finally:
        store.close()


@pytest.mark.backends("gcs")
def test_native_reads_off_reads_through_gcsfs(store_location, monkeypatch):
    monkeypatch.setenv("DICED_NATIVE_READS", "0")
    store = _gcs_store(store_location)
    try:
        raw = store.raw_backend
        assert raw._objects._native is None
        raw.set_many({"a b/c%d": b"v", "e": b""})
        assert raw.get_many(["a b/c%d", "e", "nope"]) == [b"v", b"", None]
    finally:
        store.close()


def test_native_reader_only_for_settings_it_honours(monkeypatch):
    import gcsfs

    fs = gcsfs.GCSFileSystem(token="anon", endpoint_url="http://127.0.0.1:9",
                             skip_instance_cache=True)
    reader = _native.native_reader(fs, "bucket/some/root")
    assert isinstance(reader, _native.GCSReader)
    assert reader.url("a b/c%d") == ("http://127.0.0.1:9/download/storage/v1/b/bucket/o/"
                                     "some%2Froot%2Fa%20b%2Fc%25d?alt=media")
    assert _native.native_reader(fs, "bucket").url("k") == \
        "http://127.0.0.1:9/download/storage/v1/b/bucket/o/k?alt=media"
    pays = gcsfs.GCSFileSystem(token="anon", endpoint_url="http://127.0.0.1:9",
                               requester_pays="my project", skip_instance_cache=True)
    assert _native.native_reader(pays, "b").url("k").endswith("?alt=media&userProject=my%20project")
    custom = gcsfs.GCSFileSystem(token="anon", endpoint_url="http://127.0.0.1:9",
                                 session_kwargs={"trust_env": True}, skip_instance_cache=True)
    assert _native.native_reader(custom, "b") is None  # its own session arguments: gcsfs
    monkeypatch.setenv("DICED_NATIVE_READS", "0")
    assert _native.native_reader(fs, "bucket/some/root") is None


# --- a scripted server: statuses, retries, headers ----------------------------------------------


class _Scripted(QuietHandler):
    """Answers GETs from ``server.script`` (path -> list of statuses, the last repeats)."""

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.seen.append((self.path, self.headers.get("Authorization")))
            statuses = srv.script.get(self.path.partition("?")[0], [404])
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        self.send(status, b"value of " + self.path.encode() if status == 200
                  else b'{"error": "no"}')


@pytest.fixture
def scripted(http_server):
    return http_server(_Scripted, script={})


def _reader(server):
    return gcs_reader_of(server, "bkt", "root/")


def test_gcs_reader_statuses_and_retries(scripted, monkeypatch):
    monkeypatch.setattr(_native, "_GCS_ATTEMPTS", 3)
    base = "/download/storage/v1/b/bkt/o/"
    scripted.script = {base + "root%2Fok": [200], base + "root%2Fflaky": [503, 429, 200],
                       base + "root%2Fa%20b": [200]}
    reader = _reader(scripted)
    got = reader.read(["ok", "missing", "flaky", "a b"])
    assert got == [f"value of {base}root%2Fok?alt=media".encode(), None,
                   f"value of {base}root%2Fflaky?alt=media".encode(),
                   f"value of {base}root%2Fa%20b?alt=media".encode()]
    assert {auth for _, auth in scripted.seen} == {"Bearer secret-token"}
    assert sum(p.startswith(base + "root%2Fflaky") for p, _ in scripted.seen) == 3


def test_gcs_reader_errors_are_backend_errors(scripted, monkeypatch):
    monkeypatch.setattr(_native, "_GCS_ATTEMPTS", 2)
    base = "/download/storage/v1/b/bkt/o/"
    scripted.script = {base + "root%2Fdenied": [403], base + "root%2Fdown": [500],
                       base + "root%2Fok": [200]}
    reader = _reader(scripted)
    with pytest.raises(BackendError, match="HTTP 403"):
        reader.read(["ok", "denied"])
    assert sum(p.startswith(base + "root%2Fdenied") for p, _ in scripted.seen) == 1  # no retry
    with pytest.raises(BackendError, match="HTTP 500"):
        reader.read(["down"])
    assert sum(p.startswith(base + "root%2Fdown") for p, _ in scripted.seen) == 2
    port = scripted.server_address[1]
    scripted.shutdown()
    scripted.server_close()
    with pytest.raises(BackendError, match="failed"):
        _native.GCSReader(GcsFsStub(f"http://127.0.0.1:{port}"), "bkt", "", None).read(["x"])


@pytest.mark.backends("gcs")
def test_gcs_native_failure_falls_back_to_gcsfs(store_location, caplog, monkeypatch):
    monkeypatch.setattr(_native, "_GCS_ATTEMPTS", 1)
    store = _gcs_store(store_location)
    try:
        raw = store.raw_backend
        raw.set_many({"k": b"value"})
        objects = raw._objects
        # an endpoint where nothing listens: the native reader fails, gcsfs still reads
        objects._native = _native.GCSReader(GcsFsStub("http://127.0.0.1:9"), "b", "", None)
        import logging

        with caplog.at_level(logging.WARNING):
            assert raw.get("k") == b"value"
        assert objects._native is None and "native object reads" in caplog.text
    finally:
        store.close()


@pytest.mark.backends("gcs")
def test_gcs_listing_costs_one_request_per_prefix(store_location, monkeypatch):
    store = _gcs_store(store_location)
    try:
        raw = store.raw_backend
        raw.set_many({"p/a": b"1", "p/b/c": b"2", "q x/%y": b"3", "pp": b"4"})
        objects = raw._objects
        prefixes = ["p/", "p", "q x/", "nothing/", "no", ""]
        calls = []
        real = objects._list_objects

        async def counting(*args, **kwargs):
            calls.append(kwargs.get("prefix"))
            return await real(*args, **kwargs)

        monkeypatch.setattr(objects, "_list_objects", counting)
        listed = raw.list_prefixes(prefixes)
        assert sorted(calls) == sorted(p for p in prefixes if p)  # empty ones: one request too
        assert listed[:5] == [["p/a", "p/b/c"], ["p/a", "p/b/c", "pp"], ["q x/%y"], [], []]
        assert set(listed[5]) >= {"p/a", "p/b/c", "pp", "q x/%y"}
        monkeypatch.setattr(objects, "_list_objects", None)  # gcsfs's find()
        assert raw.list_prefixes(prefixes) == listed
    finally:
        store.close()
