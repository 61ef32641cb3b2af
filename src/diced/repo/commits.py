"""Versions of a repo as DAG nodes: locking (commit), publishing new nodes, merging,
comparing and removing versions; a mixin of :class:`diced.repo.repo.Repo`."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from diced.errors import (
    ConcurrencyError,
    DicedError,
    DuplicateNameError,
    InvalidArgumentError,
    LockedNodeError,
    UnlockedNodeError,
    VersionNotFoundError,
)
from diced.repo import keys as K
from diced.repo.dag import DAG, MASTER, Node, new_uuid
from diced.repo.diff import Diff
from diced.repo.history import maybe_pack, node_record, parse_node
from diced.repo.instances import _datatype
from diced.repo.merge import Strategy
from diced.repo.meta import Step, bump_counter, dump_doc
from diced.repo.refs import _RefMoved
from diced.repo.snapshot import publish_current
from diced.repo.snapshot import used_on as snapshot_used_on
from diced.repo.version import Version
from diced.repo.writers import lock_version

log = logging.getLogger(__name__)

__all__ = ["RepoCommitsMixin"]


class RepoCommitsMixin:
    """Locking, publishing, merging, comparing and removing versions of a
    :class:`~diced.repo.repo.Repo` (see the module docstring)."""

    def commit(self, note: str = "", log: Iterable[str] = (), *, uuid: str | None = None,
               pack: bool = False) -> Version:
        """Lock a version (default: the head) with a note and log lines. Returns it.

        The lock key decides (create-only: of two racing commits one wins, the other gets
        :class:`LockedNodeError`); the node record follows in the same change.

        ``pack=True`` (object stores and ``file://``; nothing to do on LMDB) also stores the
        chunks the version wrote several per object, so cold reads fetch them with a few
        ranged GETs instead of one GET per chunk, at the cost of storing them twice (see
        :meth:`pack`)."""
        node = self._node(uuid)
        lines = [str(x) for x in log]
        vid = node.id
        if node.locked:
            raise LockedNodeError(f"version {node.uuid} is already locked")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        def lock(cur: bytes | None) -> bytes:
            if cur is not None:
                raise LockedNodeError(f"version {node.uuid} is already locked")
            return b"1"

        def fn(rec: dict[str, Any]) -> None:
            rec["locked"] = True
            if note:
                rec["note"] = note
            rec["log"].extend(f"{stamp}  {line}" for line in lines)

        try:
            self._update_node(vid, fn, steps=((K.lock_key(self.uuid, vid), lock),),
                              head=vid if vid == self._head_id else None)
        except LockedNodeError:
            self.refresh()
            raise
        lock_version(self.backend, self.uuid, vid)  # waits for writers already under way
        maybe_pack(self.backend, self.uuid, self._state)
        # object stores / file://: build the version's compacted chunk index now (reads at
        # any depth then cost O(1) requests; see repo/manifests.py; no-op on LMDB)
        from diced.repo.manifests import compact_version

        compact_version(self, vid, pack=bool(pack))
        if snapshot_used_on(self.backend):  # publish the state snapshot later opens start from
            try:
                fresh = publish_current(self.backend, self.uuid, self._state)
                if fresh is not None:
                    self._set_state(fresh)
            except (DicedError, OSError) as exc:  # the commit stands; opens still work
                log.warning("repo %s: version %s is locked, but storing the metadata "
                            "snapshot failed: %s", self.alias, node.uuid, exc)
        return Version(self, self._dag.nodes[vid])

    lock = commit

    def pack(self, uuid: str | None = None) -> int:
        """Pack the chunks a locked version (default: the head) wrote: copies grouped by
        index bucket (8³ neighbouring chunks) in a few objects, which reads at this version
        and its descendants fetch with ranged GETs (:mod:`diced.repo.chunkpacks`). Returns the
        number of key spaces indexed (0 on LMDB, whose reads are local seeks: nothing to do).

        The chunk objects stay (a damaged or missing pack falls back to them), so a packed
        version's chunks take twice the space. Squash, GC and deleting versions or
        instances delete packs with the indexes they live beside. The compacted indexes of
        the locked descendants are rebuilt so that they name the packs too. Packing a
        version again rewrites the same bytes.

        Raises
        ------
        UnlockedNodeError
            The version is open (its chunks may still change; use ``commit(pack=True)``).
        """
        from diced.repo.manifests import pack_version

        self.refresh()
        node = self._node(uuid)
        if not node.locked:
            raise UnlockedNodeError(
                f"version {node.uuid} is open; pack a locked version (commit(pack=True) "
                "locks and packs)")
        done = pack_version(self, node.id)
        if not done:
            return 0
        dag = self._dag
        below, todo = set(), [node.id]
        while todo:  # its descendants, through the children lists
            for c in dag.children.get(todo.pop(), []):
                if c not in below:
                    below.add(c)
                    todo.append(c)
        for vid in sorted(below):  # ancestors first: each rebuild reads its parents' indexes
            if dag.nodes[vid].locked:
                pack_version(self, vid, pack=False)  # re-derive: carry the pack locations
        if snapshot_used_on(self.backend):  # its copies of the tables lack the locations
            fresh = publish_current(self.backend, self.uuid, self._state)
            if fresh is not None:
                self._set_state(fresh)
        return done

    def _add_child(self, parents: list[int], branch: str, note: str, *, tag: str | None = None,
                   uuid: str | None = None, check: Callable[[DAG], None] | None = None,
                   vid: int | None = None, move_head: bool = True,
                   ref: str = "merge") -> Version:
        """Publish a new node: its record at a fresh (or reserved, ``vid=``) id and its ref,
        in one change (one transaction on LMDB; record first, then ref elsewhere).

        ``ref``: ``"advance"`` (newversion: the branch ref must name the first parent, or
        the first parent must have no child on the branch, and moves to the child by
        compare-and-set), ``"merge"`` (the same for the first parent, a tag standing for the
        version it names), ``"create"`` (a new branch: create-only ref), ``"tag"``
        (create-only tag ref, the node is locked at birth). A lost race stores nothing and
        raises :class:`DuplicateNameError`."""
        child_uuid = uuid or new_uuid()
        if uuid is not None and (len(uuid) != 32 or any(c not in "0123456789abcdef" for c in uuid)) \
                and tag is None:
            raise InvalidArgumentError(f"an assigned UUID must be 32 lowercase hex characters: {uuid!r}")
        self.refresh()
        for p in parents:
            node = self._dag.nodes.get(p)
            if node is None:
                raise VersionNotFoundError(f"version id {p} not in repo {self.alias!r}")
            if not node.locked and self.backend.get(K.lock_key(self.uuid, p)) is None:
                raise UnlockedNodeError(
                    f"version {node.uuid} is open; lock (commit) it before making children")
        if child_uuid in self._dag.by_uuid:
            raise DuplicateNameError(f"version UUID {child_uuid} already exists")
        if check is not None:
            check(self._dag)
        # on LMDB (atomic multi-key transactions) the id comes from the counter inside the
        # one transaction that publishes the node; elsewhere it is reserved first
        ck = K.vid_counter_key(self.uuid)
        fold = vid is None and self.backend.capabilities.atomic_update
        fixed = vid if vid is not None else (None if fold else self._reserve_id())
        dead: set[int] = set()
        for attempt in range(50):
            new_id = fixed if fixed is not None else int(self.backend.get(ck) or b"0") + 1
            now = time.time()
            node = Node(child_uuid, new_id, list(parents), branch, note, [],
                        locked=tag is not None, created=now, updated=now, tag=tag)
            raw = node_record(node)

            def create(cur: bytes | None, raw: bytes = raw, new_id: int = new_id) -> bytes:
                if cur is not None:
                    raise DuplicateNameError(f"version id {new_id} is taken")
                return raw

            def count(cur: bytes | None, new_id: int = new_id) -> bytes:
                if int(cur or b"0") != new_id - 1:
                    raise _RefMoved  # another id was handed out meanwhile
                return str(new_id).encode()

            steps: list[Step] = [] if fixed is not None else [(ck, count)]
            steps.append((K.node_key(self.uuid, new_id), create))
            ref_steps, entries = self._ref_steps(node, ref, dead)
            self._pending_uuid[new_id] = child_uuid
            try:
                vals = self._run([*steps, *ref_steps], [("n", new_id), *entries],
                                 new_id if move_head and tag is None else None)
                break
            except _RefMoved as exc:  # nothing stored: re-read and decide again
                if exc.unknown is None:
                    self.refresh()
                elif self._record_of(exc.unknown) is None:
                    dead.add(exc.unknown)  # a ref left naming a deleted version
                else:  # a version whose journal entry we have not seen (yet)
                    self.refresh(full=True)
                time.sleep(0.001 * random.random() * attempt)
            finally:
                self._pending_uuid.pop(new_id, None)
        else:
            raise ConcurrencyError(f"branch {node.branch_name!r} keeps moving; try again")
        refs = dict(self._dag.refs)
        name = node.branch or MASTER
        bk = K.branch_key(self.uuid, name)
        if bk in vals and vals[bk] is not None:
            refs[name] = int(vals[bk])
        if tag is not None:
            self._state.extra.setdefault("tags", {})[tag] = new_id
        self._apply([node], refs=refs)
        return Version(self, node)

    def _record_of(self, vid: int) -> Node | None:
        """The stored record of version id ``vid`` (``None``: none, or a deletion marker)."""
        raw = self.backend.get(K.node_key(self.uuid, vid))
        return None if raw is None else parse_node(raw, f"record of version id {vid}")

    def _reserve_id(self) -> int:
        """A fresh version id, never handed out again, for a node published later with
        ``_add_child(..., vid=)`` (data can be written at it before the node exists)."""
        return bump_counter(self.backend, K.vid_counter_key(self.uuid))

    def _delete_nodes(self, vids: Iterable[int]) -> None:
        """Remove the version nodes ``vids`` from the repo's metadata (their records, lock
        marks, refs naming them and any stored head pointing at them); their data is not
        touched. The caller checks that the result is still a valid DAG (no remaining node
        has a removed parent).

        Each record is replaced by a deletion marker (after listing it in the document's
        overrides, so the marker beats any pack holding the node); a branch ref naming a
        removed node moves to its nearest remaining first-parent ancestor on the branch."""
        self.refresh()
        gone = sorted({int(v) for v in vids})
        if not gone:
            return
        out: dict[str, Any] = {}
        steps: list[Step] = [self._override_step(gone, out)]
        for v in gone:
            marker = dump_doc({"deleted": True, "id": v})
            steps.append((K.node_key(self.uuid, v), lambda cur, m=marker: m))
        entries: list[tuple[str, Any]] = [("n", v) for v in gone]
        refs = dict(self._dag.refs)
        for name, leaf in list(self._dag.refs.items()):
            if leaf not in gone:
                continue
            target: int | None = leaf
            while target is not None and (target in gone or (
                    target in self._dag.nodes and self._dag.nodes[target].branch_name != name)):
                ps = self._dag.parents_of(target) if target in self._dag.nodes else []
                target = ps[0] if ps else None
            new = None if target is None else str(target).encode()
            steps.append((K.branch_key(self.uuid, name),
                          lambda cur, new=new, leaf=leaf: new if cur == str(leaf).encode() else cur))
            entries.append(("b", name))
            if target is None:
                refs.pop(name, None)
            else:
                refs[name] = target
        tags = self._state.extra.setdefault("tags", {})
        for name, tvid in list(tags.items()):
            if tvid in gone:
                steps.append((K.tag_key(self.uuid, name),
                              lambda cur, t=tvid: None if cur == str(t).encode() else cur))
                entries.append(("t", name))
                tags.pop(name)
        steps += [(K.lock_key(self.uuid, v), lambda cur: None) for v in gone]
        vals = self._run(steps, entries)
        self._state.meta, self._state.meta_raw = out["doc"], vals[K.repo_key(self.uuid)]
        self._apply(drop=[v for v in gone if v in self._dag.nodes], refs=refs)

    def merge(self, *versions: str | Version, note: str = "",
              strategy: Strategy = "fail") -> Version:
        """Merge two or more locked versions into a new open version (which becomes head).

        The merge node belongs to the branch of the first version given (git's rule: only
        that branch moves; ``branch~N`` and :meth:`log` follow first parents).

        Conflicts (a key changed differently on several sides since the merge base) are found
        now. ``strategy``: ``"fail"`` raises :class:`MergeConflictError` with the typed
        :class:`Conflict` records and stores nothing; a parent UUID (or prefix) or index makes
        that parent win every conflict; a callable ``f(conflict) -> parent uuid or index``
        chooses per conflict.
        """
        from diced.repo.merge import merge_versions

        return merge_versions(self, versions, note, strategy)

    def diff(self, a: str | Version, b: str | Version | None = None) -> Diff:
        """What changed from version ``a`` to version ``b`` (default: head), per instance."""
        self.refresh()
        na, nb = self._node(a), self._node(b)
        ca, cb = self._ctx(na.id), self._ctx(nb.id)
        out = Diff(na.uuid, nb.uuid)
        for name, rec in sorted(self._state.instances.items()):
            in_a, in_b = rec["created"] in ca.ancestors, rec["created"] in cb.ancestors
            if in_b and not in_a:
                out.created.append(name)
            elif in_a and not in_b:
                out.deleted.append(name)
            if not (in_a or in_b):
                continue
            out.instances[name] = _datatype(rec["type"]).diff(self.backend, rec, ca, cb)
        return out
