"""Repo metadata as per-record keys: loading, change journal, node packs.

Layout (keys in :mod:`diced.repo.keys`): the repo document ``meta/repo/<uuid>`` (alias,
description, log, properties, the list of node packs and of overridden node ids), one record
per version ``meta/node/<uuid>/<id>``, one per instance, a ref per branch and per tag, the
version id counter ``meta/vid/<uuid>`` and the change journal ``meta/gen/<uuid>``.

Every change is a compare-and-set of one key (:func:`diced.repo.meta.cas_update`) or a plain
write of a key nobody else can be writing (a node record at a freshly reserved id). Which
key is authoritative when a multi-key change is interrupted:

* a node exists when its record exists (a reserved id without a record is not a node yet);
* a node is locked when its lock key ``lock/<repo>/<id>`` exists (the record's ``locked``
  flag follows; a record saying open with the lock key present reads as locked);
* a branch's leaf is its ref; a node whose ref move failed or never happened is an
  ordinary node off the branch head (a branch without any ref falls back to its newest
  childless node);
* a tag exists when its tag ref exists.

A change that fails part-way (a lost race: a ref moved, a name taken) swaps back the keys it
wrote, then names them in the journal, since a full load in between may have read them. A
writer that finds a branch ref naming a version its handle lacks (a change under way whose
journal entry is not written yet) reads everything again before deciding whether the parent
already has a child.

The journal (``meta/gen``) counts changes and names the latest ones, so a handle catches up
with one read when nothing changed and a few when something did. It is bumped after each
change: a crash in between leaves long-lived handles stale until the next change or
:meth:`Repo.refresh(full=True) <diced.repo.repo.Repo.refresh>`. A fresh open reads the records
themselves on LMDB; on object stores and ``file://`` it starts from the state snapshot of the
last full load (the last commit, usually) and catches up through the journal, so such a
change is seen from the next full load on (:mod:`diced.repo.snapshot`).

Packs: when enough locked nodes accumulate past the last pack, the committer writes them as
one immutable binary pack (columns: ids, UUIDs, first parents, branches, times; notes and
logs as JSON decoded on first use) and appends it to the repo document, so opening a repo of
10,000 versions reads a few packs plus the records newer than the last pack. A packed node
whose record changes later (a note edited through the HTTP API, a deletion) is listed in
the document's ``overrides`` first, then its record is changed; overrides beat packs.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diced.backends.base import Backend
from diced.errors import CorruptMetadataError, RepoNotFoundError
from diced.repo import keys as K
from diced.repo import snapshot as S
from diced.repo.dag import DAG, MASTER, Node
from diced.repo.meta import cas_update, dump_doc, load_doc
from diced.repo.nodes import Columns, TextSource

log = logging.getLogger(__name__)

__all__ = ["PACK_MIN", "RepoState", "build_state", "catch_up", "decode_pack", "encode_pack",
           "journal", "journal_fn", "load_state", "maybe_pack"]

#: locked nodes past the last pack that make the next commit write a pack
PACK_MIN = 256
#: changes the journal remembers (a handle further behind reloads everything)
JOURNAL = 64
_MAGIC = b"DPK2"


@dataclass
class RepoState:
    """What a repo handle knows of its repo's metadata."""

    meta: dict[str, Any]
    dag: DAG
    instances: dict[str, dict[str, Any]]
    gen_raw: bytes | None = None
    gen_n: int = 0
    head_raw: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    meta_raw: bytes | None = None

    @property
    def packed_to(self) -> int:
        """The last version id covered by a pack (0: none)."""
        packs = self.meta.get("packs") or []
        return int(packs[-1][1]) if packs else 0


# --- records ---------------------------------------------------------------------------------

def node_record(node: Node) -> bytes:
    """The stored record of a node."""
    return dump_doc(node.to_dict())


def parse_node(raw: bytes, what: str) -> Node | None:
    """A node from its record (``None``: a deletion marker)."""
    doc = load_doc(raw, what)
    assert doc is not None
    if doc.get("deleted"):
        return None
    return Node.from_dict(doc)


def journal(backend: Backend, repo: str, *entries: tuple[str, Any]) -> tuple[bytes, int, int]:
    """Record changes in the repo's journal: ``("n", vid)`` node, ``("i", name)`` instance,
    ``("b", name)`` branch ref, ``("t", name)`` tag ref, ``("r", "")`` repo document,
    ``("*", "")`` anything (readers reload everything). Returns ``(raw, old n, new n)``."""
    got: dict[str, Any] = {}
    cas_update(backend, K.gen_key(repo), journal_fn(repo, entries, got))
    return got["raw"], got["old"], got["new"]


def journal_fn(repo: str, entries: Any, got: dict[str, Any]) -> Any:
    """The journal update of :func:`journal` as a :func:`~diced.repo.meta.run_steps` step
    function; ``got`` receives ``raw``, ``old`` and ``new``."""
    def fn(cur: bytes | None) -> bytes:
        doc = load_doc(cur, f"change journal of repo {repo}") or {"n": 0, "recent": []}
        n = int(doc.get("n", 0))
        recent = list(doc.get("recent", []))
        got["old"] = n
        for kind, name in entries:
            n += 1
            recent.append([n, kind, name])
        got["new"] = n
        got["raw"] = dump_doc({"n": n, "recent": recent[-JOURNAL:]})
        return got["raw"]

    return fn


# --- packs -----------------------------------------------------------------------------------

def encode_pack(nodes: list[Node]) -> bytes:
    """One immutable pack of (locked) node records, ids ascending."""
    nodes = sorted(nodes, key=lambda n: n.id)
    bnames: dict[str, int] = {}
    special, tags, extra = {}, {}, {}
    uu = bytearray()
    for n in nodes:
        if len(n.uuid) == 32 and all(c in "0123456789abcdef" for c in n.uuid):
            uu += bytes.fromhex(n.uuid)
        else:
            uu += bytes(16)
            special[str(n.id)] = n.uuid
        if n.tag is not None:
            tags[str(n.id)] = n.tag
        if len(n.parents) > 1:
            extra[str(n.id)] = n.parents[1:]
        bnames.setdefault(n.branch, len(bnames))
    header = dump_doc({"v": 1, "n": len(nodes), "bnames": list(bnames), "special": special,
                       "tags": tags, "extra": extra})
    cols = [
        np.array([n.id for n in nodes], np.int64).tobytes(),
        bytes(uu),
        np.array([n.parents[0] if n.parents else -1 for n in nodes], np.int64).tobytes(),
        np.array([bnames[n.branch] for n in nodes], np.int32).tobytes(),
        np.array([n.created for n in nodes], np.float64).tobytes(),
        np.array([n.updated for n in nodes], np.float64).tobytes(),
    ]
    texts = [json.dumps([n.note, n.log], separators=(",", ":")).encode() for n in nodes]
    ends = np.cumsum([len(t) for t in texts], dtype=np.int64) if texts else np.zeros(0, np.int64)
    cols += [ends.tobytes(), b"".join(texts)]  # each node's text decodes on its own
    return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *cols])


def decode_pack(raw: bytes, cols: Columns, what: str) -> list[int]:
    """Load a pack into ``cols``; returns the ids it holds.

    Raises
    ------
    CorruptMetadataError
        Not a pack, or its columns do not fit its header.
    """
    try:
        if raw[:4] != _MAGIC:
            raise ValueError("bad magic")
        (hlen,) = struct.unpack_from("<I", raw, 4)
        head = json.loads(raw[8:8 + hlen])
        n = int(head["n"])
        off = 8 + hlen
        sizes = [8 * n, 16 * n, 8 * n, 4 * n, 8 * n, 8 * n, 8 * n]
        parts = []
        for s in sizes:
            if off + s > len(raw):
                raise ValueError("truncated")
            parts.append(raw[off:off + s])
            off += s
        ids = np.frombuffer(parts[0], np.int64)
        uu = np.frombuffer(parts[1], np.uint8).reshape(n, 16)
        fp = np.frombuffer(parts[2], np.int64)
        br = np.frombuffer(parts[3], np.int32)
        created = np.frombuffer(parts[4], np.float64)
        updated = np.frombuffer(parts[5], np.float64)
        ends = np.frombuffer(parts[6], np.int64)
        text = raw[off:]
        if n and (ends[-1] != len(text) or (np.diff(ends) < 0).any()):
            raise ValueError("bad text offsets")
        if n and (ids.min() < 0 or (fp >= ids).any() or br.max() >= len(head["bnames"])):
            raise ValueError("inconsistent columns")
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise CorruptMetadataError(f"{what} is not a valid node pack: {exc}") from exc
    if not n:
        return []
    cols.reserve(int(ids.max()) + 1)
    remap = np.array([cols.branch_id(b) for b in head["bnames"]], np.int32)
    cols.exists[ids] = True
    cols.fp[ids] = fp
    cols.uuid16[ids] = uu
    cols.branch[ids] = remap[br]
    cols.locked[ids] = True
    cols.created[ids] = created
    cols.updated[ids] = updated
    cols.pack_of[ids] = len(cols.packs)
    cols.pack_pos[ids] = np.arange(n, dtype=np.int32)
    cols.packs.append(TextSource(bytes(text), ends))
    for k, v in head["special"].items():
        cols.special[int(k)] = v
    for k, v in head["tags"].items():
        cols.tag[int(k)] = v
    for k, v in head["extra"].items():
        cols.extra[int(k)] = tuple(int(p) for p in v)
    return ids.tolist()


# --- loading -----------------------------------------------------------------------------------

def _check_meta(meta: dict[str, Any] | None, repo: str) -> dict[str, Any]:
    if meta is None:
        raise RepoNotFoundError(f"repo {repo} does not exist (deleted?)")
    fmt = meta.get("format")
    if fmt == 1:
        raise CorruptMetadataError(
            f"repo {repo} has metadata format 1 (one document) in a store of format "
            f"{K.FORMAT_VERSION}; was it copied from an older store? (`diced migrate` "
            "converts whole stores)")
    if fmt != K.REPO_FORMAT:
        raise CorruptMetadataError(f"repo {repo}: metadata format {fmt!r} is not {K.REPO_FORMAT}")
    return meta


def _refs(keys: list[str], values: list[bytes | None], what: str) -> dict[str, int]:
    out = {}
    for k, v in zip(keys, values, strict=True):
        if v is None:
            continue
        try:
            out[K.name_of_key(k)] = int(v)
        except ValueError as exc:
            raise CorruptMetadataError(f"{what} {k!r} is not a version id: {v!r}") from exc
    return out


def load_state(backend: Backend, repo: str, *, snapshot: bool = True) -> RepoState:
    """Read a repo's metadata.

    A full load is three rounds of requests whatever the history's length (document +
    journal + counter + head; the instance/branch/tag listings; packs and the records past
    the last pack, with their lock keys, and the refs). On stores without ordered scans an
    open first reads the journal, the head, the document, the id counter and the state
    snapshot in one round and is done there when the snapshot is current and every version
    locked (:mod:`diced.repo.snapshot`); every full load there stores a new snapshot. ``snapshot=False`` always loads fully (``refresh(full=True)``,
    commits)."""
    snaps = S.used_on(backend)
    seen: bytes | None | bool = False
    if snaps and snapshot:
        gen_raw, head_raw, seen, raw_meta, raw_vid = backend.get_many(
            [K.gen_key(repo), K.head_key(repo), K.snapshot_key(repo), K.repo_key(repo),
             K.vid_counter_key(repo)])
        _check_meta(load_doc(raw_meta, f"repo {repo}"), repo)  # gone or damaged: say so
        state = _from_snapshot(backend, repo, seen, gen_raw, head_raw, raw_meta)
        if state is not None:
            state = S.with_unjournaled(backend, repo, state, raw_vid)
        if state is not None:
            return state
    else:
        raw_meta, gen_raw, raw_vid, head_raw = backend.get_many(
            [K.repo_key(repo), K.gen_key(repo), K.vid_counter_key(repo), K.head_key(repo)])
    raws = _read_records(backend, repo, raw_meta, gen_raw, raw_vid)
    state = build_state(repo, raws, head_raw)
    if snaps:
        raws.tables = S.tip_tables(backend, repo, state)
        S.publish(backend, repo, raws, state.gen_n, seen)
    return state


def _from_snapshot(backend: Backend, repo: str, raw: bytes | None, gen_raw: bytes | None,
                   head_raw: bytes | None, raw_meta: bytes | None) -> RepoState | None:
    """The state from the stored snapshot ``raw``, caught up to the journal ``gen_raw``;
    ``None`` when a full load is needed (no usable snapshot, the journal out of reach, or a
    repo document that differs from the snapshot's although the journal does not: a change
    under way, or one whose journal entry was never written)."""
    if raw is None or gen_raw is None:
        return None
    got = S.decode(raw, repo)
    if got is None:
        return None
    raws, _ = got
    try:
        if raws.packs is None:  # a long history: the packs are read separately
            meta = _check_meta(load_doc(raws.meta, f"repo {repo}"), repo)
            pkeys = [K.pack_key(repo, int(p[0]), int(p[1])) for p in meta.get("packs") or []]
            raws.packs = dict(zip(pkeys, backend.get_many(pkeys), strict=True))
        state = build_state(repo, raws, head_raw)
    except CorruptMetadataError as exc:
        log.warning("repo %s: ignoring a metadata snapshot that does not load (%s)", repo, exc)
        return None
    if state.gen_raw == gen_raw:
        if raws.meta != raw_meta:
            return None
        S.seed_tables(backend, raws.tables)  # current: its tables are the versions' tables
        return state
    return catch_up(backend, repo, state, gen_raw)


def _counter(repo: str, raw: bytes | None) -> int:
    """The version id counter from its stored value."""
    try:
        return int(raw or b"0")
    except ValueError as exc:
        raise CorruptMetadataError(f"repo {repo}: version id counter {raw!r}") from exc


def _tail_ids(meta: dict[str, Any], newest: int) -> list[int]:
    """The version ids whose records a state needs beside the packs: those past the last
    pack up to ``newest``, those a pack left out, and the overridden ones."""
    packs = meta.get("packs") or []
    hi = int(packs[-1][1]) if packs else 0
    tail = set(range(hi + 1, newest + 1))
    for p in packs:
        tail.update(int(v) for v in p[2])
    tail |= {int(v) for v in meta.get("overrides", [])}
    return sorted(tail)


def _read_records(backend: Backend, repo: str, raw_meta: bytes | None, gen_raw: bytes | None,
                  raw_vid: bytes | None) -> S.Raws:
    """The listings and records of a full load (two rounds), after the document, journal
    and counter."""
    meta = _check_meta(load_doc(raw_meta, f"repo {repo}"), repo)
    ikeys, bkeys, tkeys = backend.list_prefixes(
        [K.instance_prefix(repo), K.branch_prefix(repo), K.tag_prefix(repo)])
    packs = meta.get("packs") or []
    tail_ids = _tail_ids(meta, _counter(repo, raw_vid))
    pkeys = [K.pack_key(repo, int(p[0]), int(p[1])) for p in packs]
    nkeys = [K.node_key(repo, v) for v in tail_ids]
    lkeys = [K.lock_key(repo, v) for v in tail_ids]
    values = backend.get_many(pkeys + nkeys + lkeys + ikeys + bkeys + tkeys)
    pos = 0

    def take(n: int) -> list[bytes | None]:
        nonlocal pos
        out = values[pos:pos + n]
        pos += n
        return out

    pvals, nvals, lvals = take(len(pkeys)), take(len(nkeys)), take(len(lkeys))
    ivals, bvals, tvals = take(len(ikeys)), take(len(bkeys)), take(len(tkeys))

    def present(ks: list[str], vs: list[bytes | None]) -> dict[str, bytes]:
        return {k: v for k, v in zip(ks, vs, strict=True) if v is not None}

    return S.Raws(raw_meta, gen_raw, raw_vid, dict(zip(pkeys, pvals, strict=True)),
                  [(vid, raw, lock is not None)
                   for vid, raw, lock in zip(tail_ids, nvals, lvals, strict=True)],
                  present(ikeys, ivals), present(bkeys, bvals), present(tkeys, tvals))


def build_state(repo: str, raws: S.Raws, head_raw: bytes | None) -> RepoState:
    """A repo's state from the raw records of a full load (or of a snapshot)."""
    meta = _check_meta(load_doc(raws.meta, f"repo {repo}"), repo)
    counter = _counter(repo, raws.vid)
    overrides = {int(v) for v in meta.get("overrides", [])}
    cols = Columns(max([counter, *(vid for vid, _, _ in raws.tail)]) + 2)
    for p in meta.get("packs") or []:
        k = K.pack_key(repo, int(p[0]), int(p[1]))
        v = (raws.packs or {}).get(k)
        if v is None:
            raise CorruptMetadataError(f"repo {repo}: node pack {k!r} is missing")
        decode_pack(v, cols, f"node pack {k!r}")
    for vid, raw, locked in raws.tail:
        if raw is None:
            if vid in overrides:
                cols.drop(vid)
            continue  # a reserved id not published (yet)
        node = parse_node(raw, f"record of version id {vid} of repo {repo}")
        if node is None:
            cols.drop(vid)
            continue
        if node.id != vid:
            raise CorruptMetadataError(f"repo {repo}: the record of version id {vid} names "
                                       f"id {node.id}")
        node.locked = node.locked or locked
        cols.put(node)
    insts = {K.name_of_key(k): load_doc(v, f"instance record {k!r}")
             for k, v in raws.insts.items()}
    refs = _refs(list(raws.branches), list(raws.branches.values()), "branch ref")
    tags = _refs(list(raws.tags), list(raws.tags.values()), "tag ref")
    dag = DAG(_cols=cols, refs=refs)
    gen = load_doc(raws.gen, f"change journal of repo {repo}") or {}
    state = RepoState(meta, dag, dict(sorted(insts.items())), raws.gen, int(gen.get("n", 0)),
                      head_raw)
    state.extra["tags"] = tags
    state.extra["packs_raw"] = dict(raws.packs or {})
    state.meta_raw = raws.meta
    return state


def catch_up(backend: Backend, repo: str, state: RepoState,
             gen_raw: bytes | None | bool = False) -> RepoState | None:
    """``state`` brought up to date from the journal (``state`` itself when nothing changed),
    or ``None`` when the journal no longer reaches back to it (reload everything).
    ``gen_raw``: the journal if already read (``False``: read it)."""
    if gen_raw is False:
        gen_raw = backend.get(K.gen_key(repo))
    if gen_raw == state.gen_raw:
        return state
    gen = load_doc(gen_raw, f"change journal of repo {repo}") or {"n": 0, "recent": []}
    n = int(gen.get("n", 0))
    recent = [e for e in gen.get("recent", []) if int(e[0]) > state.gen_n]
    if n < state.gen_n or len(recent) != n - state.gen_n or \
            any(kind == "*" for _, kind, _ in recent):
        return None
    vids = sorted({int(name) for _, kind, name in recent if kind == "n"})
    inames = sorted({name for _, kind, name in recent if kind == "i"})
    bnames = sorted({name for _, kind, name in recent if kind == "b"})
    tnames = sorted({name for _, kind, name in recent if kind == "t"})
    keys = [K.repo_key(repo)]
    keys += [K.node_key(repo, v) for v in vids] + [K.lock_key(repo, v) for v in vids]
    keys += [K.instance_key(repo, x) for x in inames]
    keys += [K.branch_key(repo, x) for x in bnames] + [K.tag_key(repo, x) for x in tnames]
    values = backend.get_many(keys)
    meta = _check_meta(load_doc(values[0], f"repo {repo}"), repo)
    rest = values[1:]
    nvals, lvals = rest[:len(vids)], rest[len(vids):2 * len(vids)]
    rest = rest[2 * len(vids):]
    ivals, rest = rest[:len(inames)], rest[len(inames):]
    bvals, tvals = rest[:len(bnames)], rest[len(bnames):]
    put, drop = [], []
    for vid, raw, lock in zip(vids, nvals, lvals, strict=True):
        node = None if raw is None else parse_node(raw, f"record of version id {vid}")
        if node is None:
            if raw is not None or vid in state.dag.nodes:
                drop.append(vid)
            continue
        node.locked = node.locked or lock is not None
        put.append(node)
    refs = dict(state.dag.refs)
    for name, v in zip(bnames, bvals, strict=True):
        if v is None:
            refs.pop(name, None)
        else:
            refs[name] = int(v)
    tags = dict(state.extra.get("tags", {}))
    for name, v in zip(tnames, tvals, strict=True):
        if v is None:
            tags.pop(name, None)
        else:
            tags[name] = int(v)
    insts = dict(state.instances)
    for name, v in zip(inames, ivals, strict=True):
        if v is None:
            insts.pop(name, None)
        else:
            insts[name] = load_doc(v, f"instance record {name!r}")
    dag = state.dag.derive(put, [d for d in drop if d in state.dag.nodes], refs)
    if any(v is not None and int(v) not in dag.nodes for v in [*bvals, *tvals]):
        # a ref read ahead of its version's journal entry (a change under way, whose record
        # is written but not journaled yet): planning on it would miss that version
        return None
    out = RepoState(meta, dag, dict(sorted(insts.items())), gen_raw, n, state.head_raw)
    out.extra["tags"] = tags
    if "packs_raw" in state.extra:
        out.extra["packs_raw"] = state.extra["packs_raw"]
    out.meta_raw = values[0]
    return out


def maybe_pack(backend: Backend, repo: str, state: RepoState) -> bool:
    """Write a pack of the locked nodes past the last pack when :data:`PACK_MIN` or more
    have accumulated; returns whether one was published by this call."""
    lo = state.packed_to + 1
    cols = state.dag._cols
    ids = state.dag._ids()
    ids = ids[ids >= lo]
    locked = ids[cols.locked[ids]]
    if len(locked) < PACK_MIN:
        return False
    hi = int(locked.max())
    span = list(range(lo, hi + 1))
    values = backend.get_many([K.node_key(repo, v) for v in span] +
                              [K.lock_key(repo, v) for v in span])
    nodes, outside = [], []
    for vid, raw, lock in zip(span, values[:len(span)], values[len(span):], strict=True):
        node = None if raw is None else parse_node(raw, f"record of version id {vid}")
        if raw is not None and node is None:
            continue  # deleted
        if node is not None and node.locked and lock is not None:
            nodes.append(node)
        else:
            outside.append(vid)  # open, interrupted, or reserved and not published yet
    pk = K.pack_key(repo, lo, hi)
    backend.compare_and_set(pk, None, encode_pack(nodes))  # an equal pack may exist already
    published = {}

    def fn(cur: bytes | None) -> bytes | None:
        meta = load_doc(cur, f"repo {repo}")
        if meta is None:
            raise RepoNotFoundError(f"repo {repo} does not exist (deleted?)")
        packs = list(meta.get("packs") or [])
        if (int(packs[-1][1]) if packs else 0) != lo - 1:
            published["ok"] = False
            return cur  # another process packed these meanwhile
        published["ok"] = True
        meta["packs"] = [*packs, [lo, hi, outside]]
        return dump_doc(meta)

    _, raw = cas_update(backend, K.repo_key(repo), fn)
    state.meta, state.meta_raw = load_doc(raw, f"repo {repo}") or state.meta, raw
    if published["ok"]:
        journal(backend, repo, ("r", ""))
    return bool(published["ok"])


def first_state(repo: str, root: Node, meta: dict[str, Any]) -> dict[str, bytes]:
    """The records of a new repo (root node, counter, master ref, journal), document last."""
    return {
        K.node_key(repo, root.id): node_record(root),
        K.vid_counter_key(repo): str(root.id).encode(),
        K.branch_key(repo, MASTER): str(root.id).encode(),
        K.gen_key(repo): dump_doc({"n": 0, "recent": []}),
        K.repo_key(repo): dump_doc(meta),
    }


def bulk_append(backend: Backend, repo: str, nodes: list[Node],
                refs: dict[str, int] | None = None, tags: dict[str, int] | None = None) -> None:
    """Write many new nodes at once (tools, tests and benchmarks that build long histories):
    their records and lock keys, the id counter, the given branch and tag refs, then a
    journal entry telling every handle to reload, then packs.

    The caller guarantees what the ordinary operations check: fresh ids above the counter,
    parents that exist (with smaller ids), and that nobody else writes the repo meanwhile.
    """
    out: dict[str, bytes] = {}
    for n in nodes:
        out[K.node_key(repo, n.id)] = node_record(n)
        if n.locked:
            out[K.lock_key(repo, n.id)] = b"1"
    top = max(n.id for n in nodes) if nodes else 0
    cur = int(backend.get(K.vid_counter_key(repo)) or b"0")
    out[K.vid_counter_key(repo)] = str(max(cur, top)).encode()
    for name, vid in (refs or {}).items():
        out[K.branch_key(repo, name or MASTER)] = str(vid).encode()
    for name, vid in (tags or {}).items():
        out[K.tag_key(repo, name)] = str(vid).encode()
    backend.set_many(out)
    journal(backend, repo, ("*", ""))
    maybe_pack(backend, repo, load_state(backend, repo))
