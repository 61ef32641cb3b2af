"""Upgrading stores written by older diced versions to the current storage format.

Format 1 (diced before checksums) stored values as they were; format 2 ends every value
with its CRC32C (:mod:`diced.backends.checksum`); format 3 splits each repo's metadata
document (every node and instance in one JSON value) into per-record keys
(:mod:`diced.repo.history`).

1 -> 2: :func:`migrate_store` rewrites every value once, in key order and in batches,
recording its progress under ``meta/migrate``, so an interrupted migration resumes where it
stopped (run it again). 2 -> 3: each repo document is converted on its own: its node,
instance, ref, counter and journal keys are written first, the converted document last, so
a repo interrupted half-way is simply converted again. The format record is rewritten last:
until then the store opens only for migration.

No other process may use the store while it is migrated. ``diced migrate STORE`` and
``diced.Store(location, migrate=True)`` run it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import EllipsisType

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


def stored_format(backend: Backend, raw: bytes | None = None,
                  progress: bytes | None | EllipsisType = ...) -> int:
    """The storage format of the store in ``backend`` (a backend without checksum handling),
    given its format record ``raw`` and migration progress record ``progress`` when they
    are already read (``...``: not read).

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
    if progress is ...:
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
    if fmt not in (1, 2):
        raise StoreFormatError(f"cannot migrate {backend.url} from storage format {fmt!r}")
    count = _frame_values(backend, progress) if fmt == 1 else 0
    count += _split_repo_docs(backend)
    raw = backend.get(K.FORMAT_KEY) or b"{}"
    old = _load_framed(raw, "store format record") or load_doc(raw, "store format record") or {}
    record = {"format": K.FORMAT_VERSION, "created": old.get("created", time.time()),
              "migrated": {"from": fmt, "at": time.time()}}
    backend.set(K.FORMAT_KEY, frame(dump_doc(record)))
    log.info("migrated %s from storage format %d to %d", backend.url, fmt, K.FORMAT_VERSION)
    return count


def _split_repo_docs(backend: Backend) -> int:
    """Format 2 -> 3: convert every repo document still in repo metadata format 1."""
    from diced.backends.checksum import ChecksummedBackend

    framed = ChecksummedBackend(backend)
    count = 0
    for key in list(framed.list_keys("meta/repo/")):
        doc = load_doc(framed.get(key), key)
        if doc is None or doc.get("format") != 1:
            continue  # converted already (an earlier, interrupted run)
        count += _split_repo(framed, key.rsplit("/", 1)[1], doc)
    return count


def _split_repo(backend: Backend, repo: str, doc: dict) -> int:
    """Write one format-1 repo document as per-record keys; the document goes last."""
    from diced.repo.dag import DAG, MASTER, Node
    from diced.repo.history import maybe_pack, node_record

    try:
        nodes = [Node.from_dict(n) for n in doc["nodes"]]
        instances = dict(doc["instances"])
    except (KeyError, TypeError) as exc:
        raise CorruptMetadataError(f"repo {repo}: metadata lacks {exc}") from exc
    locks = backend.get_many([K.lock_key(repo, n.id) for n in nodes])
    for n, lk in zip(nodes, locks, strict=True):
        n.locked = n.locked or lk is not None
    dag = DAG(nodes)  # no refs: each branch's leaf by the old rule
    out: dict[str, bytes] = {K.node_key(repo, n.id): node_record(n) for n in nodes}
    for name, rec in instances.items():
        out[K.instance_key(repo, name)] = dump_doc(rec)
    for name, leaf in dag.branches().items():
        out[K.branch_key(repo, name or MASTER)] = str(leaf.id).encode()
    for name, node in dag.tags().items():
        out[K.tag_key(repo, name)] = str(node.id).encode()
    top = max([int(doc.get("next_id", 1)) - 1, *(n.id for n in nodes)])
    out[K.vid_counter_key(repo)] = str(top).encode()
    out[K.gen_key(repo)] = dump_doc({"n": 0, "recent": [[0, "*", ""]]})
    for n in nodes:
        if n.locked:
            out[K.lock_key(repo, n.id)] = b"1"
    backend.set_many(out)
    meta = {k: v for k, v in doc.items() if k not in ("nodes", "instances", "next_id")}
    meta.update(format=K.REPO_FORMAT, packs=[], overrides=[])
    backend.set(K.repo_key(repo), dump_doc(meta))
    from diced.repo.history import load_state

    maybe_pack(backend, repo, load_state(backend, repo))
    return len(out) + 1


def _frame_values(backend: Backend, progress: Callable[[int], None] | None) -> int:
    """Format 1 -> 2: append a CRC32C to every value; returns the count rewritten."""
    state_raw = backend.get(K.MIGRATE_KEY)
    state = _load_framed(state_raw, "migration progress") if state_raw is not None else None
    if state is None:
        state = {"from": 1, "to": 2, "done": "", "pending": "",
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
    record = {"format": 2, "created": old.get("created", time.time()),
              "migrated": {"from": 1, "at": time.time()}}
    backend.set(K.FORMAT_KEY, frame(dump_doc(record)))
    backend.delete(K.MIGRATE_KEY)
    log.info("framed every value of %s (%d values)", backend.url, count)
    return count
