"""Native concurrent object reads for ``s3://`` and ``gs://`` (reads only).

:class:`~diced.backends._fsspec.FsspecBackend` reads objects of s3fs and gcsfs filesystems
through a reader from :func:`native_reader` when one applies; writes, deletes, listings and
conditional requests stay with fsspec. A read of many keys is one batch of concurrent GETs
(at most ``_NATIVE_CONCURRENCY`` in flight) on one process-wide event loop in a daemon
thread, made anew in a forked child.

* ``s3://`` (:class:`S3Reader`): obstore's Rust client. s3fs spent the time of a remote
  read in Python, signing requests and parsing responses.
* ``gs://`` (:class:`GCSReader`): JSON-API media downloads
  (``GET {endpoint}/download/storage/v1/b/{bucket}/o/{object}?alt=media``, the request
  gcsfs itself sends) on one plain aiohttp session, with gcsfs's credentials and endpoint.
  This skips gcsfs's per-call machinery (path splitting, retry decorator, per-request
  header assembly and credential checks). obstore's GCS client is not used: it speaks the
  XML API, which needs its own credential setup and which not every emulator serves.

``DICED_NATIVE_READS=0`` in the environment turns both off (fsspec reads everything). A
missing object reads as ``None``; any other failure raises, and the backend then reads
through fsspec from that point on.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import random
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from diced.backends.arriving import Arriving
from diced.errors import BackendError

log = logging.getLogger(__name__)

__all__ = ["GCSReader", "S3Reader", "native_reader"]

#: set to "0" to read object stores through fsspec only
_NATIVE_ENV = "DICED_NATIVE_READS"
_NATIVE_CONCURRENCY = 64
#: attempts of one GCS GET on a transient failure (429, 408, 5xx, a dropped connection)
_GCS_ATTEMPTS = 5
_GCS_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: streamed ranges (:meth:`S3Reader.stream_ranges`) arrive in pieces of at least this size
_STREAM_PIECE = 64 << 10
#: streamed ranges (:meth:`S3Reader.stream_ranges`) up to this size are read in one piece.
#: Each streamed piece is a hand-off from obstore's runtime to the loop. The 20 cold boxes
#: of ``bench_core.py`` row 6 (35 requests on moto, most of them ranged GETs of packs) took
#: 35-45 ms of the runtime's CPU streamed and 23-35 ms in one piece. At 1 GB/s a range of
#: 1 MiB is on the wire for about 1 ms, two or three chunk decodes: little overlap is lost
_WHOLE_RANGE = 1 << 20


def native_reader(fs: Any, root: str) -> S3Reader | GCSReader | None:
    """A native reader for the objects below ``root`` of ``fs`` (an s3fs or gcsfs
    filesystem) when its settings translate; ``None`` otherwise, or when
    ``DICED_NATIVE_READS=0``."""
    if os.environ.get(_NATIVE_ENV, "1").strip() == "0":
        return None
    package = type(fs).__module__.split(".")[0]
    if package == "s3fs":
        return _s3_reader(fs, root)
    if package == "gcsfs":
        return _gcs_reader(fs, root)
    return None


# --- the loop of native reads ----------------------------------------------------------------

_NATIVE_LOOP: tuple[int, asyncio.AbstractEventLoop] | None = None
_NATIVE_LOOP_LOCK = threading.Lock()


def _native_loop() -> asyncio.AbstractEventLoop:
    """The process-wide loop of native reads (a daemon thread; a new one in a forked
    child, where the parent's thread does not exist)."""
    global _NATIVE_LOOP
    pid = os.getpid()
    if _NATIVE_LOOP is None or _NATIVE_LOOP[0] != pid:
        with _NATIVE_LOOP_LOCK:
            if _NATIVE_LOOP is None or _NATIVE_LOOP[0] != pid:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="diced-native-reads",
                                 daemon=True).start()
                _NATIVE_LOOP = (pid, loop)
    return _NATIVE_LOOP[1]


def _run_native(coro: Any) -> Any:
    """Run ``coro`` on the loop of native reads and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, _native_loop()).result()


def _start_streams(streams: list[tuple[Arriving, Any]]) -> list[Arriving]:
    """Run each ``(range, coroutine filling it)`` on the loop of native reads, at most
    ``_NATIVE_CONCURRENCY`` at once, and return the ranges at once: every range ends
    (finished, missing or failed) whatever the coroutine raises."""

    async def run() -> None:
        gate = asyncio.Semaphore(_NATIVE_CONCURRENCY)

        async def one(buf: Arriving, coro: Any) -> None:
            try:
                async with gate:
                    await coro
            except Exception as exc:  # noqa: BLE001 - handed to the range's readers
                buf.fail(exc if isinstance(exc, BackendError)
                         else BackendError(f"streamed ranged read failed: {exc!r}"))
            except BaseException as exc:  # cancelled (the loop is closing): readers must not hang
                buf.fail(BackendError(f"streamed ranged read stopped: {exc!r}"))
                raise

        await asyncio.gather(*(one(b, c) for b, c in streams))

    asyncio.run_coroutine_threadsafe(run(), _native_loop())
    return [b for b, _ in streams]


# --- s3:// through obstore -------------------------------------------------------------------


class S3Reader:
    """Concurrent GETs of s3:// objects through obstore (Rust).

    The client belongs to the process that made it: in a forked child :meth:`read` raises
    and the backend reads through s3fs instead."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.pid = os.getpid()

    def usable(self) -> bool:
        """Whether this process may use the reader (not a forked child of its maker)."""
        return self.pid == os.getpid()

    def read(self, keys: Sequence[str]) -> list[bytes | None]:
        """The value of each key (``None``: no such object)."""
        if not self.usable():  # a forked child: the client's runtime stayed behind
            raise BackendError("native reader inherited across fork")
        return _run_native(self._read_all(list(keys)))

    async def _read_all(self, keys: list[str]) -> list[bytes | None]:
        import obstore
        from obstore.exceptions import NotFoundError

        gate = asyncio.Semaphore(_NATIVE_CONCURRENCY)

        async def one(key: str) -> bytes | None:
            async with gate:
                try:
                    got = await obstore.get_async(self.store, key)
                    return bytes(await got.bytes_async())
                except (NotFoundError, FileNotFoundError):
                    return None

        return list(await asyncio.gather(*(one(k) for k in keys)))

    def read_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        """Bytes ``[start, end)`` of each ``(key, start, end)`` (``None``: no such object,
        or one shorter than ``end``)."""
        if not self.usable():
            raise BackendError("native reader inherited across fork")
        return _run_native(self._ranges(list(requests)))

    async def _ranges(self, requests: list[tuple[str, int, int]]) -> list[bytes | None]:
        import obstore
        from obstore.exceptions import GenericError, NotFoundError

        gate = asyncio.Semaphore(_NATIVE_CONCURRENCY)

        async def one(key: str, start: int, end: int) -> bytes | None:
            async with gate:
                try:
                    got = bytes(await obstore.get_range_async(self.store, key, start=start,
                                                              end=end))
                except (NotFoundError, FileNotFoundError):
                    return None
                except GenericError as exc:
                    if "416" in str(exc):  # the object ends before ``start``
                        return None
                    raise
            return got if len(got) == end - start else None

        return list(await asyncio.gather(*(one(*r) for r in requests)))

    def stream_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[Arriving]:
        """:meth:`read_ranges` streamed: each range's bytes go to its
        :class:`~diced.backends.arriving.Arriving` as they arrive; ranges of at most
        :data:`_WHOLE_RANGE` bytes arrive in one piece."""
        if not self.usable():
            raise BackendError("native reader inherited across fork")
        streams = []
        for key, start, end in requests:
            buf = Arriving(end - start)
            streams.append((buf, self._stream(key, start, end, buf)))
        return _start_streams(streams)

    async def _stream(self, key: str, start: int, end: int, buf: Arriving) -> None:
        import obstore
        from obstore.exceptions import GenericError, NotFoundError

        failure: BaseException | None = None
        for _ in range(_GCS_ATTEMPTS):  # again from where a dropped body stopped
            pos = buf.filled
            try:
                if end - start - pos <= _WHOLE_RANGE:  # in one piece
                    buf.put(await obstore.get_range_async(self.store, key, start=start + pos,
                                                          end=end))
                else:
                    got = await obstore.get_async(self.store, key,
                                                  options={"range": (start + pos, end)})
                    async for piece in got.stream(min_chunk_size=_STREAM_PIECE):
                        buf.put(piece)
                buf.finish()  # a shorter object sent less: the range does not exist
                return
            except (NotFoundError, FileNotFoundError):
                buf.missing()
                return
            except GenericError as exc:
                if "416" in str(exc):  # the object ends before the range starts
                    buf.missing()
                    return
                failure = exc
                if buf.filled == pos:  # no byte came: obstore retried the request already
                    break
        raise BackendError(f"GET {key} bytes {start}-{end - 1} failed: {failure!r}")


def _s3_reader(fs: Any, root: str) -> S3Reader | None:
    """An obstore reader for an s3fs filesystem when obstore is installed and the
    filesystem's settings translate (endpoint, region, keys or anonymity); else ``None``."""
    try:
        from obstore.store import S3Store
    except ImportError:
        return None
    bucket, _, prefix = root.partition("/")
    ck = dict(getattr(fs, "client_kwargs", None) or {})
    endpoint = ck.get("endpoint_url") or getattr(fs, "endpoint_url", None)
    cfg: dict[str, Any] = {}
    region = ck.get("region_name") or os.environ.get("AWS_REGION") \
        or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        cfg["region"] = region
    if endpoint:
        cfg["endpoint"] = endpoint
    if getattr(fs, "anon", False):
        cfg["skip_signature"] = True
    elif getattr(fs, "key", None) and getattr(fs, "secret", None):
        cfg["access_key_id"] = fs.key
        cfg["secret_access_key"] = fs.secret
        if getattr(fs, "token", None):
            cfg["session_token"] = fs.token
    elif not os.environ.get("AWS_ACCESS_KEY_ID"):
        return None  # credentials from a boto profile or the like: leave them to s3fs
    opts = {"allow_http": True} if str(endpoint or "").startswith("http://") else {}
    try:
        store = S3Store(bucket, prefix=prefix or None, config=cfg, client_options=opts)
    except Exception as exc:  # noqa: BLE001 - settings obstore refuses: fsspec handles them
        log.debug("no native reads for %s: %r", root, exc)
        return None
    return S3Reader(store)


# --- gs:// through JSON-API media downloads ---------------------------------------------------

#: the aiohttp session of native GCS reads: (pid, session), made on the loop of native reads
_GCS_SESSION: tuple[int, Any] | None = None


async def _gcs_session() -> Any:
    """The process's aiohttp session for GCS reads (runs on the loop of native reads,
    which alone touches it; a forked child makes its own)."""
    global _GCS_SESSION
    pid = os.getpid()
    if _GCS_SESSION is None or _GCS_SESSION[0] != pid or _GCS_SESSION[1].closed:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=_NATIVE_CONCURRENCY, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=300)
        _GCS_SESSION = (pid, aiohttp.ClientSession(connector=connector, timeout=timeout,
                                                   auto_decompress=True))
    return _GCS_SESSION[1]


@atexit.register
def _close_gcs_session() -> None:
    """Close this process's session while its loop still runs (no "unclosed" warnings)."""
    session = _GCS_SESSION
    if session is None or session[0] != os.getpid() or session[1].closed:
        return
    try:
        asyncio.run_coroutine_threadsafe(session[1].close(), _native_loop()).result(5)
    except Exception as exc:  # noqa: BLE001 - exiting anyway
        log.debug("closing the GCS read session failed: %r", exc)


class GCSReader:
    """Concurrent JSON-API media downloads of gs:// objects on one aiohttp session.

    ``fs`` (a gcsfs filesystem) gives the endpoint, the credentials (an ``Authorization``
    header, refreshed by gcsfs when it expires) and the requester-pays project. The session
    belongs to the loop of native reads, so the reader keeps working in a forked child
    (which makes its own loop and session)."""

    def __init__(self, fs: Any, bucket: str, prefix: str, user_project: str | None) -> None:
        self.fs = fs
        self.bucket = bucket
        self.prefix = prefix
        location = str(fs._location).rstrip("/")
        self._base = f"{location}/download/storage/v1/b/{quote(bucket, safe='')}/o/"
        self._query = "?alt=media"
        if user_project:
            self._query += "&userProject=" + quote(user_project, safe="")

    def usable(self) -> bool:
        """Always: a forked child gets its own loop and session."""
        return True

    def url(self, key: str) -> str:
        """The download URL of ``key`` (every character but unreserved ones quoted)."""
        return self._base + quote(self.prefix + key, safe="") + self._query

    def read(self, keys: Sequence[str]) -> list[bytes | None]:
        """The value of each key (``None``: no such object)."""
        headers: dict[str, str] = {}
        self.fs.credentials.apply(headers)  # may refresh a token: not on the loop
        return _run_native(self._read_all([self.url(k) for k in keys], headers))

    def read_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        """Bytes ``[start, end)`` of each ``(key, start, end)`` (``None``: no such object,
        or one shorter than ``end``): one GET with a ``Range`` header each."""
        headers: dict[str, str] = {}
        self.fs.credentials.apply(headers)
        spans = [(start, end) for _, start, end in requests]
        return _run_native(self._read_all([self.url(k) for k, _, _ in requests], headers,
                                          spans))

    def stream_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[Arriving]:
        """:meth:`read_ranges` streamed: each range's bytes go to its
        :class:`~diced.backends.arriving.Arriving` as they arrive (a dropped connection
        or a transient status is retried from the first byte not yet in)."""
        headers: dict[str, str] = {}
        self.fs.credentials.apply(headers)
        streams = []
        for key, start, end in requests:
            buf = Arriving(end - start)
            streams.append((buf, self._stream(self.url(key), headers, start, end, buf)))
        return _start_streams(streams)

    async def _stream(self, url: str, headers: dict[str, str], start: int, end: int,
                      buf: Arriving) -> None:
        import aiohttp
        from yarl import URL

        session = await _gcs_session()
        target = URL(url, encoded=True)
        transient = (aiohttp.ClientError, OSError, asyncio.TimeoutError)
        failure = ""
        for attempt in range(_GCS_ATTEMPTS):
            at = start + buf.filled
            hdrs = {**headers, "Range": f"bytes={at}-{end - 1}"}
            try:
                async with session.get(target, headers=hdrs) as r:
                    status = r.status
                    if status in (200, 206):
                        # a server that ignores Range sends the whole object (200)
                        skip = at if status == 200 else 0
                        async for piece in r.content.iter_any():
                            if skip:
                                if len(piece) <= skip:
                                    skip -= len(piece)
                                    continue
                                piece, skip = piece[skip:], 0
                            buf.put(piece)
                            if buf.filled >= buf.size and status == 200:
                                break  # the rest of a whole object (a 206 body ends here,
                                # and read to its end the connection is reused)
                        buf.finish()  # a shorter object sent less: the range does not exist
                        return
                    body = await r.read()
            except transient as exc:  # a dropped connection, a timeout: resume
                failure = repr(exc)
            else:
                if status in (404, 416):
                    buf.missing()
                    return
                failure = f"HTTP {status} {body[:300].decode('utf-8', 'replace')}"
                if status not in _GCS_RETRY_STATUS:
                    break
            if attempt < _GCS_ATTEMPTS - 1:
                await asyncio.sleep(min(0.05 * 2 ** attempt, 2.0) * (1 + random.random()))
        raise BackendError(f"GET {url} bytes {start}-{end - 1} failed: {failure}")

    async def _read_all(self, urls: list[str], headers: dict[str, str],
                        spans: list[tuple[int, int]] | None = None) -> list[bytes | None]:
        import aiohttp
        from yarl import URL

        session = await _gcs_session()
        gate = asyncio.Semaphore(_NATIVE_CONCURRENCY)
        transient = (aiohttp.ClientError, OSError, asyncio.TimeoutError)

        async def one(url: str, span: tuple[int, int] | None) -> bytes | None:
            target = URL(url, encoded=True)  # already quoted: yarl must not re-quote it
            hdrs = headers if span is None else \
                {**headers, "Range": f"bytes={span[0]}-{span[1] - 1}"}
            async with gate:
                for attempt in range(_GCS_ATTEMPTS):
                    try:
                        async with session.get(target, headers=hdrs) as r:
                            status = r.status
                            body = await r.read()
                    except transient as exc:  # a dropped connection, a timeout
                        failure = repr(exc)
                    else:
                        if status == 200 and span is None:
                            return bytes(body)
                        if status in (200, 206) and span is not None:
                            # a server that ignores Range sends the whole object (200)
                            part = body if status == 206 else body[span[0]:span[1]]
                            return bytes(part) if len(part) == span[1] - span[0] else None
                        if status == 404 or (status == 416 and span is not None):
                            return None
                        failure = f"HTTP {status} {body[:300].decode('utf-8', 'replace')}"
                        if status not in _GCS_RETRY_STATUS:
                            break
                    if attempt < _GCS_ATTEMPTS - 1:
                        await asyncio.sleep(min(0.05 * 2 ** attempt, 2.0)
                                            * (1 + random.random()))
            raise BackendError(f"GET {url} failed: {failure}")

        return list(await asyncio.gather(*(one(u, None if spans is None else spans[i])
                                           for i, u in enumerate(urls))))


def _gcs_reader(fs: Any, root: str) -> GCSReader | None:
    """A reader for a gcsfs filesystem unless its settings need gcsfs's own session
    (custom session arguments, client certificates) or it lacks what the reader uses."""
    try:
        import aiohttp  # noqa: F401 - gcsfs's own dependency
        import yarl  # noqa: F401
    except ImportError:
        return None
    if getattr(fs, "session_kwargs", None) or getattr(fs, "_use_client_cert", False):
        return None
    if not hasattr(fs, "credentials") or not hasattr(fs, "_location"):
        return None
    bucket, _, prefix = root.partition("/")
    if not bucket:
        return None
    pays = getattr(fs, "requester_pays", False)
    user_project = pays if isinstance(pays, str) else (getattr(fs, "project", None) if pays
                                                       else None)
    try:
        return GCSReader(fs, bucket, prefix + "/" if prefix else "", user_project)
    except Exception as exc:  # noqa: BLE001 - settings we cannot read: gcsfs handles them
        log.debug("no native reads for gs://%s: %r", root, exc)
        return None
