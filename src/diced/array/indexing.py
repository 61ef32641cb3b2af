"""Pure selection planning: a numpy selection becomes per-chunk projections. No I/O.

Supported: integers (negative counts from the end; the axis is dropped), slices with any
step (negative too), ``Ellipsis``, and ``None`` (new axis), as in numpy basic indexing.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from diced.errors import IndexOutOfBoundsError, InvalidArgumentError

__all__ = ["ChunkProjection", "DimSel", "Selection", "normalize_selection", "project"]


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
    dims: tuple[DimSel, ...]
    newaxes: tuple[int, ...]  # positions of None in the result shape

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


class ChunkProjection(NamedTuple):
    """Where one chunk meets a selection."""

    coords: tuple[int, ...]  # chunk grid coordinates
    chunk_sel: tuple[slice, ...]  # inside the chunk
    out_sel: tuple[slice, ...]  # inside the (undropped) selection-shaped buffer
    full: bool  # the selection covers the whole chunk (clipped to the array) with step 1


def _as_int(x: Any) -> int | None:
    if isinstance(x, (bool, np.bool_)):
        return None
    try:
        return operator.index(x)
    except TypeError:
        return None


def normalize_selection(sel: Any, shape: Sequence[int]) -> Selection:
    """Turn a numpy basic-indexing selection into one :class:`DimSel` per axis."""
    if not isinstance(sel, tuple):
        sel = (sel,)
    n_ell = sum(1 for s in sel if s is Ellipsis)
    if n_ell > 1:
        raise InvalidArgumentError("an index can only have a single ellipsis ('...')")
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
                    raise InvalidArgumentError(f"slice indices must be integers or None, got {s}")
            if s.step is not None and _as_int(s.step) == 0:
                raise InvalidArgumentError("slice step cannot be zero")
            start, stop, step = s.indices(n)
            dims.append(DimSel(start, stop, step, False))
            out_pos += 1
        else:
            raise InvalidArgumentError(
                f"unsupported index {s!r} on axis {axis}: diced arrays take integers, slices, "
                "'...' and None (for fancy indexing read a box into numpy first)")
        axis += 1
    return Selection(tuple(dims), tuple(newaxes))


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
        n *= sum(1 for _ in _dim_pieces(d, c, e))
    return n


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
