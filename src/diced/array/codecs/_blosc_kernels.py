"""numba kernel of the blosc2 codec: decode the rows of a chunk a read needs and copy the
selected box into the output, in one call that does not hold the GIL.

A box read of an image array meets many chunks only in part. Per chunk, the Python path
made several calls that each took and dropped the GIL (the partial decode through ctypes,
the numpy copy, views and checks between them), and on two cores the decoding threads
queued for the GIL between them. :func:`decode_copy` does the partial decode (through
``blosc2_getitem``, passed in as a first-class ctypes function, so the kernel caches) and the
strided copy inside one ``nogil`` call.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: :func:`decode_copy` results other than the decoded byte count
TOO_SHORT, WRONG_SIZE, ODD_TYPESIZE, OUT_OF_BOUNDS = -1001, -1002, -1003, -1004


@njit(nogil=True, cache=True)
def decode_copy(getitem, memmove, src: np.ndarray, lo: int, hi: int, box: np.ndarray,
                origin: np.ndarray, scratch: np.ndarray,
                out: np.ndarray) -> int:  # pragma: no cover - numba
    """Decode leading-axis rows ``lo:hi`` of the blosc2 chunk ``src`` (uint8) into the same
    rows of the chunk-shaped, C-contiguous 3-d ``scratch``, then copy
    ``scratch[box[0]:box[1], box[2]:box[3], box[4]:box[5]]`` into ``out`` at ``origin``.

    Returns the number of bytes decoded; otherwise (nothing copied) :data:`TOO_SHORT` or
    :data:`WRONG_SIZE` (not a chunk of ``scratch``'s size), :data:`ODD_TYPESIZE` (rows are
    not whole items of the chunk's typesize: decode it all instead), :data:`OUT_OF_BOUNDS`
    (the rows, the box or its place in ``out`` do not fit: nothing is touched), or
    ``blosc2_getitem``'s error code.
    """
    if not (0 <= lo < hi <= scratch.shape[0] and lo <= box[0] < box[1] <= hi
            and 0 <= box[2] < box[3] <= scratch.shape[1]
            and 0 <= box[4] < box[5] <= scratch.shape[2] and origin[0] >= 0
            and origin[1] >= 0 and origin[2] >= 0
            and origin[0] + box[1] - box[0] <= out.shape[0]
            and origin[1] + box[3] - box[2] <= out.shape[1]
            and origin[2] + box[5] - box[4] <= out.shape[2]):
        return OUT_OF_BOUNDS
    if src.size < 16:
        return TOO_SHORT
    nbytes = (np.int64(src[4]) | (np.int64(src[5]) << 8) | (np.int64(src[6]) << 16)
              | (np.int64(src[7]) << 24))
    if nbytes != scratch.size * scratch.itemsize:
        return WRONG_SIZE
    typesize = np.int64(src[3])
    row = scratch.shape[1] * scratch.shape[2] * scratch.itemsize  # bytes per leading row
    if typesize == 0 or row % typesize:
        return ODD_TYPESIZE
    dest = scratch[lo:hi]
    want = (hi - lo) * row
    n = getitem(src.ctypes.data, src.size, lo * row // typesize, want // typesize,
                dest.ctypes.data, want)
    if n != want:
        return n
    # row by row with memmove: numba's own strided copy loops ran 2-5x slower than numpy's
    it = scratch.itemsize
    s_y, s_z = scratch.strides[1], scratch.strides[0]
    o_y, o_z, o_x = out.strides[1], out.strides[0], out.strides[2]
    if o_x != it:  # a non-contiguous output row: element by element
        for z in range(box[1] - box[0]):
            for y in range(box[3] - box[2]):
                for x in range(box[5] - box[4]):
                    out[origin[0] + z, origin[1] + y, origin[2] + x] = \
                        scratch[box[0] + z, box[2] + y, box[4] + x]
        return n
    w = (box[5] - box[4]) * it
    sp = scratch.ctypes.data + box[0] * s_z + box[2] * s_y + box[4] * it
    op = out.ctypes.data + origin[0] * o_z + origin[1] * o_y + origin[2] * it
    for z in range(box[1] - box[0]):
        for y in range(box[3] - box[2]):
            memmove(op + z * o_z + y * o_y, sp + z * s_z + y * s_y, w)
    return n
