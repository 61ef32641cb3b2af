"""The byte key-value interface every storage backend implements.

Three surfaces are kept apart:

* what a backend author implements: :meth:`Backend.get_many`, :meth:`Backend.set_many`,
  :meth:`Backend.delete_many`, :meth:`Backend.list_keys` and :meth:`Backend.close`;
* what the base class derives from that core (single-key calls, prefix listing,
  ``is_empty``, ``find_last_many``, a non-atomic ``update``); a backend overrides these only
  to be faster or to make them atomic, and says so in its :class:`Capabilities`;
* what the rest of diced calls: everything public here.

Keys are ASCII ``str`` (diced builds them from fixed-width hex so that lexicographic order is
meaningful) of at most 511 bytes (LMDB's limit; every backend holds keys that long); values
are ``bytes``. Backends store values as they are given: the CRC32C of every value is added
and checked one layer up, by :class:`diced.backends.checksum.ChecksummedBackend`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Self

from diced.backends.arriving import Arriving
from diced.errors import BackendError, InvalidArgumentError

__all__ = ["Backend", "Capabilities", "UpdateFn", "check_ranges"]

#: ``fn(current) -> changes``: ``current`` maps each requested key to its value (``None`` when
#: absent); the returned mapping gives new values, ``None`` meaning delete.
UpdateFn = Callable[[dict[str, bytes | None]], Mapping[str, bytes | None]]


@dataclass(frozen=True)
class Capabilities:
    """What a backend guarantees beyond the plain interface.

    Attributes
    ----------
    ordered_scan:
        ``list_keys`` and ``find_last_many`` are cheap seeks (a sorted embedded store), so
        version resolution may scan keys instead of reading per-version manifests.
    compare_and_set:
        :meth:`Backend.compare_and_set` is atomic against every other writer.
    atomic_update:
        :meth:`Backend.update` is atomic (one transaction) against every other writer,
        including other processes.
    process_locks:
        :meth:`Backend.hold_locks` gives named shared/exclusive locks between all processes
        using the store, which the operating system drops when a holder dies (``flock``).
    """

    ordered_scan: bool = False
    compare_and_set: bool = False
    atomic_update: bool = False
    process_locks: bool = False


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key or not key.isascii():
        raise InvalidArgumentError(f"backend keys must be non-empty ASCII strings, got {key!r}")
    return key


def check_ranges(requests: Sequence[tuple[str, int, int]]) -> None:
    """Refuse empty or negative ranges of :meth:`Backend.get_ranges`."""
    for key, start, end in requests:
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end):
            raise InvalidArgumentError(f"byte range [{start!r}, {end!r}) of {key!r} is empty "
                                       "or negative")


class Backend(abc.ABC):
    """A byte key-value store with batch calls and sorted listing."""

    #: URL or path the backend was opened from.
    url: str = ""
    capabilities: Capabilities = Capabilities()

    # --- the core a backend implements -------------------------------------------------

    @abc.abstractmethod
    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values of ``keys`` in order, ``None`` for absent keys."""

    @abc.abstractmethod
    def set_many(self, items: Mapping[str, bytes]) -> None:
        """Store every pair. All or nothing where the backend can guarantee it."""

    @abc.abstractmethod
    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove keys; absent keys are ignored."""

    @abc.abstractmethod
    def list_keys(
        self, prefix: str = "", start: str | None = None, stop: str | None = None
    ) -> Iterator[str]:
        """Keys beginning with ``prefix`` and within ``[start, stop)``, in ascending order."""

    def close(self) -> None:
        """Release resources. Further calls are undefined."""

    def capabilities_for(self, prefix: str) -> Capabilities:
        """The capabilities that hold for keys under ``prefix``.

        The same as :attr:`capabilities` except in stores made of several backends
        (:class:`diced.backends.routed.RoutedBackend` places some key spaces elsewhere), where
        e.g. a key space on LMDB keeps ordered scans although another lives on an object store.
        """
        return self.capabilities

    # --- derived defaults ----------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The value of ``key``, ``None`` if absent (one-key :meth:`get_many`)."""
        return self.get_many([key])[0]

    def set(self, key: str, value: bytes) -> None:
        """Store one value (one-key :meth:`set_many`)."""
        self.set_many({key: value})

    def delete(self, key: str) -> None:
        """Remove ``key`` if present (one-key :meth:`delete_many`)."""
        self.delete_many([key])

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a value."""
        return self.get(key) is not None

    def list_prefix(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix``, sorted (:meth:`list_keys` as a list)."""
        return list(self.list_keys(prefix))

    def list_prefixes(self, prefixes: Sequence[str]) -> list[list[str]]:
        """:meth:`list_prefix` of each prefix; object stores list them all concurrently (one
        round of requests instead of one per prefix)."""
        return [self.list_prefix(p) for p in prefixes]

    def is_empty(self) -> bool:
        """Whether the store holds no key at all (backends make this one cheap call)."""
        return next(iter(self.list_keys()), None) is None

    def apply(self, changes: Mapping[str, bytes | None]) -> None:
        """Write and delete in one call (``None`` deletes). Atomic where ``set_many`` is."""
        puts = {k: v for k, v in changes.items() if v is not None}
        dels = [k for k, v in changes.items() if v is None]
        if puts:
            self.set_many(puts)
        if dels:
            self.delete_many(dels)

    def find_last_many(
        self, requests: Sequence[tuple[str, str]], accept: Callable[[str], bool]
    ) -> list[tuple[str, bytes] | None]:
        """For each ``(prefix, stop)``, the greatest accepted key below ``stop`` and its value.

        This is the seek behind version resolution on ordered stores: the keys of one chunk
        are ``prefix + version``, so the greatest accepted key is the nearest ancestor's write.
        """
        found: list[str | None] = []
        for prefix, stop in requests:
            hit = None
            for key in reversed(list(self.list_keys(prefix, stop=stop))):
                if accept(key):
                    hit = key
                    break
            found.append(hit)
        wanted = [k for k in found if k is not None]
        values = dict(zip(wanted, self.get_many(wanted), strict=True))
        out: list[tuple[str, bytes] | None] = []
        for key in found:
            value = values.get(key) if key is not None else None
            out.append((key, value) if key is not None and value is not None else None)
        return out

    def visit_last_many(self, requests: Sequence[tuple[str, str]],
                        accept: Callable[[str], bool],
                        visit: Callable[[int, str, bytes | memoryview], None]) -> None:
        """:meth:`find_last_many` handing each hit to ``visit(request index, key, value)``.

        Backends that can (LMDB) pass a zero-copy view valid only during the call, so a
        reader decodes straight from the store's memory map.
        """
        for i, hit in enumerate(self.find_last_many(requests, accept)):
            if hit is not None:
                visit(i, *hit)

    def visit_many(self, keys: Sequence[str],
                   visit: Callable[[int, bytes | memoryview], None]) -> None:
        """:meth:`get_many` handing each present value to ``visit(index, value)``; the value
        may be a view valid only during the call (decode it there; do not keep it)."""
        for i, value in enumerate(self.get_many(keys)):
            if value is not None:
                visit(i, value)

    def get_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        """Bytes ``[start, end)`` of the value of each ``(key, start, end)``; ``None`` when
        the key is absent or its value is shorter than ``end``. Ranges must not be empty
        (``0 <= start < end``; :class:`~diced.errors.InvalidArgumentError` otherwise).

        This default reads each named value whole (once per key); object stores and
        ``file://`` override it with ranged reads.
        """
        check_ranges(requests)
        keys = list(dict.fromkeys(k for k, _, _ in requests))
        values = dict(zip(keys, self.get_many(keys), strict=True))
        out: list[bytes | None] = []
        for key, start, end in requests:
            v = values[key]
            out.append(None if v is None or len(v) < end else bytes(memoryview(v)[start:end]))
        return out

    def stream_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[Arriving]:
        """:meth:`get_ranges` whose bytes may still be arriving when it returns: one
        :class:`~diced.backends.arriving.Arriving` per request, whose ``wait(n)`` blocks
        until the first ``n`` bytes are in (``None``: the range does not exist). A reader
        then works on the front of a long range while its end is on the wire.

        This default reads every range whole first; object stores with native reads
        (:mod:`diced.backends._native`) stream them.
        """
        return [Arriving.ready(v, end - start)
                for (_, start, end), v in zip(requests, self.get_ranges(requests), strict=True)]

    def update(self, keys: Sequence[str], fn: UpdateFn) -> dict[str, bytes | None]:
        """Read ``keys``, let ``fn`` compute changes, write them; return the changes.

        Atomic only when ``capabilities.atomic_update`` is true; otherwise another writer
        may interleave between the read and the write.
        """
        current = dict(zip(keys, self.get_many(keys), strict=True))
        changes = dict(fn(current))
        if changes:
            self.apply(changes)
        return changes

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        """Set ``key`` to ``new`` (``None`` deletes) only if it currently equals ``expected``.

        Returns whether the swap happened. Atomic only when ``capabilities.compare_and_set``.
        """
        ok = True

        def swap(current: dict[str, bytes | None]) -> dict[str, bytes | None]:
            nonlocal ok
            if current[key] != expected:
                ok = False
                return {}
            return {key: new}

        self.update([key], swap)
        return ok

    def hold_locks(self, exclusive: Sequence[str] = (), shared: Sequence[str] = ()
                   ) -> AbstractContextManager[None]:
        """Hold named locks for the ``with`` block: the ``shared`` names shared, then the
        ``exclusive`` names exclusively, each in sorted order (so two holders never wait
        for each other in a cycle). Names are letters, digits, ``-`` and ``_``.

        Only where ``capabilities.process_locks``; elsewhere it raises
        :class:`~diced.errors.BackendError`.
        """
        raise BackendError(f"{type(self).__name__} ({self.url}) has no process locks")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
