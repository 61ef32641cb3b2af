"""Content-addressed storage of chunk payloads: identical payloads are stored once.

A store made with ``diced.Store(location, dedup=True)`` (recorded in ``meta/dedup``, so every
later opener agrees) talks to its backend through :class:`DedupBackend`, a
:class:`~diced.backends.checksum.ChecksummedBackend` that stores each versioned *value*
(``d/.../<vid>d`` keys: chunks, label index entries, keyvalue values) of at least
:data:`MIN_SIZE` bytes once per distinct content, whatever version or position wrote it:

``d/<inst>/<ckey>/<vid>d``   ``b"\\x01"`` + 16-byte BLAKE2b digest (a reference), or
                             ``b"\\x00"`` + the payload (small values, kept inline)
``x/<digest hex>``           the payload, stored once
``r/<digest hex>/<d key>``   one empty marker per value that refers to the payload
``q/<digest hex>``           "check whether this payload is still referred to" (GC queue)

Everything above the backend (resolution, writers, datatypes) is unchanged: reads return
payloads, writes pass payloads. Reference markers are separate keys instead of counters, so
concurrent writers never lose an increment, and releasing a reference is idempotent. When a
value is overwritten or deleted, its payload is queued in ``q/``; :meth:`DedupBackend.sweep`
(run by ``store.gc()``) deletes queued payloads nothing refers to any more, so its cost grows
with the garbage too.

Costs: a reference costs one more key read per read batch (payloads of a batch are fetched in
one more :meth:`get_many`), a write one digest per value and, on stores without atomic
updates, ordered rounds of requests (marker, payload, value) so that a crash never leaves a
value naming a missing payload.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from diced.backends.base import Backend, UpdateFn
from diced.backends.checksum import ChecksummedBackend
from diced.errors import CorruptDataError

__all__ = ["DEDUP_KEY", "MIN_SIZE", "DedupBackend"]

#: store-wide flag key: present (``b"1"``) in a deduplicating store
DEDUP_KEY = "meta/dedup"
#: values shorter than this stay inline (a reference would not save anything)
MIN_SIZE = 64
_INLINE, _REF = 0, 1
_DIGEST = 16
_KEY_MAX = 511


class _Retry(Exception):
    """The values changed between the pre-read and the transaction of an update."""


def _is_value(key: str) -> bool:
    return key.startswith("d/") and key.endswith("d")


def _digest(payload: bytes | memoryview) -> str:
    return hashlib.blake2b(payload, digest_size=_DIGEST).hexdigest()


def _blob_key(h: str) -> str:
    return f"x/{h}"


def _ref_key(h: str, key: str) -> str:
    return f"r/{h}/{key}"


def _ref_of(stored: bytes | memoryview | None) -> str | None:
    """The digest a stored value refers to (``None``: inline or absent)."""
    if stored is None or len(stored) != 1 + _DIGEST or stored[0] != _REF:
        return None
    return bytes(stored[1:]).hex()


class DedupBackend(ChecksummedBackend):
    """A checksummed backend storing each distinct value payload once (module docstring)."""

    def __init__(self, raw: Backend) -> None:
        super().__init__(raw)

    # --- reads -------------------------------------------------------------------------------

    def _blobs(self, digests: Sequence[str], keys: Sequence[str]) -> list[bytes]:
        """Payloads of ``digests`` (one batched read; a missing one is read again once, in
        case a concurrent collection was restoring it)."""
        bks = [_blob_key(h) for h in digests]
        vals = ChecksummedBackend.get_many(self, bks)
        missing = [i for i, v in enumerate(vals) if v is None]
        if missing:
            time.sleep(0.01)
            again = ChecksummedBackend.get_many(self, [bks[i] for i in missing])
            for i, v in zip(missing, again, strict=True):
                vals[i] = v
        for i, v in enumerate(vals):
            if v is None:
                raise CorruptDataError(
                    f"stored value {keys[i]!r} refers to shared payload {digests[i]} which is "
                    "missing", store_key=keys[i])
        return vals  # type: ignore[return-value]

    @staticmethod
    def _split(key: str, stored: Any) -> tuple[Any, str | None]:
        """``(inline payload view, None)`` or ``(None, digest)`` of a stored value."""
        view = memoryview(stored)
        if len(view) and view[0] == _INLINE:
            return view[1:], None
        h = _ref_of(view)
        if h is None:
            raise CorruptDataError(f"stored value {key!r} is neither inline nor a reference "
                                   "(a store written without deduplication?)", store_key=key)
        return None, h

    def payload(self, key: str, stored: bytes | memoryview) -> bytes | memoryview:
        """The payload of a stored (unframed) value: itself without its tag, or the shared
        payload it refers to. Raises :class:`CorruptDataError` when that is missing."""
        if not _is_value(key):
            return stored
        inline, h = self._split(key, stored)
        return inline if h is None else self._blobs([h], [key])[0]

    def value_sizes(self, keys: Sequence[str]) -> tuple[int, int, list[str]]:
        """``(values, inline bytes, digests)`` of the stored values ``keys``: how many exist,
        the bytes of the payloads kept inline, and the digest each other value refers to (one
        entry per value; sizes from :meth:`payload_bytes`)."""
        values = inline = 0
        refs: list[str] = []
        for key, stored in zip(keys, ChecksummedBackend.get_many(self, keys), strict=True):
            if stored is None:
                continue
            values += 1
            view, h = self._split(key, stored)
            if h is None:
                inline += len(view)
            else:
                refs.append(h)
        return values, inline, refs

    def payload_bytes(self, digests: Sequence[str]) -> dict[str, int]:
        """Bytes of each shared payload (read in batches of 1024)."""
        out: dict[str, int] = {}
        for i in range(0, len(digests), 1024):
            part = list(digests[i:i + 1024])
            for h, blob in zip(part, self._blobs(part, [_blob_key(h) for h in part]), strict=True):
                out[h] = len(blob)
        return out

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        vals = ChecksummedBackend.get_many(self, keys)
        refs: list[tuple[int, str]] = []
        for i, (k, v) in enumerate(zip(keys, vals, strict=True)):
            if v is not None and _is_value(k):
                inline, h = self._split(k, v)
                if h is None:
                    vals[i] = bytes(inline)
                else:
                    refs.append((i, h))
        if refs:
            blobs = self._blobs([h for _, h in refs], [keys[i] for i, _ in refs])
            for (i, _), b in zip(refs, blobs, strict=True):
                vals[i] = b
        return vals

    def find_last_many(self, requests: Sequence[tuple[str, str]], accept: Callable[[str], bool]
                       ) -> list[tuple[str, bytes] | None]:
        hits = ChecksummedBackend.find_last_many(self, requests, accept)
        refs: list[tuple[int, str]] = []
        out: list[tuple[str, bytes] | None] = list(hits)
        for i, hit in enumerate(hits):
            if hit is not None and _is_value(hit[0]):
                inline, h = self._split(hit[0], hit[1])
                if h is None:
                    out[i] = (hit[0], bytes(inline))
                else:
                    refs.append((i, h))
        if refs:
            blobs = self._blobs([h for _, h in refs], [hits[i][0] for i, _ in refs])  # type: ignore[index]
            for (i, _), b in zip(refs, blobs, strict=True):
                out[i] = (hits[i][0], b)  # type: ignore[index]
        return out

    def visit_last_many(self, requests: Sequence[tuple[str, str]],
                        accept: Callable[[str], bool],
                        visit: Callable[[int, str, bytes | memoryview], None]) -> None:
        refs: list[tuple[int, str, str]] = []

        def hit(i: int, key: str, value: Any) -> None:
            if not _is_value(key):
                visit(i, key, value)
                return
            inline, h = self._split(key, value)
            if h is None:
                visit(i, key, inline)
            else:
                refs.append((i, key, h))

        ChecksummedBackend.visit_last_many(self, requests, accept, hit)
        if refs:
            self._visit_blobs([h for *_, h in refs], [k for _, k, _ in refs],
                              lambda j, b: visit(refs[j][0], refs[j][1], b))

    def visit_many(self, keys: Sequence[str],
                   visit: Callable[[int, bytes | memoryview], None]) -> None:
        refs: list[tuple[int, str]] = []

        def hit(i: int, value: Any) -> None:
            if not _is_value(keys[i]):
                visit(i, value)
                return
            inline, h = self._split(keys[i], value)
            if h is None:
                visit(i, inline)
            else:
                refs.append((i, h))

        ChecksummedBackend.visit_many(self, keys, hit)
        if refs:
            self._visit_blobs([h for _, h in refs], [keys[i] for i, _ in refs],
                              lambda j, b: visit(refs[j][0], b))

    def _visit_blobs(self, digests: Sequence[str], keys: Sequence[str],
                     visit: Callable[[int, Any], None]) -> None:
        """Hand the payloads of ``digests`` to ``visit(j, view)`` zero-copy where the
        backend can (falling back to :meth:`_blobs` for any that are missing)."""
        seen = [False] * len(digests)

        def hit(j: int, value: Any) -> None:
            seen[j] = True
            visit(j, value)

        ChecksummedBackend.visit_many(self, [_blob_key(h) for h in digests], hit)
        missing = [j for j, s in enumerate(seen) if not s]
        if missing:
            blobs = self._blobs([digests[j] for j in missing], [keys[j] for j in missing])
            for j, b in zip(missing, blobs, strict=True):
                visit(j, b)

    # --- writes ------------------------------------------------------------------------------

    def _plan(self, changes: Mapping[str, bytes | None], old: Mapping[str, bytes | None]
              ) -> list[dict[str, bytes | None]]:
        """Stored changes for payload-level ``changes``, in the order a non-atomic store must
        apply them: queue marks, reference markers, payloads, values, released markers."""
        queue: dict[str, bytes | None] = {}
        mark: dict[str, bytes | None] = {}
        blobs: dict[str, bytes | None] = {}
        main: dict[str, bytes | None] = {}
        release: dict[str, bytes | None] = {}
        for k, v in changes.items():
            if not _is_value(k):
                main[k] = v
                continue
            new_h = None
            if v is None:
                main[k] = None
            elif len(v) >= MIN_SIZE and len(_ref_key("0" * 2 * _DIGEST, k)) <= _KEY_MAX:
                new_h = _digest(v)
                mark[_ref_key(new_h, k)] = b""
                blobs[_blob_key(new_h)] = bytes(v)
                main[k] = bytes([_REF]) + bytes.fromhex(new_h)
            else:
                main[k] = bytes([_INLINE]) + bytes(v)
            old_h = _ref_of(old.get(k))
            if old_h is not None and old_h != new_h:
                queue[f"q/{old_h}"] = b""
                release[_ref_key(old_h, k)] = None
        return [queue, mark, blobs, main, release]

    def _old(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        ks = [k for k in keys if _is_value(k)]
        return dict(zip(ks, ChecksummedBackend.get_many(self, ks), strict=True)) if ks else {}

    def apply(self, changes: Mapping[str, bytes | None]) -> None:
        phases = self._plan(changes, self._old(changes))
        if self.capabilities.atomic_update:
            merged: dict[str, bytes | None] = {}
            for p in phases:
                merged.update(p)
            ChecksummedBackend.apply(self, merged)
            return
        for p in phases:
            if p:
                ChecksummedBackend.apply(self, p)

    def set_many(self, items: Mapping[str, bytes]) -> None:
        if any(_is_value(k) for k in items):
            self.apply(items)
        else:
            ChecksummedBackend.set_many(self, items)

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if any(_is_value(k) for k in keys):
            self.apply(dict.fromkeys(keys))
        else:
            ChecksummedBackend.delete_many(self, keys)

    def update(self, keys: Sequence[str], fn: UpdateFn) -> dict[str, bytes | None]:
        keys = list(keys)
        if not any(_is_value(k) for k in keys):
            return ChecksummedBackend.update(self, keys, fn)
        if not self.capabilities.atomic_update:  # not atomic anyway: write in safe order
            made = dict(fn(dict(zip(keys, self.get_many(keys), strict=True))))
            if made:
                self.apply(made)
            return made
        for _ in range(16):
            pre = self._old(keys)
            extra = sorted({_blob_key(h) for h in map(_ref_of, pre.values()) if h})
            made: dict[str, bytes | None] = {}

            def body(cur: dict[str, bytes | None],
                     made: dict[str, bytes | None] = made) -> dict[str, bytes | None]:
                user: dict[str, bytes | None] = {}
                for k in keys:
                    v = cur[k]
                    if v is not None and _is_value(k):
                        inline, h = self._split(k, v)
                        if h is not None:
                            if _blob_key(h) not in cur:
                                raise _Retry
                            v = cur[_blob_key(h)]
                            if v is None:
                                raise CorruptDataError(
                                    f"stored value {k!r} refers to missing payload {h}",
                                    store_key=k)
                        else:
                            v = bytes(inline)
                    user[k] = v
                made.clear()
                made.update(fn(user))
                merged: dict[str, bytes | None] = {}
                for p in self._plan(made, {k: cur.get(k) for k in made}):
                    merged.update(p)
                return merged

            try:
                ChecksummedBackend.update(self, keys + extra, body)
            except _Retry:
                continue
            return dict(made)
        from diced.errors import ConcurrencyError

        raise ConcurrencyError("values kept changing under a deduplicating update; retry")

    # --- collection ------------------------------------------------------------------------

    def sweep(self) -> int:
        """Delete queued payloads (``q/``) that no value refers to any more; returns how
        many were deleted. Idempotent; run by ``store.gc()``."""
        n = 0
        for qk in list(self.list_keys("q/")):
            h = qk[2:]
            refs = list(self.list_keys(f"r/{h}/"))
            live = bool(refs)
            if refs and self.capabilities.atomic_update:
                # markers left by an interrupted write on this store are stale only if the
                # value names another payload (writes are atomic here, so none is half-done)
                cur = ChecksummedBackend.get_many(self, [r[len(h) + 3:] for r in refs])
                stale = [r for r, v in zip(refs, cur, strict=True) if _ref_of(v) != h]
                if stale:
                    ChecksummedBackend.delete_many(self, stale)
                live = len(stale) < len(refs)
            if not live:
                blob = ChecksummedBackend.get(self, _blob_key(h))
                ChecksummedBackend.delete_many(self, [_blob_key(h)])
                if blob is not None and next(iter(self.list_keys(f"r/{h}/")), None) is not None:
                    ChecksummedBackend.set_many(self, {_blob_key(h): blob})  # a writer came back
                elif blob is not None:
                    n += 1
            ChecksummedBackend.delete_many(self, [qk])
        return n

    def __repr__(self) -> str:
        return f"DedupBackend({self.raw!r})"
