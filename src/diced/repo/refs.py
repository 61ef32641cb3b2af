"""Refs of a repo: finding versions by UUID, branch or tag, moving the head, and the
branch and tag refs of new versions (``newversion``, ``branch``, ``tag``); a mixin of
:class:`diced.repo.repo.Repo`."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from diced.errors import DuplicateNameError, InvalidArgumentError, VersionNotFoundError
from diced.repo import keys as K
from diced.repo.dag import DAG, MASTER, Node
from diced.repo.meta import Step
from diced.repo.names import _check_name
from diced.repo.version import Version

__all__ = ["RepoRefsMixin"]


class _RefMoved(Exception):
    """A branch ref moved since the snapshot a change was planned on (internal); with an
    argument, the ref names that version id, which the snapshot lacks."""

    @property
    def unknown(self) -> int | None:
        return self.args[0] if self.args else None


class RepoRefsMixin:
    """Ref lookups and branch/tag creation of a :class:`~diced.repo.repo.Repo` (see the
    module docstring)."""

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

    def _ref_steps(self, node: Node, mode: str, dead: Collection[int] = ()
                   ) -> tuple[list[Step], list[tuple[str, Any]]]:
        """Steps pointing the node's branch (or tag) ref at it; see :meth:`_add_child`.
        ``dead``: version ids a ref may name that have no record (deleted)."""
        first = node.parents[0] if node.parents else None
        if mode == "merge" and first is not None:
            first = self._continued(first)
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
            at = None if cur is None else int(cur)
            if at == first:
                return new
            if at is not None and at not in self._dag.nodes and at not in dead:
                # a ref ahead of our snapshot's versions (a change under way, or one whose
                # journal entry is missing): without that version, "the parent has no
                # child" is not known; _add_child re-reads fully, or, if the version has
                # no record (deleted), passes it in ``dead`` and this move repairs the ref
                raise _RefMoved(at)
            if at != snap:
                raise _RefMoved  # the branch moved since our snapshot: look again
            if first is not None and self._child_on(first, node.branch, but=node.id):
                raise self._has_child(first)
            return new  # the parent is a leaf off the ref (after a merge onto an older node)

        return [(key, fn)], [("b", name)]

    def _continued(self, vid: int) -> int | None:
        """The version a child of ``vid`` continues on its branch: ``vid``, or for a tag, the
        version it names (a merge "onto a tag" continues the tagged version)."""
        v: int | None = vid
        while v is not None and self._dag.nodes[v].tag is not None:
            ps = self._dag.parents_of(v)
            v = ps[0] if ps else None
        return v

    def _child_on(self, vid: int, branch: str, but: int | None = None) -> bool:
        """Whether ``vid`` has a child (other than ``but``, not a tag) on ``branch``."""
        return any(self._dag.nodes[c].branch == branch and self._dag.nodes[c].tag is None
                   for c in self._dag.children.get(vid, []) if c != but)

    def _check_no_child(self, vid: int, branch: str) -> None:
        """Refuse a merge continuing ``vid`` on ``branch`` when ``vid`` has a child there
        already (DVID's rule: at most one child per branch per version; moving the branch
        to the merge would drop that child's line from the branch)."""
        first = self._continued(vid)
        if first is not None and self._child_on(first, branch):
            p = self._dag.nodes[first]
            leaf = self._dag.branch_leaf(p.branch_name)
            raise DuplicateNameError(
                f"version {p.uuid} already has a child on branch {p.branch_name!r}: merge "
                f"into the branch's leaf {leaf.uuid} instead (it comes first), or start a "
                "branch from this version and merge into that")

    def _has_child(self, vid: int | None) -> DuplicateNameError:
        p = self._dag.nodes[vid] if vid is not None else None
        name = p.uuid if p is not None else vid
        branch = p.branch_name if p is not None else "?"
        return DuplicateNameError(f"version {name} already has a child on branch {branch!r}; "
                                  "use branch(name) to fork")
