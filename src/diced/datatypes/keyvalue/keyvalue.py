"""KeyValue: a versioned dict of bytes (DVID's keyvalue, DICED's files)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from diced.errors import InvalidArgumentError, LockedNodeError, NotFoundError
from diced.repo import keys as K

if TYPE_CHECKING:
    from diced.repo.context import InstanceContext
    from diced.repo.repo import Version

__all__ = ["KEY_MAX_BYTES", "KeyValue"]

#: longest key, in UTF-8 bytes, on every backend (LMDB's 511-byte keys hold the hex of 244)
KEY_MAX_BYTES = 240


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"keyvalue keys are non-empty strings, got {key!r}")
    if "\x00" in key:  # DVID ends keyvalue keys with a NUL byte (docs/dvid-reference.md)
        raise InvalidArgumentError(f"keyvalue keys cannot contain NUL characters: {key!r}")
    try:
        n = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"keyvalue key {key!r} is not valid Unicode (a lone surrogate?): {exc.reason}"
        ) from exc
    if n > KEY_MAX_BYTES:
        raise InvalidArgumentError(
            f"keyvalue key of {n} UTF-8 bytes is too long (at most {KEY_MAX_BYTES})")
    return key


def _check_range(bound: Any) -> str:
    """A ``keys()`` range bound: a string as keys are (it may be empty)."""
    if not isinstance(bound, str):
        raise InvalidArgumentError(f"key range bounds are strings, got {bound!r}")
    return _check_key(bound) if bound else bound


def _check_value(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgumentError(f"keyvalue values are bytes (or str, stored as UTF-8), got "
                               f"{type(value).__name__}")


class KeyValue:
    """A versioned mapping ``str -> bytes``: ``kv["a/b.json"] = b"..."``, ``del``, ``keys()``,
    ``items()``, ``keys(start, stop)`` ranges, with branch, merge and diff like arrays.

    Keys are non-empty strings of at most :data:`KEY_MAX_BYTES` (240) UTF-8 bytes, on every
    backend, without NUL characters (DVID ends its keys with one); lone surrogates are not
    Unicode. Other keys are refused with :class:`~diced.errors.InvalidArgumentError` by
    every method, ``in`` included."""

    typename = "keyvalue"

    def __init__(self, context: InstanceContext) -> None:
        self.repo, self.name, self._rec = context.repo, context.name, context.record
        self._ref = context  # the version to read and write: ``self._ref.ctx()``
        self._space = context.space(kind="key")

    @property
    def version(self) -> Version:
        """The version this handle reads now."""
        return self._ref.version()

    def _writable(self):
        ctx = self._ref.ctx()
        if ctx.locked:
            raise LockedNodeError(f"version {ctx.uuid} is locked: {self.name!r} is read-only there")
        return ctx

    def __getitem__(self, key: str) -> bytes:
        value = self.get(key)
        if value is None:
            raise NotFoundError(f"key {key!r} not found in {self.name!r}")
        return value

    def get(self, key: str, default: bytes | None = None) -> bytes | None:
        """The value of ``key``, or ``default`` when absent.

        Parameters
        ----------
        key : str
        default : bytes, optional

        Returns
        -------
        bytes or None
        """
        got = self._space.read_many([K.kv_ckey(_check_key(key))], self._ref.ctx())[0]
        return default if got is None else got

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        """Values of ``keys`` in order (``None`` where absent), in one batch.

        Parameters
        ----------
        keys : list of str

        Returns
        -------
        list
        """
        return self._space.read_many([K.kv_ckey(_check_key(k)) for k in keys], self._ref.ctx())

    def __setitem__(self, key: str, value: bytes) -> None:
        self.update({key: value})

    def update(self, items: Mapping[str, bytes] | None = None, **kw: bytes) -> None:
        """Set many keys in one backend transaction."""
        merged = dict(items or {}, **kw)
        data = {K.kv_ckey(_check_key(k)): _check_value(v) for k, v in merged.items()}
        if data:
            self._space.write(self._writable(), data)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise NotFoundError(f"key {key!r} not found in {self.name!r}")
        self._space.delete(self._writable(), [K.kv_ckey(_check_key(key))])

    def delete(self, *keys: str) -> None:
        """Delete keys (absent ones are ignored)."""
        self._space.delete(self._writable(), [K.kv_ckey(_check_key(k)) for k in keys])

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` holds a value. Non-strings and ``""`` are not contained; a string
        that writes refuse (NUL, lone surrogate, too long) raises
        :class:`~diced.errors.InvalidArgumentError` here too."""
        return isinstance(key, str) and bool(key) and self.get(key) is not None

    def keys(self, start: str | None = None, stop: str | None = None) -> list[str]:
        """Sorted keys (by UTF-8 bytes); ``start <= key <= stop`` when given (inclusive, as
        DVID's keyrange)."""
        lo = K.kv_ckey(_check_range(start)) if start else None
        # just past ``stop`` itself: its versions follow ``ckey/``, its extensions ``ckey`` +
        # hex digits, and "/" < "0" <= any hex digit
        hi = K.kv_ckey(_check_range(stop)) + "0" if stop is not None else None
        return [K.parse_kv_ckey(c) for c in self._space.live_keys(self._ref.ctx(), lo, hi)]

    def items(self, start: str | None = None, stop: str | None = None) -> list[tuple[str, bytes]]:
        """``(key, value)`` pairs, sorted, within the inclusive range ``start..stop``.

        Parameters
        ----------
        start, stop : str, optional
            Inclusive bounds, as :meth:`keys`.

        Returns
        -------
        list of tuple
        """
        keys = self.keys(start, stop)
        values = self.get_many(keys)
        return [(k, v) for k, v in zip(keys, values, strict=True) if v is not None]

    def values(self) -> list[bytes]:
        """Every value, in key order."""
        return [v for _, v in self.items()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __repr__(self) -> str:
        return f"<KeyValue {self.name!r} version={self._ref.ctx().uuid[:8]}>"
