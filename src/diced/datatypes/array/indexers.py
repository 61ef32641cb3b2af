"""``arr.abs[...]``, ``arr.oindex[...]`` and ``arr.vindex[...]``: indexers of a
:class:`~diced.datatypes.array.array.VersionedArray` that translate their selections and call
its reads and writes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from diced.errors import IndexOutOfBoundsError, InvalidArgumentError

if TYPE_CHECKING:
    from diced.datatypes.array.array import VersionedArray


class _AbsoluteIndexer:
    """``arr.abs[...]``: integers and slices in absolute (origin-shifted) coordinates.

    A slice needs explicit bounds, which must lie in the array's absolute extent ``o:o+n``
    (the positions a slice may start or stop at: ``o..o+n`` going up, ``o-1..o+n-1`` going
    down with a negative step); steps of either sign select as Python's ``range``.
    """

    def __init__(self, arr: VersionedArray) -> None:
        self.arr = arr

    def _shift(self, selection: Any) -> tuple[Any, ...]:
        import operator

        from diced.errors import InvalidIndexError

        if not isinstance(selection, tuple):
            selection = (selection,)
        if any(s is Ellipsis or s is None for s in selection) or len(selection) != self.arr.ndim:
            raise InvalidIndexError(
                f"absolute indexing takes exactly {self.arr.ndim} integers or slices")

        def as_int(x: Any, what: str) -> int:
            if isinstance(x, (bool, np.bool_)):
                raise InvalidIndexError(f"absolute {what} must be an integer, got {x!r}")
            try:
                return operator.index(x)
            except TypeError as exc:
                raise InvalidIndexError(f"absolute {what} must be an integer, got {x!r}") from exc

        out: list[Any] = []
        for s, o, n in zip(selection, self.arr.origin, self.arr.shape, strict=True):
            if isinstance(s, slice):
                if s.start is None or s.stop is None:
                    raise InvalidIndexError("absolute slices need explicit start and stop")
                start, stop = as_int(s.start, "slice start"), as_int(s.stop, "slice stop")
                step = 1 if s.step is None else as_int(s.step, "slice step")
                if step == 0:
                    raise InvalidArgumentError("slice step cannot be zero")
                lo, hi = (o, o + n) if step > 0 else (o - 1, o + n - 1)
                if not (lo <= start <= hi and lo <= stop <= hi):
                    raise IndexOutOfBoundsError(
                        f"absolute range {start}:{stop}:{step} is outside {o}:{o + n}")
                r = range(start - o, stop - o, step)
                if not len(r):
                    out.append(slice(0, 0))
                else:  # the same indices as a slice that never wraps around from the end
                    last = r[-1] + (1 if step > 0 else -1)
                    out.append(slice(r[0], None if last < 0 else last, step))
            else:
                i = as_int(s, "index") - o
                if not 0 <= i < n:
                    raise IndexOutOfBoundsError(f"absolute index {s} is outside {o}:{o + n}")
                out.append(i)
        return tuple(out)

    # the array's own basic indexing, not a subclass's __getitem__ (DICED's is absolute)
    def __getitem__(self, selection: Any) -> Any:
        return self.arr._get(self._shift(selection), "basic")

    def __setitem__(self, selection: Any, value: Any) -> None:
        self.arr._set(self._shift(selection), value, "basic")


class _SelectionIndexer:
    """``arr.oindex`` / ``arr.vindex``: reads and writes of one selection kind."""

    def __init__(self, arr: VersionedArray, mode: str) -> None:
        self.arr, self.mode = arr, mode

    def __getitem__(self, selection: Any) -> Any:
        return self.arr._get(selection, self.mode)

    def __setitem__(self, selection: Any, value: Any) -> None:
        self.arr._set(selection, value, self.mode)
