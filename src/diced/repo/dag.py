"""The version DAG of one repo: pure data and graph logic, no I/O.

A node is named by a 32-hex UUID and has a small repo-local version id. Ids grow in creation
order, so every ancestor of a node has a smaller id than the node; resolution relies on that
("the nearest ancestor that wrote a key" is the greatest writer id among the ancestors, see
:mod:`diced.repo.resolve`).

History follows git's rule everywhere: a merge node belongs to the branch of its first parent,
``branch~N`` and ``Repo.log()`` walk first parents, and a branch's leaf is what its branch
ref names (the newest node without a child on the same branch when no ref is stored).

Scale: a snapshot keeps its nodes in columns (numpy arrays indexed by version id), so
10,000 versions cost a few hundred kilobytes and load without building 10,000 Python
objects; :class:`Node` objects are made on access. The graph is cut into *chains* (runs of
nodes each continuing its first parent), so an ancestor set is a handful of chain prefixes
found by a walk over chains, not over nodes, and ``branch~N`` counts chain lengths. Every
walk is iterative: histories of any depth work. Nodes and their columns live in
:mod:`diced.repo.nodes`, the chains in :mod:`diced.repo.chains`; this module holds the
:class:`DAG` snapshot.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from diced.errors import (
    AmbiguousVersionError,
    InvalidArgumentError,
    VersionNotFoundError,
)
from diced.repo.chains import _Chains
from diced.repo.nodes import _HEX, MASTER, Columns, Node, _is_uuid, new_uuid

__all__ = ["DAG", "MASTER", "Node", "new_uuid"]

#: ancestor sets kept per repo handle (each up to the repo's size)
_ANC_CACHE = 16


class _NodeMap(Mapping[int, Node]):
    """``{version id: Node}`` of a snapshot, building Node objects on access."""

    def __init__(self, dag: DAG) -> None:
        self._dag = dag
        self._made: dict[int, Node] = {}

    def __getitem__(self, vid: int) -> Node:
        hit = self._made.get(vid)
        if hit is not None:
            return hit
        cols = self._dag._cols
        if not isinstance(vid, (int, np.integer)) or not 0 <= vid < cols.size \
                or not cols.exists[vid]:
            raise KeyError(vid)
        node = self._made[int(vid)] = cols.node(int(vid))
        return node

    def __contains__(self, vid: object) -> bool:
        cols = self._dag._cols
        return isinstance(vid, (int, np.integer)) and 0 <= vid < cols.size \
            and bool(cols.exists[vid])

    def __iter__(self) -> Iterator[int]:
        return iter(self._dag._ids().tolist())

    def __len__(self) -> int:
        return len(self._dag._ids())


class _UuidMap(Mapping[str, Node]):
    """``{uuid: Node}`` of a snapshot, searched in the UUID column."""

    def __init__(self, dag: DAG) -> None:
        self._dag = dag

    def __getitem__(self, uuid: str) -> Node:
        vid = self._dag._find_uuid(uuid)
        if vid is None:
            raise KeyError(uuid)
        return self._dag.nodes[vid]

    def __contains__(self, uuid: object) -> bool:
        return isinstance(uuid, str) and self._dag._find_uuid(uuid) is not None

    def __iter__(self) -> Iterator[str]:
        cols = self._dag._cols
        return (cols.uuid_of(v) for v in self._dag._ids().tolist())

    def __len__(self) -> int:
        return len(self._dag._ids())


class _ChildMap(Mapping[int, list[int]]):
    """``{version id: child ids}`` of a snapshot, found in the parent columns."""

    def __init__(self, dag: DAG) -> None:
        self._dag = dag

    def __getitem__(self, vid: int) -> list[int]:
        if vid not in self._dag.nodes:
            raise KeyError(vid)
        cols = self._dag._cols
        kids = np.flatnonzero(cols.exists & (cols.fp == vid)).tolist()
        kids += [c for c, more in cols.extra.items() if vid in more and cols.exists[c]]
        return sorted(kids)

    def __iter__(self) -> Iterator[int]:
        return iter(self._dag.nodes)

    def __len__(self) -> int:
        return len(self._dag.nodes)


class DAG:
    """An immutable snapshot of a repo's version graph.

    Build it from a list of :class:`Node` (or, inside the repo, from columns and refs);
    derived structures are computed lazily and cached, which is safe because a snapshot
    never changes (the repo makes a new one after each metadata update, sharing what it
    can with the previous one).

    Parameters
    ----------
    nodes : iterable of Node
    refs : dict, optional
        ``{branch name: leaf id}`` of the stored branch refs (``"master"`` for the default
        branch); a branch without a valid ref falls back to its newest childless node.
    """

    def __init__(self, nodes: Iterable[Node] = (), refs: Mapping[str, int] | None = None,
                 *, _cols: Columns | None = None, _prev: DAG | None = None,
                 _added: list[int] | None = None) -> None:
        if _cols is None:
            _cols = Columns()
            for n in nodes:
                _cols.put(n)
        self._cols = _cols
        self.refs: dict[str, int] = dict(refs or {})
        self.nodes: Mapping[int, Node] = _NodeMap(self)
        self.by_uuid: Mapping[str, Node] = _UuidMap(self)
        self.children: Mapping[int, list[int]] = _ChildMap(self)
        self._idcache: np.ndarray | None = None
        self._uuid_u64: np.ndarray | None = None
        self._chains: _Chains | None = None
        if _prev is not None:
            self._anc = _prev._anc  # ancestor sets never change: parents are immutable
            if _added is not None and _prev._chains is not None:
                self._chains = _Chains(_cols, _prev._chains, _added)
        else:
            self._anc: OrderedDict[int, frozenset[int]] = OrderedDict()

    def derive(self, put: Iterable[Node] = (), drop: Iterable[int] = (),
               refs: Mapping[str, int] | None = None) -> DAG:
        """A new snapshot with nodes added or replaced (``put``), removed (``drop``) and
        the branch refs replaced (if given). Parents of a kept node never change."""
        cols = self._cols.copy()
        put, drop = list(put), list(drop)
        new = [n.id for n in put if n.id not in self.nodes]
        for vid in drop:
            cols.drop(vid)
        for n in put:
            cols.put(n)
        top = int(self._ids()[-1]) if len(self._ids()) else 0
        appended = not drop and all(v > top for v in new)
        out = DAG(_cols=cols, refs=self.refs if refs is None else refs, _prev=self,
                  _added=new if appended else None)
        for vid in drop:
            out._anc.pop(vid, None)
        if drop:  # cached sets may hold dropped ids only if the caller broke the DAG
            out._anc = OrderedDict((k, v) for k, v in out._anc.items()
                                   if not v.intersection(drop))
        return out

    # --- columns ---------------------------------------------------------------------------

    def _ids(self) -> np.ndarray:
        if self._idcache is None:
            self._idcache = np.flatnonzero(self._cols.exists)
        return self._idcache

    def _find_uuid(self, uuid: str) -> int | None:
        cols = self._cols
        if not _is_uuid(uuid):
            for vid, u in cols.special.items():
                if u == uuid:
                    return vid
            return None
        want = np.frombuffer(bytes.fromhex(uuid), np.uint64)
        if self._uuid_u64 is None:
            self._uuid_u64 = np.ascontiguousarray(cols.uuid16).view(np.uint64)
        u = self._uuid_u64
        hits = np.flatnonzero((u[:, 0] == want[0]) & (u[:, 1] == want[1]) & cols.exists)
        return int(hits[0]) if len(hits) else None

    def _prefix_hits(self, prefix: str) -> list[int]:
        cols = self._cols
        nb = len(prefix) // 2
        mask = cols.exists.copy()
        if nb:
            mask &= (cols.uuid16[:, :nb] == np.frombuffer(bytes.fromhex(prefix[:2 * nb]),
                                                          np.uint8)).all(axis=1)
        if len(prefix) % 2:
            mask &= (cols.uuid16[:, nb] >> 4) == int(prefix[-1], 16)
        for vid in cols.special:
            mask[vid] = False
        hits = np.flatnonzero(mask).tolist()
        hits += [v for v, u in cols.special.items() if u.startswith(prefix)]
        return hits

    def _chain(self) -> _Chains:
        if self._chains is None:
            self._chains = _Chains(self._cols)
        return self._chains

    # --- graph structure -----------------------------------------------------------------

    @property
    def graph(self) -> Any:
        """The graph as a :class:`networkx.DiGraph` (edges parent -> child); built on use."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        cols = self._cols
        for vid in self._ids().tolist():
            for p in ([int(cols.fp[vid])] if cols.fp[vid] >= 0 else []) + \
                    list(cols.extra.get(vid, ())):
                g.add_edge(p, vid)
        return g

    @property
    def root(self) -> Node:
        """The root node (the smallest id)."""
        ids = self._ids()
        if not len(ids):
            raise VersionNotFoundError("the repo has no versions")
        return self.nodes[int(ids[0])]

    def parents_of(self, vid: int) -> list[int]:
        """Parent ids of ``vid`` (first parent first)."""
        cols = self._cols
        return [] if cols.fp[vid] < 0 else [int(cols.fp[vid]), *cols.extra.get(vid, ())]

    def ancestors(self, vid: int) -> frozenset[int]:
        """Ids of ``vid`` and all its ancestors.

        Found as prefixes of chains by an iterative walk over chains (not nodes), and kept
        in a small cache shared by later snapshots of the same repo handle (a node's
        ancestors never change); a child whose parents' sets are cached reuses them.
        """
        hit = self._anc.get(vid)
        if hit is not None:
            self._anc.move_to_end(vid)
            return hit
        if vid not in self.nodes:
            raise VersionNotFoundError(f"version id {vid} is not in this repo")
        parents = self.parents_of(vid)
        known = [self._anc.get(p) for p in parents]
        if parents and all(k is not None for k in known):
            out = frozenset().union(*known) | {vid}  # type: ignore[arg-type]
        else:
            out = frozenset(self._walk(vid))
        self._anc[vid] = out
        while len(self._anc) > _ANC_CACHE:
            self._anc.popitem(last=False)
        return out

    def _walk(self, vid: int) -> list[int]:
        ch = self._chain()
        head, depth, fp = ch.head, ch.depth, self._cols.fp
        reach: dict[int, int] = {}
        todo = [vid]
        while todo:
            u = todo.pop()
            h, d = int(head[u]), int(depth[u])
            old = reach.get(h, -1)
            if old >= d:
                continue
            reach[h] = d
            if old < 0 and fp[h] >= 0:
                todo.append(int(fp[h]))
            links = ch.links.get(h)
            if links:
                lo = bisect.bisect_right(links, (old, 1 << 62))
                for dd, p in links[lo:]:
                    if dd > d:
                        break
                    todo.append(p)
        out: list[int] = []
        for h, d in reach.items():
            out += ch.chains[h][:d + 1]
        return out

    def is_ancestor(self, a: int, b: int) -> bool:
        """Whether ``a`` is ``b`` or one of its ancestors."""
        return a in self.ancestors(b)

    def merge_bases(self, ids: Iterable[int]) -> list[int]:
        """The lowest common ancestors of ``ids`` (usually one; several after criss-cross merges)."""
        ids = list(ids)
        common = frozenset.intersection(*(self.ancestors(i) for i in ids))
        if not common:
            return []
        # common ancestors are closed under "parent of": c is a lowest one exactly when no
        # child of c is common; only parents of common nodes can fail that
        arr = np.fromiter(common, np.int64, len(common))
        cols = self._cols
        not_lowest = set(cols.fp[arr][cols.fp[arr] >= 0].tolist())
        for c in common:
            not_lowest.update(cols.extra.get(c, ()))
        return sorted(common - not_lowest)

    def first_parent_chain(self, vid: int) -> list[int]:
        """``vid``, its first parent, that one's first parent, ... up to the root."""
        ch = self._chain()
        out: list[int] = []
        u = vid
        while u >= 0:
            h, d = int(ch.head[u]), int(ch.depth[u])
            out += ch.chains[h][d::-1]
            u = int(self._cols.fp[h])
        return out

    def nth_first_parent(self, vid: int, n: int) -> int | None:
        """The id ``n`` first-parent steps above ``vid`` (``None``: the history is shorter)."""
        ch = self._chain()
        u = vid
        while u >= 0:
            h, d = int(ch.head[u]), int(ch.depth[u])
            if n <= d:
                return ch.chains[h][d - n]
            n -= d + 1
            u = int(self._cols.fp[h])
        return None

    def _on_branch(self, name: str) -> np.ndarray:
        cols = self._cols
        b = cols.bindex.get(name)
        if b is None:
            return np.zeros(0, np.int64)
        mask = cols.exists & (cols.branch == b)
        for vid in cols.tag:
            mask[vid] = False
        return np.flatnonzero(mask)

    def branch_leaf(self, branch: str) -> Node:
        """The newest node on ``branch`` ("" and "master" name the default branch): the
        node its branch ref names."""
        name = "" if branch == MASTER else branch
        ref = self.refs.get(name or MASTER)
        cols = self._cols
        if ref is not None and ref in self.nodes and cols.tag.get(ref) is None \
                and cols.bnames[cols.branch[ref]] == name:
            return self.nodes[ref]
        on = self._on_branch(name)
        if not len(on):
            raise VersionNotFoundError(f"no branch named {branch!r}")
        # no usable ref (an interrupted write): the newest node without a child on the branch
        b = cols.bindex[name]
        has_child = np.zeros(cols.size, bool)
        fps = cols.fp[on]
        has_child[fps[fps >= 0]] = True
        for c, more in cols.extra.items():
            if cols.exists[c] and cols.branch[c] == b and c not in cols.tag:
                has_child[list(more)] = True
        leaves = on[~has_child[on]]
        return self.nodes[int((leaves if len(leaves) else on)[-1])]

    def branch_ancestry(self, branch: str) -> list[Node]:
        """From the branch leaf up to the root through first parents (what ``branch~N``
        counts, as git's ``~N``)."""
        return [self.nodes[i] for i in self.first_parent_chain(self.branch_leaf(branch).id)]

    def branch_of(self, vid: int) -> str:
        """The branch a new child continuing ``vid`` belongs to: ``vid``'s own branch, or for
        a tag, the branch of the version it names. Merge nodes get their first parent's
        branch (``""`` is the default branch)."""
        cols = self._cols
        while vid in cols.tag and cols.fp[vid] >= 0:
            vid = int(cols.fp[vid])
        return cols.bnames[cols.branch[vid]]

    def branch_names(self) -> list[str]:
        """Names of the branches that have nodes (``""`` for the default branch), sorted."""
        cols = self._cols
        ids = self._ids()
        mask = np.ones(len(ids), bool)
        if cols.tag:
            mask &= ~np.isin(ids, np.fromiter(cols.tag, np.int64, len(cols.tag)))
        used = np.unique(cols.branch[ids[mask]])
        return sorted(cols.bnames[i] for i in used.tolist())

    def branches(self) -> dict[str, Node]:
        """``{branch name: leaf node}`` for every branch, ``'master'`` included."""
        return {(b or MASTER): self.branch_leaf(b) for b in self.branch_names()}

    def tags(self) -> dict[str, Node]:
        """``{tag name: tag node}``."""
        return {name: self.nodes[vid] for vid, name in sorted(self._cols.tag.items())
                if vid in self.nodes}

    def topological(self) -> Iterator[Node]:
        """Every node, parents before children (ids ascend along every edge)."""
        for i in self._ids().tolist():
            yield self.nodes[i]

    # --- lookup ----------------------------------------------------------------------------

    def resolve(self, spec: str) -> Node:
        """Find a node from a UUID, a unique UUID prefix, a tag, ``branch``, ``:branch``,
        ``prefix:branch`` or ``branch~N`` (N first-parent steps back from the branch leaf)."""
        if not isinstance(spec, str) or not spec:
            raise InvalidArgumentError(f"a version must be a non-empty string, got {spec!r}")
        vid = self._find_uuid(spec)
        if vid is not None:
            return self.nodes[vid]
        for tvid, name in self._cols.tag.items():
            if name == spec:
                return self.nodes[tvid]
        if "~" in spec:
            name, _, num = spec.rpartition("~")
            if not num.isdigit():
                raise InvalidArgumentError(f"bad version spec {spec!r}: '~' must be followed by N")
            leaf = self.branch_leaf(self._branch_of_spec(name))
            n = int(num)
            got = self.nth_first_parent(leaf.id, n)
            if got is None:
                have = len(self.first_parent_chain(leaf.id))
                raise VersionNotFoundError(f"{spec!r}: branch {name!r} has only {have} versions")
            return self.nodes[got]
        if ":" in spec:
            return self.branch_leaf(self._branch_of_spec(spec))
        low = spec.lower()
        if _HEX.match(low) and len(low) <= 32:
            hits = self._prefix_hits(low)
            if len(hits) == 1:
                return self.nodes[hits[0]]
            if len(hits) > 1:
                raise AmbiguousVersionError(
                    f"UUID prefix {spec!r} matches {len(hits)} versions; give more characters")
        if spec == MASTER or len(self._on_branch(spec)):
            return self.branch_leaf(spec)
        raise VersionNotFoundError(f"no version matches {spec!r}")

    def _branch_of_spec(self, spec: str) -> str:
        if ":" in spec:
            prefix, _, branch = spec.partition(":")
            if prefix:
                self.resolve(prefix)  # must exist in this repo
            return branch
        return spec
