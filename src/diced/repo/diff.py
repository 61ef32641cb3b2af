"""What changed between two versions, per instance, computed from the per-version indexes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diced.repo.resolve import VersionCtx, VersionedSpace

__all__ = ["Diff", "InstanceDiff", "diff_space"]


@dataclass
class InstanceDiff:
    """Keys (chunk coordinates or keyvalue keys) that differ between two versions.

    For label arrays, ``remapped`` lists the supervoxels whose body differs (merges,
    cleaves, renumbers and supervoxel splits change the supervoxel → body mapping, which
    is part of the instance even when no block changed); ``labels.label_diff(a, b)`` turns
    both into per-body voxel gains and losses.
    """

    added: list[Any] = field(default_factory=list)
    removed: list[Any] = field(default_factory=list)
    changed: list[Any] = field(default_factory=list)
    remapped: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.remapped)

    def __len__(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed) + len(self.remapped)


@dataclass
class Diff:
    """``repo.diff(a, b)``: per instance, what reading at ``b`` shows that ``a`` does not."""

    a: str
    b: str
    instances: dict[str, InstanceDiff] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)  # instances visible at b only
    deleted: list[str] = field(default_factory=list)  # instances visible at a only

    def __getitem__(self, name: str) -> InstanceDiff:
        return self.instances[name]

    def __bool__(self) -> bool:
        return bool(self.created or self.deleted or any(self.instances.values()))

    def summary(self) -> str:
        """A few lines for people: instances created and deleted, and per changed instance
        how many keys were added, changed and removed.

        Returns
        -------
        str
        """
        lines = [f"diff {self.a[:8]} -> {self.b[:8]}"]
        for name in self.created:
            lines.append(f"  + instance {name}")
        for name in self.deleted:
            lines.append(f"  - instance {name}")
        for name, d in self.instances.items():
            if d:
                line = (f"  {name}: {len(d.added)} added, {len(d.changed)} changed, "
                        f"{len(d.removed)} removed")
                if d.remapped:
                    line += f", {len(d.remapped)} supervoxels remapped"
                lines.append(line)
        return "\n".join(lines)


def diff_space(space: VersionedSpace, a: VersionCtx, b: VersionCtx) -> tuple[list[str], list[str], list[str]]:
    """``(added, removed, changed)`` ckeys between ``a`` and ``b``.

    Only keys written by versions on one side of the two ancestries can differ, so the cost
    is proportional to what changed, not to the size of the instance.
    """
    candidates: set[str] = set()
    for vid in a.ancestors ^ b.ancestors:
        candidates.update(space.written_at(vid))
    keys = sorted(candidates)
    ra, rb = space.resolve_many(keys, a), space.resolve_many(keys, b)
    added, removed, changed = [], [], []
    for key, x, y in zip(keys, ra, rb, strict=True):
        va = None if x is None else x[1]
        vb = None if y is None else y[1]
        if va == vb:
            continue
        if va is None:
            added.append(key)
        elif vb is None:
            removed.append(key)
        else:
            changed.append(key)
    return added, removed, changed
