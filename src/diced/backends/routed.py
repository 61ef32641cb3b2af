"""Per-instance storage placement: some key spaces of a store live on other backends.

DVID lets each data instance choose its storage engine (label arrays on a fast local
key-value store, immutable grayscale on an object store). diced does the same with a
:class:`RoutedBackend`: the store's own backend (the **main** one) holds the metadata and
every key space without a route; each routed key space (``d/<space>/`` values and
``w/<space>/`` per-version indexes, for every space an instance owns: its own, pyramid
levels, label indexes) is read from and written to its **target** backend.

The routes are one metadata document in the main backend, ``meta/routes``::

    {"format": 1, "spaces": {"<space id>": "<target url>", ...}}

written by :meth:`diced.repo.repo.Repo.create_instance` when ``storage=`` is given (and the
instance record keeps the URL as ``"storage"``). Opening the store reads it and opens each
target (:func:`diced.backends.layers.open_layers`), so a new process sees the placement.
A target location holds only its routed key spaces plus a marker (``meta/format`` and
``meta/placement`` naming the main store), so it is never mistaken for an empty location.

Guarantees: :meth:`RoutedBackend.update` runs inside one transaction of the main backend
(reading and writing the targets' keys from within it), so on an LMDB main store the
lock check and the read-modify-write of chunks stay serialised against every writer that
goes through the store, wherever the chunks live. Listings merge the backends in key
order. Each key space keeps the capabilities of its own backend
(:meth:`~diced.backends.base.Backend.capabilities_for`): label arrays on LMDB keep ordered
scans while a grayscale array on ``s3://`` resolves versions from manifests.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from diced.backends.arriving import Arriving
from diced.backends.base import Backend, Capabilities, UpdateFn

__all__ = ["ROUTES_KEY", "RoutedBackend", "space_prefixes"]

#: main-store key of the routes document
ROUTES_KEY = "meta/routes"
#: target-store key naming the main store it holds key spaces of
PLACEMENT_KEY = "meta/placement"
_PLEN = 11  # len("d/0000000a/")


def space_prefixes(space: int) -> tuple[str, str]:
    """The key prefixes a routed key space covers (its values and its per-version index)."""
    return f"d/{space:08x}/", f"w/{space:08x}/"


class RoutedBackend(Backend):
    """``main`` plus key spaces placed on other backends (see module docstring).

    Parameters
    ----------
    main:
        The store's own backend (metadata and unrouted spaces).
    routes:
        ``{space id: backend}``; more can be added with :meth:`add_route`.
    """

    def __init__(self, main: Backend, routes: Mapping[int, Backend] | None = None) -> None:
        self.main = main
        self.url = main.url
        self._routes: dict[str, Backend] = {}
        self._targets: list[Backend] = []
        self._lock = threading.Lock()
        self.capabilities = main.capabilities
        for space, backend in (routes or {}).items():
            self.add_route(space, backend)

    def __repr__(self) -> str:
        return f"RoutedBackend({self.main!r}, {len(self._routes) // 2} routed spaces)"

    @property
    def routes(self) -> dict[int, Backend]:
        """``{space id: target backend}``."""
        return {int(p[2:10], 16): b for p, b in self._routes.items() if p.startswith("d/")}

    def add_route(self, space: int, backend: Backend) -> None:
        """Route key space ``space`` to ``backend`` from now on (in this object)."""
        with self._lock:
            for p in space_prefixes(space):
                self._routes[p] = backend
            if all(b is not backend for b in self._targets):
                self._targets.append(backend)
            caps = [self.main.capabilities, *(b.capabilities for b in self._targets)]
            # metadata lives on main: CAS and atomic updates are main's (see update());
            # ordered scans hold for the whole store only if every backend has them
            self.capabilities = Capabilities(
                ordered_scan=all(c.ordered_scan for c in caps),
                compare_and_set=self.main.capabilities.compare_and_set,
                atomic_update=self.main.capabilities.atomic_update,
                process_locks=self.main.capabilities.process_locks)

    def remove_route(self, space: int) -> None:
        """Stop routing key space ``space`` (its instance is gone); the target stays open
        until :meth:`close`."""
        with self._lock:
            for p in space_prefixes(space):
                self._routes.pop(p, None)

    def _pick(self, key: str) -> Backend:
        if len(key) >= _PLEN and key[1] == "/" and key[0] in "dw":
            return self._routes.get(key[:_PLEN], self.main)
        return self.main

    def _group(self, keys: Sequence[str]) -> list[tuple[Backend, list[int]]]:
        groups: dict[int, tuple[Backend, list[int]]] = {}
        for i, k in enumerate(keys):
            b = self._pick(k)
            groups.setdefault(id(b), (b, []))[1].append(i)
        return list(groups.values())

    # --- reads -------------------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        keys = list(keys)
        out: list[bytes | None] = [None] * len(keys)
        for b, idx in self._group(keys):
            for i, v in zip(idx, b.get_many([keys[i] for i in idx]), strict=True):
                out[i] = v
        return out

    def get_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        requests = list(requests)
        out: list[bytes | None] = [None] * len(requests)
        for b, idx in self._group([k for k, _, _ in requests]):
            for i, v in zip(idx, b.get_ranges([requests[i] for i in idx]), strict=True):
                out[i] = v
        return out

    def stream_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[Arriving]:
        requests = list(requests)
        out: list[Arriving | None] = [None] * len(requests)
        for b, idx in self._group([k for k, _, _ in requests]):
            for i, v in zip(idx, b.stream_ranges([requests[i] for i in idx]), strict=True):
                out[i] = v
        return out  # type: ignore[return-value]

    def visit_many(self, keys: Sequence[str],
                   visit: Callable[[int, bytes | memoryview], None]) -> None:
        keys = list(keys)
        for b, idx in self._group(keys):
            b.visit_many([keys[i] for i in idx], lambda j, v, idx=idx: visit(idx[j], v))

    def find_last_many(self, requests: Sequence[tuple[str, str]], accept: Callable[[str], bool]
                       ) -> list[tuple[str, bytes] | None]:
        requests = list(requests)
        out: list[tuple[str, bytes] | None] = [None] * len(requests)
        for b, idx in self._group([p for p, _ in requests]):
            for i, hit in zip(idx, b.find_last_many([requests[i] for i in idx], accept),
                              strict=True):
                out[i] = hit
        return out

    def visit_last_many(self, requests: Sequence[tuple[str, str]],
                        accept: Callable[[str], bool],
                        visit: Callable[[int, str, bytes | memoryview], None]) -> None:
        requests = list(requests)
        for b, idx in self._group([p for p, _ in requests]):
            b.visit_last_many([requests[i] for i in idx], accept,
                              lambda j, k, v, idx=idx: visit(idx[j], k, v))

    def _listings(self, prefix: str, start: str | None, stop: str | None
                  ) -> list[Iterator[str]]:
        """Sorted, disjoint key streams whose merge is the listing of ``prefix``."""
        if len(prefix) >= _PLEN:
            return [self._pick(prefix).list_keys(prefix, start, stop)]
        routed = sorted(p for p in self._routes if p.startswith(prefix))
        streams: list[Iterator[str]] = [
            self._routes[p].list_keys(p, start, stop) for p in routed]
        if routed:
            cut = set(routed)
            streams.append(k for k in self.main.list_keys(prefix, start, stop)
                           if k[:_PLEN] not in cut)
        else:
            streams.append(self.main.list_keys(prefix, start, stop))
        return streams

    def list_keys(self, prefix: str = "", start: str | None = None,
                  stop: str | None = None) -> Iterator[str]:
        streams = self._listings(prefix, start, stop)
        return streams[0] if len(streams) == 1 else heapq.merge(*streams)

    def list_prefixes(self, prefixes: Sequence[str]) -> list[list[str]]:
        prefixes = list(prefixes)
        out: list[list[str]] = [[] for _ in prefixes]
        simple = [i for i, p in enumerate(prefixes) if len(p) >= _PLEN]
        for b, idx in self._group([prefixes[i] for i in simple]):
            for j, keys in zip(idx, b.list_prefixes([prefixes[simple[j]] for j in idx]),
                               strict=True):
                out[simple[j]] = keys
        for i, p in enumerate(prefixes):
            if len(p) < _PLEN:
                out[i] = list(self.list_keys(p))
        return out

    def is_empty(self) -> bool:
        return self.main.is_empty() and all(
            next(iter(b.list_keys(p)), None) is None for p, b in self._routes.items())

    def capabilities_for(self, prefix: str) -> Capabilities:
        if len(prefix) >= _PLEN:
            b = self._pick(prefix)
            if b is not self.main:
                caps = b.capabilities_for(prefix)
                return Capabilities(ordered_scan=caps.ordered_scan,
                                    compare_and_set=self.capabilities.compare_and_set,
                                    atomic_update=self.capabilities.atomic_update)
            return self.main.capabilities_for(prefix)
        return self.capabilities

    # --- writes --------------------------------------------------------------------------------

    def set_many(self, items: Mapping[str, bytes]) -> None:
        keys = list(items)
        for b, idx in self._group(keys):
            b.set_many({keys[i]: items[keys[i]] for i in idx})

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for b, idx in self._group(keys):
            b.delete_many([keys[i] for i in idx])

    def apply(self, changes: Mapping[str, bytes | None]) -> None:
        keys = list(changes)
        groups = self._group(keys)
        # targets first (data before the metadata that names it), main last
        groups.sort(key=lambda g: g[0] is self.main)
        for b, idx in groups:
            b.apply({keys[i]: changes[keys[i]] for i in idx})

    def update(self, keys: Sequence[str], fn: UpdateFn) -> dict[str, bytes | None]:
        """Read-modify-write of ``keys`` wherever they live, inside one transaction of the
        main backend: atomic against every writer that goes through this store when the
        main backend's updates are atomic (LMDB)."""
        keys = list(keys)
        main_keys = [k for k in keys if self._pick(k) is self.main]
        other = [k for k in keys if self._pick(k) is not self.main]
        if not other:
            return self.main.update(main_keys, fn)
        made: dict[str, bytes | None] = {}

        def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
            current = dict(cur)
            current.update(zip(other, self.get_many(other), strict=True))
            made.clear()
            made.update(fn({k: current[k] for k in keys}))
            moved = {k: v for k, v in made.items() if self._pick(k) is not self.main}
            if moved:
                _apply_ordered(self, moved)
            return {k: v for k, v in made.items() if self._pick(k) is self.main}

        self.main.update(main_keys, body)
        return dict(made)

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        return self._pick(key).compare_and_set(key, expected, new)

    def hold_locks(self, exclusive: Sequence[str] = (), shared: Sequence[str] = ()
                   ) -> AbstractContextManager[None]:
        """The main backend's named locks (the writers' protocol runs on main's terms)."""
        return self.main.hold_locks(exclusive, shared)

    def close(self) -> None:
        errors: list[BaseException] = []
        for b in [*self._targets, self.main]:
            try:
                b.close()
            except Exception as exc:  # noqa: BLE001 - close the others, then re-raise
                errors.append(exc)
        if errors:
            raise errors[0]


def _apply_ordered(routed: RoutedBackend, changes: Mapping[str, bytes | None]) -> None:
    """Values before index entries, index removals before value removals: an interrupted
    write never leaves an index entry without its value."""

    def pick(prefix: str, put: bool) -> dict[str, Any]:
        return {k: v for k, v in changes.items() if k.startswith(prefix) and (v is not None) == put}

    for part in (pick("d/", True), pick("w/", True)):
        if part:
            routed.set_many(part)
    for part in (pick("w/", False), pick("d/", False)):
        if part:
            routed.delete_many(list(part))
