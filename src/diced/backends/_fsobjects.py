"""Objects of fsspec filesystems under :class:`~diced.backends._fsspec.FsspecBackend`: any
filesystem through its bulk calls (:class:`_FsObjects`; object stores, with conditional
writes on ``s3://`` and ``gs://`` and native reads, :mod:`diced.backends._native`) and
fsspec's in-process memory filesystem (:class:`_MemoryObjects`). The layout and its limits
are described in :mod:`diced.backends._fsspec`."""

from __future__ import annotations

import asyncio
import errno
import inspect
import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from diced.backends._fspaths import _ABSENT, _RESERVED
from diced.backends._native import native_reader as _native_reader
from diced.backends.arriving import Arriving
from diced.backends.base import Capabilities
from diced.errors import BackendError

log = logging.getLogger(__name__)

_LIST_CONCURRENCY = 32


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
        got = self._native_ranges("read_ranges", requests)
        if got is not None:
            return got
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
        return self._native_ranges("stream_ranges", requests) if requests else None

    def _native_ranges(self, call: str, requests: Sequence[tuple[str, int, int]]) -> Any:
        """The native reader's ``call`` of ``requests``; ``None`` when there is no native
        reader or it failed (as in :meth:`read`: fsspec from then on)."""
        native = self._native
        if native is None or not native.usable():
            return None
        try:
            return getattr(native, call)(requests)
        except Exception as exc:  # noqa: BLE001 - any native failure: fsspec from now on
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
