"""Version: a read handle on one version node, and the ref instance handles follow."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from diced.repo.dag import Node
from diced.repo.resolve import VersionCtx

if TYPE_CHECKING:
    from diced.repo.repo import Repo

__all__ = ["Version"]


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

    def commit(self, note: str = "", log: Iterable[str] = (), *, pack: bool = False) -> Version:
        """Lock this version (see :meth:`Repo.commit`).

        Parameters
        ----------
        note : str
            The version's note.
        log : iterable of str
            Log lines, stored with a timestamp.
        pack : bool
            Also pack the chunks it wrote for fewer, ranged reads on object stores
            (:meth:`Repo.pack`).

        Returns
        -------
        Version
        """
        return self.repo.commit(note, log, uuid=self.uuid, pack=pack)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and other.uuid == self.uuid and other.repo.uuid == self.repo.uuid

    def __hash__(self) -> int:
        return hash(self.uuid)

    def __repr__(self) -> str:
        state = "locked" if self.locked else "open"
        return f"<Version {self.uuid[:12]} id={self.id} branch={self.branch!r} {state} note={self.note!r}>"
