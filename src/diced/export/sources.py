"""Sources for :func:`diced.export.ingest.ingest`: HDF5, TIFF stacks, multi-page TIFF, ``.npy``,
zarr and array-likes.

:func:`open_source` returns a small reader with ``shape``, ``dtype``, ``read(z0, z1)`` and an
``identity()`` used to recognise the same source on resume. :mod:`diced.export.ingest`
re-exports :class:`Source`, :func:`open_source` and :func:`natural_key`.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from diced.errors import BackendUnavailableError, FormatError, NotFoundError

__all__ = ["AXES", "Source", "natural_key", "open_source", "with_axes"]

#: the axis letters ingest understands, in diced's array order (time, channel, z, y, x)
AXES = "tczyx"

_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nc")
_TIFF_SUFFIXES = (".tif", ".tiff")


class Source:
    """A volume read in slabs along axis 0. Subclasses set ``shape``, ``dtype`` and
    ``description`` and implement :meth:`read`; ``axes`` is the axis order the source
    declares in its own metadata (e.g. OME-Zarr axes), ``None`` when it declares none."""

    shape: tuple[int, ...]
    dtype: np.dtype
    description: str
    axes: str | None = None

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Planes ``z0:z1`` as a numpy array of shape ``(z1 - z0, *shape[1:])``."""
        raise NotImplementedError

    def read_along(self, axis: int, a: int, b: int) -> np.ndarray:
        """Indices ``a:b`` of ``axis`` (all of every other axis).

        The default reads the source slab by slab along axis 0 and keeps ``a:b`` of
        ``axis`` from each, so memory stays one source slab plus the result; array-like
        sources slice directly.
        """
        if axis == 0:
            return self.read(a, b)
        shape = list(self.shape)
        shape[axis] = b - a
        out = np.empty(shape, dtype=self.dtype)
        step = max(1, (64 << 20) // max(1, self.nbytes // max(self.shape[0], 1)))
        sel: list[slice] = [slice(None)] * len(self.shape)
        sel[axis] = slice(a, b)
        for z0 in range(0, self.shape[0], step):
            z1 = min(self.shape[0], z0 + step)
            out[z0:z1] = self.read(z0, z1)[tuple(sel)]
        return out

    def identity(self) -> dict[str, Any]:
        """What identifies this source on resume (JSON-serialisable)."""
        return {"kind": type(self).__name__, "shape": list(self.shape), "dtype": self.dtype.str}

    def close(self) -> None:
        """Release files held open."""

    @property
    def nbytes(self) -> int:
        """Bytes of the whole source in memory."""
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

    def read_along(self, axis: int, a: int, b: int) -> np.ndarray:
        sel = (slice(None),) * axis + (slice(a, b),)
        out = np.asarray(self.obj[sel])
        want = (*self.shape[:axis], b - a, *self.shape[axis + 1:])
        if out.shape != want:
            raise FormatError(f"{self.description}: axis {axis} {a}:{b} came back with shape "
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
    declared = None
    if isinstance(node, zarr.Group):
        declared = _ome_axes(dict(node.attrs))
        path = _group_level0(node, location)
        node = node[path]
        location = f"{location.rstrip('/')}/{path}"
    src = _ArraySource(node, location, {"kind": "zarr", "path": location})
    names = getattr(getattr(node, "metadata", None), "dimension_names", None)
    if declared is None and names and all(isinstance(n, str) and n for n in names):
        declared = "".join(n.lower() for n in names)
    if declared is not None and len(declared) == len(src.shape) and set(declared) <= set(AXES):
        src.axes = declared
    return src


def _ome_axes(attrs: dict[str, Any]) -> str | None:
    ms = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")
    try:
        names = [str(a["name"] if isinstance(a, dict) else a).lower() for a in ms[0]["axes"]]
    except (KeyError, IndexError, TypeError):
        return None
    return "".join(names) if all(len(n) == 1 for n in names) else None


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


class _AxesSource(Source):
    """A source whose axes are reordered to diced's ``t, c, z, y, x`` order on read."""

    def __init__(self, inner: Source, axes: str, perm: tuple[int, ...]) -> None:
        self.inner, self.perm = inner, perm
        self.shape = tuple(inner.shape[p] for p in perm)
        self.dtype = inner.dtype
        target = "".join(axes[p] for p in perm)
        self.axes = target
        self.source_axes = axes
        self.description = f"{inner.description} (axes {axes} -> {target})"

    def read(self, z0: int, z1: int) -> np.ndarray:
        data = self.inner.read_along(self.perm[0], z0, z1)
        return np.ascontiguousarray(data.transpose(self.perm))

    def identity(self) -> dict[str, Any]:
        return {**self.inner.identity(), "axes": self.source_axes}

    def close(self) -> None:
        self.inner.close()


def with_axes(src: Source, axes: str | None) -> Source:
    """``src`` read in diced's axis order, given the source's axis order ``axes``.

    Parameters
    ----------
    src : Source
        The source, in its own axis order.
    axes : str, optional
        One letter per source axis from ``t, c, z, y, x`` (each at most once), in the
        source's order: ``"zyx"`` (diced's own order), ``"xyz"`` (e.g. a Fortran-minded
        exporter's ``[x, y, z]`` array), ``"czyx"``, ``"zyxc"``, ``"yx"``... The result's
        axes are those letters in ``t, c, z, y, x`` order. ``None``: the axes the source
        declares (OME-Zarr ``axes``, zarr ``dimension_names``), else the source's order as
        is (its first axis becomes z for a 3-D source).

    Raises
    ------
    InvalidArgumentError
        ``axes`` has repeated or unknown letters, or not one per source axis; or it
        contradicts the axes the source declares.
    """
    from diced.errors import InvalidArgumentError

    if axes is None:
        axes = src.axes
        if axes is None:
            return src
    text = str(axes).strip().lower()
    if (len(text) != len(src.shape) or len(set(text)) != len(text)
            or not set(text) <= set(AXES)):
        raise InvalidArgumentError(
            f"axes={axes!r} must name each of the source's {len(src.shape)} axes once with "
            f"letters from {AXES!r} (e.g. 'zyx', 'xyz', 'czyx'); {src.description} has shape "
            f"{src.shape}")
    if src.axes is not None and src.axes != text:
        raise InvalidArgumentError(
            f"{src.description} declares axes {src.axes!r}, not {text!r}; leave axes unset "
            "to use the declared order")
    perm = tuple(sorted(range(len(text)), key=lambda i: AXES.index(text[i])))
    if perm == tuple(range(len(text))):
        src.axes = text
        return src
    return _AxesSource(src, text, perm)
