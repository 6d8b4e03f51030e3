"""`people export` and `people import`: files in and out, progress, and the import summary."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from people.cli.bulk import ImportSummary, export_users, guess_format, read_records
from people.cli.connect import UsageError
from people.cli.exits import EXIT_OK, EXIT_REJECTED_LINES
from people.cli.importing import import_users
from people.cli.output import print_json, progress_line
from people.client import PeopleClient

if TYPE_CHECKING:
    from tqdm import tqdm


async def export_command(people: PeopleClient, args: argparse.Namespace) -> int:
    """`people export [-o FILE]`: every user as JSON Lines."""
    show = progress_line()

    def progress(count: int) -> None:
        if show is not None:
            show(f"exported {count:,} users")

    count = await export_users(people, args.stream, progress=progress)
    if show is not None:
        show("")
    print(f"exported {count} users", file=sys.stderr)
    return EXIT_OK


async def import_command(people: PeopleClient, args: argparse.Namespace) -> int:
    """`people import FILE`: create a user per line; exit 3 if any line was rejected."""
    file_format = args.format or guess_format(args.file)
    bar = _progress_bar(args.file)

    def progress(summary: ImportSummary) -> None:
        if bar is not None:
            bar.set_postfix_str(
                f"{summary.created:,} created, {summary.existing:,} existed,"
                f" {len(summary.rejected):,} rejected",
                refresh=False,
            )
            bar.update(summary.processed - bar.n)

    try:
        summary = await import_users(
            people,
            read_records(args.stream, file_format),
            concurrency=args.concurrency,
            batch_size=args.batch_size,
            progress=progress,
        )
        if bar is not None and bar.total and summary.failure is None:
            bar.update(bar.total - bar.n)  # every line read, the header and blank ones too
    except UnicodeDecodeError:
        raise UsageError(f"{args.file} is not UTF-8 text") from None
    finally:
        if bar is not None:
            bar.refresh()  # the last counts, drawn once before the bar is erased
            bar.close()
    _report_import(args, summary)
    if summary.failure is not None:
        raise summary.failure
    return EXIT_REJECTED_LINES if summary.rejected else EXIT_OK


def _report_import(args: argparse.Namespace, summary: ImportSummary) -> None:
    if args.json:
        print_json(summary.as_json())
        return
    print(
        f"{summary.created} created, {summary.existing} already existed,"
        f" {len(summary.rejected)} rejected"
    )
    for rejected in summary.rejected:
        print(f"line {rejected.line}: {rejected.reason}")
    if summary.failure is not None:
        print("the import stopped early: the server failed (see below)")


def _progress_bar(path: str) -> tqdm[NoReturn] | None:
    """On a terminal, a bar with the lines done, the rate and the time left; None in a pipe.

    tqdm is imported only here, so no other command (and no import into a
    pipe) pays for loading it. The bar is erased when the import ends, before
    the summary is printed.
    """
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    total = _count_lines(path) if path != "-" else None
    columns, lines = _terminal_size()
    return tqdm(
        total=total,
        desc="importing",
        unit=" lines",
        file=sys.stderr,
        leave=False,
        ncols=columns,
        nrows=lines,
        mininterval=0.1,
    )


def _terminal_size() -> tuple[int, int]:
    """stderr's columns and lines; 80 and 24 where it reports none (tqdm would draw nothing)."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        return 80, 24
    return size.columns or 80, size.lines or 24


def _count_lines(path: str) -> int | None:
    try:
        with open(path, "rb") as file:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
    except OSError:
        return None


def open_stream(args: argparse.Namespace, files: ExitStack) -> TextIO | None:
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
