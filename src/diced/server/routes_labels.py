"""Labelmap endpoints (DVID ``labelmap``; dvid-reference §4.5, §4.6, §5, §8).

Label arrays are diced :class:`~diced.datatypes.labels.LabelArray` instances. JSON answers are
written with the exact text DVID's handlers print (``{"Label": 23}``, ``{"voxels": 12}``, ...),
block streams and sparse volumes byte for byte in DVID's formats.

This module builds and registers the ``labelmap`` type; its endpoints live in route families:
voxels and blocks (:mod:`~diced.server.routes_labels_voxels`), label queries and sparse
volumes (:mod:`~diced.server.routes_labels_queries`), and proofreading edits, the mutation
log and the label index (:mod:`~diced.server.routes_labels_edits`).
"""

from __future__ import annotations

from typing import Any

from diced.server._http import bad
from diced.server.geometry import zyx
from diced.server.registry import Endpoint, InstanceType, register
from diced.server.routes_array import (
    _extended_common,
    common_endpoints,
    written_extents_endpoint,
)
from diced.server.routes_labels_edits import (
    _cleave,
    _index,
    _indices,
    _lastmod,
    _maxlabel,
    _merge,
    _mutations,
    _nextlabel,
    _renumber,
    _split_supervoxel,
)
from diced.server.routes_labels_queries import (
    _mapping,
    _mappings,
    _size,
    _sizes,
    _sparsevol,
    _sparsevol_coarse,
    _sparsevol_size,
    _supervoxel_sizes,
    _supervoxels_of,
)
from diced.server.routes_labels_voxels import (
    _blocks_get,
    _blocks_post,
    _label_at,
    _labels,
    _raw_get,
    _raw_post,
    _specificblocks,
    encode_google,
)

__all__ = ["encode_google", "labelmap_info"]

#: DVID refuses POST maxlabel above this (``maxPostedMaxLabel``); also the cap for new labels.
MAX_POSTED_LABEL = 1 << 48


def labelmap_info(repo: Any, name: str, record: dict[str, Any], arr: Any) -> dict[str, Any]:
    """DVID's ``info`` JSON of a label array (``labelmap``)."""
    from diced.server.instance_json import base_json

    ext = _extended_common(repo, record, arr, "labelmap", False)
    vid = arr.version.id
    maxlabel = int(arr.maxlabel())
    ext.update({"MaxLabel": {str(vid): maxlabel}, "MaxRepoLabel": maxlabel,
                "NextLabel": arr.nextlabel() - 1, "IndexedLabels": True, "CountLabels": True,
                # Neuroglancer needs >= 1; scales past the stored pyramid are computed on the fly
                "MaxDownresLevel": max(1, int(arr.max_scale))})
    return {"Base": base_json(repo, name, record, "gzip compression, level -1"), "Extended": ext,
            "Extents": {"MinPoint": ext["MinPoint"], "MaxPoint": ext["MaxPoint"]}}


def build_type() -> InstanceType:
    """The ``labelmap`` HTTP type with its endpoints."""
    t = InstanceType(name="labelmap", url="github.com/janelia-flyem/dvid/datatype/labelmap",
                     info=labelmap_info,
                     help="a versioned uint64 label volume with a label index")
    t.endpoints.update(common_endpoints())
    E = Endpoint
    t.endpoints.update({
        "raw": E({"GET": _raw_get, "POST": _raw_post},
                 "0_1_2/<size>/<offset>?compression=lz4|gzip|google|googlegzip&scale=N"),
        "isotropic": E({"GET": _raw_get}, "as raw"),
        "written-extents": written_extents_endpoint(),
        "blocks": E({"GET": _blocks_get, "POST": _blocks_post},
                    "GET <size>/<offset>?compression=lz4|gzip|blocks|uncompressed; POST stream"),
        "ingest-supervoxels": E({"POST": _blocks_post}, "as POST blocks"),
        "specificblocks": E({"GET": _specificblocks}, "?blocks=x,y,z,...&compression=blocks"),
        "label": E({"GET": _label_at}, "<x_y_z> -> {\"Label\": n}"),
        "labels": E({"GET": _labels}, "GET body [[x,y,z],...] -> [n,...]"),
        "mapping": E({"GET": _mapping}, "GET body [sv,...] -> [body,...] (0: unknown)"),
        "mappings": E({"GET": _mappings, "POST": _mappings}, "'sv body' lines or ?format=binary"),
        "supervoxels": E({"GET": _supervoxels_of}, "<label> -> [sv,...]"),
        "supervoxel-sizes": E({"GET": _supervoxel_sizes}, "<label> -> {supervoxels, sizes}"),
        "size": E({"GET": _size}, "<label> -> {\"voxels\": n}"),
        "sizes": E({"GET": _sizes}, "GET body [label,...] -> [n,...]"),
        "sparsevol": E({"GET": _sparsevol}, "<label>?format=rles|srles|blocks&scale&min/max"),
        "sparsevol-size": E({"GET": _sparsevol_size}, "<label> -> voxels, numblocks, bounds"),
        "sparsevol-coarse": E({"GET": _sparsevol_coarse}, "<label> -> block RLE"),
        "maxlabel": E({"GET": _maxlabel, "POST": _maxlabel}, "-> {\"maxlabel\": n}"),
        "nextlabel": E({"GET": _nextlabel, "POST": _nextlabel},
                       "GET -> {\"nextlabel\": n}; POST <count> -> {start, end}"),
        "merge": E({"POST": _merge}, "[target, label, ...] -> {\"MutationID\": n}"),
        "cleave": E({"POST": _cleave}, "<label> [sv,...] -> {CleavedLabel, MutationID}"),
        "split-supervoxel": E({"POST": _split_supervoxel}, "<sv> RLE body -> {Split..., Remain...}"),
        "renumber": E({"POST": _renumber}, "[new, old, new, old, ...]"),
        "mutations": E({"GET": _mutations}, "JSON mutation records of this version"),
        "lastmod": E({"GET": _lastmod}, "<label> -> mutation id, user, app, time"),
        "index": E({"GET": _index, "POST": _index}, "<label> -> protobuf LabelIndex"),
        "indices": E({"GET": _indices, "POST": _indices}, "GET body [label,...] -> LabelIndices"),
    })
    return t


def _create(repo: Any, name: str, settings: dict[str, str]) -> Any:
    from diced.server.settings import block_size, create_props

    bs = block_size(settings, 64)
    levels = settings.get("maxdownreslevel", "0") or "0"
    if not levels.isdigit() or int(levels) > 10:
        raise bad(f"MaxDownresLevel must be 0..10, got {levels!r}")
    arr = repo.create_labels(name, shape=zyx(bs), chunks=zyx(bs), max_scale=int(levels))
    create_props(repo, name, settings)
    return arr


_T = build_type()
_T.create = _create
register(_T)
