"""Image array endpoints (DVID's ``uint8blk`` and the other ``*blk`` types): ``info``,
``metadata``, ``extents``, ``resolution``, ``raw`` and ``isotropic`` (3-D octet-stream, 3-D as
one JPEG, 2-D slices as PNG or JPEG), ``subvolblocks``, ``specificblocks`` and ``blocks``."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
from starlette.responses import Response, StreamingResponse

from diced.server import props as P
from diced.server._http import (
    MAX_VOXELS,
    bad,
    json_body,
    json_response,
    parse_bool,
    parse_point,
    parse_shape,
    query_int,
)
from diced.server.geometry import array_extent, read_box, zyx
from diced.server.instance_json import base_json
from diced.server.registry import Endpoint, InstanceRequest, InstanceType, register

__all__ = ["array_info", "image_response", "written_extents_endpoint"]

_DIMS = {"0_1": (0, 1), "xy": (0, 1), "0_2": (0, 2), "xz": (0, 2), "1_2": (1, 2), "yz": (1, 2),
         "0_1_2": (0, 1, 2), "xyz": (0, 1, 2)}


def _extended_common(repo: Any, record: dict[str, Any], arr: Any, label: str,
                     interpolable: bool) -> dict[str, Any]:
    props = P.get_props(repo.backend, repo.uuid, record["id"])
    lo, hi = array_extent(arr)
    block = list(zyx(arr.chunks))
    return {
        "Values": [{"DataType": arr.dtype.name, "Label": label}],
        "Interpolable": interpolable,
        "BlockSize": block,
        "VoxelSize": [float(v) for v in props["VoxelSize"]],
        "VoxelUnits": list(props["VoxelUnits"]),
        "MinPoint": list(zyx(lo)),
        "MaxPoint": [h - 1 for h in zyx(hi)],
        "MinIndex": [l // b for l, b in zip(zyx(lo), block, strict=True)],
        "MaxIndex": [(h - 1) // b for h, b in zip(zyx(hi), block, strict=True)],
        "Background": arr.fill_value.item() if arr.dtype.kind in "uif" else 0,
        "GridStore": "",
        "ScaleLevel": 0,
    }


def _compression_name(arr: Any) -> str:
    c = arr.codec.to_dict()
    name = c.get("name", "")
    if name == "blosc":
        return f"blosc {c.get('cname', 'zstd')} compression, level {c.get('clevel', 1)}"
    if name == "raw":
        return "No compression"
    return f"{name} compression"


def array_info(repo: Any, name: str, record: dict[str, Any], arr: Any) -> dict[str, Any]:
    """DVID's ``info`` JSON of an image array instance (``*blk``)."""
    ext = _extended_common(repo, record, arr, arr.dtype.name, True)
    ext["MaxDownresLevel"] = int(arr.max_scale)
    return {"Base": base_json(repo, name, record, _compression_name(arr)), "Extended": ext,
            "Extents": {"MinPoint": ext["MinPoint"], "MaxPoint": ext["MaxPoint"]}}


def _info(req: InstanceRequest) -> Response:
    return json_response(_type_of(req).info(req.loc.repo, req.name, req.record, req.instance()))


def _written_extents(req: InstanceRequest) -> Response:
    from diced.server.extents import written_extents

    node = req.loc.node
    return json_response(written_extents(
        req.instance(), repo_root=req.loc.repo.uuid, instance_id=req.record["id"],
        version_uuid=node.uuid, version_id=node.id, locked=bool(node.locked)))


def written_extents_endpoint() -> Endpoint:
    """``GET written-extents`` (diced extension): the box of the stored chunks at the version
    (see :mod:`diced.server.extents`)."""
    return Endpoint({"GET": _written_extents},
                    "diced extension: {MinPoint, MaxPoint} of the stored chunks at this version")


def _type_of(req: InstanceRequest) -> InstanceType:
    from diced.server.registry import TYPES

    return TYPES[req.typename]


def _metadata(req: InstanceRequest) -> Response:
    arr = req.instance()
    info = _type_of(req).info(req.loc.repo, req.name, req.record, arr)
    ext = info["Extended"]
    axes = []
    for i, label in enumerate("XYZ"):
        axes.append({"Label": label, "Resolution": ext["VoxelSize"][i],
                     "Units": ext["VoxelUnits"][i],
                     "Size": ext["MaxPoint"][i] - ext["MinPoint"][i] + 1,
                     "Offset": ext["MinPoint"][i]})
    import json

    body = json.dumps({"Axes": axes, "Properties": ext}, separators=(",", ":")).encode()
    return Response(body, media_type="application/vnd.dvid-nd-data+json")


def _post_resolution(req: InstanceRequest) -> Response:
    res = json_body(req.body, "resolution body")
    if not isinstance(res, list) or len(res) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e12 for v in res):
        raise bad("resolution body must be [x, y, z] positive numbers")
    P.set_props(req.loc.repo.backend, req.loc.repo.uuid, req.record["id"],
                {"VoxelSize": [float(v) for v in res]})
    return Response(b"", 200)


def _post_extents(req: InstanceRequest) -> Response:
    doc = json_body(req.body, "extents body")
    if not isinstance(doc, dict):
        raise bad('extents body must be {"MinPoint": [x, y, z], "MaxPoint": [x, y, z]}')
    arr = req.writable()
    hi = doc.get("MaxPoint")
    if hi is not None:
        if not isinstance(hi, list) or len(hi) != 3 or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in hi):
            raise bad("MaxPoint must be [x, y, z] integers")
        grow_to(arr, tuple(v + 1 for v in zyx(tuple(hi))))
    return Response(b"", 200)


def grow_to(arr: Any, hi_zyx: tuple[int, ...]) -> None:
    """Grow an array (at its open version) so that absolute ``hi`` (exclusive) fits."""
    lo, cur = array_extent(arr)
    new = tuple(max(c, h) - l for c, h, l in zip(cur, hi_zyx, lo, strict=True))
    if new != tuple(arr.shape):
        if any(n > (1 << 31) for n in new):
            raise bad(f"extent {hi_zyx} is too large")
        arr.resize(new)


# --- raw / isotropic -----------------------------------------------------------------------

def _geometry(req: InstanceRequest, nparts: int = 3) -> tuple[tuple[int, ...], tuple[int, ...],
                                                            tuple[int, ...], str | None]:
    """``(axes, size xyz, offset xyz, format)`` from ``<dims>/<size>/<offset>[/<format>]``."""
    p = req.parts
    if len(p) < 3 or len(p) > 4:
        raise bad(f"expected {req.keyword}/<dims>/<size>/<offset>[/<format>], got "
                  f"{'/'.join([req.keyword, *p])!r}")
    axes = _DIMS.get(p[0])
    if axes is None:
        raise bad(f"dims must be 0_1, 0_2, 1_2 or 0_1_2, got {p[0]!r}")
    n = len(axes)
    size = parse_shape(p[1], "size", n)
    offset = parse_point(p[2], "offset", 3)
    fmt = p[3].lower() if len(p) == 4 else None
    if n == 2:  # a 2-D slice: size is along the two axes, 1 along the third
        full = [1, 1, 1]
        for a, s in zip(axes, size, strict=True):
            full[a] = s
        size = tuple(full)
    return axes, size, offset, fmt


def _raw_get(req: InstanceRequest) -> Response:
    axes, size, offset, fmt = _geometry(req)
    scale = query_int(req.query, "scale", 0, lo=0, hi=20)
    arr = req.instance()
    vol = read_box(arr, offset, size, scale=scale)
    if len(axes) == 3 and fmt in (None, "", "raw", "octet-stream", "nd"):
        if req.method == "HEAD":
            return Response(b"", media_type="application/octet-stream")
        return array_response(vol)
    if len(axes) == 3:
        if fmt.split(":")[0] not in ("jpg", "jpeg"):
            raise bad(f"3-D raw supports no format or 'jpeg', got {fmt!r}")
        img = vol.reshape(vol.shape[0] * vol.shape[1], vol.shape[2])  # width X, height Y·Z
        return image_response(img, fmt)
    plane = vol.reshape([s for i, s in enumerate(zyx(size)) if 2 - i in axes])
    return image_response(plane, fmt or "png")


#: Chunk size of streamed array bodies.
STREAM_CHUNK = 1 << 22


def array_response(vol: np.ndarray, media_type: str = "application/octet-stream") -> Response:
    """A (z, y, x) array as little-endian bytes, streamed in chunks straight from the array's
    memory (no copy of the whole body), with its Content-Length."""
    v = vol if vol.dtype.byteorder in ("<", "|") or (vol.dtype.byteorder == "=" and
                                                      np.little_endian) else vol.astype(
        vol.dtype.newbyteorder("<"))
    flat = memoryview(np.ascontiguousarray(v).reshape(-1).view(np.uint8))
    if len(flat) <= STREAM_CHUNK:
        return Response(bytes(flat), media_type=media_type)

    def chunks():
        for i in range(0, len(flat), STREAM_CHUNK):
            yield flat[i:i + STREAM_CHUNK]

    return StreamingResponse(chunks(), media_type=media_type,
                             headers={"Content-Length": str(len(flat))})


def _le_bytes(vol: np.ndarray) -> bytes:
    v = vol if vol.dtype.byteorder in ("<", "|") or (vol.dtype.byteorder == "=" and
                                                      np.little_endian) else vol.astype(
        vol.dtype.newbyteorder("<"))
    return np.ascontiguousarray(v).tobytes()


def image_response(img: np.ndarray, fmt: str) -> Response:
    """A 2-D array as PNG or JPEG (``jpg:QUALITY``), as DVID's ``WriteImageHttp``."""
    from PIL import Image

    name, _, q = fmt.partition(":")
    name = name.lower()
    if img.dtype == np.uint8:
        pil = Image.fromarray(np.ascontiguousarray(img), mode="L")
    elif img.dtype == np.uint16 and name == "png":
        pil = Image.fromarray(np.ascontiguousarray(img.astype("<u2")), mode="I;16")
    elif img.dtype.kind in "ui" and name == "png" and img.dtype.itemsize >= 4:
        # labels: the low 32 bits as RGBA bytes, as DVID sends 64-bit labels in PNG slices
        rgba = np.ascontiguousarray(img.astype("<u8")).view(np.uint8).reshape(*img.shape, 8)[..., :4]
        pil = Image.fromarray(np.ascontiguousarray(rgba), mode="RGBA")
    else:
        lo, hi = float(img.min()) if img.size else 0.0, float(img.max()) if img.size else 1.0
        scaled = np.zeros(img.shape, np.uint8) if hi <= lo else \
            ((img.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
        pil = Image.fromarray(scaled, mode="L")
    buf = io.BytesIO()
    if name in ("jpg", "jpeg"):
        quality = 80
        if q:
            if not q.isdigit() or not 1 <= int(q) <= 100:
                raise bad(f"jpeg quality must be 1..100, got {q!r}")
            quality = int(q)
        if pil.mode not in ("L", "RGB"):
            pil = pil.convert("RGB")
        pil.save(buf, format="JPEG", quality=quality)
        return Response(buf.getvalue(), media_type="image/jpeg")
    if name == "png":
        pil.save(buf, format="PNG", compress_level=1)
        return Response(buf.getvalue(), media_type="image/png")
    raise bad(f"image format must be png or jpg[:quality], got {fmt!r}")


def _raw_post(req: InstanceRequest) -> Response:
    axes, size, offset, fmt = _geometry(req)
    if len(axes) != 3 or fmt is not None:
        raise bad("POST raw takes 3-D data: raw/0_1_2/<size>/<offset>")
    if query_int(req.query, "scale", 0, lo=0, hi=0):
        raise bad("write at scale 0")
    arr = req.writable()
    n = int(np.prod(size))
    data = req.body
    if len(data) != n * arr.dtype.itemsize:
        raise bad(f"POST raw body has {len(data)} bytes; size {size} of {arr.dtype} needs "
                  f"{n * arr.dtype.itemsize}")
    vol = np.frombuffer(data, dtype=arr.dtype.newbyteorder("<")).reshape(zyx(size))
    write_box(arr, offset, vol)
    return Response(b"", 200)


def write_box(arr: Any, offset_xyz: tuple[int, ...], vol: np.ndarray) -> None:
    """Write a (z, y, x) volume at an absolute (x, y, z) offset, growing the array if needed."""
    off = zyx(offset_xyz)
    lo, _ = array_extent(arr)
    if any(o < l for o, l in zip(off, lo, strict=True)):
        raise bad(f"offset {offset_xyz} lies below the array's minimum point {zyx(lo)}")
    grow_to(arr, tuple(o + s for o, s in zip(off, vol.shape, strict=True)))
    sel = tuple(slice(o - l, o - l + s) for o, l, s in zip(off, lo, vol.shape, strict=True))
    arr[sel] = vol


# --- block streams -------------------------------------------------------------------------

def _block_coords_box(arr: Any, size: tuple[int, ...], offset: tuple[int, ...]) -> np.ndarray:
    """Block grid coords (z, y, x), absolute, of a block-aligned box given in x, y, z."""
    bs = zyx(arr.chunks)
    if any(o % b or s % b for o, s, b in zip(offset, size, bs, strict=True)):
        raise bad(f"size {size} and offset {offset} must be multiples of the block size {bs}")
    lo = [o // b for o, b in zip(offset, bs, strict=True)]
    n = [s // b for s, b in zip(size, bs, strict=True)]
    if n[0] * n[1] * n[2] * int(np.prod(arr.chunks)) > MAX_VOXELS:
        raise bad("too many blocks in one request")
    zz, yy, xx = np.meshgrid(np.arange(lo[2], lo[2] + n[2]), np.arange(lo[1], lo[1] + n[1]),
                             np.arange(lo[0], lo[0] + n[0]), indexing="ij")
    return np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)


def _grid_coords(arr: Any, abs_blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept absolute block coords, their array grid coords) inside the array."""
    lo, hi = array_extent(arr)
    ch = np.array(arr.chunks)
    if any(l % c for l, c in zip(lo, arr.chunks, strict=True)):
        raise bad("this array's origin is not block-aligned; use raw")
    g0 = np.array(lo) // ch
    grid = np.array([-(-(h - l) // c) for l, h, c in zip(lo, hi, arr.chunks, strict=True)])
    g = abs_blocks - g0
    keep = ((g >= 0) & (g < grid)).all(axis=1)
    return abs_blocks[keep], g[keep]


def _image_block_stream(arr: Any, abs_blocks: np.ndarray, compression: str) -> Iterator[bytes]:
    """``[i32 bx][i32 by][i32 bz][i32 nbytes][bytes]`` per stored block (§4.4)."""
    absb, grid = _grid_coords(arr, abs_blocks)
    if compression not in ("", "jpeg", "uncompressed"):
        raise bad(f"compression must be '', 'jpeg' or 'uncompressed', got {compression!r}")
    if compression == "jpeg" and arr.dtype != np.uint8:
        raise bad("jpeg blocks are only for uint8 arrays")
    for i in range(0, len(grid), 64):
        chunks = arr.read_chunks(grid[i:i + 64].tolist())
        for (bz, by, bx), blk in zip(absb[i:i + 64].tolist(), chunks, strict=True):
            if blk is None:
                continue
            if compression == "uncompressed":
                payload = _le_bytes(blk)
            else:  # DVID sends the stored JPEG; diced stores blosc, so encode one here
                payload = _jpeg_block(blk)
            yield struct.pack("<iiii", bx, by, bz, len(payload)) + payload


def _jpeg_block(blk: np.ndarray) -> bytes:
    """A block as DVID stores uint8 JPEG blocks: one grayscale image of width X, height Y·Z."""
    from PIL import Image

    img = np.ascontiguousarray(blk.reshape(blk.shape[0] * blk.shape[1], blk.shape[2]))
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _subvolblocks(req: InstanceRequest) -> Response:
    if len(req.parts) != 2:
        raise bad("expected subvolblocks/<size>/<offset>")
    size = parse_shape(req.parts[0], "size")
    offset = parse_point(req.parts[1], "offset")
    arr = req.instance()
    comp = (req.query.get("compression") or "").lower()
    blocks = _block_coords_box(arr, size, offset)
    gen = _image_block_stream(arr, blocks, "jpeg" if comp in ("", "jpeg") else comp)
    return StreamingResponse(gen, media_type="application/octet-stream")


def parse_block_list(text: str | None) -> np.ndarray:
    """``blocks=x1,y1,z1,x2,...`` into (n, 3) absolute (z, y, x) block coords."""
    if not text:
        raise bad("specificblocks needs the query blocks=x,y,z,x,y,z,...")
    parts = text.split(",")
    if len(parts) % 3 or len(parts) > 3 * 100_000:
        raise bad("blocks= must list x,y,z triples (at most 100000 blocks)")
    try:
        vals = np.array([int(p) for p in parts], dtype=np.int64).reshape(-1, 3)
    except ValueError:
        raise bad("blocks= must be integers") from None
    if np.abs(vals).max(initial=0) > (1 << 31):
        raise bad("block coordinates out of range")
    return vals[:, ::-1].copy()


def _specificblocks(req: InstanceRequest) -> Response:
    arr = req.instance()
    blocks = parse_block_list(req.query.get("blocks"))
    if parse_bool(req.query.get("prefetch"), "prefetch"):
        return Response(b"", media_type="application/octet-stream")
    comp = (req.query.get("compression") or "").lower()
    gen = _image_block_stream(arr, blocks, "jpeg" if comp in ("", "jpeg") else comp)
    return StreamingResponse(gen, media_type="application/octet-stream")


def _blocks_span(req: InstanceRequest) -> Response:
    """GET/POST ``blocks/<bx_by_bz>/<spanX>``: uncompressed blocks along X, no headers."""
    if len(req.parts) != 2:
        raise bad("expected blocks/<bx_by_bz>/<spanX>")
    bx, by, bz = parse_point(req.parts[0], "block coordinate")
    span = parse_int_pos(req.parts[1], "spanX")
    arr = req.instance() if req.method != "POST" else req.writable()
    bs = zyx(arr.chunks)
    nb = int(np.prod(arr.chunks)) * arr.dtype.itemsize
    if span * nb > MAX_VOXELS:
        raise bad("span too long")
    if req.method == "POST":
        if len(req.body) != span * nb:
            raise bad(f"POST blocks body must be {span * nb} bytes, got {len(req.body)}")
        data = np.frombuffer(req.body, arr.dtype.newbyteorder("<")).reshape(span, *arr.chunks)
        vol = np.concatenate(list(data), axis=2)
        write_box(arr, (bx * bs[0], by * bs[1], bz * bs[2]), vol)
        return Response(b"", 200)
    vol = read_box(arr, (bx * bs[0], by * bs[1], bz * bs[2]), (span * bs[0], bs[1], bs[2]))
    parts = [_le_bytes(vol[:, :, i * bs[0]:(i + 1) * bs[0]]) for i in range(span)]
    return Response(b"".join(parts), media_type="application/octet-stream")


def parse_int_pos(text: str, what: str) -> int:
    """A positive size from a URL path (1 to 2**20), or a 400 naming ``what``."""
    from diced.server._http import parse_int

    return parse_int(text, what, lo=1, hi=1 << 20)


def _tags(req: InstanceRequest) -> Response:
    repo = req.loc.repo
    if req.method == "POST":
        doc = json_body(req.body, "tags body")
        tags = doc.get("Tags") if isinstance(doc, dict) else None
        if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in tags.items()):
            raise bad('tags body must be {"Tags": {"key": "value", ...}}')
        cur = P.get_props(repo.backend, repo.uuid, req.record["id"])["Tags"]
        if not parse_bool(req.query.get("replace"), "replace"):
            tags = {**cur, **tags}
        P.set_props(repo.backend, repo.uuid, req.record["id"], {"Tags": tags})
        return Response(b"", 200)
    return json_response({"Tags": P.get_props(repo.backend, repo.uuid, req.record["id"])["Tags"]})


def _help(req: InstanceRequest) -> Response:
    from diced.server._http import text_response

    t = _type_of(req)
    lines = [f"{t.name}: {t.help}", ""] + [f"{','.join(sorted(e.methods)):16s} {kw:18s} {e.help}"
                                          for kw, e in sorted(t.endpoints.items())]
    return text_response("\n".join(lines))


def common_endpoints() -> dict[str, Endpoint]:
    """Endpoints every instance type has: ``help``, ``info``, ``tags``."""
    return {
        "help": Endpoint({"GET": _help}, "this text"),
        "info": Endpoint({"GET": _info}, "instance JSON (Base, Extended)"),
        "tags": Endpoint({"GET": _tags, "POST": _tags}, "DVID tags {\"Tags\": {...}}"),
    }


def _create_array(repo: Any, name: str, settings: dict[str, str], dtype: str) -> Any:
    from diced.server.settings import block_size, create_props

    bs = block_size(settings, 32)  # DVID imageblk default
    arr = repo.create_array(name, dtype, shape=zyx(bs), chunks=zyx(bs))
    create_props(repo, name, settings)
    return arr


def _array_type(dtype: str) -> InstanceType:
    t = InstanceType(name=f"{dtype}blk", url=f"github.com/janelia-flyem/dvid/datatype/imageblk/"
                     f"{dtype}", info=array_info,
                     create=lambda repo, name, s, dt=dtype: _create_array(repo, name, s, dt),
                     help=f"a versioned {dtype} image volume (DVID imageblk)")
    t.endpoints.update(common_endpoints())
    t.endpoints.update({
        "metadata": Endpoint({"GET": _metadata}, "nD metadata (Axes, Properties)"),
        "extents": Endpoint({"POST": _post_extents}, "grow the extents {MinPoint, MaxPoint}"),
        "written-extents": written_extents_endpoint(),
        "resolution": Endpoint({"POST": _post_resolution}, "set the voxel size [x, y, z]"),
        "raw": Endpoint({"GET": _raw_get, "POST": _raw_post},
                        "<dims>/<size>/<offset>[/<format>]: octet-stream, jpeg, png"),
        "isotropic": Endpoint({"GET": _raw_get}, "as raw (voxels are isotropic here)"),
        "subvolblocks": Endpoint({"GET": _subvolblocks}, "<size>/<offset>: JPEG block stream"),
        "specificblocks": Endpoint({"GET": _specificblocks}, "?blocks=x,y,z,...: block stream"),
        "blocks": Endpoint({"GET": _blocks_span, "POST": _blocks_span},
                           "<bx_by_bz>/<spanX>: uncompressed blocks along X"),
    })
    return t


for _dt in ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32",
            "float64"):
    register(_array_type(_dt))
