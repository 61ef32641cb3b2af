"""fsspec: object stores and filesystems (``memory://``, ``file://``, ``gs://``, ``s3://``, ...).

A key is the object ``<root>/<key>``; its ``/`` separators make directories on a filesystem.
Three object layers sit under one :class:`FsspecBackend`:

* ``file://`` (:class:`_LocalObjects`): plain ``os`` calls. Each value is written to a temp
  file in its directory and renamed over the target, so a crash never leaves a half-written
  value. Writers share an ``flock`` on ``<root>/.~diced-lock`` and
  :meth:`FsspecBackend.compare_and_set` / :meth:`FsspecBackend.update` hold it exclusively,
  which makes compare-and-set atomic across the processes of one machine (and on network
  filesystems whose ``flock`` works across clients). :meth:`FsspecBackend.hold_locks` gives
  named ``flock`` locks (files ``<root>/.~diced-lock-<name>``) that versioned writers use
  (:mod:`diced.repo.writers`); the kernel drops them when a process dies. The lock files
  stay (empty; 64 stripes per repo and one per version written) and are never keys.
* ``memory://`` (:class:`_MemoryObjects`): fsspec's process-wide dict; a lock per root makes
  compare-and-set and update atomic (no other process can see the dict).
* anything else (:class:`_FsObjects`): fsspec bulk calls (``cat``/``pipe``/``rm`` run
  concurrently on async filesystems such as gcsfs and s3fs) and server-side prefix listings.
  On ``s3://`` and ``gs://`` :meth:`FsspecBackend.compare_and_set` is atomic: a conditional
  request to the object store (S3 ``If-None-Match: *`` to create, ``If-Match: <ETag>`` of
  the value just read to replace or delete; GCS ``ifGenerationMatch`` with ``0`` or the
  generation just read), sent with the s3fs/gcsfs clients' own sessions. Elsewhere
  ``compare_and_set`` and ``update`` are the base class's read-then-write. Reads of
  ``s3://`` and ``gs://`` objects take the faster native path of
  :mod:`diced.backends._native` when it applies (``DICED_NATIVE_READS=0`` turns it off).

Limits of the key-as-path layout: a key and a key below it (``a/b`` and ``a/b/c``) cannot
both exist on ``file://`` or ``memory://`` (writing the second raises
:class:`~diced.errors.BackendError`); keys must not contain empty, ``.`` or ``..`` segments,
glob characters (``*?[``), backslashes, control characters or the marker ``.~diced-``.
Deleting keys leaves empty directories behind on ``file://``. On ``file://`` a key segment
longer than 200 characters is stored as a chain of directories whose names end with the
marker (``<200 chars>.~diced-/<rest>``), so keys are not limited by the filesystem's
255-byte file names. Listings never leave the store's root: a prefix with an empty, ``.``
or ``..`` segment matches nothing.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any

from diced.backends._native import native_reader as _native_reader
from diced.backends.arriving import Arriving
from diced.backends.base import Backend, Capabilities, UpdateFn, check_ranges
from diced.errors import (
    BackendError,
    BackendUnavailableError,
    DicedError,
    InvalidArgumentError,
    StoreLocationError,
    StoreNotFoundError,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

__all__ = ["FsspecBackend"]

#: names containing this are diced's own files (temp files, the lock), never keys
_RESERVED = ".~diced-"
_LOCK_NAME = _RESERVED + "lock"
_FORBIDDEN = frozenset("*?[\\")
#: longest key segment stored as one file name on file:// (longer ones are split)
_SEGMENT_MAX = 200
_IO_THREADS = 32
_INLINE_CALLS = 4
_LIST_CONCURRENCY = 32
#: errors meaning "no value under this key" (a directory is not a value either)
_ABSENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key or not key.isascii():
        raise InvalidArgumentError(f"backend keys must be non-empty ASCII strings, got {key!r}")
    if (any(c in _FORBIDDEN or c < " " or c == "\x7f" for c in key) or _RESERVED in key
            or any(part in ("", ".", "..") for part in key.split("/"))):
        raise InvalidArgumentError(f"key {key!r} cannot be stored as an object path")
    return key


def _prefix_stays_inside(prefix: str) -> bool:
    """Whether keys can start with ``prefix``: its complete segments must be valid ones.

    Keys never hold empty, ``.`` or ``..`` segments, so such a prefix matches nothing, and
    refusing it here keeps a listing from ever walking outside the store's root."""
    head = prefix.rpartition("/")[0]
    if not head:
        return not prefix.startswith("/")
    return not (any(part in ("", ".", "..") for part in head.split("/"))
                or any(c in _FORBIDDEN or c < " " or c == "\x7f" for c in head)
                or _RESERVED in prefix)


def _listing_prefix(prefix: str, start: str | None, stop: str | None) -> str | None:
    """The longest string every key in the request starts with; ``None`` when none match.

    Every string in ``[start, stop)`` shares the common prefix of ``start`` and ``stop``,
    so a bounded request may list a deeper directory than ``prefix`` alone names.
    """
    if start is None or stop is None:
        return prefix
    common = os.path.commonprefix([start, stop])
    if common.startswith(prefix):
        return common
    return prefix if prefix.startswith(common) else None


def _conditional_kind(fs: Any) -> str | None:
    """``"s3"`` or ``"gcs"`` when ``fs`` is s3fs or gcsfs (which take conditional writes)."""
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & {"s3", "s3a"} and hasattr(fs, "get_s3"):
        return "s3"
    if protocols & {"gs", "gcs"} and hasattr(fs, "_call"):
        return "gcs"
    return None


def _unsatisfiable(value: object) -> bool:
    """Whether a ranged read failed because the object ends before the range starts (HTTP
    416, which s3fs raises as ``EINVAL``)."""
    if not isinstance(value, OSError):
        return False
    text = str(value).lower()
    return value.errno == errno.EINVAL or "416" in text or "not satisfiable" in text


class _FsObjects:
    """Objects of any fsspec filesystem, through its bulk calls."""

    capabilities = Capabilities()

    def __init__(self, fs: Any, root: str) -> None:
        from fsspec.asyn import AsyncFileSystem

        self.fs = fs
        self.root = root
        self._base = root + "/"
        self._async = isinstance(fs, AsyncFileSystem)
        self._conditional = _conditional_kind(fs) if self._async else None
        if self._conditional is not None:
            self.capabilities = Capabilities(compare_and_set=True)
        # gcsfs and s3fs list "<path>/<prefix>*" server-side with find(path, prefix=...)
        self._find_prefix = self._async and "prefix" in inspect.signature(fs._find).parameters
        # gcsfs's find() repeats an empty prefix listing (the same request, "as a file"):
        # one request per listing through the object listing it wraps
        self._list_objects = getattr(fs, "_do_list_objects", None) \
            if self._conditional == "gcs" else None
        # s3fs sends a HEAD before each GET to decide on a ranged parallel download (worth
        # it only for values far larger than chunks): one request per value instead
        self._cat_options: dict[str, Any] = {}
        if self._async and "max_concurrency" in inspect.signature(fs._cat_file).parameters:
            self._cat_options["max_concurrency"] = 1
        self._native = _native_reader(fs, root)

    def path(self, key: str) -> str:
        return self._base + key

    def shared(self) -> AbstractContextManager[None]:
        """Held around plain writes."""
        return nullcontext()

    def exclusive(self) -> AbstractContextManager[None]:
        """Held around read-modify-write calls."""
        return nullcontext()

    def read(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        native = self._native
        if native is not None and not native.usable():
            self._native = native = None  # a forked child: its client's runtime stayed behind
        if native is not None:
            try:
                return native.read(keys)
            except Exception as exc:  # noqa: BLE001 - any native failure: use fsspec from now on
                log.warning("native object reads of %s failed (%r); using fsspec from now on",
                            self.root, exc)
                self._native = None
        paths = [self.path(k) for k in keys]
        got = self.fs.cat(paths, on_error="return", **self._cat_options)
        out: list[bytes | None] = []
        for path in paths:
            value = got.get(path)
            if value is None or isinstance(value, _ABSENT):
                out.append(None)
            elif isinstance(value, BaseException):
                raise value
            else:
                out.append(bytes(value))
        return out

    def read_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        """Bytes ``[start, end)`` of each ``(key, start, end)``: ranged GETs, concurrent."""
        if not requests:
            return []
        native = self._native
        if native is not None and native.usable():
            try:
                return native.read_ranges(requests)
            except Exception as exc:  # noqa: BLE001 - as in read(): fsspec from now on
                log.warning("native ranged reads of %s failed (%r); using fsspec from now on",
                            self.root, exc)
                self._native = None
        got = self.fs.cat_ranges([self.path(k) for k, _, _ in requests],
                                 [r[1] for r in requests], [r[2] for r in requests],
                                 on_error="return")
        out: list[bytes | None] = []
        for (_, start, end), value in zip(requests, got, strict=True):
            if isinstance(value, _ABSENT) or _unsatisfiable(value):
                out.append(None)
            elif isinstance(value, BaseException):
                raise value
            else:
                out.append(bytes(value) if len(value) == end - start else None)
        return out

    def stream_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[Arriving] | None:
        """:meth:`read_ranges` streamed by the native reader, or ``None`` (no native reader:
        read them whole)."""
        native = self._native
        if not requests or native is None or not native.usable():
            return None
        try:
            return native.stream_ranges(requests)
        except Exception as exc:  # noqa: BLE001 - as in read(): fsspec from now on
            log.warning("native ranged reads of %s failed (%r); using fsspec from now on",
                        self.root, exc)
            self._native = None
            return None

    def write(self, items: Mapping[str, bytes]) -> None:
        if items:
            self.fs.pipe({self.path(k): v for k, v in items.items()})

    def remove(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        paths = [self.path(k) for k in keys]
        try:
            self.fs.rm(paths)
        except OSError:  # some were absent (gcsfs, memory): retry one by one, ignoring those
            for path in paths:
                try:
                    self.fs.rm_file(path)
                except _ABSENT:
                    pass

    def scan(self, prefixes: Sequence[str]) -> list[list[str]]:
        """For each prefix, the keys starting with it (unsorted)."""
        if self._find_prefix:
            from fsspec.asyn import sync

            listings = sync(self.fs.loop, self._find_all, list(prefixes))
        else:
            listings = [self._find_dir(p) for p in prefixes]
        return [self._keys(names, p) for names, p in zip(listings, prefixes, strict=True)]

    async def _find_all(self, prefixes: list[str]) -> list[list[str]]:
        gate = asyncio.Semaphore(_LIST_CONCURRENCY)

        async def one(prefix: str) -> list[str]:
            async with gate:
                if prefix and self._list_objects is not None:
                    objects, _ = await self._list_objects(self.root, delimiter="", prefix=prefix)
                    return [o["name"] for o in objects]
                if prefix:
                    return await self.fs._find(self.root, prefix=prefix)
                return await self.fs._find(self.root)

        return list(await asyncio.gather(*(one(p) for p in prefixes)))

    def _find_dir(self, prefix: str) -> list[str]:
        head = prefix.rpartition("/")[0]
        where = self.path(head) if head else self.root
        self.fs.invalidate_cache(where)
        try:
            return self.fs.find(where, withdirs=False)
        except _ABSENT:
            return []

    def is_empty(self) -> bool:
        self.fs.invalidate_cache(self.root)
        try:
            names = self.fs.ls(self.root, detail=False)
        except _ABSENT:
            return True
        return not any(_RESERVED not in n.rstrip("/").rpartition("/")[2] for n in names)

    def _keys(self, names: Iterable[str], prefix: str) -> list[str]:
        base = self._base
        cut = len(base)
        return [name[cut:] for name in names
                if name.startswith(base) and name[cut:].startswith(prefix)
                and _RESERVED not in name[cut:]]

    def close(self) -> None:
        """Nothing to release: fsspec filesystems are cached and shared process-wide."""

    # --- conditional writes (s3fs, gcsfs) ----------------------------------------------------

    def cas(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        """Atomic compare-and-set with the object store's own preconditions."""
        from fsspec.asyn import sync

        path = self.path(key)
        try:
            if self._conditional == "s3":
                return sync(self.fs.loop, _s3_cas, self.fs, path, expected, new)
            return sync(self.fs.loop, _gcs_cas, self.fs, path, expected, new)
        finally:
            self.fs.invalidate_cache(path)


async def _s3_cas(fs: Any, path: str, expected: bytes | None, new: bytes | None) -> bool:
    """S3: ``If-None-Match: *`` creates, ``If-Match: <etag>`` replaces and deletes."""
    from botocore.exceptions import ClientError

    bucket, key, _ = fs.split_path(path)
    await fs.set_session()
    s3 = await fs.get_s3(bucket)
    lost = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "412")
    try:
        if expected is None:
            if new is None:
                return (await _s3_get(s3, bucket, key))[0] is None
            await s3.put_object(Bucket=bucket, Key=key, Body=new, IfNoneMatch="*")
            return True
        current, etag = await _s3_get(s3, bucket, key)
        if current != expected:
            return False
        if new is None:
            await s3.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
        else:
            await s3.put_object(Bucket=bucket, Key=key, Body=new, IfMatch=etag)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in lost:
            return False
        raise


async def _s3_get(s3: Any, bucket: str, key: str) -> tuple[bytes | None, str | None]:
    from botocore.exceptions import ClientError

    try:
        got = await s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None, None
        raise
    async with got["Body"] as body:
        data = await body.read()
    return data, got["ETag"]


async def _gcs_cas(fs: Any, path: str, expected: bytes | None, new: bytes | None) -> bool:
    """GCS: ``ifGenerationMatch`` (``0``: the object must not exist) on upload and delete."""
    from urllib.parse import quote

    bucket, key, _ = fs.split_path(path)
    if expected is None:
        generation = "0"
        if new is None:
            return (await _gcs_get(fs, bucket, key))[0] is None
    else:
        current, got = await _gcs_get(fs, bucket, key)
        if current != expected:
            return False
        if got is None:
            raise BackendError(f"gs://{bucket}/{key}: the server sent no object generation, "
                               "so a conditional write is impossible")
        generation = got
    try:
        if new is None:
            await fs._call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=generation)
        else:
            # a multipart upload as gcsfs's own (metadata part, then the value)
            meta = json.dumps({"name": key})
            body = (f"--==0==\nContent-Type: application/json; charset=UTF-8\n\n{meta}\n"
                    "--==0==\nContent-Type: application/octet-stream\n\n").encode() \
                + bytes(new) + b"\n--==0==--"
            await fs._call("POST", f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
                           uploadType="multipart", ifGenerationMatch=generation,
                           headers={"Content-Type": 'multipart/related; boundary="==0=="'},
                           data=body, json_out=True)
    except (FileExistsError, FileNotFoundError):  # 412: precondition failed; 404: gone
        return False
    return True


async def _gcs_get(fs: Any, bucket: str, key: str) -> tuple[bytes | None, str | None]:
    try:
        headers, data = await fs._call("GET", "b/{}/o/{}", bucket, key, alt="media")
    except FileNotFoundError:
        return None, None
    return bytes(data), headers.get("x-goog-generation")


#: memory root -> lock; memory:// is one dict per process, so these cover every writer
_MEMORY_LOCKS: dict[str, threading.RLock] = {}
_MEMORY_LOCKS_GUARD = threading.Lock()


class _MemoryObjects(_FsObjects):
    """fsspec's in-process memory filesystem; one lock per root serializes writers."""

    capabilities = Capabilities(compare_and_set=True, atomic_update=True)

    def __init__(self, fs: Any, root: str) -> None:
        super().__init__(fs, root)
        with _MEMORY_LOCKS_GUARD:
            self._lock = _MEMORY_LOCKS.setdefault(root, threading.RLock())

    def shared(self) -> AbstractContextManager[None]:
        return self._lock

    def exclusive(self) -> AbstractContextManager[None]:
        return self._lock

    def scan(self, prefixes: Sequence[str]) -> list[list[str]]:
        """One pass over the process-wide dict (fsspec's ``find`` walks it once per
        directory level); callers hold the root's lock, so it cannot change meanwhile."""
        names = [n for n in self.fs.store if n.startswith(self._base)]
        return [self._keys(names, p) for p in prefixes]

    def remove(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                self.fs.rm_file(self.path(key))
            except _ABSENT:
                pass

    def is_empty(self) -> bool:
        base = self._base
        return not any(n.startswith(base) for n in self.fs.store)


def _parallel(fn: Callable[[Any], None], items: Sequence[Any]) -> None:
    """``fn`` over ``items``, on threads when there are many: file system calls that wait
    for the disk (fsync, unlink of synced files) overlap well."""
    if len(items) <= _INLINE_CALLS:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(min(_IO_THREADS, len(items))) as pool:
        for _ in pool.map(fn, items):
            pass


class _LocalObjects:
    """Files under a local directory, written atomically, with an ``flock`` for writers."""

    capabilities = Capabilities(compare_and_set=fcntl is not None,
                                process_locks=fcntl is not None)

    def __init__(self, root: str, durable: bool) -> None:
        self.root = os.path.abspath(root)
        self.durable = durable
        self._lock_path = os.path.join(self.root, _LOCK_NAME)
        self._held = threading.local()

    def path(self, key: str) -> str:
        parts: list[str] = []
        for seg in key.split("/"):
            while len(seg) > _SEGMENT_MAX:  # a chain of continuation directories
                parts.append(seg[:_SEGMENT_MAX] + _RESERVED)
                seg = seg[_SEGMENT_MAX:]
            parts.append(seg)
        return os.path.join(self.root, *parts)

    def is_empty(self) -> bool:
        """No file but diced's own (deleting keys leaves empty directories behind)."""
        for _, _, files in os.walk(self.root):
            if any(_RESERVED not in f for f in files):
                return False
        return True

    # --- locking ---------------------------------------------------------------------------

    def shared(self) -> AbstractContextManager[None]:
        return self._flock(exclusive=False)

    def exclusive(self) -> AbstractContextManager[None]:
        return self._flock(exclusive=True)

    @contextmanager
    def _flock(self, exclusive: bool) -> Iterator[None]:
        # flock locks belong to an open file description, so every acquisition opens the
        # file anew: threads of this process then exclude each other like processes do.
        # A thread already holding the lock (update's fn writing) does not take it again.
        if fcntl is None or getattr(self._held, "depth", 0):
            self._held.depth = getattr(self._held, "depth", 0) + 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        os.makedirs(self.root, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextmanager
    def hold(self, exclusive: Sequence[str], shared: Sequence[str]) -> Iterator[None]:
        """Named ``flock`` locks (files ``<root>/.~diced-lock-<name>``): shared ones first,
        then exclusive ones, each in sorted order. The kernel drops them if we die."""
        if fcntl is None:  # pragma: no cover - Windows
            raise BackendError(f"no flock on this platform: {self.root} has no process locks")
        plan = [(n, fcntl.LOCK_SH) for n in sorted(set(shared))] + \
               [(n, fcntl.LOCK_EX) for n in sorted(set(exclusive) - set(shared))]
        for name, _ in plan:
            if not name or not all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
                raise InvalidArgumentError(f"bad lock name {name!r}")
        os.makedirs(self.root, exist_ok=True)
        fds: list[int] = []
        try:
            for name, mode in plan:
                fd = os.open(os.path.join(self.root, f"{_LOCK_NAME}-{name}"),
                             os.O_RDWR | os.O_CREAT, 0o666)
                fds.append(fd)
                fcntl.flock(fd, mode)
            yield
        finally:
            for fd in reversed(fds):
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)

    # --- objects ---------------------------------------------------------------------------

    def read(self, keys: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for key in keys:
            try:
                with open(self.path(key), "rb") as f:
                    out.append(f.read())
            except _ABSENT:
                out.append(None)
        return out

    def read_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for key, start, end in requests:
            try:
                fd = os.open(self.path(key), os.O_RDONLY)
            except _ABSENT:
                out.append(None)
                continue
            try:
                got = os.pread(fd, end - start, start)
            finally:
                os.close(fd)
            out.append(got if len(got) == end - start else None)
        return out

    def write(self, items: Mapping[str, bytes]) -> None:
        _parallel(lambda kv: self._write_one(*kv), list(items.items()))

    def _write_one(self, key: str, value: bytes) -> None:
        path = self.path(key)
        tmp = f"{path}{_RESERVED}tmp-{uuid.uuid4().hex[:16]}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        try:
            try:
                fd = os.open(tmp, flags, 0o666)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = os.open(tmp, flags, 0o666)
        except (FileExistsError, NotADirectoryError) as exc:
            raise BackendError(
                f"cannot store key {key!r} under {self.root}: a part of its path is a key "
                "(a key and a key below it cannot both exist on a filesystem)") from exc
        try:
            with open(fd, "wb") as f:
                f.write(value)
                if self.durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, IsADirectoryError):
                raise BackendError(
                    f"cannot store key {key!r} under {self.root}: keys exist below it") from exc
            raise

    def remove(self, keys: Sequence[str]) -> None:
        _parallel(self._remove_one, list(keys))

    def _remove_one(self, key: str) -> None:
        path = self.path(key)
        try:
            os.remove(path)
        except _ABSENT:
            pass
        except PermissionError:  # unlink() of a directory on some platforms
            if not os.path.isdir(path):
                raise

    def scan(self, prefixes: Sequence[str]) -> list[list[str]]:
        return [self._scan_one(p) for p in prefixes]

    def _scan_one(self, prefix: str) -> list[str]:
        """Keys below the directory of ``prefix`` whose last segment may start with its
        leaf (a superset: the caller filters by the exact prefix)."""
        head, _, leaf = prefix.rpartition("/")
        top = self.path(head) if head else self.root
        out: list[str] = []

        def wanted(name: str) -> bool:
            if name.endswith(_RESERVED):  # continuation: the segment goes on below
                part = name[:-len(_RESERVED)]
                return part.startswith(leaf) or leaf.startswith(part)
            return name.startswith(leaf)

        try:
            with os.scandir(top) as it:
                stack = [(head + "/" if head else "", e) for e in it if wanted(e.name)]
        except _ABSENT:
            return out
        while stack:
            base, entry = stack.pop()
            name = entry.name
            cont = name.endswith(_RESERVED)
            if cont:
                name = name[:-len(_RESERVED)]
            elif _RESERVED in name:
                continue  # temp files and the lock
            key = base + name
            if entry.is_dir(follow_symlinks=False):
                try:
                    with os.scandir(entry.path) as it:
                        stack.extend((key if cont else key + "/", e) for e in it)
                except _ABSENT:  # removed meanwhile
                    continue
            elif entry.is_file() and not cont:
                out.append(key)
        return out

    def close(self) -> None:
        """Nothing to release: locks are taken and dropped per call."""


class FsspecBackend(Backend):
    """A store in any fsspec filesystem: ``memory://``, ``file://``, ``gs://``, ``s3://``, ...

    Capabilities depend on the protocol (see the module docstring): ``memory://`` has
    atomic compare-and-set and update; ``file://`` has atomic compare-and-set and process
    locks (``flock``); ``s3://`` and ``gs://`` have atomic compare-and-set (conditional
    requests); other protocols none, and no backend here has an ordered scan.

    Parameters
    ----------
    url:
        Location of the store's root, e.g. ``gs://bucket/path/store``.
    durable:
        ``file://`` only: ``True`` (default) fsyncs every value before it replaces the old
        one, so even a power loss leaves either the old or the new value. ``False`` keeps
        writes atomic against process crashes only, and is much faster.
    create:
        ``False`` refuses a ``file://`` root that does not exist
        (:class:`~diced.errors.StoreNotFoundError`); on every protocol the
        :class:`~diced.store.Store` above decides whether a store may be made here.
    **storage_options:
        Passed to the fsspec filesystem (``token=``, ``endpoint_url=``, ``client_kwargs=``).

    Raises
    ------
    StoreLocationError
        ``file://`` only: the root is a regular file, lies below one, or cannot be read.
    """

    def __init__(self, url: str, *, durable: bool = True, create: bool | None = None,
                 **storage_options: Any) -> None:
        from fsspec.core import url_to_fs
        from fsspec.implementations.local import LocalFileSystem
        from fsspec.implementations.memory import MemoryFileSystem

        if not isinstance(url, str) or "://" not in url:
            raise InvalidArgumentError(f"an fsspec store location must be a URL, got {url!r}")
        try:
            fs, root = url_to_fs(url, **storage_options)
        except ImportError as exc:
            raise BackendUnavailableError(f"cannot open {url!r}: {exc}") from exc
        except ValueError as exc:
            raise InvalidArgumentError(f"cannot open {url!r}: {exc}") from exc
        except Exception as exc:
            raise BackendError(f"cannot open {url!r}: {exc}") from exc
        self.url = url
        self.fs = fs
        self.root = root.rstrip("/") if root != "/" else root
        self._objects: _FsObjects | _LocalObjects
        if isinstance(fs, LocalFileSystem):
            _check_local_root(self.root, create)
            self._objects = _LocalObjects(self.root, durable)
        elif isinstance(fs, MemoryFileSystem):
            self._objects = _MemoryObjects(fs, self.root)
        else:
            self._objects = _FsObjects(fs, self.root)
        self.capabilities = self._objects.capabilities
        self._closed = False

    @contextmanager
    def _io(self, what: str) -> Iterator[None]:
        """Map storage failures to :class:`BackendError`."""
        if self._closed:
            raise BackendError(f"store {self.url} is closed")
        try:
            yield
        except DicedError:
            raise
        except Exception as exc:
            raise BackendError(f"{what} in {self.url} failed: {exc!r}") from exc

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        """Hold the writers' lock (shared) or the read-modify-write lock (exclusive)."""
        stack = ExitStack()
        with self._io("locking"):
            stack.enter_context(self._objects.exclusive() if exclusive
                                else self._objects.shared())
        with stack:
            yield

    # --- core --------------------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        keys = [_check_key(k) for k in keys]
        with self._io("reading"):
            return self._objects.read(keys)

    def get_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        requests = [(_check_key(k), start, end) for k, start, end in requests]
        check_ranges(requests)
        with self._io("reading"):
            return self._objects.read_ranges(requests)

    def stream_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[Arriving]:
        requests = [(_check_key(k), start, end) for k, start, end in requests]
        check_ranges(requests)
        stream = getattr(self._objects, "stream_ranges", None)
        got = stream(requests) if stream is not None else None
        return got if got is not None else super().stream_ranges(requests)

    def set_many(self, items: Mapping[str, bytes]) -> None:
        """Store every pair; each value is replaced whole, but the batch is not atomic."""
        self.apply(items)

    def delete_many(self, keys: Iterable[str]) -> None:
        self.apply(dict.fromkeys(keys))

    def list_keys(self, prefix: str = "", start: str | None = None,
                  stop: str | None = None) -> Iterator[str]:
        listing = _listing_prefix(prefix, start, stop)
        if listing is None or not _prefix_stays_inside(listing):
            return iter(())
        # under the writers' lock: memory:// is a plain dict that writers resize
        with self._locked(exclusive=False), self._io("listing"):
            keys = self._objects.scan([listing])[0]
        return iter(sorted(k for k in keys if k.startswith(prefix)
                           and (start is None or k >= start) and (stop is None or k < stop)))

    def list_prefixes(self, prefixes: Sequence[str]) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in prefixes]
        todo = [(i, p) for i, p in enumerate(prefixes)
                if (lp := _listing_prefix(p, None, None)) is not None and _prefix_stays_inside(lp)]
        if todo:
            with self._locked(exclusive=False), self._io("listing"):
                found = self._objects.scan([p for _, p in todo])
            for (i, p), keys in zip(todo, found, strict=True):
                out[i] = sorted(k for k in keys if k.startswith(p))
        return out

    def is_empty(self) -> bool:
        # memory:// needs the writers' lock (a dict being resized); elsewhere it would make
        # the lock file, and this is asked before a store exists
        lock = isinstance(self._objects, _MemoryObjects)
        with self._locked(exclusive=False) if lock else nullcontext(), self._io("listing"):
            return self._objects.is_empty()

    def close(self) -> None:
        """Mark the backend closed; fsspec's shared filesystem instances stay cached."""
        self._objects.close()
        self._closed = True

    def hold_locks(self, exclusive: Sequence[str] = (), shared: Sequence[str] = ()
                   ) -> AbstractContextManager[None]:
        """Named ``flock`` locks on ``file://`` (see :meth:`Backend.hold_locks`)."""
        if not isinstance(self._objects, _LocalObjects) or not self.capabilities.process_locks:
            return super().hold_locks(exclusive, shared)
        return self._objects.hold(exclusive, shared)

    # --- derived, made faster or atomic ------------------------------------------------------

    def apply(self, changes: Mapping[str, bytes | None]) -> None:
        """Write and delete in one call (``None`` deletes); not atomic as a whole."""
        puts = {_check_key(k): bytes(v) for k, v in changes.items() if v is not None}
        dels = [_check_key(k) for k, v in changes.items() if v is None]
        if not puts and not dels:
            return
        with self._locked(exclusive=False), self._io("writing"):
            self._objects.write(puts)
            self._objects.remove(dels)

    def find_last_many(self, requests: Sequence[tuple[str, str]],
                       accept: Callable[[str], bool]) -> list[tuple[str, bytes] | None]:
        """One listing per distinct prefix (concurrent on gcsfs/s3fs), one bulk read."""
        prefixes = sorted({p for p, _ in requests})
        with self._locked(exclusive=False), self._io("listing"):
            listings = dict(zip(prefixes, self._objects.scan(prefixes), strict=True))
        found: list[str | None] = []
        for prefix, stop in requests:
            hit = None
            for key in sorted((k for k in listings[prefix] if k < stop), reverse=True):
                if accept(key):
                    hit = key
                    break
            found.append(hit)
        wanted = sorted({k for k in found if k is not None})
        values = dict(zip(wanted, self.get_many(wanted), strict=True))
        out: list[tuple[str, bytes] | None] = []
        for key in found:
            value = values.get(key) if key is not None else None
            out.append((key, value) if key is not None and value is not None else None)
        return out

    def update(self, keys: Sequence[str], fn: UpdateFn) -> dict[str, bytes | None]:
        """Read ``keys``, let ``fn`` compute changes, write them; return the changes.

        Atomic where ``capabilities.atomic_update`` says so. On ``file://`` the exclusive
        lock keeps every other diced writer out while ``fn`` runs, but a crash in the
        middle of a multi-key write may leave part of it, so the capability is not claimed.
        """
        keys = [_check_key(k) for k in keys]
        with self._locked(exclusive=True):
            with self._io("reading"):
                current = dict(zip(keys, self._objects.read(keys), strict=True))
            changes = dict(fn(current))  # fn's own errors pass through unchanged
            self.apply(changes)
        return changes

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        """Set ``key`` to ``new`` (``None`` deletes) only if it now equals ``expected``.

        Atomic where ``capabilities.compare_and_set`` says so (``memory://``, ``file://``,
        ``s3://``, ``gs://``).
        """
        _check_key(key)
        if getattr(self._objects, "_conditional", None) is not None:
            with self._io("a conditional write"):
                return self._objects.cas(key, expected, None if new is None else bytes(new))
        with self._locked(exclusive=True):
            with self._io("reading"):
                current = self._objects.read([key])[0]
            if current != expected:
                return False
            self.apply({key: new})
        return True


def _check_local_root(root: str, create: bool | None) -> None:
    """Refuse a ``file://`` root that is a file, lies below one or cannot be read."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        if create is False:
            raise StoreNotFoundError(f"no store at {root}") from None
        return
    except NotADirectoryError as exc:
        raise StoreLocationError(
            f"cannot use {root} as a store: a part of the path is a regular file") from exc
    except OSError as exc:
        raise StoreLocationError(f"cannot use {root} as a store: {exc}") from exc
    import stat

    if not stat.S_ISDIR(st.st_mode):
        raise StoreLocationError(
            f"cannot use {root} as a store: it is a regular file, not a directory")
    try:
        os.listdir(root)
    except OSError as exc:
        raise StoreLocationError(f"cannot use {root} as a store: {exc}") from exc
