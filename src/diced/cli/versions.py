"""Versioning from the command line: ``diced branch``, ``commit``, ``pack``, ``newversion``,
``tag``, ``checkout``, ``merge`` and ``diff``.

The repo's head (what writes such as ``diced ingest`` go to) is stored in the store, so a
``diced branch`` or ``diced checkout`` here moves it for the next command and the next
``store.open_repo`` in Python alike.
"""

from __future__ import annotations

import argparse
from typing import Any

from diced.cli._args import add_store_repo, examples

_RAW = argparse.RawDescriptionHelpFormatter


def _short(v: Any) -> str:
    state = "locked" if v.locked else "open"
    return f"{v.uuid[:12]} (branch {v.branch!r}, {state})"


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """Register one of the versioning commands."""
    _PARSERS[name](sub, name)


def _add_branch(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="list branches, or start a new one (the head moves there)",
        formatter_class=_RAW,
        description="Without NAME, list the branches with their newest version ('*' marks "
                    "the branch of the head). With NAME, start branch NAME at a new open "
                    "child of a locked version (default: the head) and move the head there.",
        epilog=examples("diced branch ~/fly.diced fly",
                        "diced branch ~/fly.diced fly proofreading -m 'fix mergers'",
                        "diced branch ~/fly.diced fly retrace --from master~2"))
    add_store_repo(p)
    p.add_argument("name", metavar="NAME", nargs="?", default=None, help="new branch name")
    p.add_argument("--from", dest="parent", default=None, metavar="VERSION",
                   help="locked version to branch from (default: the head)")
    p.add_argument("-m", "--message", default="", help="note of the new version")
    p.set_defaults(func=run_branch)


def run_branch(args: argparse.Namespace) -> int:
    """List branches or create one."""
    from diced.cli._store import open_existing_repo

    repo = open_existing_repo(args)
    if args.name is None:
        here = repo.head.branch
        for bname, leaf in repo.branches().items():
            mark = "*" if bname == here else " "
            print(f"{mark} {bname:20s} {_short(leaf)} {leaf.note}")
        return 0
    v = repo.branch(args.name, args.message, parent=args.parent)
    print(f"started branch {args.name!r} at {_short(v)}; the head is there now")
    return 0


def _add_commit(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="lock (commit) the head or another open version",
        formatter_class=_RAW,
        description="Lock an open version with a note and log lines. A locked version never "
                    "changes; continue with 'diced newversion' or 'diced branch'.",
        epilog=examples("diced commit ~/fly.diced fly -m 'first import'",
                        "diced commit ~/fly.diced fly -m 'proofread' --log 'merged 12 bodies' "
                        "--log 'checked by AB'",
                        "diced commit ~/fly.diced fly -m done --version 3f2a",
                        "diced commit gs://lab/fly fly -m 'release' --pack"))
    add_store_repo(p)
    p.add_argument("-m", "--message", required=True, help="the version's note")
    p.add_argument("--log", action="append", default=[], metavar="LINE",
                   help="a log line (repeatable)")
    p.add_argument("--version", default=None, help="open version to lock (default: the head)")
    p.add_argument("--pack", action="store_true",
                   help="also pack the chunks it wrote (object stores, file://: cold reads "
                        "take a few ranged GETs instead of one per chunk; see 'diced pack')")
    p.set_defaults(func=run_commit)


def run_commit(args: argparse.Namespace) -> int:
    """Lock a version."""
    from diced.cli._store import open_existing_repo

    repo = open_existing_repo(args)
    v = repo.commit(args.message, args.log, uuid=args.version, pack=args.pack)
    note = ""
    if args.pack:
        note = (" (--pack: nothing to do on this store, whose reads are local seeks)"
                if repo.backend.capabilities.ordered_scan else " (packed)")
    print(f"locked {_short(v)}: {v.note}{note}")
    return 0


def _add_pack(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="pack a locked version's chunks for fewer, ranged reads",
        formatter_class=_RAW,
        description="Store copies of the chunks a locked version (default: the head) wrote, "
                    "several per object, so that reads at it and its descendants fetch them "
                    "with a few ranged GETs instead of one GET per chunk. Object stores and "
                    "file:// only (LMDB reads are local seeks: nothing to do). The chunks "
                    "then take twice the space; squash and gc delete packs with the "
                    "versions they belong to.",
        epilog=examples("diced pack gs://lab/fly fly",
                        "diced pack s3://lab/fly fly --version 3f2a"))
    add_store_repo(p)
    p.add_argument("--version", default=None, help="locked version to pack (default: the head)")
    p.set_defaults(func=run_pack)


def run_pack(args: argparse.Namespace) -> int:
    """Pack a locked version."""
    from diced.cli._store import open_existing_repo

    repo = open_existing_repo(args)
    v = repo.version(args.version) if args.version else repo.head
    n = repo.pack(v.uuid)
    if n == 0:
        print(f"{_short(v)}: nothing to pack on this store (ordered store: reads are "
              "local seeks)")
    else:
        print(f"packed {_short(v)} in {n} key space(s); its descendants' indexes name "
              "the packs too")
    return 0


def _add_newversion(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="continue the head's branch with a new open version",
        formatter_class=_RAW,
        description="Make a new open child of a locked version (default: the head) on the "
                    "same branch and move the head there, so writes can continue.",
        epilog=examples("diced newversion ~/fly.diced fly",
                        "diced newversion ~/fly.diced fly -m 'second pass' --from 3f2a"))
    add_store_repo(p)
    p.add_argument("--from", dest="parent", default=None, metavar="VERSION",
                   help="locked version to continue (default: the head)")
    p.add_argument("-m", "--message", default="", help="note of the new version")
    p.set_defaults(func=run_newversion)


def run_newversion(args: argparse.Namespace) -> int:
    """Continue a branch."""
    from diced.cli._store import open_existing_repo

    repo = open_existing_repo(args)
    v = repo.newversion(args.message, parent=args.parent)
    print(f"new version {_short(v)}; the head is there now")
    return 0


def _add_tag(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="list tags, or name a locked version",
        formatter_class=_RAW,
        description="Without NAME, list the tags. With NAME, tag a locked version (default: "
                    "the head); the tag then works wherever a version is asked for.",
        epilog=examples("diced tag ~/fly.diced fly",
                        "diced tag ~/fly.diced fly v1.0 -m 'first release'",
                        "diced tag ~/fly.diced fly before-merge --version master~1"))
    add_store_repo(p)
    p.add_argument("name", metavar="NAME", nargs="?", default=None, help="tag to create")
    p.add_argument("--version", default=None, help="locked version to tag (default: the head)")
    p.add_argument("-m", "--message", default="", help="note of the tag")
    p.set_defaults(func=run_tag)


def run_tag(args: argparse.Namespace) -> int:
    """List or create tags."""
    from diced.cli._store import open_existing_repo

    repo = open_existing_repo(args)
    if args.name is None:
        for tname, v in repo.tags().items():
            target = repo.version(v.parents[0]) if v.parents else v
            print(f"{tname:20s} -> {_short(target)} {v.note}")
        return 0
    v = repo.tag(args.name, args.message, parent=args.version)
    print(f"tagged {repo.version(v.parents[0]).uuid[:12]} as {args.name!r}")
    return 0


def _add_checkout(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="move the head to another version",
        formatter_class=_RAW,
        description="Move the repo's head (where writes such as 'diced ingest' go, and where "
                    "store.open_repo() lands) to VERSION. Reading any version needs no "
                    "checkout: every command takes --version.",
        epilog=examples("diced checkout ~/fly.diced fly proofreading",
                        "diced checkout ~/fly.diced fly 3f2a9c",
                        "diced checkout ~/fly.diced fly master~2"))
    add_store_repo(p)
    p.add_argument("version", metavar="VERSION",
                   help="UUID (prefix), branch name, branch~N or tag")
    p.set_defaults(func=run_checkout)


def run_checkout(args: argparse.Namespace) -> int:
    """Move the head."""
    from diced.cli._store import open_existing_repo

    repo = open_existing_repo(args)
    v = repo.checkout(args.version)
    print(f"head is now {_short(v)}")
    return 0


def _add_merge(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="merge two or more locked versions into a new open version",
        formatter_class=_RAW,
        description="Join locked versions into a new open version on master, which becomes "
                    "the head. Chunks or keys changed differently on several sides since the "
                    "merge base are conflicts: by default they are listed and nothing is "
                    "stored (exit code 2); --strategy PARENT makes one side win them all.",
        epilog=examples("diced merge ~/fly.diced fly proofreading annotation -m 'join'",
                        "diced merge ~/fly.diced fly 3f2a 9c1b --strategy 3f2a",
                        "diced merge ~/fly.diced fly a b c --strategy 0   # first side wins"))
    add_store_repo(p)
    p.add_argument("versions", metavar="VERSION", nargs="+",
                   help="two or more locked versions (UUID prefixes, branches, tags)")
    p.add_argument("-m", "--message", default="", help="note of the merge version")
    p.add_argument("--strategy", default="fail",
                   help="'fail' (default), or the parent (UUID prefix or 0-based index among "
                        "VERSIONs) that wins every conflict")
    p.set_defaults(func=run_merge)


def run_merge(args: argparse.Namespace) -> int:
    """Merge versions."""
    from diced.cli._store import open_existing_repo
    from diced.errors import InvalidArgumentError, MergeConflictError

    if len(args.versions) < 2:
        raise InvalidArgumentError("merge needs two or more VERSIONs")
    strategy: Any = args.strategy
    if strategy.isdigit() and int(strategy) < len(args.versions):
        strategy = int(strategy)  # an index among the VERSIONs, not a UUID prefix
    repo = open_existing_repo(args)
    try:
        v = repo.merge(*args.versions, note=args.message, strategy=strategy)
    except MergeConflictError as exc:
        conflicts = list(getattr(exc, "conflicts", []) or [])
        for c in conflicts[:20]:
            print(f"conflict: {c.instance} {c.key}")
        if len(conflicts) > 20:
            print(f"... and {len(conflicts) - 20} more")
        raise
    print(f"merged {len(args.versions)} versions into {_short(v)}; the head is there now")
    return 0


def _add_diff(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name, help="what changed between two versions, per instance",
        formatter_class=_RAW,
        description="List, per instance, how many chunks (or keys) were added, changed and "
                    "removed from version A to version B (default: the head). --keys prints "
                    "them; --labels adds which labels gained or lost voxels. Read-only.",
        epilog=examples("diced diff ~/fly.diced fly master~1",
                        "diced diff ~/fly.diced fly master proofreading --keys",
                        "diced diff ~/fly.diced fly v1.0 master --labels"))
    add_store_repo(p)
    p.add_argument("a", metavar="A", help="the older version")
    p.add_argument("b", metavar="B", nargs="?", default=None,
                   help="the newer version (default: the head)")
    p.add_argument("--keys", action="store_true",
                   help="print every added/changed/removed chunk coordinate or key")
    p.add_argument("--labels", action="store_true",
                   help="label arrays: print the labels whose voxel counts changed")
    p.set_defaults(func=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    """Print a diff."""
    from diced.cli._store import open_existing_repo

    repo = open_existing_repo(args)
    d = repo.diff(args.a, args.b)
    print(d.summary() if d else f"diff {d.a[:8]} -> {d.b[:8]}: no changes")
    if args.keys:
        for iname, idiff in d.instances.items():
            for what in ("added", "changed", "removed"):
                for key in getattr(idiff, what):
                    print(f"  {iname} {what} {key}")
    if args.labels:
        for iname, typ in repo.instances(d.b).items():
            if typ != "labels" or iname not in d.instances:
                continue
            delta = repo.version(d.b).labels(iname).label_diff(d.a, d.b)
            for label, n in sorted(delta.items()):
                print(f"  {iname} label {label}: {n:+d} voxels")
    return 0


_PARSERS = {
    "branch": _add_branch,
    "commit": _add_commit,
    "pack": _add_pack,
    "newversion": _add_newversion,
    "tag": _add_tag,
    "checkout": _add_checkout,
    "merge": _add_merge,
    "diff": _add_diff,
}
