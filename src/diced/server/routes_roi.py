"""ROI endpoints (DVID ``roi``; dvid-reference §4.9, §6.1): ``roi`` (GET the spans
``[[z, y, x0, x1], ...]`` in ROI blocks, x1 inclusive; POST replaces them; DELETE),
``mask/0_1_2/<size>/<offset>`` (one u8 per voxel, ZYX, 1 inside), ``ptquery`` (POST
``[[x, y, z], ...]`` -> ``[bool, ...]``, a read, allowed on locked nodes), ``partition``
(``?batchsize=N``: Subvolumes with MinPoint/MaxPoint), plus ``info``/``help``/``tags``.

GET ``roi`` answers the spans in normal form (sorted, touching spans merged): DVID answers
them as stored, which covers the same blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.responses import Response

from diced.server._http import (
    MAX_VOXELS,
    bad,
    json_body,
    json_response,
    parse_bool,
    parse_point,
    point_list,
    query_int,
)
from diced.server.registry import Endpoint, InstanceRequest, InstanceType, register
from diced.server.routes_array import common_endpoints

__all__ = ["MAX_SPANS", "build_type"]

#: most spans one POST ``roi`` may hold
MAX_SPANS = 10_000_000


def _roi(req: InstanceRequest) -> Response:
    if req.parts:
        raise bad("the 'roi' endpoint takes no path after 'roi'")
    if req.method == "POST":
        doc = json_body(req.body, "ROI body")
        if not isinstance(doc, list):
            raise bad("ROI body must be a JSON array of [z, y, x0, x1] spans")
        if len(doc) > MAX_SPANS:
            raise bad(f"ROI body: at most {MAX_SPANS} spans per request")
        from diced.datatypes.roi import spans as S

        spans = S.as_spans(doc)  # validated before anything is stored
        req.writable().put(spans)
        return Response(b"", 200)
    if req.method == "DELETE":
        req.writable().delete()
        return Response(b"", 200)
    return json_response(req.instance().to_json())


def _mask(req: InstanceRequest) -> Response:
    if len(req.parts) != 3 or req.parts[0] != "0_1_2":
        raise bad("expected mask/0_1_2/<size x_y_z>/<offset x_y_z> (only 3-D masks)")
    size = parse_point(req.parts[1], "size")
    if any(s <= 0 for s in size):
        raise bad(f"size must be positive, got {req.parts[1]!r}")
    total = size[0] * size[1] * size[2]
    if total > MAX_VOXELS:
        raise bad(f"size {req.parts[1]} covers {total} voxels; at most {MAX_VOXELS} per request")
    lo = parse_point(req.parts[2], "offset")
    hi = tuple(a + s for a, s in zip(lo, size, strict=True))
    mask = req.instance().mask(lo, hi)
    return Response(np.ascontiguousarray(mask, dtype=np.uint8).tobytes(),
                    media_type="application/octet-stream")


def _ptquery(req: InstanceRequest) -> Response:
    pts = point_list(json_body(req.body, "ptquery body"), "ptquery body")
    if not pts:
        return json_response([])
    return json_response(req.instance().ptquery(np.array(pts, np.int64)))


_ptquery.read_only = True  # type: ignore[attr-defined]  # DVID: a POST that only reads


def _partition(req: InstanceRequest) -> Response:
    n = query_int(req.query, "batchsize", 8, lo=1, hi=1 << 16)
    parse_bool(req.query.get("optimized"), "optimized")  # same subvolumes either way here
    return json_response(req.instance().partition(n))


def _info(repo: Any, name: str, record: dict[str, Any], handle: Any) -> dict[str, Any]:
    from diced.server.instance_json import base_json

    spans = handle.get()
    bx, by, bz = handle.block_size
    ext: dict[str, Any] = {"BlockSize": [bx, by, bz],
                           "MinZ": int(spans[:, 0].min()) if len(spans) else 0,
                           "MaxZ": int(spans[:, 0].max()) if len(spans) else 0}
    return {"Base": base_json(repo, name, record, ""), "Extended": ext}


def _create(repo: Any, name: str, settings: dict[str, str]) -> Any:
    """A new ROI (``BlockSize`` optional, default 32 as DVID)."""
    from diced.server.settings import block_size, check_props, create_props

    bs = block_size(settings, 32)
    check_props(settings)
    roi = repo.create_instance(name, "roi", block_size=list(bs))
    create_props(repo, name, settings)
    return roi


def build_type() -> InstanceType:
    """The ``roi`` HTTP type with its endpoints."""
    t = InstanceType(name="roi", url="github.com/janelia-flyem/dvid/datatype/roi",
                     info=_info, create=_create,
                     help="a region of interest as block spans [z, y, x0, x1]")
    t.endpoints.update(common_endpoints())
    E = Endpoint
    t.endpoints.update({
        "roi": E({"GET": _roi, "POST": _roi, "DELETE": _roi},
                 "[[z, y, x0, x1], ...] block spans (x1 inclusive); POST replaces; DELETE"),
        "mask": E({"GET": _mask}, "0_1_2/<size>/<offset>: u8 per voxel (ZYX), 1 inside"),
        "ptquery": E({"POST": _ptquery}, "[[x, y, z], ...] -> [true, false, ...] (a read)"),
        "partition": E({"GET": _partition}, "?batchsize=N: subvolumes of N^3 blocks"),
    })
    return t


register(build_type())
