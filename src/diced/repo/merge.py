"""Three-way merge of locked versions, per key, with typed conflicts and strategies.

DVID creates merge nodes blindly and lets conflicts surface later as read errors. diced finds
them when the merge is made: for every key written since the merge base on any side, the
values visible at each parent are compared with the value at the merge base. Sides that
agree need nothing. A key changed (to a value other than the base value) on one side only
takes that side's value; sides that changed a key to identical bytes are merged silently;
a side that wrote a key back to its base value counts as unchanged. Anything else is a
:class:`Conflict`, resolved by a strategy or reported.

After criss-cross merges there are several merge bases; as git's recursive merge does, their
values are merged (against their own merge bases) into a virtual base value, and a key whose
bases cannot be merged cleanly conflicts unless every side agrees.

Resolution at the merge node gives, for every key, the value of the greatest writer id among
its ancestors; a merged value that differs from that one is materialised at the merge node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from diced.errors import InvalidArgumentError
from diced.repo.dag import DAG
from diced.repo.resolve import VersionCtx, VersionedSpace

__all__ = ["Conflict", "choose", "find_merge_changes"]


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


def find_merge_changes(space: VersionedSpace, dag: DAG, parent_ctxs: Sequence[VersionCtx],
                       ctx_of: Callable[[int], VersionCtx]
                       ) -> tuple[dict[str, bytes | None], list[str], list[str]]:
    """Keys that need attention at a merge of ``parent_ctxs``.

    Returns ``(auto, conflicting, touched)``: ``auto`` maps keys whose merged value is clear
    but is not what nearest-ancestor resolution would give at the merge node to that value
    (``None``: no value), to be materialised there; ``conflicting`` lists keys whose sides
    changed them differently; ``touched`` lists every key written on any side since the
    merge base (the only keys whose value at the merge node can differ from a parent's).
    ``ctx_of(version id)`` gives the read context of a merge base.
    """
    union = frozenset().union(*(c.ancestors for c in parent_ctxs))
    common = frozenset.intersection(*(c.ancestors for c in parent_ctxs))
    candidates: set[str] = set()
    for vid in union - common:
        candidates.update(space.written_at(vid))
    keys = sorted(candidates)
    per_parent = [space.resolve_many(keys, ctx) for ctx in parent_ctxs]
    disputed = [i for i in range(len(keys))
                if len({None if pp[i] is None else pp[i][1] for pp in per_parent}) > 1]
    bases = dag.merge_bases([c.vid for c in parent_ctxs])
    base_vals = dict(zip(disputed, _base_values(space, dag, [keys[i] for i in disputed], bases,
                                                ctx_of), strict=True))
    auto: dict[str, bytes | None] = {}
    conflicting: list[str] = []
    for i, key in enumerate(keys):
        sides = [pp[i] for pp in per_parent]
        payloads = [None if s is None else s[1] for s in sides]
        writers = [s for s in sides if s is not None]
        # what nearest-ancestor resolution gives at the merge node: the greatest writer
        default = max(writers, key=lambda s: s[0])[1] if writers else None
        if i not in base_vals:
            merged = payloads[0]  # every side shows the same value
        else:
            known, base = base_vals[i]
            changed = {p for p in payloads if p != base}
            if not known or len(changed) != 1:
                conflicting.append(key)
                continue
            merged = changed.pop()
        if merged != default:
            auto[key] = merged
    return auto, conflicting, keys


def _base_values(space: VersionedSpace, dag: DAG, keys: list[str], bases: list[int],
                 ctx_of: Callable[[int], VersionCtx]) -> list[tuple[bool, bytes | None]]:
    """``(known, value)`` of each key at the (virtual) merge base of ``bases``."""
    if not keys:
        return []
    if not bases:
        return [(True, None)] * len(keys)
    vals = [space.read_many(keys, ctx_of(b)) for b in bases]
    out: list[tuple[bool, bytes | None]] = [(True, v) for v in vals[0]]
    if len(bases) == 1:
        return out
    split = [i for i in range(len(keys)) if len({v[i] for v in vals}) > 1]
    deeper = _base_values(space, dag, [keys[i] for i in split], dag.merge_bases(bases), ctx_of)
    for i, (known, base) in zip(split, deeper, strict=True):
        changed = {v[i] for v in vals if v[i] != base}
        out[i] = (True, changed.pop()) if known and len(changed) == 1 else (False, None)
    return out


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


def merge_versions(repo: Any, versions: Sequence[Any], note: str, strategy: Strategy) -> Any:
    """:meth:`diced.repo.repo.Repo.merge`: find conflicts, resolve them with ``strategy``,
    write the resolutions at a new version, rebuild derived data, then publish the node."""
    from diced.errors import MergeConflictError, UnlockedNodeError
    from diced.repo.context import InstanceContext
    from diced.repo.repo import _datatype

    if len(versions) < 2:
        raise InvalidArgumentError("merge needs at least two versions")
    repo.refresh()  # other handles may have locked the parents or added instances
    nodes = [repo._node(v) for v in versions]
    if len({n.id for n in nodes}) != len(nodes):
        raise InvalidArgumentError("merge parents must be distinct versions")
    for n in nodes:
        if not n.locked:
            raise UnlockedNodeError(f"version {n.uuid} is open; lock it before merging")
    dag = repo._dag
    ids = [n.id for n in nodes]
    # the merge continues its first parent's branch: refused, as newversion is, when that
    # parent has a child there already (merge from the branch's leaf, or branch() first)
    repo._check_no_child(ids[0], dag.branch_of(ids[0]))
    parent_uuids = [n.uuid for n in nodes]
    if not callable(strategy) and not (isinstance(strategy, str) and strategy == "fail"):
        choose(None, strategy, parent_uuids)  # type: ignore[arg-type]  # refuse bad ones now
    ctxs = [repo._ctx(i) for i in ids]
    bases = dag.merge_bases(ids)
    base_ctx = repo._ctx(bases[-1]) if bases else None
    conflicts: list[Conflict] = []
    plans: list[tuple[VersionedSpace, dict[str, bytes | None]]] = []
    derived: list[tuple[str, dict[str, Any], list[str]]] = []
    union = frozenset().union(*(c.ancestors for c in ctxs))
    for name, rec in sorted(repo._doc["instances"].items()):
        if rec["created"] not in union:
            continue
        dt = _datatype(rec["type"])
        for suffix, space_id in dt.merge_spaces(rec):
            space = VersionedSpace(repo.backend, space_id)
            auto, conflicting, touched = find_merge_changes(space, dag, ctxs, repo._ctx)
            if not suffix:
                derived.append((name, rec, touched))
            chosen: dict[str, bytes | None] = dict(auto)
            per_parent = [space.resolve_many(conflicting, c) for c in ctxs]
            base_vals = (space.resolve_many(conflicting, base_ctx) if base_ctx
                         else [None] * len(conflicting))
            for i, ckey in enumerate(conflicting):
                sides = [pp[i] for pp in per_parent]
                conflict = Conflict(
                    instance=name + suffix, key=dt.describe_key(ckey, suffix),
                    base=None if base_vals[i] is None else dag.nodes[base_vals[i][0]].uuid,
                    sides={u: (None if s is None else dag.nodes[s[0]].uuid)
                           for u, s in zip(parent_uuids, sides, strict=True)},
                    deleted=tuple(u for u, s in zip(parent_uuids, sides, strict=True)
                                  if s is None or s[1] is None))
                conflicts.append(conflict)
                if strategy != "fail":
                    win = parent_uuids.index(choose(conflict, strategy, parent_uuids))
                    chosen[ckey] = None if sides[win] is None else sides[win][1]
            plans.append((space, chosen))
    if conflicts and strategy == "fail":
        raise MergeConflictError(
            f"merge of {', '.join(u[:8] for u in parent_uuids)} has {len(conflicts)} "
            f"conflict(s); pass strategy= to resolve them", conflicts)
    # reserve the id, write resolutions at it, then publish the node (a crash in between
    # leaves unreachable keys, never a merge node without its resolutions)
    vid = repo._reserve_id()
    anc = frozenset().union(*(c.ancestors for c in ctxs)) | {vid}
    mctx = VersionCtx(repo.uuid, vid, anc, False, "")
    for space, chosen in plans:
        if chosen:
            space.write(mctx, chosen)
    # derived data (pyramid levels, label indexes, ...) is rebuilt from the merged keys
    for name, rec, touched in derived:
        dt = _datatype(rec["type"])
        dt.after_merge(dt.open(InstanceContext(repo, name, rec, None)), mctx, touched, ctxs)
    # the merge node continues its first parent's branch (git's rule; see diced.repo.dag)
    version = repo._add_child(ids, dag.branch_of(ids[0]), note, vid=vid)
    repo._merge_instance_meta(ids, vid)
    return version
