"""Label-index deltas of a batch of block writes, as arrays instead of per-label dicts.

A block write changes the index entries of the labels it holds now (their voxel count in the
block) and of the labels it held before but no longer does (their entry for the block goes).
:func:`block_delta` gives one block's changes as ``(labels, counts)`` (count 0: remove),
computed in the encode threads; :class:`IndexDeltas` gathers a batch's blocks into one table
sorted by (label, block) and applies a label's rows to its stored entry
(:meth:`IndexDeltas.apply`), inside the write transaction, from the stored value it is
given there, so a retried write stays exact.

Index values are ``(z, y, x, count)`` rows of little-endian uint64, sorted by block (every
writer stores them through :func:`diced.datatypes.labels._common.encode_index` or here):
:meth:`IndexDeltas.apply` appends without re-sorting when all the batch's blocks come after
the stored ones, the usual case of a large write going through the volume in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diced.errors import CorruptDataError

__all__ = ["IndexDeltas", "block_delta"]

_ROW = np.dtype("<u8")


def block_delta(old_labels: np.ndarray, new_labels: np.ndarray, new_counts: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """One block's index changes: the non-zero labels it now holds with their voxel counts,
    then the non-zero labels it held before (``old_labels``) but no longer, with count 0.

    ``old_labels`` and ``new_labels`` are sorted and unique (as
    :func:`diced.array.labelstats.block_label_counts` returns them)."""
    new_labels = np.asarray(new_labels, dtype=np.uint64)
    new_counts = np.asarray(new_counts, dtype=np.uint64)
    keep = new_labels != 0
    labs, cnts = new_labels[keep], new_counts[keep]
    old = np.asarray(old_labels, dtype=np.uint64)
    if old.size:
        pos = np.searchsorted(new_labels, old)
        present = pos < new_labels.size
        present[present] = new_labels[pos[present]] == old[present]
        gone = old[~present & (old != 0)]
        if gone.size:
            labs = np.concatenate([labs, gone])
            cnts = np.concatenate([cnts, np.zeros(gone.size, np.uint64)])
    return labs, cnts


class IndexDeltas:
    """The index changes of a batch: rows ``(label, z, y, x, count)`` sorted by label and
    block, one row per (label, block) (for a block given twice, the later one counts).

    Parameters
    ----------
    blocks : sequence of ``(coords, labels, counts)``
        Per block: its grid coordinates and :func:`block_delta`'s arrays, in write order.
    """

    def __init__(self, blocks: Sequence[tuple[Sequence[int], np.ndarray, np.ndarray]]) -> None:
        n = sum(len(labs) for _, labs, _ in blocks)
        rows = np.empty((n, 5), dtype=np.uint64)
        at = 0
        for coords, labs, cnts in blocks:
            k = len(labs)
            if not k:
                continue
            rows[at:at + k, 0] = labs
            rows[at:at + k, 1:4] = np.asarray(coords, dtype=np.uint64)
            rows[at:at + k, 4] = cnts
            at += k
        # stable sort by (label, z, y, x): for a repeated (label, block) keep the last row
        order = np.lexsort((rows[:, 3], rows[:, 2], rows[:, 1], rows[:, 0]))
        rows = rows[order]
        if n > 1:
            last = np.ones(n, dtype=bool)
            last[:-1] = np.any(rows[1:, :4] != rows[:-1, :4], axis=1)
            if not last.all():
                rows = rows[last]
        self._rows = rows
        labs = rows[:, 0]
        starts = np.flatnonzero(np.r_[True, labs[1:] != labs[:-1]]) if len(labs) \
            else np.zeros(0, np.int64)
        self.labels: np.ndarray = labs[starts]
        stops = np.r_[starts[1:], len(labs)] if len(labs) else starts
        self._span = dict(zip(self.labels.tolist(), zip(starts.tolist(), stops.tolist(),
                                                          strict=True), strict=True))
        grown = rows[:, 4] != 0
        #: largest label the batch writes (0: none)
        self.top = int(labs[grown].max()) if grown.any() else 0

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, label: int) -> np.ndarray:
        """The ``(z, y, x, count)`` rows of ``label``, sorted by block."""
        lo, hi = self._span[int(label)]
        return self._rows[lo:hi, 1:]

    def apply(self, label: int, base: bytes | memoryview | None) -> bytes | None:
        """``label``'s index value ``base`` (``None``: no entry) with the batch's changes
        applied: counts set, blocks with count 0 removed; ``None`` when nothing is left."""
        delta = self.rows(label)
        if not base:
            out = delta[delta[:, 3] != 0]
        else:
            if len(base) % 32:
                raise CorruptDataError(f"label index value of {len(base)} bytes is not a "
                                       "whole number of 32-byte entries")
            old = np.frombuffer(base, dtype=_ROW).reshape(-1, 4)
            if len(old) and tuple(old[-1, :3].tolist()) < tuple(delta[0, :3].tolist()):
                # the usual case of a large write: its blocks come after those already listed
                add = delta[delta[:, 3] != 0]
                return bytes(base) + np.ascontiguousarray(add, dtype=_ROW).tobytes()
            both = np.concatenate([old, delta.astype(_ROW, copy=False)])
            later = np.r_[np.zeros(len(old), np.uint8), np.ones(len(delta), np.uint8)]
            order = np.lexsort((later, both[:, 2], both[:, 1], both[:, 0]))
            both = both[order]
            last = np.ones(len(both), dtype=bool)
            last[:-1] = np.any(both[1:, :3] != both[:-1, :3], axis=1)
            out = both[last]
            out = out[out[:, 3] != 0]
        if not len(out):
            return None
        return np.ascontiguousarray(out, dtype=_ROW).tobytes()
