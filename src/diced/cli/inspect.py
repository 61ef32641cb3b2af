"""``diced info STORE [REPO]`` and ``diced log STORE REPO [VERSION]``: look inside a store.

Both are read-only: they never create or change a store.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from diced.cli._args import STORE_HELP, examples


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """Register ``info`` or ``log``."""
    if name == "info":
        p = sub.add_parser(
            "info", help="list the repos, versions and instances of a store",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            description="List the repos of a store: versions, branches, tags and the head, "
                        "then every data instance visible at the head with its type, shape, "
                        "dtype, chunk shape and what it stores (values and bytes, over all "
                        "versions). Instances whose name starts with '.' (diced's and DICED's "
                        "internal ones such as .ingest and .files) are hidden unless --all. "
                        "Read-only: a location that is not a store is an error.",
            epilog=examples("diced info ~/fly.diced",
                            "diced info ~/fly.diced fly --all",
                            "diced info gs://bucket/fly.diced fly --no-sizes"))
        p.add_argument("store", metavar="STORE", help=STORE_HELP)
        p.add_argument("repo", metavar="REPO", nargs="?", default=None,
                       help="only this repo (default: all repos)")
        p.add_argument("--all", action="store_true", help="also list internal instances ('.name')")
        p.add_argument("--no-sizes", action="store_true",
                       help="skip the stored sizes (they read every stored value's length)")
        p.set_defaults(func=run_info)
    else:
        p = sub.add_parser(
            "log", help="show the version history of a repo",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            description="Show the versions of a repo, oldest first: UUID, time, lock state, "
                        "branch, parents and note ('*' marks the head). With VERSION, only "
                        "its first-parent history (as 'git log --first-parent'). Read-only.",
            epilog=examples("diced log ~/fly.diced fly",
                            "diced log ~/fly.diced fly proofreading      # one branch's history",
                            "diced log ~/fly.diced fly 3f2a --notes      # with commit log lines"))
        p.add_argument("store", metavar="STORE", help=STORE_HELP)
        p.add_argument("repo", metavar="REPO", help="repo name (alias)")
        p.add_argument("version", metavar="VERSION", nargs="?", default=None,
                       help="UUID prefix, branch, branch~N or tag whose history to show "
                            "(default: every version)")
        p.add_argument("--notes", action="store_true", help="also print each version's log lines")
        p.set_defaults(func=run_log)


def _human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)  # pragma: no cover


def _stored(backend: Any, rec: dict[str, Any]) -> tuple[int, int, int | None]:
    """``(values, bytes, unique bytes)`` stored by an instance over all versions (all of its
    key spaces). ``unique bytes`` is ``None`` except in a deduplicating store, where ``bytes``
    counts a shared payload once per value referring to it and ``unique bytes`` once."""
    from diced.repo import keys as K
    from diced.repo.repo import instance_spaces

    sizes = getattr(backend, "value_sizes", None)  # a deduplicating store
    values = nbytes = inline = 0
    refs: list[str] = []
    for space in instance_spaces(rec):
        keys = [k for k in backend.list_keys(K.data_prefix(space)) if k.endswith(K.DATA)]
        for i in range(0, len(keys), 1024):
            part = keys[i:i + 1024]
            if sizes is not None:
                n, inl, hs = sizes(part)
                values, inline = values + n, inline + inl
                refs += hs
                continue
            got = backend.get_many(part)
            values += sum(v is not None for v in got)
            nbytes += sum(len(v) for v in got if v is not None)
    if sizes is None:
        return values, nbytes, None
    shared = backend.payload_bytes(sorted(set(refs)))
    return values, inline + sum(shared[h] for h in refs), inline + sum(shared.values())


def _describe(repo: Any, name: str, typ: str, sizes: bool) -> str:
    inst = repo[name]
    if typ == "keyvalue":
        what = f"{len(inst)} keys"
    elif hasattr(inst, "dtype"):  # arrays and label arrays
        what = (f"{inst.dtype!s:8s} shape={tuple(inst.shape)} chunks={tuple(inst.chunks)}"
                + (f" scales=0..{inst.max_scale}" if inst.max_scale else ""))
    else:  # any other datatype (annotation, third-party types)
        what = f"{len(inst)} items" if hasattr(inst, "__len__") else ""
    if sizes:
        values, nbytes, unique = _stored(repo.backend, repo._doc["instances"][name])
        what += f"  stored: {values} values, {_human(nbytes)}"
        if unique is not None:  # a deduplicating store: payloads shared by values count once
            what += f" ({_human(unique)} deduplicated)"
        packs, pbytes = _packed(repo.backend, repo._doc["instances"][name])
        if packs:  # chunk packs (commit(pack=True)): copies, read with ranged GETs
            what += f"; chunk packs: {packs} objects, {_human(pbytes)}"
    return f"  {typ:9s} {name:20s} {what}"


def _packed(backend: Any, rec: dict[str, Any]) -> tuple[int, int]:
    """``(objects, bytes)`` of the chunk packs of an instance (all versions, all spaces)."""
    from diced.repo import keys as K
    from diced.repo.repo import instance_spaces

    keys = [k for space in instance_spaces(rec) for k in backend.list_keys(K.compact_prefix(space))
            if "/p/" in k]
    nbytes = 0
    for i in range(0, len(keys), 64):
        nbytes += sum(len(v) for v in backend.get_many(keys[i:i + 64]) if v is not None)
    return len(keys), nbytes


def run_info(args: argparse.Namespace) -> int:
    """Print the repos of a store and the instances at each head."""
    from diced.cli._store import open_existing_store

    store = open_existing_store(args.store)
    repos = store.list_repos()
    if args.repo is not None:
        repos = [(a, u) for a, u in repos if a == args.repo]
        if not repos:
            store.open_repo(args.repo)  # raises RepoNotFoundError with the store's name
    if not repos:
        print(f"{args.store}: a diced store with no repos")
    for alias, uuid in repos:
        repo = store.open_repo(alias)
        head = repo.head
        tags = sorted(repo.tags())
        print(f"repo {alias!r} root={uuid[:12]} versions={len(repo.versions())} "
              f"branches={','.join(sorted(repo.branches()))}"
              + (f" tags={','.join(tags)}" if tags else ""))
        print(f"  head {head.uuid[:12]} on branch {head.branch!r} "
              f"({'locked' if head.locked else 'open'})"
              + (f": {head.note}" if head.note else ""))
        hidden = 0
        for name, typ in repo.instances().items():
            if name.startswith(".") and not args.all:
                hidden += 1
                continue
            print(_describe(repo, name, typ, not args.no_sizes))
        if hidden:
            print(f"  ({hidden} internal instance{'s' * (hidden > 1)} hidden; --all lists them)")
    return 0


def run_log(args: argparse.Namespace) -> int:
    """Print the versions of a repo (or one version's first-parent history)."""
    from diced.cli._store import open_existing_repo

    repo = open_existing_repo(args)
    versions = repo.log(args.version) if args.version else repo.versions()
    head = repo.current_uuid
    for v in versions:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.created))
        state = "locked" if v.locked else "open  "
        parents = ",".join(p[:8] for p in v.parents) or "-"
        mark = "*" if v.uuid == head else " "
        name = f"tag={v.tag}" if v.tag else f"branch={v.branch}"
        print(f"{mark} {v.uuid[:12]} {when} {state} {name:<20} parents={parents:<17} {v.note}")
        if args.notes:
            for line in v.log:
                print(f"      {line}")
    return 0
