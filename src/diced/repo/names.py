"""Names of repos, instances, branches and tags: the allowed characters and length."""

from __future__ import annotations

from diced.errors import InvalidArgumentError

__all__ = ["NAME_MAX"]

_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_RESERVED = {"log", "branch", "note", "commit", "newversion", "info", "tag", "status"}


#: longest repo, instance, branch or tag name
NAME_MAX = 255


def _check_name(name: str, what: str) -> str:
    if isinstance(name, str) and len(name) > NAME_MAX:
        raise InvalidArgumentError(
            f"{what} of {len(name)} characters is too long (at most {NAME_MAX})")
    if isinstance(name, str) and name and set(name) == {"."}:
        raise InvalidArgumentError(f"{what} {name!r} is not a name")
    if not isinstance(name, str) or not name or not set(name) <= _NAME_OK or name.startswith("."):
        if isinstance(name, str) and name.startswith(".") and name[1:] and set(name[1:]) <= _NAME_OK:
            return name  # hidden names such as DICED's ".files" are allowed
        raise InvalidArgumentError(
            f"{what} {name!r}: use letters, digits, '_', '-' and '.' (not empty)")
    if name in _RESERVED:
        raise InvalidArgumentError(f"{what} {name!r} is reserved")
    return name
