"""The chains of a version graph: runs of nodes each continuing its first parent, so that
ancestor sets and ``branch~N`` are walks over chains, not nodes (see :mod:`diced.repo.dag`)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from diced.repo.nodes import Columns


class _Chains:
    """The graph cut into chains: each node either continues the chain of its first parent
    (when it is that parent's lowest-id child continuing it) or starts a new one."""

    def __init__(self, cols: Columns, prev: _Chains | None = None,
                 added: list[int] | None = None) -> None:
        if prev is not None and added is not None:
            self._extend(cols, prev, added)
        else:
            self._build(cols)

    def _build(self, cols: Columns) -> None:
        n = cols.size
        ids = np.flatnonzero(cols.exists)
        fp = cols.fp
        joins = np.zeros(n, bool)
        if len(ids):
            fpi = fp[ids]
            has = fpi >= 0
            has &= cols.exists[np.where(has, fpi, 0)]
            kids, parents = ids[has], fpi[has]
            _, first = np.unique(parents, return_index=True)  # ids ascend: the lowest child
            joins[kids[first]] = True
        ptr = np.arange(n, dtype=np.int64)
        ptr[joins] = fp[joins]
        dist = joins.astype(np.int64)
        while True:  # pointer doubling: log2(depth) rounds
            nxt = ptr[ptr]
            if np.array_equal(nxt, ptr):
                break
            dist = dist + dist[ptr]
            ptr = nxt
        self.head, self.depth = ptr, dist
        self.cont = np.zeros(n, bool)  # has a child continuing its chain
        self.cont[fp[joins]] = True
        order = ids[np.lexsort((dist[ids], ptr[ids]))]
        heads = ptr[order]
        cuts = [0, *(np.flatnonzero(np.diff(heads)) + 1).tolist(), len(order)]
        flat, hs = order.tolist(), heads.tolist()
        self.chains: dict[int, list[int]] = {
            hs[a]: flat[a:b] for a, b in itertools.pairwise(cuts) if b > a}
        self.links: dict[int, list[tuple[int, int]]] = {}
        if cols.extra:
            mids = np.fromiter(cols.extra, np.int64, len(cols.extra))
            hs, ds = ptr[mids].tolist(), dist[mids].tolist()
            for vid, h, d in zip(mids.tolist(), hs, ds, strict=True):
                if cols.exists[vid]:
                    self.links.setdefault(h, []).extend((d, p) for p in cols.extra[vid])
            for v in self.links.values():
                v.sort()

    def _extend(self, cols: Columns, prev: _Chains, added: list[int]) -> None:
        n = cols.size
        self.head = _grown(prev.head, n, np.arange(n))
        self.depth = _grown(prev.depth, n, 0)
        self.cont = _grown(prev.cont, n, False)
        self.chains = dict(prev.chains)
        self.links = dict(prev.links)
        copied: set[int] = set()
        for vid in sorted(added):
            p = int(cols.fp[vid])
            if p >= 0 and not self.cont[p]:
                h = int(self.head[p])
                self.head[vid], self.depth[vid] = h, self.depth[p] + 1
                self.cont[p] = True
                if h not in copied:
                    self.chains[h] = list(self.chains[h])
                    copied.add(h)
            else:
                h = vid
                self.head[vid], self.depth[vid] = vid, 0
                self.chains[h] = []
                copied.add(h)
            self.chains[h].append(vid)
            more = cols.extra.get(vid)
            if more:
                self.links[h] = sorted([*self.links.get(h, []),
                                        *((int(self.depth[vid]), int(q)) for q in more)])


def _grown(arr: np.ndarray, n: int, fill: Any) -> np.ndarray:
    out = np.empty(n, arr.dtype)
    out[:len(arr)] = arr
    if n > len(arr):
        out[len(arr):] = fill[len(arr):] if isinstance(fill, np.ndarray) else fill
    return out
