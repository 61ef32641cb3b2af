"""The ``diced`` command line.

Each subcommand lives in a module with ``add_parser(sub, name)`` registering its arguments
(with examples in its ``--help``) and a ``run...(args)`` function; ``_COMMANDS`` lists them.
Errors print one line (``diced CMD: error: ...``) and exit with code 2; Ctrl-C exits with
code 130. Commands other than ``tour``, ``ingest --create-repo`` and ``chain`` (which makes
the local layer of a chained store) never create a store.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

from diced.errors import DicedError

__all__ = ["build_parser", "main"]

#: subcommand name -> module (imported when the parser is built; the heavy imports of each
#: command happen inside its run function)
_COMMANDS = {
    "tour": "diced.cli.tour",
    "info": "diced.cli.inspect",
    "log": "diced.cli.inspect",
    "branch": "diced.cli.versions",
    "commit": "diced.cli.versions",
    "pack": "diced.cli.versions",
    "newversion": "diced.cli.versions",
    "tag": "diced.cli.versions",
    "checkout": "diced.cli.versions",
    "merge": "diced.cli.versions",
    "diff": "diced.cli.versions",
    "delete-version": "diced.cli.gc",
    "delete-branch": "diced.cli.gc",
    "squash": "diced.cli.gc",
    "gc": "diced.cli.gc",
    "ingest": "diced.cli.ingest",
    "export": "diced.cli.export",
    "export-shards": "diced.cli.export",
    "verify": "diced.cli.verify",
    "migrate": "diced.cli.migrate",
    "chain": "diced.cli.chain",
    "convert-shards": "diced.cli.convert",
    "verify-export": "diced.cli.convert",
    "serve": "diced.cli.serve",
}

#: Python-argument hints in library messages -> the flags that do the same here
_FLAG_HINTS = [
    (re.compile(r"\bcommit\(pack=True\)"), "'diced commit --pack'"),
    (re.compile(r"\boverwrite=True\b"), "--overwrite"),
    (re.compile(r"\bresume=False\b"), "--no-resume"),
    (re.compile(r"\bcreate=False\b"), "--into-existing"),
    (re.compile(r"pass create=True to make one"), "drop --into-existing to make one"),
    (re.compile(r"\bslab=(\S+?)\b"), r"--slab \1"),
    (re.compile(r"\bpass strategy= to\b"), "pass --strategy PARENT to"),
    (re.compile(r"\bwith dataset=(?=[\s,.;)]|$)"), "with --dataset"),
    (re.compile(r"\baxes=(?=[\s,.;)]|$)"), "--axes"),
    (re.compile(r"\baxes=(?=')"), "--axes "),
]


def cli_message(message: str) -> str:
    """A library error message with its Python-argument hints rewritten as CLI flags."""
    for pattern, flag in _FLAG_HINTS:
        message = pattern.sub(flag, message)
    return message


def build_parser() -> argparse.ArgumentParser:
    """The ``diced`` argument parser with every subcommand registered."""
    from diced import __version__

    parser = argparse.ArgumentParser(
        prog="diced",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="diced: versioned, chunked nD arrays and DVID-compatible label volumes.",
        epilog="Run 'diced COMMAND --help' for the options and examples of one command.\n\n"
               "examples:\n"
               "  diced tour\n"
               "  diced info ~/fly.diced\n"
               "  diced log ~/fly.diced fly")
    parser.add_argument("--version", action="version", version=f"diced {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _COMMANDS.items():
        importlib.import_module(module).add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``diced`` command line; returns the exit code.

    0 on success, 1 without a command, 2 on an error (one line on stderr), 130 on Ctrl-C.
    """
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("diced: interrupted", file=sys.stderr)
        return 130
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"diced {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. 'diced log ... | head': the reader left, not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (DicedError, OSError) as exc:
        if args.verbose:
            logging.getLogger(__name__).exception("diced %s failed", args.command)
        text = cli_message(str(exc)) if isinstance(exc, DicedError) else _os_message(exc)
        print(f"diced {args.command}: error: {text}", file=sys.stderr)
        return 2


def _os_message(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
