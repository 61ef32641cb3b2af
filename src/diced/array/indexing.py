"""Pure selection planning: a numpy selection becomes per-chunk projections. No I/O.

Three kinds of selection, with zarr's semantics:

* basic (``arr[...]``): integers (negative counts from the end; the axis is dropped), slices
  with any step (negative too), ``Ellipsis`` and ``None`` (new axis), as numpy basic indexing;
  plus a full-shape boolean mask (``arr[mask]``, numpy's mask indexing);
* orthogonal (``arr.oindex[...]``): per axis an integer, a slice, an integer array or a
  boolean array, each axis indexed independently (numpy's ``a[np.ix_(...)]``);
* vectorized (``arr.vindex[...]``): integer arrays (and integers) broadcast together into
  points, one array per axis (numpy's fancy indexing with arrays on every axis), or a
  full-shape boolean mask.

Each becomes a selection object with ``shape`` (the buffer filled chunk by chunk),
``result_shape``, ``scalar`` and ``project(chunks, shape)``, which yields one
:class:`ChunkProjection` per chunk touched: points and index arrays are grouped by chunk, so
only those chunks are read. A projection's ``chunk_sel`` and ``out_sel`` are numpy indexes
(slices, or open-mesh / point index arrays when ``fancy``) usable for reads and writes alike.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from diced.errors import IndexOutOfBoundsError, InvalidArgumentError, InvalidIndexError

__all__ = [
    "ChunkProjection",
    "CoordinateSelection",
    "DimSel",
    "OrthogonalSelection",
    "Selection",
    "count_chunks",
    "normalize_coordinates",
    "normalize_orthogonal",
    "normalize_selection",
    "plan_selection",
    "project",
    "single_chunk",
]


class DimSel(NamedTuple):
    """One axis of a normalised selection: ``range(start, stop, step)`` of array indices."""

    start: int
    stop: int
    step: int
    drop: bool  # selected by an integer: the axis disappears from the result

    @property
    def size(self) -> int:
        """Number of indices this dimension selects."""
        return len(range(self.start, self.stop, self.step))


class Selection(NamedTuple):
    """A normalised basic selection."""

    dims: tuple[DimSel, ...]
    newaxes: tuple[int, ...]  # positions of None in the result shape
    ellipsis: bool = False  # the selection held ``...`` (numpy: then never a scalar result)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape over all array axes (dropped axes have size 1)."""
        return tuple(d.size for d in self.dims)

    @property
    def result_shape(self) -> tuple[int, ...]:
        """Shape of the result: selected sizes of kept axes, with ``None`` axes inserted."""
        shape = [d.size for d in self.dims if not d.drop]
        for pos in self.newaxes:
            shape.insert(pos, 1)
        return tuple(shape)

    @property
    def scalar(self) -> bool:
        """numpy returns a scalar (not a 0-d array): integers on every axis, no ``...``."""
        return not self.ellipsis and not self.newaxes and all(d.drop for d in self.dims)

    def project(self, chunks: Sequence[int], shape: Sequence[int]) -> Iterator[ChunkProjection]:
        """Yield a :class:`ChunkProjection` for every chunk the selection meets."""
        return project(self, chunks, shape)

    def count_chunks(self, chunks: Sequence[int], shape: Sequence[int]) -> int:
        """Number of chunks the selection meets (no I/O)."""
        return count_chunks(self, chunks, shape)

    def single_chunk(self, chunks: Sequence[int], shape: Sequence[int]
                     ) -> ChunkProjection | None:
        """The one :class:`ChunkProjection` of a selection that lies inside one chunk (what
        :meth:`project` would yield, computed without it: a voxel or a chunk is the most
        common read of a viewer), or ``None`` for any other selection."""
        return single_chunk(self, chunks, shape)


class ChunkProjection(NamedTuple):
    """Where one chunk meets a selection."""

    coords: tuple[int, ...]  # chunk grid coordinates
    chunk_sel: tuple[slice, ...]  # inside the chunk
    out_sel: tuple[slice, ...]  # inside the (undropped) selection-shaped buffer
    full: bool  # the selection covers the whole chunk (clipped to the array) with step 1
    fancy: bool = False  # chunk_sel/out_sel hold index arrays: out[out_sel] is a copy


def _as_int(x: Any) -> int | None:
    if isinstance(x, (bool, np.bool_)):
        return None
    try:
        return operator.index(x)
    except TypeError:
        return None


def _plain_selection(sel: tuple[Any, ...], shape: Sequence[int]) -> Selection | None:
    """:func:`normalize_selection` of the most common selection, one in-range Python
    ``int`` or slice of Python ints per axis, in fewer steps; ``None`` for any other."""
    dims: list[DimSel] = []
    for s, n in zip(sel, shape, strict=True):
        if type(s) is int:
            if not -n <= s < n:
                return None  # the general path words the error
            i = s + n if s < 0 else s
            dims.append(DimSel(i, i + 1, 1, True))
        elif type(s) is slice and type(s.start) in _PLAIN and type(s.stop) in _PLAIN \
                and type(s.step) in _PLAIN and s.step != 0:
            dims.append(DimSel(*s.indices(n), False))
        else:
            return None
    return Selection(tuple(dims), ())


#: the types of a plain slice's parts
_PLAIN = frozenset({int, type(None)})


def normalize_selection(sel: Any, shape: Sequence[int]) -> Selection:
    """Turn a numpy basic-indexing selection into one :class:`DimSel` per axis."""
    if type(sel) is tuple and len(sel) == len(shape):
        plain = _plain_selection(sel, shape)
        if plain is not None:
            return plain
    if not isinstance(sel, tuple):
        sel = (sel,)
    n_ell = sum(1 for s in sel if s is Ellipsis)
    if n_ell > 1:
        raise InvalidIndexError("an index can only have a single ellipsis ('...')")
    n_real = sum(1 for s in sel if s is not Ellipsis and s is not None)
    ndim = len(shape)
    if n_real > ndim:
        raise IndexOutOfBoundsError(
            f"too many indices: array is {ndim}-dimensional, but {n_real} were indexed")
    expanded: list[Any] = []
    for s in sel:
        if s is Ellipsis:
            expanded.extend([slice(None)] * (ndim - n_real))
        else:
            expanded.append(s)
    if not n_ell:
        expanded.extend([slice(None)] * (ndim - n_real))
    dims: list[DimSel] = []
    newaxes: list[int] = []
    axis = 0
    out_pos = 0
    for s in expanded:
        if s is None:
            newaxes.append(out_pos)
            out_pos += 1
            continue
        n = int(shape[axis])
        i = _as_int(s)
        if i is not None:
            if not -n <= i < n:
                raise IndexOutOfBoundsError(
                    f"index {i} is out of bounds for axis {axis} with size {n}")
            i = i + n if i < 0 else i
            dims.append(DimSel(i, i + 1, 1, True))
        elif isinstance(s, slice):
            for part in (s.start, s.stop, s.step):
                if part is not None and _as_int(part) is None:
                    raise InvalidIndexError(f"slice indices must be integers or None, got {s}")
            if s.step is not None and _as_int(s.step) == 0:
                raise InvalidArgumentError("slice step cannot be zero")  # ValueError, as numpy
            start, stop, step = s.indices(n)
            dims.append(DimSel(start, stop, step, False))
            out_pos += 1
        else:
            hint = (" (index arrays: use arr.oindex[...] for orthogonal or arr.vindex[...] for "
                    "point selections; a full-shape boolean mask works as arr[mask])"
                    if _is_array_like(s) else "")
            raise InvalidIndexError(
                f"unsupported index {s!r} on axis {axis}: arrays take integers, slices, "
                f"'...' and None{hint}")
        axis += 1
    return Selection(tuple(dims), tuple(newaxes), bool(n_ell))


def _dim_pieces(d: DimSel, chunk: int, extent: int) -> Iterator[tuple[int, slice, slice, bool]]:
    """Per chunk index along one axis: (chunk index, slice in chunk, slice in output, full)."""
    size = d.size
    if size == 0:
        return
    if d.step > 0:
        first, last = d.start, d.start + (size - 1) * d.step
        c0, c1 = first // chunk, last // chunk
        k = 0  # output position of the next selected index
        for c in range(c0, c1 + 1):
            lo, hi = c * chunk, min((c + 1) * chunk, extent)
            # selected indices in [lo, hi): start + j*step
            j0 = max(0, -(-(lo - d.start) // d.step))
            j1 = min(size, -(-(hi - d.start) // d.step))
            if j1 <= j0:
                continue
            i0 = d.start + j0 * d.step
            full = d.step == 1 and j0 == k and i0 == lo and d.start + (j1 - 1) + 1 == hi
            yield (c, slice(i0 - lo, d.start + (j1 - 1) * d.step - lo + 1, d.step),
                   slice(j0, j1), full)
            k = j1
    else:
        # negative step: walk chunks from high to low; output positions ascend
        first, last = d.start, d.start + (size - 1) * d.step
        for c in range(first // chunk, last // chunk - 1, -1):
            lo, hi = c * chunk, min((c + 1) * chunk, extent)
            # j with lo <= start + j*step < hi, step < 0
            j0 = max(0, -(-(d.start - (hi - 1)) // -d.step))
            j1 = min(size, (d.start - lo) // -d.step + 1)
            if j1 <= j0:
                continue
            i0 = d.start + j0 * d.step  # highest index in this chunk
            i1 = d.start + (j1 - 1) * d.step  # lowest
            stop = i1 - lo - 1
            yield (c, slice(i0 - lo, stop if stop >= 0 else None, d.step), slice(j0, j1), False)


def count_chunks(sel: Selection, chunks: Sequence[int], shape: Sequence[int]) -> int:
    """How many chunks :func:`project` will yield (without yielding them)."""
    n = 1
    for d, c, e in zip(sel.dims, chunks, shape, strict=True):
        if d.step == 1:  # every chunk from the first index's to the last's
            n *= (d.stop - 1) // c - d.start // c + 1 if d.stop > d.start else 0
        else:
            n *= sum(1 for _ in _dim_pieces(d, c, e))
    return n


def single_chunk(sel: Selection, chunks: Sequence[int], shape: Sequence[int]
                 ) -> ChunkProjection | None:
    """See :meth:`Selection.single_chunk`: ``None`` unless every axis selects at least one
    index, with a positive step, all inside one chunk."""
    coords, csel, osel = [], [], []
    full = True
    for d, c, e in zip(sel.dims, chunks, shape, strict=True):
        start, step = d.start, d.step
        if step <= 0 or d.stop <= start:
            return None
        size = (d.stop - start + step - 1) // step
        last = start + (size - 1) * step
        k = start // c
        if last // c != k:
            return None
        lo = k * c
        coords.append(k)
        csel.append(slice(start - lo, last - lo + 1, step))
        osel.append(slice(0, size))
        full = full and step == 1 and start == lo and last + 1 == min(lo + c, e)
    return ChunkProjection(tuple(coords), tuple(csel), tuple(osel), full)


def project(sel: Selection, chunks: Sequence[int], shape: Sequence[int]) -> Iterator[ChunkProjection]:
    """Every chunk a selection touches, with the slices that map it to the output."""
    per_dim = [list(_dim_pieces(d, c, n)) for d, c, n in zip(sel.dims, chunks, shape, strict=True)]
    if any(not p for p in per_dim):
        return
    import itertools

    for combo in itertools.product(*per_dim):
        yield ChunkProjection(
            tuple(p[0] for p in combo), tuple(p[1] for p in combo), tuple(p[2] for p in combo),
            all(p[3] for p in combo))


# --- orthogonal and vectorized (coordinate / mask) selections -----------------------------


def _is_array_like(x: Any) -> bool:
    return isinstance(x, (list, np.ndarray)) or (
        hasattr(x, "__array__") and not isinstance(x, (np.generic, str, bytes)))


def _index_array(x: Any, n: int, axis: int) -> np.ndarray:
    """An integer or boolean index array for one axis of size ``n``: int64 array indices in
    ``0..n-1`` (negative ones counted from the end), in the given order."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged lists and such
        raise InvalidIndexError(f"index on axis {axis} is not an array: {exc}") from exc
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexOutOfBoundsError(
                f"boolean index of shape {arr.shape} does not match axis {axis} of size {n}")
        return np.flatnonzero(arr)
    if arr.size == 0 and arr.dtype.kind not in "iu":
        arr = arr.astype(np.int64)  # [] is a float64 array to numpy; it selects nothing
    if arr.dtype.kind not in "iu":
        raise InvalidIndexError(
            f"index arrays must hold integers or booleans, got {arr.dtype} on axis {axis}")
    return _wrap(arr, n, axis)


def _wrap(arr: np.ndarray, n: int, axis: int) -> np.ndarray:
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) >= n:
        raise IndexOutOfBoundsError(
            f"index {int(arr.max())} is out of bounds for axis {axis} with size {n}")
    a = arr.astype(np.int64)
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < -n or hi >= n:
            bad = lo if lo < -n else hi
            raise IndexOutOfBoundsError(
                f"index {bad} is out of bounds for axis {axis} with size {n}")
        if lo < 0:
            a = np.where(a < 0, a + n, a)
    return a


def _expand_ellipsis(sel: tuple[Any, ...], ndim: int, what: str) -> list[Any]:
    n_ell = sum(1 for s in sel if s is Ellipsis)
    if n_ell > 1:
        raise InvalidIndexError("an index can only have a single ellipsis ('...')")
    if any(s is None for s in sel):
        raise InvalidIndexError(f"{what} selections take no None (new axis)")
    n_real = len(sel) - n_ell
    if n_real > ndim:
        raise IndexOutOfBoundsError(
            f"too many indices: array is {ndim}-dimensional, but {n_real} were indexed")
    out: list[Any] = []
    for s in sel:
        if s is Ellipsis:
            out.extend([slice(None)] * (ndim - n_real))
        else:
            out.append(s)
    out.extend([slice(None)] * (ndim - len(out)))
    return out


class OrthogonalSelection(NamedTuple):
    """``arr.oindex[...]``: per axis a :class:`DimSel` (integer or slice) or an int64 array
    of indices (from an integer or boolean array); axes are indexed independently."""

    axes: tuple[DimSel | np.ndarray, ...]
    ellipsis: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        """Selected size on every array axis (dropped axes have size 1)."""
        return tuple(a.size if isinstance(a, DimSel) else len(a) for a in self.axes)

    @property
    def result_shape(self) -> tuple[int, ...]:
        """Shape of the result: the selected sizes of the axes that are kept."""
        return tuple(a.size if isinstance(a, DimSel) else len(a) for a in self.axes
                     if not (isinstance(a, DimSel) and a.drop))

    @property
    def scalar(self) -> bool:
        """True when every axis is a single integer and there is no ``...``."""
        return not self.ellipsis and all(isinstance(a, DimSel) and a.drop for a in self.axes)

    def project(self, chunks: Sequence[int], shape: Sequence[int]) -> Iterator[ChunkProjection]:
        """Yield a :class:`ChunkProjection` for every chunk the selection meets; axes with
        index arrays give open-mesh (``np.ix_``) selections inside the chunk and the buffer."""
        per_dim = []
        for a, c, n in zip(self.axes, chunks, shape, strict=True):
            if isinstance(a, DimSel):
                per_dim.append(list(_dim_pieces(a, c, n)))
            else:
                per_dim.append(_array_pieces(a, c))
        if any(not p for p in per_dim):
            return
        import itertools

        for combo in itertools.product(*per_dim):
            coords = tuple(p[0] for p in combo)
            if all(isinstance(p[1], slice) for p in combo):
                yield ChunkProjection(coords, tuple(p[1] for p in combo),
                                      tuple(p[2] for p in combo), all(p[3] for p in combo))
                continue
            # index arrays on some axis: open meshes (np.ix_) inside the chunk and the buffer
            ins = [_as_positions(p[1], c) for p, c in zip(combo, chunks, strict=True)]
            outs = [_as_positions(p[2], None) for p in combo]
            yield ChunkProjection(coords, np.ix_(*ins), np.ix_(*outs), False, True)

    def count_chunks(self, chunks: Sequence[int], shape: Sequence[int]) -> int:
        """Number of chunks the selection meets (no I/O)."""
        n = 1
        for a, c, e in zip(self.axes, chunks, shape, strict=True):
            if isinstance(a, DimSel):
                n *= sum(1 for _ in _dim_pieces(a, c, e))
            else:
                n *= len(np.unique(a // c))
        return n


class CoordinateSelection(NamedTuple):
    """``arr.vindex[...]`` or a boolean mask: ``points`` (P, ndim) int64 array coordinates,
    read into a flat buffer of P values that is reshaped to ``result_shape``."""

    points: np.ndarray
    result_shape: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the flat buffer the points are read into: ``(P,)``."""
        return (len(self.points),)

    @property
    def scalar(self) -> bool:
        """Always False: a coordinate selection returns an array, as numpy's fancy indexing."""
        return False

    def project(self, chunks: Sequence[int], shape: Sequence[int]) -> Iterator[ChunkProjection]:
        """Yield one :class:`ChunkProjection` per chunk holding at least one point, the points
        grouped by chunk in a stable order (a repeated point is written last-one-wins)."""
        pts = self.points
        if not len(pts):
            return
        ch = np.asarray(chunks, dtype=np.int64)
        cc = pts // ch
        # sort by chunk (lexsort is stable: the points of a chunk keep their given order, so
        # a repeated point is written last-one-wins, as numpy)
        order = np.lexsort(cc.T[::-1])
        step = np.any(np.diff(cc[order], axis=0) != 0, axis=1)
        cuts = np.flatnonzero(step) + 1
        for group in np.split(order, cuts):
            coords = tuple(int(x) for x in cc[group[0]])
            local = pts[group] - cc[group[0]] * ch
            yield ChunkProjection(coords, tuple(local.T), (group,), False, True)

    def count_chunks(self, chunks: Sequence[int], shape: Sequence[int]) -> int:
        """Number of distinct chunks holding the points (no I/O)."""
        if not len(self.points):
            return 0
        cc = self.points // np.asarray(chunks, dtype=np.int64)
        cc = cc[np.lexsort(cc.T[::-1])]
        return 1 + int(np.count_nonzero(np.any(np.diff(cc, axis=0) != 0, axis=1)))


def _array_pieces(idx: np.ndarray, chunk: int) -> list[tuple[int, np.ndarray, Any, bool]]:
    """Per chunk along one axis: (chunk index, indices in the chunk, output positions, False),
    positions in the order given (so repeated indices write last-one-wins, as numpy)."""
    if not len(idx):
        return []
    cid = idx // chunk
    order = np.argsort(cid, kind="stable")
    cuts = np.flatnonzero(np.diff(cid[order])) + 1
    out = []
    for pos in np.split(order, cuts):
        c = int(cid[pos[0]])
        span = slice(int(pos[0]), int(pos[-1]) + 1)
        contiguous = len(pos) == span.stop - span.start and bool((np.diff(pos) == 1).all())
        out.append((c, idx[pos] - c * chunk, span if contiguous else pos, False))
    return out


def _as_positions(sel: slice | np.ndarray, length: int | None) -> np.ndarray:
    if isinstance(sel, np.ndarray):
        return sel
    if length is None:  # an output slice: explicit start and stop
        return np.arange(sel.start, sel.stop, sel.step or 1)
    return np.arange(length)[sel]


def normalize_orthogonal(sel: Any, shape: Sequence[int]) -> OrthogonalSelection:
    """An orthogonal selection: per axis an integer, a slice, an integer array or a boolean
    array (of the axis' length); ``...`` allowed, ``None`` not."""
    if not isinstance(sel, tuple):
        sel = (sel,)
    items = _expand_ellipsis(sel, len(shape), "orthogonal")
    axes: list[DimSel | np.ndarray] = []
    for axis, (s, n) in enumerate(zip(items, shape, strict=True)):
        if isinstance(s, slice) or _as_int(s) is not None:
            axes.append(normalize_selection((s,), (int(n),)).dims[0])
        elif _is_array_like(s):
            a = _index_array(s, int(n), axis)
            if a.ndim != 1:
                raise InvalidIndexError(
                    f"orthogonal index arrays are 1-d; got shape {a.shape} on axis {axis}")
            axes.append(a)
        else:
            raise InvalidIndexError(
                f"unsupported orthogonal index {s!r} on axis {axis}: integers, slices, "
                "integer arrays and boolean arrays")
    return OrthogonalSelection(tuple(axes), any(s is Ellipsis for s in sel))


def _mask_points(mask: np.ndarray, shape: Sequence[int]) -> CoordinateSelection:
    if mask.shape != tuple(shape):
        raise IndexOutOfBoundsError(
            f"boolean mask of shape {mask.shape} does not match the array shape {tuple(shape)}")
    pts = np.argwhere(mask).astype(np.int64, copy=False)
    return CoordinateSelection(pts.reshape(-1, len(shape)), (len(pts),))


def normalize_coordinates(sel: Any, shape: Sequence[int]) -> CoordinateSelection:
    """A vectorized selection: a full-shape boolean mask, or one integer array (or integer)
    per axis, broadcast together (numpy's fancy indexing with arrays on every axis)."""
    ndim = len(shape)
    if not isinstance(sel, tuple):
        sel = (sel,)
    if len(sel) == 1 and _is_array_like(sel[0]) and np.asarray(sel[0]).dtype == bool:
        return _mask_points(np.asarray(sel[0]), shape)
    if len(sel) != ndim:
        raise InvalidIndexError(
            f"vectorized selections take one integer array per axis ({ndim}), got {len(sel)}")
    arrays = []
    for axis, (s, n) in enumerate(zip(sel, shape, strict=True)):
        if _as_int(s) is not None:
            arrays.append(_wrap(np.asarray(_as_int(s)), int(n), axis))
        elif _is_array_like(s):
            a = _index_array(s, int(n), axis) if np.asarray(s).dtype != bool else None
            if a is None:
                raise InvalidIndexError("a boolean array in a vectorized selection must be "
                                        "a full-shape mask given alone")
            arrays.append(a)
        else:
            raise InvalidIndexError(
                f"unsupported vectorized index {s!r} on axis {axis}: integer arrays")
    try:
        b = np.broadcast_arrays(*arrays)
    except ValueError as exc:
        raise InvalidIndexError(f"index arrays do not broadcast together: {exc}") from exc
    pts = np.stack([x.reshape(-1) for x in b], axis=1) if b[0].size else \
        np.zeros((0, ndim), np.int64)
    return CoordinateSelection(pts.astype(np.int64, copy=False), tuple(b[0].shape))


def plan_selection(sel: Any, shape: Sequence[int], mode: str = "basic"
                   ) -> Selection | OrthogonalSelection | CoordinateSelection:
    """Normalise ``sel`` for ``mode`` ``"basic"`` (``arr[...]``: basic indexing or a
    full-shape boolean mask), ``"orthogonal"`` or ``"vectorized"``."""
    if mode == "orthogonal":
        return normalize_orthogonal(sel, shape)
    if mode == "vectorized":
        return normalize_coordinates(sel, shape)
    one = sel[0] if isinstance(sel, tuple) and len(sel) == 1 else sel
    if _is_array_like(one):
        try:
            mask = np.asarray(one)
        except (TypeError, ValueError):  # ragged lists: refused below as an unsupported index
            mask = None
        if mask is not None and mask.dtype == bool and mask.ndim > 0:
            return _mask_points(mask, shape)
    return normalize_selection(sel, shape)
