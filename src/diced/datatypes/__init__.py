"""Datatypes: the kinds of data a repo holds, each behind one public interface.

Layout (one package per type, so a type's files sit together and the repo core imports
none of them)::

    datatypes/
      base.py        Datatype: the interface every type implements
      registry.py    register_datatype / get_datatype / datatypes (built-ins lazily,
                     third-party types via the entry-point group "diced.datatypes")
      array/         "array" (DVID uint8blk, uint16blk, ...): VersionedArray
      labels/        "labels" (DVID labelmap): LabelArray, its edits and merge support
      keyvalue/      "keyvalue": KeyValue
      annotation/    "annotation": point annotations with tag and label (sync) indexes

What every type shares (chunk grids, the indexing planner, codecs and numba kernels on plain
numpy arrays, no I/O) stays in :mod:`diced.array`, the layer below. The repo gives each
instance an :class:`InstanceContext` (its version, key spaces, record updates).

One package per type (rather than one module) because a type is several topics: the
instance object, its edits, its merge support, its element format.

Write your own: subclass :class:`Datatype`, implement ``configure`` and ``open``, and
register it (see the README, "Write your own datatype").
"""

from __future__ import annotations

from diced.datatypes.base import Datatype
from diced.datatypes.registry import (
    ENTRY_POINT_GROUP,
    datatypes,
    get_datatype,
    register_datatype,
)
from diced.repo.context import InstanceContext

__all__ = [
    "ENTRY_POINT_GROUP",
    "Datatype",
    "InstanceContext",
    "datatypes",
    "get_datatype",
    "register_datatype",
]
