"""Removing a store from fsspec's in-memory filesystem (``memory://``) after a test."""

from __future__ import annotations

__all__ = ["forget_memory"]


def forget_memory(location: str) -> None:
    """Drop every key under ``location`` (``memory://name`` or ``/name``) from fsspec's
    process-wide in-memory filesystem.

    The keys are taken straight out of the filesystem's dict: its ``rm(recursive=True)``
    checks every path against every key, and a test store's few thousand keys took up to
    16 s to remove that way."""
    import fsspec

    memory = type(fsspec.filesystem("memory"))
    root = "/" + location.split("://", 1)[-1].strip("/")
    for key in [k for k in memory.store if k == root or k.startswith(root + "/")]:
        del memory.store[key]
    memory.pseudo_dirs[:] = [d for d in memory.pseudo_dirs
                             if d != root and not d.startswith(root + "/")]
