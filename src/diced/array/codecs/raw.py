"""Uncompressed chunks (for speed tests and incompressible data)."""

from __future__ import annotations

import math

import numpy as np

from diced.array.codecs.base import ChunkCodec, register_codec
from diced.errors import CorruptDataError

__all__ = ["RawCodec"]


@register_codec
class RawCodec(ChunkCodec):
    """Chunk bytes as they are in memory (little-endian C order)."""

    name = "raw"

    def encode(self, chunk: np.ndarray) -> bytes:
        return np.ascontiguousarray(chunk).tobytes()

    def decode(self, data, shape, dtype, out=None):
        dtype = np.dtype(dtype)
        n = math.prod(shape) * dtype.itemsize
        if len(data) != n:
            raise CorruptDataError(f"raw chunk has {len(data)} bytes, expected {n}")
        arr = np.frombuffer(data, dtype=dtype).reshape(shape)
        if out is None:
            return arr.copy()
        out[...] = arr
        return out
