"""Opening stores and repos from the command line without ever creating one by accident.

Only ``diced tour`` and ``diced ingest --create-repo`` create stores; every other command
refuses a location that does not hold a diced store, with a one-line error naming it.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from diced.errors import NotFoundError

__all__ = ["StoreNotFound", "open_existing_repo", "open_existing_store"]


class StoreNotFound(NotFoundError):
    """The location given to a command is not an existing diced store."""

    code = "store_not_found"


def _local_path(location: str) -> str | None:
    if "://" not in location:
        return os.path.expanduser(location)
    protocol, rest = location.split("://", 1)
    return os.path.expanduser(rest) if protocol == "lmdb" else None


def _check_local(location: str, path: str, marker: str) -> None:
    if not os.path.exists(path):
        raise StoreNotFound(f"no diced store at {location}: the path does not exist")
    if not os.path.isdir(path):
        raise StoreNotFound(f"{location} is a file, not a diced store (a store is a directory)")
    if not os.path.exists(os.path.join(path, marker)):
        raise StoreNotFound(f"{location} is a directory but not a diced store (no {marker})")


def open_existing_store(location: str, **options: Any) -> Any:
    """Open the diced store at ``location``; refuse (never create) anything else.

    Raises
    ------
    StoreNotFound
        ``location`` does not exist, is a file, or is not a diced store.
    """
    import diced
    from diced.repo import keys as K

    path = _local_path(location)
    if path is not None:
        _check_local(location, path, "data.mdb")
    elif location.startswith("file://"):
        _check_local(location, location[len("file://"):], os.path.join(*K.FORMAT_KEY.split("/")))
    return diced.Store(location, create=False, **options)


def open_existing_repo(args: argparse.Namespace, version: str | None = None) -> Any:
    """The repo ``args.repo`` of the store ``args.store`` (head at ``version`` if given)."""
    store = open_existing_store(args.store)
    return store.open_repo(args.repo, version=version)
