"""``diced migrate STORE``: upgrade a store written by an older diced, in place."""

from __future__ import annotations

import argparse

_EXAMPLES = """\
examples:
  diced migrate fly.diced          upgrade an LMDB store
  diced migrate gs://bucket/fly    upgrade a store on GCS

Run it once, with no other process using the store. An interrupted migration resumes
where it stopped when run again."""


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """Register ``diced migrate`` and its arguments."""
    p = sub.add_parser(
        name, help="upgrade a store to the current storage format",
        description="Rewrite every value of a store made by an older diced in the current "
                    "storage format (format 2: every value checksummed).",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", help="store location: a path (LMDB) or an fsspec URL")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``diced migrate``: upgrade a store in place; returns the exit code."""
    from diced.backends import open_backend
    from diced.migrate import migrate_store, stored_format
    from diced.repo import keys as K

    backend = open_backend(args.store, create=False)
    try:
        before = stored_format(backend)
        if before == K.FORMAT_VERSION:
            print(f"{args.store}: already in storage format {before}")
            return 0
        count = migrate_store(backend, progress=lambda n: print(f"  {n} values", end="\r"))
    finally:
        backend.close()
    print(f"{args.store}: migrated from format {before} to {K.FORMAT_VERSION} "
          f"({count} values rewritten)")
    return 0
