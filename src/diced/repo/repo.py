"""Repo and Version: the version DAG facade over a store's backend."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from diced.datatypes.registry import get_datatype
from diced.errors import (
    BackendError,
    ConcurrencyError,
    DuplicateNameError,
    InstanceNotFoundError,
    InvalidArgumentError,
    LockedNodeError,
    RepoNotFoundError,
    UnknownDatatypeError,
    UnlockedNodeError,
    VersionNotFoundError,
)
from diced.repo import keys as K
from diced.repo.context import InstanceContext
from diced.repo.dag import DAG, MASTER, Node, new_uuid
from diced.repo.diff import Diff
from diced.repo.history import (
    RepoState,
    catch_up,
    journal_fn,
    load_state,
    maybe_pack,
    node_record,
    parse_node,
)
from diced.repo.merge import Conflict, Strategy
from diced.repo.meta import (
    Step,
    bump_counter,
    dump_doc,
    load_doc,
    next_counter,
    run_steps,
)
from diced.repo.resolve import VersionCtx
from diced.repo.writers import lock_version

if TYPE_CHECKING:
    from diced.datatypes.base import Datatype

log = logging.getLogger(__name__)

__all__ = ["Conflict", "Repo", "Version"]

_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_RESERVED = {"log", "branch", "note", "commit", "newversion", "info", "tag", "status"}


#: longest repo, instance, branch or tag name
NAME_MAX = 255


def _check_name(name: str, what: str) -> str:
    if isinstance(name, str) and len(name) > NAME_MAX:
        raise InvalidArgumentError(
            f"{what} of {len(name)} characters is too long (at most {NAME_MAX})")
    if isinstance(name, str) and name and set(name) == {"."}:
        raise InvalidArgumentError(f"{what} {name!r} is not a name")
    if not isinstance(name, str) or not name or not set(name) <= _NAME_OK or name.startswith("."):
        if isinstance(name, str) and name.startswith(".") and name[1:] and set(name[1:]) <= _NAME_OK:
            return name  # hidden names such as DICED's ".files" are allowed
        raise InvalidArgumentError(
            f"{what} {name!r}: use letters, digits, '_', '-' and '.' (not empty)")
    if name in _RESERVED:
        raise InvalidArgumentError(f"{what} {name!r} is reserved")
    return name


def _datatype(typename: str) -> Datatype:
    """The registered datatype of a stored instance record's type."""
    try:
        return get_datatype(typename)
    except UnknownDatatypeError as exc:
        raise UnknownDatatypeError(
            f"instance type {typename!r} is not known to this diced: install the package "
            f"that provides it ({exc})") from exc


class _RefMoved(Exception):
    """A branch ref moved since the snapshot a change was planned on (internal)."""


class _NeedOverride(Exception):
    """A node record turned out locked: list it in the overrides first (internal)."""


class _Ref:
    """Which version an instance handle reads and writes: a pinned one or the repo head."""

    def __init__(self, repo: Repo, vid: int | None) -> None:
        self.repo, self.vid = repo, vid

    def ctx(self) -> VersionCtx:
        vid = self.repo._head_id if self.vid is None else self.vid
        return self.repo._ctx(vid)


class Version:
    """A read handle on one version node (any version is readable at any time)."""

    def __init__(self, repo: Repo, node: Node) -> None:
        self.repo = repo
        self._node = node

    @property
    def node(self) -> Node:
        """The version's DAG node as currently known (refreshed with the repo)."""
        return self.repo._dag.nodes.get(self._node.id, self._node)

    uuid = property(lambda self: self._node.uuid,
                    doc="The version's 32-hex UUID (a tag's name for tags).")
    id = property(lambda self: self._node.id, doc="The version's small id, local to its repo.")
    locked = property(lambda self: self.node.locked,
                      doc="Whether the version is locked (committed): its data never changes.")
    note = property(lambda self: self.node.note, doc="The version's note (commit message).")
    log = property(lambda self: list(self.node.log),
                   doc="The version's log lines (timestamped), oldest first.")
    branch = property(lambda self: self.node.branch_name,
                      doc="Name of the branch the version is on (``'master'`` by default).")
    tag = property(lambda self: self.node.tag,
                   doc="The tag name if this version is a tag, else None.")
    created = property(lambda self: self.node.created,
                       doc="Creation time, seconds since the epoch.")

    @property
    def parents(self) -> list[str]:
        """UUIDs of the parent versions (two or more for a merge, none for the root)."""
        return [self.repo._dag.nodes[p].uuid for p in self.node.parents]

    @property
    def children(self) -> list[str]:
        """UUIDs of the child versions (tags included)."""
        return [self.repo._dag.nodes[c].uuid for c in self.repo._dag.children.get(self.id, [])]

    def instance(self, name: str) -> Any:
        """The data instance ``name`` as seen at this version."""
        return self.repo._instance(name, _Ref(self.repo, self.id))

    __getitem__ = instance

    def array(self, name: str) -> Any:
        """The array ``name`` pinned to this version (same as :meth:`instance`).

        Parameters
        ----------
        name : str
            Instance name.

        Returns
        -------
        VersionedArray or LabelArray
            A handle that always reads this version.

        Raises
        ------
        InstanceNotFoundError
            No instance ``name`` is visible at this version.
        """
        return self.instance(name)

    def labels(self, name: str) -> Any:
        """The label array ``name`` pinned to this version (same as :meth:`instance`).

        Parameters
        ----------
        name : str
            Instance name.

        Returns
        -------
        LabelArray
        """
        return self.instance(name)

    def keyvalue(self, name: str) -> Any:
        """The keyvalue ``name`` pinned to this version (same as :meth:`instance`).

        Parameters
        ----------
        name : str
            Instance name.

        Returns
        -------
        KeyValue
        """
        return self.instance(name)

    def instances(self) -> dict[str, str]:
        """Names and types of the data instances visible at this version.

        Returns
        -------
        dict
            ``{name: "array" | "labels" | "keyvalue"}``, sorted by name.
        """
        return self.repo.instances(self.uuid)

    def commit(self, note: str = "", log: Iterable[str] = ()) -> Version:
        """Lock this version (see :meth:`Repo.commit`).

        Parameters
        ----------
        note : str
            The version's note.
        log : iterable of str
            Log lines, stored with a timestamp.

        Returns
        -------
        Version
        """
        return self.repo.commit(note, log, uuid=self.uuid)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and other.uuid == self.uuid and other.repo.uuid == self.repo.uuid

    def __hash__(self) -> int:
        return hash(self.uuid)

    def __repr__(self) -> str:
        state = "locked" if self.locked else "open"
        return f"<Version {self.uuid[:12]} id={self.id} branch={self.branch!r} {state} note={self.note!r}>"


class Repo:
    """A repo: a DAG of versions holding data instances.

    The handle has a *head*: the version that ``repo.create_array``, ``repo.array(name)``
    and other unpinned handles read and write. ``commit`` locks the head; ``branch``,
    ``newversion``, ``merge`` and ``checkout`` move it. Handles obtained through
    :meth:`version` are pinned to one version and never move.
    """

    def __init__(self, store: Any, uuid: str, head: str | None = None) -> None:
        self.store = store
        self.backend = store.backend
        self.uuid = uuid
        self._pending_uuid: dict[int, str] = {}
        self._set_state(load_state(self.backend, uuid))
        if head:
            node = self._node(head)
        else:  # the head stored by the last handle that moved it, read with the metadata
            node = self._saved_head(self._state.head_raw)
        self._head_id = node.id

    def _saved_head(self, raw: bytes | None | bool = False) -> Node:
        """The head stored by the last handle that moved it (as git's ``HEAD``), or the
        newest version on the master branch when none was stored or it no longer exists.
        ``raw``: the stored head if already fetched (``False``: fetch it)."""
        if raw is False:
            raw = self.backend.get(K.head_key(self.uuid))
        if raw:
            node = self._dag.by_uuid.get(raw.decode("ascii", "replace"))
            if node is not None:
                return node
            log.warning("repo %s: stored head %r is not a version; opening master", self.uuid, raw)
        return self._dag.branch_leaf(MASTER)

    def _move_head(self, vid: int) -> None:
        """Make ``vid`` the head and remember it in the store for the next ``open_repo``."""
        self._head_id = vid
        uuid = self._dag.nodes[vid].uuid
        try:
            self.backend.set(K.head_key(self.uuid), uuid.encode())
        except (BackendError, OSError, PermissionError) as exc:  # read-only stores still move
            log.warning("repo %s: could not store the head (%s); it moves for this handle only",
                        self.alias, exc)

    # --- metadata --------------------------------------------------------------------------

    def _set_state(self, state: RepoState) -> None:
        self._state = state
        self._dag = state.dag

    @property
    def _doc(self) -> dict[str, Any]:
        """The repo document with the instance records under ``"instances"`` (read-only view;
        change metadata with :meth:`_update_repo`, :meth:`_update_node`,
        :meth:`_update_instance`)."""
        return {**self._state.meta, "instances": self._state.instances}

    @property
    def _stamp(self) -> bytes | None:
        """The repo's change journal as last read: equal stamps mean equal metadata."""
        return self._state.gen_raw

    @property
    def _state_raw(self) -> bytes | None:
        """The repo document as last read."""
        return self._state.meta_raw

    def _instance_records(self) -> dict[str, dict[str, Any]]:
        """``{name: instance record}`` of every instance of the repo, as last read."""
        return self._state.instances

    def refresh(self, _raw: Any = False, *, full: bool = False) -> None:
        """Re-read the repo's metadata (other processes may have changed it): one read of
        the change journal when nothing changed, the changed records otherwise, everything
        with ``full=True`` or when this handle is far behind."""
        state = None if full else catch_up(self.backend, self.uuid, self._state)
        if state is None:
            state = load_state(self.backend, self.uuid)
        if state is not self._state:
            self._set_state(state)

    def _journal(self, *entries: tuple[str, Any]) -> None:
        self._run([], list(entries))

    def _run(self, steps: list[Step], entries: list[tuple[str, Any]],
             head: int | None = None) -> dict[str, bytes | None]:
        """Run a metadata change (see :func:`~diced.repo.meta.run_steps`) with the journal
        entries naming what changed and, if ``head`` is given, the stored head moved there;
        on LMDB one transaction."""
        got: dict[str, Any] = {}
        steps = [*steps, (K.gen_key(self.uuid), journal_fn(self.uuid, entries, got))]
        if head is not None:
            raw_uuid = self._uuid_for_head(head)
            steps.append((K.head_key(self.uuid), lambda cur: raw_uuid))
        out = run_steps(self.backend, steps)
        if got["old"] == self._state.gen_n:  # nobody else changed anything since we read
            self._state.gen_raw, self._state.gen_n = got["raw"], got["new"]
        if head is not None:
            self._head_id = head
        return out

    def _uuid_for_head(self, vid: int) -> bytes:
        pend = self._pending_uuid.get(vid)
        return (pend if pend is not None else self._dag.nodes[vid].uuid).encode()

    def _apply(self, put: Iterable[Node] = (), drop: Iterable[int] = (),
               refs: dict[str, int] | None = None) -> None:
        """Our own change, applied to this handle's snapshot."""
        self._set_state(RepoState(self._state.meta, self._dag.derive(put, drop, refs),
                                  self._state.instances, self._state.gen_raw,
                                  self._state.gen_n, self._state.head_raw,
                                  dict(self._state.extra), self._state.meta_raw))

    def _repo_step(self, fn: Callable[[dict[str, Any]], None],
                   out: dict[str, Any]) -> Step:
        def body(cur: bytes | None) -> bytes:
            doc = load_doc(cur, f"repo {self.uuid}")
            if doc is None:
                raise RepoNotFoundError(f"repo {self.uuid} does not exist (deleted?)")
            fn(doc)
            doc["updated"] = time.time()
            out["doc"] = doc
            return dump_doc(doc)

        return K.repo_key(self.uuid), body

    def _update_repo(self, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Change the repo document (alias, description, log, properties) by compare-and-set:
        ``fn(doc)`` edits a fresh copy in place (again if another writer won a race);
        raising aborts with nothing stored."""
        out: dict[str, Any] = {}
        vals = self._run([self._repo_step(fn, out)], [("r", "")])
        self._state.meta, self._state.meta_raw = out["doc"], vals[K.repo_key(self.uuid)]
        return out["doc"]

    def _override_step(self, vids: Iterable[int], out: dict[str, Any]) -> Step:
        """A step listing packed (or packable) nodes whose records are about to change, so
        that the records beat the packs (see :mod:`diced.repo.history`)."""
        want = {int(v) for v in vids}

        def fn(doc: dict[str, Any]) -> None:
            doc["overrides"] = sorted(set(doc.get("overrides", [])) | want)

        return self._repo_step(fn, out)

    def _update_node(self, vid: int, fn: Callable[[dict[str, Any]], None], *,
                     steps: tuple[Step, ...] = (), head: int | None = None) -> Node:
        """Change version ``vid``'s record (note, log) by compare-and-set: ``fn(record)``
        edits a fresh copy in place; raising aborts with nothing stored. ``steps`` run
        first, in the same change."""
        key = K.node_key(self.uuid, vid)
        known = self._dag.nodes.get(vid)
        need = vid in self._state.meta.get("overrides", [])
        locked_now = (known is not None and known.locked) or \
            self.backend.get(K.lock_key(self.uuid, vid)) is not None
        out: dict[str, Any] = {}
        node_out: dict[str, Node] = {}
        for _ in range(3):
            override = locked_now and not need

            def body(cur: bytes | None, override: bool = override) -> bytes:
                node = None if cur is None else parse_node(cur, f"record of version id {vid}")
                if node is None:
                    raise VersionNotFoundError(f"version id {vid} not in repo {self.alias!r}")
                if node.locked and not (override or need):
                    raise _NeedOverride
                rec = node.to_dict()
                fn(rec)
                rec["updated"] = time.time()
                new = Node.from_dict(rec)
                node_out["node"] = new
                return node_record(new)

            pre = [self._override_step([vid], out)] if override else []
            try:
                vals = self._run([*pre, *steps, (key, body)], [("n", vid)], head)
            except _NeedOverride:
                locked_now = True
                continue
            break
        else:  # pragma: no cover - the record keeps flipping
            raise VersionNotFoundError(f"version id {vid}: its record keeps changing")
        if "doc" in out:
            self._state.meta, self._state.meta_raw = out["doc"], vals[K.repo_key(self.uuid)]
        node = node_out["node"]
        node.locked = node.locked or locked_now
        self._apply([node])
        return node

    def _ctx(self, vid: int) -> VersionCtx:
        node = self._dag.nodes.get(vid)
        if node is None:
            self.refresh()
            node = self._dag.nodes.get(vid)
            if node is None:
                raise VersionNotFoundError(f"version id {vid} not in repo {self.alias!r}")
        dag = self._dag
        return VersionCtx(self.uuid, vid, dag.ancestors(vid), node.locked, node.uuid,
                          uuid_of=lambda v: dag.nodes[v].uuid)

    @property
    def alias(self) -> str:
        """The repo's name in its store."""
        return self._state.meta.get("alias", "")

    @property
    def description(self) -> str:
        """The repo's free-text description."""
        return self._state.meta.get("description", "")

    @property
    def root(self) -> Version:
        """The repo's root version (its UUID is the repo's UUID)."""
        return Version(self, self._dag.root)

    @property
    def head(self) -> Version:
        """The head: the version unpinned handles read and write.

        Moved by ``checkout``, ``branch``, ``newversion`` and ``merge``, and stored in the
        store, so the next ``store.open_repo`` starts there.
        """
        return Version(self, self._dag.nodes[self._head_id])

    @property
    def current_uuid(self) -> str:
        """UUID of the head version."""
        return self._dag.nodes[self._head_id].uuid

    @property
    def dag(self) -> DAG:
        """The version DAG (a snapshot: :meth:`refresh` re-reads it)."""
        return self._dag

    # --- refs ------------------------------------------------------------------------------

    def _node(self, uuid: str | None = None, *, branch: str | None = None,
              tag: str | None = None) -> Node:
        given = [x for x in (uuid, branch, tag) if x is not None]
        if len(given) > 1:
            raise InvalidArgumentError("give exactly one of uuid=, branch=, tag=")
        if not given:
            return self._dag.nodes[self._head_id]
        spec = uuid if uuid is not None else (branch if branch is not None else tag)
        if isinstance(spec, Version):
            spec = spec.uuid
        for attempt in range(2):
            try:
                if branch is not None:
                    return self._dag.branch_leaf(branch)
                if tag is not None:
                    tags = self._dag.tags()
                    if tag not in tags:
                        raise VersionNotFoundError(f"no tag named {tag!r}")
                    return tags[tag]
                return self._dag.resolve(spec)  # type: ignore[arg-type]
            except VersionNotFoundError:
                if attempt:
                    raise
                self.refresh()
        raise AssertionError("unreachable")

    def version(self, uuid: str | Version | None = None, *, branch: str | None = None,
                tag: str | None = None) -> Version:
        """A pinned handle on a version: by UUID (or unique prefix, ``branch~N``), branch leaf,
        or tag. With no argument, the head."""
        return Version(self, self._node(uuid, branch=branch, tag=tag))

    def checkout(self, uuid: str | Version | None = None, *, branch: str | None = None,
                 tag: str | None = None) -> Version:
        """Move the head (what unpinned handles read and write) to another version."""
        node = self._node(uuid, branch=branch, tag=tag)
        self._move_head(node.id)
        return Version(self, node)

    def versions(self) -> list[Version]:
        """Every version of the repo, parents before children.

        Returns
        -------
        list of Version
        """
        return [Version(self, n) for n in self._dag.topological()]

    def branches(self) -> dict[str, Version]:
        """The branches and their newest versions.

        Returns
        -------
        dict
            ``{branch name: leaf Version}``, ``"master"`` included.
        """
        return {name: Version(self, n) for name, n in self._dag.branches().items()}

    def tags(self) -> dict[str, Version]:
        """The tags.

        Returns
        -------
        dict
            ``{tag name: tag Version}``; a tag's parent is the version it names.
        """
        return {name: Version(self, n) for name, n in self._dag.tags().items()}

    def log(self, uuid: str | Version | None = None) -> list[Version]:
        """First-parent history of a version (default: head), oldest first."""
        node = self._node(uuid)
        return [Version(self, self._dag.nodes[i]) for i in reversed(self._dag.first_parent_chain(node.id))]

    # --- DAG operations ----------------------------------------------------------------------

    def commit(self, note: str = "", log: Iterable[str] = (), *, uuid: str | None = None) -> Version:
        """Lock a version (default: the head) with a note and log lines. Returns it.

        The lock key decides (create-only: of two racing commits one wins, the other gets
        :class:`LockedNodeError`); the node record follows in the same change."""
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

        compact_version(self, vid)
        return Version(self, self._dag.nodes[vid])

    lock = commit

    def _add_child(self, parents: list[int], branch: str, note: str, *, tag: str | None = None,
                   uuid: str | None = None, check: Callable[[DAG], None] | None = None,
                   vid: int | None = None, move_head: bool = True,
                   ref: str = "follow") -> Version:
        """Publish a new node: its record at a fresh (or reserved, ``vid=``) id and its ref,
        in one change (one transaction on LMDB; record first, then ref elsewhere).

        ``ref``: ``"advance"`` (newversion: the branch ref must name the first parent and
        moves to the child by compare-and-set), ``"create"`` (a new branch: create-only ref),
        ``"tag"`` (create-only tag ref, the node is locked at birth), ``"follow"`` (a merge or
        a reserved node: the ref moves only if it names the first parent). A lost race
        stores nothing and raises :class:`DuplicateNameError`."""
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
            ref_steps, entries = self._ref_steps(node, ref)
            self._pending_uuid[new_id] = child_uuid
            try:
                vals = self._run([*steps, *ref_steps], [("n", new_id), *entries],
                                 new_id if move_head and tag is None else None)
                break
            except _RefMoved:  # nothing stored: re-read and decide again
                self.refresh()
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

    def _ref_steps(self, node: Node, mode: str) -> tuple[list[Step], list[tuple[str, Any]]]:
        """Steps pointing the node's branch (or tag) ref at it; see :meth:`_add_child`."""
        first = node.parents[0] if node.parents else None
        while first is not None and self._dag.nodes[first].tag is not None and mode == "follow":
            ps = self._dag.parents_of(first)  # a merge "onto a tag" continues the tagged node
            first = ps[0] if ps else None
        new = str(node.id).encode()

        def create_only(what: str) -> Callable[[bytes | None], bytes]:
            def fn(cur: bytes | None) -> bytes:
                if cur is not None:
                    raise DuplicateNameError(f"{what} already exists")
                return new
            return fn

        if mode == "tag":
            assert node.tag is not None
            return ([(K.tag_key(self.uuid, node.tag), create_only(f"tag {node.tag!r}")),
                     (K.lock_key(self.uuid, node.id), lambda cur: b"1")],
                    [("t", node.tag)])
        name = node.branch or MASTER
        key = K.branch_key(self.uuid, name)
        if mode == "create":
            return [(key, create_only(f"branch {name!r}"))], [("b", name)]

        snap = self._dag.refs.get(name)

        def fn(cur: bytes | None) -> bytes | None:
            if mode == "follow":
                return new  # a merge (or a reserved node) is the branch's newest leaf
            at = None if cur is None else int(cur)
            if at == first:
                return new
            if at != snap:
                raise _RefMoved  # the branch moved since our snapshot: look again
            if first is not None and any(
                    self._dag.nodes[c].branch == node.branch and self._dag.nodes[c].tag is None
                    for c in self._dag.children.get(first, []) if c != node.id):
                raise self._has_child(first)
            return new  # the parent is a leaf off the ref (after a merge onto an older node)

        return [(key, fn)], [("b", name)]

    def _has_child(self, vid: int | None) -> DuplicateNameError:
        p = self._dag.nodes[vid] if vid is not None else None
        name = p.uuid if p is not None else vid
        branch = p.branch_name if p is not None else "?"
        return DuplicateNameError(f"version {name} already has a child on branch {branch!r}; "
                                  "use branch(name) to fork")

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

    def newversion(self, note: str = "", *, uuid: str | None = None,
                   parent: str | Version | None = None) -> Version:
        """A new open child of a locked version (default: head) on the same branch; becomes head.

        The branch ref moves from the parent to the child by compare-and-set, so of two
        racing ``newversion`` calls on one parent exactly one succeeds."""
        p = self._node(parent)
        return self._add_child([p.id], p.branch, note, uuid=uuid, ref="advance")

    def branch(self, name: str, note: str = "", *, uuid: str | None = None,
               parent: str | Version | None = None) -> Version:
        """Start branch ``name`` at a new open child of a locked version (default: head).

        The child becomes the head, so unpinned handles now write to it.
        """
        _check_name(name, "branch")
        if name == MASTER:
            raise InvalidArgumentError("'master' is the default branch; use newversion()")
        p = self._node(parent)

        def check(dag: DAG) -> None:
            if name in dag.refs or len(dag._on_branch(name)):
                raise DuplicateNameError(f"branch {name!r} already exists")

        return self._add_child([p.id], name, note, uuid=uuid, check=check, ref="create")

    create_branch_named = branch

    def tag(self, name: str, note: str = "", *, parent: str | Version | None = None) -> Version:
        """Name a locked version: a locked child whose UUID is the tag text (as in DVID)."""
        _check_name(name, "tag")
        p = self._node(parent)

        def check(dag: DAG) -> None:
            if name in dag.tags() or name in dag.by_uuid:
                raise DuplicateNameError(f"tag {name!r} already exists")

        return self._add_child([p.id], f"tag-{name}", note, tag=name, uuid=name, check=check,
                               move_head=False, ref="tag")

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

    def _merge_instance_meta(self, parent_ids: list[int], vid: int) -> None:
        """Versioned parts of instance records (array shapes) at a merge node, merged by
        each instance's datatype (:meth:`Datatype.merge_record`)."""
        parents = [self._dag.ancestors(p) for p in parent_ids]
        import copy

        for name, rec in list(self._state.instances.items()):
            dt = _datatype_or_base(rec["type"])
            if not dt.merge_record(copy.deepcopy(rec), parents, vid):
                continue  # only write records that change

            def fn(r: dict[str, Any], dt: Datatype = dt) -> None:
                dt.merge_record(r, parents, vid)

            self._update_instance(name, fn)

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

    # --- instances -------------------------------------------------------------------------

    def instances(self, uuid: str | Version | None = None) -> dict[str, str]:
        """Names and types of the instances visible at a version (default: head)."""
        anc = self._dag.ancestors(self._node(uuid).id)
        return {n: r["type"] for n, r in sorted(self._state.instances.items()) if r["created"] in anc}

    def _instance(self, name: str, ref: _Ref) -> Any:
        rec = self._state.instances.get(name)
        if rec is None:
            self.refresh()
            rec = self._state.instances.get(name)
        vid = self._head_id if ref.vid is None else ref.vid
        if rec is None or rec["created"] not in self._dag.ancestors(vid):
            raise InstanceNotFoundError(
                f"no data instance {name!r} at version {self._dag.nodes[vid].uuid[:12]} "
                f"of repo {self.alias!r}")
        if rec.get("storage") is not None:  # placed elsewhere, maybe by another process
            from diced.backends.layers import ensure_routes

            ensure_routes(self.store, instance_spaces(rec))
        return _datatype(rec["type"]).open(InstanceContext(self, name, rec, ref.vid))

    def __getitem__(self, name: str) -> Any:
        """``repo[name]``: the instance ``name`` at the head (see :meth:`array`)."""
        return self._instance(name, _Ref(self, None))

    def array(self, name: str) -> Any:
        """The array (or label array) ``name``, following the head.

        Parameters
        ----------
        name : str
            Instance name.

        Returns
        -------
        VersionedArray or LabelArray
            A handle that reads and writes whatever version is the head at each call
            (``repo.version(v).array(name)`` gives one pinned to ``v``).

        Raises
        ------
        InstanceNotFoundError
            No instance ``name`` is visible at the head.
        """
        return self[name]

    def labels(self, name: str) -> Any:
        """The label array ``name``, following the head (same as :meth:`array`).

        Parameters
        ----------
        name : str
            Instance name.

        Returns
        -------
        LabelArray
        """
        return self[name]

    def keyvalue(self, name: str) -> Any:
        """The keyvalue ``name``, following the head (same as :meth:`array`).

        Parameters
        ----------
        name : str
            Instance name.

        Returns
        -------
        KeyValue
        """
        return self[name]

    def __contains__(self, name: str) -> bool:
        return name in self.instances()

    def create_instance(self, name: str, typename: str, *, exist_ok: bool = False,
                        storage: str | None = None, **options: Any) -> Any:
        """Create a data instance of any registered datatype at the head.

        Parameters
        ----------
        name : str
            Instance name, unique in the repo (letters, digits, ``_``, ``-``, ``.``).
        typename : str
            The datatype: diced's name (``"array"``, ``"labels"``, ``"keyvalue"``, or a
            registered one) or DVID's (``"uint8blk"``, ``"labelmap"``, ...); see
            :func:`diced.datatypes.get_datatype`.
        exist_ok : bool, default False
            Return the existing instance ``name`` if it has this type and configuration.
        storage : str, optional
            Keep the instance's data on another backend than the store's (DVID's
            per-instance storage): a path (LMDB) or URL (``gs://``, ``s3://``,
            ``file://``) of a new or empty location, or one already holding other
            instances of this store. The store records the placement and reopens it.
            Default: the store's own backend. See :mod:`diced.backends.routed`.
        **options
            The datatype's creation options (validated by its ``configure``).

        Returns
        -------
        object
            The datatype's instance object, following the repo head.

        Raises
        ------
        UnknownDatatypeError
            No datatype is called ``typename``.
        DuplicateNameError
            The name is taken.
        LockedNodeError
            The head is locked.
        """
        dt = get_datatype(typename)
        return self._create_instance(name, dt.name, dt.configure(self._head_id, **options),
                                     exist_ok=exist_ok, storage=storage)

    def _existing_instance(self, name: str, typename: str, config: dict[str, Any]) -> Any:
        """For ``exist_ok=True``: the instance ``name`` if it exists with this configuration,
        ``None`` if it does not exist; :class:`DuplicateNameError` if it differs."""
        self.refresh()
        rec = self._state.instances.get(name)
        if rec is None:
            return None
        where = f"repo {self.alias!r} already has an instance {name!r}"
        if rec["type"] != typename:
            raise DuplicateNameError(f"{where} of type {rec['type']!r}, not {typename!r}")
        if rec["created"] not in self._dag.ancestors(self._head_id):
            raise DuplicateNameError(
                f"{where}, created on another branch (not visible at the head "
                f"{self.current_uuid[:12]}); names are unique per repo")
        inst = self[name]
        have = rec.get("config", {})
        wanted = {k: v for k, v in config.items() if k not in ("shapes", "allocate")}
        diffs = [f"{k}={have.get(k)!r} (asked {v!r})" for k, v in sorted(wanted.items())
                 if dump_doc({"v": have.get(k)}) != dump_doc({"v": v})]  # NaN == NaN here
        shapes = config.get("shapes")
        if shapes:
            asked = tuple(next(iter(shapes.values())))
            if tuple(inst.shape) != asked:
                diffs.insert(0, f"shape={tuple(inst.shape)} (asked {asked})")
        if diffs:
            raise DuplicateNameError(f"{where} with a different configuration: "
                                     f"{', '.join(diffs)}")
        return inst

    def _create_instance(self, name: str, typename: str, config: dict[str, Any],
                         exist_ok: bool = False, storage: str | None = None) -> Any:
        _check_name(name, "instance name")
        if exist_ok:
            found = self._existing_instance(name, typename, config)
            if found is not None:
                placed = self._doc["instances"][name].get("storage")
                if storage is not None and (placed is None or not _same_location(placed,
                                                                                 storage)):
                    raise DuplicateNameError(
                        f"repo {self.alias!r} already has an instance {name!r} stored at "
                        f"{placed or 'the store itself'}, not {storage!r}")
                return found
        head = self._dag.nodes[self._head_id]
        if head.locked:
            raise LockedNodeError(f"version {head.uuid} is locked; new instances need an open version")
        self.refresh()  # refuse a taken name before allocating ids for it
        if name in self._state.instances:
            raise DuplicateNameError(f"repo {self.alias!r} already has an instance {name!r}")
        vid = head.id
        lk = K.lock_key(self.uuid, vid)
        if self.backend.get(lk) is not None:
            raise LockedNodeError(f"version {head.uuid} was locked")
        inst_id = next_counter(self.backend, "instance")
        _datatype(typename).allocate(config, lambda: next_counter(self.backend, "instance"))
        rec: dict[str, Any] = {"id": inst_id, "type": typename, "created": vid,
                               "config": config}
        if storage is not None:  # routed before the record is published: no stray writes
            from diced.backends.layers import place_spaces

            rec["storage"] = place_spaces(self.store, instance_spaces(rec), storage)

        def unlocked(cur: bytes | None) -> bytes | None:
            if cur is not None:  # locked meanwhile: the record is taken back
                raise LockedNodeError(f"version {head.uuid} was locked; no instance made")
            return cur

        # the record, then the lock check: a commit racing with this either comes first
        # (the record is taken back) or finds the instance made before the lock
        self._put_instance(name, rec, [(lk, unlocked)])
        return self[name]

    def _put_instance(self, name: str, rec: dict[str, Any], steps: Iterable[Step] = (),
                      *, taken: str | None = None, same_ok: bool = False) -> None:
        """Create instance ``name``'s record (create-only), with ``steps`` in the same change.

        ``same_ok``: an identical record already stored is kept (a resumed job); ``taken``:
        the message when the name is taken (default: the repo already has it)."""
        ik, raw = K.instance_key(self.uuid, name), dump_doc(rec)

        def create(cur: bytes | None) -> bytes:
            if cur is not None and not (same_ok and load_doc(cur, name) == load_doc(raw, name)):
                raise DuplicateNameError(
                    taken or f"repo {self.alias!r} already has an instance {name!r}")
            return raw

        self._run([(ik, create), *steps], [("i", name)])
        self._set_instance(name, load_doc(raw, name))

    def _set_instance(self, name: str, rec: dict[str, Any] | None) -> None:
        insts = dict(self._state.instances)
        if rec is None:
            insts.pop(name, None)
        else:
            insts[name] = rec
        self._state.instances = dict(sorted(insts.items()))

    def _update_instance(self, name: str, fn: Callable[[dict[str, Any]], None]) -> None:
        """Change instance ``name``'s record by compare-and-set: ``fn(record)`` edits a fresh
        copy in place (again after a lost race); raising aborts with nothing stored."""
        def body(cur: bytes | None) -> bytes:
            rec = load_doc(cur, f"instance record {name!r}")
            if rec is None:
                raise InstanceNotFoundError(f"no data instance {name!r}")
            fn(rec)
            return dump_doc(rec)

        ik = K.instance_key(self.uuid, name)
        vals = self._run([(ik, body)], [("i", name)])
        self._set_instance(name, load_doc(vals[ik], name))

    def create_array(self, name: str, dtype: Any, shape: Iterable[int] | None = None, *,
                     chunks: Iterable[int] | None = None, fill_value: Any = 0,
                     codec: Any = None, origin: Iterable[int] | None = None,
                     max_scale: int = 0, exist_ok: bool = False,
                     storage: str | None = None) -> Any:
        """Create an nD array at the head.

        Parameters
        ----------
        name : str
            Instance name, unique in the repo (letters, digits, ``_``, ``-``, ``.``).
        dtype : dtype-like
            Any numeric numpy dtype.
        shape : sequence of int
            Array shape.
        chunks : sequence of int, optional
            Chunk shape (default: 64³ in 3-D, 512² in 2-D, 262144 in 1-D).
        fill_value : scalar, default 0
            What unwritten voxels read as.
        codec : str or dict, optional
            Chunk codec (default blosc zstd level 1 with shuffle).
        origin : sequence of int, optional
            Absolute coordinate of index 0 on each axis (see ``arr.abs``).
        max_scale : int, default 0
            ``> 0`` (3-D only) keeps a mean-downsampled pyramid of that many levels, updated
            on every write and read with ``arr.scale(n)[...]``.
        exist_ok : bool, default False
            Return the existing array ``name`` if it has this configuration (so re-running a
            notebook cell works); a different configuration still raises.
        storage : str, optional
            Keep the array's chunks on another backend (e.g. immutable grayscale on
            ``gs://`` while label arrays stay on the local LMDB store); see
            :meth:`create_instance`.

        Returns
        -------
        VersionedArray
            A handle following the repo head.

        Raises
        ------
        DuplicateNameError
            ``name`` exists (with ``exist_ok=True``: exists with another type or configuration).
        LockedNodeError
            The head is locked (and the array does not exist yet).
        """
        return self.create_instance(name, "array", dtype=dtype, shape=shape, chunks=chunks,
                                    fill_value=fill_value, codec=codec, origin=origin,
                                    max_scale=max_scale, exist_ok=exist_ok, storage=storage)

    def create_labels(self, name: str, shape: Iterable[int] | None = None, *,
                      exist_ok: bool = False, **kwargs: Any) -> Any:
        """Create a uint64 label array stored as DVID compressed label blocks.

        Parameters
        ----------
        name : str
            Instance name, unique in the repo.
        shape : sequence of int
            3-D shape (z, y, x).
        exist_ok : bool, default False
            Return the existing label array ``name`` if it has this configuration.
        **kwargs
            ``chunks`` (multiples of 8, default 64³), ``max_scale``, ``codec``, ``origin``,
            ``storage`` (see :meth:`create_instance`).

        Returns
        -------
        LabelArray
            A handle following the repo head.

        Raises
        ------
        DuplicateNameError
            ``name`` exists (with ``exist_ok=True``: exists with another type or configuration).
        """
        return self.create_instance(name, "labels", shape=shape, exist_ok=exist_ok, **kwargs)

    def create_keyvalue(self, name: str, *, exist_ok: bool = False,
                        storage: str | None = None) -> Any:
        """Create a versioned dict of bytes (DVID keyvalue).

        Parameters
        ----------
        name : str
            Instance name, unique in the repo.
        exist_ok : bool, default False
            Return the existing keyvalue ``name`` instead of raising.
        storage : str, optional
            Keep its values on another backend (see :meth:`create_instance`).

        Returns
        -------
        KeyValue
            A handle following the repo head.
        """
        return self.create_instance(name, "keyvalue", exist_ok=exist_ok, storage=storage)

    def delete_instance(self, name: str) -> None:
        """Delete an instance and its data from every version (irreversible, as in DVID)."""
        rec = self._state.instances.get(name)
        if rec is None:
            raise InstanceNotFoundError(f"no data instance {name!r}")

        ik = K.instance_key(self.uuid, name)
        old: dict[str, bytes | None] = {}

        def remove(cur: bytes | None) -> None:
            old["rec"] = cur

        self._run([(ik, remove)], [("i", name)])
        self._set_instance(name, None)
        if old.get("rec") is not None:
            drop_instance_data(self.backend, load_doc(old["rec"], name), self.store)

    def view(self, host: str = "127.0.0.1", port: int = 8000, *, open_browser: bool | None = None,
             **options: Any) -> Any:
        """Serve the store and show this repo's web page (``<url>/?repo=<root uuid>``).

        The page opens in a browser when one can be shown (a display exists), else the URL is
        printed. Returns the :class:`diced.server.ServerHandle`; call ``.stop()`` when done.
        """
        from diced.server.run import serve, show_url

        handle = serve(self.store, host=host, port=port, **options)
        show_url(f"{handle.url}/?repo={self.uuid}", open_browser)
        return handle

    def __repr__(self) -> str:
        return f"<Repo {self.alias!r} root={self.uuid[:12]} head={self.current_uuid[:12]}>"

    # --- deleting, squashing and garbage collection (diced.repo.gc) -------------------------

    def delete_version(self, version: str | Version) -> list[str]:
        """Delete a leaf version (DVID's rule: no children, tags included; not the root).

        Its data is reclaimed by the next :meth:`gc`.

        Parameters
        ----------
        version : str or Version
            UUID (or prefix, ``branch~N``, ...) of the version.

        Returns
        -------
        list of str
            The deleted UUID.

        Raises
        ------
        InvalidArgumentError
            The version has children or is the root.
        """
        from diced.repo.gc import delete_version

        return delete_version(self, version)

    def delete_branch(self, name: str) -> list[str]:
        """Delete branch ``name``: its leaf-first run of versions that nothing else (another
        branch, a tag, a merge) builds on. Data is reclaimed by the next :meth:`gc`.

        Parameters
        ----------
        name : str
            Branch name (not ``master``).

        Returns
        -------
        list of str
            The deleted UUIDs, leaf first.

        Raises
        ------
        InvalidArgumentError
            ``master``, or the branch leaf has children.
        VersionNotFoundError
            No such branch.
        """
        from diced.repo.gc import delete_branch

        return delete_branch(self, name)

    def squash(self, first: str | Version, last: str | Version) -> Version:
        """Fold the linear run of locked versions ``first .. last`` into ``last``, which keeps
        its UUID, content and children and takes ``first``'s parents. The folded versions'
        data is reclaimed by the next :meth:`gc`.

        Parameters
        ----------
        first, last : str or Version
            Oldest and newest version of the run.

        Returns
        -------
        Version
            ``last``.

        Raises
        ------
        InvalidArgumentError
            Not a linear run, or ``first`` is the root.
        UnlockedNodeError
            A version of the run is open.
        """
        from diced.repo.gc import squash

        return squash(self, first, last)

    def gc(self) -> Any:
        """Reclaim the data of this repo's deleted and squashed versions.

        Returns
        -------
        diced.repo.gc.GCReport
        """
        from diced.repo.gc import collect

        return collect(self.store, self.uuid)


def instance_spaces(rec: dict[str, Any]) -> list[int]:
    """Every key-space id an instance owns (its own, pyramid levels, label spaces)."""
    return _datatype_or_base(rec["type"]).spaces(rec)


def drop_instance_data(backend: Any, rec: dict[str, Any], store: Any = None) -> None:
    """Delete everything an instance stored (its record is already gone); for an instance
    placed on another backend (``storage=``), also its routes (``store`` given)."""
    if store is not None and rec.get("storage") is not None:
        from diced.backends.layers import drop_placed

        drop_placed(store, rec, lambda: _datatype_or_base(rec["type"]).drop(backend, rec))
        return
    _datatype_or_base(rec["type"]).drop(backend, rec)


def _datatype_or_base(typename: str) -> Datatype:
    """The instance's datatype, or the generic one when the type is not installed (so a
    repo or instance of an unknown type can still be deleted)."""
    try:
        return get_datatype(typename)
    except UnknownDatatypeError:
        from diced.datatypes.base import Datatype

        return Datatype()


def _same_location(a: str, b: str) -> bool:
    from diced.backends.layers import same_location

    return same_location(a, b if "://" in b else os.path.abspath(os.path.expanduser(b)))
