"""``diced info STORE`` and ``diced log STORE REPO``: look inside a store."""

from __future__ import annotations

import argparse
import time


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    if name == "info":
        p = sub.add_parser("info", help="list the repos, versions and instances of a store",
                           description="List the repos of a store with their versions and "
                                       "data instances.")
        p.add_argument("store", help="store location: a path (LMDB) or an fsspec URL")
        p.set_defaults(func=run_info)
    else:
        p = sub.add_parser("log", help="show the version history of a repo",
                           description="Show every version of a repo, oldest first, with its "
                                       "branch, lock state and note.")
        p.add_argument("store", help="store location: a path (LMDB) or an fsspec URL")
        p.add_argument("repo", help="repo name (alias)")
        p.set_defaults(func=run_log)


def run_info(args: argparse.Namespace) -> int:
    import diced

    store = diced.Store(args.store)
    repos = store.list_repos()
    if not repos:
        print(f"{args.store}: no repos")
    for alias, uuid in repos:
        repo = store.open_repo(alias)
        print(f"repo {alias!r} root={uuid} versions={len(repo.versions())} "
              f"branches={sorted(repo.branches())}")
        for name, typ in repo.instances().items():
            print(f"  {typ:9s} {name}")
    return 0


def run_log(args: argparse.Namespace) -> int:
    import diced

    repo = diced.Store(args.store).open_repo(args.repo)
    for v in repo.versions():
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.created))
        state = "locked" if v.locked else "open  "
        parents = ",".join(p[:8] for p in v.parents) or "-"
        print(f"{v.uuid[:12]} {when} {state} branch={v.branch:<12} parents={parents:<17} {v.note}")
    return 0
