"""Ingest volumes into diced: HDF5, TIFF stacks, multi-page TIFF, ``.npy``, zarr and numpy.

:func:`ingest` streams the source in slabs along the first axis (z), each slab a whole number
of chunk rows of the target array, so every slab boundary is a chunk boundary and no chunk is
written twice. Progress is recorded in the repo after every slab, so an interrupted ingest
resumes where it stopped (see :func:`ingest`).

Sources are opened by :func:`open_source`, which returns a small reader with ``shape``,
``dtype``, ``read(z0, z1)`` and an ``identity()`` used to recognise the same source on resume.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from diced.array.grid import check_dtype
from diced.errors import (
    BackendUnavailableError,
    DuplicateNameError,
    FormatError,
    InstanceNotFoundError,
    InvalidArgumentError,
    LockedNodeError,
    NotFoundError,
    ShapeMismatchError,
)

if TYPE_CHECKING:
    from diced.datatypes.keyvalue import KeyValue
    from diced.repo.repo import Repo

log = logging.getLogger(__name__)

__all__ = ["PROGRESS_INSTANCE", "IngestReport", "Source", "ingest", "open_source"]

#: keyvalue instance holding the progress records of unfinished ingests (key: array name)
PROGRESS_INSTANCE = ".ingest"

_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nc")
_TIFF_SUFFIXES = (".tif", ".tiff")


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
        return self.slabs_skipped > 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_written / max(self.seconds, 1e-9) / 1e6


# --- sources -----------------------------------------------------------------------------------

class Source:
    """A volume read in slabs along axis 0. Subclasses set ``shape``, ``dtype`` and
    ``description`` and implement :meth:`read`."""

    shape: tuple[int, ...]
    dtype: np.dtype
    description: str

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Planes ``z0:z1`` as a numpy array of shape ``(z1 - z0, *shape[1:])``."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What identifies this source on resume (JSON-serialisable)."""
        return {"kind": type(self).__name__, "shape": list(self.shape), "dtype": self.dtype.str}

    def close(self) -> None:
        """Release files held open."""

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _file_stamp(path: str) -> dict[str, Any]:
    st = os.stat(path)
    return {"path": os.path.abspath(path), "mtime": st.st_mtime, "size": st.st_size}


class _ArraySource(Source):
    """Any array-like with ``shape``, ``dtype`` and ``__getitem__`` (numpy, zarr, h5py,
    dask...). On resume it is identified by shape and dtype only."""

    def __init__(self, obj: Any, description: str | None = None,
                 identity: dict[str, Any] | None = None) -> None:
        self.obj = obj
        self.shape = tuple(int(s) for s in obj.shape)
        self.dtype = np.dtype(obj.dtype)
        self.description = description or f"{type(obj).__name__} {self.shape} {self.dtype}"
        self._identity = identity

    def read(self, z0: int, z1: int) -> np.ndarray:
        out = np.asarray(self.obj[z0:z1])
        if out.shape != (z1 - z0, *self.shape[1:]):
            raise FormatError(f"{self.description}: planes {z0}:{z1} came back with shape "
                              f"{out.shape}")
        return out

    def identity(self) -> dict[str, Any]:
        base = {"kind": "array", "shape": list(self.shape), "dtype": self.dtype.str}
        return {**base, **(self._identity or {})}


class _HDF5Source(_ArraySource):
    def __init__(self, path: str, dataset: str | None) -> None:
        try:
            import h5py
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise BackendUnavailableError("reading HDF5 needs h5py: pip install h5py") from exc
        try:
            self.file = h5py.File(path, "r")
        except OSError as exc:
            raise FormatError(f"{path}: not a readable HDF5 file ({exc})") from exc
        names: list[str] = []
        self.file.visititems(lambda n, o: names.append("/" + n)
                             if isinstance(o, h5py.Dataset) else None)
        if dataset is None:
            if len(names) != 1:
                self.file.close()
                raise FormatError(f"{path} holds {len(names)} datasets "
                                  f"({', '.join(names[:10]) or 'none'}); choose one with dataset=")
            dataset = names[0]
        ds = self.file.get(dataset)
        if not isinstance(ds, h5py.Dataset):
            self.file.close()
            raise FormatError(f"{path} has no dataset {dataset!r}; it has "
                              f"{', '.join(names[:10]) or 'none'}")
        if ds.ndim == 0 or ds.dtype.kind not in "biufc":
            self.file.close()
            raise FormatError(f"{path}:{dataset} is not a numeric array ({ds.shape} {ds.dtype})")
        super().__init__(ds, f"{path}:{ds.name}",
                         {"kind": "hdf5", "dataset": ds.name, **_file_stamp(path)})

    def close(self) -> None:
        self.file.close()


class _TiffPagesSource(Source):
    """A multi-page TIFF file, one page per z-plane, read page by page."""

    def __init__(self, path: str) -> None:
        tifffile = _tifffile()
        try:
            self.tif = tifffile.TiffFile(path)
            pages = self.tif.pages
            n = len(pages)
            first = pages.first if hasattr(pages, "first") else pages[0]
        except Exception as exc:
            raise FormatError(f"{path}: not a readable TIFF file ({exc})") from exc
        self.path = path
        self.page_shape = tuple(int(s) for s in first.shape)
        self.shape = (n, *self.page_shape)
        self.dtype = np.dtype(first.dtype)
        self.description = f"{path} ({n} pages)"

    def read(self, z0: int, z1: int) -> np.ndarray:
        out = np.empty((z1 - z0, *self.page_shape), dtype=self.dtype)
        for i in range(z0, z1):
            plane = self.tif.pages[i].asarray()
            _check_plane(plane, self.page_shape, self.dtype, f"{self.path} page {i}")
            out[i - z0] = plane
        return out

    def identity(self) -> dict[str, Any]:
        return {"kind": "tiff", **_file_stamp(self.path), "shape": list(self.shape),
                "dtype": self.dtype.str}

    def close(self) -> None:
        self.tif.close()


class _TiffStackSource(Source):
    """A sorted list of single-page TIFF files, one per z-plane."""

    def __init__(self, files: Sequence[str], where: str) -> None:
        tifffile = _tifffile()
        self.files = list(files)
        self.where = where
        try:
            with tifffile.TiffFile(self.files[0]) as tif:
                first = tif.pages[0]
                self.page_shape = tuple(int(s) for s in first.shape)
                self.dtype = np.dtype(first.dtype)
        except Exception as exc:
            raise FormatError(f"{self.files[0]}: not a readable TIFF file ({exc})") from exc
        self.shape = (len(self.files), *self.page_shape)
        self.description = f"{where} ({len(self.files)} TIFF files)"

    def read(self, z0: int, z1: int) -> np.ndarray:
        tifffile = _tifffile()
        out = np.empty((z1 - z0, *self.page_shape), dtype=self.dtype)
        for i in range(z0, z1):
            path = self.files[i]
            try:
                with tifffile.TiffFile(path) as tif:
                    if len(tif.pages) != 1:
                        raise FormatError(f"{path} has {len(tif.pages)} pages; a TIFF stack "
                                          "holds one plane per file (give a multi-page TIFF "
                                          "as a single file instead)")
                    plane = tif.pages[0].asarray()
            except FormatError:
                raise
            except Exception as exc:
                raise FormatError(f"{path}: not a readable TIFF file ({exc})") from exc
            _check_plane(plane, self.page_shape, self.dtype, path)
            out[i - z0] = plane
        return out

    def identity(self) -> dict[str, Any]:
        last = os.stat(self.files[-1])
        return {"kind": "tiff-stack", "path": os.path.abspath(self.where),
                "files": len(self.files), "first": os.path.basename(self.files[0]),
                "last": os.path.basename(self.files[-1]), "mtime": last.st_mtime,
                "shape": list(self.shape), "dtype": self.dtype.str}


def _check_plane(plane: np.ndarray, shape: tuple[int, ...], dtype: np.dtype, what: str) -> None:
    if plane.shape != shape or plane.dtype != dtype:
        raise FormatError(f"{what}: plane is {plane.shape} {plane.dtype}, but the first plane "
                          f"is {shape} {dtype}; all planes must match")


def _tifffile() -> Any:
    try:
        import tifffile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError("reading TIFF needs tifffile: pip install tifffile") from exc
    return tifffile


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``z2.tif`` before ``z10.tif``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _zarr_source(location: str, storage_options: dict[str, Any] | None = None) -> Source:
    import zarr

    try:
        node = zarr.open(location, mode="r", storage_options=storage_options)
    except Exception as exc:
        raise FormatError(f"{location}: not a readable zarr array or group ({exc})") from exc
    if isinstance(node, zarr.Group):
        path = _group_level0(node, location)
        node = node[path]
        location = f"{location.rstrip('/')}/{path}"
    return _ArraySource(node, location, {"kind": "zarr", "path": location})


def _group_level0(group: Any, location: str) -> str:
    """Path of the full-resolution array of a zarr group (OME-Zarr multiscales or ``"0"``)."""
    attrs = dict(group.attrs)
    ms = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")
    if ms:
        try:
            return str(ms[0]["datasets"][0]["path"])
        except (KeyError, IndexError, TypeError) as exc:
            raise FormatError(f"{location}: malformed OME-Zarr multiscales metadata") from exc
    arrays = sorted(name for name, _ in group.arrays())
    if "0" in arrays:
        return "0"
    if len(arrays) == 1:
        return arrays[0]
    raise FormatError(f"{location} is a zarr group with arrays {arrays}; give the path of one")


def open_source(source: Any, dataset: str | None = None) -> Source:
    """A :class:`Source` for a path, URL, glob, or array-like.

    Parameters
    ----------
    source
        * a :class:`Source` (returned as is);
        * an array-like with ``shape``, ``dtype`` and ``__getitem__`` (numpy, zarr, h5py
          dataset, dask array...);
        * ``*.h5`` / ``*.hdf5`` / ``*.hdf`` path (give ``dataset`` unless the file holds
          exactly one dataset);
        * ``*.npy`` path (memory-mapped);
        * ``*.tif`` / ``*.tiff`` path: a multi-page TIFF, one page per z-plane;
        * a directory of single-page TIFFs, or a glob such as ``"/data/z*.tif"`` (files
          sorted naturally, one z-plane each);
        * a zarr array or group: a directory holding ``zarr.json`` (or ``.zarray``), or a URL
          (``memory://``, ``gs://``...). For a group, the OME-Zarr level-0 array is read.
    dataset
        HDF5 dataset path, e.g. ``"/volumes/raw"``.

    Raises
    ------
    NotFoundError
        The path does not exist or a glob matches nothing.
    FormatError
        The source cannot be read as any of the formats above.
    """
    if isinstance(source, Source):
        return source
    if not isinstance(source, (str, os.PathLike)):
        try:
            import h5py

            if isinstance(source, h5py.Dataset):
                fn = source.file.filename
                return _ArraySource(source, f"{fn}:{source.name}",
                                    {"kind": "hdf5", "dataset": source.name, **_file_stamp(fn)})
        except ImportError:  # pragma: no cover
            pass
        if all(hasattr(source, a) for a in ("shape", "dtype", "__getitem__")):
            if len(getattr(source, "shape", ())) == 0:
                raise FormatError("cannot ingest a 0-d array")
            return _ArraySource(source)
        raise FormatError(f"cannot ingest a {type(source).__name__}: give a path, URL, glob or "
                          "an array with shape, dtype and slicing")
    text = os.fspath(source)
    if "://" in text and not text.startswith("file://"):
        return _zarr_source(text)
    text = text.removeprefix("file://")
    if any(c in text for c in "*?["):
        files = sorted(glob.glob(text), key=natural_key)
        if not files:
            raise NotFoundError(f"no files match {text!r}")
        return _TiffStackSource(files, text)
    if not os.path.exists(text):
        raise NotFoundError(f"source {text!r} does not exist")
    if os.path.isdir(text):
        entries = os.listdir(text)
        if {"zarr.json", ".zarray", ".zgroup"} & set(entries):
            return _zarr_source(text)
        files = sorted((os.path.join(text, e) for e in entries
                        if e.lower().endswith(_TIFF_SUFFIXES)), key=natural_key)
        if not files:
            raise FormatError(f"{text} is a directory with neither zarr metadata nor TIFF files")
        return _TiffStackSource(files, text)
    lower = text.lower()
    if lower.endswith(".npy"):
        try:
            arr = np.load(text, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise FormatError(f"{text}: not a readable .npy file ({exc})") from exc
        if arr.ndim == 0:
            raise FormatError(f"{text} holds a 0-d array")
        return _ArraySource(arr, text, {"kind": "npy", **_file_stamp(text)})
    if lower.endswith(_TIFF_SUFFIXES):
        return _TiffPagesSource(text)
    if lower.endswith(_HDF5_SUFFIXES) or _is_hdf5(text):
        return _HDF5Source(text, dataset)
    raise FormatError(f"{text}: unrecognised source format (expected HDF5, .npy, TIFF, a TIFF "
                      "directory or glob, or zarr)")


def _is_hdf5(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


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
    offset : sequence of int, optional
        Index in the array where the source's first voxel goes (default: all zeros).
    create : bool
        Create the array with shape ``source.shape + offset`` (``True``, the default), or
        write into an existing array that is large enough (``False``).
    dtype : dtype, optional
        dtype of a created array (default: the source's). Values must convert without loss.
    labels : bool
        Create a :class:`~diced.array.labels.LabelArray` (uint64, label index) instead of an
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
        Bad offset or slab; a recorded unfinished ingest of ``name`` came from another
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
    src = open_source(source, dataset)
    try:
        return _ingest(src, repo, name, offset, create, dtype, labels, slab, chunks, max_scale,
                       fill_value, progress, resume, t0)
    finally:
        if src is not source:
            src.close()


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
