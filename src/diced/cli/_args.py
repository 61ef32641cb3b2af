"""Argument types and shared arguments of the diced subcommands."""

from __future__ import annotations

import argparse

__all__ = ["STORE_HELP", "add_store_repo", "examples", "floats", "ints"]

STORE_HELP = ("store location: a path (embedded LMDB store) or an fsspec URL "
              "(file://, gs://, s3://); it must exist")


def ints(text: str) -> list[int]:
    """``"64,64,64"`` -> ``[64, 64, 64]`` (empty parts ignored), for ``type=``."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def floats(text: str) -> list[float]:
    """``"40,8,8"`` -> ``[40.0, 8.0, 8.0]`` (all positive), for ``type=``."""
    try:
        out = [float(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    if not out or any(not v > 0 for v in out):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return out


def add_store_repo(p: argparse.ArgumentParser) -> None:
    """The ``STORE REPO`` positionals every versioning command starts with."""
    p.add_argument("store", metavar="STORE", help=STORE_HELP)
    p.add_argument("repo", metavar="REPO", help="repo name (alias), as listed by 'diced info'")


def examples(*lines: str) -> str:
    """An ``epilog`` listing example command lines."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)
