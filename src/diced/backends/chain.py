"""Chained stores (DVID's "work in progress" setup): local edits over a read-only base.

A :class:`ChainedBackend` shows two backends as one:

* the **base**, a published store (a ``gs://`` or ``s3://`` bucket, a ``file://`` tree or an
  LMDB directory) holding the locked versions everyone shares. It is opened read-only
  (:class:`ReadOnlyBackend`): nothing the chain does can write to it;
* the **local** layer (normally an LMDB directory) that receives every write: new versions,
  branches, instances, chunks, label indexes, metadata changes.

Reads look in the local layer first and fall through to the base for keys it does not hold,
so a new version reads the chunks it did not change from the base. Metadata merges key by
key, the local value overriding the base's (a repo document changed locally is read from the
local layer from then on).

Deleting a key the base holds records a local **whiteout** (``~x/<key>``): the key then
reads as absent and leaves listings, while the base is untouched. This is what lets every
operation of a normal store (deleting an instance or a repo, dropping versions, garbage
collection) work on a chained store too. Which keys the base holds is checked once per
version and key space (the base is immutable, so the answer is cached): deletes at local
versions cost no base request after the first.

Listings merge both layers in key order. Ordered scans (the one-seek version resolution of
LMDB) are kept when both layers have them (an LMDB base under an LMDB local layer); with an
object-store base the chain resolves versions from per-version manifests, as the object
store alone would, and each base manifest is listed once per process.

The base must not change while chains use it: publish a new base (a new location) instead,
and start new chains from it. The chain's configuration is the local key ``~c/chain``
(``{"base": url}``); :func:`diced.backends.layers.open_layers` reads it when a store is
opened, so ``diced.Store(local_path)`` opens the chain again.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager

from diced.backends.arriving import Arriving
from diced.backends.base import Backend, Capabilities, UpdateFn, check_ranges
from diced.errors import ReadOnlyStoreError

__all__ = ["CHAIN_KEY", "ChainedBackend", "ReadOnlyBackend", "chain_config"]

#: local key holding the chain's configuration (JSON, checksummed like every value)
CHAIN_KEY = "~c/chain"
#: every key of the chain's own bookkeeping starts with this (hidden from the chained view)
RESERVED = "~"
#: whiteout of ``key``: ``WHITEOUT + key`` (order-preserving, so listings filter by merging)
WHITEOUT = "~x/"
#: whiteout of a key too long for ``WHITEOUT + key``: ``LONG_WHITEOUT + sha256(key)``
LONG_WHITEOUT = "~h/"
#: the longest key every backend holds (LMDB's limit)
MAX_KEY = 511
#: how many base values of unversioned keys (metadata, lock marks) a chain keeps
_META_CACHE = 4096


def _whiteout(key: str) -> str:
    wo = WHITEOUT + key
    if len(wo) <= MAX_KEY:
        return wo
    return LONG_WHITEOUT + hashlib.sha256(key.encode()).hexdigest()


def _is_long(key: str) -> bool:
    return len(WHITEOUT) + len(key) > MAX_KEY


class ReadOnlyBackend(Backend):
    """A backend whose every write raises :class:`~diced.errors.ReadOnlyStoreError`.

    Reads, listings and capabilities are those of the wrapped backend (``inner``); updates
    that change nothing are allowed (they read only).
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.url = inner.url
        caps = inner.capabilities
        self.capabilities = Capabilities(ordered_scan=caps.ordered_scan,
                                         compare_and_set=False, atomic_update=False)

    def _refuse(self, what: str) -> ReadOnlyStoreError:
        return ReadOnlyStoreError(f"{self.url} is read-only (the published base of a chained "
                                  f"store is never written); refused: {what}")

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.inner.get_many(keys)

    def get_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        return self.inner.get_ranges(requests)

    def stream_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[Arriving]:
        return self.inner.stream_ranges(requests)

    def set_many(self, items: Mapping[str, bytes]) -> None:
        if items:
            raise self._refuse(f"writing {next(iter(items))!r}")

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            raise self._refuse(f"deleting {keys[0]!r}")

    def apply(self, changes: Mapping[str, bytes | None]) -> None:
        if changes:
            raise self._refuse(f"changing {next(iter(changes))!r}")

    def update(self, keys: Sequence[str], fn: UpdateFn) -> dict[str, bytes | None]:
        changes = dict(fn(dict(zip(keys, self.inner.get_many(keys), strict=True))))
        if changes:
            raise self._refuse(f"changing {next(iter(changes))!r}")
        return changes

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        raise self._refuse(f"changing {key!r}")

    def hold_locks(self, exclusive: Sequence[str] = (), shared: Sequence[str] = ()
                   ) -> AbstractContextManager[None]:
        """Refused: nothing is ever written here, so no writer needs the locks."""
        raise self._refuse("taking write locks")

    def list_keys(self, prefix: str = "", start: str | None = None,
                  stop: str | None = None) -> Iterator[str]:
        return self.inner.list_keys(prefix, start, stop)

    def list_prefixes(self, prefixes: Sequence[str]) -> list[list[str]]:
        return self.inner.list_prefixes(prefixes)

    def is_empty(self) -> bool:
        return self.inner.is_empty()

    def capabilities_for(self, prefix: str) -> Capabilities:
        caps = self.inner.capabilities_for(prefix)
        return Capabilities(ordered_scan=caps.ordered_scan)

    def find_last_many(self, requests: Sequence[tuple[str, str]], accept: Callable[[str], bool]
                       ) -> list[tuple[str, bytes] | None]:
        return self.inner.find_last_many(requests, accept)

    def visit_last_many(self, requests: Sequence[tuple[str, str]],
                        accept: Callable[[str], bool],
                        visit: Callable[[int, str, bytes | memoryview], None]) -> None:
        self.inner.visit_last_many(requests, accept, visit)

    def visit_many(self, keys: Sequence[str],
                   visit: Callable[[int, bytes | memoryview], None]) -> None:
        self.inner.visit_many(keys, visit)

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"ReadOnlyBackend({self.inner!r})"


def chain_config(base_url: str) -> bytes:
    """The (unframed) value of :data:`CHAIN_KEY` for a chain over ``base_url``."""
    return json.dumps({"format": 1, "base": base_url, "created": time.time()},
                      sort_keys=True).encode()


class ChainedBackend(Backend):
    """``local`` over a read-only ``base``: reads fall through, writes stay local.

    See the module docstring. ``private`` lists keys never read from the base (settings that
    belong to one layer only, such as the store's per-instance routes).
    """

    def __init__(self, local: Backend, base: Backend, *, private: Iterable[str] = ()) -> None:
        self.local = local
        self.base = base if isinstance(base, ReadOnlyBackend) else ReadOnlyBackend(base)
        self.private = frozenset(private)
        self.url = local.url
        lc, bc = local.capabilities, self.base.capabilities
        self.capabilities = Capabilities(
            ordered_scan=lc.ordered_scan and bc.ordered_scan,
            compare_and_set=lc.atomic_update, atomic_update=lc.atomic_update,
            process_locks=lc.process_locks)
        self._spaces: dict[str, bool] = {}  # "w/<inst>/<vid>/" -> base holds keys there
        self._meta: dict[str, bytes | None] = {}  # base values of unversioned keys
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ChainedBackend(local={self.local!r}, base={self.base.inner!r})"

    # --- which keys the base can hold --------------------------------------------------------

    @staticmethod
    def _base_prefix(key: str) -> str | None:
        """The per-version prefix whose base listing decides whether the base may hold
        ``key`` (``w/<inst>/<vid>/``), or ``None`` for keys checked one by one."""
        if key.startswith("d/") and len(key) > 21 and key[10] == "/":
            return f"w/{key[2:10]}/{key[-9:-1]}/"
        if key.startswith("w/") and len(key) > 21 and key[10] == "/" and key[19] == "/":
            return key[:20]
        return None

    def _base_get(self, keys: Sequence[str], *, probe: bool = False) -> list[bytes | None]:
        """The base's values of ``keys`` (whiteouts aside), asking the base only for what it
        may hold: a versioned key only if the base's index lists its version (one cached
        listing per version and key space), other keys once (cached: the base is
        immutable). Writes at local versions thus cost no base request."""
        out: list[bytes | None] = [None] * len(keys)
        fetch: list[int] = []
        need: dict[str, list[int]] = {}
        cache = self._meta
        for i, k in enumerate(keys):
            if not self._readable(k):
                continue
            p = self._base_prefix(k)
            if p is not None:
                need.setdefault(p, []).append(i)
            elif k in cache:
                out[i] = cache[k]
            else:
                fetch.append(i)
        unknown = [p for p in need if p not in self._spaces]
        if unknown:
            listed = self.base.list_prefixes(unknown)
            with self._lock:
                for p, ks in zip(unknown, listed, strict=True):
                    self._spaces[p] = bool(ks)
        versioned = {i for p, idx in need.items() if self._spaces[p] for i in idx}
        if probe:  # existence only: a version the base wrote may hold it (no chunk download)
            for i in versioned:
                out[i] = b""
        else:
            fetch += sorted(versioned)
        if fetch:
            values = self.base.get_many([keys[i] for i in fetch])
            with self._lock:
                for i, v in zip(fetch, values, strict=True):
                    out[i] = v
                    if i not in versioned:
                        if len(cache) >= _META_CACHE:
                            cache.pop(next(iter(cache)))
                        cache[keys[i]] = v
        return out

    def _base_holds(self, keys: Sequence[str]) -> list[bool]:
        """Whether the base may hold each key (whiteouts aside): exact for unversioned keys,
        and true for every key of a version the base wrote in that key space (a whiteout
        of an absent key is harmless, and deleting a base instance need not download it)."""
        return [v is not None for v in self._base_get(keys, probe=True)]

    def _with_whiteouts(self, changes: Mapping[str, bytes | None]) -> dict[str, bytes | None]:
        """``changes`` plus a whiteout for every deleted key the base holds."""
        out = dict(changes)
        dels = [k for k, v in changes.items() if v is None]
        if dels:
            for k, held in zip(dels, self._base_holds(dels), strict=True):
                if held:
                    out[_whiteout(k)] = b""
        return out

    def _readable(self, key: str) -> bool:
        """Whether ``key`` may be read from the base at all."""
        return key not in self.private and not key.startswith(RESERVED)

    # --- reads -------------------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        keys = list(keys)
        values = self.local.get_many(keys)
        miss = [i for i, v in enumerate(values) if v is None and self._readable(keys[i])]
        if miss:
            hidden = self.local.get_many([_whiteout(keys[i]) for i in miss])
            miss = [i for i, h in zip(miss, hidden, strict=True) if h is None]
        if miss:
            for i, v in zip(miss, self._base_get([keys[i] for i in miss]), strict=True):
                values[i] = v
        return values

    def get_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[bytes | None]:
        """Ranged reads from the layer holding each key: the local one, else (no whiteout)
        the base, whose values are never cached here (packs are large)."""
        requests = list(requests)
        out, miss = self._local_ranges(requests)
        if miss:
            for i, v in zip(miss, self.base.get_ranges([requests[i] for i in miss]), strict=True):
                out[i] = v
        return out

    def stream_ranges(self, requests: Sequence[tuple[str, int, int]]) -> list[Arriving]:
        """:meth:`get_ranges`, the base's ranges streamed (:meth:`Backend.stream_ranges`)."""
        requests = list(requests)
        local, miss = self._local_ranges(requests)
        out = [Arriving.ready(v, end - start)
               for v, (_, start, end) in zip(local, requests, strict=True)]
        if miss:
            for i, a in zip(miss, self.base.stream_ranges([requests[i] for i in miss]),
                            strict=True):
                out[i] = a
        return out

    def _local_ranges(self, requests: list[tuple[str, int, int]]
                      ) -> tuple[list[bytes | None], list[int]]:
        """The local layer's ranges, and the indexes of those to read from the base (absent
        here, readable there, no whiteout)."""
        check_ranges(requests)
        out = self.local.get_ranges(requests)
        miss = [i for i, v in enumerate(out) if v is None and self._readable(requests[i][0])]
        if miss:
            keys = list(dict.fromkeys(requests[i][0] for i in miss))
            hidden = {k for k, h in zip(keys, self.local.get_many([_whiteout(k) for k in keys]),
                                        strict=True) if h is not None}
            miss = [i for i in miss if requests[i][0] not in hidden]
        return out, miss

    def visit_many(self, keys: Sequence[str],
                   visit: Callable[[int, bytes | memoryview], None]) -> None:
        keys = list(keys)
        found = [False] * len(keys)

        def local_hit(i: int, value: bytes | memoryview) -> None:
            found[i] = True
            visit(i, value)

        self.local.visit_many(keys, local_hit)
        miss = [i for i, f in enumerate(found) if not f and self._readable(keys[i])]
        if miss:
            hidden = self.local.get_many([_whiteout(keys[i]) for i in miss])
            miss = [i for i, h in zip(miss, hidden, strict=True) if h is None]
        if miss:
            self.base.visit_many([keys[i] for i in miss], lambda j, v: visit(miss[j], v))

    def _local_keys(self, prefix: str, start: str | None, stop: str | None) -> Iterator[str]:
        for k in self.local.list_keys(prefix, start, stop):
            if not k.startswith(RESERVED):
                yield k

    def _whiteouts_in(self, prefix: str, start: str | None, stop: str | None) -> Iterator[str]:
        n = len(WHITEOUT)
        for k in self.local.list_keys(WHITEOUT + prefix,
                                      None if start is None else WHITEOUT + start,
                                      None if stop is None else WHITEOUT + stop):
            yield k[n:]

    def _filter_base(self, base_keys: Iterable[str], prefix: str, start: str | None,
                     stop: str | None) -> Iterator[str]:
        """Base keys without the whited-out and private ones (merging sorted sequences)."""
        if prefix.startswith(RESERVED) or prefix in self.private:
            return
        wos = self._whiteouts_in(prefix, start, stop)
        wo = next(wos, None)
        for k in base_keys:
            if k in self.private or k.startswith(RESERVED):
                continue
            while wo is not None and wo < k:
                wo = next(wos, None)
            if wo == k:
                continue
            if _is_long(k) and self.local.get(_whiteout(k)) is not None:
                continue  # keys that long are rare: their hashed whiteouts are looked up
            yield k

    def _merged(self, local_keys: Iterable[str], base_keys: Iterable[str], prefix: str,
                start: str | None, stop: str | None) -> Iterator[str]:
        last = None
        for k in heapq.merge(local_keys, self._filter_base(base_keys, prefix, start, stop)):
            if k != last:
                yield k
                last = k

    def _base_lacks(self, prefix: str) -> bool:
        """Whether the base is known to hold nothing under ``prefix`` (a version's index
        prefix ``w/<inst>/<vid>/`` whose listing came back empty before)."""
        if len(prefix) >= 20 and prefix.startswith("w/") and prefix[10] == "/" \
                and prefix[19] == "/":
            return self._spaces.get(prefix[:20]) is False
        return False

    def _note_listing(self, prefix: str, keys: list[str]) -> None:
        if _is_index_prefix(prefix):
            with self._lock:
                self._spaces[prefix] = bool(keys)

    def list_keys(self, prefix: str = "", start: str | None = None,
                  stop: str | None = None) -> Iterator[str]:
        base: Iterable[str]
        if self._base_lacks(prefix):
            base = ()
        elif start is None and stop is None and _is_index_prefix(prefix):
            base = list(self.base.list_keys(prefix))  # one version's manifest: remember
            self._note_listing(prefix, base)         # when it is empty (a local version)
        else:
            base = self.base.list_keys(prefix, start, stop)
        return self._merged(self._local_keys(prefix, start, stop), base, prefix, start, stop)

    def list_prefixes(self, prefixes: Sequence[str]) -> list[list[str]]:
        prefixes = list(prefixes)
        ask = [p for p in prefixes if not self._base_lacks(p)]
        got = dict(zip(ask, self.base.list_prefixes(ask), strict=True)) if ask else {}
        for p, keys in got.items():
            self._note_listing(p, keys)
        return [list(self._merged(self._local_keys(p, None, None), got.get(p, ()), p, None,
                                  None)) for p in prefixes]

    def is_empty(self) -> bool:
        return next(iter(self.list_keys()), None) is None

    def capabilities_for(self, prefix: str) -> Capabilities:
        lc, bc = self.local.capabilities_for(prefix), self.base.capabilities_for(prefix)
        return Capabilities(ordered_scan=lc.ordered_scan and bc.ordered_scan,
                            compare_and_set=self.capabilities.compare_and_set,
                            atomic_update=self.capabilities.atomic_update)

    def _base_accept(self, requests: Sequence[tuple[str, str]], accept: Callable[[str], bool]
                     ) -> Callable[[str], bool]:
        """``accept`` for base keys: whited-out and private keys are skipped."""
        hidden: set[str] = set()
        longs = next(iter(self.local.list_keys(LONG_WHITEOUT)), None) is not None
        if next(iter(self.local.list_keys(WHITEOUT)), None) is not None:
            for prefix, stop in requests:
                hidden.update(self._whiteouts_in(prefix, None, stop))
        if not hidden and not longs and not self.private:
            return accept

        def base_accept(key: str) -> bool:
            if key in hidden or key in self.private or not accept(key):
                return False
            return not (longs and _is_long(key) and self.local.get(_whiteout(key)) is not None)

        return base_accept

    def find_last_many(self, requests: Sequence[tuple[str, str]], accept: Callable[[str], bool]
                       ) -> list[tuple[str, bytes] | None]:
        out: list[tuple[str, bytes] | None] = [None] * len(requests)

        def keep(i: int, key: str, value: bytes | memoryview) -> None:
            out[i] = (key, bytes(value))

        self.visit_last_many(requests, accept, keep)
        return out

    def visit_last_many(self, requests: Sequence[tuple[str, str]],
                        accept: Callable[[str], bool],
                        visit: Callable[[int, str, bytes | memoryview], None]) -> None:
        """Both layers' greatest accepted key per request (they share the request's prefix,
        so the greater key is the later version); values are handed over zero-copy."""
        requests = list(requests)
        local_keys: list[str | None] = [None] * len(requests)

        def seen(i: int, key: str, value: bytes | memoryview) -> None:
            local_keys[i] = key  # keys only: the winners are visited below

        self.local.visit_last_many(requests, accept, seen)
        from_base = [False] * len(requests)

        def base_hit(i: int, key: str, value: bytes | memoryview) -> None:
            lk = local_keys[i]
            if lk is None or key > lk:
                from_base[i] = True
                visit(i, key, value)

        self.base.visit_last_many(requests, self._base_accept(requests, accept), base_hit)
        from_local = [i for i, k in enumerate(local_keys) if k is not None and not from_base[i]]
        if from_local:
            keys: list[str] = [local_keys[i] for i in from_local]  # type: ignore[misc]
            self.local.visit_many(keys, lambda j, v: visit(from_local[j], keys[j], v))

    # --- writes --------------------------------------------------------------------------------

    def _check_keys(self, keys: Iterable[str]) -> None:
        from diced.errors import InvalidArgumentError

        for k in keys:
            if isinstance(k, str) and k.startswith(RESERVED):
                raise InvalidArgumentError(
                    f"keys starting with {RESERVED!r} are reserved by chained stores: {k!r}")

    def set_many(self, items: Mapping[str, bytes]) -> None:
        # a whiteout left under a key written again is harmless: local values win
        self._check_keys(items)
        self.local.set_many(items)

    def delete_many(self, keys: Iterable[str]) -> None:
        self.apply(dict.fromkeys(keys))

    def apply(self, changes: Mapping[str, bytes | None]) -> None:
        self._check_keys(changes)
        if changes:
            self.local.apply(self._with_whiteouts(changes))

    def update(self, keys: Sequence[str], fn: UpdateFn) -> dict[str, bytes | None]:
        keys = list(keys)
        self._check_keys(keys)
        readable = [k for k in keys if self._readable(k)]
        # the base is immutable: read it before the local transaction, not inside it
        base_vals = dict(zip(readable, self._base_get(readable), strict=True))
        wos = {k: _whiteout(k) for k in readable}
        made: dict[str, bytes | None] = {}

        def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
            current: dict[str, bytes | None] = {}
            for k in keys:
                v = cur[k]
                if v is None and k in wos and cur[wos[k]] is None:
                    v = base_vals[k]
                current[k] = v
            made.clear()
            made.update(fn(current))
            out: dict[str, bytes | None] = dict(made)
            for k, v in made.items():
                if v is None and base_vals.get(k) is not None:
                    out[wos[k]] = b""  # the base holds it: hide it
            extra = [k for k, v in made.items() if v is None and k not in base_vals]
            for k, held in zip(extra, self._base_holds(extra), strict=True):
                if held:
                    out[_whiteout(k)] = b""
            return out

        self.local.update(keys + list(dict.fromkeys(wos.values())), body)
        return dict(made)

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        """The base class's swap, run through :meth:`update`: one transaction of the local
        layer that also sees the base's value of ``key``."""
        return super().compare_and_set(key, expected, new)

    def hold_locks(self, exclusive: Sequence[str] = (), shared: Sequence[str] = ()
                   ) -> AbstractContextManager[None]:
        """The local layer's named locks (every write goes there)."""
        return self.local.hold_locks(exclusive, shared)

    def close(self) -> None:
        try:
            self.local.close()
        finally:
            self.base.close()


def _is_index_prefix(prefix: str) -> bool:
    """Whether ``prefix`` is exactly one version's index prefix, ``w/<inst>/<vid>/``."""
    return len(prefix) == 20 and prefix.startswith("w/") and prefix[10] == "/" \
        and prefix[19] == "/"
