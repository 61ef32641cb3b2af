"""Queries of other datatypes through an ROI (kept here so those types need one line each).

* :func:`annotation_in_roi`: the elements of an annotation instance inside an ROI
  (``Annotation.in_roi``, DVID's annotation GET ``roi/<roi>``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diced.errors import InvalidArgumentError

__all__ = ["annotation_in_roi", "resolve_roi"]

#: above this many annotation blocks, list all elements once instead of per block
_BLOCK_SCAN = 256


def resolve_roi(owner: Any, roi: Any) -> Any:
    """An ROI handle from an ROI or an ROI instance name (of ``owner``'s repo, at ``owner``'s
    version)."""
    from diced.datatypes.roi.roi import ROI

    if isinstance(roi, str):
        roi = owner._ref.instance(roi)
    if not isinstance(roi, ROI):
        raise InvalidArgumentError(f"expected an ROI (or its name), got {type(roi).__name__}")
    return roi


def annotation_in_roi(ann: Any, roi: Any, *, relationships: bool = False
                      ) -> list[dict[str, Any]]:
    """Elements of ``ann`` whose ``Pos`` lies in ``roi`` (an ROI or an ROI name of the same
    repo, read at the annotation's version), sorted by block then position.

    Only the annotation blocks the ROI's blocks overlap are read (all elements once when that
    is more than a few hundred blocks); positions are then tested with :meth:`ROI.contains`.
    """
    roi = resolve_roi(ann, roi)
    spans = roi.get()
    ctx = ann._ref.ctx()
    if not len(spans):
        return []
    rb = np.array(roi.block_size, np.int64)  # x, y, z
    ab = np.array(ann.block_size, np.int64)
    # annotation block ranges per span (inclusive), per axis x, y, z
    lo = np.stack([spans[:, 2] * rb[0], spans[:, 1] * rb[1], spans[:, 0] * rb[2]], 1) // ab
    hi = np.stack([(spans[:, 3] + 1) * rb[0] - 1, (spans[:, 1] + 1) * rb[1] - 1,
                   (spans[:, 0] + 1) * rb[2] - 1], 1) // ab
    count = int(np.prod(hi - lo + 1, axis=1).sum())
    if count > _BLOCK_SCAN:
        keys = ann._elements.live_keys(ctx)
    else:
        blocks = {(x, y, z) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)
                  for x in range(a[0], b[0] + 1) for y in range(a[1], b[1] + 1)
                  for z in range(a[2], b[2] + 1)}
        keys = ann._block_keys(blocks, ctx)
    if not keys:
        return []
    from diced.datatypes.annotation import elements as E

    pos = np.array([E.parse_pos_key(k.split("_", 1)[1]) for k in keys], np.int64)
    inside = roi.contains(pos)
    return ann._load([k for k, ok in zip(keys, inside.tolist(), strict=True) if ok], ctx,
                     relationships)
