"""``diced chain BASE LOCAL``: start a chained store (local edits over a read-only base)."""

from __future__ import annotations

import argparse

_EXAMPLES = """\
examples:
  diced chain gs://lab-public/fly-v1 ~/fly-work.diced
  diced chain /shared/published/fly.diced ~/fly-work.diced
  diced info ~/fly-work.diced                  every command opens the chain from now on
  diced branch ~/fly-work.diced fly proofread  new versions live in ~/fly-work.diced

BASE is never written: its locked versions are read where they are, and reads of chunks a
new version did not change fall through to it. LOCAL (a new or empty location, normally an
LMDB path) holds every write and records BASE, so diced.Store(LOCAL) and every diced
command on LOCAL open the chain again. BASE must not change while chains use it: publish
a new copy instead. Running the command again on the same pair does nothing."""


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """Register ``diced chain`` and its arguments."""
    p = sub.add_parser(
        name, help="start a chained store: local edits over a read-only published store",
        description="Make LOCAL a chained store over the published store BASE (DVID's "
                    "'work in progress' setup): new versions, branches and instances are "
                    "made in LOCAL; BASE is only read.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", help="the published store: a path (LMDB) or an fsspec URL")
    p.add_argument("local", help="where local edits go: a new or empty path (LMDB) or URL")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``diced chain``: record the base in the local layer; returns the exit code."""
    from diced.store import Store

    with Store.chain(args.base, args.local) as store:
        repos = store.list_repos()
        names = ", ".join(alias for alias, _ in repos) or "none"
    print(f"{args.local}: chained store over {args.base}")
    print(f"  repos: {names}")
    print(f"  open it with diced.Store({args.local!r}) or any diced command on {args.local}")
    return 0
