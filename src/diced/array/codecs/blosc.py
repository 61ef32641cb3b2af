"""blosc2 chunks: the default codec for image arrays."""

from __future__ import annotations

import math
from typing import Any

import blosc2
import numpy as np

from diced.array.codecs.base import ChunkCodec, register_codec
from diced.errors import CorruptDataError, InvalidArgumentError

__all__ = ["BloscCodec"]

# diced parallelises over chunks in its own threads: let blosc2 release the GIL while it
# (de)compresses, and (de)compress each chunk on one thread.
blosc2.set_releasegil(True)
_DPARAMS = {"nthreads": 1}

_CNAMES = {"zstd": blosc2.Codec.ZSTD, "lz4": blosc2.Codec.LZ4, "lz4hc": blosc2.Codec.LZ4HC,
           "blosclz": blosc2.Codec.BLOSCLZ, "zlib": blosc2.Codec.ZLIB}
_SHUFFLES = {"noshuffle": blosc2.Filter.NOFILTER, "shuffle": blosc2.Filter.SHUFFLE,
             "bitshuffle": blosc2.Filter.BITSHUFFLE}


@register_codec
class BloscCodec(ChunkCodec):
    """blosc2 with a byte compressor (zstd by default) and a shuffle filter.

    Parameters
    ----------
    cname: ``"zstd"`` (default), ``"lz4"``, ``"lz4hc"``, ``"blosclz"`` or ``"zlib"``.
    clevel: compression level 0-9 (default 1).
    shuffle: ``"shuffle"`` (default), ``"bitshuffle"`` or ``"noshuffle"``.
    nthreads: threads blosc2 uses for one chunk (default 1: diced parallelises over chunks).
    """

    name = "blosc"

    def __init__(self, cname: str = "zstd", clevel: int = 1, shuffle: str = "shuffle",
                 nthreads: int = 1) -> None:
        if cname not in _CNAMES:
            raise InvalidArgumentError(f"unknown blosc compressor {cname!r}; use one of {sorted(_CNAMES)}")
        if shuffle not in _SHUFFLES:
            raise InvalidArgumentError(f"unknown shuffle {shuffle!r}; use one of {sorted(_SHUFFLES)}")
        if not 0 <= int(clevel) <= 9:
            raise InvalidArgumentError(f"clevel must be 0..9, got {clevel}")
        self.cname, self.clevel, self.shuffle, self.nthreads = cname, int(clevel), shuffle, int(nthreads)
        self._cparams = {"codec": _CNAMES[cname], "clevel": self.clevel,
                         "filters": [_SHUFFLES[shuffle]], "nthreads": self.nthreads}

    def _config(self) -> dict[str, Any]:
        return {"cname": self.cname, "clevel": self.clevel, "shuffle": self.shuffle}

    def encode(self, chunk: np.ndarray) -> bytes:
        chunk = np.ascontiguousarray(chunk)
        cparams = dict(self._cparams, typesize=chunk.dtype.itemsize)
        return blosc2.compress2(chunk, **cparams)

    def decode_rows(self, data: Any, shape: tuple[int, ...], dtype: Any, lo: int, hi: int,
                    out: np.ndarray) -> bool:
        """Decode only rows ``lo:hi`` (leading axis) into ``out`` (chunk-shaped; other rows
        are left as they were); ``False`` when partial decoding is unavailable."""
        from diced.array.codecs._blosc_partial import decode_rows

        dtype = np.dtype(dtype)
        if out.shape != tuple(shape) or out.dtype != dtype:
            return False
        try:
            nbytes = blosc2.get_cbuffer_sizes(data)[0]
        except Exception as exc:
            raise CorruptDataError(f"not a blosc2 chunk: {exc}") from exc
        if nbytes != out.nbytes:
            raise CorruptDataError(f"blosc2 chunk holds {nbytes} bytes, expected {out.nbytes}")
        return decode_rows(data, out, lo, hi)

    def decode_box(self, data: Any, lo: int, hi: int, box: np.ndarray, origin: np.ndarray,
                   scratch: np.ndarray, out: np.ndarray) -> bool:
        """Decode rows ``lo:hi`` (leading axis) of a 3-d chunk into ``scratch`` (the
        chunk-shaped, C-contiguous scratch buffer) and copy ``scratch[box]`` (int64
        ``[z0, z1, y0, y1, x0, x1]``) into the 3-d ``out`` at ``origin`` (int64 ``[z, y, x]``),
        in one call that releases the GIL; ``False`` (nothing written) when unavailable."""
        from diced.array.codecs._blosc_partial import decode_box

        return decode_box(data, lo, hi, box, origin, scratch, out)

    def decode(self, data, shape, dtype, out=None):
        dtype = np.dtype(dtype)
        n = math.prod(shape) * dtype.itemsize
        try:
            nbytes = blosc2.get_cbuffer_sizes(data)[0]
        except Exception as exc:
            raise CorruptDataError(f"not a blosc2 chunk: {exc}") from exc
        if nbytes != n:
            raise CorruptDataError(f"blosc2 chunk holds {nbytes} bytes, expected {n}")
        if out is not None and out.flags.c_contiguous and out.dtype == dtype and out.nbytes == n:
            try:
                blosc2.decompress2(data, dst=out, **_DPARAMS)
            except Exception as exc:
                raise CorruptDataError(f"corrupt blosc2 chunk: {exc}") from exc
            return out
        try:
            raw = blosc2.decompress2(data, **_DPARAMS)
        except Exception as exc:
            raise CorruptDataError(f"corrupt blosc2 chunk: {exc}") from exc
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
        if out is None:
            return arr
        out[...] = arr
        return out
