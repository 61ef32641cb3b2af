"""Upgrading stores written by older diced versions to the current storage format.

Format 1 (diced before checksums) stored values as they were; format 2 ends every value
with its CRC32C (:mod:`diced.backends.checksum`). :func:`migrate_store` rewrites every
value of a format-1 store once, in key order and in batches, recording its progress under
``meta/migrate``, so an interrupted migration resumes where it stopped (run it again). The
format record is rewritten last: until then the store opens only for migration.

No other process may use the store while it is migrated. ``diced migrate STORE`` and
``diced.Store(location, migrate=True)`` run it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from diced.backends.base import Backend
from diced.backends.checksum import TRAILER, frame, verify_value
from diced.errors import CorruptMetadataError
from diced.repo import keys as K
from diced.repo.meta import dump_doc, load_doc

log = logging.getLogger(__name__)

__all__ = ["migrate_store", "stored_format"]

#: values rewritten per backend call (one transaction on LMDB)
BATCH_KEYS = 2048


def _load_framed(raw: bytes, what: str) -> dict | None:
    return load_doc(raw[:-TRAILER], what) if verify_value(raw) else None


def stored_format(backend: Backend, raw: bytes | None = None) -> int:
    """The storage format of the store in ``backend`` (a backend without checksum handling).

    An unfinished migration counts as the format it started from.

    Raises
    ------
    CorruptMetadataError
        The format record is unreadable.
    """
    raw = backend.get(K.FORMAT_KEY) if raw is None else raw
    if raw is None:
        from diced.errors import StoreNotFoundError

        raise StoreNotFoundError(f"no store at {backend.url}")
    progress = backend.get(K.MIGRATE_KEY)
    if progress is not None:
        doc = _load_framed(progress, "migration progress record")
        if doc is None:
            raise CorruptMetadataError(f"{backend.url}: the migration progress record is corrupt")
        return int(doc["from"])
    doc = _load_framed(raw, "store format record")
    if doc is None:
        try:
            doc = load_doc(raw, "store format record")  # format 1: no checksum
        except CorruptMetadataError as exc:
            raise CorruptMetadataError(
                f"the store format record of {backend.url} fails its checksum and is not a "
                "format-1 record either") from exc
        if doc is None or doc.get("format") != 1:
            raise CorruptMetadataError(
                f"the store format record of {backend.url} fails its checksum")
    fmt = doc.get("format")
    if not isinstance(fmt, int):
        raise CorruptMetadataError(f"the store format record of {backend.url} names no format")
    return fmt


def migrate_store(backend: Backend, progress: Callable[[int], None] | None = None) -> int:
    """Upgrade the store in ``backend`` (without checksum handling) to the current format.

    Returns the number of values rewritten (0 when the store is current). ``progress(n)``
    is called after each batch with the count so far.

    Raises
    ------
    StoreFormatError
        The store has a format this diced cannot migrate from.
    """
    from diced.errors import StoreFormatError

    fmt = stored_format(backend)
    if fmt == K.FORMAT_VERSION:
        return 0
    if fmt != 1:
        raise StoreFormatError(f"cannot migrate {backend.url} from storage format {fmt!r}")
    state_raw = backend.get(K.MIGRATE_KEY)
    state = _load_framed(state_raw, "migration progress") if state_raw is not None else None
    if state is None:
        state = {"from": 1, "to": K.FORMAT_VERSION, "done": "", "pending": "",
                 "started": time.time()}
        backend.set(K.MIGRATE_KEY, frame(dump_doc(state)))
    done, pending = state["done"], state["pending"]
    skip = {K.FORMAT_KEY, K.MIGRATE_KEY}
    keys = [k for k in backend.list_keys(start=done or None) if k > done and k not in skip]
    count = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal count
        if not batch:
            return
        # record the batch as pending first: after a crash inside it, its values may be
        # either form, and only those are told apart by their checksum
        state["pending"] = batch[-1]
        backend.set(K.MIGRATE_KEY, frame(dump_doc(state)))
        values = backend.get_many(batch)
        out = {}
        for k, v in zip(batch, values, strict=True):
            if v is None:
                continue
            if k <= pending and verify_value(v):
                continue  # framed before the interruption
            out[k] = frame(v)
        backend.set_many(out)
        count += len(out)
        state["done"], state["pending"] = batch[-1], ""
        backend.set(K.MIGRATE_KEY, frame(dump_doc(state)))
        if progress is not None:
            progress(count)
        batch.clear()

    for key in keys:
        batch.append(key)
        if len(batch) >= BATCH_KEYS:
            flush()
    flush()
    raw = backend.get(K.FORMAT_KEY) or b"{}"
    old = _load_framed(raw, "store format record") or load_doc(raw, "store format record") or {}
    record = {"format": K.FORMAT_VERSION, "created": old.get("created", time.time()),
              "migrated": {"from": 1, "at": time.time()}}
    backend.set(K.FORMAT_KEY, frame(dump_doc(record)))
    backend.delete(K.MIGRATE_KEY)
    log.info("migrated %s to storage format %d (%d values)", backend.url, K.FORMAT_VERSION,
             count)
    return count
