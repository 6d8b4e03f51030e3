"""What the commands print: JSON, plain lines, tables and a progress line on a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime

from people._gen.people import User


def print_json(value: object) -> None:
    """Print ``value`` as indented JSON (non-ASCII kept as it is)."""
    print(json.dumps(value, ensure_ascii=False, indent=2))


def print_message(args: argparse.Namespace, message: str) -> None:
    """Print the server's message, or ``{"id", "message"}`` with ``--json``."""
    if args.json:
        print_json({"id": args.id, "message": message})
    else:
        print(message)


def user_json(user: User) -> dict[str, str]:
    """A user as a JSON-ready dict; keys are always the same six, timestamps RFC 3339."""
    return {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "etag": user.etag,
        "create_time": _timestamp(user.create_time),
        "update_time": _timestamp(user.update_time),
    }


def _timestamp(value: datetime | None) -> str:
    return "" if value is None else value.isoformat().replace("+00:00", "Z")


def print_table(rows: list[dict[str, str]], columns: tuple[str, ...]) -> None:
    """Print ``rows`` as left-aligned columns under an upper-case heading."""
    widths = {column: max([len(column), *(len(row[column]) for row in rows)]) for column in columns}
    for row in [{column: column.upper() for column in columns}, *rows]:
        print("  ".join(row[column].ljust(widths[column]) for column in columns).rstrip())


def progress_line() -> Callable[[str], None] | None:
    """A function that redraws one status line on a terminal ("" erases it); None in a pipe."""
    if not sys.stderr.isatty():
        return None
    width = 0

    def show(text: str) -> None:
        nonlocal width
        sys.stderr.write("\r" + text.ljust(width) + ("" if text else "\r"))
        sys.stderr.flush()
        width = len(text)

    return show
