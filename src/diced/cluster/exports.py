"""The three exports on a cluster: zarr v3, neuroglancer precomputed and DVID's Arrow
export-shards, one task per group of chunk-aligned boxes (or per shard).

Workers open the store by URL, read their boxes of a pinned version and write their own
files at the destination; files of different tasks never overlap (boxes are whole chunks,
or whole shards). The driver writes the metadata (zarr attributes, the precomputed
``info``, the shards' ``info``) last, so a reader sees all or nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diced.cluster._ref import StoreRef
from diced.cluster._run import run_tasks
from diced.cluster.arrays import _VersionReader
from diced.errors import InvalidArgumentError

log = logging.getLogger(__name__)

__all__ = ["export_precomputed", "export_shards", "export_zarr"]

#: raw bytes of boxes one export task handles
TASK_BYTES = 64 << 20


def _reader_of(array: Any, level: int, supervoxels: bool, store: StoreRef) -> _VersionReader:
    view = array.scale(level) if level else array
    return _VersionReader(store, array.repo.uuid, array.version.uuid, array.name, level,
                          supervoxels, tuple(view.shape), view.dtype)


def _group(boxes: Sequence[tuple[slice, ...]], itemsize: int) -> list[list[tuple[slice, ...]]]:
    out: list[list[tuple[slice, ...]]] = []
    cur: list[tuple[slice, ...]] = []
    size = 0
    for b in boxes:
        n = int(np.prod([s.stop - s.start for s in b])) * itemsize
        if cur and size + n > TASK_BYTES:
            out.append(cur)
            cur, size = [], 0
        cur.append(b)
        size += n
    if cur:
        out.append(cur)
    return out


def _pinned(array: Any, version: Any) -> Any:
    return array.at(version if version is not None else array.version.uuid)


# --- zarr ---------------------------------------------------------------------------------

def _zarr_task(args: tuple[_VersionReader, str, dict[str, Any] | None,
                           list[tuple[slice, ...]]]) -> int:
    import zarr

    reader, path, options, boxes = args
    z = zarr.open_array(path, mode="r+", storage_options=options, zarr_format=3)
    for box in boxes:
        z[box] = reader[box]
    return len(boxes)


def export_zarr(array: Any, dest: str | os.PathLike[str], *, client: Any = None,
                version: Any = None, scales: Sequence[int] | None = None,
                supervoxels: bool = False, voxel_size: Sequence[float] | None = None,
                unit: str = "nanometer", compressors: Any = "auto", overwrite: bool = False,
                storage_options: Mapping[str, Any] | None = None,
                store_options: dict[str, Any] | None = None) -> Any:
    """:func:`diced.export.export_zarr` on the cluster: the same zarr v3 / OME-Zarr group,
    each worker writing whole chunks of its boxes straight to ``dest``.

    Parameters
    ----------
    array, dest, version, scales, supervoxels, voxel_size, unit, compressors, overwrite
        As for :func:`diced.export.export_zarr`.
    client : distributed.Client or str, optional
        The cluster (default: the active client, else threads of this process).
    storage_options : mapping, optional
        fsspec options for ``dest`` (used by the workers too).
    store_options : dict, optional
        fsspec options with which workers open the diced store (default: the driver's).

    Returns
    -------
    zarr.Group
    """
    import zarr

    from diced.export.precomputed import check_scales, iter_boxes
    from diced.export.voxels import check_unit, check_voxel_size
    from diced.export.zarr_export import BOX_BYTES, ome_multiscales

    array = _pinned(array, version)
    levels = check_scales(array, scales)
    vs = check_voxel_size(voxel_size, array.ndim, f"array {array.name!r}")
    unit = check_unit(unit)
    opts = dict(storage_options) if storage_options else None
    path = os.fspath(dest)
    try:
        group = zarr.open_group(path, mode="w" if overwrite else "w-", storage_options=opts,
                                zarr_format=3)
    except (FileExistsError, zarr.errors.ContainsGroupError,
            zarr.errors.ContainsArrayError) as exc:
        raise InvalidArgumentError(
            f"export destination {path} is not empty; pass overwrite=True to replace it"
        ) from exc
    store = StoreRef.of(array.repo.store, store_options)
    try:
        tasks = []
        for s in levels:
            view = array.scale(s)
            group.create_array(str(s), shape=view.shape, dtype=view.dtype, chunks=view.chunks,
                               fill_value=view.fill_value, compressors=compressors,
                               dimension_names=["z", "y", "x"] if view.ndim == 3 else None)
            keep = {tuple(c) for c in view.stored_chunks()}
            boxes = list(iter_boxes(view.shape, view.chunks, BOX_BYTES, view.dtype.itemsize,
                                    keep))
            reader = _reader_of(array, s, supervoxels, store)
            sub = path.rstrip("/") + f"/{s}"
            tasks += [(reader, sub, opts, g) for g in _group(boxes, view.dtype.itemsize)]
        run_tasks(_zarr_task, tasks, client, local=store.local)
        attrs: dict[str, Any] = {"diced": {
            "repo": array.repo.alias, "array": array.name, "version": array.version.uuid,
            "type": array.typename, "origin": list(array.origin),
            "supervoxels": supervoxels if array.typename == "labels" else None}}
        ms = ome_multiscales(array.ndim, levels, vs, array.origin, unit=unit, name=array.name)
        if ms is not None:
            attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
        group.attrs.update(attrs)
    except BaseException:
        try:
            import asyncio

            asyncio.run(group.store.delete_dir(""))
        except Exception:  # noqa: BLE001 - best effort cleanup
            log.warning("could not remove the partial zarr export at %s", path)
        raise
    return group


# --- neuroglancer precomputed ------------------------------------------------------------

def _precomputed_task(args: tuple[_VersionReader, dict[str, Any], str, str,
                                  dict[str, Any] | None, list[tuple[slice, ...]]]) -> int:
    from diced.export.precomputed import _tensorstore

    reader, spec, key, dest, options, boxes = args
    ts = _tensorstore()
    tmp = tempfile.mkdtemp(prefix="diced-precomputed-task-")
    try:
        spec = {**spec, "kvstore": {"driver": "file", "path": tmp + "/"}}
        out = ts.open(spec, create=True, open=True).result().T[0].translate_to[0]
        for box in boxes:
            out[box].write(np.ascontiguousarray(reader[box])).result()
        src = os.path.join(tmp, key)
        files = [os.path.join(dp, f) for dp, _, fs in os.walk(src) for f in fs]
        rel = [os.path.relpath(f, tmp).replace(os.sep, "/") for f in files]
        if "://" not in dest or dest.startswith("file://"):
            root = dest.removeprefix("file://")
            for f, r in zip(files, rel, strict=True):
                target = os.path.join(root, *r.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.move(f, target)
        else:
            import fsspec

            fs, root = fsspec.core.url_to_fs(dest, **dict(options or {}))
            root = root.rstrip("/")
            for i in range(0, len(files), 256):
                fs.put(files[i:i + 256], [f"{root}/{r}" for r in rel[i:i + 256]])
        return len(files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_precomputed(array: Any, dest: str | os.PathLike[str], *, client: Any = None,
                       version: Any = None, scales: Sequence[int] | None = None,
                       encoding: str | None = None, sharded: bool | Mapping[str, Any] = False,
                       voxel_size: Sequence[float] | None = None, unit: str = "nanometer",
                       supervoxels: bool = False, overwrite: bool = False,
                       jpeg_quality: int = 75,
                       storage_options: Mapping[str, Any] | None = None,
                       store_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`diced.export.export_precomputed` on the cluster: each task writes the chunk
    (or shard) files of its boxes with TensorStore in a scratch directory of its worker
    and moves or uploads them to ``dest``; the driver writes ``info`` last.

    Parameters
    ----------
    array, dest, version, scales, encoding, sharded, voxel_size, unit, supervoxels
        As for :func:`diced.export.export_precomputed`.
    overwrite, jpeg_quality, storage_options
        As there.
    client : distributed.Client or str, optional
        The cluster (default: the active client, else threads of this process).
    store_options : dict, optional
        fsspec options with which workers open the diced store (default: the driver's).

    Returns
    -------
    dict
        The ``info`` written.
    """
    from diced.export.precomputed import (
        BOX_BYTES,
        _plan,
        _tensorstore,
        default_sharding,
        iter_boxes,
    )

    ts = _tensorstore()
    array = _pinned(array, version)
    is_labels = array.typename == "labels"
    levels, enc, res0, keys, target, kind = _plan(
        array, dest, is_labels, scales=scales, encoding=encoding, voxel_size=voxel_size,
        unit=unit, jpeg_quality=jpeg_quality, sharded=sharded, overwrite=overwrite,
        storage_options=storage_options)
    store = StoreRef.of(array.repo.store, store_options)
    dest_text = os.fspath(dest)
    if "://" not in dest_text:
        dest_text = os.path.abspath(dest_text)
    opts = dict(storage_options) if storage_options else None
    try:
        tasks = []
        for s, key in zip(levels, keys, strict=True):
            view = array.scale(s)
            shape = view.shape
            grid_xyz = [-(-n // c) for n, c in zip(reversed(shape), reversed(array.chunks),
                                                   strict=True)]
            meta: dict[str, Any] = {
                "size": list(reversed(shape)), "resolution": [r * (1 << s) for r in res0],
                "encoding": enc, "chunk_size": list(reversed(array.chunks)),
                "voxel_offset": [o // (1 << s) for o in reversed(array.origin)], "key": key}
            if enc == "compressed_segmentation":
                meta["compressed_segmentation_block_size"] = [8, 8, 8]
            if enc == "jpeg":
                meta["jpeg_quality"] = int(jpeg_quality)
            if sharded:
                meta["sharding"] = dict(sharded) if isinstance(sharded, Mapping) else \
                    default_sharding(grid_xyz, int(np.prod(array.chunks)) * array.dtype.itemsize,
                                     data_encoding="raw" if enc in ("jpeg", "png") else "gzip")
            spec = {"driver": "neuroglancer_precomputed", "scale_metadata": meta,
                    "multiscale_metadata": {"data_type": array.dtype.name, "num_channels": 1,
                                            "type": kind}}
            # the driver's staging copy makes the info file (and tells the write unit)
            opened = ts.open({**spec, "kvstore": target.kvstore()}, create=True,
                             open=True).result()
            unit_zyx = tuple(reversed(opened.chunk_layout.write_chunk.shape[:3]))
            keep = None
            fill = view.fill_value
            if not (isinstance(fill, (float, np.floating)) and np.isnan(fill)) and fill == 0:
                keep = {tuple(c * k // u for c, k, u in zip(coords, array.chunks, unit_zyx,
                                                            strict=True))
                        for coords in view.stored_chunks()}
            boxes = list(iter_boxes(shape, unit_zyx, BOX_BYTES, array.dtype.itemsize, keep))
            reader = _reader_of(array, s, supervoxels, store)
            tasks += [(reader, spec, key, dest_text, opts, g)
                      for g in _group(boxes, array.dtype.itemsize)]
        run_tasks(_precomputed_task, tasks, client, local=store.local)
        if target.fs is None:  # the staging copy is the destination: info is there already
            import json

            with open(os.path.join(target.local, "info"), "rb") as f:
                info = json.loads(f.read())
        else:
            info = target.finish()
    except BaseException:
        target.abort(keys)
        raise
    finally:
        target.cleanup()
    return info


# --- Arrow export-shards ---------------------------------------------------------------------

class _ShardSource:
    """A picklable :class:`~diced.export.label_source.LabelBlockSource`: workers re-open the
    label array (at the pinned version) by store URL."""

    def __init__(self, labels: Any, store: StoreRef, supervoxels: bool) -> None:
        self._args = (store, labels.repo.uuid, labels.version.uuid, labels.name, supervoxels)
        self._src: Any = None

    def _source(self) -> Any:
        if self._src is None:
            from diced.export.label_source import LabelBlockSource

            store, repo_uuid, version, name, sv = self._args
            reader = _VersionReader(store, repo_uuid, version, name, 0, sv, (), np.uint64)
            self._src = LabelBlockSource(reader._handle(), supervoxels=sv)
        return self._src

    def __getstate__(self) -> dict[str, Any]:
        return {"_args": self._args, "_src": None}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_args", "_src"):
            raise AttributeError(name)
        return getattr(self._source(), name)


def export_shards(labels: Any, dest: str | os.PathLike[str], spec: Any = None, *,
                  client: Any = None, version: Any = None, supervoxels: bool = False,
                  store_options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """:func:`diced.export.export_shards` (Arrow export-shards of a label array) with one
    task per shard on the cluster (its ``dask_client`` option, with a source that workers
    re-open by store URL).

    Parameters
    ----------
    labels, dest, spec, version, supervoxels
        As for :func:`diced.export.label_source.export_shards`.
    client : distributed.Client or str, optional
        The cluster (default: the active client, else threads of this process).
    store_options : dict, optional
        fsspec options with which workers open the diced store (default: the driver's).
    **kwargs
        The sharding arguments and ``scale``, ``batch_size``, ``overwrite``, ``progress``,
        ``zstd_level``, ``storage_options``, as there.

    Returns
    -------
    ExportReport
    """
    import json
    import posixpath

    from diced.cluster._run import client_for
    from diced.export.arrow_shards import export_shards as write_shards
    from diced.export.label_source import sharded_spec

    if getattr(labels, "typename", None) != "labels":
        raise InvalidArgumentError("export_shards needs a label array")
    labels = _pinned(labels, version)
    sharding = {k: kwargs.pop(k) for k in ("shard_bits", "minishard_bits", "preshift_bits",
                                           "shard_bytes", "shard_voxels", "voxel_size", "unit")
                if k in kwargs}
    if spec is not None and any(v is not None for k, v in sharding.items() if k != "unit"):
        raise InvalidArgumentError(
            "give a spec or the sharding arguments (shard_bits, shard_bytes, ...), not both")
    made = spec is None
    if made:
        spec = sharded_spec(labels, **sharding)
    store = StoreRef.of(labels.repo.store, store_options)
    source = _ShardSource(labels, store, supervoxels)
    with client_for(client, use_default=not store.local) as c:
        report = write_shards(source, spec, dest, dask_client=c if c is not None else "threads",
                              **kwargs)
    if made:
        import fsspec

        fs, base = fsspec.core.url_to_fs(os.fspath(dest),
                                         **dict(kwargs.get("storage_options") or {}))
        fs.pipe_file(posixpath.join(base, "info") if base else "info",
                     json.dumps(spec, indent=1).encode())
    return report
