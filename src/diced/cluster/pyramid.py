"""Pyramid (down-resolution) building on a cluster: level ``l`` chunks from the eight
level ``l - 1`` chunks below each, one level after another, workers writing directly."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from diced.cluster._chunks import ChunkTarget
from diced.cluster._ref import StoreRef
from diced.cluster._run import run_tasks
from diced.errors import InvalidArgumentError

log = logging.getLogger(__name__)

__all__ = ["build_pyramid"]

_OCTANTS = [(z, y, x) for z in (0, 1) for y in (0, 1) for x in (0, 1)]


def _downsample_task(args: tuple[ChunkTarget, ChunkTarget, bool, list[tuple[int, ...]]]) -> int:
    lower, upper, labels, parents = args
    from diced.array.downres import downsample_image_octants, downsample_labels_octants

    children = [tuple(2 * p + o for p, o in zip(par, off, strict=True))
                for par in parents for off in _OCTANTS]
    from diced.repo import keys as K

    vals = lower.read_raw([K.chunk_ckey(c) for c in children])
    out: dict[tuple[int, ...], np.ndarray] = {}
    for i, par in enumerate(parents):
        octs = {}
        for j, off in enumerate(_OCTANTS):
            data = vals[8 * i + j]
            if data is not None:
                octs[off[0] << 2 | off[1] << 1 | off[2]] = lower.decode(data)
        if labels:
            out[par] = downsample_labels_octants(octs, upper.chunks)
        else:
            out[par] = downsample_image_octants(octs, upper.chunks, dtype=upper.np_dtype)
    upper.write(out)
    return len(out)


def pyramid_levels(job: Any, store: StoreRef, record: dict[str, Any],
                   changed: Iterable[tuple[int, ...]], client: Any = None,
                   stale: Sequence[set[tuple[int, ...]]] = ()) -> int:
    """Recompute, at the job's version, the pyramid chunks above the level-0 chunks
    ``changed`` (``stale[l - 1]``: level-``l`` chunks to recompute as well). Chunks the
    version already holds at a level are skipped (a resumed job). Returns chunks written."""
    cfg = record["config"]
    max_scale = int(cfg.get("max_scale", 0))
    labels = record["type"] == "labels"
    cur = sorted(set(changed))
    total = 0
    for level in range(1, max_scale + 1):
        lower = ChunkTarget.of(store, record, job.ctx, level - 1)
        upper = ChunkTarget.of(store, record, job.ctx, level)
        parents = {tuple(c // 2 for c in cc) for cc in cur}
        if len(stale) >= level:
            parents |= set(stale[level - 1])
        from diced.repo import keys as K

        done = job.written(upper.space_id)
        todo = sorted(p for p in parents if K.chunk_ckey(p) not in done)
        per = max(1, (32 << 20) // max(1, 8 * lower.chunk_nbytes))
        tasks = [(lower, upper, labels, todo[i:i + per]) for i in range(0, len(todo), per)]
        total += sum(run_tasks(_downsample_task, tasks, client, local=store.local))
        log.info("pyramid level %d: %d chunks (%d skipped, already written)", level,
                 len(todo), len(parents) - len(todo))
        cur = sorted(parents)
    return total


def build_pyramid(array: Any, *, client: Any = None, job: str | None = None,
                  branch: str | None = None, note: str = "", lock: bool = False,
                  storage_options: dict[str, Any] | None = None) -> Any:
    """Rebuild every pyramid level of ``array`` (at its locked version) on the cluster, as a
    new child version.

    Parameters
    ----------
    array : VersionedArray or LabelArray
        Its version (a locked one) is the parent of the new version; ``max_scale > 0``.
    client
        A ``distributed.Client`` or scheduler address (default: the active client, else
        threads of this process).
    job : str, optional
        Job name (default derived from the array and version, so a rerun resumes).
    branch, note, lock
        As for :func:`diced.cluster.map_blocks`.
    storage_options : dict, optional
        fsspec options with which workers open the store (default: the driver's).

    Returns
    -------
    Version
        The new version.
    """
    from diced.cluster.job import Job
    from diced.repo import keys as K

    if not array.max_scale:
        raise InvalidArgumentError(f"{array.name!r} has no pyramid (max_scale is 0)")
    repo = array.repo
    version = array.version
    store = StoreRef.of(repo.store, storage_options)
    j = Job.start(repo, "pyramid", {"target": array.name}, parent=version.uuid, name=job,
                  branch=branch, note=note)
    rec = j.instance_record(array.name)
    base = ChunkTarget.of(store, rec, j.parent_ctx, 0)
    changed = [K.parse_chunk_ckey(c) for c in base.space.live_keys(j.parent_ctx)]
    stale = []
    for level in range(1, array.max_scale + 1):
        t = ChunkTarget.of(store, rec, j.parent_ctx, level)
        stale.append({K.parse_chunk_ckey(c) for c in t.space.live_keys(j.parent_ctx)})
    pyramid_levels(j, store, rec, changed, client, stale)
    return j.publish(lock=lock)
