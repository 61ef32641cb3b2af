"""State snapshots: a repo's metadata in one object, for cold opens on object stores.

A full load of a repo's metadata (:func:`diced.repo.history.load_state`) costs three rounds
of requests: the document, journal, counter and head; the instance, branch and tag listings;
the records. On object stores each round is a network round trip (20-50 ms on S3 and GCS),
and an open is on the path of every cold read. So every full load on a store without ordered
scans also stores what it read, the *raw records*, as one object ``meta/snap/<repo>``,
stamped with the change journal it read first. A later open reads the journal, the stored
head, the repo document, the id counter and the snapshot in one round:

* journal unchanged since the snapshot and the same document: the state is rebuilt from the
  snapshot, no more requests (a document that differs although the journal does not, a
  change under way or one whose journal entry was never written, makes it a full load; a
  missing or damaged document raises as a full load would);
* journal moved on, within its window: the snapshot's state catches up through the journal
  (one more round, the keys the journal names, as a long-lived handle's refresh does);
* no snapshot, an unreadable one, or the journal out of reach: a full load, which then
  stores a new snapshot.

The keys that decide a version's existence and lock are read as a full load reads them: the
id counter comes with the first round, and the lock keys of the open versions, with the
records of any versions past the newest one the state knows, take one more round when there
are such versions (so a repo whose versions are all locked opens in two rounds, alias
included). A version past the newest one known that has a record (a change under way, or
one cut short before its journal entry, whose ref may have moved) makes it a full load.

The snapshot is derived data: it is never trusted beyond the journal stamp, a damaged or
foreign one is ignored (and replaced), and deleting it only costs the next open a full load.
It is written by full loads and by commits, from the committing handle's state
(:func:`publish_current`: one round of listings and the id counter first
checks that the store holds no instance, branch, tag or version that state lacks, else a
full load writes it), never from a catch-up, and it replaces an older one by
compare-and-set (:func:`publish`); a repo read more than written therefore opens from it.

It also carries the compacted index tables of the newest locked version of each branch
(immutable; used only while the snapshot is current), so a cold read there goes straight to
the chunks. A squash, which drops tables, bumps the journal after the drop, so no snapshot
holding a dropped table is current afterwards.

Its size is bounded whatever the history's length: the records past the last node pack
(fewer than ``PACK_MIN`` locked versions, plus the open ones), the instance and ref records,
the packs while they total :data:`PACKS_MAX` bytes and the tables up to :data:`TABLES_MAX`.

What a snapshot changes: a change whose journal entry is missing (a writer killed between
writing a record and bumping the journal) was seen by every fresh open before; with
snapshots it is seen from the next full load on: the next commit (a new instance, branch,
tag or version; an edited record of an existing one waits for a full load),
:meth:`Repo.refresh(full=True) <diced.repo.repo.Repo.refresh>`, or once the journal has
moved past its window. Long-lived handles were, and are, in the same position.

LMDB (ordered scans, transactions) reads everything in one local transaction and keeps no
snapshot.
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

from diced.backends.base import Backend
from diced.errors import BackendError, ConcurrencyError
from diced.repo import keys as K
from diced.repo.meta import dump_doc

log = logging.getLogger(__name__)

__all__ = ["PACKS_MAX", "TABLES_MAX", "UNJOURNALED_MAX", "Raws", "decode", "encode", "publish",
           "publish_current", "seed_tables", "tip_tables", "used_on", "with_unjournaled"]

_MAGIC = b"DSN1"
#: node packs (immutable) are copied into a snapshot while their total is at most this many
#: bytes; a repo with more history reads its packs in one more round
PACKS_MAX = 64 << 10
#: compacted index tables copied into a snapshot: at most this many bytes in all
TABLES_MAX = 64 << 10
#: version ids past the newest known one that an open from a snapshot reads itself (more:
#: a full load)
UNJOURNALED_MAX = 64
#: first-parent steps from a branch's leaf to its newest locked version
_TIP_STEPS = 4


@dataclass
class Raws:
    """The raw records a full load read (what :func:`diced.repo.history.build_state` needs)."""

    meta: bytes | None
    gen: bytes | None
    vid: bytes | None
    #: pack key -> value (``None``: missing); ``None`` for the whole: not in the snapshot
    packs: dict[str, bytes | None] | None = field(default_factory=dict)
    #: (version id, node record or None, lock key present) past the last pack
    tail: list[tuple[int, bytes | None, bool]] = field(default_factory=list)
    insts: dict[str, bytes] = field(default_factory=dict)
    branches: dict[str, bytes] = field(default_factory=dict)
    tags: dict[str, bytes] = field(default_factory=dict)
    #: compacted index tables (``i/<space>/<vid>/t``, immutable) of the newest locked version
    #: of each branch, so that a cold read there needs no round for its table
    tables: dict[str, bytes] = field(default_factory=dict)


def used_on(backend: Backend) -> bool:
    """Whether opens of ``backend``'s repos use snapshots (stores without ordered scans)."""
    return not backend.capabilities_for("meta/").ordered_scan


def _b(v: bytes | None) -> str | None:
    return None if v is None else base64.b64encode(v).decode("ascii")


def _u(v: Any) -> bytes | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise TypeError(f"not base64 text: {type(v).__name__}")
    return base64.b64decode(v.encode("ascii"), validate=True)


def encode(raws: Raws, n: int) -> bytes:
    """The stored snapshot of ``raws``, read at journal number ``n``."""
    packs = raws.packs
    if packs is not None and sum(len(v or b"") for v in packs.values()) > PACKS_MAX:
        packs = None
    doc = {
        "n": n, "gen": _b(raws.gen), "meta": _b(raws.meta), "vid": _b(raws.vid),
        "packs": None if packs is None else {k: _b(v) for k, v in packs.items()},
        "tail": [[vid, _b(rec), bool(lock)] for vid, rec, lock in raws.tail],
        "inst": {k: _b(v) for k, v in raws.insts.items()},
        "branch": {k: _b(v) for k, v in raws.branches.items()},
        "tag": {k: _b(v) for k, v in raws.tags.items()},
        "tables": {k: _b(v) for k, v in raws.tables.items()},
    }
    return _MAGIC + zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 1)


def decode(raw: bytes | None, repo: str) -> tuple[Raws, int] | None:
    """``(raws, journal number)`` of a stored snapshot; ``None`` when there is none or it
    cannot be read (it is then ignored, and replaced by the next full load)."""
    if raw is None:
        return None
    try:
        if raw[:4] != _MAGIC:
            raise ValueError("unknown format")
        doc = json.loads(zlib.decompress(raw[4:]))
        packs = doc["packs"]
        raws = Raws(
            meta=_u(doc["meta"]), gen=_u(doc["gen"]), vid=_u(doc["vid"]),
            packs=None if packs is None else {str(k): _u(v) for k, v in packs.items()},
            tail=[(int(vid), _u(rec), bool(lock)) for vid, rec, lock in doc["tail"]],
            insts={str(k): _need(_u(v)) for k, v in doc["inst"].items()},
            branches={str(k): _need(_u(v)) for k, v in doc["branch"].items()},
            tags={str(k): _need(_u(v)) for k, v in doc["tag"].items()},
            tables={str(k): _need(_u(v)) for k, v in doc.get("tables", {}).items()},
        )
        return raws, int(doc["n"])
    except (ValueError, KeyError, TypeError, AttributeError, zlib.error) as exc:
        log.warning("repo %s: ignoring an unreadable metadata snapshot (%s); a full load "
                    "replaces it", repo, exc)
        return None


def _need(v: bytes | None) -> bytes:
    if v is None:
        raise ValueError("a record without a value")
    return v


def publish(backend: Backend, repo: str, raws: Raws, n: int,
            seen: bytes | None | bool = False) -> None:
    """Store the snapshot of a full load at journal number ``n``, unless a snapshot of a
    later journal number is stored already. ``seen``: the stored snapshot as read before the
    load (``False``: not read). Best effort: a store that refuses the write (read-only
    credentials, a published chain base) keeps its old snapshot, which opens still check
    against the journal."""
    if raws.gen is None:
        return
    new = encode(raws, n)
    key = K.snapshot_key(repo)
    try:
        if seen is not False and backend.compare_and_set(key, seen, new):
            return  # (replaces what the load saw, even a damaged or foreign snapshot)
        for _ in range(8):
            cur = backend.get(key)
            got = decode(cur, repo) if cur is not None else None
            if got is not None and got[1] > n:
                return  # somebody stored a later one
            if backend.compare_and_set(key, cur, new):
                return
    except (BackendError, ConcurrencyError, OSError) as exc:
        log.debug("repo %s: metadata snapshot not stored (%r)", repo, exc)


def tip_tables(backend: Backend, repo: str, state: Any) -> dict[str, bytes]:
    """The compacted index tables of the newest locked version of each branch, in every key
    space of the instances it holds (with the tables they refer to), up to
    :data:`TABLES_MAX` bytes: one or two rounds of GETs, at a full load."""
    from diced.repo.instances import instance_spaces

    dag = state.dag
    tips: set[int] = set()
    for leaf in dag.refs.values():
        v: int | None = leaf
        for _ in range(_TIP_STEPS):
            node = dag.nodes.get(v) if v is not None else None
            if node is None:
                break
            if node.locked:
                tips.add(node.id)
                break
            v = node.parents[0] if node.parents else None
    keys = []
    for vid in sorted(tips, reverse=True):
        anc = dag.ancestors(vid)
        for rec in state.instances.values():
            if rec.get("created", 0) in anc:
                keys += [K.compact_table_key(sid, vid) for sid in instance_spaces(rec)]
    out: dict[str, bytes] = {}
    total = 0
    for _ in range(2):  # the tables, then the ones "same" tables refer to
        keys = [k for k in dict.fromkeys(keys) if k not in out]
        if not keys:
            break
        more = []
        for key, raw in zip(keys, backend.get_many(keys), strict=True):
            if raw is None or total + len(raw) > TABLES_MAX:
                continue
            out[key] = raw
            total += len(raw)
            same = _table_same(key, raw)
            if same is not None:
                more.append(K.compact_table_key(int(key.split("/")[1], 16), same))
        keys = more
    return out


def _table_same(key: str, raw: bytes) -> int | None:
    """The version whose table a reference table names (``None``: not a reference)."""
    from diced.repo.manifests import _unpack

    try:
        same = _unpack(key, raw).get("same")
        return None if same is None else int(same)
    except Exception:  # noqa: BLE001 - a damaged table: its reader will say so
        return None


def seed_tables(backend: Backend, tables: dict[str, bytes]) -> None:
    """Put a current snapshot's tables into the backend's index caches (a damaged one is
    skipped: its read fetches it and reports the damage)."""
    from diced.repo.manifests import manifests

    man = manifests(backend)
    for key, raw in tables.items():
        try:
            _, sid, vid, _ = key.split("/")
            man._remember(int(sid, 16), man._parse_table(int(sid, 16), int(vid, 16), raw))
        except Exception as exc:  # noqa: BLE001 - only a cache
            log.debug("snapshot table %s not used: %r", key, exc)


def publish_current(backend: Backend, repo: str, state: Any) -> Any:
    """After a commit on a store without ordered scans: store the snapshot of ``state`` (the
    committing handle's, kept current through its own changes and the journal), without
    re-reading every record past the last pack as a full load would. First one round checks
    that the store holds no instance, branch, tag or version that ``state`` lacks (a change
    whose journal entry was never written, or one made meanwhile); if it does, a full load
    stores the snapshot instead and its state is returned (``None`` otherwise)."""
    from diced.repo.history import _counter, _tail_ids, load_state, node_record

    ikeys, bkeys, tkeys = backend.list_prefixes(
        [K.instance_prefix(repo), K.branch_prefix(repo), K.tag_prefix(repo)])
    dag = state.dag
    ids = dag._ids()
    top = int(ids.max()) if ids.size else 0
    raw_vid = backend.get(K.vid_counter_key(repo))
    counter = _counter(repo, raw_vid)
    tags = state.extra.get("tags", {})
    unknown = (set(ikeys) != {K.instance_key(repo, n) for n in state.instances}
               or set(bkeys) != {K.branch_key(repo, n) for n in dag.refs}
               or set(tkeys) != {K.tag_key(repo, n) for n in tags})
    if not unknown and counter > top:  # reserved ids, or versions this state lacks
        unknown = any(v is not None for v in backend.get_many(
            [K.node_key(repo, v) for v in range(top + 1, counter + 1)]))
    if unknown:
        return load_state(backend, repo, snapshot=False)
    meta = state.meta
    packs = meta.get("packs") or []
    pkeys = [K.pack_key(repo, int(p[0]), int(p[1])) for p in packs]
    have = dict(state.extra.get("packs_raw") or {})
    missing = [k for k in pkeys if have.get(k) is None]
    if missing:
        have.update(zip(missing, backend.get_many(missing), strict=True))
        state.extra["packs_raw"] = have
    overrides = {int(v) for v in meta.get("overrides", [])}
    rows = []
    for vid in _tail_ids(meta, top):
        node = dag.nodes.get(vid)
        if node is not None:
            rows.append((vid, node_record(node), bool(node.locked)))
        elif vid in overrides:
            rows.append((vid, None, False))  # a deleted packed version
    raws = Raws(state.meta_raw, state.gen_raw, raw_vid, {k: have.get(k) for k in pkeys},
                  rows, {K.instance_key(repo, n): dump_doc(r) for n, r in state.instances.items()},
                  {K.branch_key(repo, n): str(v).encode() for n, v in dag.refs.items()},
                  {K.tag_key(repo, n): str(v).encode() for n, v in tags.items()})
    raws.tables = tip_tables(backend, repo, state)
    publish(backend, repo, raws, state.gen_n)
    return None


def with_unjournaled(backend: Backend, repo: str, state: Any, raw_vid: bytes | None) -> Any:
    """``state`` (from a snapshot) with what a full load would add although no journal entry
    names it, as the keys that decide it say: open versions whose lock key exists (a commit
    stopped after its lock key). One round, none when there are no open versions, no tag
    versions without their tag ref and the id counter is at the newest version known;
    ``None`` (load fully) when a version past the newest one known has a record (a new
    version, branch or tag whose journal entry is not written: its ref may have moved too),
    the counter is far past it, or an open version or a tag version without its ref has no
    record (the snapshot's full load read it while a failed change had it written; the
    change swapped it back but was stopped before its journal entry)."""
    from diced.repo.history import RepoState, _counter

    dag = state.dag
    ids = dag._ids()
    top = int(ids.max()) if ids.size else 0
    counter = _counter(repo, raw_vid)
    opened = [int(v) for v in ids if not dag._cols.locked[v]]
    tags = state.extra.get("tags", {})
    loose = [v for v, name in dag._cols.tag.items() if v in dag.nodes and tags.get(name) != v]
    newer = list(range(top + 1, counter + 1))
    if len(newer) > UNJOURNALED_MAX:
        return None
    if not opened and not newer and not loose:
        return state
    values = backend.get_many([K.lock_key(repo, v) for v in opened] +
                              [K.node_key(repo, v) for v in opened + loose + newer])
    locks, recs = values[:len(opened)], values[len(opened):]
    if any(v is None for v in recs[:len(opened) + len(loose)]):
        # a version whose record is gone with no journal entry: one read by the full load
        # that stored the snapshot while a change that failed had written it (the change
        # then swapped it back, and was stopped before it could say so in the journal)
        return None
    if any(v is not None for v in recs[len(opened) + len(loose):]):
        # a version the journal does not name (yet): a change under way, or one cut short,
        # whose ref may have moved too; the full load reads every record and ref
        return None
    put = [replace(dag.nodes[v], locked=True)
           for v, lock in zip(opened, locks, strict=True) if lock is not None]
    if not put:
        return state
    return RepoState(state.meta, dag.derive(put, [], None), state.instances, state.gen_raw,
                     state.gen_n, state.head_raw, dict(state.extra), state.meta_raw)
