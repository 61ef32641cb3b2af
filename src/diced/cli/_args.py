"""Argument types shared by the diced subcommands."""

from __future__ import annotations

import argparse

__all__ = ["ints"]


def ints(text: str) -> list[int]:
    """``"64,64,64"`` -> ``[64, 64, 64]`` (empty parts ignored), for ``type=``."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
