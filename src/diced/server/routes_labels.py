"""Labelmap endpoints (DVID ``labelmap``, dvid-reference §4.5, §5)."""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np
from starlette.responses import Response

from diced.server._http import bad, parse_bool, query_int
from diced.server.geometry import read_box, zyx
from diced.server.registry import Endpoint, InstanceRequest, InstanceType, register
from diced.server.routes_array import _extended_common, _geometry, _le_bytes, common_endpoints

__all__ = ["encode_google", "labelmap_info"]


def labelmap_info(repo: Any, name: str, record: dict[str, Any], arr: Any) -> dict[str, Any]:
    from diced.server.instance_json import base_json

    ext = _extended_common(repo, record, arr, "labelmap", False)
    vid = arr.version.id
    maxlabel = arr.maxlabel()
    ext.update({"MaxLabel": {str(vid): maxlabel}, "MaxRepoLabel": maxlabel,
                "NextLabel": arr.nextlabel() - 1, "IndexedLabels": True,
                # neuroglancer needs >= 1; scales past the stored pyramid are computed on the fly
                "MaxDownresLevel": max(1, int(arr.max_scale))})
    return {"Base": base_json(repo, name, record, "gzip compression, level -1"), "Extended": ext,
            "Extents": {"MinPoint": ext["MinPoint"], "MaxPoint": ext["MaxPoint"]}}


def _supervoxels(req: InstanceRequest) -> bool:
    return parse_bool(req.query.get("supervoxels"), "supervoxels")


def encode_google(vol: np.ndarray) -> bytes:
    """neuroglancer's compressed_segmentation of a (z, y, x) uint64 volume (8³ blocks), with
    the one-channel header, as DVID's ``compression=google``."""
    import compressed_segmentation as cseg

    if any(s % 8 for s in vol.shape):
        raise bad(f"compression=google needs sizes that are multiples of 8, got {zyx(vol.shape)}")
    return cseg.compress(np.ascontiguousarray(vol, np.uint64).T, block_size=(8, 8, 8), order="F")


def compress_labels(data: bytes, vol: np.ndarray | None, compression: str) -> Response:
    """A raw label volume in one of DVID's ``compression`` forms (``writeCompressedToHTTP``)."""
    headers: dict[str, str] = {}
    if compression in ("", "none", "uncompressed"):
        body = data
    elif compression == "lz4":
        import lz4.block

        body = lz4.block.compress(data, store_size=False)
    elif compression == "gzip":
        body = gzip.compress(data, compresslevel=1)
    elif compression in ("google", "googlegzip"):
        assert vol is not None
        body = encode_google(vol)
        if compression == "googlegzip":
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
    else:
        raise bad(f"unknown compression type {compression!r} "
                  "(lz4, gzip, google, googlegzip or none)")
    return Response(body, media_type="application/octet-stream", headers=headers)


def _raw_get(req: InstanceRequest) -> Response:
    axes, size, offset, fmt = _geometry(req)
    scale = query_int(req.query, "scale", 0, lo=0, hi=20)
    arr = req.instance()
    if len(axes) != 3 or fmt not in (None, ""):
        from diced.server.routes_array import image_response

        vol = read_box(arr, offset, size, scale=scale, supervoxels=_supervoxels(req))
        plane = vol.reshape([s for i, s in enumerate(zyx(size)) if 2 - i in axes] or vol.shape)
        return image_response(plane, fmt or "png")
    comp = (req.query.get("compression") or "").lower()
    if comp in ("google", "googlegzip") and any(s % 8 for s in size):
        raise bad(f"compression={comp} needs sizes that are multiples of 8, got {size}")
    if comp not in ("", "none", "uncompressed", "lz4", "gzip", "google", "googlegzip"):
        raise bad(f"unknown compression type {comp!r}")
    vol = read_box(arr, offset, size, scale=scale, supervoxels=_supervoxels(req))
    return compress_labels(_le_bytes(vol), vol, comp)


def build_type() -> InstanceType:
    t = InstanceType(name="labelmap", url="github.com/janelia-flyem/dvid/datatype/labelmap",
                     info=labelmap_info,
                     help="a versioned uint64 label volume with a label index")
    t.endpoints.update(common_endpoints())
    t.endpoints.update({
        "raw": Endpoint({"GET": _raw_get},
                        "0_1_2/<size>/<offset>?compression=lz4|gzip|google|googlegzip&scale=N"),
        "isotropic": Endpoint({"GET": _raw_get}, "as raw"),
    })
    return t


register(build_type())
