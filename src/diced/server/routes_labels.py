"""Labelmap endpoints (DVID ``labelmap``; dvid-reference §4.5, §4.6, §5, §8).

Label arrays are diced :class:`~diced.datatypes.labels.LabelArray` instances. JSON answers are
written with the exact text DVID's handlers print (``{"Label": 23}``, ``{"voxels": 12}``, ...),
block streams and sparse volumes byte for byte in DVID's formats.
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
from starlette.responses import Response, StreamingResponse

from diced.server._core import mapping_table, stored_block_bytes
from diced.server._http import (
    HTTPError,
    bad,
    json_body,
    label_list,
    parse_bool,
    parse_int,
    parse_label,
    parse_point,
    parse_shape,
    point_list,
    query_int,
)
from diced.server.dvidjson import go_time_string
from diced.server.geometry import array_extent, read_box, scale_view, zyx
from diced.server.registry import Endpoint, InstanceRequest, InstanceType, register
from diced.server.routes_array import (
    _extended_common,
    _geometry,
    _le_bytes,
    array_response,
    common_endpoints,
    grow_to,
    image_response,
    parse_block_list,
    write_box,
    written_extents_endpoint,
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


def _sv(req: InstanceRequest) -> bool:
    return parse_bool(req.query.get("supervoxels"), "supervoxels")


def _scale(req: InstanceRequest) -> int:
    return query_int(req.query, "scale", 0, lo=0, hi=20)


def _text_json(text: str) -> Response:
    return Response(text.encode(), media_type="application/json")


def _int_list(values: Any) -> str:
    return "[" + ",".join(str(int(v)) for v in values) + "]"


def _label_arg(req: InstanceRequest, what: str = "label") -> int:
    if not req.parts:
        raise bad(f"DVID requires {what} to follow '{req.keyword}' command")
    label = parse_label(req.parts[0], what)
    if label == 0:
        raise bad("Label 0 is protected background value and cannot be queried as body.")
    return label


# --- voxels ----------------------------------------------------------------------------------

def encode_google(vol: np.ndarray) -> bytes:
    """neuroglancer's compressed_segmentation of a (z, y, x) uint64 volume in 8³ blocks, with
    the one-channel header, as DVID's ``compression=google``."""
    import compressed_segmentation as cseg

    if any(s % 8 for s in vol.shape):
        raise bad(f"compression=google needs sizes that are multiples of 8, got {zyx(vol.shape)}")
    return cseg.compress(np.ascontiguousarray(vol, np.uint64).T, block_size=(8, 8, 8), order="F")


def compress_labels(vol: np.ndarray, compression: str) -> Response:
    """A label volume in one of DVID's ``compression`` forms (``writeCompressedToHTTP``)."""
    headers: dict[str, str] = {}
    if compression in ("", "none", "uncompressed"):
        return array_response(vol)
    if compression == "lz4":
        import lz4.block

        body = lz4.block.compress(_le_bytes(vol), store_size=False)
    elif compression == "gzip":
        body = gzip.compress(_le_bytes(vol), compresslevel=1)
    elif compression in ("google", "googlegzip"):
        body = encode_google(vol)
        if compression == "googlegzip":
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
    else:
        raise bad(f"unknown compression type {compression!r}")
    return Response(body, media_type="application/octet-stream", headers=headers)


_RAW_COMPRESSION = ("", "none", "uncompressed", "lz4", "gzip", "google", "googlegzip")


def _raw_get(req: InstanceRequest) -> Response:
    axes, size, offset, fmt = _geometry(req)
    scale = _scale(req)
    arr = req.instance()
    if len(axes) != 3 or fmt not in (None, "", "nd", "raw"):
        vol = read_box(arr, offset, size, scale=scale, supervoxels=_sv(req))
        if len(axes) == 3:
            if fmt.split(":")[0] not in ("jpg", "jpeg", "png"):
                raise bad(f"3-D raw supports no format, got {fmt!r}")
            return image_response(vol.reshape(-1, vol.shape[2]), fmt)
        plane = vol.reshape([s for i, s in enumerate(zyx(size)) if 2 - i in axes])
        return image_response(plane, fmt or "png")
    comp = (req.query.get("compression") or "").lower()
    if comp not in _RAW_COMPRESSION:
        raise bad(f"unknown compression type {comp!r} (lz4, gzip, google, googlegzip)")
    if comp in ("google", "googlegzip") and any(s % 8 for s in size):
        raise bad(f"compression={comp} needs sizes that are multiples of 8, got {size}")
    vol = read_box(arr, offset, size, scale=scale, supervoxels=_sv(req))
    return compress_labels(vol, comp)


def _raw_post(req: InstanceRequest) -> Response:
    axes, size, offset, fmt = _geometry(req)
    if len(axes) != 3 or fmt not in (None, "", "nd"):
        raise bad("POST raw takes 3-D data: raw/0_1_2/<size>/<offset>")
    if _scale(req):
        raise bad("POST raw writes scale 0; lower scales are computed")
    n = int(np.prod(size))
    comp = (req.query.get("compression") or "").lower()
    data = req.body
    try:
        if comp == "lz4":
            import lz4.block

            data = lz4.block.decompress(data, uncompressed_size=n * 8)
        elif comp == "gzip":
            data = _gunzip(data, n * 8)
        elif comp not in ("", "none"):
            raise bad(f"POST raw compression must be lz4 or gzip, got {comp!r}")
    except HTTPError:
        raise
    except Exception as exc:  # noqa: BLE001 - lz4/gzip errors on a corrupt body
        raise bad(f"cannot decompress the {comp} body: {exc}") from None
    if len(data) != n * 8:
        raise bad(f"POST raw body has {len(data)} bytes; size {size} of uint64 needs {n * 8}")
    vol = np.frombuffer(data, dtype="<u8").reshape(zyx(size))
    write_box(req.writable(), offset, vol)
    return Response(b"", 200)


def _gunzip(data: bytes, limit: int) -> bytes:
    import zlib

    d = zlib.decompressobj(wbits=31)
    out = d.decompress(data, limit + 1)
    if len(out) > limit:
        raise bad(f"gzip body decompresses to more than {limit} bytes")
    return out


def _label_at(req: InstanceRequest) -> Response:
    if not req.parts:
        raise bad("DVID requires coord to follow 'label' command")
    x, y, z = parse_point(req.parts[0], "coord")
    vol = read_box(req.instance(), (x, y, z), (1, 1, 1), scale=_scale(req), supervoxels=_sv(req))
    return _text_json(f'{{"Label": {int(vol.reshape(-1)[0])}}}')


def labels_at(arr: Any, pts_xyz: list[tuple[int, int, int]], scale: int,
              supervoxels: bool) -> np.ndarray:
    """Labels at absolute (x, y, z) points; 0 outside the array."""
    out = np.zeros(len(pts_xyz), dtype=np.uint64)
    if not pts_xyz:
        return out
    view, extra = scale_view(arr, scale)
    if extra:
        for i, p in enumerate(pts_xyz):
            out[i] = read_box(arr, p, (1, 1, 1), scale=scale, supervoxels=supervoxels).item()
        return out
    lo, hi = array_extent(arr, scale)
    pts = np.array([zyx(p) for p in pts_xyz], dtype=np.int64) - np.array(lo)
    inside = ((pts >= 0) & (pts < np.array(hi) - np.array(lo))).all(axis=1)
    if inside.any():
        out[inside] = view.labels_at(pts[inside], supervoxels=supervoxels)
    return out


def _labels(req: InstanceRequest) -> Response:
    pts = point_list(json_body(req.body, "labels request body"), "labels request")
    vals = labels_at(req.instance(), pts, _scale(req), _sv(req))
    return _text_json(_int_list(vals))


# --- mapping -------------------------------------------------------------------------------

def _exists(arr: Any, label: int, supervoxels: bool) -> bool:
    return arr.count(label, supervoxels=supervoxels) > 0


def _mapping(req: InstanceRequest) -> Response:
    svs = label_list(json_body(req.body, "mapping request body"), "mapping request")
    arr = req.instance()
    nolookup = parse_bool(req.query.get("nolookup"), "nolookup")
    keys, values = mapping_table(arr)
    a = np.array(svs, dtype=np.uint64)
    out = a.copy()
    if len(keys) and len(a):
        pos = np.clip(np.searchsorted(keys, a), 0, len(keys) - 1)
        hit = keys[pos] == a
        out[hit] = values[pos[hit]]
    if not nolookup:  # DVID's verifyMappings: a supervoxel that is not stored maps to 0
        for i, sv in enumerate(svs):
            if sv == 0 or not _exists(arr, sv, True):
                out[i] = 0
    return _text_json(_int_list(out))


def _mappings(req: InstanceRequest) -> Response:
    if req.method == "POST":
        raise bad("POST mappings (protobuf MappingOps) is not supported by diced: use merge, "
                  "cleave and renumber, which keep the label index consistent")
    keys, values = mapping_table(req.instance())
    if (req.query.get("format") or "") == "binary":
        pairs = np.empty((len(keys), 2), dtype="<u8")
        pairs[:, 0], pairs[:, 1] = keys, values
        return Response(pairs.tobytes(), media_type="application/octet-stream")
    text = "".join(f"{k} {v}\n" for k, v in zip(keys.tolist(), values.tolist(), strict=True))
    return Response(text.encode(), media_type="text/plain")


def _supervoxels_of(req: InstanceRequest) -> Response:
    label = _label_arg(req)
    svs = req.instance().supervoxels(label)
    if not len(svs):
        return Response(b"", 404)
    return _text_json(_int_list(svs))


def _supervoxel_sizes(req: InstanceRequest) -> Response:
    label = _label_arg(req)
    arr = req.instance()
    svs = [int(s) for s in arr.supervoxels(label)]
    sizes = [arr.count(s, supervoxels=True) for s in svs]
    if not svs or not sum(sizes):
        return Response(b"", 404)
    return _text_json('{\n  "supervoxels": ' + _int_list(svs) + ',\n  "sizes": '
                      + _int_list(sizes) + "\n}")


def _size(req: InstanceRequest) -> Response:
    label = _label_arg(req)
    n = req.instance().count(label, supervoxels=_sv(req))
    if n == 0:
        return Response(b"", 404)
    return _text_json(f'{{"voxels": {n}}}')


def _sizes(req: InstanceRequest) -> Response:
    labels = label_list(json_body(req.body, "sizes request body"), "sizes request")
    arr = req.instance()
    sv = _sv(req)
    return _text_json(_int_list(arr.count(x, supervoxels=sv) if x else 0 for x in labels))


# --- sparse volumes ----------------------------------------------------------------------------

def _bounds(req: InstanceRequest) -> tuple[list[int | None], list[int | None]]:
    """Optional inclusive voxel bounds ``minx..maxz`` as (lo xyz, hi xyz)."""
    lo: list[int | None] = [None] * 3
    hi: list[int | None] = [None] * 3
    for i, axis in enumerate("xyz"):
        for side, store in (("min", lo), ("max", hi)):
            v = req.query.get(f"{side}{axis}")
            if v is not None and v != "":
                store[i] = parse_int(v, f"query {side}{axis}")
    return lo, hi


def _has_bounds(b: tuple[list[int | None], list[int | None]]) -> bool:
    return any(v is not None for v in b[0] + b[1])


def _abs_runs(arr: Any, label: int, supervoxels: bool, scale: int) -> np.ndarray:
    """Runs ``[x, y, z, len]`` in absolute coordinates at ``scale``."""
    _, extra = scale_view(arr, scale)
    if extra:
        return _computed_runs(arr, label, supervoxels, scale)
    runs = arr.runs(label, supervoxels=supervoxels, scale=scale).astype(np.int64)
    lo, _ = array_extent(arr, scale)
    if len(runs):
        runs[:, :3] += np.array(zyx(lo))
    return runs


def _computed_runs(arr: Any, label: int, supervoxels: bool, scale: int) -> np.ndarray:
    """Runs at a scale past the stored pyramid: the label's block-accurate box read at that
    scale (downsampled on the fly, as ``raw`` does) and masked."""
    from diced.array.sparsevol import mask_to_runs

    blocks = _abs_blocks(arr, label, supervoxels)
    if not len(blocks):
        return np.zeros((0, 4), np.int64)
    ch = np.array(arr.chunks)
    lo = (blocks.min(0) * ch) >> scale
    hi = (((blocks.max(0) + 1) * ch) + (1 << scale) - 1) >> scale
    vol = read_box(arr, zyx(tuple(int(v) for v in lo)), zyx(tuple(int(v) for v in hi - lo)),
                   scale=scale, supervoxels=supervoxels)
    runs = mask_to_runs(vol == np.uint64(label), tuple(int(v) for v in lo))
    return np.asarray(runs, dtype=np.int64).reshape(-1, 4)


def _clip_runs(runs: np.ndarray, bounds: tuple[list[int | None], list[int | None]],
               exact: bool) -> np.ndarray:
    lo, hi = bounds
    keep = np.ones(len(runs), bool)
    x0, x1 = runs[:, 0], runs[:, 0] + runs[:, 3] - 1
    for i, c in ((1, runs[:, 1]), (2, runs[:, 2])):
        if lo[i] is not None:
            keep &= c >= lo[i]
        if hi[i] is not None:
            keep &= c <= hi[i]
    if lo[0] is not None:
        keep &= x1 >= lo[0]
    if hi[0] is not None:
        keep &= x0 <= hi[0]
    runs = runs[keep].copy()
    if exact and len(runs):
        s, e = runs[:, 0], runs[:, 0] + runs[:, 3] - 1
        if lo[0] is not None:
            s = np.maximum(s, lo[0])
        if hi[0] is not None:
            e = np.minimum(e, hi[0])
        runs[:, 0], runs[:, 3] = s, e - s + 1
    return runs


def _sparsevol(req: InstanceRequest) -> Response:
    from diced.array import sparsevol as spv

    if not req.parts:
        raise bad("ERROR: DVID requires label ID to follow 'sparsevol' command")
    label = parse_label(req.parts[0])
    if label == 0:
        raise bad("Label 0 is protected background value and cannot be used as sparse volume.")
    scale, sv = _scale(req), _sv(req)
    bounds = _bounds(req)
    fmt = (req.query.get("format") or "rles").lower()
    if fmt not in ("rles", "srles", "blocks"):
        raise bad(f"format must be rles, srles or blocks, got {fmt!r}")
    comp = (req.query.get("compression") or "").lower()
    if comp not in ("", "lz4", "gzip"):
        raise bad(f"compression must be lz4 or gzip, got {comp!r}")
    exact = parse_bool(req.query.get("exact"), "exact", default=True)
    arr = req.instance()
    if req.method == "HEAD":
        found = _exists(arr, label, sv)
        if found and _has_bounds(bounds):
            found = len(_clip_runs(_abs_runs(arr, label, sv, 0), bounds, True)) > 0
        return Response(b"", 200 if found else 204, media_type="text/html")
    if not _exists(arr, label, sv):
        return Response(b"", 404)
    if fmt == "blocks":
        body = _binary_blocks(arr, label, sv, scale, bounds)
        if body is None:
            return Response(b"", 404)
        return Response(body, media_type="application/octet-stream")
    runs = _abs_runs(arr, label, sv, scale)
    if _has_bounds(bounds):
        runs = _clip_runs(runs, bounds, exact)
        if not len(runs):
            return Response(b"", 404)
    if fmt == "srles":
        return Response(np.ascontiguousarray(runs, "<i4").tobytes(),
                        media_type="application/octet-stream")
    body = spv.encode_rles(runs.astype(np.int32)) if len(runs) else b""
    if comp == "lz4" and body:
        import lz4.block

        body = lz4.block.compress(body, store_size=False)
    elif comp == "gzip" and body:
        body = gzip.compress(body, compresslevel=1)
    return Response(body, media_type="application/octet-stream")


def _binary_blocks(arr: Any, label: int, sv: bool, scale: int,
                   bounds: tuple[list[int | None], list[int | None]]) -> bytes | None:
    from diced.array.sparsevol import encode_binary_blocks

    _, extra = scale_view(arr, scale)
    if extra:
        raise bad(f"sparsevol at scale {scale}: {arr.name!r} stores scales 0..{arr.max_scale}")
    lo, _ = array_extent(arr, scale)
    lo_b, hi_b = bounds
    items = []
    for org, mask in arr.mask_blocks(label, supervoxels=sv, scale=scale):
        start = tuple(o + l for o, l in zip(org, lo, strict=True))  # z, y, x
        end = tuple(s + n - 1 for s, n in zip(start, mask.shape, strict=True))
        xyz0, xyz1 = zyx(start), zyx(end)
        if any((lb is not None and e < lb) or (hb is not None and s > hb)
               for s, e, lb, hb in zip(xyz0, xyz1, lo_b, hi_b, strict=True)):
            continue
        items.append((xyz0, mask))
    if not items:
        return None
    return encode_binary_blocks(label, items)


def _abs_blocks(arr: Any, label: int, sv: bool) -> np.ndarray:
    """(n, 3) absolute block coords (z, y, x) at scale 0 of a label."""
    blocks = arr.blocks(label, supervoxels=sv)
    lo, _ = array_extent(arr)
    return blocks + (np.array(lo) // np.array(arr.chunks))


def _sparsevol_coarse(req: InstanceRequest) -> Response:
    from diced.array.sparsevol import block_spans

    if not req.parts:
        raise bad("DVID requires label ID to follow 'sparsevol-coarse' command")
    label = parse_label(req.parts[0])
    if label == 0:
        raise bad("Label 0 is protected background value and cannot be used as sparse volume.")
    arr = req.instance()
    blocks = _abs_blocks(arr, label, _sv(req))
    lo, hi = _bounds(req)
    bs = zyx(arr.chunks)
    keep = np.ones(len(blocks), bool)
    for i in range(3):  # bounds are voxels in x, y, z; blocks are z, y, x
        col = blocks[:, 2 - i]
        if lo[i] is not None:
            keep &= col >= lo[i] // bs[i]
        if hi[i] is not None:
            keep &= col <= hi[i] // bs[i]
    blocks = blocks[keep]
    if not len(blocks):
        return Response(b"", 404)
    return Response(block_spans(blocks), media_type="application/octet-stream")


def _sparsevol_size(req: InstanceRequest) -> Response:
    if not req.parts:
        raise bad("ERROR: DVID requires label ID to follow 'sparsevol-size' command")
    label = parse_label(req.parts[0])
    if label == 0:
        raise bad("Label 0 is protected background value and cannot be used as sparse volume.")
    arr, sv = req.instance(), _sv(req)
    n = arr.count(label, supervoxels=sv)
    if n == 0:
        return Response(b"", 404)
    blocks = _abs_blocks(arr, label, sv)
    bs = np.array(zyx(arr.chunks))
    bmin, bmax = blocks.min(0)[::-1], blocks.max(0)[::-1]  # x, y, z
    vmin, vmax = bmin * bs, (bmax + 1) * bs - 1
    return _text_json(f'{{"voxels": {n}, "numblocks": {len(blocks)}, '
                      f'"minvoxel": [{vmin[0]}, {vmin[1]}, {vmin[2]}], '
                      f'"maxvoxel": [{vmax[0]}, {vmax[1]}, {vmax[2]}]}}')


# --- label bookkeeping ---------------------------------------------------------------------

def _maxlabel(req: InstanceRequest) -> Response:
    if req.method == "POST":
        raise bad("POST maxlabel is not supported by diced: the max label follows the "
                  "written labels, and nextlabel allocations never reuse ids")
    return _text_json(f'{{"maxlabel": {req.instance().maxlabel()}}}')


def _nextlabel(req: InstanceRequest) -> Response:
    if req.method == "POST":
        if not req.parts:
            raise bad("DVID requires number of requested labels to follow POST /nextlabel")
        count = parse_int(req.parts[0], "number of labels", lo=1, hi=1 << 32)
        start, end = req.writable().allocate(count)
        return _text_json(f'{{"start": {start}, "end": {end}}}')
    return _text_json(f'{{"nextlabel": {req.instance().nextlabel()}}}')


# --- edits -----------------------------------------------------------------------------------

def _merge(req: InstanceRequest) -> Response:
    labels = label_list(json_body(req.body, "merge body"), "merge op", limit=100_000)
    if len(labels) < 2:
        raise bad("Bad merge op JSON: need [target, label1, label2, ...]")
    if any(x == 0 for x in labels):
        raise bad("Error on merge: label 0 cannot be merged")
    arr = req.writable()
    for x in labels:
        if not _exists(arr, x, False):
            raise bad(f"Error on merge: label {x} does not exist")
    mutid = arr.merge(labels[0], labels[1:])
    return _text_json(f'{{"MutationID": {int(mutid)}}}')


def _latest_mutation(arr: Any, action: str, **match: int) -> int:
    for rec in reversed(arr.mutations()):
        if rec.get("Action") == action and all(rec.get(k) == v for k, v in match.items()):
            return int(rec["MutationID"])
    return 0


def _cleave(req: InstanceRequest) -> Response:
    label = _label_arg(req, "label ID")
    svs = label_list(json_body(req.body, "cleave body"), "cleave supervoxels", limit=1_000_000)
    if not svs:
        raise bad("cleave needs a non-empty JSON list of supervoxels")
    arr = req.writable()
    new = arr.cleave(label, svs)
    mutid = _latest_mutation(arr, "cleave", CleavedLabel=int(new))
    return _text_json(f'{{"CleavedLabel": {int(new)}, "MutationID": {mutid}}}')


def _split_supervoxel(req: InstanceRequest) -> Response:
    from diced.array.sparsevol import decode_rles

    sv = _label_arg(req, "label ID")
    split = req.query.get("split")
    remain = req.query.get("remain")
    split_id = parse_label(split, "split") if split else None
    remain_id = parse_label(remain, "remain") if remain else None
    if not req.body or req.body[:1] != b"\x00":
        raise bad("split-supervoxel body must be a legacy sparsevol RLE (payload descriptor 0)")
    decode_rles(req.body)  # validate before anything is written
    arr = req.writable()
    a, b = arr.split_supervoxel(sv, req.body, split=split_id, remain=remain_id)
    mutid = _latest_mutation(arr, "split-supervoxel", SplitSupervoxel=int(a))
    return _text_json(f'{{"SplitSupervoxel": {int(a)}, "RemainSupervoxel": {int(b)}, '
                      f'"MutationID": {mutid}}}')


def _renumber(req: InstanceRequest) -> Response:
    pairs = label_list(json_body(req.body, "renumber body"), "renumber op", limit=200_000)
    if len(pairs) % 2:
        raise bad("Bad renumber op JSON, must be even list of numbers [new1, old1, new2, old2, ...]")
    arr = req.writable()
    for i in range(0, len(pairs), 2):
        new, old = pairs[i], pairs[i + 1]
        if not _exists(arr, old, False):
            raise bad(f"Error on renumber: label {old} does not exist")
        arr.renumber(new, old)
    return Response(b"", 200)


# --- mutation log, last mod, label index --------------------------------------------------------

def go_timestamp(core: str) -> str:
    """A core mutation timestamp (``"%Y-%m-%d %H:%M:%S"`` UTC) in Go's ``time.String()`` form."""
    import calendar
    import time

    try:
        return go_time_string(calendar.timegm(time.strptime(core, "%Y-%m-%d %H:%M:%S")))
    except (TypeError, ValueError):
        return str(core)


def _rfc3339(core: str) -> str:
    import calendar
    import time

    from diced.server.dvidjson import go_time

    try:
        return go_time(calendar.timegm(time.strptime(core, "%Y-%m-%d %H:%M:%S")))
    except (TypeError, ValueError):
        return str(core)


def mutation_records(arr: Any) -> list[dict[str, Any]]:
    """This version's mutation log as DVID's /mutations lists it (the ``-complete`` records)."""
    out = []
    for rec in arr.mutations():
        r = dict(rec)
        if not str(r.get("Action", "")).endswith("-complete"):
            r["Action"] = f"{r.get('Action')}-complete"
        r["Timestamp"] = go_timestamp(r.get("Timestamp", ""))
        out.append(r)
    return out


def _mutations(req: InstanceRequest) -> Response:
    recs = mutation_records(req.instance())
    body = "[" + ",".join(json.dumps(r, sort_keys=True, separators=(",", ":")) for r in recs) + "]"
    return _text_json(body)


_LABEL_FIELDS = ("Target", "OrigLabel", "CleavedLabel", "Body", "NewLabel", "Supervoxel",
                 "SplitSupervoxel", "RemainSupervoxel")


def last_mod(arr: Any, label: int, svs: list[int]) -> tuple[int, str]:
    """(mutation id, RFC3339 time) of the newest logged edit touching ``label`` or its
    supervoxels, over the version's ancestry; ``(0, "")`` when none."""
    watch = {int(label), *svs}
    for rec in reversed(arr.mutations(ancestors=True)):
        hit = any(rec.get(f) in watch for f in _LABEL_FIELDS) or \
            any(x in watch for x in rec.get("Labels", []) or []) or \
            any(x in watch for x in rec.get("CleavedSupervoxels", []) or [])
        if hit:
            return int(rec["MutationID"]), _rfc3339(rec.get("Timestamp", ""))
    return 0, ""


def _lastmod(req: InstanceRequest) -> Response:
    label = _label_arg(req)
    arr = req.instance()
    svs = [int(s) for s in arr.supervoxels(label)]
    if not svs:
        return Response(b"", 404)
    mutid, when = last_mod(arr, label, svs)
    return _text_json(f'{{"mutation id": {mutid}, "last mod user": "", "last mod app": "", '
                      f'"last mod time": {json.dumps(when)} }}')


def label_index_bytes(arr: Any, label: int) -> bytes | None:
    """The body's ``LabelIndex`` protobuf, or ``None`` when the label has no voxels."""
    from diced.array.sparsevol import encode_block_index
    from diced.server._proto import encode_label_index

    svs = [int(s) for s in arr.supervoxels(label)]
    if not svs:
        return None
    lo, _ = array_extent(arr)
    b0 = np.array(lo) // np.array(arr.chunks)
    blocks: dict[int, dict[int, int]] = {}
    for sv in svs:
        for (bz, by, bx), n in arr.block_counts(sv, supervoxels=True).items():
            if n:
                key = int(encode_block_index(bx + b0[2], by + b0[1], bz + b0[0]))
                blocks.setdefault(key, {})[sv] = int(n)
    if not blocks:
        return None
    mutid, when = last_mod(arr, label, svs)
    return encode_label_index(label, blocks, last_mutid=mutid, last_mod_time=when)


def _index(req: InstanceRequest) -> Response:
    if req.method == "POST":
        raise bad("POST index is not supported by diced: the label index is maintained with "
                  "every block write")
    if not req.parts:
        raise bad("DVID requires label to follow 'index' command")
    label = parse_label(req.parts[0])
    if label == 0:
        raise bad("there is no index for protected label 0")
    data = label_index_bytes(req.instance(), label)
    if data is None:
        return Response(b"", 404)
    if parse_bool(req.query.get("metadata-only"), "metadata-only"):
        arr = req.instance()
        mutid, when = last_mod(arr, label, [int(s) for s in arr.supervoxels(label)])
        return _text_json(f'{{"num_voxels":{arr.count(label)},"last_mutid":{mutid},'
                          f'"last_mod_time":"{when}","last_mod_user":"","last_mod_app":""}}')
    return Response(data, media_type="application/octet-stream")


def _indices(req: InstanceRequest) -> Response:
    from diced.server._proto import encode_label_indices

    if req.method == "POST":
        raise bad("POST indices is not supported by diced: the label index is maintained with "
                  "every block write")
    labels = label_list(json_body(req.body, "indices request body"), "indices request",
                        limit=50_000)
    arr = req.instance()
    parts = []
    for x in labels:
        data = label_index_bytes(arr, x) if x else None
        if data is not None:
            parts.append(data)
    return Response(encode_label_indices(parts), media_type="application/octet-stream")


# --- block streams ---------------------------------------------------------------------------

_BLOCK_COMPRESSION = ("", "lz4", "gzip", "blocks", "uncompressed")


def _block_payload(dvid_block: bytes, compression: str, shape: tuple[int, ...],
                   mapping: tuple[np.ndarray, np.ndarray] | None) -> bytes:
    from diced.array.codecs.labelblock import decode_block, remap_block

    if mapping is not None and len(mapping[0]):
        dvid_block = remap_block(dvid_block, mapping[0], mapping[1])
    if compression == "blocks":
        return gzip.compress(dvid_block, compresslevel=1)
    vol = decode_block(dvid_block, shape)
    raw = _le_bytes(vol)
    if compression in ("", "lz4"):
        import lz4.block

        return lz4.block.compress(raw, store_size=False)
    if compression == "gzip":
        return gzip.compress(raw, compresslevel=1)
    return raw


def label_block_stream(arr: Any, abs_blocks: np.ndarray, *, scale: int, supervoxels: bool,
                       compression: str) -> Iterator[bytes]:
    """``[i32 bx][i32 by][i32 bz][u32 n][payload]`` per stored block, in the given order."""
    view, extra = scale_view(arr, scale)
    if extra:
        raise bad(f"blocks at scale {scale}: {arr.name!r} stores scales 0..{arr.max_scale}")
    lo, hi = array_extent(view, 0) if scale == 0 else _scaled_extent(view, scale)
    ch = np.array(view.chunks)
    if any(l % c for l, c in zip(lo, view.chunks, strict=True)):
        raise bad("this label array's origin is not block-aligned; use raw")
    g0 = np.array(lo) // ch
    grid = np.array([-(-(h - l) // c) for l, h, c in zip(lo, hi, view.chunks, strict=True)])
    g = abs_blocks - g0
    keep = ((g >= 0) & (g < grid)).all(axis=1)
    absb, g = abs_blocks[keep], g[keep]
    mapping = None if supervoxels else mapping_table(arr)
    for i in range(0, len(g), 32):
        datas = stored_block_bytes(view, g[i:i + 32].tolist())
        for (bz, by, bx), data in zip(absb[i:i + 32].tolist(), datas, strict=True):
            if data is None:
                continue
            payload = _block_payload(data, compression, view.chunks, mapping)
            yield struct.pack("<iiiI", bx, by, bz, len(payload)) + payload


def _scaled_extent(view: Any, scale: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    f = 1 << scale
    lo = tuple(o // f for o in view.origin)
    return lo, tuple(l + n for l, n in zip(lo, view.shape, strict=True))


def _blocks_get(req: InstanceRequest) -> Response:
    if len(req.parts) != 2:
        raise bad("must specify size and offset with GET /blocks endpoint")
    size = parse_shape(req.parts[0], "size")
    offset = parse_point(req.parts[1], "offset")
    comp = (req.query.get("compression") or "").lower()
    if comp not in _BLOCK_COMPRESSION:
        raise bad('compression must be "lz4" (default), "gzip", "blocks" or "uncompressed"')
    arr = req.instance()
    bs = zyx(arr.chunks)
    if any(o % b or s % b for o, s, b in zip(offset, size, bs, strict=True)):
        raise bad(f"cannot use labels via 'blocks' endpoint in non-block aligned geometry "
                  f"size {size}, offset {offset}")
    lo = [o // b for o, b in zip(offset, bs, strict=True)]
    n = [s // b for s, b in zip(size, bs, strict=True)]
    zz, yy, xx = np.meshgrid(np.arange(lo[2], lo[2] + n[2]), np.arange(lo[1], lo[1] + n[1]),
                             np.arange(lo[0], lo[0] + n[0]), indexing="ij")
    blocks = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)
    gen = label_block_stream(arr, blocks, scale=_scale(req), supervoxels=_sv(req),
                             compression=comp)
    first = list(_take(gen, 1))  # raise validation errors before the 200 is sent
    return StreamingResponse(_chain(first, gen), media_type="application/octet-stream")


def _take(gen: Iterator[bytes], n: int) -> Iterator[bytes]:
    for _ in range(n):
        try:
            yield next(gen)
        except StopIteration:
            return


def _chain(head: list[bytes], tail: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from tail


def _specificblocks(req: InstanceRequest) -> Response:
    blocks = parse_block_list(req.query.get("blocks"))
    comp = (req.query.get("compression") or "blocks").lower()
    if comp not in _BLOCK_COMPRESSION:
        raise bad('compression must be "lz4", "gzip", "blocks" (default) or "uncompressed"')
    gen = label_block_stream(req.instance(), blocks, scale=_scale(req), supervoxels=_sv(req),
                             compression=comp)
    first = list(_take(gen, 1))
    return StreamingResponse(_chain(first, gen), media_type="application/octet-stream")


def _blocks_post(req: InstanceRequest) -> Response:
    from diced.array.codecs.dvid_storage import parse_block_stream
    from diced.array.codecs.labelblock import decode_block

    if _scale(req):
        raise bad("POST blocks writes scale 0 here; diced computes lower scales itself")
    comp = (req.query.get("compression") or "").lower()
    if comp not in ("", "blocks"):
        raise bad(f"POST blocks takes gzip'd DVID blocks (compression '' or 'blocks'), "
                  f"not {comp!r}")
    items = parse_block_stream(req.body)
    arr = req.writable()
    lo, _ = array_extent(arr)
    if any(l % c for l, c in zip(lo, arr.chunks, strict=True)):
        raise bad("this label array's origin is not block-aligned; use POST raw")
    g0 = np.array(lo) // np.array(arr.chunks)
    coords, blocks = [], []
    for (bx, by, bz), data in items:
        blk = decode_block(data, arr.chunks)
        coords.append((bz - g0[0], by - g0[1], bx - g0[2]))
        blocks.append(blk)
    if not coords:
        return Response(b"", 200)
    c = np.array(coords, dtype=np.int64)
    if (c < 0).any():
        raise bad("blocks lie below the array's minimum point")
    hi_abs = tuple(int(v) for v in (c.max(0) + 1 + g0) * np.array(arr.chunks))
    grow_to(arr, hi_abs)
    arr.write_blocks(c, blocks)
    return Response(b"", 200)


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
