"""The SQLite store: the embedded default, one file in WAL mode.

sqlite3 blocks, so every statement runs on a worker thread and the event loop
only awaits it. Writes go through a single thread and connection (SQLite has
one writer at a time anyway), which commits concurrent writes together
(:mod:`people.store.sqlite_writer`); reads use a small pool of their own so
they do not queue behind commits. Every sqlite3 error is classified in one
place, :mod:`people.store.sqlite_errors`, when it leaves a worker thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self, TypeVar

from people.domain.errors import PeopleError, StoreUnavailable, UserNotFound
from people.domain.model import User
from people.domain.ports import Cursor
from people.domain.query import DEFAULT_QUERY, Query
from people.store.sql_filter import select_page
from people.store.sqlite_connect import open_connection
from people.store.sqlite_errors import cannot_open, raise_missing_or_stale, translated
from people.store.sqlite_rows import COLUMNS, DIALECT, INSERT, micros, to_row, to_user
from people.store.sqlite_schema import migrate
from people.store.sqlite_writer import GroupWriter

_T = TypeVar("_T")

READ_THREADS = 2
#: How long a writer waits for another process's lock before giving up.
BUSY_TIMEOUT_MS = 5000
#: The watcher runs on the event loop, so it never waits for a lock (see change_token).
WATCHER_BUSY_TIMEOUT_MS = 0


class SQLiteStore:
    """Users in one SQLite file. Create it with :meth:`open`."""

    def __init__(
        self, path: Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, max_pages: int | None = None
    ) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._max_pages = max_pages
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writer = GroupWriter(lambda: self._new_connection(writer=True))
        self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="people-sqlite-read")
        self._closed = False
        #: Used only on the event loop, for PRAGMA data_version (see change_token).
        self._watcher: sqlite3.Connection | None = None
        self._signing_key = b""

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        max_pages: int | None = None,
    ) -> Self:
        """Open (creating if needed) the database file and its schema.

        Args:
            path: The database file.
            busy_timeout_ms: How long a statement waits for another
                connection's lock before the call fails as unavailable.
            max_pages: The most pages the file may grow to (``PRAGMA
                max_page_count``); a write past it fails as a full disk.

        Raises:
            StoreUnavailable: the file cannot be opened, is not a database, or
                was migrated by a newer people; the message says SQLite's reason.
        """
        store = cls(Path(path), busy_timeout_ms=busy_timeout_ms, max_pages=max_pages)
        try:
            store._signing_key = await store._writer.submit(
                migrate, solo=True, translate=cannot_open
            )
            store._watcher = await store._writer.submit(
                lambda _: store._new_watcher(), solo=True, translate=cannot_open
            )
        except PeopleError:
            await store.aclose()
            raise
        return store

    async def add(self, user: User) -> None:
        def insert(db: sqlite3.Connection) -> None:
            db.execute(INSERT, to_row(user))

        await self._write(insert, email=user.email)

    async def add_many(self, users: Sequence[User]) -> None:
        rows = [to_row(user) for user in users]

        def insert(db: sqlite3.Connection) -> None:
            # Inside the writer's savepoint for this write: a failing row rolls
            # back every row of the batch, and nothing else of the transaction.
            db.execute("SAVEPOINT batch")
            try:
                db.executemany(INSERT, rows)
            except sqlite3.IntegrityError:
                # executemany does not say which row failed: insert again one row
                # at a time to name it (the writer then rolls the whole batch back).
                db.execute("ROLLBACK TO batch")
                for user, row in zip(users, rows, strict=True):
                    try:
                        db.execute(INSERT, row)
                    except sqlite3.IntegrityError as exc:
                        raise translated(exc, email=user.email) from exc
            db.execute("RELEASE batch")

        await self._write(insert)

    async def get(self, user_id: str) -> User:
        def select(db: sqlite3.Connection) -> User:
            row = db.execute(f"SELECT {COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone()
            if row is None:
                raise UserNotFound(user_id)
            return to_user(row)

        return await self._read(select)

    async def get_many(self, user_ids: Sequence[str]) -> list[User]:
        def select(db: sqlite3.Connection) -> list[User]:
            marks = ", ".join("?" * len(user_ids))
            rows = db.execute(f"SELECT {COLUMNS} FROM users WHERE id IN ({marks})", user_ids)
            return [to_user(row) for row in rows]

        if not user_ids:
            return []
        return await self._read(select)

    async def count(self) -> int:
        def select(db: sqlite3.Connection) -> int:
            (found,) = db.execute("SELECT count(*) FROM users").fetchone()
            return int(found)

        return await self._read(select)

    async def list_page(
        self, *, after: Cursor | None, limit: int, query: Query = DEFAULT_QUERY
    ) -> list[User]:
        tail, params = select_page(DIALECT, query, after, limit)

        def select(db: sqlite3.Connection) -> list[User]:
            return [
                to_user(row) for row in db.execute(f"SELECT {COLUMNS} FROM users {tail}", params)
            ]

        return await self._read(select)

    async def replace(self, user: User, *, expected_version: int) -> None:
        def update(db: sqlite3.Connection) -> None:
            changed = db.execute(
                "UPDATE users SET name = ?, email = ?, email_key = ?, version = ?,"
                " update_time_us = ?, name_key = ?, email_reversed = ?"
                " WHERE id = ? AND version = ?",
                (
                    user.name,
                    user.email,
                    user.email_key,
                    user.version,
                    micros(user.update_time),
                    user.name_key,
                    user.email_key[::-1],
                    user.id,
                    expected_version,
                ),
            ).rowcount
            if not changed:
                raise_missing_or_stale(db, user.id)

        await self._write(update, email=user.email)

    async def remove(self, user_id: str, *, expected_version: int | None) -> None:
        def delete(db: sqlite3.Connection) -> None:
            if expected_version is None:
                cursor = db.execute("DELETE FROM users WHERE id = ?", (user_id,))
            else:
                cursor = db.execute(
                    "DELETE FROM users WHERE id = ? AND version = ?",
                    (user_id, expected_version),
                )
            if not cursor.rowcount:
                raise_missing_or_stale(db, user_id)

        await self._write(delete)

    def change_token(self) -> int | None:
        """SQLite's ``PRAGMA data_version`` on a connection that never writes.

        It changes whenever any other connection, in this process or another,
        commits to the file. Reading it takes a few microseconds, so it runs on
        the event loop, not a thread; it must therefore never wait. The pragma
        opens a WAL read transaction, which no writer, ``BEGIN EXCLUSIVE`` or
        checkpoint (``TRUNCATE`` included) blocks, and while this store has the
        file open no other connection can take it in ``locking_mode=EXCLUSIVE``
        (each connection here holds a shared lock on the file). It does get
        SQLITE_BUSY while another connection rebuilds the WAL index after a
        writer died mid-commit; the watcher's busy timeout is 0, so that call
        fails at once instead of stalling the loop for up to 5 s, and any error
        answers None: that one call is not cached.
        """
        if self._watcher is None or self._closed:
            return None
        try:
            row = self._watcher.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            return None
        return int(row[0])

    def signing_key(self) -> bytes:
        return self._signing_key

    async def ping(self) -> bool:
        try:
            await self._run(
                self._readers,
                lambda db: db.execute("SELECT 1 FROM users LIMIT 1").fetchall(),
                quiet=True,
            )
        except PeopleError:
            return False
        return True

    async def aclose(self) -> None:
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._writer.stop()
        self._readers.shutdown(wait=True)
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()

    async def _write(
        self, operation: Callable[[sqlite3.Connection], _T], *, email: str | None = None
    ) -> _T:
        """Apply ``operation`` (statements, no commit) in the writer's next transaction."""
        if self._closed:
            raise StoreUnavailable("the SQLite store is closed")
        result: _T = await self._writer.submit(operation, email=email)
        return result

    async def _read(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._run(self._readers, operation)

    async def _run(
        self,
        executor: ThreadPoolExecutor,
        operation: Callable[[sqlite3.Connection], _T],
        *,
        email: str | None = None,
        quiet: bool = False,
    ) -> _T:
        """Run ``operation`` on a thread of ``executor``; its sqlite3 errors leave as domain errors.

        Args:
            email: The email a write tries to claim, for EmailAlreadyExists.
            quiet: Log failures at DEBUG only (health checks).
        """

        def call() -> _T:
            try:
                return operation(self._connection())
            except sqlite3.Error as exc:
                raise translated(exc, email=email, quiet=quiet) from exc

        if self._closed:
            # The executors are shut down; say so in our terms, not as a RuntimeError.
            raise StoreUnavailable("the SQLite store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, call)

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._new_connection()
            self._local.connection = connection
        return connection

    def _new_watcher(self) -> sqlite3.Connection:
        """A connection for :meth:`change_token`: set up like the others, then never waiting."""
        watcher = self._new_connection()
        watcher.execute(f"PRAGMA busy_timeout = {WATCHER_BUSY_TIMEOUT_MS}")
        return watcher

    def _new_connection(self, *, writer: bool = False) -> sqlite3.Connection:
        connection = open_connection(
            self._path,
            busy_timeout_ms=self._busy_timeout_ms,
            max_pages=self._max_pages,
            writer=writer,
        )
        with self._lock:
            self._connections.append(connection)
        return connection
