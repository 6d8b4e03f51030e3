"""How every connection to the SQLite file is opened: timeouts, WAL, durable commits.

Kept apart from :mod:`people.store.sqlite` so the settings every connection
(writer, readers, watcher) shares are in one short place.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_connection(
    path: Path, *, busy_timeout_ms: int, max_pages: int | None, writer: bool = False
) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode with ``synchronous = FULL``.

    Args:
        busy_timeout_ms: How long a statement waits for another connection's lock.
        max_pages: The most pages the file may grow to (None: no cap).
        writer: The writer's connection: it begins and commits transactions itself.
    """
    connection = sqlite3.connect(
        path,
        timeout=busy_timeout_ms / 1000,
        check_same_thread=False,
        # The writer begins and commits its transactions itself (sqlite_writer).
        isolation_level=None if writer else "DEFERRED",
    )
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        connection.execute("PRAGMA journal_mode = WAL")
        # FULL: an acknowledged write survives a power loss, not just a crash.
        connection.execute("PRAGMA synchronous = FULL")
        if max_pages is not None:
            connection.execute(f"PRAGMA max_page_count = {int(max_pages)}")
    except sqlite3.Error:
        # Not a database (or unreadable): close now rather than leak it.
        connection.close()
        raise
    return connection
