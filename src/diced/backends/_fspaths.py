"""Keys as object paths, for the fsspec backend (:mod:`diced.backends._fsspec`): which keys
and listing prefixes a path layout can hold, and the errors that mean "no such value"."""

from __future__ import annotations

import os

from diced.errors import InvalidArgumentError

#: names containing this are diced's own files (temp files, the lock), never keys
_RESERVED = ".~diced-"
_LOCK_NAME = _RESERVED + "lock"
_FORBIDDEN = frozenset("*?[\\")
#: errors meaning "no value under this key" (a directory is not a value either)
_ABSENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key or not key.isascii():
        raise InvalidArgumentError(f"backend keys must be non-empty ASCII strings, got {key!r}")
    if (any(c in _FORBIDDEN or c < " " or c == "\x7f" for c in key) or _RESERVED in key
            or any(part in ("", ".", "..") for part in key.split("/"))):
        raise InvalidArgumentError(f"key {key!r} cannot be stored as an object path")
    return key


def _prefix_stays_inside(prefix: str) -> bool:
    """Whether keys can start with ``prefix``: its complete segments must be valid ones.

    Keys never hold empty, ``.`` or ``..`` segments, so such a prefix matches nothing, and
    refusing it here keeps a listing from ever walking outside the store's root."""
    head = prefix.rpartition("/")[0]
    if not head:
        return not prefix.startswith("/")
    return not (any(part in ("", ".", "..") for part in head.split("/"))
                or any(c in _FORBIDDEN or c < " " or c == "\x7f" for c in head)
                or _RESERVED in prefix)


def _listing_prefix(prefix: str, start: str | None, stop: str | None) -> str | None:
    """The longest string every key in the request starts with; ``None`` when none match.

    Every string in ``[start, stop)`` shares the common prefix of ``start`` and ``stop``,
    so a bounded request may list a deeper directory than ``prefix`` alone names.
    """
    if start is None or stop is None:
        return prefix
    common = os.path.commonprefix([start, stop])
    if common.startswith(prefix):
        return common
    return prefix if prefix.startswith(common) else None
