"""Three-way merge of locked versions, per key, with typed conflicts and strategies.

DVID creates merge nodes blindly and lets conflicts surface later as read errors. diced finds
them when the merge is made: for every key written since the merge base on any side, the
values visible at each parent are compared. A key changed on one side only (every other
side's writer is an ancestor of it) needs nothing: nearest-ancestor resolution already gives
that side's value. Sides that changed a key to identical bytes are merged silently. Anything
else is a :class:`Conflict`, resolved by a strategy or reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from diced.errors import InvalidArgumentError
from diced.repo.dag import DAG
from diced.repo.resolve import Resolved, VersionCtx, VersionedSpace

__all__ = ["Conflict", "find_merge_changes", "choose"]


@dataclass(frozen=True)
class Conflict:
    """Two or more parents changed the same key differently since the merge base.

    Attributes
    ----------
    instance: data instance name.
    key: chunk coordinates (tuple) for arrays, the key (str) for keyvalues.
    base: UUID of the version whose write the merge base sees (``None``: never written).
    sides: parent UUID -> UUID of the version whose write that parent sees (``None``: absent).
    deleted: parent UUIDs whose visible value is a deletion.
    """

    instance: str
    key: Any
    base: str | None
    sides: dict[str, str | None] = field(hash=False)
    deleted: tuple[str, ...] = ()


#: a strategy picks the parent UUID whose value wins a conflict
Strategy = str | Callable[[Conflict], str]


def find_merge_changes(space: VersionedSpace, dag: DAG, parent_ctxs: Sequence[VersionCtx]
                       ) -> tuple[dict[str, list[Resolved | None]], list[str]]:
    """Keys that need attention at a merge of ``parent_ctxs``.

    Returns ``(auto, conflicting)``: ``auto`` maps keys whose sides agree in content but not
    in writer to the per-parent resolutions (to be materialised at the merge node);
    ``conflicting`` lists keys whose sides differ.
    """
    union = frozenset().union(*(c.ancestors for c in parent_ctxs))
    common = frozenset.intersection(*(c.ancestors for c in parent_ctxs))
    candidates: set[str] = set()
    for vid in union - common:
        candidates.update(space.written_at(vid))
    keys = sorted(candidates)
    per_parent = [space.resolve_many(keys, ctx) for ctx in parent_ctxs]
    auto: dict[str, list[Resolved | None]] = {}
    conflicting: list[str] = []
    for i, key in enumerate(keys):
        sides = [pp[i] for pp in per_parent]
        writers = {s[0] for s in sides if s is not None}
        if not writers:
            continue
        top = max(writers)
        # one-sided change: every other side sees an older write (an ancestor of top) or
        # nothing at all (the key was never in its ancestry)
        if all(dag.is_ancestor(w, top) for w in writers):
            continue
        payloads = {s[1] if s is not None else None for s in sides}
        if len(payloads) == 1:
            auto[key] = sides
        else:
            conflicting.append(key)
    return auto, conflicting


def choose(conflict: Conflict, strategy: Strategy, parents: Sequence[str]) -> str:
    """The parent UUID whose value wins ``conflict`` under ``strategy``."""
    pick = strategy(conflict) if callable(strategy) else strategy
    if isinstance(pick, int) and not isinstance(pick, bool):
        if not 0 <= pick < len(parents):
            raise InvalidArgumentError(f"merge strategy picked parent index {pick} of {len(parents)}")
        return parents[pick]
    matches = [p for p in parents if isinstance(pick, str) and pick and p.startswith(pick)]
    if len(matches) != 1:
        raise InvalidArgumentError(
            f"merge strategy must name one of the parents {parents}, got {pick!r}")
    return matches[0]
