"""Per-version chunk manifests on stores without ordered scans (object stores, file://).

A version's manifest is its ``w/<inst>/<vid>/`` index: what the version itself wrote. A read
at version v needs, per key, the greatest writer id among v's ancestors; this module lists
and caches the manifests of locked versions (they never change) and merges them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from diced.backends.base import Backend
from diced.repo import keys as K

__all__ = ["manifests"]


class _Manifests:
    """Per-backend cache of the ``w/`` index of locked versions (immutable once locked)."""

    def __init__(self, backend: Backend, max_merged: int = 4) -> None:
        self.backend = backend
        self._manifest: dict[tuple[int, int], dict[str, str]] = {}
        self._merged: OrderedDict[tuple[int, frozenset[int]], dict[str, tuple[int, str]]] = OrderedDict()
        self._max_merged = max_merged
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    def manifest(self, inst: int, vid: int, locked: bool) -> dict[str, str]:
        key = (inst, vid)
        if locked and key in self._manifest:
            return self._manifest[key]
        out: dict[str, str] = {}
        for k in self.backend.list_keys(K.index_prefix(inst, vid)):
            _, ckey, mark = K.parse_index_key(k)
            out[ckey] = mark
        if locked:
            with self._lock:
                self._manifest[key] = out
        return out

    def latest(self, inst: int, ancestors: frozenset[int]) -> dict[str, tuple[int, str]]:
        """ckey -> (writer id, mark) over locked ``ancestors``."""
        key = (inst, ancestors)
        with self._lock:
            hit = self._merged.get(key)
            if hit is not None:
                self._merged.move_to_end(key)
                return hit
        with self._load_lock:  # one thread lists and merges, the others wait for it
            with self._lock:
                hit = self._merged.get(key)
            if hit is not None:
                return hit
            out: dict[str, tuple[int, str]] = {}
            self._prefetch(inst, ancestors)
            for vid in sorted(ancestors):  # ascending: later (greater) writers override
                for ckey, mark in self.manifest(inst, vid, locked=True).items():
                    out[ckey] = (vid, mark)
            with self._lock:
                self._merged[key] = out
                while len(self._merged) > self._max_merged:
                    self._merged.popitem(last=False)
        return out

    def _prefetch(self, inst: int, vids: Iterable[int]) -> None:
        """List the missing manifests of locked ``vids`` in one concurrent round."""
        with self._lock:
            missing = sorted(v for v in vids if (inst, v) not in self._manifest)
        if len(missing) < 2:
            return
        listings = self.backend.list_prefixes([K.index_prefix(inst, v) for v in missing])
        for vid, keys in zip(missing, listings, strict=True):
            out: dict[str, str] = {}
            for k in keys:
                _, ckey, mark = K.parse_index_key(k)
                out[ckey] = mark
            with self._lock:
                self._manifest[(inst, vid)] = out

    def forget(self, inst: int) -> None:
        with self._lock:
            for k in [k for k in self._manifest if k[0] == inst]:
                del self._manifest[k]
            for k in [k for k in self._merged if k[0] == inst]:
                del self._merged[k]


_MANIFESTS: dict[int, _Manifests] = {}
_MANIFESTS_LOCK = threading.Lock()


def _manifests(backend: Backend) -> _Manifests:
    with _MANIFESTS_LOCK:
        m = _MANIFESTS.get(id(backend))
        if m is None or m.backend is not backend:
            m = _MANIFESTS[id(backend)] = _Manifests(backend)
        return m



def manifests(backend: Backend) -> _Manifests:
    """The manifest cache of ``backend`` (one per backend object)."""
    with _MANIFESTS_LOCK:
        m = _MANIFESTS.get(id(backend))
        if m is None or m.backend is not backend:
            m = _MANIFESTS[id(backend)] = _Manifests(backend)
        return m
