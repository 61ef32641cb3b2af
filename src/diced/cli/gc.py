"""Removing history from the command line: ``diced delete-version``, ``delete-branch``,
``squash`` and ``gc``.

Deleting and squashing change only the version graph; the data they leave unreachable is
reclaimed by ``diced gc`` (whose cost grows with that garbage, not with the store).
"""

from __future__ import annotations

import argparse

from diced.cli._args import STORE_HELP, add_store_repo, examples

_RAW = argparse.RawDescriptionHelpFormatter
_GC_HINT = "run 'diced gc {store}' to reclaim the data"


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """Register one of the history-removal commands."""
    _PARSERS[name](sub, name)


def _add_collect_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gc", action="store_true",
                   help="reclaim the data right away (as 'diced gc' does)")


def _add_delete_version(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="delete a leaf version (no children, tags included)",
        formatter_class=_RAW,
        description="Delete one version that has no children (a tag is a child of the "
                    "version it names) and is not the root, as DVID allows. Its data is "
                    "reclaimed by 'diced gc'.",
        epilog=examples("diced delete-version ~/fly.diced fly 3f2a",
                        "diced delete-version ~/fly.diced fly my-tag --gc"))
    add_store_repo(p)
    p.add_argument("version", metavar="VERSION", help="UUID, UUID prefix, tag or branch~N")
    _add_collect_flag(p)
    p.set_defaults(func=run_delete_version)


def _add_delete_branch(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="delete a branch's versions that nothing else builds on",
        formatter_class=_RAW,
        description="Delete branch NAME from its leaf backwards, stopping at the first "
                    "version another branch, a tag or a merge builds on (that version and "
                    "its ancestors stay). 'master' cannot be deleted.",
        epilog=examples("diced delete-branch ~/fly.diced fly experiment",
                        "diced delete-branch ~/fly.diced fly experiment --gc"))
    add_store_repo(p)
    p.add_argument("name", metavar="NAME", help="branch name")
    _add_collect_flag(p)
    p.set_defaults(func=run_delete_branch)


def _add_squash(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="fold a linear run of locked versions into its newest one",
        formatter_class=_RAW,
        description="Fold the locked versions FIRST .. LAST (a single-parent chain whose "
                    "versions, LAST excepted, have no other child) into LAST, which keeps "
                    "its UUID, content and children and takes FIRST's parents.",
        epilog=examples("diced squash ~/fly.diced fly 3f2a 9c1e",
                        "diced squash ~/fly.diced fly master~10 master~1 --gc"))
    add_store_repo(p)
    p.add_argument("first", metavar="FIRST", help="oldest version of the run")
    p.add_argument("last", metavar="LAST", help="newest version of the run (kept)")
    _add_collect_flag(p)
    p.set_defaults(func=run_squash)


def _add_gc(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="reclaim the data of deleted and squashed versions",
        formatter_class=_RAW,
        description="Delete everything stored at versions removed by delete-version, "
                    "delete-branch or squash (and, in a deduplicating store, shared "
                    "payloads nothing refers to any more). Safe to interrupt and rerun.",
        epilog=examples("diced gc ~/fly.diced", "diced gc gs://bucket/fly.diced --repo fly"))
    p.add_argument("store", metavar="STORE", help=STORE_HELP)
    p.add_argument("--repo", default=None, help="only this repo's deleted versions")
    p.set_defaults(func=run_gc)


def _finish(args: argparse.Namespace, repo) -> None:
    if args.gc:
        print(repo.gc())
    else:
        print(_GC_HINT.format(store=args.store))


def run_delete_version(args: argparse.Namespace) -> int:
    """Delete a leaf version."""
    from diced.cli._store import open_existing_repo

    repo = open_existing_repo(args)
    for u in repo.delete_version(args.version):
        print(f"deleted version {u}")
    _finish(args, repo)
    return 0


def run_delete_branch(args: argparse.Namespace) -> int:
    """Delete a branch's leaf-first run."""
    from diced.cli._store import open_existing_repo

    repo = open_existing_repo(args)
    gone = repo.delete_branch(args.name)
    print(f"deleted {len(gone)} version(s) of branch {args.name!r}: "
          + ", ".join(u[:12] for u in gone))
    if args.name in repo.branches():
        print(f"branch {args.name!r} keeps {repo.branches()[args.name].uuid[:12]} and its "
              "ancestors (other versions build on them)")
    _finish(args, repo)
    return 0


def run_squash(args: argparse.Namespace) -> int:
    """Squash a linear run of locked versions."""
    from diced.cli._store import open_existing_repo

    repo = open_existing_repo(args)
    before = len(repo.dag.nodes)
    v = repo.squash(args.first, args.last)
    print(f"squashed {before - len(repo.dag.nodes) + 1} version(s) into {v.uuid[:12]}")
    _finish(args, repo)
    return 0


def run_gc(args: argparse.Namespace) -> int:
    """Collect garbage."""
    from diced.cli._store import open_existing_store

    store = open_existing_store(args.store)
    try:
        if args.repo is not None:
            print(store.open_repo(args.repo).gc())
        else:
            print(store.gc())
    finally:
        store.close()
    return 0


_PARSERS = {"delete-version": _add_delete_version, "delete-branch": _add_delete_branch,
            "squash": _add_squash, "gc": _add_gc}
