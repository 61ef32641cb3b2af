"""LabelGraph: a weighted graph over labels (DVID's ``labelgraph``), versioned per element.

Key spaces:

* the instance's own space holds one key per vertex, ``v<label>``, and one per edge,
  ``e<a><b>`` with ``a < b`` (labels as 16 hex digits), each valued by its float64 weight;
  merges compare and conflict per vertex and per edge;
* ``rev`` (derived): ``<b><a>`` for every edge, so the neighbours of a label are two key
  ranges (``e<label>...`` and ``<label>...``); rebuilt for the touched edges at merges.

Graphs come out as :class:`networkx.Graph` objects with a ``weight`` attribute on vertices and
edges.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from diced.errors import InvalidArgumentError, LockedNodeError, NotFoundError
from diced.repo.resolve import Part, modify_parts

if TYPE_CHECKING:
    import networkx as nx

    from diced.repo.context import InstanceContext
    from diced.repo.repo import Version
    from diced.repo.resolve import VersionCtx

__all__ = ["LabelGraph", "describe_key"]

_F = struct.Struct("<d")
_BATCH = 4096


def _vkey(v: int) -> str:
    return f"v{v:016x}"


def _ekey(a: int, b: int) -> str:
    if a > b:
        a, b = b, a
    return f"e{a:016x}{b:016x}"


def _rkey(a: int, b: int) -> str:
    """Reverse-index key of the edge ``a < b``: ``<b><a>``."""
    return f"{b:016x}{a:016x}"


def describe_key(ckey: str) -> Any:
    """``("vertex", label)`` or ``("edge", a, b)`` for a stored key."""
    if ckey.startswith("v"):
        return ("vertex", int(ckey[1:], 16))
    return ("edge", int(ckey[1:17], 16), int(ckey[17:33], 16))


def _label(v: Any, what: str = "label") -> int:
    try:
        if isinstance(v, (bool, np.bool_)):
            raise TypeError
        x = operator.index(v)
    except TypeError:
        raise InvalidArgumentError(f"a {what} is a non-negative integer, got {v!r}") from None
    if not 0 <= x < 1 << 64:
        raise InvalidArgumentError(f"a {what} is a uint64, got {x}")
    return x


def _weight(w: Any) -> float:
    try:
        if isinstance(w, (bool, np.bool_)):
            raise TypeError
        f = float(w)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"a weight is a number, got {w!r}") from None
    if not np.isfinite(f):
        raise InvalidArgumentError(f"a weight must be finite, got {w!r}")
    return f


class LabelGraph:
    """A weighted label graph at one version (the repo head, or pinned).

    ``g.add_edges([[1, 2], [2, 3]], [10, 4])``, ``g.neighbors(2)``, ``g.subgraph([1, 2])``
    (a :class:`networkx.Graph`), ``g.build(labels)`` (the contact graph of a label array).
    Obtain one with ``repo.create_instance(name, "labelgraph")`` or ``repo[name]``.
    """

    typename = "labelgraph"

    def __init__(self, context: InstanceContext) -> None:
        self.repo, self.name = context.repo, context.name
        self._ref = context
        self._space = context.space()
        self._rev = context.space(context.config["spaces"]["rev"])

    @property
    def version(self) -> Version:
        """The version this handle reads now."""
        return self._ref.version()

    def at(self, version: Any) -> LabelGraph:
        """The same graph pinned to another version."""
        return self._ref.open_at(version)

    def __repr__(self) -> str:
        return f"<LabelGraph {self.name!r} version={self._ref.ctx().uuid[:8]}>"

    def _writable(self) -> VersionCtx:
        ctx = self._ref.ctx()
        if ctx.locked:
            raise LockedNodeError(f"version {ctx.uuid} is locked: {self.name!r} is read-only there")
        return ctx

    # --- reads ---------------------------------------------------------------------------------

    def _read(self, keys: Sequence[str], ctx: VersionCtx) -> list[float | None]:
        out: list[float | None] = []
        for i in range(0, len(keys), _BATCH):
            out += [None if v is None else _F.unpack(bytes(v))[0]
                    for v in self._space.read_many(list(keys[i:i + _BATCH]), ctx)]
        return out

    def vertex(self, label: int) -> float | None:
        """The weight of vertex ``label``, or ``None`` when absent."""
        return self._read([_vkey(_label(label))], self._ref.ctx())[0]

    def edge(self, a: int, b: int) -> float | None:
        """The weight of edge ``a``–``b``, or ``None`` when absent."""
        return self._read([_ekey(_label(a), _label(b))], self._ref.ctx())[0]

    def __contains__(self, label: object) -> bool:
        try:
            return self.vertex(label) is not None  # type: ignore[arg-type]
        except InvalidArgumentError:
            return False

    def vertices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(labels uint64, weights float64)`` of every vertex, ascending."""
        ctx = self._ref.ctx()
        keys = self._space.live_keys(ctx, "v", "w")
        w = self._read(keys, ctx)
        return (np.array([int(k[1:], 16) for k in keys], np.uint64),
                np.array(w, np.float64))

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """``(edges (n, 2) uint64 with a < b, weights float64)`` of every edge, sorted."""
        ctx = self._ref.ctx()
        keys = self._space.live_keys(ctx, "e", "f")
        w = self._read(keys, ctx)
        e = np.array([[int(k[1:17], 16), int(k[17:33], 16)] for k in keys],
                     np.uint64).reshape(-1, 2)
        return e, np.array(w, np.float64)

    def __len__(self) -> int:
        """Number of vertices."""
        return len(self._space.live_keys(self._ref.ctx(), "v", "w"))

    def _neighbors(self, v: int, ctx: VersionCtx) -> dict[int, float]:
        h = f"{v:016x}"
        fwd = self._space.live_keys(ctx, "e" + h, "e" + h + "g")
        back = self._rev.live_keys(ctx, h, h + "g")
        others = [int(k[17:33], 16) for k in fwd] + [int(k[16:32], 16) for k in back]
        keys = fwd + [_ekey(o, v) for o in others[len(fwd):]]
        out = {}
        for o, w in zip(others, self._read(keys, ctx), strict=True):
            if w is not None:
                out[o] = w
        return dict(sorted(out.items()))

    def neighbors(self, label: int) -> dict[int, float]:
        """``{neighbour: edge weight}`` of ``label`` (empty when it has none)."""
        return self._neighbors(_label(label), self._ref.ctx())

    def subgraph(self, labels: Iterable[int] | None = None) -> nx.Graph:
        """The graph induced by ``labels`` (every vertex of it that exists, and the edges
        between them), or the whole graph when ``labels`` is ``None``; vertex and edge
        ``weight`` attributes."""
        import networkx as nx

        g = nx.Graph()
        ctx = self._ref.ctx()
        if labels is None:
            vs, vw = self.vertices()
            g.add_nodes_from((int(v), {"weight": float(w)})
                             for v, w in zip(vs.tolist(), vw.tolist(), strict=True))
            es, ew = self.edges()
            g.add_edges_from((int(a), int(b), {"weight": float(w)})
                             for (a, b), w in zip(es.tolist(), ew.tolist(), strict=True))
            return g
        want = sorted({_label(v) for v in labels})
        weights = self._read([_vkey(v) for v in want], ctx)
        present = {v for v, w in zip(want, weights, strict=True) if w is not None}
        g.add_nodes_from((v, {"weight": w}) for v, w in zip(want, weights, strict=True)
                         if w is not None)
        for v in sorted(present):
            for o, w in self._neighbors(v, ctx).items():
                if o in present and v < o:
                    g.add_edge(v, o, weight=w)
        return g

    def to_networkx(self) -> nx.Graph:
        """The whole graph (:meth:`subgraph` of everything)."""
        return self.subgraph(None)

    # --- writes --------------------------------------------------------------------------------

    def _store(self, ctx: VersionCtx, items: dict[str, float | None],
               rev: dict[str, bytes | None]) -> None:
        keys = list(items)
        rkeys = list(rev)
        for i in range(0, max(len(keys), len(rkeys)), _BATCH):
            part = keys[i:i + _BATCH]
            rpart = rkeys[i:i + _BATCH]
            modify_parts(ctx, [
                Part(self._space, part,
                     lambda ck, _b: None if items[ck] is None else _F.pack(items[ck])),
                Part(self._rev, rpart, lambda ck, _b: rev[ck])])

    def add_vertices(self, labels: Iterable[int], weights: Iterable[float] | float = 0.0
                     ) -> None:
        """Add vertices (or set their weights)."""
        ls = [_label(v) for v in labels]
        ws = [_weight(weights)] * len(ls) if np.isscalar(weights) else \
            [_weight(w) for w in weights]  # type: ignore[union-attr]
        if len(ws) != len(ls):
            raise InvalidArgumentError(f"{len(ls)} labels but {len(ws)} weights")
        if ls:
            self._store(self._writable(), {_vkey(v): w for v, w in zip(ls, ws, strict=True)}, {})

    def add_vertex(self, label: int, weight: float = 0.0) -> None:
        """Add a vertex (or set its weight)."""
        self.add_vertices([label], [weight])

    def add_edges(self, edges: Any, weights: Any = 1.0, *, accumulate: bool = False) -> None:
        """Add edges ``[[a, b], ...]`` (or set their weights); missing endpoints become
        vertices of weight 0. With ``accumulate``, weights add to existing edge weights
        (a stored edge given twice sums too). Self-loops are refused."""
        arr = np.asarray(edges)
        if arr.size == 0:
            return
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.dtype.kind not in "iu" \
                or (arr.dtype.kind == "i" and arr.min() < 0):
            raise InvalidArgumentError(
                f"edges are an (n, 2) array of non-negative integer labels, got {arr.shape} "
                f"of {arr.dtype}")
        pairs = [(int(a), int(b)) for a, b in arr.tolist()]
        if any(a == b for a, b in pairs):
            raise InvalidArgumentError("an edge joins two different labels (no self-loops)")
        ws = [_weight(weights)] * len(pairs) if np.isscalar(weights) else \
            [_weight(w) for w in np.asarray(weights).tolist()]
        if len(ws) != len(pairs):
            raise InvalidArgumentError(f"{len(pairs)} edges but {len(ws)} weights")
        ctx = self._writable()
        want: dict[str, float] = {}
        for (a, b), w in zip(pairs, ws, strict=True):
            k = _ekey(a, b)
            want[k] = want.get(k, 0.0) + w if accumulate else w
        if accumulate:
            keys = list(want)
            for k, old in zip(keys, self._read(keys, ctx), strict=True):
                if old is not None:
                    want[k] += old
        labels = sorted({v for p in pairs for v in p})
        vkeys = [_vkey(v) for v in labels]
        missing = [k for k, w in zip(vkeys, self._read(vkeys, ctx), strict=True) if w is None]
        items: dict[str, float | None] = dict.fromkeys(missing, 0.0)
        items.update(want)
        rev: dict[str, bytes | None] = {}
        for k in want:
            a, b = int(k[1:17], 16), int(k[17:33], 16)
            rev[_rkey(a, b)] = b"1"
        self._store(ctx, items, rev)

    def add_edge(self, a: int, b: int, weight: float = 1.0) -> None:
        """Add one edge (or set its weight)."""
        self.add_edges([[_label(a), _label(b)]], [weight])

    def remove_edges(self, edges: Any) -> None:
        """Remove edges ``[[a, b], ...]`` (absent ones are ignored)."""
        arr = np.asarray(edges)
        if arr.size == 0:
            return
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.dtype.kind not in "iu":
            raise InvalidArgumentError(f"edges are an (n, 2) integer array, got {arr.shape}")
        items: dict[str, float | None] = {}
        rev: dict[str, bytes | None] = {}
        for a, b in arr.tolist():
            a, b = sorted((_label(a), _label(b)))
            items[_ekey(a, b)] = None
            rev[_rkey(a, b)] = None
        self._store(self._writable(), items, rev)

    def remove_vertex(self, label: int) -> None:
        """Remove a vertex and its edges."""
        v = _label(label)
        ctx = self._writable()
        if self._read([_vkey(v)], ctx)[0] is None:
            raise NotFoundError(f"no vertex {v} in {self.name!r}")
        items: dict[str, float | None] = {_vkey(v): None}
        rev: dict[str, bytes | None] = {}
        for o in self._neighbors(v, ctx):
            a, b = sorted((v, o))
            items[_ekey(a, b)] = None
            rev[_rkey(a, b)] = None
        self._store(ctx, items, rev)

    def put_networkx(self, graph: nx.Graph) -> None:
        """Add a networkx graph's vertices and edges (``weight`` attributes, default 0 for
        vertices and 1 for edges)."""
        nodes = list(graph.nodes(data="weight", default=0.0))
        if nodes:
            self.add_vertices([n for n, _ in nodes], [w for _, w in nodes])
        es = list(graph.edges(data="weight", default=1.0))
        if es:
            self.add_edges(np.array([[a, b] for a, b, _ in es], np.uint64), [w for *_, w in es])

    def build(self, labels: Any, box: Any = None, *, supervoxels: bool = True,
              vertex_sizes: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Store the contact graph of a label array (or numpy volume): an edge per pair of
        face-adjacent labels weighted by its contact area (see
        :func:`diced.datatypes.labelgraph.adjacency.contact_graph`). Edges already stored
        get the new areas. With ``vertex_sizes``, vertex weights are voxel counts in the box
        (numpy volumes only). Returns ``(edges, areas)``."""
        from diced.datatypes.labelgraph.adjacency import contact_graph

        edges, areas = contact_graph(labels, box, supervoxels=supervoxels)
        if vertex_sizes:
            if not isinstance(labels, np.ndarray):
                raise InvalidArgumentError("vertex_sizes needs a numpy volume")
            from diced.datatypes.labelgraph.adjacency import _box

            lo, hi = _box(labels.shape, box)
            sub = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            ids, counts = np.unique(sub[sub != 0], return_counts=True)
            self.add_vertices(ids.tolist(), counts.astype(np.float64).tolist())
        if len(edges):
            self.add_edges(edges, areas.astype(np.float64))
        return edges, areas

    # --- merges --------------------------------------------------------------------------------

    def _after_merge(self, ctx: VersionCtx, touched: Sequence[str]) -> None:
        """Make the reverse index match the merged edges of ``touched`` keys."""
        ekeys = [k for k in touched if k.startswith("e")]
        if not ekeys:
            return
        vals = self._space.read_many(ekeys, ctx)
        rev: dict[str, bytes | None] = {}
        for k, v in zip(ekeys, vals, strict=True):
            a, b = int(k[1:17], 16), int(k[17:33], 16)
            rev[_rkey(a, b)] = None if v is None else b"1"
        for i in range(0, len(rev), _BATCH):
            self._rev.write(ctx, dict(list(rev.items())[i:i + _BATCH]))
