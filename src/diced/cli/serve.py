"""``diced serve STORE``: serve a store over DVID's HTTP API (and the web page, when present)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """Register ``diced serve`` and its arguments."""
    p = sub.add_parser(
        "serve", help="serve a store over a DVID-compatible HTTP API",
        description="Serve a store (a path to an LMDB store or an fsspec URL) over DVID's HTTP "
                    "API, so DVID clients (neuclease, dvidtools, Neuroglancer's dvid:// source) "
                    "work against it unchanged. Binding anything but loopback makes "
                    "mutations require a token (--token-file, or a random one that is printed).",
        epilog="examples:\n"
               "  diced serve ~/data/fly.diced\n"
               "  diced serve ~/data/fly.diced --port 9000 --read-only\n"
               "  diced serve ~/data/new.diced --create        # start an empty store\n"
               "  diced serve gs://bucket/fly --host 0.0.0.0 --token-file ~/.diced-token\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", help="store location: a path (LMDB) or an fsspec URL")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks one)")
    p.add_argument("--read-only", action="store_true", help="refuse every mutation with 403")
    p.add_argument("--create", action="store_true",
                   help="make an empty store at STORE if there is none (otherwise a path that is "
                        "not a diced store is refused, so a typo never starts an empty server)")
    p.add_argument("--token-file", default=None,
                   help="file whose first line is the token mutations must carry "
                        "(Authorization: Bearer TOKEN or ?admintoken=TOKEN)")
    p.add_argument("--cors", default="", metavar="ORIGINS",
                   help="comma-separated origins allowed from browsers (default: any, '*')")
    p.add_argument("--max-body-mb", type=int, default=256,
                   help="largest request body in MiB (default 256)")
    p.set_defaults(func=run)


def read_token_file(path: str) -> str:
    """The token in the first line of ``path`` (at least 8 characters)."""
    from pathlib import Path

    from diced.errors import InvalidArgumentError

    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read the token file {path}: {exc}") from exc
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(token) < 8:
        raise InvalidArgumentError(f"the token in {path} is empty or shorter than 8 characters")
    return token


def run(args: argparse.Namespace) -> int:
    """Run ``diced serve`` until Ctrl-C; returns the exit code."""
    import uvicorn

    import diced
    from diced.errors import InvalidArgumentError
    from diced.server.app import create_app
    from diced.server.run import check_binding

    if not 0 <= args.port <= 65535:
        raise InvalidArgumentError(f"--port must be 0..65535, got {args.port}")
    if args.max_body_mb < 1:
        raise InvalidArgumentError("--max-body-mb must be positive")
    token = read_token_file(args.token_file) if args.token_file else None
    given = token
    token = check_binding(args.host, token, args.read_only)
    if args.create:
        store = diced.Store(args.store)
    else:
        from diced.cli._store import open_existing_store

        store = open_existing_store(args.store)
    origins = tuple(o.strip() for o in args.cors.split(",") if o.strip())
    app = create_app(store, read_only=args.read_only, token=token, cors_origins=origins,
                     max_body_bytes=args.max_body_mb << 20)
    shown = args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1"
    print(f"diced serve: {args.store} on http://{shown}:{args.port} "
          f"({'read-only' if args.read_only else 'read-write'}); Ctrl-C stops", file=sys.stderr)
    if token is not None and given is None:
        print(f"diced serve: mutations need the token {token}", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="off",
                access_log=False)
    return 0
