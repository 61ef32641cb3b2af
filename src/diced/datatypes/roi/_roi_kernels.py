"""numba kernel for ROI point queries; called only by :mod:`diced.datatypes.roi.spans`.

The spans are laid out as a dense table of block rows (CSR: ``row_start`` indexes the
``x0``/``x1`` arrays for each ``(z, y)`` of the ROI's bounding rows), so a point costs one
table lookup and a binary search among its row's few spans.
"""

from __future__ import annotations

from numba import njit, prange

_NB = {"cache": True, "nogil": True}


def _points_in_rows(points, bx, by, bz, zmin, ymin, nz, ny, row_start, x0, x1, out):
    """``out[i]``: whether voxel ``points[i] = (x, y, z)`` lies in a span of the table."""
    for i in prange(points.shape[0]):
        z = points[i, 2] // bz - zmin
        y = points[i, 1] // by - ymin
        if z < 0 or z >= nz or y < 0 or y >= ny:
            out[i] = False
            continue
        x = points[i, 0] // bx
        r = z * ny + y
        lo = row_start[r]
        hi = row_start[r + 1]
        # last span with x0 <= x
        while lo < hi:
            mid = (lo + hi) >> 1
            if x0[mid] <= x:
                lo = mid + 1
            else:
                hi = mid
        out[i] = lo > row_start[r] and x <= x1[lo - 1]


#: for large batches: threads over the points
points_in_rows_parallel = njit(parallel=True, **_NB)(_points_in_rows)
#: for small batches (no thread start-up; the machine may be busy)
points_in_rows = njit(**_NB)(_points_in_rows)
