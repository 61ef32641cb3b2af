"""Streamed ranged reads (``Backend.stream_ranges``, :class:`diced.backends.arriving.Arriving`)
and the packed-chunk reads built on them (decode as the bytes arrive).

* :class:`Arriving`: readers wait for a prefix; marks are reported once each, in order, also
  when the read ends without them; a short, missing or failed range is ``None`` or raises.
* The native GCS reader streams: a body cut mid-way is resumed from the first byte not in
  (``Range`` from there), a server that ignores ``Range`` is read right, 404/416 and short
  objects give ``None``, a refused request raises :class:`~diced.errors.BackendError`.
* Array reads of packed versions on object stores: exact through several request windows;
  a pack whose streamed read fails falls back to the chunk objects (logged); a chunk that
  does not decode raises ``CorruptDataError`` naming it, with no reader left waiting.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time

import numpy as np
import pytest
from conftest import GcsFsStub, QuietHandler, gcs_reader_of

import diced
from diced.backends import _native
from diced.backends.arriving import Arriving
from diced.datatypes.array import reading
from diced.errors import BackendError, CorruptDataError
from diced.repo import chunkpacks

# --- Arriving --------------------------------------------------------------------------------


def test_arriving_readers_wait_for_their_prefix():
    a = Arriving(10)
    got: dict[str, object] = {}

    def reader(name: str, upto: int) -> None:
        view = a.wait(upto)
        got[name] = None if view is None else bytes(view[:upto])

    threads = [threading.Thread(target=reader, args=(n, u)) for n, u in (("3", 3), ("10", 10))]
    for t in threads:
        t.start()
    a.put(b"ab")
    time.sleep(0.05)
    assert got == {}  # neither prefix is in yet
    a.put(b"cdefghijklmnop")  # past the size: dropped
    for t in threads:
        t.join(10)
    assert got == {"3": b"abc", "10": b"abcdefghij"}
    assert a.filled == 10
    a.finish()
    assert bytes(a.wait(10)) == b"abcdefghij"


def test_arriving_marks_are_reported_once_in_order():
    a = Arriving(100)
    seen: list[int] = []
    a.put(b"x" * 30)
    a.on_filled([10, 30, 60, 100], seen.append)
    assert seen == [0, 1]  # reached before the call: reported at once
    a.put(b"y" * 29)
    assert seen == [0, 1]
    a.put(b"z")
    assert seen == [0, 1, 2]
    a.put(b"w" * 40)
    a.finish()
    assert seen == [0, 1, 2, 3]
    with pytest.raises(RuntimeError):
        a.on_filled([1], seen.append)


@pytest.mark.parametrize("end", ["short", "missing", "failed"])
def test_arriving_that_ends_early_reports_every_mark(end):
    a = Arriving(100)
    seen: list[int] = []
    a.on_filled([10, 50, 100], seen.append)
    a.put(b"x" * 20)
    assert seen == [0]
    if end == "short":
        a.finish()
    elif end == "missing":
        a.missing()
    else:
        a.fail(BackendError("connection reset"))
    assert seen == [0, 1, 2]
    if end == "failed":
        with pytest.raises(BackendError, match="reset"):
            a.wait(50)
    else:
        assert a.wait(50) is None and a.wait(10) is None


def test_arriving_ready():
    assert bytes(Arriving.ready(b"abc", 3).wait(3)) == b"abc"
    assert Arriving.ready(None, 3).wait(1) is None
    seen: list[int] = []
    Arriving.ready(b"abc", 3).on_filled([1, 3], seen.append)
    assert seen == [0, 1]


# --- the native GCS reader, against a scripted server ----------------------------------------

BODY = os.urandom(300_000)


class _Ranges(QuietHandler):
    """Serves BODY at /o/<name> with Range. ``server.cut`` (name -> bytes) cuts the first
    response of that object after so many bytes; ``norange`` ignores Range; ``short``
    holds only the first 1000 bytes; ``denied`` answers 403."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        srv = self.server
        name = self.path.partition("?")[0].rpartition("%2F")[2]
        rng = self.headers.get("Range")
        with srv.lock:
            srv.seen.append((name, rng))
            cut = srv.cut.pop(name, None)
        if name == "denied":
            self.send(403, b"no")
            return
        if name == "absent":
            self.send(404, b"{}")
            return
        body = BODY[:1000] if name == "short" else BODY
        if rng is None or name == "norange":
            self.send(200, body)
            return
        start, _, end = rng.removeprefix("bytes=").partition("-")
        start, end = int(start), min(int(end) + 1, len(body))
        if start >= len(body):
            self.send(416, b"")
            return
        part = body[start:end]
        if cut is not None:  # promise the whole range, send part of it, drop the connection
            self.send_response(206)
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            self.wfile.write(part[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.send(206, part)


@pytest.fixture
def ranges_server(http_server):
    return http_server(_Ranges, cut={})


def _gcs_reader(server):
    return gcs_reader_of(server, "b", "p/")


def _all(arriving):
    out = []
    for a in arriving:
        try:
            v = a.wait(a.size)
        except BackendError as exc:
            out.append(exc)
            continue
        out.append(None if v is None else bytes(v))
    return out


def test_gcs_stream_ranges_exact(ranges_server):
    reqs = [("x", 0, 10), ("x", 1000, 250_000), ("norange", 5000, 200_000), ("short", 10, 500),
            ("short", 900, 2000), ("short", 5000, 6000), ("absent", 0, 5)]
    got = _all(_gcs_reader(ranges_server).stream_ranges(reqs))
    assert got == [BODY[:10], BODY[1000:250_000], BODY[5000:200_000], BODY[10:500], None, None,
                   None]


def test_gcs_stream_resumes_a_cut_body(ranges_server, monkeypatch):
    monkeypatch.setattr(_native, "_GCS_ATTEMPTS", 3)
    ranges_server.cut = {"x": 70_000}
    seen: list[int] = []
    a = _gcs_reader(ranges_server).stream_ranges([("x", 1000, 250_000)])[0]
    a.on_filled([50_000, 249_000], seen.append)
    assert bytes(a.wait(a.size)) == BODY[1000:250_000]
    # the second request asked for what was missing, not for everything again
    ranges = [r for n, r in ranges_server.seen if n == "x"]
    assert ranges[0] == "bytes=1000-249999"
    assert len(ranges) == 2 and ranges[1] != ranges[0]
    assert int(ranges[1].removeprefix("bytes=").partition("-")[0]) > 1000
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert seen == [0, 1]


def test_gcs_stream_errors(ranges_server, monkeypatch):
    monkeypatch.setattr(_native, "_GCS_ATTEMPTS", 2)
    got = _all(_gcs_reader(ranges_server).stream_ranges([("denied", 0, 10), ("x", 0, 10)]))
    assert isinstance(got[0], BackendError) and "HTTP 403" in str(got[0])
    assert got[1] == BODY[:10]
    assert sum(n == "denied" for n, _ in ranges_server.seen) == 1  # 403 is not retried
    dead = _native.GCSReader(GcsFsStub("http://127.0.0.1:9"), "b", "", None)  # nothing listens
    got = _all(dead.stream_ranges([("x", 0, 10)]))
    assert isinstance(got[0], BackendError)


@pytest.mark.backends("s3")
@pytest.mark.parametrize("whole", [True, False], ids=["whole", "streamed"])
def test_s3_stream_ranges_exact(store_location, monkeypatch, whole):
    """The obstore reader reads ranges up to ``_WHOLE_RANGE`` in one piece and longer ones
    streamed; either way the bytes are exact, and an absent object, a range past the end
    and a range the object ends inside are ``None``."""
    obstore = pytest.importorskip("obstore")
    if not whole:
        monkeypatch.setattr(_native, "_WHOLE_RANGE", 0)
    backend = store_location.open()
    try:
        if not isinstance(getattr(backend._objects, "_native", None), _native.S3Reader):
            pytest.skip("no native S3 reader for these settings")
        big = os.urandom(300_000)
        backend.set_many({"x": BODY, "big": big})
        monkeypatch.setattr(_native, "_STREAM_PIECE", 1 << 10)  # several pieces a range
        reqs = [("x", 0, 10), ("x", 1000, 250_000), ("x", 0, len(BODY)), ("big", 7, 300_000),
                ("absent", 0, 10), ("x", len(BODY) + 5, len(BODY) + 10),
                ("x", len(BODY) - 10, len(BODY) + 10)]
        calls = []
        real = obstore.get_range_async

        async def counted(*args, **kwargs):
            calls.append(kwargs.get("start"))
            return await real(*args, **kwargs)

        monkeypatch.setattr(obstore, "get_range_async", counted)
        got = _all(backend.stream_ranges(reqs))
        assert got == [BODY[:10], BODY[1000:250_000], BODY, big[7:], None, None, None]
        assert len(calls) == (len(reqs) if whole else 0)
    finally:
        backend.close()


# --- packed reads on object stores -----------------------------------------------------------


def _packed(store_location):
    """A store with a packed locked version of a 128 x 96 x 160 uint16 array in 32³ chunks:
    ``(store url options, uuid, data)``."""
    store = diced.Store(store_location, create=True, **store_location.options)
    repo = store.create_repo("p")
    a = repo.create_array("a", "uint16", (128, 96, 160), chunks=(32, 32, 32))
    rng = np.random.default_rng(5)
    data = rng.integers(0, 40, (128, 96, 160)).astype(np.uint16)
    a[...] = data
    uuid = repo.commit("packed", pack=True).uuid
    store.close()
    return uuid, data


def _cold_array(store_location, uuid):
    return diced.Store(store_location, **store_location.options).open_repo("p").version(
        uuid).array("a")


@pytest.mark.backends("memory", "s3", "gcs")
@pytest.mark.usefixtures("no_chunk_cache")
def test_packed_reads_in_several_windows(store_location, monkeypatch):
    uuid, data = _packed(store_location)
    monkeypatch.setattr(chunkpacks, "SPAN_MAX", 100 << 10)  # a few chunks a GET
    monkeypatch.setattr(reading, "PACK_WINDOW", 64 << 10)  # a GET or two per window
    arr = _cold_array(store_location, uuid)
    raw = arr._space.backend.raw
    calls = []
    stream = raw.stream_ranges
    monkeypatch.setattr(raw, "stream_ranges", lambda reqs: (calls.append(len(reqs)),
                                                            stream(reqs))[1])
    assert np.array_equal(arr[...], data)
    assert len(calls) > 3
    box = (slice(5, 120), slice(17, 90), slice(3, 150))
    assert np.array_equal(arr[box], data[box])


@pytest.mark.backends("s3", "gcs")
@pytest.mark.usefixtures("no_chunk_cache")
def test_packed_read_falls_back_when_the_stream_fails(store_location, monkeypatch, caplog):
    uuid, data = _packed(store_location)
    arr = _cold_array(store_location, uuid)
    raw = arr._space.backend.raw

    asked: list[tuple[str, int, int]] = []

    def failing(reqs):
        asked.extend(reqs)
        out = [Arriving(end - start) for _, start, end in reqs]
        for a in out[::2]:
            a.fail(BackendError("connection reset by peer"))
        for a, (_, start, end) in list(zip(out, reqs))[1::2]:
            a.missing()
        return out

    monkeypatch.setattr(raw, "stream_ranges", failing)
    with caplog.at_level(logging.WARNING):
        assert np.array_equal(arr[...], data)
    assert "could not be read" in caplog.text and "reading its chunks" in caplog.text
    asked.sort()  # no byte of a pack asked for twice: failed packs are not tried again
    assert asked and all(a[0] != b[0] or a[2] <= b[1] for a, b in itertools.pairwise(asked))


@pytest.mark.backends("memory", "gcs")
@pytest.mark.usefixtures("no_chunk_cache")
def test_packed_read_of_a_chunk_that_does_not_decode_names_it(store_location, monkeypatch):
    uuid, _ = _packed(store_location)
    arr = _cold_array(store_location, uuid)
    calls = {"n": 0}
    decode_box = reading._decode_box

    def bad(codec, data, *args):
        calls["n"] += 1
        if calls["n"] == 7:
            raise CorruptDataError("bad blosc header")
        return decode_box(codec, data, *args)

    monkeypatch.setattr(reading, "_decode_box", bad)
    done = threading.Event()
    failure: list[BaseException] = []

    def read():
        try:
            arr[...]
        except BaseException as exc:  # noqa: BLE001 - checked below
            failure.append(exc)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(60), "a reader was left waiting"
    assert isinstance(failure[0], CorruptDataError)
    assert "'a'" in str(failure[0]) and "chunk" in str(failure[0])
