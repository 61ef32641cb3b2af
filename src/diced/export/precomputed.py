"""Export any version of an image or label array to a neuroglancer precomputed volume.

TensorStore's ``neuroglancer_precomputed`` driver writes the format (the ``info`` file,
unsharded chunk files or sharded ``.shard`` files, raw / jpeg / png /
compressed_segmentation encodings); this module only decides the layout and streams
chunk-aligned boxes of the diced array into it.

Layout decisions
----------------
* Axes: diced arrays are ``(z, y, x)`` C-order; precomputed volumes are ``(x, y, z, channel)``.
  Data is written through ``store.T[0]`` (a ``(z, y, x)`` view of channel 0), so no voxel is
  ever transposed by hand.
* Chunks: the precomputed chunk size is the diced chunk shape (reversed to x, y, z), and
  the ``voxel_offset`` is the array's origin, so both chunk grids coincide.
* Voxel size: given like everywhere in diced in array axis order ``(z, y, x)`` with a unit
  (:mod:`diced.export.voxels`); written as precomputed's ``resolution`` (x, y, z, nm).
* Scales: pyramid level ``n`` of the array becomes a precomputed scale with resolution
  ``resolution * 2**n`` and key ``"<rx>_<ry>_<rz>"`` (TensorStore's default).
* Sharding (``sharded=True``): identity hash over compressed Morton chunk ids, with the
  number of chunks per shard chosen so that one shard holds at most :data:`SHARD_BYTES` of
  raw voxels. Each shard is then written in one piece, so no shard is rewritten.

Memory is bounded: at most two boxes (the one being read from diced and the one TensorStore
is encoding) of at most ``max(box_bytes, one shard)`` raw bytes each are alive at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from diced.errors import (
    BackendUnavailableError,
    DtypeError,
    InvalidArgumentError,
)
from diced.export.voxels import check_voxel_size, refuse_resolution, to_nanometers

if TYPE_CHECKING:
    from diced.datatypes.array.array import VersionedArray
    from diced.repo.repo import Version

log = logging.getLogger(__name__)

__all__ = ["ENCODINGS", "SHARD_BYTES", "box_reader", "default_sharding", "export_precomputed",
           "iter_boxes"]

#: encodings accepted by :func:`export_precomputed` and the dtypes each can hold
ENCODINGS: dict[str, tuple[str, ...]] = {
    "raw": ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32"),
    "jpeg": ("uint8",),
    "png": ("uint8", "uint16"),
    "compressed_segmentation": ("uint32", "uint64"),
}

#: upper bound on the raw voxel bytes of one shard chosen by :func:`default_sharding`
SHARD_BYTES = 128 << 20

#: raw voxel bytes of one box streamed from diced to TensorStore (unsharded volumes)
BOX_BYTES = 32 << 20


def _tensorstore() -> Any:
    try:
        import tensorstore
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(
            "neuroglancer precomputed export needs TensorStore: pip install tensorstore") from exc
    return tensorstore


# --- pure planning -----------------------------------------------------------------------------

def iter_boxes(shape: Sequence[int], unit: Sequence[int], max_bytes: int, itemsize: int,
               keep: set[tuple[int, ...]] | None = None) -> Iterator[tuple[slice, ...]]:
    """Tile ``shape`` with boxes made of whole ``unit`` cells, each at most ``max_bytes``.

    Boxes grow along the last axis first, then the one before, so that they are as
    contiguous as possible in C order. A single unit larger than ``max_bytes`` is still
    one box. Boxes are clipped to ``shape``.

    Parameters
    ----------
    shape, unit:
        Array shape and cell shape (a chunk or a shard), same length.
    max_bytes, itemsize:
        Budget of one box and bytes per item.
    keep:
        If given, only boxes holding at least one of these cell coordinates are yielded
        (used to skip regions where nothing is stored).

    Yields
    ------
    tuple of slice
        One box, in C order of the box grid.
    """
    shape = tuple(int(s) for s in shape)
    unit = tuple(int(u) for u in unit)
    if len(shape) != len(unit) or any(u <= 0 for u in unit):
        raise InvalidArgumentError(f"bad box unit {unit} for shape {shape}")
    if any(s == 0 for s in shape):
        return
    grid = [-(-s // u) for s, u in zip(shape, unit, strict=True)]
    budget = max(1, int(max_bytes) // max(1, int(np.prod(unit, dtype=np.int64)) * itemsize))
    per = [1] * len(grid)
    for ax in range(len(grid) - 1, -1, -1):
        per[ax] = max(1, min(grid[ax], budget))
        if per[ax] < grid[ax]:
            break
        budget //= grid[ax]
    box_grid = [-(-g // p) for g, p in zip(grid, per, strict=True)]
    wanted: set[tuple[int, ...]] | None = None
    if keep is not None:
        wanted = {tuple(c // p for c, p in zip(cell, per, strict=True)) for cell in keep}
    for idx in np.ndindex(*box_grid):
        if wanted is not None and idx not in wanted:
            continue
        yield tuple(slice(i * p * u, min(s, (i + 1) * p * u))
                    for i, p, u, s in zip(idx, per, unit, shape, strict=True))


def _bits(n: int) -> int:
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def default_sharding(grid_xyz: Sequence[int], chunk_bytes: int, *, data_encoding: str = "gzip",
                     shard_bytes: int = SHARD_BYTES) -> dict[str, Any]:
    """A ``neuroglancer_uint64_sharded_v1`` spec for a chunk grid (x, y, z).

    Chunk ids are compressed Morton codes hashed by identity, so the low
    ``preshift_bits + minishard_bits`` bits select the chunks of one shard: a box of
    chunks. That box holds at most ``shard_bytes`` raw bytes (at least one chunk);
    each minishard holds up to 8 chunks (``preshift_bits <= 3``).
    """
    total = sum(_bits(int(g)) for g in grid_xyz)
    per_shard = max(0, math.floor(math.log2(max(1, shard_bytes // max(1, chunk_bytes)))))
    span = min(total, per_shard)
    preshift = min(3, span)
    return {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity",
            "preshift_bits": preshift, "minishard_bits": span - preshift,
            "shard_bits": total - span, "minishard_index_encoding": "gzip",
            "data_encoding": data_encoding}


def box_reader(array: VersionedArray, supervoxels: bool = False
               ) -> Callable[[VersionedArray, tuple[slice, ...]], np.ndarray]:
    """A function ``(view, box) -> voxels`` reading boxes of ``array`` or its scale views.

    For label arrays the supervoxel → body mapping of the array's version is read once here
    and applied to every box (``LabelArray.read`` would re-read it per call), unless
    ``supervoxels``.
    """
    from diced.datatypes.labels.labels import LabelArray

    if not isinstance(array, LabelArray):
        return lambda view, box: view[box]
    keys, values = (np.zeros(0, np.uint64),) * 2
    if not supervoxels:
        keys, values = array._mapping_table(array._ref.ctx())

    def read(view: VersionedArray, box: tuple[slice, ...]) -> np.ndarray:
        out = view.read(box, supervoxels=True)
        if len(keys):
            from diced.array.labelstats import relabel_inplace

            relabel_inplace(out, keys, values)
        return out

    return read


# --- destinations ------------------------------------------------------------------------------

class _Destination:
    """Where the volume goes: a local directory written in place, or an fsspec URL written
    through a local staging directory, one scale at a time."""

    def __init__(self, dest: str | os.PathLike[str], storage_options: Mapping[str, Any] | None
                 ) -> None:
        text = os.fspath(dest)
        self.url = text
        if "://" not in text or text.startswith("file://"):
            self.local = os.path.abspath(text.removeprefix("file://"))
            self.fs = None
            self.root = self.local
        else:
            import fsspec

            self.fs, self.root = fsspec.core.url_to_fs(text, **dict(storage_options or {}))
            self.root = self.root.rstrip("/")
            self.local = tempfile.mkdtemp(prefix="diced-precomputed-")
        self.created_root = False

    def _listing(self) -> list[str]:
        if self.fs is None:
            if os.path.isfile(self.root):
                raise InvalidArgumentError(f"export destination {self.url} is a file")
            return sorted(os.listdir(self.root)) if os.path.isdir(self.root) else []
        if not self.fs.exists(self.root):
            return []
        if self.fs.isfile(self.root):
            raise InvalidArgumentError(f"export destination {self.url} is a file")
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False))

    def _read_info(self) -> dict[str, Any] | None:
        try:
            if self.fs is None:
                with open(os.path.join(self.root, "info"), "rb") as f:
                    return json.loads(f.read())
            return json.loads(self.fs.cat_file(f"{self.root}/info"))
        except (OSError, ValueError):
            return None

    def prepare(self, overwrite: bool, new_keys: Sequence[str]) -> None:
        """Refuse a non-empty destination unless ``overwrite``; then remove the old volume."""
        entries = self._listing()
        if self.fs is None and not os.path.exists(self.root):
            self.created_root = True
        if not entries:
            return
        if not overwrite:
            raise InvalidArgumentError(
                f"export destination {self.url} is not empty ({len(entries)} entries); "
                "pass overwrite=True to replace the volume there")
        info = self._read_info() or {}
        keys = {str(s.get("key")) for s in info.get("scales", []) if s.get("key")} | set(new_keys)
        doomed = [e for e in entries if e == "info" or e in keys]
        log.info("overwriting %s: removing %s", self.url, doomed)
        for e in doomed:
            if self.fs is None:
                path = os.path.join(self.root, e)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            else:
                self.fs.rm(f"{self.root}/{e}", recursive=True)

    def kvstore(self) -> dict[str, Any]:
        os.makedirs(self.local, exist_ok=True)
        return {"driver": "file", "path": self.local.rstrip("/") + "/"}

    def finish_scale(self, key: str) -> None:
        """Upload one finished scale from the staging directory (remote destinations)."""
        if self.fs is None:
            return
        src = os.path.join(self.local, key)
        if os.path.isdir(src):
            files = [os.path.join(dp, f) for dp, _, fs in os.walk(src) for f in fs]
            targets = [f"{self.root}/{os.path.relpath(f, self.local).replace(os.sep, '/')}"
                       for f in files]
            for i in range(0, len(files), 256):
                self.fs.put(files[i:i + 256], targets[i:i + 256])
            shutil.rmtree(src)

    def finish(self) -> dict[str, Any]:
        with open(os.path.join(self.local, "info"), "rb") as f:
            raw = f.read()
        if self.fs is not None:
            self.fs.pipe_file(f"{self.root}/info", raw)  # last: a reader sees all or nothing
        return json.loads(raw)

    def abort(self, keys: Sequence[str]) -> None:
        """Remove what this export wrote (the destination was empty before)."""
        if self.fs is not None:
            for k in [*keys, "info"]:
                try:
                    if self.fs.exists(f"{self.root}/{k}"):
                        self.fs.rm(f"{self.root}/{k}", recursive=True)
                except OSError:  # pragma: no cover - best effort
                    log.warning("could not remove %s/%s after a failed export", self.url, k)
            return
        if self.created_root:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        for k in [*keys, "info"]:
            path = os.path.join(self.root, k)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.remove(path)

    def cleanup(self) -> None:
        if self.fs is not None:
            shutil.rmtree(self.local, ignore_errors=True)


# --- export --------------------------------------------------------------------------------------

def _scale_key(resolution: Sequence[float]) -> str:
    return "_".join(f"{r:g}" for r in resolution)


def check_scales(array: VersionedArray, scales: Sequence[int] | None) -> list[int]:
    """The sorted pyramid levels to export (default: all of them), validated."""
    if scales is None:
        return list(range(array.max_scale + 1))
    try:
        levels = sorted({int(s) for s in scales})
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"scales must be integers, got {scales!r}") from exc
    if not levels or any(not 0 <= s <= array.max_scale for s in levels):
        raise InvalidArgumentError(
            f"{array.name!r} has scales 0..{array.max_scale}; cannot export {list(scales)}")
    return levels


def _check_args(array: VersionedArray, scales: Sequence[int] | None, encoding: str | None,
                is_labels: bool) -> tuple[list[int], str]:
    if array.ndim != 3:
        raise InvalidArgumentError(
            f"neuroglancer precomputed volumes are 3-D; {array.name!r} has {array.ndim} axes")
    levels = check_scales(array, scales)
    enc = encoding or ("compressed_segmentation" if is_labels else "raw")
    if enc not in ENCODINGS:
        raise InvalidArgumentError(
            f"unknown precomputed encoding {enc!r}; use one of {', '.join(ENCODINGS)}")
    if array.dtype.name not in ENCODINGS[enc]:
        hint = " (cast to a supported dtype first)" if enc == "raw" else ""
        raise DtypeError(f"encoding {enc!r} holds {', '.join(ENCODINGS[enc])}; "
                         f"{array.name!r} is {array.dtype}{hint}")
    return levels, enc


def _plan(array: VersionedArray, dest: str | os.PathLike[str], is_labels: bool, *,
          scales: Sequence[int] | None, encoding: str | None, voxel_size: Any, unit: str,
          jpeg_quality: int, sharded: Any, overwrite: bool,
          storage_options: Mapping[str, Any] | None
          ) -> tuple[list[int], str, list[float], list[str], _Destination, str]:
    """Check an export's arguments and prepare its destination (the serial and the cluster
    exporter share this): ``(levels, encoding, x/y/z nm at scale 0, scale keys,
    destination, "image" | "segmentation")``."""
    levels, enc = _check_args(array, scales, encoding, is_labels)
    res0 = list(reversed(to_nanometers(check_voxel_size(voxel_size, 3, "precomputed volume"),
                                       unit)))  # x, y, z in nm
    if not 0 <= int(jpeg_quality) <= 100:
        raise InvalidArgumentError(f"jpeg_quality must be in 0..100, got {jpeg_quality!r}")
    if sharded and not isinstance(sharded, (bool, Mapping)):
        raise InvalidArgumentError("sharded must be a bool or a sharding spec mapping")
    keys = [_scale_key([r * (1 << s) for r in res0]) for s in levels]
    target = _Destination(dest, storage_options)
    try:
        target.prepare(overwrite, keys)
    except BaseException:
        target.cleanup()
        raise
    kind = "segmentation" if (is_labels or enc == "compressed_segmentation") else "image"
    return levels, enc, res0, keys, target, kind


def export_precomputed(
    array: VersionedArray,
    dest: str | os.PathLike[str],
    *,
    version: str | Version | None = None,
    scales: Sequence[int] | None = None,
    encoding: str | None = None,
    sharded: bool | Mapping[str, Any] = False,
    voxel_size: Sequence[float] | None = None,
    unit: str = "nanometer",
    supervoxels: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    jpeg_quality: int = 75,
    storage_options: Mapping[str, Any] | None = None,
    resolution: Any = None,
) -> dict[str, Any]:
    """Write a version of a 3-D image or label array as a neuroglancer precomputed volume.

    Parameters
    ----------
    array : VersionedArray or LabelArray
        The array (3-D, ``(z, y, x)``). Its pyramid levels become the volume's scales.
    dest : str or path
        A local directory, ``file://`` URL, or any fsspec URL (``memory://``, ``gs://``,
        ``s3://``...). Remote volumes are staged locally one scale at a time and uploaded
        with fsspec; the ``info`` file is uploaded last.
    version : str or Version, optional
        Version (UUID, prefix, ``branch~N``) to export; default: the array handle's version.
    scales : sequence of int, optional
        Pyramid levels to export (default: all, ``0..array.max_scale``).
    encoding : {"raw", "jpeg", "png", "compressed_segmentation"}, optional
        Default ``"compressed_segmentation"`` for label arrays, ``"raw"`` otherwise. jpeg is
        lossy (quality ``jpeg_quality``) and holds uint8 only.
    sharded : bool or mapping
        ``True`` writes the sharded format with :func:`default_sharding` parameters per
        scale; a mapping is used as the ``sharding`` spec of every scale.
    voxel_size : 3 numbers, optional
        Voxel size of scale 0 in **array axis order z, y, x**, in ``unit`` (default 8, 8, 8
        nanometres, DVID's default). Written to ``info`` as neuroglancer's x, y, z
        ``resolution`` in nanometres. The same order as :func:`export_zarr`'s.
    unit : str
        Unit of ``voxel_size``: ``"nanometer"`` (default, or ``"nm"``), ``"micrometer"``
        (``"um"``), ``"angstrom"``, ...
    supervoxels : bool
        Label arrays: export supervoxel ids instead of body ids (mapping applied).
    progress : bool
        Show a tqdm progress bar.
    overwrite : bool
        Replace the volume at a non-empty ``dest`` (its ``info`` and scale directories);
        otherwise a non-empty ``dest`` raises :class:`~diced.errors.InvalidArgumentError`.
    jpeg_quality : int
        0..100, for ``encoding="jpeg"``.
    storage_options : mapping, optional
        fsspec options for remote ``dest``.
    resolution
        Refused: the old x, y, z argument, replaced by ``voxel_size`` (z, y, x).

    Returns
    -------
    dict
        The ``info`` document that was written.

    Raises
    ------
    InvalidArgumentError
        Bad scales, encoding, voxel size or unit, ``resolution=`` given, or a non-empty
        ``dest`` without ``overwrite``.
    DtypeError
        The dtype cannot be stored with the encoding.
    BackendUnavailableError
        TensorStore is not installed.

    Notes
    -----
    Memory: at most two boxes of at most ``max(32 MiB, one shard)`` raw voxels are held at
    a time. Where the array's fill value is 0, boxes holding no stored chunk are skipped
    (precomputed reads missing chunks as 0).
    If the export fails, the files it wrote are removed.
    """
    from diced.datatypes.labels.labels import LabelArray

    refuse_resolution(resolution)
    ts = _tensorstore()
    if version is not None:
        array = array.at(version)
    else:
        array = array.at(array.version.uuid)  # pin: a moving head must not change mid-export
    is_labels = isinstance(array, LabelArray)
    plan = _plan(array, dest, is_labels, scales=scales, encoding=encoding,
                 voxel_size=voxel_size, unit=unit, jpeg_quality=jpeg_quality,
                 sharded=sharded, overwrite=overwrite, storage_options=storage_options)
    levels, enc, res0, keys, target, kind = plan

    views = {s: array.scale(s) for s in levels}
    reader = box_reader(array, supervoxels)
    plans = []
    for s, key in zip(levels, keys, strict=True):
        view = views[s]
        shape = view.shape
        grid_xyz = [-(-n // c) for n, c in zip(reversed(shape), reversed(array.chunks), strict=True)]
        meta: dict[str, Any] = {
            "size": list(reversed(shape)), "resolution": [r * (1 << s) for r in res0],
            "encoding": enc, "chunk_size": list(reversed(array.chunks)),
            "voxel_offset": [o // (1 << s) for o in reversed(array.origin)], "key": key,
        }
        if enc == "compressed_segmentation":
            meta["compressed_segmentation_block_size"] = [8, 8, 8]
        if enc == "jpeg":
            meta["jpeg_quality"] = int(jpeg_quality)
        if sharded:
            meta["sharding"] = dict(sharded) if isinstance(sharded, Mapping) else default_sharding(
                grid_xyz, int(np.prod(array.chunks)) * array.dtype.itemsize,
                data_encoding="raw" if enc in ("jpeg", "png") else "gzip")
        plans.append((s, key, view, meta))

    try:
        total = 0
        opened = []
        for s, key, view, meta in plans:
            spec = {"driver": "neuroglancer_precomputed", "kvstore": target.kvstore(),
                    "scale_metadata": meta,
                    "multiscale_metadata": {"data_type": array.dtype.name, "num_channels": 1,
                                            "type": kind}}
            store = ts.open(spec, create=True, open=True).result()
            unit = tuple(reversed(store.chunk_layout.write_chunk.shape[:3]))
            keep = None
            fill = view.fill_value
            if not (isinstance(fill, (float, np.floating)) and np.isnan(fill)) and fill == 0:
                keep = {tuple(c * k // u for c, k, u in zip(coords, array.chunks, unit, strict=True))
                        for coords in view.stored_chunks()}
            boxes = list(iter_boxes(view.shape, unit, BOX_BYTES, array.dtype.itemsize, keep))
            total += len(boxes)
            opened.append((s, key, view, store, boxes))
        from tqdm.auto import tqdm

        with tqdm(total=total, disable=not progress, unit="box",
                  desc=f"precomputed {array.name}") as bar:
            for s, key, view, store, boxes in opened:
                _write_scale(view, store.T[0].translate_to[0], boxes, reader, bar)
                log.info("exported %s scale %d (%d boxes) to %s/%s", array.name, s,
                         len(boxes), target.url, key)
                target.finish_scale(key)
        info = target.finish()
    except BaseException:
        target.abort(keys)
        raise
    finally:
        target.cleanup()
    return info


def _write_scale(view: VersionedArray, out: Any, boxes: Sequence[tuple[slice, ...]],
                 reader: Callable[[VersionedArray, tuple[slice, ...]], np.ndarray],
                 bar: Any) -> None:
    """Stream boxes from ``view`` into the TensorStore ``out`` (a z, y, x view), keeping one
    write in flight while the next box is read."""
    pending = None
    for box in boxes:
        data = reader(view, box)
        fut = out[box].write(np.ascontiguousarray(data))
        del data
        if pending is not None:
            pending.result()
            bar.update(1)
        pending = fut
    if pending is not None:
        pending.result()
        bar.update(1)
