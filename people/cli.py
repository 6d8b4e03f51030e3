"""The `people` command: run a server, or talk to one."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO

from grpclib.const import Status

from people import __version__, errors
from people.accesslog import configure_logging
from people.auth import TokenFileError, read_tokens
from people.bulk import (
    DEFAULT_CONCURRENCY,
    ImportSummary,
    export_users,
    guess_format,
    import_users,
    read_records,
    user_json,
)
from people.client import DEFAULT_TARGET, DEFAULT_TIMEOUT, PeopleClient, tls_context
from people.config import SettingsError, add_serve_arguments, settings_from_arguments
from people.schema import file_descriptor, render
from people.status import status_for

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: An import that reached the end of its file but rejected some lines.
EXIT_REJECTED_LINES = 3
#: A call that failed with gRPC status S exits with EXIT_STATUS_BASE + S.
EXIT_STATUS_BASE = 10

#: The statuses a person is likely to meet, with what they mean here.
_EXPLAINED_STATUSES = {
    Status.INVALID_ARGUMENT: "",
    Status.DEADLINE_EXCEEDED: "",
    Status.NOT_FOUND: "",
    Status.ALREADY_EXISTS: "",
    Status.PERMISSION_DENIED: "",
    Status.RESOURCE_EXHAUSTED: "",
    Status.ABORTED: " (stale etag)",
    Status.INTERNAL: "",
    Status.UNAVAILABLE: " (server unreachable)",
    Status.UNAUTHENTICATED: "",
}
EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}   success
  {EXIT_FAILURE}   a local problem (a file cannot be read or written)
  {EXIT_USAGE}   usage error
  {EXIT_REJECTED_LINES}   import reached the end of its file but rejected some lines
  {EXIT_STATUS_BASE}+ a call failed with gRPC status (exit code - {EXIT_STATUS_BASE}), among them:
""" + "".join(
    f"      {EXIT_STATUS_BASE + status.value} {status.name}{note}\n"
    for status, note in _EXPLAINED_STATUSES.items()
)

Command = Callable[[PeopleClient, argparse.Namespace], Awaitable[int]]


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for every `people` subcommand."""
    parser = argparse.ArgumentParser(
        prog="people",
        description="A typed gRPC user directory.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"people {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the people gRPC server",
        description="Run the people gRPC server. Every flag can also be set with the "
        "PEOPLE_<FLAG> environment variable (e.g. PEOPLE_PORT=50052); flags win.",
    )
    add_serve_arguments(serve)

    common = _client_options()

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common],
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(command_parser=sub)
        return sub

    add = command("add", "create a user")
    add.add_argument("-n", "--name", metavar="NAME", help="user name")
    add.add_argument("-e", "--email", metavar="EMAIL", help="user email")
    get = command("get", "show one user (-i ID), or every user")
    get.add_argument("-i", "--id", metavar="ID", help="user ID; without it, list every user")
    listing = command("list", "list users as a table, in creation order")
    listing.add_argument("--limit", type=int, metavar="N", help="show at most N users")
    mod = command("mod", "change a user's name and/or email")
    mod.add_argument("-i", "--id", metavar="ID", help="user ID")
    mod.add_argument("-n", "--name", metavar="NAME", help="new name (omit to keep)")
    mod.add_argument("-e", "--email", metavar="EMAIL", help="new email (omit to keep)")
    mod.add_argument("--etag", default="", help="fail with ABORTED if the user changed since")
    delete = command("del", "delete a user")
    delete.add_argument("-i", "--id", metavar="ID", help="user ID")
    delete.add_argument("--etag", default="", help="fail with ABORTED if the user changed since")
    export = command("export", "write every user as JSON Lines")
    export.add_argument("-o", "--output", metavar="FILE", help="write here (default stdout)")
    load = command("import", "create users from a JSON Lines or CSV file")
    load.add_argument("file", metavar="FILE", help="JSON Lines (name, email) or CSV; - for stdin")
    load.add_argument(
        "--format", choices=["jsonl", "csv"], help="file format (default: from the extension)"
    )
    load.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"calls in flight (default {DEFAULT_CONCURRENCY})",
    )
    schema = commands.add_parser(
        "schema",
        help="print the service's .proto definition",
        description="Print the service's .proto definition, decoded from the descriptor "
        "embedded in people (no server needed).",
    )
    schema.add_argument("--json", action="store_true", help="the FileDescriptorProto as JSON")
    return parser


def _client_options() -> argparse.ArgumentParser:
    """Options every command that calls a server accepts, each with an environment variable."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    group = common.add_argument_group("connection")
    group.add_argument(
        "--target",
        help=f"server host:port (env PEOPLE_TARGET, default {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--timeout",
        type=float,
        help=f"seconds per call (env PEOPLE_TIMEOUT, default {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument(
        "--tls",
        action="store_true",
        default=None,
        help="use TLS (env PEOPLE_TLS=1; implied by --ca-file and --client-cert)",
    )
    group.add_argument(
        "--ca-file", type=Path, help="PEM CA bundle to verify the server (env PEOPLE_CA_FILE)"
    )
    group.add_argument(
        "--client-cert", type=Path, help="PEM client certificate for mTLS (env PEOPLE_CLIENT_CERT)"
    )
    group.add_argument(
        "--client-key", type=Path, help="PEM key of the client certificate (env PEOPLE_CLIENT_KEY)"
    )
    group.add_argument(
        "--token-file",
        type=Path,
        help="file whose first line is a bearer token (env PEOPLE_TOKEN_FILE, or PEOPLE_TOKEN)",
    )
    return common


def _check_usage(args: argparse.Namespace) -> None:
    """The seed's own rules for its flags, with its messages."""
    parser: argparse.ArgumentParser | None = getattr(args, "command_parser", None)
    if parser is None:
        return
    if args.command == "add" and (args.name is None or args.email is None):
        parser.error("Both name and email are required when adding a new user.")
    if args.command == "del" and args.id is None:
        parser.error("User ID is required when deleting a user.")
    if args.command == "mod" and args.id is None:
        parser.error("User ID is required when updating a user.")
    if args.command == "import" and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.command == "list" and args.limit is not None and args.limit < 0:
        parser.error("--limit cannot be negative")


class UsageError(Exception):
    """A connection option cannot be used; the message says which."""


def _client(args: argparse.Namespace, environ: Mapping[str, str]) -> PeopleClient:
    """Build the client from the connection options, falling back to PEOPLE_* variables."""

    def option(name: str) -> Any:
        value = getattr(args, name)
        return value if value is not None else environ.get(f"PEOPLE_{name.upper()}") or None

    target = option("target") or DEFAULT_TARGET
    timeout_text = option("timeout")
    try:
        timeout = DEFAULT_TIMEOUT if timeout_text is None else float(timeout_text)
    except ValueError:
        raise UsageError(f"PEOPLE_TIMEOUT={timeout_text!r} is not a number") from None
    ca_file, cert, key = option("ca_file"), option("client_cert"), option("client_key")
    tls_flag = option("tls")
    use_tls = tls_flag is True or str(tls_flag).lower() in ("1", "true", "yes", "on")
    try:
        tls = (
            tls_context(ca_file, cert, key)
            if use_tls or ca_file is not None or cert is not None
            else False
        )
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the TLS files: {exc}") from None
    token = _token(option("token_file"), environ)
    try:
        return PeopleClient(target, timeout=timeout, tls=tls, token=token)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _token(path: str | Path | None, environ: Mapping[str, str]) -> str | None:
    """The token to send: the first one in the token file (the server's format), or PEOPLE_TOKEN."""
    if path is None:
        return environ.get("PEOPLE_TOKEN") or None
    try:
        return read_tokens(Path(path))[0].decode()
    except TokenFileError as exc:
        raise UsageError(str(exc)) from None


def _print_json(value: object) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


async def _add(people: PeopleClient, args: argparse.Namespace) -> int:
    user_id = await people.create(args.name, args.email)
    if args.json:
        _print_json({"id": user_id, "message": "User created successfully"})
    else:
        print(f"User created successfully - ID = {user_id}")
    return EXIT_OK


async def _get(people: PeopleClient, args: argparse.Namespace) -> int:
    if args.id:
        user = await people.get(args.id)
        if args.json:
            _print_json(user_json(user))
        else:
            print(f"User: ID={user.id}, Name={user.name}, Email={user.email}")
        return EXIT_OK
    # Page through ListUsers rather than GetAllUsers, so any number of users works.
    if args.json:
        _print_json([user_json(user) async for user in people.iter_users()])
        return EXIT_OK
    users = people.iter_users()
    listed = await anext(users, None)  # fails before the heading if the server does
    print("List of retrieved users:\n")
    count = 0
    while listed is not None:
        print(f"ID: {listed.id}, Name: {listed.name}, Email: {listed.email}")
        count += 1
        listed = await anext(users, None)
    print(f"\n{count} users retrieved")
    return EXIT_OK


async def _list(people: PeopleClient, args: argparse.Namespace) -> int:
    rows: list[dict[str, str]] = []
    async for user in people.iter_users():
        if args.limit is not None and len(rows) >= args.limit:
            break
        rows.append(user_json(user))
    if args.json:
        _print_json(rows)
        return EXIT_OK
    columns = ("id", "name", "email", "create_time")
    widths = {column: max([len(column), *(len(row[column]) for row in rows)]) for column in columns}
    for row in [{column: column.upper() for column in columns}, *rows]:
        print("  ".join(row[column].ljust(widths[column]) for column in columns).rstrip())
    print(f"\n{len(rows)} users", file=sys.stderr)
    return EXIT_OK


async def _mod(people: PeopleClient, args: argparse.Namespace) -> int:
    message = await people.update(
        args.id, name=args.name or "", email=args.email or "", etag=args.etag
    )
    _print_message(args, message)
    return EXIT_OK


async def _del(people: PeopleClient, args: argparse.Namespace) -> int:
    _print_message(args, await people.delete(args.id, etag=args.etag))
    return EXIT_OK


def _print_message(args: argparse.Namespace, message: str) -> None:
    if args.json:
        _print_json({"id": args.id, "message": message})
    else:
        print(message)


async def _export(people: PeopleClient, args: argparse.Namespace) -> int:
    show = _progress_line() if sys.stderr.isatty() else None

    def progress(count: int) -> None:
        if show is not None:
            show(f"exported {count:,} users")

    count = await export_users(people, args.stream, progress=progress)
    if show is not None:
        show("")
    print(f"exported {count} users", file=sys.stderr)
    return EXIT_OK


async def _import(people: PeopleClient, args: argparse.Namespace) -> int:
    file_format = args.format or guess_format(args.file)
    show = _progress_line() if sys.stderr.isatty() else None
    total = _count_lines(args.file) if show is not None and args.file != "-" else None

    def progress(summary: ImportSummary) -> None:
        if show is not None:
            done = f"{summary.processed:,}" + (f"/{total:,}" if total else "")
            show(
                f"importing {done} lines: {summary.created:,} created,"
                f" {summary.existing:,} already existed, {len(summary.rejected):,} rejected"
            )

    try:
        summary = await import_users(
            people,
            read_records(args.stream, file_format),
            concurrency=args.concurrency,
            progress=progress,
        )
    except UnicodeDecodeError:
        raise UsageError(f"{args.file} is not UTF-8 text") from None
    if show is not None:
        show("")
    _report_import(args, summary)
    if summary.failure is not None:
        raise summary.failure
    return EXIT_REJECTED_LINES if summary.rejected else EXIT_OK


def _report_import(args: argparse.Namespace, summary: ImportSummary) -> None:
    if args.json:
        _print_json(summary.as_json())
        return
    print(
        f"{summary.created} created, {summary.existing} already existed,"
        f" {len(summary.rejected)} rejected"
    )
    for rejected in summary.rejected:
        print(f"line {rejected.line}: {rejected.reason}")
    if summary.failure is not None:
        print("the import stopped early: the server failed (see below)")


def _count_lines(path: str) -> int | None:
    try:
        with open(path, "rb") as file:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
    except OSError:
        return None


def _progress_line() -> Callable[[str], None]:
    """A function that redraws one status line on the terminal; "" erases it."""
    width = 0

    def show(text: str) -> None:
        nonlocal width
        sys.stderr.write("\r" + text.ljust(width) + ("" if text else "\r"))
        sys.stderr.flush()
        width = len(text)

    return show


COMMANDS: dict[str, Command] = {
    "add": _add,
    "get": _get,
    "list": _list,
    "mod": _mod,
    "del": _del,
    "export": _export,
    "import": _import,
}


def exit_code(error: errors.PeopleError) -> int:
    """The exit code for a call that failed with ``error``: 10 + its gRPC status."""
    return EXIT_STATUS_BASE + status_for(error).value


async def _run_client(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    async with _client(args, environ) as people:
        return await COMMANDS[args.command](people, args)


def _open_stream(args: argparse.Namespace, files: ExitStack) -> TextIO | None:
    """The file an import reads or an export writes, opened before the event loop starts."""
    try:
        if args.command == "import":
            if args.file == "-":
                return sys.stdin
            # utf-8-sig: spreadsheets often start a CSV file with a byte-order mark.
            return files.enter_context(open(args.file, encoding="utf-8-sig", newline=""))
        if args.command == "export":
            if args.output in (None, "-"):
                return sys.stdout
            return files.enter_context(_replace_on_success(Path(args.output)))
    except OSError as exc:
        raise UsageError(f"cannot open {exc.filename}: {exc.strerror or exc}") from None
    return None


@contextmanager
def _replace_on_success(path: Path) -> Iterator[TextIO]:
    """Write to a temporary file beside ``path``; it replaces ``path`` only if all went well.

    A failed export (server unreachable, interrupted) leaves the previous file as it was.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "w", encoding="utf-8") as out:
            yield out
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _run_command(args: argparse.Namespace) -> int:
    try:
        with ExitStack() as files:
            args.stream = _open_stream(args, files)
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

        _print_json(json_format.MessageToDict(descriptor, preserving_proto_field_name=True))
    else:
        sys.stdout.write(render(descriptor))
    return EXIT_OK


def _run_serve(args: argparse.Namespace) -> int:
    from people.server import StartupError, serve

    try:
        settings = settings_from_arguments(args, os.environ)
    except SettingsError as exc:
        print(f"people serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_format, access=settings.access_log)
    try:
        if settings.workers > 1:
            from people.workers import run

            return run(settings)
        asyncio.run(serve(settings))
    except (StartupError, errors.PeopleError) as exc:
        print(f"people serve: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(
            f"people serve: cannot listen on {settings.host}:{settings.port}: {exc}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `people` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_usage(args)
    if args.command == "serve":
        return _run_serve(args)
    if args.command == "schema":
        return _run_schema(args)
    return _run_command(args)


if __name__ == "__main__":
    sys.exit(main())
