"""Chunk-parallel jobs that write a new version: ingest of a (dask) array, and
``map_blocks`` (apply a function to every chunk of version A, write version B).

Both run as a :class:`~diced.cluster.job.Job`: workers write chunks at a reserved version
id, derived data (pyramid levels, the label index) is rebuilt on the cluster too, and the
version appears with one metadata change at the end. A failed job resumes when run again
with the same arguments: chunks the version already holds are skipped.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from diced.cluster._chunks import ChunkTarget, aligned_blocks, block_unit, grid_of
from diced.cluster._ref import StoreRef
from diced.cluster._run import compute, run_tasks
from diced.errors import InvalidArgumentError, ShapeMismatchError
from diced.repo import keys as K

log = logging.getLogger(__name__)

__all__ = ["SourceArray", "ingest", "map_blocks"]

#: raw bytes of input chunks one map_blocks task handles
MAP_TASK_BYTES = 16 << 20


def _finish(job: Any, store: StoreRef, record: dict[str, Any], client: Any,
            pyramid: bool, lock: bool) -> Any:
    """Derived data at the job's version (pyramid above what level 0 got, label index),
    then publish."""
    from diced.cluster.labels import index_labels, set_max_label
    from diced.cluster.pyramid import pyramid_levels

    if pyramid and int(record["config"].get("max_scale", 0)):
        written = [K.parse_chunk_ckey(c) for c in job.written(int(record["id"]))]
        pyramid_levels(job, store, record, written, client)
    if record["type"] == "labels":
        set_max_label(job, record, index_labels(job, store, record, client))
    return job.publish(lock=lock)


# --- ingest --------------------------------------------------------------------------------

def _paste_block(target: ChunkTarget, start: tuple[int, ...], skip: frozenset[str],
                 block: np.ndarray) -> int:
    return target.paste(start, np.asarray(block), skip)


def _as_dask(data: Any) -> Any:
    import dask.array as da

    if isinstance(data, da.Array):
        return data
    if isinstance(data, str):
        data = SourceArray(data)
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    return da.from_array(data, chunks=data.shape if data.ndim else (), lock=False,
                         asarray=False, fancy=False)


class SourceArray:
    """A volume :func:`diced.export.ingest.open_source` opens (HDF5, TIFF, ``.npy``, zarr,
    by path or URL) as an array-like for dask. It pickles as its path and options, so each
    worker opens the file itself (on a shared file system or an object store).

    Parameters
    ----------
    path : str
        What ``open_source`` takes.
    dataset : str, optional
        HDF5 dataset.
    axes : str, optional
        The source's axis order (see :func:`diced.export.ingest.with_axes`).
    """

    def __init__(self, path: str, dataset: str | None = None, axes: str | None = None) -> None:
        self.args = (path, dataset, axes)
        src = self._open()
        self.shape = tuple(int(n) for n in src.shape)
        self.dtype = np.dtype(src.dtype)
        self.ndim = len(self.shape)

    def _open(self) -> Any:
        src = self.__dict__.get("_src")
        if src is None:
            from diced.export.sources import open_source, with_axes

            path, dataset, axes = self.args
            src = with_axes(open_source(path, dataset=dataset), axes)
            self.__dict__["_src"] = src
        return src

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_src"}

    def __dask_tokenize__(self) -> Any:
        # the same file (and options) gets the same dask name, so a rerun resumes its job
        return ("diced-source", self.args, self._open().identity())

    def __getitem__(self, sel: tuple[slice, ...]) -> np.ndarray:
        if not isinstance(sel, tuple):
            sel = (sel,)
        sel = sel + (slice(None),) * (self.ndim - len(sel))
        z = sel[0]
        z0 = z.start or 0
        z1 = self.shape[0] if z.stop is None else z.stop
        slab = np.asarray(self._open().read(z0, z1))
        return slab[(slice(None), *sel[1:])]


def ingest(repo: Any, name: str, data: Any, *, offset: Sequence[int] | None = None,
           create: dict[str, Any] | None = None, labels: bool = False, parent: Any = None,
           client: Any = None, job: str | None = None, branch: str | None = None,
           note: str = "", lock: bool = False, pyramid: bool = True,
           storage_options: dict[str, Any] | None = None) -> Any:
    """Write a volume into a new child version on the cluster.

    Workers compute (or read) the source block by block, aligned to the array's chunks,
    and write chunks straight to the store; the pyramid levels (``max_scale``) and, for
    label arrays, the label index are built on the cluster; then the version is published.

    Parameters
    ----------
    repo : Repo
        The repo (its store opened by URL on the workers: use an object store or a shared
        file system, or LMDB / ``file://`` on one machine).
    name : str
        The array: visible at ``parent``, or created with the new version when ``create``
        is given (or when it does not exist).
    data : dask array, array-like or str
        A dask array (its graph runs on the workers), anything ``dask.array.from_array``
        takes (numpy, zarr, h5py...), or a path :func:`diced.export.ingest.open_source`
        opens (see :class:`SourceArray`; each worker opens it).
    offset : sequence of int, optional
        Array index of the source's first voxel (default 0s).
    create : dict, optional
        Options of the new array (``dtype``, ``shape``, ``chunks``, ``codec``, ``origin``,
        ``max_scale``...; default: the source's dtype and ``offset + data.shape``).
    labels : bool
        Create a label array (uint64) instead of an image array.
    parent : version, optional
        The locked version the new version is a child of (default: the repo head).
    client : distributed.Client or str, optional
        The cluster (default: the active client, else threads of this process).
    job : str, optional
        Job name; by default derived from the arguments, so the same call resumes.
    branch : str, optional
        Put the new version on a new branch (default: continue the parent's).
    note : str
        The version's note.
    lock : bool
        Commit the new version.
    pyramid : bool
        Rebuild the pyramid levels above the written chunks (arrays with ``max_scale``).
    storage_options : dict, optional
        fsspec options with which workers open the store (default: the driver's).

    Returns
    -------
    Version
        The new version.

    Raises
    ------
    ShapeMismatchError
        The source does not fit in the array at ``offset``.
    UnlockedNodeError
        ``parent`` is open.
    ConcurrencyError
        An unfinished job of that name has other arguments.
    """
    from diced.cluster.job import Job

    darr = _as_dask(data)
    off = tuple(0 for _ in darr.shape) if offset is None else tuple(int(o) for o in offset)
    if len(off) != darr.ndim:
        raise InvalidArgumentError(f"offset {off} does not match {darr.ndim} dimensions")
    if any(o < 0 for o in off):
        raise InvalidArgumentError(f"offset must be non-negative, got {off}")
    repo.refresh()
    p = repo._node(parent)
    new = None
    if create is not None or name not in repo.instances(p.uuid):
        opts = {"dtype": "uint64" if labels else darr.dtype.str,
                "shape": [o + n for o, n in zip(off, darr.shape, strict=True)],
                **(create or {})}
        if labels:
            opts.pop("dtype", None)
        new = {name: ("labels" if labels else "array", opts)}
    if new is None:
        shape = _shape_at(repo._doc["instances"][name], repo._ctx(p.id).ancestors)
    else:
        shape = tuple(int(n) for n in next(iter(new.values()))[1].get("shape") or ())
    _check_fits(darr.shape, off, shape, name)
    # the dask name identifies the source (a hash of the data or of the graph): a rerun
    # resumes only with the same source (an unnamed random one never resumes)
    params = {"target": name, "source": darr.name, "shape": list(darr.shape),
              "dtype": darr.dtype.str, "offset": list(off), "create": _jsonable(new)}
    j = Job.start(repo, "ingest", params, parent=p.uuid, name=job, branch=branch, note=note,
                  new_instances=new)
    rec = j.instance_record(name)
    store = StoreRef.of(repo.store, storage_options)
    shape = _shape_at(rec, j.ctx.ancestors)
    _check_fits(darr.shape, off, shape, name)
    target = ChunkTarget.of(store, rec, j.ctx, 0, shape)
    if np.dtype(darr.dtype) != target.np_dtype:
        darr = darr.astype(target.np_dtype)
    darr = align(darr, off, target)
    done = j.written(target.space_id)
    tasks, skipped = [], 0
    import dask

    blocks = darr.to_delayed()
    starts = [np.cumsum((0, *c[:-1])).tolist() for c in darr.chunks]
    for idx in np.ndindex(*darr.numblocks):
        start = tuple(o + starts[a][i] for a, (o, i) in enumerate(zip(off, idx, strict=True)))
        bshape = tuple(darr.chunks[a][i] for a, i in enumerate(idx))
        mine = _whole_and_partial(start, bshape, target.chunks)
        if mine[1] == 0 and mine[0] <= done:
            skipped += 1
            continue
        tasks.append(dask.delayed(_paste_block, pure=False)(
            target, start, frozenset(mine[0] & done), blocks[idx]))
    log.info("ingest %s: %d blocks to write, %d already written (resumed job)", name,
             len(tasks), skipped)
    compute(tasks, client, local=store.local)
    return _finish(j, store, rec, client, pyramid, lock)


def align(darr: Any, offset: Sequence[int], target: ChunkTarget) -> Any:
    """``darr`` with block edges on the array's chunk grid: as it is if they already are
    (and blocks are at most 256 MiB), else rechunked to blocks of about 16 MiB."""
    ok = True
    for sizes, o, c in zip(darr.chunks, offset, target.chunks, strict=True):
        edges = np.cumsum((o, *sizes))[1:-1]
        ok = ok and bool(np.all(edges % c == 0))
    biggest = int(np.prod([max(s) for s in darr.chunks])) * target.np_dtype.itemsize
    if ok and biggest <= 256 << 20:
        return darr
    unit = block_unit(target.chunks, target.np_dtype.itemsize)
    return darr.rechunk(aligned_blocks(offset, darr.shape, unit))


def _check_fits(dshape: Sequence[int], off: Sequence[int], shape: Sequence[int],
                name: str) -> None:
    if len(shape) != len(dshape) or any(o + n > s for o, n, s in
                                        zip(off, dshape, shape, strict=True)):
        raise ShapeMismatchError(f"a source of shape {tuple(dshape)} at offset {tuple(off)} "
                                 f"does not fit in {name!r} of shape {tuple(shape)}")


def _whole_and_partial(start: Sequence[int], shape: Sequence[int], chunks: Sequence[int]
                       ) -> tuple[set[str], int]:
    from diced.cluster._chunks import chunk_boxes

    whole, partial = set(), 0
    for coords, in_chunk, _ in chunk_boxes(start, shape, chunks):
        if all(s.start == 0 and s.stop == c for s, c in zip(in_chunk, chunks, strict=True)):
            whole.add(K.chunk_ckey(coords))
        else:
            partial += 1
    return whole, partial


def _shape_at(rec: dict[str, Any], ancestors: frozenset[int]) -> tuple[int, ...]:
    shapes = rec["config"]["shapes"]
    best = max((int(v) for v in shapes if int(v) in ancestors), default=None)
    if best is None:
        best = min(int(v) for v in shapes)
    return tuple(shapes[str(best)])


def _fn_token(fn: Callable[..., Any]) -> str:
    """What identifies ``fn`` for resuming: its name and a hash of it as it is shipped to
    the workers (code and captured values), so a changed function does not resume a job
    started with another one."""
    import hashlib

    try:
        import cloudpickle

        digest = hashlib.sha256(cloudpickle.dumps(fn)).hexdigest()[:16]
    except Exception:  # noqa: BLE001 - unpicklable: it will fail on the workers anyway
        digest = "unpicklable"
    return f"{getattr(fn, '__qualname__', type(fn).__name__)}:{digest}"


def _jsonable(x: Any) -> Any:
    import json

    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist")
                                 else str(o)))


# --- map_blocks ------------------------------------------------------------------------------

def _map_task(args: tuple[Callable[..., Any], ChunkTarget, ChunkTarget, bool,
                          list[tuple[int, ...]]]) -> int:
    fn, src, dst, with_box, coords = args
    chunks = src.read(coords)
    out: dict[tuple[int, ...], np.ndarray] = {}
    for c, chunk in zip(coords, chunks, strict=True):
        box = tuple(slice(i * k, min((i + 1) * k, n))
                    for i, k, n in zip(c, src.chunks, src.shape, strict=True))
        inner = tuple(slice(0, b.stop - b.start) for b in box)
        block = chunk[inner]
        res = fn(block, box=box) if with_box else fn(block)
        res = np.asarray(res)
        if res.shape != block.shape:
            raise ShapeMismatchError(
                f"map_blocks: the function returned shape {res.shape} for a block of "
                f"shape {block.shape} (chunk {c})")
        full = dst.empty()
        full[inner] = res
        out[c] = full
    dst.write(out)
    return len(out)


def map_blocks(fn: Callable[..., Any], array: Any, *, out: str | None = None,
               dtype: Any = None, parent: Any = None, skip_empty: bool = True,
               client: Any = None, job: str | None = None, branch: str | None = None,
               note: str = "", lock: bool = False, pyramid: bool = True,
               storage_options: dict[str, Any] | None = None) -> Any:
    """Apply ``fn`` to every chunk of ``array`` at its version A and write the results at a
    new version B (a child of ``parent``, by default of A) on the cluster.

    Parameters
    ----------
    fn : callable
        ``fn(block) -> ndarray`` of the block's shape (edge chunks come cropped to the
        array's shape); if it takes a keyword ``box`` it also gets the block's position
        (a tuple of slices in array indices). It runs on the workers: it must pickle.
    array : VersionedArray or LabelArray
        The input, at the version it is pinned to (or the head). Label arrays give their
        stored supervoxel ids (no body mapping); a label output gets its label index and
        max label rebuilt on the cluster.
    out : str, optional
        Output instance: ``None`` writes back into ``array`` at B; an existing instance
        visible at ``parent`` (same shape and chunks); or a new name, created with B (same
        shape, chunks and origin as the input, dtype ``dtype``).
    dtype : dtype-like, optional
        dtype of a new output instance (default: the input's).
    parent : version, optional
        Parent of B (locked; default A, which must then be locked).
    skip_empty : bool
        Apply ``fn`` only to chunks holding data at A (default); ``False``: to every chunk
        of the grid (``fn`` sees fill for empty ones).
    client, job, branch, note, lock, pyramid, storage_options
        As for :func:`ingest`.

    Returns
    -------
    Version
        The new version B.
    """
    from diced.cluster.job import Job

    if not callable(fn):
        raise InvalidArgumentError(f"map_blocks needs a function, got {fn!r}")
    repo = array.repo
    a = array.version
    p = repo._node(a.uuid if parent is None else parent)
    store = StoreRef.of(repo.store, storage_options)
    a_ctx = repo._ctx(a.id)
    src_rec = repo._doc["instances"][array.name]
    src = ChunkTarget.of(store, src_rec, a_ctx, 0, array.shape)
    out_name = array.name if out is None else out
    new = None
    if out_name not in repo.instances(p.uuid):
        cfg = src_rec["config"]
        odt = np.dtype(dtype if dtype is not None else array.dtype)
        opts: dict[str, Any] = {"shape": list(array.shape), "chunks": cfg["chunks"],
                                "origin": cfg.get("origin"),
                                "max_scale": int(cfg.get("max_scale", 0))}
        if src_rec["type"] == "labels" and odt == np.uint64:
            new = {out_name: ("labels", opts)}
        else:
            if odt == array.dtype:
                opts["codec"] = cfg["codec"]
            new = {out_name: ("array", {**opts, "dtype": odt.str})}
    else:
        if dtype is not None:
            raise InvalidArgumentError("dtype= is for a new output instance; "
                                       f"{out_name!r} exists")
        orec = repo._doc["instances"][out_name]
        oshape = _shape_at(orec, repo._ctx(p.id).ancestors)
        if tuple(orec["config"]["chunks"]) != src.chunks or oshape != src.shape:
            raise ShapeMismatchError(
                f"map_blocks: output {out_name!r} has shape {oshape} and chunks "
                f"{tuple(orec['config']['chunks'])}, the input {src.shape} and {src.chunks}")
    params = {"target": out_name, "source": array.name, "version": a.uuid,
              "fn": _fn_token(fn), "skip_empty": bool(skip_empty),
              "create": _jsonable(new)}
    j = Job.start(repo, "map_blocks", params, parent=p.uuid, name=job, branch=branch,
                  note=note, new_instances=new)
    rec = j.instance_record(out_name)
    dst = ChunkTarget.of(store, rec, j.ctx, 0, _shape_at(rec, j.ctx.ancestors))
    if dst.chunks != src.chunks or dst.shape != src.shape:
        raise ShapeMismatchError(
            f"map_blocks: output {out_name!r} has shape {dst.shape} and chunks {dst.chunks}, "
            f"the input {src.shape} and {src.chunks}")
    if skip_empty:
        coords = sorted(K.parse_chunk_ckey(c) for c in src.space.live_keys(a_ctx))
    else:
        coords = list(np.ndindex(*grid_of(src.shape, src.chunks)))
    done = j.written(dst.space_id)
    todo = [c for c in coords if K.chunk_ckey(c) not in done]
    try:
        with_box = "box" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        with_box = False
    per = max(1, MAP_TASK_BYTES // max(1, src.chunk_nbytes))
    tasks = [(fn, src, dst, with_box, todo[i:i + per]) for i in range(0, len(todo), per)]
    log.info("map_blocks %s -> %s: %d chunks (%d done before)", array.name, out_name,
             len(todo), len(coords) - len(todo))
    run_tasks(_map_task, tasks, client, local=store.local)
    return _finish(j, store, rec, client, pyramid, lock)
