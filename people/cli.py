"""The `people` command: run a server, or talk to one."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from people.config import SettingsError, add_serve_arguments, settings_from_arguments

EXIT_OK = 0
EXIT_USAGE = 2


def _serve_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the people gRPC server",
        description="Run the people gRPC server. Every flag can also be set with the "
        "PEOPLE_<FLAG> environment variable (e.g. PEOPLE_PORT=50052); flags win.",
    )
    add_serve_arguments(serve)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for every `people` subcommand."""
    parser = argparse.ArgumentParser(prog="people", description="A typed gRPC user directory.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(commands)
    return parser


def _run_serve(args: argparse.Namespace) -> int:
    from people.server import serve

    try:
        settings = settings_from_arguments(args, os.environ)
    except SettingsError as exc:
        print(f"people serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if settings.workers > 1:
            from people.workers import run

            return run(settings)
        asyncio.run(serve(settings))
    except OSError as exc:
        print(
            f"people serve: cannot listen on {settings.host}:{settings.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `people` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _run_serve(args)
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
