"""The ``diced`` command line: ``diced tour``, ``diced info``, ``diced log``, and the export,
ingest and serve commands. Each subcommand lives in its own module with ``add_parser(sub)``
registering its arguments and a ``run(args)`` function; ``_COMMANDS`` lists them."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from diced.errors import DicedError

__all__ = ["main"]

#: subcommand name -> module (imported only when that command runs or --help is shown)
_COMMANDS = {
    "tour": "diced.cli.tour",
    "info": "diced.cli.inspect",
    "log": "diced.cli.inspect",
    "ingest": "diced.cli.ingest",
    "export": "diced.cli.export",
    "export-shards": "diced.cli.export",
    "serve": "diced.cli.serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diced",
        description="diced: versioned, chunked nD arrays and DVID-compatible label volumes.",
        epilog="Run 'diced COMMAND --help' for the options of one command.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _COMMANDS.items():
        importlib.import_module(module).add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except DicedError as exc:
        print(f"diced {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
