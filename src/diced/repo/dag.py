"""The version DAG of one repo: pure data and graph logic, no I/O.

A node is named by a 32-hex UUID and has a small repo-local version id. Ids grow in creation
order, so every ancestor of a node has a smaller id than the node; resolution relies on that
("the nearest ancestor that wrote a key" is the greatest writer id among the ancestors, see
:mod:`diced.repo.resolve`).

History follows git's rule everywhere: a merge node belongs to the branch of its first parent,
``branch~N`` and ``Repo.log()`` walk first parents, and a branch's leaf is its newest node
without a child on the same branch (so merging two feature branches moves only the first
one). Every walk over the graph is iterative: histories of any depth work.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import networkx as nx

from diced.errors import (
    AmbiguousVersionError,
    CorruptMetadataError,
    InvalidArgumentError,
    VersionNotFoundError,
)

__all__ = ["DAG", "MASTER", "Node", "new_uuid"]

#: DVID's name for the unnamed default branch.
MASTER = "master"
_HEX = re.compile(r"^[0-9a-f]+$")


def new_uuid() -> str:
    """A fresh random version UUID: 32 lowercase hex characters, as DVID makes them."""
    return uuidlib.uuid4().hex


@dataclass
class Node:
    """One version node."""

    uuid: str
    id: int
    parents: list[int]
    branch: str = ""
    note: str = ""
    log: list[str] = field(default_factory=list)
    locked: bool = False
    created: float = 0.0
    updated: float = 0.0
    tag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The node as the JSON record stored in the repo document."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        """A node from its stored record.

        Raises
        ------
        CorruptMetadataError
            The record has missing or unknown fields.
        """
        try:
            return cls(**d)
        except TypeError as exc:
            raise CorruptMetadataError(f"bad version node record {d!r}: {exc}") from exc

    @property
    def branch_name(self) -> str:
        """The node's branch, ``'master'`` for the default branch."""
        return self.branch or MASTER


class DAG:
    """An immutable snapshot of a repo's version graph.

    Build it from a list of :class:`Node`; derived structures (children, ancestor sets,
    the networkx graph) are computed lazily and cached, which is safe because a snapshot
    never changes (the repo makes a new one after each metadata update).
    """

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.nodes: dict[int, Node] = {n.id: n for n in nodes}
        self.by_uuid: dict[str, Node] = {n.uuid: n for n in self.nodes.values()}
        self._anc: dict[int, frozenset[int]] = {}

    # --- graph structure -----------------------------------------------------------------

    @cached_property
    def graph(self) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        for n in self.nodes.values():
            for p in n.parents:
                g.add_edge(p, n.id)
        return g

    @cached_property
    def children(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {i: [] for i in self.nodes}
        for n in self.nodes.values():
            for p in n.parents:
                out[p].append(n.id)
        return out

    @property
    def root(self) -> Node:
        """The root node (the smallest id)."""
        return self.nodes[min(self.nodes)]

    def ancestors(self, vid: int) -> frozenset[int]:
        """Ids of ``vid`` and all its ancestors (cached per snapshot).

        An iterative walk (no recursion, so any history depth works) that reuses the cached
        sets of ancestors met on the way; only the asked-for set is cached, so memory stays
        proportional to the versions actually queried.
        """
        hit = self._anc.get(vid)
        if hit is not None:
            return hit
        acc: set[int] = {vid}
        todo = [vid]
        while todo:
            for p in self.nodes[todo.pop()].parents:
                if p in acc:
                    continue
                known = self._anc.get(p)
                if known is not None:
                    acc |= known
                else:
                    acc.add(p)
                    todo.append(p)
        out = frozenset(acc)
        self._anc[vid] = out
        return out

    def is_ancestor(self, a: int, b: int) -> bool:
        """Whether ``a`` is ``b`` or one of its ancestors."""
        return a in self.ancestors(b)

    def merge_bases(self, ids: Iterable[int]) -> list[int]:
        """The lowest common ancestors of ``ids`` (usually one; several after criss-cross merges)."""
        ids = list(ids)
        common = frozenset.intersection(*(self.ancestors(i) for i in ids))
        # common ancestors are closed under "parent of": one is an ancestor of another common
        # ancestor exactly when one of its children is common too
        return sorted(c for c in common if not any(k in common for k in self.children[c]))

    def first_parent_chain(self, vid: int) -> list[int]:
        """``vid``, its first parent, that one's first parent, ... up to the root."""
        out = [vid]
        while self.nodes[out[-1]].parents:
            out.append(self.nodes[out[-1]].parents[0])
        return out

    def branch_leaf(self, branch: str) -> Node:
        """The newest node on ``branch`` ("" and "master" name the default branch)."""
        name = "" if branch == MASTER else branch
        on = [n for n in self.nodes.values() if n.branch == name and n.tag is None]
        if not on:
            raise VersionNotFoundError(f"no branch named {branch!r}")
        # the leaf is the node with no child on the same branch; newest if several
        leaves = [n for n in on if not any(self.nodes[c].branch == name
                                           for c in self.children[n.id])]
        return max(leaves or on, key=lambda n: n.id)

    def branch_ancestry(self, branch: str) -> list[Node]:
        """From the branch leaf up to the root through first parents (what ``branch~N``
        counts, as git's ``~N``)."""
        return [self.nodes[i] for i in self.first_parent_chain(self.branch_leaf(branch).id)]

    def branch_of(self, vid: int) -> str:
        """The branch a new child continuing ``vid`` belongs to: ``vid``'s own branch, or for
        a tag, the branch of the version it names. Merge nodes get their first parent's
        branch (``""`` is the default branch)."""
        node = self.nodes[vid]
        while node.tag is not None and node.parents:
            node = self.nodes[node.parents[0]]
        return node.branch

    def branches(self) -> dict[str, Node]:
        """``{branch name: leaf node}`` for every branch, ``'master'`` included."""
        names = {n.branch for n in self.nodes.values() if n.tag is None}
        return {(b or MASTER): self.branch_leaf(b) for b in sorted(names)}

    def tags(self) -> dict[str, Node]:
        """``{tag name: tag node}``."""
        return {n.tag: n for n in self.nodes.values() if n.tag is not None}

    def topological(self) -> Iterator[Node]:
        """Every node, parents before children."""
        for i in nx.topological_sort(self.graph):
            yield self.nodes[i]

    # --- lookup ----------------------------------------------------------------------------

    def resolve(self, spec: str) -> Node:
        """Find a node from a UUID, a unique UUID prefix, a tag, ``branch``, ``:branch``,
        ``prefix:branch`` or ``branch~N`` (N first-parent steps back from the branch leaf)."""
        if not isinstance(spec, str) or not spec:
            raise InvalidArgumentError(f"a version must be a non-empty string, got {spec!r}")
        if spec in self.by_uuid:
            return self.by_uuid[spec]
        tags = self.tags()
        if spec in tags:
            return tags[spec]
        if "~" in spec:
            name, _, num = spec.rpartition("~")
            if not num.isdigit():
                raise InvalidArgumentError(f"bad version spec {spec!r}: '~' must be followed by N")
            chain = self.branch_ancestry(self._branch_of_spec(name))
            n = int(num)
            if n >= len(chain):
                raise VersionNotFoundError(
                    f"{spec!r}: branch {name!r} has only {len(chain)} versions")
            return chain[n]
        if ":" in spec:
            return self.branch_leaf(self._branch_of_spec(spec))
        low = spec.lower()
        if _HEX.match(low):
            hits = [n for u, n in self.by_uuid.items() if u.startswith(low)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise AmbiguousVersionError(
                    f"UUID prefix {spec!r} matches {len(hits)} versions; give more characters")
        if any(n.branch == spec for n in self.nodes.values()) or spec == MASTER:
            return self.branch_leaf(spec)
        raise VersionNotFoundError(f"no version matches {spec!r}")

    def _branch_of_spec(self, spec: str) -> str:
        if ":" in spec:
            prefix, _, branch = spec.partition(":")
            if prefix:
                self.resolve(prefix)  # must exist in this repo
            return branch
        return spec
