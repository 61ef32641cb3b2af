"""Every stored value carries a CRC32C, checked on every read, on every backend.

:class:`ChecksummedBackend` wraps any :class:`~diced.backends.base.Backend`: it appends the
CRC32C (Castagnoli, as zarr v3's ``crc32c`` codec and TensorStore use, 4 bytes little
endian) of each value when it is written and verifies and strips it when it is read. A
:class:`~diced.store.Store` always talks to its backend through this wrapper, so chunks,
label index entries, keyvalue values, version manifests and metadata are all covered, in
one place, without any call site knowing. A mismatch raises
:class:`~diced.errors.ChecksumError` naming the backend key;
:class:`~diced.repo.resolve.VersionedSpace` adds the instance, version and chunk.

Array reads stay zero-copy: the checksum is computed over the value as the backend returns
it (on LMDB, over the memory map) and the decoder gets a view without the trailer
(:meth:`ChecksummedBackend.visit_last_many`, :meth:`ChecksummedBackend.visit_many`). The ``crc32c`` package
computes it with SSE4.2/ARMv8 instructions (about 25 GB/s here, 6x ``google-crc32c``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from crc32c import crc32c

from diced.backends.base import Backend, Capabilities, UpdateFn
from diced.errors import ChecksumError

__all__ = ["TRAILER", "ChecksummedBackend", "frame", "unframe", "verify_value"]

#: bytes appended to every value
TRAILER = 4


def frame(value: bytes | bytearray | memoryview) -> bytes:
    """``value`` followed by its CRC32C (4 bytes, little endian)."""
    return b"".join((value, crc32c(value).to_bytes(4, "little")))


def verify_value(raw: bytes | memoryview) -> bool:
    """Whether a stored (framed) value is intact."""
    n = len(raw)
    if n < TRAILER:
        return False
    view = memoryview(raw)
    return crc32c(view[:n - TRAILER]) == int.from_bytes(view[n - TRAILER:], "little")


def _fail(key: str, raw: bytes | memoryview, where: str) -> ChecksumError:
    from diced.repo.keys import describe_store_key

    if len(raw) < TRAILER:
        detail = f"is {len(raw)} bytes, shorter than its checksum"
    else:
        detail = "fails its CRC32C check"
    return ChecksumError(f"stored {describe_store_key(key)} in {where} {detail} "
                         "(the bytes changed after they were written)", store_key=key)


def unframe(key: str, raw: bytes, where: str = "the store") -> bytes:
    """The value stored under ``key`` without its trailer; raises on a mismatch."""
    if not verify_value(raw):
        raise _fail(key, raw, where)
    return raw[:-TRAILER]


def unframe_view(key: str, raw: Any, where: str = "the store") -> memoryview:
    """:func:`unframe` without copying: a view of ``raw`` (valid as long as ``raw`` is)."""
    view = memoryview(raw)
    n = len(view) - TRAILER
    if n < 0:
        raise _fail(key, raw, where)
    body = view[:n]
    if crc32c(body) != int.from_bytes(view[n:], "little"):
        raise _fail(key, raw, where)
    return body


class ChecksummedBackend(Backend):
    """A backend whose values are checksummed (see module docstring).

    Keys, listings and capabilities are those of the wrapped backend, available as
    :attr:`raw` for tools that must see stored bytes as they are (verification, migration).
    """

    def __init__(self, raw: Backend) -> None:
        self.raw = raw
        self.url = raw.url
        self.capabilities = raw.capabilities

    def _unframe(self, key: str, raw: bytes | None) -> bytes | None:
        return None if raw is None else unframe(key, raw, self.url)

    def _frame_all(self, changes: Mapping[str, bytes | None]) -> dict[str, bytes | None]:
        return {k: None if v is None else frame(v) for k, v in changes.items()}

    # --- core ----------------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._unframe(k, v) for k, v in zip(keys, self.raw.get_many(keys), strict=True)]

    def set_many(self, items: Mapping[str, bytes]) -> None:
        self.raw.set_many({k: frame(v) for k, v in items.items()})

    def delete_many(self, keys: Iterable[str]) -> None:
        self.raw.delete_many(keys)

    def list_keys(self, prefix: str = "", start: str | None = None,
                  stop: str | None = None) -> Iterator[str]:
        return self.raw.list_keys(prefix, start, stop)

    def list_prefixes(self, prefixes: Sequence[str]) -> list[list[str]]:
        return self.raw.list_prefixes(prefixes)

    def close(self) -> None:
        self.raw.close()

    def capabilities_for(self, prefix: str) -> Capabilities:
        return self.raw.capabilities_for(prefix)

    # --- derived: delegated so the wrapped backend's atomicity and fast paths hold -------

    def is_empty(self) -> bool:
        return self.raw.is_empty()

    def apply(self, changes: Mapping[str, bytes | None]) -> None:
        self.raw.apply(self._frame_all(changes))

    def find_last_many(self, requests: Sequence[tuple[str, str]], accept: Callable[[str], bool]
                       ) -> list[tuple[str, bytes] | None]:
        return [None if hit is None else (hit[0], unframe(hit[0], hit[1], self.url))
                for hit in self.raw.find_last_many(requests, accept)]

    def visit_last_many(self, requests: Sequence[tuple[str, str]],
                        accept: Callable[[str], bool],
                        visit: Callable[[int, str, bytes | memoryview], None]) -> None:
        where = self.url

        def checked(i: int, key: str, value: Any) -> None:
            visit(i, key, unframe_view(key, value, where))

        self.raw.visit_last_many(requests, accept, checked)

    def visit_many(self, keys: Sequence[str],
                   visit: Callable[[int, bytes | memoryview], None]) -> None:
        where = self.url

        def checked(i: int, value: Any) -> None:
            visit(i, unframe_view(keys[i], value, where))

        self.raw.visit_many(keys, checked)

    def update(self, keys: Sequence[str], fn: UpdateFn) -> dict[str, bytes | None]:
        made: dict[str, bytes | None] = {}

        def body(current: dict[str, bytes | None]) -> dict[str, bytes | None]:
            made.clear()
            made.update(fn({k: self._unframe(k, v) for k, v in current.items()}))
            return self._frame_all(made)

        self.raw.update(keys, body)
        return dict(made)

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes | None) -> bool:
        # framing is deterministic, so comparing framed values compares the values
        return self.raw.compare_and_set(key, None if expected is None else frame(expected),
                                        None if new is None else frame(new))

    def hold_locks(self, exclusive: Sequence[str] = (), shared: Sequence[str] = ()
                   ) -> AbstractContextManager[None]:
        return self.raw.hold_locks(exclusive, shared)

    def __repr__(self) -> str:
        return f"ChecksummedBackend({self.raw!r})"
