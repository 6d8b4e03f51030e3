"""The `people` command's entry point: parse, then serve, print the schema, or call a server."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import ExitStack

from people.api.status import status_for
from people.cli.commands import (
    add_command,
    del_command,
    find_command,
    get_command,
    list_command,
    mod_command,
)
from people.cli.connect import UsageError, client_from
from people.cli.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, exit_code
from people.cli.output import print_json
from people.cli.parser import build_parser, check_usage
from people.cli.schema import file_descriptor, render
from people.cli.transfer import export_command, import_command, open_stream
from people.client import PeopleClient
from people.domain import errors
from people.server.flags import settings_from_arguments
from people.server.logs import configure_logging
from people.server.settings import SettingsError

Command = Callable[[PeopleClient, argparse.Namespace], Awaitable[int]]

COMMANDS: dict[str, Command] = {
    "add": add_command,
    "get": get_command,
    "list": list_command,
    "find": find_command,
    "mod": mod_command,
    "del": del_command,
    "export": export_command,
    "import": import_command,
}


async def _run_client(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    async with client_from(args, environ) as people:
        return await COMMANDS[args.command](people, args)


def _run_command(args: argparse.Namespace) -> int:
    try:
        with ExitStack() as files:
            args.stream = open_stream(args, files)
            return asyncio.run(_run_client(args, os.environ))
    except UsageError as exc:
        print(f"people {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except errors.PeopleError as exc:
        print(f"people {args.command}: {status_for(exc).name}: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print(f"people {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`people get | head`): not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE


def _run_schema(args: argparse.Namespace) -> int:
    descriptor = file_descriptor()
    if args.json:
        from google.protobuf import json_format

        print_json(json_format.MessageToDict(descriptor, preserving_proto_field_name=True))
    else:
        sys.stdout.write(render(descriptor))
    return EXIT_OK


def _run_serve(args: argparse.Namespace) -> int:
    from people.server.compose import StartupError
    from people.server.process import serve

    try:
        settings = settings_from_arguments(args, os.environ)
    except SettingsError as exc:
        print(f"people serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_format, access=settings.access_log, level=settings.log_level)
    try:
        if settings.workers > 1:
            from people.server.workers import run

            return run(settings)
        asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"people serve: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `people` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_usage(args)
    if args.command == "serve":
        return _run_serve(args)
    if args.command == "schema":
        return _run_schema(args)
    return _run_command(args)


if __name__ == "__main__":
    sys.exit(main())
