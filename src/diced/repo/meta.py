"""Reading and updating store metadata documents (JSON under ``meta/`` keys).

Updates are read-modify-write: atomic on backends that can (LMDB, memory), a
compare-and-set retry loop where the backend offers only CAS (file://, and s3:// and gs://
through conditional requests), and last-writer-wins on a backend with neither (none of
diced's own; versioned data writes are refused there, see :mod:`diced.repo.writers`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from diced.backends.base import Backend
from diced.errors import ConcurrencyError, CorruptMetadataError

__all__ = ["dump_doc", "load_doc", "next_counter", "update_docs"]

_CAS_RETRIES = 50


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


def next_counter(backend: Backend, name: str) -> int:
    """Increment and return the store-wide counter ``name`` (instance ids, mutation ids, ...);
    a value is never handed out twice, also across processes."""
    from diced.repo.keys import counter_key

    key = counter_key(name)
    got: dict[str, int] = {}

    def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
        n = int(cur[key] or b"0") + 1
        got["n"] = n
        return {key: str(n).encode()}

    update_docs(backend, [key], body)
    return got["n"]
