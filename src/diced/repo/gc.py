"""Deleting versions and branches, squashing history, and garbage collection.

DVID's rule for deleting a version node holds: only a leaf (a version without children; a
tag is a child of the version it names) can be deleted, and never the root. On top of that:

* :func:`delete_branch` deletes a branch's *leaf-first run*: starting at the branch leaf,
  every node of the branch that nothing else builds on once the nodes after it are gone. The
  walk stops at the first node that another branch, a tag or a merge builds on (that node
  and its ancestors stay, and the branch name stays with them) or at the root. ``master``
  cannot be deleted.
* :func:`squash` folds a linear run of locked versions ``first .. last`` into one version:
  the *newest* one (``last``) keeps its UUID, id, branch, note and children, and reads
  exactly what it read before; its parents become ``first``'s parents, its log gains the
  log lines of the folded versions, and the folded versions disappear. Instances created
  inside the run are moved to ``last``.

Neither operation touches chunk data on the spot: the removed versions' ids are written to a
*pending-GC record* (``meta/gc/<repo uuid>/<record id>``) before the metadata changes, and
:func:`collect` (``repo.gc()`` / ``store.gc()``) later deletes exactly what those versions
wrote, found through their own per-version indexes (``w/<space>/<vid>/``). Since version ids
are never reused and a removed version is an ancestor of no remaining version, everything
stored at a removed id is unreachable, and nothing else is: the cost of a collection grows
with the garbage (one listing per key space and removed version, plus the deletes), never
with the size of the store. A record whose versions still exist (an operation interrupted
before its metadata change) is left alone. Collection is idempotent: a crash part-way
(data is deleted before the index entries naming it, the record last) is finished by the
next run.

Caveats: handles in *other processes* that still hold the removed versions (or a squashed
version's old ancestry) in their cached DAG must reopen the repo, and on stores without
ordered scans (object stores, ``file://``) other :class:`~diced.Store` objects must be
reopened after a squash, because the squashed version's manifest (cached as immutable once
locked) gains the lifted keys. A write by a stale handle to a deleted open version is
refused (the removed ids keep their lock marks). The leaf check and the removal are two
metadata updates: a child made of the version in between by another process is reported with
:class:`~diced.errors.ConcurrencyError`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from diced.errors import (
    InvalidArgumentError,
    UnlockedNodeError,
    VersionNotFoundError,
)
from diced.repo import keys as K
from diced.repo.dag import MASTER

if TYPE_CHECKING:
    from diced.backends.base import Backend
    from diced.repo.repo import Repo, Version

__all__ = ["GCReport", "collect", "delete_branch", "delete_version", "pending", "squash"]

log = logging.getLogger(__name__)

_GC_PREFIX = "meta/gc/"
_BATCH = 4096


def _record_prefix(repo_uuid: str | None = None) -> str:
    return _GC_PREFIX if repo_uuid is None else f"{_GC_PREFIX}{repo_uuid}/"


@dataclass
class GCReport:
    """What a collection did.

    Attributes
    ----------
    records : int
        Pending-GC records finished (and removed).
    versions : int
        Removed versions whose data was collected.
    keys : int
        Stored keys deleted (values, tombstones, index entries, per-version metadata).
    waiting : int
        Records left because their versions still exist (an interrupted delete or squash).
    blobs : int
        Deduplicated payloads deleted because nothing refers to them any more.
    """

    records: int = 0
    versions: int = 0
    keys: int = 0
    waiting: int = 0
    blobs: int = 0
    repos: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"collected {self.versions} removed version(s) from {self.records} record(s): "
                f"{self.keys} keys and {self.blobs} shared payloads deleted"
                + (f"; {self.waiting} record(s) wait for interrupted operations"
                   if self.waiting else ""))


# --- metadata edits (kept small and private so the repo's metadata layout can change) ----


def _spaces_and_meta(repo: Repo, vids: Iterable[int]) -> tuple[list[int], list[str]]:
    """Every key space of the repo's instances, and the prefixes of per-version unversioned
    keys (label max ids and mutation logs) of ``vids``."""
    from diced.repo.repo import instance_spaces

    spaces: set[int] = set()
    prefixes: list[str] = []
    vids = list(vids)
    for rec in repo._doc["instances"].values():
        spaces.update(instance_spaces(rec))
        if rec["type"] == "labels":
            mp = f"meta/label/{rec['id']:08x}/"
            for v in vids:
                prefixes += [f"{mp}max/{v:08x}", f"{mp}mut/{v:08x}/"]
    return sorted(spaces), prefixes


def _write_record(repo: Repo, vids: Sequence[int], what: str) -> str:
    """Store the pending-GC record naming ``vids`` (before they are removed)."""
    spaces, prefixes = _spaces_and_meta(repo, vids)
    key = f"{_record_prefix(repo.uuid)}{time.time_ns():016x}-{os.urandom(4).hex()}"
    rec = {"repo": repo.uuid, "vids": sorted(vids), "spaces": spaces, "meta": prefixes,
           "what": what, "created": time.time()}
    repo.backend.set(key, json.dumps(rec).encode())
    return key


def _fence(repo: Repo, vids: Iterable[int]) -> None:
    """Refuse further writes at ``vids`` (a writer checks the lock mark in its transaction)."""
    from diced.repo.writers import lock_version

    for v in vids:
        lock_version(repo.backend, repo.uuid, v)


def _edit_node(repo: Repo, vid: int, fn: Any) -> None:
    """Edit version ``vid``'s metadata record in place (``fn(record)``)."""
    repo._update_node(vid, fn)


def _drop_instances_created_at(repo: Repo, vids: set[int]) -> None:
    """Instances created at removed versions are visible nowhere afterwards: delete them."""
    for name, rec in list(repo._doc["instances"].items()):
        if rec["created"] in vids:
            repo.delete_instance(name)


def _move_instance_meta(repo: Repo, vid: int, fold: set[int], anc: frozenset[int]) -> None:
    """Instance creation and array shapes of the ``fold`` versions, moved to ``vid`` (or,
    with ``vid < 0``, shapes of the removed ``fold`` versions forgotten)."""
    for name, rec in list(repo._doc["instances"].items()):
        shapes = rec.get("config", {}).get("shapes") or {}
        if rec["created"] not in fold and not any(str(v) in shapes for v in fold):
            continue

        def fn(r: dict[str, Any]) -> None:
            if vid >= 0 and r["created"] in fold:
                r["created"] = vid
            sh = r.get("config", {}).get("shapes")
            if not sh:
                return
            if vid >= 0 and str(vid) not in sh and any(str(v) in sh for v in fold):
                best = max(int(v) for v in sh if int(v) in anc)
                sh[str(vid)] = sh[str(best)]
            for v in fold:
                if len(sh) > 1:
                    sh.pop(str(v), None)

        repo._update_instance(name, fn)


def _reparent(repo: Repo, vid: int, parents: list[int], folded: Sequence[int]) -> None:
    """Make ``parents`` the parents of ``vid`` and move to it what the ``folded`` versions
    carried in the metadata: instance creation, array shapes, log lines."""
    fold = set(folded)
    dag = repo._dag
    lines = [line for v in sorted(fold) for line in dag.nodes[v].log]

    def fn(rec: dict[str, Any]) -> None:
        rec["parents"] = list(parents)
        rec["log"] = lines + list(rec["log"])

    _move_instance_meta(repo, vid, fold, dag.ancestors(vid))
    _edit_node(repo, vid, fn)


def _after_removal(repo: Repo, removed: set[int], new_head: int) -> None:
    if repo._head_id in removed:
        repo._move_head(new_head)
    from diced.repo.manifests import manifests

    spaces, _ = _spaces_and_meta(repo, ())
    man = manifests(repo.backend)
    for s in spaces:
        man.forget(s)


# --- deleting ------------------------------------------------------------------------------


def delete_version(repo: Repo, version: Any) -> list[str]:
    """Delete one leaf version (no children, tags included; not the root).

    Its data becomes garbage for :func:`collect`. Returns the deleted UUID in a list.

    Raises
    ------
    InvalidArgumentError
        The version has children or is the root.
    """
    repo.refresh()
    node = repo._node(version)
    dag = repo._dag
    if node.id == dag.root.id:
        raise InvalidArgumentError("the root version cannot be deleted (delete the repo)")
    kids = dag.children.get(node.id, [])
    if kids:
        names = ", ".join(dag.nodes[k].tag or dag.nodes[k].uuid[:12] for k in kids)
        raise InvalidArgumentError(
            f"version {node.uuid[:12]} has children ({names}); only leaves can be deleted")
    _remove(repo, [node.id], f"delete {node.uuid}")
    return [node.uuid]


def _branch_run(repo: Repo, name: str) -> list[int]:
    """The leaf-first run of branch ``name`` that nothing else builds on (leaf first)."""
    dag = repo._dag
    leaf = dag.branch_leaf(name)
    bname = "" if name == MASTER else name
    run: list[int] = []
    gone: set[int] = set()
    cur = leaf
    while True:
        if cur.id == dag.root.id or cur.branch != bname or cur.tag is not None:
            break
        if any(k not in gone for k in dag.children.get(cur.id, [])):
            break
        run.append(cur.id)
        gone.add(cur.id)
        if not cur.parents:
            break
        cur = dag.nodes[cur.parents[0]]  # first parents: a merge's others are other branches
    return run


def delete_branch(repo: Repo, name: str) -> list[str]:
    """Delete the leaf-first run of branch ``name`` (see the module docstring).

    Returns the deleted UUIDs, leaf first.

    Raises
    ------
    InvalidArgumentError
        ``name`` is ``master``, or its leaf has children (nothing can be deleted).
    VersionNotFoundError
        No branch ``name``.
    """
    if name in (MASTER, ""):
        raise InvalidArgumentError("the master branch cannot be deleted")
    repo.refresh()
    if not any(n.branch == name and n.tag is None for n in repo._dag.nodes.values()):
        raise VersionNotFoundError(f"no branch named {name!r}")
    run = _branch_run(repo, name)
    if not run:
        leaf = repo._dag.branch_leaf(name)
        raise InvalidArgumentError(
            f"branch {name!r}: its leaf {leaf.uuid[:12]} has children (a tag, a merge or "
            "another branch builds on it); delete those first")
    uuids = [repo._dag.nodes[v].uuid for v in run]
    _remove(repo, run, f"delete branch {name}")
    return uuids


def _remove(repo: Repo, vids: list[int], what: str) -> None:
    dag = repo._dag
    removed = set(vids)
    outside = [p for v in vids for p in dag.nodes[v].parents if p not in removed]
    _write_record(repo, vids, what)
    _fence(repo, vids)
    _drop_instances_created_at(repo, removed)
    _move_instance_meta(repo, -1, removed, frozenset())
    repo._delete_nodes(vids)
    _fence(repo, vids)  # stays: a stale handle elsewhere cannot write at a deleted version
    _check_no_orphans(repo, removed)
    _after_removal(repo, removed, max(outside) if outside else repo._dag.root.id)


def _check_no_orphans(repo: Repo, removed: set[int]) -> None:
    """Loud failure if another process gave a removed version a child meanwhile (the leaf
    check and the removal are two metadata updates)."""
    bad = [n.uuid for n in repo._dag.nodes.values() if any(p in removed for p in n.parents)]
    if bad:
        from diced.errors import ConcurrencyError

        raise ConcurrencyError(
            f"version(s) {', '.join(b[:12] for b in bad)} were made children of a version "
            "while it was being deleted; their parent is gone")


# --- squashing -----------------------------------------------------------------------------


def _squash_run(repo: Repo, first: Any, last: Any) -> list[int]:
    dag = repo._dag
    a, b = repo._node(first), repo._node(last)
    if a.id == dag.root.id:
        raise InvalidArgumentError("the root version cannot be squashed away (it names the repo)")
    run = [b.id]
    while run[-1] != a.id:
        node = dag.nodes[run[-1]]
        if len(node.parents) != 1:
            raise InvalidArgumentError(
                f"{b.uuid[:12]} does not descend from {a.uuid[:12]} through single parents")
        run.append(node.parents[0])
        if run[-1] < a.id:
            raise InvalidArgumentError(
                f"{b.uuid[:12]} does not descend from {a.uuid[:12]} through single parents")
    run.reverse()  # oldest first
    for v in run:
        node = dag.nodes[v]
        if not node.locked:
            raise UnlockedNodeError(f"version {node.uuid[:12]} is open; squash locked versions")
        if node.tag is not None:
            raise InvalidArgumentError(f"{node.tag!r} is a tag, not a version to squash")
    for v in run[:-1]:
        kids = dag.children.get(v, [])
        if kids != [run[run.index(v) + 1]]:
            raise InvalidArgumentError(
                f"version {dag.nodes[v].uuid[:12]} has other children (a tag, branch or merge "
                "builds on it); only a linear run can be squashed")
    return run


def squash(repo: Repo, first: Any, last: Any) -> Version:
    """Fold the linear run of locked versions ``first .. last`` into ``last``.

    ``last`` keeps its UUID, id, content and children; its parents become ``first``'s. The
    folded versions' data becomes garbage for :func:`collect`.

    Raises
    ------
    InvalidArgumentError
        Not a linear run (a folded version has another child, a tag among them, ``last``
        does not descend from ``first`` through single parents) or ``first`` is the root.
    UnlockedNodeError
        A version of the run is open.
    """
    from diced.repo.repo import Version

    repo.refresh()
    run = _squash_run(repo, first, last)
    if len(run) == 1:
        return Version(repo, repo._dag.nodes[run[0]])
    top, folded = run[-1], run[:-1]
    parents = list(repo._dag.nodes[run[0]].parents)
    _write_record(repo, folded, f"squash into {repo._dag.nodes[top].uuid}")
    spaces, _ = _spaces_and_meta(repo, ())
    for s in spaces:
        _lift(repo.backend, s, folded, top)
    _lift_label_meta(repo, folded, top)
    _reparent(repo, top, parents, folded)
    repo._delete_nodes(folded)
    # the compacted indexes of ``top`` and its descendants name the folded versions as
    # writers: drop them (readers rebuild them from the ancestors' and the w/ manifests)
    from diced.repo.manifests import drop_compacted, manifests

    drop_compacted(repo.backend, spaces, _descendants(repo, top))
    # the repo document counts squashes (a journal entry after the drop: a state snapshot
    # stamped before it, whose copies of those tables may predate the drop, is then never
    # current again); other processes that see the count move drop their index caches
    doc = repo._update_repo(lambda d: d.__setitem__("squashes", int(d.get("squashes", 0)) + 1))
    manifests(repo.backend).observe(repo.uuid, int(doc["squashes"]))
    _fence(repo, folded)
    _check_no_orphans(repo, set(folded))
    _after_removal(repo, set(folded), top)
    return Version(repo, repo._dag.nodes[top])


def _descendants(repo: Repo, vid: int) -> list[int]:
    """``vid`` and every version below it (iterative walk over children)."""
    children = repo._dag.children
    seen, todo = {vid}, [vid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return sorted(seen)


def _lift(backend: Backend, space: int, folded: Sequence[int], top: int) -> None:
    """Copy to ``top`` the newest write in ``folded`` of each key ``top`` did not write, so
    ``top`` reads the same once the folded versions are gone."""
    listings = backend.list_prefixes([K.index_prefix(space, v) for v in [*folded, top]])
    own = {K.parse_index_key(k)[1] for k in listings[-1]}
    newest: dict[str, tuple[int, str]] = {}
    for v, keys in zip(folded, listings[:-1], strict=True):  # ascending ids
        for k in keys:
            _, ckey, mark = K.parse_index_key(k)
            if ckey not in own:
                newest[ckey] = (v, mark)
    items = sorted(newest.items())
    for i in range(0, len(items), _BATCH):
        batch = items[i:i + _BATCH]
        src = [K.data_key(space, c, v, m) for c, (v, m) in batch]
        values = backend.get_many(src)
        data = {}
        for (c, (_, m)), val in zip(batch, values, strict=True):
            if val is None:
                raise VersionNotFoundError(
                    f"key space {space}: the index names {c!r} but its value is missing; "
                    "run store.verify(repair=True) first")
            data[K.data_key(space, c, top, m)] = val
        backend.set_many(data)  # data before the index entries naming it
        backend.set_many({K.index_key(space, top, c, m): b"" for c, (_, m) in batch})


def _lift_label_meta(repo: Repo, folded: Sequence[int], top: int) -> None:
    """Label max ids and mutation-log records of the folded versions, moved to ``top``."""
    backend = repo.backend
    for rec in repo._doc["instances"].values():
        if rec["type"] != "labels":
            continue
        mp = f"meta/label/{rec['id']:08x}/"
        keys = [f"{mp}max/{v:08x}" for v in [*folded, top]]
        vals = [int(x) for x in backend.get_many(keys) if x]
        if vals:
            backend.set(f"{mp}max/{top:08x}", str(max(vals)).encode())
        muts = [k for v in folded for k in backend.list_keys(f"{mp}mut/{v:08x}/")]
        if muts:
            moved = backend.get_many(muts)
            backend.set_many({f"{mp}mut/{top:08x}/{k.rsplit('/', 1)[1]}": v
                              for k, v in zip(muts, moved, strict=True) if v is not None})


# --- collection ----------------------------------------------------------------------------


def pending(backend: Backend, repo_uuid: str | None = None) -> list[dict[str, Any]]:
    """The pending-GC records (of one repo, or of the whole store), oldest first."""
    keys = list(backend.list_keys(_record_prefix(repo_uuid)))
    out = []
    for k, raw in zip(keys, backend.get_many(keys), strict=True):
        if raw is not None:
            rec = json.loads(raw)
            rec["key"] = k
            out.append(rec)
    return out


def _delete_batched(backend: Backend, keys: list[str]) -> None:
    for i in range(0, len(keys), _BATCH):
        backend.delete_many(keys[i:i + _BATCH])


def _live_ids(store: Any, repo_uuid: str) -> set[int] | None:
    """Version ids of a repo (``None``: the repo no longer exists)."""
    from diced.errors import RepoNotFoundError
    from diced.repo.repo import Repo

    try:
        return set(Repo(store, repo_uuid, head=repo_uuid)._dag.nodes)
    except RepoNotFoundError:
        return None


def collect(store: Any, repo_uuid: str | None = None) -> GCReport:
    """Delete everything stored at versions removed by delete or squash (see module doc).

    Parameters
    ----------
    store : Store
        The store.
    repo_uuid : str, optional
        Only this repo's records (default: every repo's).

    Returns
    -------
    GCReport
    """
    backend = store.backend
    report = GCReport()
    live: dict[str, set[int] | None] = {}
    for rec in pending(backend, repo_uuid):
        r = rec["repo"]
        if r not in live:
            live[r] = _live_ids(store, r)
        ids = live[r] or set()
        vids = [v for v in rec["vids"] if v not in ids]
        if len(vids) != len(rec["vids"]):
            report.waiting += 1
            continue
        listings = backend.list_prefixes([K.index_prefix(s, v)
                                          for s in rec["spaces"] for v in vids])
        index = [k for keys in listings for k in keys]
        # their compacted indexes (object stores, file://): only descendants refer to them,
        # and a removed version has none left (squash dropped the kept version's)
        compacted = [k for keys in backend.list_prefixes(
            [K.compact_prefix(s, v) for s in rec["spaces"] for v in vids]) for k in keys]
        data = []
        for k in index:
            vid, ckey, mark = K.parse_index_key(k)
            data.append(K.data_key(int(k[2:10], 16), ckey, vid, mark))
        meta = [k for p in rec["meta"] for k in backend.list_keys(p)]
        _delete_batched(backend, data)  # values before the index entries naming them
        _delete_batched(backend, index)
        _delete_batched(backend, meta)
        _delete_batched(backend, compacted)
        backend.delete(rec["key"])
        report.records += 1
        report.versions += len(vids)
        report.keys += len(data) + len(index) + len(meta) + len(compacted)
        if r not in report.repos:
            report.repos.append(r)
    sweep = getattr(backend, "sweep", None)
    if sweep is not None:
        report.blobs += sweep()
    log.info("%s", report)
    return report
