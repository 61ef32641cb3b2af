"""fsspec: object stores and filesystems (``memory://``, ``file://``, ``gs://``, ``s3://``, ...).

A key is the object ``<root>/<key>``; its ``/`` separators make directories on a filesystem.
Three object layers sit under one :class:`FsspecBackend`:

* ``file://`` (:class:`~diced.backends._fslocal._LocalObjects`): plain ``os`` calls. Each value is written to a temp
  file in its directory and renamed over the target, so a crash never leaves a half-written
  value. Writers share an ``flock`` on ``<root>/.~diced-lock`` and
  :meth:`FsspecBackend.compare_and_set` / :meth:`FsspecBackend.update` hold it exclusively,
  which makes compare-and-set atomic across the processes of one machine (and on network
  filesystems whose ``flock`` works across clients). :meth:`FsspecBackend.hold_locks` gives
  named ``flock`` locks (files ``<root>/.~diced-lock-<name>``) that versioned writers use
  (:mod:`diced.repo.writers`); the kernel drops them when a process dies. The lock files
  stay (empty; 64 stripes per repo and one per version written) and are never keys.
* ``memory://`` (:class:`~diced.backends._fsobjects._MemoryObjects`): fsspec's process-wide dict; a lock per root makes
  compare-and-set and update atomic (no other process can see the dict).
* anything else (:class:`~diced.backends._fsobjects._FsObjects`): fsspec bulk calls (``cat``/``pipe``/``rm`` run
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

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any

from diced.backends._fslocal import _LocalObjects
from diced.backends._fsobjects import _FsObjects, _MemoryObjects
from diced.backends._fspaths import _check_key, _listing_prefix, _prefix_stays_inside
from diced.backends.arriving import Arriving
from diced.backends.base import Backend, UpdateFn, check_ranges
from diced.errors import (
    BackendError,
    BackendUnavailableError,
    DicedError,
    InvalidArgumentError,
    StoreLocationError,
    StoreNotFoundError,
)

__all__ = ["FsspecBackend"]


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
