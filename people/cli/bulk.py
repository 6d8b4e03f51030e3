"""Moving many users at once: export as JSON Lines; the files and summary of an import.

An import reads its file lazily (:func:`read_records`) and never stops at a bad
line: every line ends up created, already existing (its email is taken) or
rejected with its line number and reason (:class:`ImportSummary`). How the
lines reach the server is :mod:`people.cli.importing`'s business.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from people.cli.output import user_json
from people.client import PeopleClient
from people.domain import errors

Format = Literal["jsonl", "csv"]
#: Seconds between two progress reports.
PROGRESS_INTERVAL = 0.1


@dataclass(frozen=True, slots=True)
class Record:
    """One user read from an import file, or why its line could not be read."""

    line: int
    name: str = ""
    email: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that was not imported, and why."""

    line: int
    reason: str


@dataclass
class ImportSummary:
    """What an import did with each line of its file."""

    created: int = 0
    existing: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    #: Set when the import stopped early because the server failed.
    failure: errors.PeopleError | None = None

    @property
    def processed(self) -> int:
        """Lines dealt with so far."""
        return self.created + self.existing + len(self.rejected)

    def as_json(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict with stable keys."""
        return {
            "created": self.created,
            "existing": self.existing,
            "rejected": [{"line": r.line, "reason": r.reason} for r in self.rejected],
            "complete": self.failure is None,
        }


def guess_format(path: str) -> Format:
    """``csv`` for a ``.csv`` file, JSON Lines for anything else."""
    return "csv" if path.lower().endswith(".csv") else "jsonl"


def read_records(lines: Iterable[str], file_format: Format) -> Iterator[Record]:
    """Parse an import file into records, one per user line; bad lines become error records."""
    if file_format == "csv":
        return _csv_records(lines)
    return _jsonl_records(lines)


def _jsonl_records(lines: Iterable[str]) -> Iterator[Record]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Record(number, error=f"not valid JSON ({exc.msg})")
            continue
        if not isinstance(value, dict):
            yield Record(number, error="expected a JSON object with name and email")
            continue
        yield _record(number, value.get("name"), value.get("email"))


def _csv_records(lines: Iterable[str]) -> Iterator[Record]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    columns = [name.strip().lower() for name in header]
    if "name" not in columns or "email" not in columns:
        yield Record(1, error="the CSV header must name the columns name and email")
        return
    name_at, email_at = columns.index("name"), columns.index("email")
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(name_at, email_at):
            yield Record(reader.line_num, error=f"expected {len(columns)} columns, got {len(row)}")
            continue
        yield _record(reader.line_num, row[name_at], row[email_at])


def _record(line: int, name: object, email: object) -> Record:
    if not isinstance(name, str) or not isinstance(email, str):
        return Record(line, error="name and email must both be present, as text")
    return Record(line, name=name, email=email)


async def export_users(
    client: PeopleClient, out: IO[str], *, progress: Callable[[int], None] | None = None
) -> int:
    """Write every user to ``out`` as JSON Lines, page by page; return how many."""
    count = 0
    last_report = 0.0
    async for user in client.iter_users():
        out.write(json.dumps(user_json(user), ensure_ascii=False) + "\n")
        count += 1
        now = time.monotonic()
        if progress is not None and now - last_report >= PROGRESS_INTERVAL:
            last_report = now
            progress(count)
    if progress is not None:
        progress(count)
    return count
