"""Getting data out of diced and into it: one public name per function.

>>> from diced.export import export_precomputed, export_zarr, export_shards, ingest

* :func:`export_precomputed`: neuroglancer precomputed volume (TensorStore).
* :func:`export_zarr` / :func:`import_zarr`: zarr v3 with OME-Zarr multiscales (and
  ``image-label`` metadata for label arrays).
* :func:`zarr_store`: a read-only zarr v3 store over any version (zarr, dask, xarray).
* :func:`export_shards` / :func:`import_label_shards` / :func:`sharded_spec`: DVID
  export-shards (Arrow IPC + CSV) for label arrays.
* :func:`ingest`: stream HDF5, TIFF, ``.npy``, zarr or arrays into an array.

Voxel sizes are given in array axis order (z, y, x) with a unit everywhere
(:mod:`diced.export.voxels`). The modules load on first use, so importing this package
stays cheap; :func:`ingest` is bound at import because ``diced.export.ingest`` is also the
name of its module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diced.export.ingest import ingest

__all__ = ["export_precomputed", "export_shards", "export_zarr", "import_label_shards",
           "import_zarr", "ingest", "sharded_spec", "zarr_store"]

if TYPE_CHECKING:
    from diced.export.label_source import export_shards, import_label_shards, sharded_spec
    from diced.export.precomputed import export_precomputed
    from diced.export.zarr_export import export_zarr, import_zarr
    from diced.export.zarr_view import zarr_store

_LAZY = {
    "export_precomputed": "diced.export.precomputed",
    "export_zarr": "diced.export.zarr_export",
    "import_zarr": "diced.export.zarr_export",
    "zarr_store": "diced.export.zarr_view",
    "export_shards": "diced.export.label_source",
    "import_label_shards": "diced.export.label_source",
    "sharded_spec": "diced.export.label_source",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'diced.export' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
