"""Export any version of a diced array to zarr v3 (OME-Zarr 0.5 for pyramids), and import zarr.

Layout written by :func:`export_zarr`: a zarr v3 *group* at ``dest`` holding one array per
pyramid level, named ``"0"``, ``"1"``, ... (level ``n`` halves every axis ``n`` times). For
2- to 5-D arrays the group attributes carry OME-Zarr 0.5 metadata
(``{"ome": {"version": "0.5", "multiscales": [...]}}``) with one dataset per level and its
``scale`` (and ``translation``) coordinate transformations, so OME-Zarr readers (napari,
neuroglancer's ``zarr3://``, ome-zarr-py) open it as a multiscale image. The group's
``"diced"`` attribute records where the data came from (repo, array, version).

:func:`import_zarr` reads a zarr array, or the full-resolution array of such a group, into
a new diced array through :func:`diced.export.ingest.ingest`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from diced.errors import FormatError, InvalidArgumentError
from diced.export.precomputed import box_reader, check_scales, iter_boxes
from diced.export.voxels import check_unit, check_voxel_size

if TYPE_CHECKING:
    from diced.datatypes.array.array import VersionedArray
    from diced.export.ingest import IngestReport
    from diced.repo.repo import Repo, Version

log = logging.getLogger(__name__)

__all__ = ["export_zarr", "import_zarr", "ome_multiscales"]

#: raw bytes of one box copied from diced to zarr
BOX_BYTES = 32 << 20

_OME_AXES = {
    2: [("y", "space"), ("x", "space")],
    3: [("z", "space"), ("y", "space"), ("x", "space")],
    4: [("c", "channel"), ("z", "space"), ("y", "space"), ("x", "space")],
    5: [("t", "time"), ("c", "channel"), ("z", "space"), ("y", "space"), ("x", "space")],
}


def ome_multiscales(ndim: int, levels: Sequence[int], voxel_size: Sequence[float],
                    origin: Sequence[int], *, unit: str | None = "nanometer",
                    name: str = "") -> dict[str, Any] | None:
    """OME-Zarr 0.5 ``multiscales`` entry for levels ``levels`` of an ``ndim``-D array.

    Level ``n`` of a diced pyramid halves the last three (spatial) axes ``n`` times by
    averaging 2x2x2 blocks, so its voxel size is ``voxel_size * 2**n`` and its first voxel
    centre sits at ``(origin + (2**n - 1) / 2) * voxel_size`` (a ``translation``).
    Returns ``None`` for arrays OME-Zarr cannot describe (1-D, or more than 5-D).
    """
    axes = _OME_AXES.get(ndim)
    if axes is None:
        return None
    vs = [float(v) for v in voxel_size]
    datasets = []
    for level in levels:
        f = [(1 << level) if (kind == "space" and ndim - i <= 3) else 1
             for i, (_, kind) in enumerate(axes)]
        scale = [v * k for v, k in zip(vs, f, strict=True)]
        shift = [(o + (k - 1) / 2) * v if k > 1 else o * v
                 for o, k, v in zip(origin, f, vs, strict=True)]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if any(shift):
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    ax = []
    for n, kind in axes:
        entry: dict[str, Any] = {"name": n, "type": kind}
        if kind == "space" and unit:
            entry["unit"] = unit
        ax.append(entry)
    return {"name": name, "axes": ax, "datasets": datasets}


def export_zarr(
    array: VersionedArray,
    dest: str | os.PathLike[str],
    *,
    version: str | Version | None = None,
    scales: Sequence[int] | None = None,
    supervoxels: bool = False,
    voxel_size: Sequence[float] | None = None,
    unit: str = "nanometer",
    compressors: Any = "auto",
    progress: bool = True,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    label_colors: Mapping[int, Sequence[int]] | None = None,
) -> Any:
    """Write a version of an array (and its pyramid) as a zarr v3 group.

    Label arrays are written as OME-Zarr *label images*: besides ``multiscales``, the group's
    ``ome`` attribute holds ``image-label`` (``colors``: label 0 transparent plus
    ``label_colors``). Exported to ``<image.zarr>/labels/<name>`` where ``<image.zarr>`` is an
    OME-Zarr image (for example one written by this function), the labels are also listed in
    the ``labels`` group's ``ome.labels`` and ``image-label.source.image`` points at the
    image (``"../../"``), so OME-Zarr viewers (napari, ome-zarr-py) overlay them on it.

    Parameters
    ----------
    array : VersionedArray or LabelArray
        The array to export.
    dest : str or path
        A local directory or an fsspec URL (``memory://``, ``file://``, ``gs://``...).
    version : str or Version, optional
        Version to export (UUID, prefix, ``branch~N``); default: the handle's version.
    scales : sequence of int, optional
        Pyramid levels (default: all, ``0..array.max_scale``); each becomes array ``"<n>"``.
    supervoxels : bool
        Label arrays: write supervoxel ids instead of body ids.
    voxel_size : sequence of float, optional
        Voxel size of level 0 **in array axis order** (``z, y, x`` for 3-D), in ``unit``,
        used for the OME-Zarr scale transforms; default 8 per spatial axis (DVID's default)
        and 1 on channel/time axes. The same order as :func:`export_precomputed`'s.
    unit : str, optional
        Unit of ``voxel_size`` and OME-Zarr unit of the spatial axes: ``"nanometer"``
        (default, or ``"nm"``), ``"micrometer"`` (``"um"``), ``"angstrom"``, ...
    compressors
        Passed to ``zarr.create_array`` (default: zarr's default, zstd).
    progress : bool
        Show a tqdm progress bar.
    overwrite : bool
        Replace whatever is at ``dest`` (everything under it is deleted). Otherwise a
        non-empty ``dest`` raises :class:`~diced.errors.InvalidArgumentError`.
    storage_options : mapping, optional
        fsspec options for URLs.
    label_colors : mapping of int to RGBA, optional
        Label arrays: display colours (``{label: (r, g, b, a)}``, 0..255) written to
        ``image-label.colors`` after the transparent background.

    Returns
    -------
    zarr.Group
        The group written (open for reading and writing).

    Notes
    -----
    Chunks keep the diced chunk shape; chunks that are not stored in diced are not written
    (zarr reads them as the same fill value). Memory: one box of at most 32 MiB of raw
    voxels (or one chunk, if larger) at a time. If the export fails, what it wrote is
    removed.
    """
    import zarr

    from diced.datatypes.labels.labels import LabelArray

    array = array.at(version if version is not None else array.version.uuid)
    is_labels = isinstance(array, LabelArray)
    levels = check_scales(array, scales)
    vs = check_voxel_size(voxel_size, array.ndim, f"array {array.name!r}")
    unit = check_unit(unit)
    image_label = _image_label(label_colors) if is_labels else None
    if label_colors is not None and not is_labels:
        raise InvalidArgumentError("label_colors= is for label arrays")
    labels_group = _labels_group_of(os.fspath(dest), storage_options) if is_labels else None
    if image_label is not None and labels_group is not None:
        image_label["source"] = {"image": "../../"}
    try:
        group = zarr.open_group(os.fspath(dest), mode="w" if overwrite else "w-",
                                storage_options=dict(storage_options) if storage_options
                                else None, zarr_format=3)
    except (FileExistsError, zarr.errors.ContainsGroupError,
            zarr.errors.ContainsArrayError) as exc:
        raise InvalidArgumentError(
            f"export destination {os.fspath(dest)} is not empty; pass overwrite=True to "
            "replace it") from exc
    from tqdm.auto import tqdm

    try:
        views = [array.scale(s) for s in levels]
        reader = box_reader(array, supervoxels)
        plans = []
        for s, view in zip(levels, views, strict=True):
            unit_box = view.chunks
            keep = {tuple(c) for c in view.stored_chunks()}
            boxes = list(iter_boxes(view.shape, unit_box, BOX_BYTES, view.dtype.itemsize, keep))
            plans.append((s, view, boxes))
        with tqdm(total=sum(len(b) for _, _, b in plans), disable=not progress, unit="box",
                  desc=f"zarr {array.name}") as bar:
            for s, view, boxes in plans:
                z = group.create_array(
                    str(s), shape=view.shape, dtype=view.dtype, chunks=view.chunks,
                    fill_value=view.fill_value, compressors=compressors,
                    dimension_names=["z", "y", "x"] if view.ndim == 3 else None)
                for box in boxes:
                    z[box] = reader(view, box)
                    bar.update(1)
        attrs: dict[str, Any] = {"diced": {
            "repo": array.repo.alias, "array": array.name, "version": array.version.uuid,
            "type": array.typename, "origin": list(array.origin),
            "supervoxels": supervoxels if is_labels else None}}
        ms = ome_multiscales(array.ndim, levels, vs, array.origin, unit=unit, name=array.name)
        if ms is not None:
            attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
            if image_label is not None:
                attrs["ome"]["image-label"] = image_label
        group.attrs.update(attrs)
        if labels_group is not None:
            _register_label(labels_group, os.fspath(dest), storage_options)
    except BaseException:
        try:
            import asyncio

            asyncio.run(group.store.delete_dir(""))
        except Exception:  # noqa: BLE001 - best effort cleanup
            log.warning("could not remove the partial zarr export at %s", os.fspath(dest))
        raise
    log.info("exported %s levels %s to %s", array.name, levels, os.fspath(dest))
    return group


def _image_label(colors: Mapping[int, Sequence[int]] | None) -> dict[str, Any]:
    """OME-Zarr 0.5 ``image-label`` metadata: label 0 transparent, then ``colors``."""
    out = [{"label-value": 0, "rgba": [0, 0, 0, 0]}]
    for label, rgba in sorted((colors or {}).items()):
        try:
            value = [int(c) for c in rgba]
            key = int(label)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"label_colors must map integer labels to (r, g, b, a), got {label!r}: "
                f"{rgba!r}") from exc
        if len(value) != 4 or any(not 0 <= c <= 255 for c in value) or key < 0:
            raise InvalidArgumentError(
                f"label_colors[{label!r}] must be 4 integers in 0..255, got {rgba!r}")
        if key == 0:
            out[0]["rgba"] = value
        else:
            out.append({"label-value": key, "rgba": value})
    return {"colors": out}


def _labels_group_of(dest: str, storage_options: Mapping[str, Any] | None) -> str | None:
    """``<image>/labels`` if ``dest`` is ``<image>/labels/<name>`` and ``<image>`` is an
    OME-Zarr image (has ``multiscales``), else ``None``."""
    import zarr

    parts = dest.rstrip("/").rsplit("/", 2)
    if len(parts) != 3 or parts[1] != "labels" or not parts[0]:
        return None
    try:
        image = zarr.open_group(parts[0], mode="r", storage_options=dict(storage_options)
                                if storage_options else None)
    except Exception:  # noqa: BLE001 - not a zarr group: a plain path that happens to match
        return None
    attrs = dict(image.attrs)
    if not ((attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")):
        return None
    return f"{parts[0]}/labels"


def _register_label(labels_group: str, dest: str,
                    storage_options: Mapping[str, Any] | None) -> None:
    """Add ``dest``'s name to the OME-Zarr ``labels`` group's list."""
    import zarr

    name = dest.rstrip("/").rsplit("/", 1)[1]
    g = zarr.open_group(labels_group, mode="a", zarr_format=3,
                        storage_options=dict(storage_options) if storage_options else None)
    ome = dict(g.attrs.get("ome") or {})
    names = [n for n in ome.get("labels", []) if n != name] + [name]
    g.attrs.update({"ome": {**ome, "version": "0.5", "labels": names}})


def import_zarr(
    src: Any,
    repo: Repo,
    name: str,
    *,
    path: str | None = None,
    labels: bool = False,
    chunks: Sequence[int] | None = None,
    max_scale: int = 0,
    offset: Sequence[int] | None = None,
    create: bool = True,
    progress: bool = True,
    resume: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> IngestReport:
    """Import a zarr array (or the level-0 array of an OME-Zarr / diced group) into ``name``.

    Parameters
    ----------
    src : str, path, zarr.Array or zarr.Group
        Where the zarr data is (local path or fsspec URL), or an open zarr node.
    repo : Repo
        Repo whose (open) head receives the array.
    name : str
        Array to create (or fill, with ``create=False``).
    path : str, optional
        Path of the array inside a group (default: the OME-Zarr level-0 dataset, else
        ``"0"``, else the group's only array).
    labels : bool
        Create a label array (uint64).
    chunks : sequence of int, optional
        diced chunk shape; default: the zarr array's chunks when diced accepts them (label
        arrays: 3-D multiples of 8; pyramids: even sides), else diced's default.
    max_scale, offset, create, progress, resume
        As for :func:`~diced.export.ingest.ingest`.
    storage_options : mapping, optional
        fsspec options for URLs.

    Returns
    -------
    IngestReport
    """
    import zarr

    from diced.export.ingest import ingest
    from diced.export.sources import _ArraySource

    where = src if isinstance(src, (str, os.PathLike)) else type(src).__name__
    node = src
    if isinstance(src, (str, os.PathLike)):
        try:
            node = zarr.open(os.fspath(src), mode="r",
                             storage_options=dict(storage_options) if storage_options else None)
        except Exception as exc:
            raise FormatError(f"{os.fspath(src)}: not a readable zarr array or group ({exc})"
                              ) from exc
    if isinstance(node, zarr.Group):
        from diced.export.sources import _group_level0

        inner = path if path is not None else _group_level0(node, str(where))
        try:
            node = node[inner]
        except KeyError as exc:
            raise FormatError(f"{where} has no array {inner!r}") from exc
        where = f"{os.fspath(where) if isinstance(where, os.PathLike) else where}/{inner}"
    elif path is not None:
        raise InvalidArgumentError(f"{where} is a zarr array; path= is for groups")
    if not isinstance(node, zarr.Array):
        raise FormatError(f"{where} is not a zarr array")
    if chunks is None:
        zc = tuple(int(c) for c in node.chunks)
        ok = all(0 < c <= 1024 for c in zc)
        if labels:
            ok = ok and len(zc) == 3 and all(c % 8 == 0 for c in zc)
        if max_scale:
            ok = ok and all(c % 2 == 0 for c in zc)
        chunks = zc if ok else None
    fill = node.fill_value
    fill_value = 0 if fill is None else np.asarray(fill).item()
    source = _ArraySource(node, str(where), {"kind": "zarr", "path": str(where)})
    return ingest(source, repo, name, offset=offset, create=create, labels=labels,
                  chunks=chunks, max_scale=max_scale, fill_value=0 if labels else fill_value,
                  progress=progress, resume=resume)
