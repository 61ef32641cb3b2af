"""Storage helpers shared by the label array modules: label keys, label-index entries."""

from __future__ import annotations

import numpy as np

from diced.errors import CorruptDataError

__all__ = ["MAX_LABEL", "Retry", "decode_index", "encode_index", "lkey"]

MAX_LABEL = (1 << 64) - 1


def lkey(label: int) -> str:
    return f"{int(label):016x}"


def encode_index(entry: dict[tuple[int, int, int], int]) -> bytes | None:
    if not entry:
        return None
    arr = np.array([(*c, n) for c, n in sorted(entry.items())], dtype="<u8")
    return arr.tobytes()


def decode_index(data: bytes | None) -> dict[tuple[int, int, int], int]:
    """The ``{(z, y, x) block: voxel count}`` of a label-index value.

    Raises
    ------
    CorruptDataError
        The value is not a whole number of 32-byte entries.
    """
    if not data:
        return {}
    if len(data) % 32:
        raise CorruptDataError(
            f"label index value of {len(data)} bytes is not a whole number of 32-byte entries")
    arr = np.frombuffer(data, dtype="<u8").reshape(-1, 4)
    return {(int(z), int(y), int(x)): int(n) for z, y, x, n in arr}


class Retry(Exception):
    """The state an edit or write was planned from changed; plan again."""
