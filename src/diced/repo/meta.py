"""Reading and updating store metadata documents (JSON under ``meta/`` keys).

Repo metadata changes use only single-key compare-and-set (:func:`cas_update`: read,
modify, swap if unchanged, retry on a lost race, :class:`ConcurrencyError` after many), so
they lose no update on any backend whose ``compare_and_set`` is atomic. :func:`update_docs`
(several keys at once) remains for store-level records.
Store-level records use :func:`update_docs`: atomic on backends that can (LMDB, memory), a
compare-and-set retry loop where the backend offers only CAS (file://, and s3:// and gs://
through conditional requests; see :mod:`diced.repo.writers`).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from diced.backends.base import Backend
from diced.errors import ConcurrencyError, CorruptMetadataError

__all__ = ["Step", "bump_counter", "cas_update", "dump_doc", "load_doc", "next_counter", "run_steps", "update_docs"]

_CAS_RETRIES = 50
#: attempts of one :func:`cas_update` before giving up with ConcurrencyError
CAS_ATTEMPTS = 200


def cas_update(backend: Backend, key: str,
               fn: Callable[[bytes | None], bytes | None]) -> tuple[bytes | None, bytes | None]:
    """Change one key by compare-and-set: ``fn(current) -> new`` (``None`` deletes), retried
    from a fresh read whenever another writer changed the key in between.

    ``fn`` may raise to abort (nothing is stored) and must be safe to call again; returning
    the current value stores nothing. Returns ``(old, new)``.

    Raises
    ------
    ConcurrencyError
        Lost the race :data:`CAS_ATTEMPTS` times in a row.
    """
    for attempt in range(CAS_ATTEMPTS):
        cur = backend.get(key)
        new = fn(cur)
        if new == cur or backend.compare_and_set(key, cur, new):
            return cur, new
        if attempt >= 3:  # a busy key: back off a little, randomly, so racers spread out
            time.sleep(random.uniform(0, min(0.05, 0.0005 * attempt)))
    raise ConcurrencyError(f"could not update {key!r}: {CAS_ATTEMPTS} attempts lost the race "
                           "to other writers")


def load_doc(raw: bytes | None, what: str) -> dict[str, Any] | None:
    """Decode a metadata document (``None`` stays ``None``).

    Raises
    ------
    CorruptMetadataError
        Not a JSON object; the message names ``what``.
    """
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptMetadataError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CorruptMetadataError(f"{what} is not a JSON object")
    return doc


def dump_doc(doc: dict[str, Any]) -> bytes:
    """Encode a metadata document (compact, sorted keys)."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def update_docs(backend: Backend, keys: Sequence[str],
                fn: Callable[[dict[str, bytes | None]], dict[str, bytes | None]]
                ) -> dict[str, bytes | None]:
    """Apply ``fn`` (current raw values -> changes) to ``keys`` as atomically as possible.

    ``fn`` may raise to abort; nothing is stored then.
    """
    caps = backend.capabilities
    if caps.atomic_update or not caps.compare_and_set:
        return backend.update(list(keys), fn)
    for _ in range(_CAS_RETRIES):
        current = dict(zip(keys, backend.get_many(list(keys)), strict=True))
        changes = fn(dict(current))
        # CAS every changed key against what we read; the first key is the guard
        done: list[str] = []
        ok = True
        for k, v in changes.items():
            if backend.compare_and_set(k, current.get(k), v):
                done.append(k)
            else:
                ok = False
                break
        if ok:
            return changes
        for k in done:  # roll back the keys we already swapped
            backend.compare_and_set(k, changes[k], current.get(k))
    raise ConcurrencyError(f"could not update {keys[0]!r}: too many concurrent writers")


#: one step of :func:`run_steps`: a key and ``fn(current) -> new`` (return ``current``: no change)
Step = tuple[str, Callable[[bytes | None], bytes | None]]


def run_steps(backend: Backend, steps: Sequence[Step],
              undone: Callable[[list[str]], None] | None = None) -> dict[str, bytes | None]:
    """Apply single-key compare-and-set steps in order; returns ``{key: new value}``.

    Each step is :func:`cas_update` of one key, so the change is safe on any backend whose
    ``compare_and_set`` is atomic. A step may raise to abort: the steps already applied are
    swapped back (each only if nobody changed its key since), then ``undone(keys)`` is
    called with the keys they had changed (if any): a reader may have seen those values
    meanwhile, so the caller tells readers to look again. Where the backend has atomic multi-key
    transactions (LMDB, memory) all steps run in one transaction instead, with the same
    checks, all or nothing, and one disk sync.
    """
    out: dict[str, bytes | None] = {}
    if backend.capabilities.atomic_update:
        keys = list(dict.fromkeys(k for k, _ in steps))

        def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
            vals, changes = dict(cur), {}
            for k, fn in steps:
                new = fn(vals[k])
                if new != vals[k]:
                    vals[k] = changes[k] = new
            out.clear()
            out.update({k: vals[k] for k in keys})
            return changes

        backend.update(keys, body)
        return out
    done: list[tuple[str, bytes | None, bytes | None]] = []
    try:
        for k, fn in steps:
            old, new = cas_update(backend, k, fn)
            done.append((k, old, new))
            out[k] = new
    except BaseException:
        for k, old, new in reversed(done):
            if old != new:
                backend.compare_and_set(k, new, old)
        changed = [k for k, old, new in done if old != new]
        if undone is not None and changed:
            undone(changed)
        raise
    return out


def next_counter(backend: Backend, name: str) -> int:
    """Increment and return the store-wide counter ``name`` (instance ids, mutation ids, ...);
    a value is never handed out twice, also across processes."""
    from diced.repo.keys import counter_key

    return bump_counter(backend, counter_key(name))


def bump_counter(backend: Backend, key: str, start: int = 0) -> int:
    """Increment the decimal counter stored at ``key`` (missing: ``start``) by compare-and-set
    and return the new value; no value is returned twice, also across processes."""
    _, new = cas_update(backend, key, lambda cur: str(int(cur or start) + 1).encode())
    assert new is not None
    return int(new)
