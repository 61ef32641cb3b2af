"""Large jobs on a dask cluster (``dask.distributed``), the store on an object store.

Workers open the store by URL (plus fsspec storage options) and write chunks directly; the
driver makes the one metadata change at the end. Every job that writes a new version is a
:class:`Job`: a failure (a worker killed, an exception) leaves no version visible, and
running the same call again resumes it.

* :func:`ingest` a (dask) array or volume as a new version; :func:`map_blocks`: apply a
  function to every chunk of version A and write version B;
* :func:`build_pyramid`, :func:`rebuild_label_index`: derived data as a new version;
* :func:`export_zarr`, :func:`export_precomputed`, :func:`export_shards`: the exports,
  one task per chunk-aligned region;
* :func:`to_dask`, :func:`to_xarray`, :func:`from_dask`: dask / xarray views of any
  version and parallel writes from dask (also ``VersionedArray.to_dask()`` etc.).

``client`` arguments take a ``distributed.Client``, a scheduler address
(``"tcp://host:8786"``), ``"threads"`` (threads of this process), or ``None``: the active
default client, else threads of this process (always threads for ``memory://`` stores,
which exist in one process only). Needs the ``cluster`` extra (``pip install 'diced[cluster]'``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Job",
    "JobInfo",
    "StoreRef",
    "build_pyramid",
    "export_precomputed",
    "export_shards",
    "export_zarr",
    "from_dask",
    "ingest",
    "list_jobs",
    "map_blocks",
    "rebuild_label_index",
    "to_dask",
    "to_xarray",
]

_WHERE = {
    "Job": "job", "JobInfo": "job", "list_jobs": "job", "StoreRef": "_ref",
    "build_pyramid": "pyramid", "rebuild_label_index": "labels",
    "ingest": "blocks", "map_blocks": "blocks",
    "to_dask": "arrays", "to_xarray": "arrays", "from_dask": "arrays",
    "export_zarr": "exports", "export_precomputed": "exports", "export_shards": "exports",
}


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'diced.cluster' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"diced.cluster.{mod}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
