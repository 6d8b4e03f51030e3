"""The `people` command line: every subcommand, its flags, and the seed's usage rules."""

from __future__ import annotations

import argparse
from pathlib import Path

from people import __version__
from people.cli.exits import EXIT_CODES_HELP
from people.cli.importing import DEFAULT_CONCURRENCY
from people.client import DEFAULT_TARGET, DEFAULT_TIMEOUT
from people.client.people_client import MAX_BATCH
from people.server.flags import add_serve_arguments


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
    listing = command("list", "list users as a table, in creation order unless --order-by")
    listing.add_argument("--limit", type=int, metavar="N", help="show at most N users")
    listing.add_argument(
        "--filter",
        default="",
        metavar="FILTER",
        help='which users, e.g. \'email = "*@acme.com" AND name = "Ada*"\' (see the README)',
    )
    listing.add_argument(
        "--order-by",
        default="",
        metavar="ORDER",
        help="create_time (default), update_time, name or email, optionally followed by desc",
    )
    find = command("find", "show the user with an email (compared case-insensitively)")
    find.add_argument("-e", "--email", metavar="EMAIL", required=True, help="the email")
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
    load.add_argument(
        "--batch-size",
        type=int,
        default=MAX_BATCH,
        metavar="N",
        help=f"lines per BatchCreateUsers call, 1 to {MAX_BATCH} (default {MAX_BATCH})",
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


def check_usage(args: argparse.Namespace) -> None:
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
    if args.command == "import" and not 1 <= args.batch_size <= MAX_BATCH:
        parser.error(f"--batch-size must be between 1 and {MAX_BATCH}")
    if args.command == "list" and args.limit is not None and args.limit < 0:
        parser.error("--limit cannot be negative")
