"""Files under a local directory for :class:`~diced.backends._fsspec.FsspecBackend`
(``file://``): atomic writes by rename, ``flock`` locks, long key segments split into
directories. The layout and its limits are described in :mod:`diced.backends._fsspec`."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from diced.backends._fspaths import _ABSENT, _LOCK_NAME, _RESERVED
from diced.backends.base import Capabilities
from diced.errors import BackendError, InvalidArgumentError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: longest key segment stored as one file name on file:// (longer ones are split)
_SEGMENT_MAX = 200
_IO_THREADS = 32
_INLINE_CALLS = 4


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
