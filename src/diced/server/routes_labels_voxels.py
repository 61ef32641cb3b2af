"""Labelmap voxel and block endpoints: ``raw``/``isotropic`` volumes in DVID's compressions,
``label``/``labels`` point lookups, and ``blocks``/``specificblocks``/``ingest-supervoxels``
block streams (dvid-reference §1, §4.5); registered by :mod:`diced.server.routes_labels`."""

from __future__ import annotations

import gzip
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
    parse_point,
    parse_shape,
    point_list,
)
from diced.server._labels_common import (
    _int_list,
    _scale,
    _sv,
    _text_json,
)
from diced.server.geometry import array_extent, read_box, scale_view, zyx
from diced.server.registry import InstanceRequest
from diced.server.routes_array import (
    _geometry,
    _le_bytes,
    array_response,
    grow_to,
    image_response,
    parse_block_list,
    write_box,
)

__all__ = ["compress_labels", "encode_google", "label_block_stream", "labels_at"]


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
