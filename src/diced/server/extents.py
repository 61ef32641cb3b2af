"""Written extents of an array instance at a version (a diced extension of DVID's API).

``GET /api/node/{uuid}/{name}/written-extents`` answers where data is actually stored, as
opposed to the array's declared extent (``Extended.MinPoint/MaxPoint`` of ``info``, which for
an array created from Python can be far larger than what was written: the tour's grayscale is
94088×78317×134576 voxels with 256³ written). The page and its Neuroglancer link open at the
centre of these extents.

The box is computed from the coordinates of the stored chunks at the version
(:meth:`diced.VersionedArray.stored_chunks`, as :meth:`diced.compat.DicedArray.get_extents`),
so it is chunk-aligned and clipped to the array's extent. Cost and bounds:

* one listing of the instance's stored chunk keys, O(stored chunks), bounded: on backends
  with ordered keys (LMDB, files, memory) the keys are first counted lazily and the listing
  stops after :data:`MAX_CHUNKS` (counting every stored version of a chunk); on backends that
  keep per-version manifests instead, the version's manifests are read (O(stored chunks));
* cached per (repo, instance, version) for **locked** versions, whose data cannot change
  (at most :data:`CACHE_SIZE` entries, least recently used dropped first); open versions are
  listed on every request;
* above :data:`MAX_CHUNKS` stored chunks the box is not computed: the answer has
  ``"Complete": false`` and the array's declared extent (clients then use its centre).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from diced.server.geometry import array_extent, zyx

__all__ = ["CACHE_SIZE", "MAX_CHUNKS", "clear_cache", "written_extents"]

#: Above this many stored chunks the box is not computed (declared extent answered instead).
MAX_CHUNKS = 1_000_000
#: Locked (instance, version) answers kept.
CACHE_SIZE = 1024

_cache: OrderedDict[tuple[str, int, str], dict[str, Any]] = OrderedDict()
_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every cached answer (tests; a store replaced under a running server)."""
    with _lock:
        _cache.clear()


def _too_many(arr: Any, limit: int) -> int | None:
    """The number of stored keys if it is known to exceed ``limit`` (counted lazily, stopping
    at ``limit + 1``), else ``None``. Ordered-key backends only; ``None`` for the others."""
    from itertools import islice

    from diced.repo import keys as K

    space = getattr(arr, "_space", None)
    if space is None or not getattr(space, "ordered", False):
        return None
    n = sum(1 for _ in islice(space.backend.list_keys(K.data_prefix(space.inst)), limit + 1))
    return n if n > limit else None


def _compute(arr: Any, max_chunks: int) -> dict[str, Any]:
    lo, hi = array_extent(arr)
    declared = {"MinPoint": list(zyx(lo)), "MaxPoint": [h - 1 for h in zyx(hi)]}
    many = _too_many(arr, max_chunks)
    if many is not None:  # "Chunks": at least this many
        return {**declared, "Chunks": many, "Complete": False, "Declared": declared}
    coords = arr.stored_chunks()
    if not coords:
        return {"MinPoint": None, "MaxPoint": None, "Chunks": 0, "Complete": True,
                "Declared": declared}
    if len(coords) > max_chunks:
        return {**declared, "Chunks": len(coords), "Complete": False, "Declared": declared}
    c = np.asarray(coords, dtype=np.int64)
    ch = np.asarray(arr.chunks, dtype=np.int64)
    origin = np.asarray(lo, dtype=np.int64)
    wlo = np.maximum(c.min(axis=0) * ch + origin, origin)
    whi = np.minimum((c.max(axis=0) + 1) * ch + origin, np.asarray(hi, dtype=np.int64))
    return {"MinPoint": [int(v) for v in wlo[::-1]],
            "MaxPoint": [int(v) - 1 for v in whi[::-1]],
            "Chunks": len(coords), "Complete": True, "Declared": declared}


def written_extents(arr: Any, *, repo_root: str, instance_id: int, version_uuid: str,
                    locked: bool, max_chunks: int | None = None,
                    version_id: int | None = None) -> dict[str, Any]:
    """The written extents of ``arr`` (a handle pinned to ``version_uuid``, whose id in its
    repo is ``version_id``: ids are never reused, but a tag's UUID is its name and comes
    back when a deleted tag is made again), DVID x, y, z order.

    Returns ``{"MinPoint": [x, y, z] | None, "MaxPoint": [x, y, z] | None (inclusive),
    "Chunks": n, "Complete": bool, "Declared": {"MinPoint", "MaxPoint"}}``; ``None`` points
    when nothing is stored. Cached for locked versions (see the module docstring).
    """
    limit = MAX_CHUNKS if max_chunks is None else max_chunks
    key = (repo_root, int(instance_id), version_uuid, version_id)
    if locked:
        with _lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                return hit
    out = _compute(arr, limit)
    if locked:
        with _lock:
            _cache[key] = out
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return out
