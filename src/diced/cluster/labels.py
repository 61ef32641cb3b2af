"""Label index rebuild on a cluster: map (count labels per block), shuffle by label,
reduce (write each label's index entry), workers writing directly.

The label index of a label array holds, per supervoxel, its blocks and voxel count per
block (:mod:`diced.datatypes.labels.labels`). A rebuild makes it match the blocks visible
at the job's version exactly: entries are written for every label found, and labels the
parent's index lists but no block holds any more get a tombstone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from diced.cluster._chunks import ChunkTarget
from diced.cluster._ref import StoreRef
from diced.cluster._run import compute
from diced.errors import InvalidArgumentError
from diced.repo import keys as K
from diced.repo.resolve import VersionCtx, VersionedSpace

log = logging.getLogger(__name__)

__all__ = ["rebuild_label_index"]

#: blocks one map task counts
BLOCKS_PER_TASK = 256


def _count_task(blocks: ChunkTarget, ckeys: Sequence[str], parts: int
                ) -> tuple[np.ndarray, ...]:
    """Per partition, rows ``(label, z, y, x, count)`` of the blocks ``ckeys``."""
    from diced.array.labelstats import block_label_counts

    rows: list[np.ndarray] = []
    vals = blocks.read_raw(list(ckeys))
    for ck, data in zip(ckeys, vals, strict=True):
        if data is None:
            continue
        labs, cnt = block_label_counts(blocks.decode(data))
        keep = labs != 0
        labs, cnt = labs[keep], cnt[keep]
        if not len(labs):
            continue
        z, y, x = K.parse_chunk_ckey(ck)
        r = np.empty((len(labs), 5), dtype=np.uint64)
        r[:, 0], r[:, 1], r[:, 2], r[:, 3], r[:, 4] = labs, z, y, x, cnt
        rows.append(r)
    allrows = np.concatenate(rows) if rows else np.zeros((0, 5), np.uint64)
    part = allrows[:, 0] % np.uint64(parts)
    return tuple(allrows[part == p] for p in range(parts))


def _reduce_task(store: StoreRef, index_id: int, ctx: VersionCtx, stale: Sequence[int],
                 done: frozenset[str], *parts: np.ndarray) -> int:
    """Write the index entries of one partition (rows ``parts`` from every map task) and
    tombstones for its ``stale`` labels; returns the largest label of the partition."""
    from diced.datatypes.labels._common import encode_index, lkey

    rows = [r for r in parts if len(r)]
    allrows = np.concatenate(rows) if rows else np.zeros((0, 5), np.uint64)
    order = np.lexsort((allrows[:, 3], allrows[:, 2], allrows[:, 1], allrows[:, 0]))
    allrows = allrows[order]
    space = VersionedSpace(store.open().backend, index_id, "label index", "label")
    new: dict[str, bytes | None] = {}
    top = 0
    if len(allrows):
        labels, starts = np.unique(allrows[:, 0], return_index=True)
        top = int(labels[-1])
        ends = [*starts[1:].tolist(), len(allrows)]
        for lab, s, e in zip(labels.tolist(), starts.tolist(), ends, strict=True):
            k = lkey(lab)
            if k in done:
                continue
            new[k] = encode_index({(int(z), int(y), int(x)): int(n)
                                   for _, z, y, x, n in allrows[s:e].tolist()})
            if len(new) >= 4096:
                space.write(ctx, new)
                new = {}
        found = set(labels.tolist())
    else:
        found = set()
    for lab in stale:
        k = lkey(lab)
        if lab not in found and k not in done:
            new[k] = None
    if new:
        space.write(ctx, new)
    return top


def index_labels(job: Any, store: StoreRef, record: dict[str, Any], client: Any = None,
                 parts: int | None = None) -> int:
    """Rebuild the label index of the label instance ``record`` at ``job.ctx`` from the
    blocks visible there; labels the index lists at ``job.base_ctx`` and no block holds get
    a tombstone. Returns the largest label found (0 if none)."""
    import dask

    blocks = ChunkTarget.of(store, record, job.ctx, 0)
    index_id = int(record["config"]["spaces"]["index"])
    ckeys = blocks.space.live_keys(job.ctx)
    index = VersionedSpace(store.open().backend, index_id, "label index", "label")
    base = job.base_ctx
    old = [int(k, 16) for k in index.live_keys(base)] if record["created"] in base.ancestors \
        else []
    nparts = parts or max(1, min(64, len(ckeys) // BLOCKS_PER_TASK + 1))
    done = frozenset(job.written(index_id))
    # each map task's output is split per partition, so a reduce task fetches only its part
    maps = [dask.delayed(_count_task, pure=False, nout=nparts)(
        blocks, ckeys[i:i + BLOCKS_PER_TASK], nparts)
        for i in range(0, len(ckeys), BLOCKS_PER_TASK)]
    stale: list[list[int]] = [[] for _ in range(nparts)]
    for lab in old:
        stale[lab % nparts].append(lab)
    reduces = [dask.delayed(_reduce_task, pure=False)(store, index_id, job.ctx, stale[p],
                                                      done, *[m[p] for m in maps])
               for p in range(nparts)]
    tops = compute(reduces, client, local=store.local)
    top = max(tops, default=0)
    log.info("label index of %s: %d blocks, %d partitions, max label %d", record.get("id"),
             len(ckeys), nparts, top)
    return top


def set_max_label(job: Any, record: dict[str, Any], top: int) -> None:
    """Record the largest label of the job's version (DVID's ``maxlabel``)."""
    from diced.datatypes.labels.labels import meta_prefix

    if top <= 0:
        return
    pre = meta_prefix(record)
    mk, rk = pre + f"max/{job.vid:08x}", pre + "maxrepo"

    def body(cur: dict[str, bytes | None]) -> dict[str, bytes | None]:
        return {k: str(top).encode() for k in (mk, rk) if int(cur[k] or b"0") < top}

    from diced.repo.meta import update_docs

    update_docs(job.repo.backend, [mk, rk], body)


def rebuild_label_index(labels: Any, *, client: Any = None, job: str | None = None,
                        branch: str | None = None, note: str = "", lock: bool = False,
                        storage_options: dict[str, Any] | None = None) -> Any:
    """Rebuild the label index of a label array from its blocks, on the cluster, as a new
    child version of the array's (locked) version.

    Parameters
    ----------
    labels : LabelArray
        Pinned or head handle; its version must be locked.
    client, job, branch, note, lock, storage_options
        As for :func:`diced.cluster.map_blocks`.

    Returns
    -------
    Version
        The new version, where ``labels.index(label)`` and sparse volumes agree with the
        voxels.
    """
    if getattr(labels, "typename", None) != "labels":
        raise InvalidArgumentError("rebuild_label_index needs a label array")
    from diced.cluster.job import Job

    repo = labels.repo
    store = StoreRef.of(repo.store, storage_options)
    j = Job.start(repo, "label-index", {"target": labels.name}, parent=labels.version.uuid,
                  name=job, branch=branch, note=note)
    rec = j.instance_record(labels.name)
    top = index_labels(j, store, rec, client)
    set_max_label(j, rec, top)
    return j.publish(lock=lock)
