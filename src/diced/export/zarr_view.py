"""A read-only zarr v3 store that serves one version of a diced array, decoded on demand.

``xarray.open_zarr(zarr_store(arr))`` gives a dataset with one variable named after the
array (dimensions ``z, y, x``); ``zarr.open_group(zarr_store(arr), mode="r")[arr.name]`` a
zarr array; ``dask.array.from_zarr(zarr_store(arr), component=arr.name)`` a dask array; none
copies anything to disk. ``zarr_store(arr, group=False)`` serves the bare array at the root
instead (``zarr.open_array(store=zarr_store(arr, group=False), mode="r")``).

By default (``group=True``) the root is a zarr group, with the array's metadata also
consolidated into the group's ``zarr.json`` (zarr-python's inline consolidated metadata, so
xarray opens it without falling back or warning), and the array under its name
(``<name>/zarr.json``, ``<name>/c/...``). The array keys are:

* ``zarr.json``: zarr v3 array metadata (shape, ``data_type``, a regular chunk grid with the
  array's chunks, the default ``"/"`` chunk key encoding, the fill value, and a single
  ``bytes`` codec, little endian). Attributes carry the diced provenance (repo, array,
  version, scale, origin).
* ``c/<i>/<j>/...``: one per *stored* chunk of that version, whose value is the decoded chunk
  as raw little-endian C-order bytes (full chunk shape, as zarr expects for edge chunks).
  Chunks that are not stored are absent, so zarr fills them with the fill value.

The view is pinned to one version. Label arrays are served as body ids (the supervoxel →
body mapping, read once when the view is made, is applied) unless ``supervoxels=True``.
For an *open* version, chunk data written after the view was made is seen, but the shape,
the set of listed chunks and the label mapping are those of the moment the view was made;
make a new view to see them change. Views of locked versions never change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)

from diced.errors import InvalidArgumentError

if TYPE_CHECKING:
    from zarr.core.buffer import Buffer, BufferPrototype

    from diced.datatypes.array.array import VersionedArray
    from diced.repo.repo import Version

log = logging.getLogger(__name__)

__all__ = ["DicedZarrStore", "json_fill_value", "zarr_array_metadata", "zarr_store"]

_META = "zarr.json"


def json_fill_value(value: Any, dtype: np.dtype) -> Any:
    """A fill value in zarr v3 JSON form (``"NaN"``, ``"Infinity"``, ``[re, im]``...)."""
    def real(x: float) -> Any:
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "Infinity" if x > 0 else "-Infinity"
        return x

    if dtype.kind == "b":
        return bool(value)
    if dtype.kind in "iu":
        return int(value)
    if dtype.kind == "f":
        return real(float(value))
    if dtype.kind == "c":
        c = complex(value)
        return [real(c.real), real(c.imag)]
    raise InvalidArgumentError(f"no zarr v3 fill value for dtype {dtype}")


def zarr_array_metadata(shape: Iterable[int], dtype: np.dtype, chunks: Iterable[int],
                        fill_value: Any, attributes: dict[str, Any] | None = None
                        ) -> dict[str, Any]:
    """zarr v3 array metadata (``zarr.json``) for uncompressed little-endian chunks."""
    shape = [int(s) for s in shape]
    meta: dict[str, Any] = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": np.dtype(dtype).name,
        "chunk_grid": {"name": "regular",
                       "configuration": {"chunk_shape": [int(c) for c in chunks]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": json_fill_value(fill_value, np.dtype(dtype)),
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": dict(attributes or {}),
    }
    meta["dimension_names"] = (["z", "y", "x"][-len(shape):] if len(shape) <= 3
                               else [f"dim_{i}" for i in range(len(shape))])
    return meta


def _slice_bytes(data: bytes, byte_range: ByteRequest | None) -> bytes:
    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start:byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset:]
    if isinstance(byte_range, SuffixByteRequest):
        return data[len(data) - byte_range.suffix:] if byte_range.suffix else b""
    raise InvalidArgumentError(f"unsupported byte range {byte_range!r}")


class DicedZarrStore(Store):
    """Read-only zarr v3 store over one version (and pyramid level) of a diced array.

    Parameters
    ----------
    array : VersionedArray or LabelArray
        The array. The view is pinned to ``version`` (default: the version the handle
        reads now).
    version : str or Version, optional
        UUID (or unique prefix, ``branch~N``) of the version to serve.
    scale : int
        Pyramid level to serve (``0..array.max_scale``).
    supervoxels : bool
        Label arrays: serve supervoxel ids instead of body ids.
    group : bool, default True
        Serve a group at the root holding the array under its name, with consolidated
        metadata (what ``xarray.open_zarr`` and ``zarr.open_group`` open); ``False`` serves the
        bare array at the root (what ``zarr.open_array`` opens).

    Examples
    --------
    >>> ds = xarray.open_zarr(DicedZarrStore(arr))  # doctest: +SKIP
    >>> z = zarr.open_array(store=DicedZarrStore(arr, group=False), mode="r")  # doctest: +SKIP
    >>> dask.array.from_zarr(z).mean().compute()  # doctest: +SKIP
    """

    supports_writes: bool = False
    supports_deletes: bool = False
    supports_listing: bool = True

    def __init__(self, array: VersionedArray, *, version: str | Version | None = None,
                 scale: int = 0, supervoxels: bool = False, group: bool = True) -> None:
        super().__init__(read_only=True)
        from diced.datatypes.labels.labels import LabelArray

        base = array.at(version if version is not None else array.version.uuid)
        self._array = base.scale(scale)
        self._scale = int(scale)
        self._supervoxels = bool(supervoxels)
        self._is_labels = isinstance(base, LabelArray)
        self._ctx = self._array._ref.ctx()
        self.shape: tuple[int, ...] = self._array.shape
        self.chunks: tuple[int, ...] = self._array.chunks
        self.dtype: np.dtype = self._array.dtype
        self._grid = tuple(-(-s // c) for s, c in zip(self.shape, self.chunks, strict=True))
        self._mapping: tuple[np.ndarray, np.ndarray] | None = None
        if self._is_labels and not self._supervoxels:
            self._mapping = self._array._mapping_table(self._ctx)
        self._stored: set[tuple[int, ...]] | None = None
        attrs = {"diced": {"repo": base.repo.alias, "array": base.name,
                           "version": self._ctx.uuid, "scale": self._scale,
                           "origin": [o // (1 << self._scale) for o in base.origin],
                           "type": base.typename,
                           "supervoxels": self._supervoxels if self._is_labels else None}}
        meta = zarr_array_metadata(self.shape, self.dtype, self.chunks, self._array.fill_value,
                                   attrs)
        self._meta_bytes = json.dumps(meta, indent=2).encode()
        self._group = bool(group)
        self._prefix = f"{base.name}/" if group else ""
        self._group_bytes = json.dumps({
            "zarr_format": 3, "node_type": "group", "attributes": attrs,
            "consolidated_metadata": {"kind": "inline", "must_understand": False,
                                      "metadata": {base.name: meta}}}, indent=2).encode()
        self._chunk_nbytes = int(np.prod(self.chunks)) * self.dtype.itemsize

    # --- identity -------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """UUID of the version this view serves."""
        return self._ctx.uuid

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, DicedZarrStore)
                and other._array.repo.uuid == self._array.repo.uuid
                and other._array.name == self._array.name and other._ctx.vid == self._ctx.vid
                and other._scale == self._scale and other._supervoxels == self._supervoxels
                and other._group == self._group)

    def __hash__(self) -> int:
        return hash((self._array.repo.uuid, self._array.name, self._ctx.vid, self._scale))

    def __repr__(self) -> str:
        return (f"DicedZarrStore({self._array.name!r}, version={self._ctx.uuid[:12]}, "
                f"scale={self._scale})")

    def with_read_only(self, read_only: bool = False) -> DicedZarrStore:
        if not read_only:
            raise InvalidArgumentError("a DicedZarrStore is read-only; write through diced")
        return self

    # --- keys -----------------------------------------------------------------------------

    def _meta_for(self, key: str) -> bytes | None:
        if key == _META:
            return self._group_bytes if self._group else self._meta_bytes
        if self._group and key == self._prefix + _META:
            return self._meta_bytes
        return None

    def _coords(self, key: str) -> tuple[int, ...] | None:
        if not key.startswith(self._prefix):
            return None
        parts = key[len(self._prefix):].split("/")
        if len(parts) != len(self.chunks) + 1 or parts[0] != "c":
            return None
        try:
            coords = tuple(int(p) for p in parts[1:])
        except ValueError:
            return None
        if any(str(c) != p for c, p in zip(coords, parts[1:], strict=True)):
            return None
        if any(not 0 <= c < g for c, g in zip(coords, self._grid, strict=True)):
            return None
        return coords

    def stored(self) -> set[tuple[int, ...]]:
        """Grid coordinates of the stored chunks (read once, then cached)."""
        if self._stored is None:
            self._stored = {c for c in self._array.stored_chunks()
                            if all(0 <= x < g for x, g in zip(c, self._grid, strict=True))}
        return self._stored

    def _keys(self) -> list[str]:
        chunk_keys = [self._prefix + "c/" + "/".join(str(x) for x in c)
                      for c in sorted(self.stored())]
        if self._group:
            return [_META, self._prefix + _META, *chunk_keys]
        return [_META, *chunk_keys]

    # --- sync reads -----------------------------------------------------------------------

    def get_value(self, key: str) -> bytes | None:
        """The bytes of ``key`` (``None`` if absent), decoding a chunk on demand."""
        meta = self._meta_for(key)
        if meta is not None:
            return meta
        coords = self._coords(key)
        if coords is None:
            return None
        chunk = self._array.read_chunks([coords])[0]
        if chunk is None:
            return None
        if self._mapping is not None and len(self._mapping[0]):
            from diced.array.labelstats import relabel_inplace

            chunk = np.array(chunk, dtype=np.uint64, copy=True)
            relabel_inplace(chunk, *self._mapping)
        return np.ascontiguousarray(chunk, dtype=self.dtype.newbyteorder("<")).tobytes()

    # --- zarr Store API -------------------------------------------------------------------

    async def get(self, key: str, prototype: BufferPrototype | None = None,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        if prototype is None:
            from zarr.core.buffer.core import default_buffer_prototype

            prototype = default_buffer_prototype()
        data = self._meta_for(key)
        if data is None:
            data = await asyncio.to_thread(self.get_value, key)
        if data is None:
            return None
        return prototype.buffer.from_bytes(_slice_bytes(data, byte_range))

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]
                                 ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        if self._meta_for(key) is not None:
            return True
        coords = self._coords(key)
        return coords is not None and coords in self.stored()

    async def getsize(self, key: str) -> int:
        meta = self._meta_for(key)
        if meta is not None:
            return len(meta)
        if await self.exists(key):
            return self._chunk_nbytes
        raise FileNotFoundError(key)

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def delete(self, key: str) -> None:
        self._check_writable()

    async def list(self) -> AsyncIterator[str]:
        for key in self._keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in self._keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        seen: set[str] = set()
        for key in self._keys():
            if prefix:
                if not key.startswith(prefix + "/"):
                    continue
                rest = key[len(prefix) + 1:]
            else:
                rest = key
            head = rest.split("/", 1)[0]
            if head not in seen:
                seen.add(head)
                yield head


def zarr_store(array: VersionedArray, *, version: str | Version | None = None, scale: int = 0,
               supervoxels: bool = False, group: bool = True) -> DicedZarrStore:
    """A read-only zarr v3 store view of ``array`` at ``version`` (see :class:`DicedZarrStore`).

    Parameters
    ----------
    array : VersionedArray or LabelArray
        The array.
    version : str or Version, optional
        Version to serve (default: the one the handle reads now).
    scale : int
        Pyramid level.
    supervoxels : bool
        Label arrays: serve supervoxel ids instead of body ids.
    group : bool, default True
        Root is a group holding the array under its name (xarray, ``zarr.open_group``);
        ``False``: the bare array (``zarr.open_array``).

    Returns
    -------
    DicedZarrStore

    Examples
    --------
    >>> ds = xarray.open_zarr(zarr_store(arr))  # doctest: +SKIP
    >>> z = zarr.open_array(store=zarr_store(arr, group=False), mode="r")  # doctest: +SKIP
    """
    return DicedZarrStore(array, version=version, scale=scale, supervoxels=supervoxels,
                          group=group)
