"""How long `people import` of a CSV file takes into a fresh SQLite server."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

#: Starts `people serve` on a SQLite file and yields (port, process).
ServerFactory = Callable[[Path], AbstractContextManager[tuple[int, Any]]]


def write_csv(path: Path, lines: int) -> None:
    """A CSV file of ``lines`` users after its header."""
    with path.open("w", encoding="utf-8") as out:
        out.write("name,email\n")
        for n in range(lines):
            out.write(f"Imported {n},imported{n}@example.com\n")


def time_import(source: Path, lines: int, server: ServerFactory) -> float:
    """Seconds `people import FILE` takes, from start to exit, into a fresh SQLite file.

    The command runs as a person runs it, its output in a pipe (no progress bar).
    """
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp) / "people.db") as (port, _):
        people = Path(sys.executable).parent / "people"
        started = time.monotonic()
        result = subprocess.run(
            [str(people), "import", str(source), "--target", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        seconds = time.monotonic() - started
    expected = f"{lines} created, 0 already existed, 0 rejected\n"
    if result.returncode != 0 or result.stdout != expected:
        raise RuntimeError(f"people import failed: {result.stdout}{result.stderr}")
    return seconds
