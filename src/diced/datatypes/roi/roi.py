"""ROI: a region of interest as DVID's ``roi`` datatype keeps it, versioned.

Storage: one key per plane of blocks ``z`` (a biased 8-hex-digit number, so keys sort by
z), holding that plane's normal-form spans as little-endian int32 ``(y, x0, x1)`` triples
(a few KB for a brain-region ROI). A point query reads only the planes its points fall in;
a box mask reads one key range; merges compare and conflict per plane.

Coordinates: points and boxes are voxel ``(x, y, z)``, as in DVID's ``ptquery`` and the
annotation datatype; spans are ``[z, y, x0, x1]`` in ROI blocks; masks are ``(z, y, x)``
arrays, as label arrays index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from diced.datatypes.roi import spans as S
from diced.errors import InvalidArgumentError, LockedNodeError

if TYPE_CHECKING:
    from diced.repo.context import InstanceContext
    from diced.repo.repo import Version
    from diced.repo.resolve import VersionCtx

__all__ = ["ROI", "parse_plane_ckey", "plane_ckey"]

_BIAS = 1 << 31
#: write at most this many row keys per backend transaction
_WRITE_BATCH = 4096


def plane_ckey(z: int) -> str:
    """Key of the block plane ``z``."""
    return f"{int(z) + _BIAS:08x}"


def parse_plane_ckey(ckey: str) -> int:
    """``z`` of a plane key (inverse of :func:`plane_ckey`)."""
    return int(ckey[:8], 16) - _BIAS


def _encode_planes(spans: np.ndarray) -> dict[str, bytes]:
    """Normal-form spans -> ``{plane key: int32 (y, x0, x1) triples}``."""
    if not len(spans):
        return {}
    cut = np.nonzero(spans[1:, 0] != spans[:-1, 0])[0] + 1
    return {plane_ckey(part[0, 0]): part[:, 1:].astype("<i4").tobytes()
            for part in np.split(spans, cut)}


def _decode_planes(keys: Sequence[str], values: Sequence[bytes | None]) -> np.ndarray:
    zs, parts = [], []
    for k, v in zip(keys, values, strict=True):
        if v:
            parts.append(np.frombuffer(v, dtype="<i4").reshape(-1, 3))
            zs.append(np.full(len(parts[-1]), parse_plane_ckey(k), np.int64))
    if not parts:
        return np.zeros((0, 4), np.int64)
    out = np.empty((sum(len(p) for p in parts), 4), np.int64)
    out[:, 0] = np.concatenate(zs)
    out[:, 1:] = np.concatenate(parts)
    return out


def _points(points: Any, what: str = "points") -> np.ndarray:
    arr = np.asarray(points)
    if arr.dtype == object or arr.dtype.kind not in "iuf" or arr.ndim != 2 or arr.shape[1] != 3:
        if arr.ndim == 1 and arr.shape == (0,):
            return np.zeros((0, 3), np.int64)
        raise InvalidArgumentError(f"{what} must be an (n, 3) array of [x, y, z], got shape "
                                   f"{arr.shape} of {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InvalidArgumentError(f"{what} must be finite")
        arr = np.floor(arr)
    return arr.astype(np.int64)


def _box(lo: Sequence[int], hi: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    try:
        a = np.array([int(v) for v in lo], np.int64)
        b = np.array([int(v) for v in hi], np.int64)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"a box is lo=[x, y, z], hi=[x, y, z], got {lo!r}, {hi!r}"
                                   ) from None
    if a.shape != (3,) or b.shape != (3,):
        raise InvalidArgumentError(f"a box is lo=[x, y, z], hi=[x, y, z], got {lo!r}, {hi!r}")
    if np.any(b < a):
        raise InvalidArgumentError(f"box hi {b.tolist()} is below lo {a.tolist()}")
    return a, b


class ROI:
    """A region of interest at one version (the repo head, or pinned): a set of blocks of
    ``block_size`` voxels (default 32, DVID's), stored as spans ``[z, y, x0, x1]``.

    Obtain one with ``repo.create_instance(name, "roi")`` or ``repo[name]``.
    """

    typename = "roi"

    def __init__(self, context: InstanceContext) -> None:
        self.repo, self.name = context.repo, context.name
        self._ref = context
        self._space = context.space()
        #: block size ``(x, y, z)`` in voxels
        self.block_size: tuple[int, int, int] = tuple(context.config["block_size"])  # type: ignore[assignment]
        self._locked: dict[int, np.ndarray] = {}

    # --- description ---------------------------------------------------------------------------

    @property
    def version(self) -> Version:
        """The version this handle reads now."""
        return self._ref.version()

    def at(self, version: Any) -> ROI:
        """The same ROI pinned to another version."""
        return self._ref.open_at(version)

    def __repr__(self) -> str:
        return f"<ROI {self.name!r} block_size={self.block_size} version={self._ref.ctx().uuid[:8]}>"

    def _writable(self) -> VersionCtx:
        ctx = self._ref.ctx()
        if ctx.locked:
            raise LockedNodeError(f"version {ctx.uuid} is locked: {self.name!r} is read-only there")
        return ctx

    # --- spans ---------------------------------------------------------------------------------

    def get(self) -> np.ndarray:
        """Every span, ``(n, 4)`` int64 ``[z, y, x0, x1]`` (x1 inclusive) in normal form
        (sorted by z, y, x0; touching spans merged). DVID's GET ``roi``."""
        return self._all(self._ref.ctx()).copy()

    spans = get

    def _all(self, ctx: VersionCtx) -> np.ndarray:
        """Every span at ``ctx``; kept per handle for locked versions (which never change)."""
        hit = self._locked.get(ctx.vid) if ctx.locked else None
        if hit is not None:
            return hit
        keys = self._space.live_keys(ctx)
        spans = _decode_planes(keys, self._space.read_many(keys, ctx))
        if ctx.locked:
            spans.setflags(write=False)
            self._locked = {ctx.vid: spans}  # the newest locked version read
        return spans

    def to_json(self) -> list[list[int]]:
        """The spans as DVID's JSON list."""
        return self.get().tolist()

    def _planes(self, ctx: VersionCtx, z0: int, z1: int) -> np.ndarray:
        """Spans of the planes ``z0 <= z < z1`` (one key range)."""
        if ctx.locked and ctx.vid in self._locked:
            s = self._locked[ctx.vid]
            return s[(s[:, 0] >= z0) & (s[:, 0] < z1)]
        keys = self._space.live_keys(ctx, plane_ckey(z0), plane_ckey(z1))
        return _decode_planes(keys, self._space.read_many(keys, ctx))

    def put(self, spans: Any) -> None:
        """Replace the ROI with ``spans`` (DVID's POST ``roi``: ``[[z, y, x0, x1], ...]``,
        x1 inclusive). Spans are validated first (``x1 < x0`` is an error, as in DVID); then
        stored in normal form, planes no longer present deleted, in batches of 4096 planes."""
        new = _encode_planes(S.normalize(spans))
        ctx = self._writable()
        old = self._space.live_keys(ctx)
        items: dict[str, bytes | None] = {k: None for k in old if k not in new}
        items.update(new)
        self._write(ctx, items)

    replace = put

    def _write(self, ctx: VersionCtx, items: dict[str, bytes | None]) -> None:
        keys = list(items)
        for i in range(0, len(keys), _WRITE_BATCH):
            part = {k: items[k] for k in keys[i:i + _WRITE_BATCH]}
            self._space.write(ctx, part)

    def add(self, spans: Any) -> None:
        """Add blocks (union with ``spans``), rewriting only the planes they touch."""
        s = S.normalize(spans)
        if not len(s):
            return
        ctx = self._writable()
        keys = [plane_ckey(z) for z in np.unique(s[:, 0]).tolist()]
        cur = _decode_planes(keys, self._space.read_many(keys, ctx))
        self._write(ctx, dict(_encode_planes(S.union(cur, s))))

    def delete(self) -> None:
        """Delete every span at this version (DVID's DELETE ``roi``)."""
        ctx = self._writable()
        self._write(ctx, dict.fromkeys(self._space.live_keys(ctx)))

    def __len__(self) -> int:
        """Number of blocks in the ROI."""
        s = self.get()
        return int((s[:, 3] - s[:, 2] + 1).sum())

    def bounds(self) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
        """Voxel box ``(lo, hi)`` (x, y, z; hi exclusive) of the ROI's blocks, or ``None``."""
        s = self.get()
        if not len(s):
            return None
        bx, by, bz = self.block_size
        lo = (int(s[:, 2].min()) * bx, int(s[:, 1].min()) * by, int(s[:, 0].min()) * bz)
        hi = ((int(s[:, 3].max()) + 1) * bx, (int(s[:, 1].max()) + 1) * by,
              (int(s[:, 0].max()) + 1) * bz)
        return lo, hi

    # --- queries -------------------------------------------------------------------------------

    def contains(self, points: Any) -> np.ndarray:
        """Whether each voxel point ``[x, y, z]`` lies in the ROI (boolean array).

        Reads only the block planes the points fall in (at a locked version, the whole ROI
        once per handle, kept for the next calls); the test itself is a numba kernel over
        the planes' spans. Float coordinates are floored.

        Parameters
        ----------
        points : array-like, shape (n, 3)

        Returns
        -------
        numpy.ndarray of bool, shape (n,)
        """
        pts = _points(points)
        if not len(pts):
            return np.zeros(0, bool)
        ctx = self._ref.ctx()
        if ctx.locked:
            spans = self._all(ctx)
        else:
            zs = np.unique(pts[:, 2] // self.block_size[2])
            keys = [plane_ckey(z) for z in zs.tolist()]
            spans = _decode_planes(keys, self._space.read_many(keys, ctx))
        return S.contains_points(spans, pts, self.block_size)

    def ptquery(self, points: Any) -> list[bool]:
        """DVID's POST ``ptquery``: ``[[x, y, z], ...]`` -> ``[true, false, ...]``."""
        return self.contains(points).tolist()

    def mask(self, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        """Voxel mask of the box ``lo <= (x, y, z) < hi``: a boolean ``(z, y, x)`` array, True
        inside the ROI (DVID's ``mask/0_1_2/<size>/<offset>`` with ``offset=lo``,
        ``size=hi-lo``, as bool instead of u8).

        Reads the planes of the box's blocks only (one key range).
        """
        a, b = _box(lo, hi)
        bs = np.array(self.block_size, np.int64)  # x, y, z
        shape = (int(b[2] - a[2]), int(b[1] - a[1]), int(b[0] - a[0]))
        if 0 in shape:
            return np.zeros(shape, bool)
        blo = a // bs
        bhi = (b - 1) // bs + 1
        ctx = self._ref.ctx()
        spans = self._planes(ctx, int(blo[2]), int(bhi[2]))
        bm = S.block_mask(spans, (blo[2], blo[1], blo[0]), (bhi[2], bhi[1], bhi[0]))
        # voxels per block along each axis (partial blocks at the box faces); np.repeat
        # copies runs, so the expansion is memory-bandwidth bound
        counts = [np.minimum(b[i], (np.arange(blo[i], bhi[i]) + 1) * bs[i])
                  - np.maximum(a[i], np.arange(blo[i], bhi[i]) * bs[i]) for i in range(3)]
        return bm.repeat(counts[0], axis=2).repeat(counts[1], axis=1).repeat(counts[2], axis=0)

    def mask_zyx(self, box: Sequence[Sequence[int]]) -> np.ndarray:
        """:meth:`mask` for a ``(z, y, x)`` box ``[[z0, y0, x0], [z1, y1, x1]]`` (hi exclusive),
        as label arrays index."""
        (z0, y0, x0), (z1, y1, x1) = box
        return self.mask((x0, y0, z0), (x1, y1, z1))

    def partition(self, batchsize: int = 8) -> dict[str, Any]:
        """DVID's GET ``partition?batchsize=N``: subvolumes of ``N``³ blocks covering the ROI
        (see :func:`diced.datatypes.roi.spans.partition` for the layout and JSON)."""
        if isinstance(batchsize, bool) or not isinstance(batchsize, (int, np.integer)) \
                or batchsize < 1:
            raise InvalidArgumentError(f"batchsize must be a positive integer, got {batchsize!r}")
        return S.partition(self.get(), int(batchsize), self.block_size)

    # --- set operations ------------------------------------------------------------------------

    def _other(self, other: Any) -> np.ndarray:
        if isinstance(other, ROI):
            if other.block_size != self.block_size:
                raise InvalidArgumentError(
                    f"ROI {other.name!r} has block size {other.block_size}, {self.name!r} has "
                    f"{self.block_size}; set operations need equal block sizes")
            return other.get()
        if isinstance(other, str):
            return self._other(self._ref.instance(other))
        return S.normalize(other)

    def _result(self, spans: np.ndarray, name: str | None) -> Any:
        if name is None:
            return spans
        bx, by, bz = self.block_size
        out = self.repo.create_instance(name, "roi", block_size=[bx, by, bz])
        out.put(spans)
        return out

    def union(self, other: Any, *, name: str | None = None) -> Any:
        """Blocks in this ROI or ``other`` (an ROI, an ROI name, or spans).

        Returns the spans, or with ``name`` a new ROI instance of that name (same block
        size, created at the repo head) holding them."""
        return self._result(S.union(self.get(), self._other(other)), name)

    def intersection(self, other: Any, *, name: str | None = None) -> Any:
        """Blocks in both this ROI and ``other`` (see :meth:`union`)."""
        return self._result(S.intersection(self.get(), self._other(other)), name)

    def difference(self, other: Any, *, name: str | None = None) -> Any:
        """Blocks in this ROI and not in ``other`` (see :meth:`union`)."""
        return self._result(S.difference(self.get(), self._other(other)), name)

    __or__ = union
    __and__ = intersection
    __sub__ = difference
