"""The chunk codec contract and the registry of codecs by name."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from diced.errors import InvalidArgumentError

__all__ = ["ChunkCodec", "codec_from_dict", "register_codec"]

_CODECS: dict[str, type[ChunkCodec]] = {}


class ChunkCodec(abc.ABC):
    """Turns one chunk (a C-contiguous ndarray of the chunk shape) into bytes and back.

    Codecs are small immutable objects described by :meth:`to_dict`, which is what array
    metadata stores; :func:`codec_from_dict` rebuilds them.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def encode(self, chunk: np.ndarray) -> bytes:
        """Encode a C-contiguous chunk."""

    @abc.abstractmethod
    def decode(self, data: bytes | memoryview, shape: tuple[int, ...], dtype: np.dtype,
               out: np.ndarray | None = None) -> np.ndarray:
        """Decode ``data`` into an array of ``shape``/``dtype`` (into ``out`` when given).

        Raises :class:`diced.errors.CorruptDataError` on malformed input.
        """

    def to_dict(self) -> dict[str, Any]:
        """The codec's JSON configuration, ``{"name": ..., **options}``, as stored in the repo.

        Returns
        -------
        dict
        """
        return {"name": self.name, **self._config()}

    def _config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ChunkCodec:
        """Build the codec from its options (``to_dict`` without ``name``).

        Parameters
        ----------
        config : mapping
            Codec options.

        Returns
        -------
        ChunkCodec
        """
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChunkCodec) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_dict().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"


def register_codec(cls: type[ChunkCodec]) -> type[ChunkCodec]:
    """Class decorator: make a codec constructible from its ``to_dict`` form."""
    _CODECS[cls.name] = cls
    return cls


def codec_from_dict(spec: Mapping[str, Any] | str | ChunkCodec) -> ChunkCodec:
    """Build a codec from ``{"name": ..., **config}``, a bare name, or pass one through."""
    if isinstance(spec, ChunkCodec):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    config = dict(spec)
    name = config.pop("name", None)
    if name not in _CODECS and name in _BUILTIN:
        import importlib

        importlib.import_module(_BUILTIN[name])  # registers it; numba loads only for labelblock
    if name not in _CODECS:
        raise InvalidArgumentError(f"unknown codec {name!r}; known: {sorted(_CODECS)}")
    try:
        return _CODECS[name].from_config(config)
    except TypeError as exc:
        raise InvalidArgumentError(f"bad configuration for codec {name!r}: {exc}") from exc


#: codecs that ship with diced, imported on first use
_BUILTIN = {
    "blosc": "diced.array.codecs.blosc",
    "raw": "diced.array.codecs.raw",
    "labelblock": "diced.array.codecs.labelblock",
}
