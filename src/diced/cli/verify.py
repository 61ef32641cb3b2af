"""``diced verify STORE [REPO]``: check (and repair) a store's stored values."""

from __future__ import annotations

import argparse
import json

_EXAMPLES = """\
examples:
  diced verify fly.diced                     check every value of the store
  diced verify fly.diced fly --version edit  only the history of branch 'edit' of repo 'fly'
  diced verify fly.diced fly --repair        fix what can be fixed at open versions
  diced verify gs://bucket/fly --json        machine-readable report

exit status: 0 when nothing is wrong (or everything was repaired), 1 when problems are left,
2 on an error (no such store or repo)."""


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """Register ``diced verify`` and its arguments."""
    p = sub.add_parser(
        name, help="check every stored value: checksums, decoding, label indexes",
        description="Walk a store (or one repo, or the history of one version): check every "
                    "value's CRC32C, that chunks and label indexes decode, and that label "
                    "indexes agree with the label blocks. --repair removes corrupt values "
                    "written at open versions and rebuilds their label indexes; locked "
                    "versions are never changed (their problems are reported).",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", help="store location: a path (LMDB) or an fsspec URL")
    p.add_argument("repo", nargs="?", help="only this repo (name or UUID prefix)")
    p.add_argument("--version", help="only the history of this version (UUID prefix, branch, "
                                     "tag); needs REPO")
    p.add_argument("--repair", action="store_true",
                   help="fix problems at open versions (never at locked ones)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``diced verify``: 0 when clean, 1 when problems remain."""
    import diced

    store = diced.Store(args.store, create=False)
    try:
        report = store.verify(args.repo, args.version, repair=args.repair)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        for problem in report.problems:
            print(problem)
        print(report.summary())
    return 0 if report.ok else 1
