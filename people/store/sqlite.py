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
from datetime import UTC, datetime
from pathlib import Path
from typing import Self, TypeVar

from people.domain.errors import PeopleError, StaleVersion, StoreUnavailable, UserNotFound
from people.domain.model import User
from people.domain.ports import Cursor
from people.domain.query import DEFAULT_QUERY, Query
from people.store.sql_filter import Dialect, select_page
from people.store.sqlite_errors import translated
from people.store.sqlite_schema import migrate
from people.store.sqlite_writer import GroupWriter

_T = TypeVar("_T")

_COLUMNS = "id, name, email, version, create_time_us, update_time_us"
_INSERT = (
    "INSERT INTO users (id, name, email, email_key, version, create_time_us, update_time_us,"
    " name_key, email_reversed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
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
                migrate, solo=True, translate=_cannot_open
            )
            store._watcher = await store._writer.submit(
                lambda _: store._new_watcher(), solo=True, translate=_cannot_open
            )
        except PeopleError:
            await store.aclose()
            raise
        return store

    async def add(self, user: User) -> None:
        def insert(db: sqlite3.Connection) -> None:
            db.execute(_INSERT, _row(user))

        await self._write(insert, email=user.email)

    async def add_many(self, users: Sequence[User]) -> None:
        rows = [_row(user) for user in users]

        def insert(db: sqlite3.Connection) -> None:
            # Inside the writer's savepoint for this write: a failing row rolls
            # back every row of the batch, and nothing else of the transaction.
            db.execute("SAVEPOINT batch")
            try:
                db.executemany(_INSERT, rows)
            except sqlite3.IntegrityError:
                # executemany does not say which row failed: insert again one row
                # at a time to name it (the writer then rolls the whole batch back).
                db.execute("ROLLBACK TO batch")
                for user, row in zip(users, rows, strict=True):
                    try:
                        db.execute(_INSERT, row)
                    except sqlite3.IntegrityError as exc:
                        raise translated(exc, email=user.email) from exc
            db.execute("RELEASE batch")

        await self._write(insert)

    async def get(self, user_id: str) -> User:
        def select(db: sqlite3.Connection) -> User:
            row = db.execute(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone()
            if row is None:
                raise UserNotFound(user_id)
            return _user(row)

        return await self._read(select)

    async def get_many(self, user_ids: Sequence[str]) -> list[User]:
        def select(db: sqlite3.Connection) -> list[User]:
            marks = ", ".join("?" * len(user_ids))
            rows = db.execute(f"SELECT {_COLUMNS} FROM users WHERE id IN ({marks})", user_ids)
            return [_user(row) for row in rows]

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
                _user(row) for row in db.execute(f"SELECT {_COLUMNS} FROM users {tail}", params)
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
                    _micros(user.update_time),
                    user.name_key,
                    user.email_key[::-1],
                    user.id,
                    expected_version,
                ),
            ).rowcount
            if not changed:
                _raise_missing_or_stale(db, user.id)

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
                _raise_missing_or_stale(db, user_id)

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
        connection = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_ms / 1000,
            check_same_thread=False,
            # The writer begins and commits its transactions itself (sqlite_writer).
            isolation_level=None if writer else "DEFERRED",
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            connection.execute("PRAGMA journal_mode = WAL")
            # FULL: an acknowledged write survives a power loss, not just a crash.
            connection.execute("PRAGMA synchronous = FULL")
            if self._max_pages is not None:
                connection.execute(f"PRAGMA max_page_count = {int(self._max_pages)}")
        except sqlite3.Error:
            # Not a database (or unreadable): close now rather than leak it.
            connection.close()
            raise
        with self._lock:
            self._connections.append(connection)
        return connection


def _cannot_open(exc: sqlite3.Error, email: str | None) -> PeopleError:
    """Opening failed: the operator starting the server gets SQLite's own reason."""
    return StoreUnavailable(f"cannot open the SQLite database: {exc}")


def _raise_missing_or_stale(db: sqlite3.Connection, user_id: str) -> None:
    exists = db.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone()
    if exists is None:
        raise UserNotFound(user_id)
    raise StaleVersion(user_id)


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: How listing queries are spelled here (see people.store.sql_filter).
DIALECT = Dialect(
    columns={
        "id": "id",
        "name": "name_key",
        "email": "email_key",
        "email_reversed": "email_reversed",
        "create_time": "create_time_us",
        "update_time": "update_time_us",
    },
    placeholder=lambda _: "?",
    contains="instr({column}, {value}) > 0",
    ends_with="substr({column}, -{length}) = {value}",
    time=_micros,
)


def _row(user: User) -> tuple[str, str, str, str, int, int, int, str, str]:
    return (
        user.id,
        user.name,
        user.email,
        user.email_key,
        user.version,
        _micros(user.create_time),
        _micros(user.update_time),
        user.name_key,
        user.email_key[::-1],
    )


def _user(row: tuple[str, str, str, int, int, int]) -> User:
    user_id, name, email, version, created, updated = row
    return User(
        id=user_id,
        name=name,
        email=email,
        version=version,
        create_time=_from_micros(created),
        update_time=_from_micros(updated),
    )
