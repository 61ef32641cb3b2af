"""dask and xarray views of a version of an array, and parallel writes from dask.

* :func:`to_dask`: a lazy dask array with one block per storage chunk, reading a pinned
  version (workers open the store by URL once per process);
* :func:`to_xarray`: the same as an ``xarray.DataArray`` with dims ``z, y, x`` and
  coordinates from the origin (and the voxel size, where given);
* :func:`from_dask`: write a dask array into an open version, chunk-aligned blocks in
  parallel, then the pyramid and (label arrays) the label index on the cluster too.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from diced.cluster._ref import StoreRef
from diced.errors import InvalidArgumentError, LockedNodeError, ShapeMismatchError

__all__ = ["from_dask", "to_dask", "to_xarray"]

_HANDLES: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


class _VersionReader:
    """An array-like over one version of an array (what ``dask.array.from_array`` reads);
    pickles as the store reference and names, re-opened once per worker process."""

    def __init__(self, store: StoreRef, repo_uuid: str, version: str, name: str, level: int,
                 supervoxels: bool, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.store, self.repo_uuid, self.version = store, repo_uuid, version
        self.name, self.level, self.supervoxels = name, level, supervoxels
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)

    def _handle(self) -> Any:
        key = (self.store.location, self.repo_uuid, self.version, self.name, self.level)
        with _LOCK:
            arr = _HANDLES.get(key)
            if arr is None:
                repo = self.store.open().open_repo(uuid=self.repo_uuid)
                arr = repo.version(self.version).array(self.name)
                if self.level:
                    arr = arr.scale(self.level)
                _HANDLES[key] = arr
        return arr

    def __getitem__(self, sel: Any) -> np.ndarray:
        arr = self._handle()
        if self.supervoxels:
            return arr.read(sel, supervoxels=True)
        return arr[sel]


def _level(array: Any, scale: int) -> int:
    """The pyramid level to read: ``scale``, or that of a scale view (``arr.scale(n)``)."""
    own = int(getattr(array, "_level", 0))
    if own and scale and int(scale) != own:
        raise InvalidArgumentError(f"a scale-{own} view cannot be read at scale {scale}")
    return own or int(scale)


def to_dask(array: Any, *, version: Any = None, scale: int = 0, supervoxels: bool = False,
            chunks: Sequence[int] | None = None,
            storage_options: dict[str, Any] | None = None) -> Any:
    """A lazy dask array of a version of ``array``, one block per storage chunk.

    Parameters
    ----------
    array : VersionedArray or LabelArray
    version : optional
        Version to read (UUID, prefix, ``branch~N``, Version); default: the handle's
        version now (pinned: a moving head does not change the dask array).
    scale : int
        Pyramid level.
    supervoxels : bool
        Label arrays: supervoxel ids instead of bodies.
    chunks : sequence of int, optional
        dask block shape, a whole number of storage chunks per axis (default: one storage
        chunk; larger blocks mean fewer tasks, e.g. ``(256, 256, 256)`` for 64³ chunks).
    storage_options : dict, optional
        fsspec options with which workers open the store (default: the driver's).

    Returns
    -------
    dask.array.Array

    Raises
    ------
    InvalidArgumentError
        ``chunks`` is not a whole number of storage chunks per axis.
    """
    import dask.array as da
    from dask.base import tokenize

    scale = _level(array, scale)
    v = array.version if version is None else array.repo.version(version)
    view = array.at(v.uuid)
    if scale:
        view = view.scale(scale)
    store = StoreRef.of(array.repo.store, storage_options)
    reader = _VersionReader(store, array.repo.uuid, v.uuid, array.name, int(scale),
                            bool(supervoxels), tuple(view.shape), view.dtype)
    if v.locked:  # the data never changes: a stable name lets dask share results
        name = "diced-" + tokenize(store.location, array.repo.uuid, v.uuid, array.name,
                                   int(scale), bool(supervoxels))
    else:
        import uuid

        name = f"diced-{uuid.uuid4().hex}"
    blocks = tuple(view.chunks)
    if chunks is not None:
        try:
            blocks = tuple(int(b) for b in chunks)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"chunks must be integers, got {chunks!r}") from exc
        if len(blocks) != view.ndim or any(b <= 0 or b % c for b, c in
                                           zip(blocks, view.chunks, strict=True)):
            raise InvalidArgumentError(
                f"chunks {blocks} must be whole multiples of the storage chunks {view.chunks}")
        name += "-" + "x".join(map(str, blocks))
    return da.from_array(reader, chunks=blocks, name=name, lock=False, asarray=False,
                         fancy=False, meta=np.empty((0,) * view.ndim, dtype=view.dtype))


def to_xarray(array: Any, *, version: Any = None, scale: int = 0, supervoxels: bool = False,
              voxel_size: Sequence[float] | None = None, unit: str | None = None,
              dims: Sequence[str] | None = None,
              storage_options: dict[str, Any] | None = None) -> Any:
    """The version as an ``xarray.DataArray`` over :func:`to_dask`.

    Dims are ``("z", "y", "x")`` for 3-D arrays (``dim_0 ...`` otherwise, or ``dims``).
    Coordinates are in level-0 voxels, absolute (the origin added): voxel ``j`` of scale
    ``s`` is at ``(origin // 2**s + j) * 2**s`` (where it starts), times ``voxel_size``
    when given (in ``unit``). Attributes: ``version``, ``scale``, ``origin`` (level 0).
    """
    import xarray as xr

    scale = _level(array, scale)
    darr = to_dask(array, version=version, scale=scale, supervoxels=supervoxels,
                   storage_options=storage_options)
    nd = darr.ndim
    if dims is None:
        dims = ("z", "y", "x") if nd == 3 else tuple(f"dim_{i}" for i in range(nd))
    dims = tuple(dims)
    if len(dims) != nd:
        raise InvalidArgumentError(f"dims {dims} do not match {nd} dimensions")
    if voxel_size is not None:
        vs = [float(x) for x in voxel_size]
        if len(vs) != nd or any(not np.isfinite(x) or x <= 0 for x in vs):
            raise InvalidArgumentError(
                f"voxel_size must be {nd} positive numbers, got {voxel_size!r}")
    else:
        vs = None
    f = 1 << int(scale)
    origin = tuple(int(o) for o in getattr(array, "_origin0", array.origin))
    coords = {}
    for i, (d, n, o) in enumerate(zip(dims, darr.shape, origin, strict=True)):
        # voxel j of level s starts at level-0 voxel (floor(origin / 2**s) + j) * 2**s
        c = ((o // f + np.arange(n)) * f).astype(np.float64 if vs else np.int64)
        if vs is not None:
            c = c * vs[i]
        coords[d] = xr.Variable(d, c, attrs={"units": unit} if unit else {})
    v = array.version if version is None else array.repo.version(version)
    return xr.DataArray(darr, dims=dims, coords=coords, name=array.name,
                        attrs={"version": v.uuid, "scale": int(scale), "origin": list(origin),
                               **({"units": unit} if unit else {})})


class _OpenVersion:
    """What the cluster's derived-data steps need of a write at an open version (as
    :class:`~diced.cluster.job.Job` gives for a reserved one): nothing is skipped."""

    def __init__(self, repo: Any, ctx: Any) -> None:
        from dataclasses import replace

        self.repo, self.vid = repo, ctx.vid
        self.ctx = replace(ctx, uuid_of=None)
        self.base_ctx = self.ctx

    def written(self, space_id: int) -> set[str]:
        return set()


def from_dask(array: Any, data: Any, *, offset: Sequence[int] | None = None,
              client: Any = None, pyramid: bool = True,
              storage_options: dict[str, Any] | None = None) -> None:
    """Write a dask array into ``array`` at its (open) version, chunk-aligned blocks in
    parallel on the cluster; then rebuild the pyramid above them and, for label arrays,
    the label index (on the cluster too).

    Parameters
    ----------
    array : VersionedArray or LabelArray
        At an open version (the head, or a pinned open version).
    data : dask array or array-like
        Its graph runs on the workers.
    offset : sequence of int, optional
        Array index of ``data[0, ...]`` (default 0s).
    client : distributed.Client or str, optional
        The cluster (default: the active client, else threads of this process).
    pyramid : bool
        Recompute the pyramid levels above the written chunks.
    storage_options : dict, optional
        fsspec options with which workers open the store (default: the driver's).

    Raises
    ------
    LockedNodeError
        The version is locked.
    ShapeMismatchError
        ``data`` does not fit at ``offset``.
    """
    import dask

    from diced.cluster._chunks import ChunkTarget, chunk_boxes
    from diced.cluster._run import compute
    from diced.cluster.blocks import _as_dask, _paste_block, align
    from diced.cluster.labels import index_labels, set_max_label
    from diced.cluster.pyramid import pyramid_levels
    repo = array.repo
    ctx = array._ref.ctx()
    if ctx.locked:
        raise LockedNodeError(f"version {ctx.uuid} is locked; from_dask writes an open version"
                              " (diced.cluster.ingest writes a new child of a locked one)")
    darr = _as_dask(data)
    shape = tuple(array.shape)
    off = (0,) * darr.ndim if offset is None else tuple(int(o) for o in offset)
    if len(off) != len(shape) or darr.ndim != len(shape) or any(
            o < 0 or o + n > s for o, n, s in zip(off, darr.shape, shape, strict=True)):
        raise ShapeMismatchError(f"data of shape {tuple(darr.shape)} at offset {off} does not "
                                 f"fit in {array.name!r} of shape {shape}")
    store = StoreRef.of(repo.store, storage_options)
    repo.refresh()
    rec = repo._doc["instances"][array.name]
    target = ChunkTarget.of(store, rec, ctx, 0, shape)
    if np.dtype(darr.dtype) != target.np_dtype:
        darr = darr.astype(target.np_dtype)
    darr = align(darr, off, target)
    blocks = darr.to_delayed()
    starts = [np.cumsum((0, *c[:-1])).tolist() for c in darr.chunks]
    tasks = []
    written: set[tuple[int, ...]] = set()
    for idx in np.ndindex(*darr.numblocks):
        start = tuple(o + starts[a][i] for a, (o, i) in enumerate(zip(off, idx, strict=True)))
        bshape = tuple(darr.chunks[a][i] for a, i in enumerate(idx))
        written.update(c for c, _, _ in chunk_boxes(start, bshape, target.chunks))
        tasks.append(dask.delayed(_paste_block, pure=False)(target, start, frozenset(),
                                                            blocks[idx]))
    compute(tasks, client, local=store.local)
    w = _OpenVersion(repo, ctx)
    if pyramid and int(rec["config"].get("max_scale", 0)):
        pyramid_levels(w, store, rec, sorted(written), client)
    if rec["type"] == "labels":
        set_max_label(w, rec, index_labels(w, store, rec, client))
