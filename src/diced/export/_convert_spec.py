"""The output volume of the shard converter: the neuroglancer spec parsed into output scales
(sharding geometry plus chunk encoding), the ``info`` written to DEST, and scale arguments
checked against the spec.

Private to :mod:`diced.export.convert_shards` (and :mod:`diced.export._verify`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import fsspec
import numpy as np

from diced.errors import FormatError, InvalidArgumentError, NotFoundError
from diced.export.sharding import ShardedScale, parse_spec

_NG_SHARD = re.compile(r"^[0-9a-f]+\.shard$")
_BLOCK = 64
_WINDOW_ROWS = 256  # records fetched and encoded per step of a shard
_BASE_TASK_BYTES = 16 << 20  # per-task working set besides what scales with the shard


@dataclass(frozen=True)
class _OutScale:
    """One scale of the output volume: sharding geometry plus chunk encoding."""

    sc: ShardedScale
    encoding: str
    block_size: tuple[int, int, int]

    @property
    def index(self) -> int:
        return self.sc.index

    @property
    def key(self) -> str:
        return self.sc.key

    def chunk_shape(self, coords: np.ndarray) -> np.ndarray:
        """Clipped (x, y, z) shape of each output chunk ``(n, 3)``."""
        cs = np.asarray(self.sc.chunk_size, dtype=np.int64)
        size = np.asarray(self.sc.size, dtype=np.int64)
        return np.minimum(cs, size - coords * cs)

    def transcodable(self) -> bool:
        return (self.encoding == "compressed_segmentation" and self.block_size == (8, 8, 8)
                and self.sc.chunk_size == (64, 64, 64))


def _load_spec_obj(spec: Any, opts: Mapping[str, Any]) -> tuple[dict, str | None]:
    """The spec as a dict, and its path if it was given as one (for retry commands)."""
    if isinstance(spec, Mapping):
        return dict(spec), None
    if isinstance(spec, bytes) or (isinstance(spec, str) and spec.lstrip().startswith("{")):
        try:
            return json.loads(spec), None
        except ValueError as exc:
            raise FormatError(f"spec is not valid JSON: {exc}") from exc
    if isinstance(spec, str | os.PathLike):
        path = os.fspath(spec)
        try:
            with fsspec.open(path, "rb", **dict(opts)) as f:
                text = f.read()
        except FileNotFoundError as exc:
            raise NotFoundError(f"spec file {path!r} not found") from exc
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise FormatError(f"spec {path}: not valid JSON: {exc}") from exc
        return obj, path
    raise InvalidArgumentError(
        f"spec must be a mapping, JSON text or a path, got {type(spec).__name__}")


def _output_scales(obj: Mapping[str, Any]) -> list[_OutScale]:
    """Parse the spec, allowing output chunk sizes other than 64^3 (z-compressed scale 0)."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("scales"), list):
        raise FormatError("spec must be a JSON object with a 'scales' list")
    patched = dict(obj)
    sizes = []
    for i, s in enumerate(obj["scales"]):
        cs = s.get("chunk_sizes") if isinstance(s, Mapping) else None
        if (not isinstance(cs, list) or not cs or not isinstance(cs[0], list | tuple)
                or len(cs[0]) != 3 or not all(isinstance(v, int) and v > 0 for v in cs[0])):
            raise FormatError(f"scales[{i}]: field 'chunk_sizes' must start with 3 positive "
                              f"integers, got {cs!r}")
        sizes.append(tuple(int(v) for v in cs[0]))
    patched["scales"] = [dict(s, chunk_sizes=[[64, 64, 64]]) for s in obj["scales"]]
    vspec = parse_spec(patched)
    out = []
    for i, (sc, cs) in enumerate(zip(vspec.scales, sizes, strict=True)):
        sc = replace(sc, chunk_size=cs)
        if sc.total_bits > sc.preshift_bits + sc.minishard_bits + sc.shard_bits:
            raise FormatError(f"scales[{i}].sharding: preshift + minishard + shard bits are fewer "
                              f"than the {sc.total_bits} chunk-id bits of grid {sc.grid}")
        raw = obj["scales"][i]
        enc = sc.encoding
        if enc not in ("compressed_segmentation", "raw"):
            raise FormatError(f"scales[{i}]: encoding {enc!r} is not supported for labels "
                              "(use compressed_segmentation or raw)")
        bs = raw.get("compressed_segmentation_block_size", [8, 8, 8])
        if (not isinstance(bs, list | tuple) or len(bs) != 3
                or not all(isinstance(v, int) and v > 0 for v in bs)):
            raise FormatError(f"scales[{i}]: bad compressed_segmentation_block_size {bs!r}")
        out.append(_OutScale(sc, enc, tuple(int(v) for v in bs)))
    return out


def _info_json(obj: Mapping[str, Any]) -> dict:
    """The ``info`` written to DEST: the spec minus DVID-only members, plus the defaults
    neuroglancer readers require (``compressed_segmentation_block_size``)."""
    info = {k: v for k, v in obj.items() if k != "batch_size"}
    info.setdefault("@type", "neuroglancer_multiscale_volume")
    scales = []
    for sc in info["scales"]:
        sc = dict(sc)
        if sc.get("encoding", "compressed_segmentation") == "compressed_segmentation":
            sc.setdefault("encoding", "compressed_segmentation")
            sc.setdefault("compressed_segmentation_block_size", [8, 8, 8])
        scales.append(sc)
    info["scales"] = scales
    return info


def _span(sc: ShardedScale) -> np.ndarray:
    return np.asarray(sc._shard_span, dtype=np.int64)


def _shard_origin_chunk(sc: ShardedScale, number: int) -> np.ndarray:
    """First chunk (x, y, z) of shard ``number``."""
    from diced.export._convert_kernels import morton_decode

    pm = sc.preshift_bits + sc.minishard_bits
    code = int(number) << pm if pm < 64 else 0
    if code >= 1 << 64:
        raise InvalidArgumentError(f"shard {number} does not exist at scale {sc.index}")
    return morton_decode(np.array([code], np.uint64), np.asarray(sc.bits, np.int64))[0]


def _check_scales(values: Iterable[int] | None, what: str, nscales: int) -> list[int]:
    if values is None:
        return []
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 0 <= v < nscales:
            raise InvalidArgumentError(f"{what}: scale {v!r} is not in the spec "
                                       f"(scales 0..{nscales - 1})")
        out.append(int(v))
    return sorted(set(out))
