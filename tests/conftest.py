"""Shared fixtures: one store location per backend, and the emulators behind gs:// and s3://.

How test modules use them
-------------------------
``store_location``
    A fresh, empty store location for one test: a :class:`StoreLocation`, which *is* the
    URL string (so ``diced.Store(store_location)`` or ``open_backend(store_location)`` just
    work) and also carries ``.kind``, ``.url``, ``.options`` (explicit storage options) and
    ``.open(**extra)`` (open the backend). By default a test runs on the local backends
    ``lmdb``, ``memory`` and ``file``; widen or pick with markers::

        def test_roundtrip(store_location):                  # lmdb, memory, file
            store = diced.Store(store_location)
            ...

        @pytest.mark.all_backends                             # + gcs, s3 (emulators)
        def test_roundtrip_everywhere(store_location):
            ...

        @pytest.mark.backends("lmdb", "s3")                   # exactly these
        def test_some(store_location):
            ...

    Markers work on functions, classes and modules (``pytestmark = pytest.mark.all_backends``);
    do not ``parametrize`` ``store_kind`` yourself. gs:// and s3:// URLs also work without
    ``.options``: the emulator fixtures install them as fsspec's per-protocol defaults.
``backend_location`` / ``backend``
    Always all five kinds: a :class:`StoreLocation`, and the backend opened on it (closed
    after the test). Used by the backend conformance suite.
``storage_options_for``
    A function ``url -> dict`` giving the storage options for a URL (emulator options for
    gs:// and s3://, ``{}`` otherwise).
``no_chunk_cache``
    The locked-chunk cache off for one test (``pytestmark =
    pytest.mark.usefixtures("no_chunk_cache")`` for a module).
``gcs_emulator`` / ``s3_emulator``
    Session-wide emulators (:class:`Emulator`: ``.endpoint``, ``.bucket``, ``.options``),
    started on first use on a free port of 127.0.0.1. They skip the requesting test when
    their packages are missing.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self

import pytest

# gcsfs reads this when imported; left on, it spends a minute probing for gRPC.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
# the shared suites' asserts explain their failures like test modules' asserts do
pytest.register_assert_rewrite("diced.testing")

from diced.backends import Backend, open_backend
from diced.testing.memory import forget_memory

LOCAL_KINDS = ("lmdb", "memory", "file")
REMOTE_KINDS = ("gcs", "s3")
ALL_KINDS = LOCAL_KINDS + REMOTE_KINDS
BUCKET = "diced-test"


class StoreLocation(str):
    """A store URL (this string itself) with the options and kind it was made for."""

    kind: str
    options: dict[str, Any]

    def __new__(cls, url: str, kind: str, options: dict[str, Any] | None = None
                ) -> Self:
        self = super().__new__(cls, url)
        self.kind = kind
        self.options = dict(options or {})
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (StoreLocation, (str(self), self.kind, self.options))

    @property
    def url(self) -> str:
        return str(self)

    def open(self, **extra: Any) -> Backend:
        """Open the backend at this location (``extra`` adds or overrides options)."""
        return open_backend(str(self), **{**self.options, **extra})


@dataclass
class Emulator:
    """A running storage emulator: where it listens, its bucket, fsspec options for it."""

    endpoint: str
    bucket: str
    options: dict[str, Any] = field(default_factory=dict)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "all_backends: run store_location tests on gcs and s3 emulators too")
    config.addinivalue_line(
        "markers", "backends(*kinds): run store_location tests on exactly these kinds")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" not in metafunc.fixturenames:
        return
    if any("store_kind" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize")):
        return
    pick = metafunc.definition.get_closest_marker("backends")
    if pick is not None:
        kinds = tuple(pick.args)
        unknown = set(kinds) - set(ALL_KINDS)
        if unknown:
            raise pytest.UsageError(f"unknown backend kinds {sorted(unknown)} in "
                                    f"{metafunc.definition.nodeid}; known: {ALL_KINDS}")
    elif metafunc.definition.get_closest_marker("all_backends") is not None:
        kinds = ALL_KINDS
    else:
        kinds = LOCAL_KINDS
    metafunc.parametrize("store_kind", kinds, indirect=True)


# --- emulators ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def _fsspec_defaults(protocol: str, options: dict[str, Any]) -> Iterator[None]:
    """Make ``options`` fsspec's defaults for ``protocol`` (so bare URLs reach the emulator)."""
    import fsspec.config

    saved = fsspec.config.conf.get(protocol)
    fsspec.config.conf[protocol] = copy.deepcopy(options)
    try:
        yield
    finally:
        if saved is None:
            fsspec.config.conf.pop(protocol, None)
        else:
            fsspec.config.conf[protocol] = saved


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _s3_atomic_conditions() -> None:
    """Make moto's conditional PUT/DELETE atomic: it checks ``If-Match`` /
    ``If-None-Match`` and then writes, unlocked, on a threaded server. S3 itself decides
    them atomically; a lock around object writes does the same here."""
    from moto.s3.responses import S3Response

    if getattr(S3Response, "_diced_atomic", False):
        return
    lock = threading.Lock()

    def locked(method: Callable[..., Any]) -> Callable[..., Any]:
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(self, *args, **kwargs)

        return run

    S3Response.put_object = locked(S3Response.put_object)
    S3Response.delete_object = locked(S3Response.delete_object)
    S3Response._diced_atomic = True


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Emulator]:
    """gcp-storage-emulator in this process (in-memory), with bucket ``diced-test``."""
    pytest.importorskip("gcsfs", reason="gs:// tests need gcsfs")
    emulator_server = pytest.importorskip(
        "gcp_storage_emulator.server", reason="gs:// tests need gcp-storage-emulator")
    from diced.testing.gcs_emulator import BacklogHTTPServer, memory_storage, patch

    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    patch(emulator_server)
    port = _free_port()
    httpd = BacklogHTTPServer(("127.0.0.1", port), partial(
        emulator_server.RequestHandler, memory_storage()))
    thread = threading.Thread(target=httpd.serve_forever, name="gcs-emulator", daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{endpoint}/storage/v1/b")
        # no soft delete: deleted objects would be kept (and copied) for 7 days
        bucket = {"name": BUCKET, "softDeletePolicy": {"retentionDurationSeconds": "0"}}
        urllib.request.urlopen(urllib.request.Request(
            f"{endpoint}/storage/v1/b?project=diced-test", data=json.dumps(bucket).encode(),
            headers={"Content-Type": "application/json"}, method="POST"), timeout=10).close()
        options = {"token": "anon", "endpoint_url": endpoint}
        with _environ(STORAGE_EMULATOR_HOST=endpoint), _fsspec_defaults("gs", options):
            yield Emulator(endpoint, BUCKET, options)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture(scope="session")
def s3_emulator() -> Iterator[Emulator]:
    """moto's S3 server in a thread of this process, with bucket ``diced-test``."""
    pytest.importorskip("s3fs", reason="s3:// tests need s3fs")
    moto_server = pytest.importorskip("moto.server", reason="s3:// tests need moto[server]")
    boto3 = pytest.importorskip("boto3", reason="s3:// tests need boto3 (moto[server])")

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    _s3_atomic_conditions()
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
        options = {"key": "testing", "secret": "testing", "anon": False,
                   "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
        with _fsspec_defaults("s3", options):
            yield Emulator(endpoint, BUCKET, options)
    finally:
        server.stop()


# --- locations ----------------------------------------------------------------------------


def _make_location(kind: str, request: pytest.FixtureRequest, tmp_path: Path
                   ) -> Iterator[StoreLocation]:
    tag = uuid.uuid4().hex
    if kind == "lmdb":
        yield StoreLocation(str(tmp_path / "store.lmdb"), kind)
    elif kind == "file":
        yield StoreLocation((tmp_path / "store").as_uri(), kind)
    elif kind == "memory":
        location = StoreLocation(f"memory://diced-test-{tag}", kind)
        yield location
        forget_memory(location)
    elif kind == "gcs":
        emulator: Emulator = request.getfixturevalue("gcs_emulator")
        yield StoreLocation(f"gs://{emulator.bucket}/{tag}", kind, emulator.options)
    elif kind == "s3":
        emulator = request.getfixturevalue("s3_emulator")
        yield StoreLocation(f"s3://{emulator.bucket}/{tag}", kind, emulator.options)
    else:
        raise pytest.UsageError(f"unknown backend kind {kind!r}")


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """The backend kind of this test (parametrized by markers, see the module docstring)."""
    return request.param


@pytest.fixture
def store_location(store_kind: str, request: pytest.FixtureRequest,
                   tmp_path: Path) -> Iterator[StoreLocation]:
    """A fresh store location: local kinds by default, more with markers."""
    yield from _make_location(store_kind, request, tmp_path)


@pytest.fixture
def store(store_location: StoreLocation) -> Iterator[Any]:
    """A diced store at ``store_location`` (so on each backend the markers select)."""
    import diced

    s = diced.Store(store_location, **store_location.options)
    yield s
    s.close()


@pytest.fixture
def repo(store: Any) -> Any:
    """A new repo in ``store`` (modules that need a particular alias override this)."""
    return store.create_repo("test", "a test repo")


@pytest.fixture(params=ALL_KINDS)
def backend_location(request: pytest.FixtureRequest, tmp_path: Path
                     ) -> Iterator[StoreLocation]:
    """A fresh store location of every kind, emulated ones included."""
    yield from _make_location(request.param, request, tmp_path)


@pytest.fixture
def backend(backend_location: StoreLocation) -> Iterator[Backend]:
    """The backend opened at ``backend_location``; closed after the test."""
    opened = backend_location.open()
    yield opened
    opened.close()


@pytest.fixture
def storage_options_for(request: pytest.FixtureRequest) -> Callable[[str], dict[str, Any]]:
    """``url -> storage options``: the emulator's for gs:// and s3://, else ``{}``."""

    def options(url: str) -> dict[str, Any]:
        protocol = url.split("://", 1)[0] if "://" in url else ""
        if protocol in ("gs", "gcs"):
            return dict(request.getfixturevalue("gcs_emulator").options)
        if protocol in ("s3", "s3a"):
            return dict(request.getfixturevalue("s3_emulator").options)
        return {}

    return options


@pytest.fixture
def no_chunk_cache() -> Iterator[None]:
    """The process-wide locked-chunk cache off for one test (so every read reaches the
    backend and request counts mean something), restored afterwards."""
    from diced.backends.cache import chunk_cache

    c = chunk_cache()
    old = c.max_bytes
    c.resize(0)
    yield
    c.resize(old)


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers with :meth:`send`."""

    def send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def gcs_reader_of(server: Any, bucket: str, prefix: str) -> Any:
    """A native GCS reader of ``bucket``/``prefix`` on a local ``server``
    (:func:`http_server`), credentials from :class:`GcsFsStub`."""
    from diced.backends import _native

    return _native.GCSReader(GcsFsStub(f"http://127.0.0.1:{server.server_address[1]}"),
                             bucket, prefix, None)


class GcsFsStub:
    """The parts of a gcsfs filesystem that the native GCS reader
    (:class:`diced.backends._native.GCSReader`) uses: the endpoint and credentials that
    send ``Authorization: Bearer secret-token``."""

    def __init__(self, location: str) -> None:
        self._location = location

        class Credentials:
            def apply(self, headers: dict[str, str]) -> None:
                headers["Authorization"] = "Bearer secret-token"

        self.credentials = Credentials()


@pytest.fixture
def http_server() -> Iterator[Callable[..., Any]]:
    """``http_server(handler_class, **attributes)``: a threading HTTP server on 127.0.0.1
    running ``handler_class``, with ``lock`` (a lock), ``seen`` (an empty list) and
    ``attributes`` set on it for the handler to use; every server is stopped after the
    test."""
    from http import server as http

    running: list[tuple[Any, threading.Thread]] = []

    def start(handler: Any, **attributes: Any) -> Any:
        httpd = http.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.lock = threading.Lock()  # type: ignore[attr-defined]
        httpd.seen = []  # type: ignore[attr-defined]
        for name, value in attributes.items():
            setattr(httpd, name, value)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        running.append((httpd, thread))
        return httpd

    yield start
    for httpd, thread in running:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture
def cache():
    """The process-wide locked-chunk cache, emptied, counters zeroed and sized 64 MiB for
    the test; put back as it was afterwards (shadows pytest's own ``cache`` fixture, which
    no test uses)."""
    from diced.backends.cache import chunk_cache

    c = chunk_cache()
    old = c.max_bytes
    c.clear()
    c.reset_stats()
    c.resize(64 << 20)
    yield c
    c.clear()
    c.reset_stats()
    c.resize(old)
