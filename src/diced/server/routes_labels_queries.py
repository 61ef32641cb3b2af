"""Labelmap label queries: supervoxel-to-body ``mapping``/``mappings``, ``supervoxels``,
sizes, and sparse volumes (``sparsevol``, ``sparsevol-coarse``, ``sparsevol-size``)
(dvid-reference §4.5, §5); registered by :mod:`diced.server.routes_labels`."""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np
from starlette.responses import Response

from diced.server._core import mapping_table
from diced.server._http import (
    bad,
    json_body,
    label_list,
    parse_bool,
    parse_int,
    parse_label,
)
from diced.server._labels_common import (
    _exists,
    _int_list,
    _label_arg,
    _scale,
    _sv,
    _text_json,
)
from diced.server.geometry import array_extent, read_box, scale_view, zyx
from diced.server.registry import InstanceRequest


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
