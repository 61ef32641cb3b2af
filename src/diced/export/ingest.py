"""Ingest volumes into diced: HDF5, TIFF stacks, multi-page TIFF, ``.npy``, zarr and numpy.

:func:`ingest` streams the source in slabs along the first axis (z), each slab a whole number
of chunk rows of the target array, so every slab boundary is a chunk boundary and no chunk is
written twice. Progress is recorded in the repo after every slab, so an interrupted ingest
resumes where it stopped (see :func:`ingest`).

Sources are opened by :func:`open_source` (in :mod:`diced.export.sources`), which returns a
small reader with ``shape``, ``dtype``, ``read(z0, z1)`` and an ``identity()`` used to
recognise the same source on resume.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from diced.array.grid import check_dtype
from diced.errors import (
    DuplicateNameError,
    FormatError,
    InstanceNotFoundError,
    InvalidArgumentError,
    LockedNodeError,
    ShapeMismatchError,
)
from diced.export.sources import Source, natural_key, open_source, with_axes

if TYPE_CHECKING:
    from diced.datatypes.keyvalue import KeyValue
    from diced.repo.repo import Repo

log = logging.getLogger(__name__)

__all__ = ["PROGRESS_INSTANCE", "IngestReport", "Source", "ingest", "natural_key", "open_source",
           "with_axes"]

#: keyvalue instance holding the progress records of unfinished ingests (key: array name)
PROGRESS_INSTANCE = ".ingest"


@dataclass(frozen=True)
class IngestReport:
    """What :func:`ingest` did.

    Attributes
    ----------
    name : str
        The array written.
    source : str
        Description of the source.
    shape, offset : tuple of int
        Source shape, and where its first voxel went in the array.
    dtype : str
        dtype stored.
    slabs : int
        Number of slabs the source was cut into.
    slabs_written, slabs_skipped : int
        Slabs written by this call, and slabs skipped because an earlier interrupted call
        had written them (resume).
    bytes_written : int
        Source bytes read and written by this call.
    seconds : float
        Wall time of this call.
    """

    name: str
    source: str
    shape: tuple[int, ...]
    offset: tuple[int, ...]
    dtype: str
    slabs: int
    slabs_written: int
    slabs_skipped: int
    bytes_written: int
    seconds: float

    @property
    def resumed(self) -> bool:
        """Whether this call continued an interrupted ingest."""
        return self.slabs_skipped > 0

    @property
    def mb_per_s(self) -> float:
        """Throughput of this call in MB (10**6 bytes) of source data per second."""
        return self.bytes_written / max(self.seconds, 1e-9) / 1e6


# --- progress records ----------------------------------------------------------------------------

class _Progress:
    """The resume record of one ingest, in the repo's ``.ingest`` keyvalue at the head."""

    def __init__(self, repo: Repo, name: str) -> None:
        self.repo, self.name = repo, name
        self._kv: KeyValue | None = None

    def _store(self, create: bool) -> KeyValue | None:
        if self._kv is not None:
            return self._kv
        visible = self.repo.instances()
        everywhere = self.repo._doc["instances"]
        inst = PROGRESS_INSTANCE
        if inst not in visible and inst in everywhere:
            # made on another branch, invisible here: one record instance per version line
            inst = f"{PROGRESS_INSTANCE}.{self.repo.current_uuid[:12]}"
        if inst in visible:
            self._kv = self.repo.keyvalue(inst)
        elif create:
            try:
                self._kv = self.repo.create_keyvalue(inst)
            except DuplicateNameError:  # created concurrently
                self._kv = self.repo.keyvalue(inst)
        return self._kv

    def load(self) -> dict[str, Any] | None:
        kv = self._store(create=False)
        raw = kv.get(self.name) if kv is not None else None
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            log.warning("ignoring an unreadable ingest record for %r", self.name)
            return None

    def save(self, record: dict[str, Any]) -> None:
        kv = self._store(create=True)
        assert kv is not None
        kv[self.name] = json.dumps(record, sort_keys=True).encode()

    def clear(self) -> None:
        kv = self._store(create=False)
        if kv is not None:
            kv.delete(self.name)


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, sort_keys=True))


# --- ingest --------------------------------------------------------------------------------------

def _slab_plan(lo: int, hi: int, step: int) -> list[tuple[int, int]]:
    """Slabs ``[a, b)`` covering ``lo:hi`` (array coordinates) cut at multiples of ``step``."""
    if hi <= lo:
        return []
    return [(max(lo, k * step), min(hi, (k + 1) * step)) for k in range(lo // step, -(-hi // step))]


def ingest(
    source: Any,
    repo: Repo,
    name: str,
    *,
    dataset: str | None = None,
    axes: str | None = None,
    offset: Sequence[int] | None = None,
    create: bool = True,
    dtype: Any = None,
    labels: bool = False,
    slab: int | None = None,
    chunks: Sequence[int] | None = None,
    max_scale: int = 0,
    fill_value: Any = 0,
    progress: bool = True,
    resume: bool = True,
) -> IngestReport:
    """Stream a volume into array ``name`` at the repo head, resumably, in bounded memory.

    Parameters
    ----------
    source
        A path, glob, URL or array-like (see :func:`open_source`): HDF5, multi-page TIFF,
        a directory or glob of single-page TIFFs, ``.npy``, zarr, numpy/dask arrays.
    repo : Repo
        The repo; its head version must be open.
    name : str
        Array to write.
    dataset : str, optional
        HDF5 dataset path (needed when the file holds several datasets).
    axes : str, optional
        **The source's axis order**, one letter per axis from ``t, c, z, y, x``: ``"zyx"``
        (diced's order: first axis z), ``"xyz"`` (an array indexed ``[x, y, z]``, e.g.
        written by Fortran/MATLAB/ImageJ-style tools), ``"czyx"``, ``"zyxc"``, ``"yx"``...
        The array is created in ``t, c, z, y, x`` order, so ``"xyz"`` is transposed to
        ``z, y, x`` while streaming. Default: the axes the source declares (OME-Zarr
        ``axes``, zarr ``dimension_names``), else the source's own order, with a warning
        for 3-D and larger sources, which cannot say which axis is z.
    offset : sequence of int, optional
        Index in the array (diced's axis order, e.g. z, y, x) where the source's first
        voxel goes (default: all zeros).
    create : bool
        Create the array with shape ``source.shape + offset`` (``True``, the default), or
        write into an existing array that is large enough (``False``).
    dtype : dtype, optional
        dtype of a created array (default: the source's). Values must convert without loss.
    labels : bool
        Create a :class:`~diced.datatypes.labels.labels.LabelArray` (uint64, label index) instead of an
        image array.
    slab : int, optional
        Planes per slab along axis 0; rounded up to a multiple of the array's chunk depth
        ``chunks[0]`` (the default). Slab boundaries lie on the chunk grid.
    chunks, max_scale, fill_value
        Passed to ``create_array`` / ``create_labels`` when the array is created.
    progress : bool
        Show a tqdm progress bar over slabs.
    resume : bool
        Continue an interrupted ingest of the same source into ``name`` (recorded in the
        repo, see Notes). ``False`` starts from the first slab.

    Returns
    -------
    IngestReport

    Raises
    ------
    FormatError
        The source is malformed or unreadable.
    NotFoundError
        The source path does not exist.
    InvalidArgumentError
        Bad axes, offset or slab; a recorded unfinished ingest of ``name`` came from another
        source (pass ``resume=False`` to restart).
    DuplicateNameError
        ``create=True`` and ``name`` exists with no unfinished ingest to resume.
    ShapeMismatchError
        ``create=False`` and the source plus offset does not fit in the array.
    LockedNodeError
        The repo head is locked.

    Notes
    -----
    **Memory** is bounded by about two slabs of the source dtype (the slab being written
    and the next one, read ahead in a background thread), one more slab if the values are
    converted to another dtype, plus the chunks being encoded (at most 64 MiB of chunk data
    per backend batch). A slab is ``slab`` planes of the source, i.e. by default
    ``chunks[0] * prod(source.shape[1:]) * itemsize`` bytes.

    **Resume**: after each slab, a JSON record (source identity: kind, path, shape, dtype,
    mtime; offset; slab size; slabs done) is stored under key ``name`` of the keyvalue
    instance ``.ingest`` at the head. A rerun with the same source and ``resume=True``
    skips the slabs done; the record is removed when the ingest completes. In-memory
    arrays are recognised by shape and dtype only.
    """
    t0 = time.perf_counter()
    head = repo.head
    if head.locked:
        raise LockedNodeError(f"the head {head.uuid} of repo {repo.alias!r} is locked; "
                              "make a new version or branch to ingest into")
    opened = open_source(source, dataset)
    try:
        declared = opened.axes
        src = with_axes(opened, axes)
        if axes is None and declared is None and len(src.shape) >= 3:
            log.warning("%s declares no axis order; assuming %r (first axis z). Pass axes= "
                        "(diced ingest --axes), e.g. 'xyz', if that is wrong", src.description,
                        "tczyx"[-len(src.shape):] if len(src.shape) <= 5 else "its own order")
        return _ingest(src, repo, name, offset, create, dtype, labels, slab, chunks, max_scale,
                       fill_value, progress, resume, t0)
    finally:
        if opened is not source:
            opened.close()


def _ingest(src: Source, repo: Repo, name: str, offset: Sequence[int] | None, create: bool,
            dtype: Any, labels: bool, slab: int | None, chunks: Sequence[int] | None,
            max_scale: int, fill_value: Any, progress: bool, resume: bool, t0: float
            ) -> IngestReport:
    ndim = len(src.shape)
    if offset is None:
        off = (0,) * ndim
    else:
        try:
            off = tuple(int(o) for o in offset)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"offset must be integers, got {offset!r}") from exc
        if len(off) != ndim or any(o < 0 for o in off):
            raise InvalidArgumentError(
                f"offset {off} must give {ndim} non-negative indices for a {ndim}-D source")
    if labels:
        if dtype is not None and np.dtype(dtype) != np.uint64:
            raise InvalidArgumentError("label arrays are uint64; leave dtype unset")
        target = np.dtype(np.uint64)
    else:
        target = check_dtype(dtype if dtype is not None else src.dtype)
    if src.dtype.kind not in "biufc":
        raise FormatError(f"{src.description}: dtype {src.dtype} is not numeric")
    if slab is not None and (not isinstance(slab, (int, np.integer)) or slab <= 0):
        raise InvalidArgumentError(f"slab must be a positive number of planes, got {slab!r}")

    tracker = _Progress(repo, name)
    ident = _jsonable(src.identity())
    record = tracker.load() if resume else None
    done = 0
    created = False
    if record is not None:
        if _jsonable(record.get("source")) != ident or record.get("offset") != list(off):
            was = record.get("source") or {}
            raise InvalidArgumentError(
                f"an unfinished ingest into {name!r} from {was.get('path') or was} at offset "
                f"{record.get('offset')} is recorded; rerun with that source and offset, or "
                "pass resume=False to start again")
        arr = repo.array(name)
        done = int(record.get("done", 0))
        log.info("resuming ingest of %s into %r after %d slabs", src.description, name, done)
    else:
        shape = tuple(s + o for s, o in zip(src.shape, off, strict=True))
        if create:
            if name in repo.instances():
                raise DuplicateNameError(
                    f"repo {repo.alias!r} already has an instance {name!r}; pass create=False "
                    "to write into it")
            if labels:
                arr = repo.create_labels(name, shape, chunks=chunks, max_scale=max_scale)
            else:
                arr = repo.create_array(name, target, shape, chunks=chunks,
                                        fill_value=fill_value, max_scale=max_scale)
            created = True
        else:
            try:
                arr = repo.array(name)
            except InstanceNotFoundError as exc:
                raise InstanceNotFoundError(
                    f"no array {name!r} to ingest into; pass create=True to make one") from exc
            if not hasattr(arr, "chunks"):
                raise InvalidArgumentError(f"{name!r} is not an array")
            if arr.ndim != ndim or any(n > a for n, a in zip(shape, arr.shape, strict=True)):
                raise ShapeMismatchError(
                    f"source {src.shape} at offset {off} needs shape {shape}; {name!r} has "
                    f"{arr.shape}")
    step = arr.chunks[0]
    if slab is None and record is not None and isinstance(record.get("slab"), int):
        step = record["slab"]
    elif slab is not None:
        step = -(-int(slab) // arr.chunks[0]) * arr.chunks[0]
        if step != slab:
            log.info("slab of %d planes rounded up to %d (a multiple of chunk depth %d)",
                     slab, step, arr.chunks[0])
    plan = _slab_plan(off[0], off[0] + src.shape[0], step)
    if record is not None and record.get("slab") != step:
        raise InvalidArgumentError(
            f"the unfinished ingest into {name!r} used slabs of {record.get('slab')} planes; "
            f"rerun with slab={record.get('slab')} or resume=False")
    base = {"source": ident, "offset": list(off), "slab": step, "slabs": len(plan),
            "array": name, "started": (record or {}).get("started", time.time())}
    tracker.save({**base, "done": done})
    rest = tuple(slice(o, o + n) for o, n in zip(off[1:], src.shape[1:], strict=True))
    counters = [0, 0]  # slabs and bytes written by this call
    try:
        _run_slabs(src, arr, plan[done:], off, rest, tracker, base, done, len(plan), progress,
                   name, counters)
    except BaseException:
        if created and counters[0] == 0:  # nothing written yet: leave nothing behind
            log.info("ingest into %r failed before the first slab; removing it", name)
            tracker.clear()
            repo.delete_instance(name)
        raise
    written, nbytes = counters
    tracker.clear()
    seconds = time.perf_counter() - t0
    log.info("ingested %s into %r: %d slabs (%d resumed) in %.1f s", src.description, name,
             written, done, seconds)
    return IngestReport(name=name, source=src.description, shape=src.shape, offset=off,
                        dtype=str(arr.dtype), slabs=len(plan), slabs_written=written,
                        slabs_skipped=done, bytes_written=nbytes, seconds=seconds)


def _run_slabs(src: Source, arr: Any, todo: list[tuple[int, int]], off: tuple[int, ...],
               rest: tuple[slice, ...], tracker: _Progress, base: dict[str, Any], done: int,
               total: int, progress: bool, name: str, counters: list[int]) -> None:
    """Write slabs ``todo`` (array z ranges) reading one slab ahead; ``counters`` receives
    ``[slabs written, bytes written]`` as it goes."""
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="diced-ingest") as pool, \
            tqdm(total=total, initial=done, disable=not progress, unit="slab",
                 desc=f"ingest {name}") as bar:
        nxt: Future[np.ndarray] | None = None
        if todo:
            nxt = pool.submit(src.read, todo[0][0] - off[0], todo[0][1] - off[0])
        for i, (a, b) in enumerate(todo):
            assert nxt is not None
            data = nxt.result()
            nxt = (pool.submit(src.read, todo[i + 1][0] - off[0], todo[i + 1][1] - off[0])
                   if i + 1 < len(todo) else None)
            arr[(slice(a, b), *rest)] = data
            counters[0] += 1
            counters[1] += data.nbytes
            del data
            tracker.save({**base, "done": done + counters[0]})
            bar.update(1)
