"""Repo and Version: the version DAG facade over a store's backend."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from diced.datatypes.registry import get_datatype
from diced.errors import (
    BackendError,
    CorruptMetadataError,
    DuplicateNameError,
    InstanceNotFoundError,
    InvalidArgumentError,
    LockedNodeError,
    UnknownDatatypeError,
    UnlockedNodeError,
    VersionNotFoundError,
)
from diced.repo import keys as K
from diced.repo.context import InstanceContext
from diced.repo.dag import DAG, MASTER, Node, new_uuid
from diced.repo.diff import Diff
from diced.repo.merge import Conflict, Strategy
from diced.repo.meta import dump_doc, load_doc, next_counter, update_docs
from diced.repo.resolve import VersionCtx

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
        self._doc: dict[str, Any] = {}
        self._raw: bytes | None = None
        self._dag = DAG([])
        if head:
            self.refresh()
            node = self._dag.resolve(head)
        else:  # the document and the stored head in one round of requests
            raw, saved = self.backend.get_many([K.repo_key(uuid), K.head_key(uuid)])
            self.refresh(raw)
            node = self._saved_head(saved)
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

    def refresh(self, _raw: bytes | None | bool = False) -> None:
        """Re-read the repo's metadata (other processes may have changed it)."""
        raw = self.backend.get(K.repo_key(self.uuid)) if _raw is False else _raw
        if raw is None:
            from diced.errors import RepoNotFoundError

            raise RepoNotFoundError(f"repo {self.uuid} does not exist (deleted?)")
        if raw != self._raw:
            self._set_doc(raw)

    def _set_doc(self, raw: bytes, doc: dict[str, Any] | None = None) -> None:
        if doc is None:
            doc = load_doc(raw, f"repo {self.uuid}")
            assert doc is not None
        try:
            nodes = [Node.from_dict(n) for n in doc["nodes"]]
            doc["instances"]
        except (KeyError, TypeError) as exc:
            raise CorruptMetadataError(f"repo {self.uuid}: metadata lacks {exc}") from exc
        if doc.get("format") != K.REPO_FORMAT:
            raise CorruptMetadataError(
                f"repo {self.uuid}: metadata format {doc.get('format')!r} is not {K.REPO_FORMAT}")
        self._doc, self._raw, self._dag = doc, raw, DAG(nodes)

    def _mutate(self, fn: Callable[[dict[str, Any]], dict[str, bytes | None] | None],
                extra_keys: Iterable[str] = ()) -> dict[str, Any]:
        """Apply ``fn`` to a fresh copy of the repo document, atomically where possible.

        ``fn`` edits the document in place and may return extra key changes; raising aborts
        with nothing stored.
        """
        rk = K.repo_key(self.uuid)
        extra = list(extra_keys)

        def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
            doc = load_doc(cur[rk], f"repo {self.uuid}")
            if doc is None:
                from diced.errors import RepoNotFoundError

                raise RepoNotFoundError(f"repo {self.uuid} does not exist (deleted?)")
            more = fn(doc) or {}
            doc["updated"] = time.time()
            written["doc"] = doc
            return {rk: dump_doc(doc), **more}

        written: dict[str, dict[str, Any]] = {}
        changes = update_docs(self.backend, [rk, *extra], body)
        self._set_doc(changes[rk], written["doc"])  # type: ignore[arg-type]
        return self._doc

    def _ctx(self, vid: int) -> VersionCtx:
        node = self._dag.nodes.get(vid)
        if node is None:
            self.refresh()
            node = self._dag.nodes.get(vid)
            if node is None:
                raise VersionNotFoundError(f"version id {vid} not in repo {self.alias!r}")
        nodes = self._dag.nodes
        return VersionCtx(self.uuid, vid, self._dag.ancestors(vid), node.locked, node.uuid,
                          uuid_of=lambda v: nodes[v].uuid)

    @property
    def alias(self) -> str:
        """The repo's name in its store."""
        return self._doc.get("alias", "")

    @property
    def description(self) -> str:
        """The repo's free-text description."""
        return self._doc.get("description", "")

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
        """Lock a version (default: the head) with a note and log lines. Returns it."""
        node = self._node(uuid)
        lines = [str(x) for x in log]
        vid = node.id

        def fn(doc: dict[str, Any]) -> dict[str, bytes | None]:
            rec = _node_rec(doc, vid)
            if rec["locked"]:
                raise LockedNodeError(f"version {rec['uuid']} is already locked")
            rec["locked"] = True
            if note:
                rec["note"] = note
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            rec["log"].extend(f"{stamp}  {line}" for line in lines)
            rec["updated"] = time.time()
            return {K.lock_key(self.uuid, vid): b"1"}

        self._mutate(fn, [K.lock_key(self.uuid, vid)])
        # object stores / file://: build the version's compacted chunk index now (reads at
        # any depth then cost O(1) requests; see repo/manifests.py; no-op on LMDB)
        from diced.repo.manifests import compact_version
        compact_version(self, vid)
        if vid == self._head_id:
            self._move_head(vid)  # remember it: reopening lands on the committed head
        return Version(self, self._dag.nodes[vid])

    lock = commit

    def _add_child(self, parents: list[int], branch: str, note: str, *, tag: str | None = None,
                   uuid: str | None = None, check: Callable[[dict[str, Any]], None] | None = None,
                   vid: int | None = None, move_head: bool = True) -> Version:
        child_uuid = uuid or new_uuid()
        if uuid is not None and (len(uuid) != 32 or any(c not in "0123456789abcdef" for c in uuid)) \
                and tag is None:
            raise InvalidArgumentError(f"an assigned UUID must be 32 lowercase hex characters: {uuid!r}")
        created: dict[str, int] = {}

        def fn(doc: dict[str, Any]) -> None:
            for p in parents:
                rec = _node_rec(doc, p)
                if not rec["locked"]:
                    raise UnlockedNodeError(
                        f"version {rec['uuid']} is open; lock (commit) it before making children")
            if any(n["uuid"] == child_uuid for n in doc["nodes"]):
                raise DuplicateNameError(f"version UUID {child_uuid} already exists")
            if check is not None:
                check(doc)
            new_id = vid if vid is not None else doc["next_id"]
            doc["next_id"] = max(doc["next_id"], new_id + 1)
            now = time.time()
            doc["nodes"].append(Node(child_uuid, new_id, list(parents), branch, note, [],
                                     locked=tag is not None, created=now, updated=now,
                                     tag=tag).to_dict())
            created["id"] = new_id

        extra = [K.lock_key(self.uuid, vid)] if (tag is not None and vid is not None) else []
        self._mutate(fn, extra)
        if tag is not None:  # tags are locked at birth
            self.backend.set(K.lock_key(self.uuid, created["id"]), b"1")
        node = self._dag.nodes[created["id"]]
        if move_head and tag is None:
            self._move_head(node.id)
        return Version(self, node)

    def _reserve_id(self) -> int:
        """A fresh version id, never handed out again, for a node published later with
        ``_add_child(..., vid=)`` (data can be written at it before the node exists)."""
        reserved: dict[str, int] = {}

        def reserve(doc: dict[str, Any]) -> None:
            reserved["id"] = doc["next_id"]
            doc["next_id"] += 1

        self._mutate(reserve)
        return reserved["id"]

    def _delete_nodes(self, vids: Iterable[int]) -> None:
        """Remove the version nodes ``vids`` from the repo's metadata (their records, lock
        marks and any stored head pointing at them); their data is not touched. The caller
        checks that the result is still a valid DAG (no remaining node has a removed parent).
        """
        gone = set(vids)

        def fn(doc: dict[str, Any]) -> dict[str, bytes | None]:
            doc["nodes"] = [n for n in doc["nodes"] if n["id"] not in gone]
            return {K.lock_key(self.uuid, v): None for v in gone}

        self._mutate(fn, [K.lock_key(self.uuid, v) for v in gone])

    def newversion(self, note: str = "", *, uuid: str | None = None,
                   parent: str | Version | None = None) -> Version:
        """A new open child of a locked version (default: head) on the same branch; becomes head."""
        p = self._node(parent)

        def check(doc: dict[str, Any]) -> None:
            for n in doc["nodes"]:
                if p.id in n["parents"] and n["branch"] == p.branch and n.get("tag") is None:
                    raise DuplicateNameError(
                        f"version {p.uuid} already has a child on branch {p.branch_name!r}; "
                        "use branch(name) to fork")

        return self._add_child([p.id], p.branch, note, uuid=uuid, check=check)

    def branch(self, name: str, note: str = "", *, uuid: str | None = None,
               parent: str | Version | None = None) -> Version:
        """Start branch ``name`` at a new open child of a locked version (default: head).

        The child becomes the head, so unpinned handles now write to it.
        """
        _check_name(name, "branch")
        if name == MASTER:
            raise InvalidArgumentError("'master' is the default branch; use newversion()")
        p = self._node(parent)

        def check(doc: dict[str, Any]) -> None:
            if any(n["branch"] == name for n in doc["nodes"]):
                raise DuplicateNameError(f"branch {name!r} already exists")

        return self._add_child([p.id], name, note, uuid=uuid, check=check)

    create_branch_named = branch

    def tag(self, name: str, note: str = "", *, parent: str | Version | None = None) -> Version:
        """Name a locked version: a locked child whose UUID is the tag text (as in DVID)."""
        _check_name(name, "tag")
        p = self._node(parent)

        def check(doc: dict[str, Any]) -> None:
            if any(n.get("tag") == name or n["uuid"] == name for n in doc["nodes"]):
                raise DuplicateNameError(f"tag {name!r} already exists")

        return self._add_child([p.id], f"tag-{name}", note, tag=name, uuid=name, check=check,
                               move_head=False)

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

        def merged(doc: dict[str, Any]) -> bool:
            changed = False
            for rec in doc["instances"].values():
                changed |= bool(_datatype_or_base(rec["type"]).merge_record(rec, parents, vid))
            return changed

        import copy

        if merged(copy.deepcopy(self._doc)):  # only write the document when a record changes
            self._mutate(lambda doc: merged(doc) and None)

    def diff(self, a: str | Version, b: str | Version | None = None) -> Diff:
        """What changed from version ``a`` to version ``b`` (default: head), per instance."""
        self.refresh()
        na, nb = self._node(a), self._node(b)
        ca, cb = self._ctx(na.id), self._ctx(nb.id)
        out = Diff(na.uuid, nb.uuid)
        for name, rec in sorted(self._doc["instances"].items()):
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
        return {n: r["type"] for n, r in sorted(self._doc["instances"].items()) if r["created"] in anc}

    def _instance(self, name: str, ref: _Ref) -> Any:
        rec = self._doc["instances"].get(name)
        if rec is None:
            self.refresh()
            rec = self._doc["instances"].get(name)
        vid = self._head_id if ref.vid is None else ref.vid
        if rec is None or rec["created"] not in self._dag.ancestors(vid):
            raise InstanceNotFoundError(
                f"no data instance {name!r} at version {self._dag.nodes[vid].uuid[:12]} "
                f"of repo {self.alias!r}")
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
                        **options: Any) -> Any:
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
                                     exist_ok=exist_ok)

    def _existing_instance(self, name: str, typename: str, config: dict[str, Any]) -> Any:
        """For ``exist_ok=True``: the instance ``name`` if it exists with this configuration,
        ``None`` if it does not exist; :class:`DuplicateNameError` if it differs."""
        self.refresh()
        rec = self._doc["instances"].get(name)
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
                         exist_ok: bool = False) -> Any:
        _check_name(name, "instance name")
        if exist_ok:
            found = self._existing_instance(name, typename, config)
            if found is not None:
                return found
        head = self._dag.nodes[self._head_id]
        if head.locked:
            raise LockedNodeError(f"version {head.uuid} is locked; new instances need an open version")
        self.refresh()  # refuse a taken name before allocating ids for it
        if name in self._doc["instances"]:
            raise DuplicateNameError(f"repo {self.alias!r} already has an instance {name!r}")
        inst_id = next_counter(self.backend, "instance")
        _datatype(typename).allocate(config, lambda: next_counter(self.backend, "instance"))
        vid = head.id

        def fn(doc: dict[str, Any]) -> None:
            if name in doc["instances"]:
                raise DuplicateNameError(f"repo {self.alias!r} already has an instance {name!r}")
            if _node_rec(doc, vid)["locked"]:
                raise LockedNodeError(f"version {head.uuid} was locked")
            doc["instances"][name] = {"id": inst_id, "type": typename, "created": vid,
                                      "config": config}

        self._mutate(fn)
        return self[name]

    def _update_instance(self, name: str, fn: Callable[[dict[str, Any]], None]) -> None:
        def body(doc: dict[str, Any]) -> None:
            rec = doc["instances"].get(name)
            if rec is None:
                raise InstanceNotFoundError(f"no data instance {name!r}")
            fn(rec)

        self._mutate(body)

    def create_array(self, name: str, dtype: Any, shape: Iterable[int] | None = None, *,
                     chunks: Iterable[int] | None = None, fill_value: Any = 0,
                     codec: Any = None, origin: Iterable[int] | None = None,
                     max_scale: int = 0, exist_ok: bool = False) -> Any:
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
                                    max_scale=max_scale, exist_ok=exist_ok)

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
            ``chunks`` (multiples of 8, default 64³), ``max_scale``, ``codec``, ``origin``.

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

    def create_keyvalue(self, name: str, *, exist_ok: bool = False) -> Any:
        """Create a versioned dict of bytes (DVID keyvalue).

        Parameters
        ----------
        name : str
            Instance name, unique in the repo.
        exist_ok : bool, default False
            Return the existing keyvalue ``name`` instead of raising.

        Returns
        -------
        KeyValue
            A handle following the repo head.
        """
        return self.create_instance(name, "keyvalue", exist_ok=exist_ok)

    def delete_instance(self, name: str) -> None:
        """Delete an instance and its data from every version (irreversible, as in DVID)."""
        rec = self._doc["instances"].get(name)
        if rec is None:
            raise InstanceNotFoundError(f"no data instance {name!r}")

        def fn(doc: dict[str, Any]) -> None:
            doc["instances"].pop(name, None)

        self._mutate(fn)
        drop_instance_data(self.backend, rec)

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


def instance_spaces(rec: dict[str, Any]) -> list[int]:
    """Every key-space id an instance owns (its own, pyramid levels, label spaces)."""
    return _datatype_or_base(rec["type"]).spaces(rec)


def drop_instance_data(backend: Any, rec: dict[str, Any]) -> None:
    """Delete everything an instance stored (its record is already gone)."""
    _datatype_or_base(rec["type"]).drop(backend, rec)


def _datatype_or_base(typename: str) -> Datatype:
    """The instance's datatype, or the generic one when the type is not installed (so a
    repo or instance of an unknown type can still be deleted)."""
    try:
        return get_datatype(typename)
    except UnknownDatatypeError:
        from diced.datatypes.base import Datatype

        return Datatype()


def _node_rec(doc: dict[str, Any], vid: int) -> dict[str, Any]:
    for n in doc["nodes"]:
        if n["id"] == vid:
            return n
    raise VersionNotFoundError(f"version id {vid} not found")
