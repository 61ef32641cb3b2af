"""Byte-size limits set in code or in the environment (the locked-chunk cache, the result
pool): one check and one parser, so both give the same errors."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from diced.errors import InvalidArgumentError

__all__ = ["byte_limit", "env_byte_limit"]


def byte_limit(value: Any, what: str) -> int:
    """``value`` as a non-negative number of bytes; :class:`InvalidArgumentError` naming
    ``what`` otherwise (booleans and floats included)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidArgumentError(
            f"{what} must be a non-negative integer of bytes, got {value!r}")
    return int(value)


def env_byte_limit(name: str, default: int) -> int:
    """The environment variable ``name`` as a number of bytes (``default`` when unset or
    blank); :class:`InvalidArgumentError` naming it when it is not one."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgumentError(
            f"{name} must be an integer number of bytes, got {raw!r}") from None
    if value < 0:
        raise InvalidArgumentError(f"{name} must be >= 0, got {raw!r}")
    return value
