"""The PostgreSQL store: one database shared by any number of stateless replicas.

asyncpg talks to the server through a small connection pool per process. The
schema is created and versioned at start under an advisory lock, so several
workers or replicas starting at once do not race. Every driver exception
leaves through :func:`~people.store.postgres_errors.translating`, which
classifies it by SQLSTATE (an outage is :class:`StoreUnavailable`, a
bug :class:`StoreFailure`, ...). A statement that loses to a concurrent one
(serialization failure, deadlock) runs again a few times before the call fails.
A call waits at most the acquire timeout for a pooled connection, then fails as
:class:`ResourceExhausted`: a pool too small for the load is not an outage.

The pool heals itself: asyncpg notices connections the server closed and opens
new ones on the next acquire, so once the database is back the same store works.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from people.domain.errors import (
    EmailAlreadyExists,
    InvalidField,
    PeopleError,
    StaleVersion,
    UserNotFound,
)
from people.domain.model import User
from people.domain.ports import Cursor
from people.domain.query import DEFAULT_QUERY, Query
from people.store.postgres_errors import PoolExhausted, backoff, is_conflict, retrying, translating
from people.store.postgres_schema import migrate
from people.store.sql_filter import Dialect, select_page

_T = TypeVar("_T")
_COLUMNS = "id, name, email, version, create_time, update_time"
_INSERTED = (
    "id, name, email, email_key, version, create_time, update_time, name_key, email_reversed"
)
#: Every row of a batch in one statement; a taken email skips its row, which
#: add_many notices in the rows returned, and then rolls the whole batch back.
_INSERT_MANY = (
    f"INSERT INTO users ({_INSERTED}) SELECT * FROM unnest($1::text[], $2::text[],"
    " $3::text[], $4::text[], $5::bigint[], $6::timestamptz[], $7::timestamptz[],"
    " $8::text[], $9::text[]) ON CONFLICT (email_key) DO NOTHING RETURNING email_key"
)
#: How listing queries are spelled here (see people.store.sql_filter).
DIALECT = Dialect(
    columns={
        "id": "id",
        "name": "name_key",
        "email": "email_key",
        "email_reversed": "email_reversed",
        "create_time": "create_time",
        "update_time": "update_time",
    },
    placeholder=lambda number: f"${number}",
    contains="strpos({column}, {value}) > 0",
    ends_with="right({column}, {length}) = {value}",
    time=lambda moment: moment,
)

DEFAULT_POOL_SIZE = 10
#: Seconds to open one connection, and to wait for a free one from the pool.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds one statement may run before the call fails as unavailable.
DEFAULT_COMMAND_TIMEOUT = 10.0
#: How often a statement runs in all when it keeps losing to concurrent ones.
DEFAULT_CONFLICT_ATTEMPTS = 5
#: Seconds a health check waits for ``SELECT 1``.
PING_TIMEOUT = 2.0
#: URL query parameters people reads itself; the rest go to asyncpg.
_POOL_SIZE_PARAMETER = "pool_size"
_STATEMENT_CACHE_PARAMETER = "statement_cache_size"


class PostgresStore:
    """Users in a PostgreSQL database. Create it with :meth:`open`."""

    def __init__(
        self,
        pool: object,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        acquire_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        conflict_attempts: int = DEFAULT_CONFLICT_ATTEMPTS,
    ) -> None:
        # asyncpg is untyped; the pool stays private so Any goes no further.
        self._pool: Any = pool
        self._pool_size = pool_size
        #: One slot per pooled connection: waiting here is waiting for the pool,
        #: told apart from a connection that is slow to open.
        self._slots = asyncio.Semaphore(pool_size)
        self._acquire_timeout = acquire_timeout
        self._conflict_attempts = max(1, conflict_attempts)
        self._signing_key = b""

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        conflict_attempts: int = DEFAULT_CONFLICT_ATTEMPTS,
    ) -> Self:
        """Connect to the database at ``url`` and bring its schema up to date.

        Args:
            url: ``postgresql://user:password@host:port/dbname``. The query may
                carry ``pool_size`` (connections per process) and
                ``statement_cache_size`` (0 behind pgbouncer in transaction
                mode); other parameters (``sslmode``...) go to asyncpg.
            pool_size: Connections per process, unless the URL says otherwise.
            connect_timeout: Seconds to open a connection or wait for a free one.
            command_timeout: Seconds a statement may run.
            conflict_attempts: How often a statement runs in all while it
                keeps failing on concurrent ones (serialization, deadlock).

        Raises:
            InvalidField: the URL or its options are malformed.
            StoreUnavailable: the database cannot be reached, or its schema is
                newer than this version of people understands; the message
                gives the driver's reason, for the operator starting the server.
        """
        dsn, options = _split_options(url)
        size = options.get(_POOL_SIZE_PARAMETER, pool_size)
        with translating(opening=True):
            try:
                pool = await asyncpg.create_pool(
                    dsn,
                    min_size=1,
                    max_size=size,
                    timeout=connect_timeout,
                    command_timeout=command_timeout,
                    statement_cache_size=options.get(_STATEMENT_CACHE_PARAMETER, 100),
                )
            # asyncpg's ClientConfigurationError is a ValueError; a port past 65535
            # gets as far as connect(), which raises OverflowError.
            except (ValueError, OverflowError) as exc:
                raise InvalidField("database", f"not a usable PostgreSQL URL: {exc}") from exc
        store = cls(
            pool,
            pool_size=size,
            acquire_timeout=connect_timeout,
            conflict_attempts=conflict_attempts,
        )
        try:
            await store._migrate()
        except BaseException:
            await store.aclose()
            raise
        return store

    async def add(self, user: User) -> None:
        with translating(email=user.email):
            await self._fetch(
                f"INSERT INTO users ({_INSERTED}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                *_row(user),
            )

    async def add_many(self, users: Sequence[User]) -> None:
        if not users:
            return
        columns = [list(column) for column in zip(*(_row(user) for user in users), strict=True)]

        async def insert(connection: Any) -> None:
            async with connection.transaction():
                rows = await connection.fetch(_INSERT_MANY, *columns)
                if len(rows) < len(users):
                    stored = {row["email_key"] for row in rows}
                    # Raised inside the transaction, so nothing of the batch stays.
                    raise EmailAlreadyExists(_first_skipped(users, stored).email)

        with translating():
            await self._retrying(insert)

    async def get(self, user_id: str) -> User:
        with translating():
            rows = await self._fetch(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id)
        if not rows:
            raise UserNotFound(user_id)
        return _user(rows[0])

    async def get_many(self, user_ids: Sequence[str]) -> list[User]:
        with translating():
            rows = await self._fetch(
                f"SELECT {_COLUMNS} FROM users WHERE id = ANY($1::text[])", list(user_ids)
            )
        return [_user(row) for row in rows]

    async def count(self) -> int:
        with translating():
            rows = await self._fetch("SELECT count(*) AS users FROM users")
        return int(rows[0]["users"])

    async def list_page(
        self, *, after: Cursor | None, limit: int, query: Query = DEFAULT_QUERY
    ) -> list[User]:
        tail, params = select_page(DIALECT, query, after, limit)
        with translating():
            rows = await self._fetch(f"SELECT {_COLUMNS} FROM users {tail}", *params)
        return [_user(row) for row in rows]

    async def replace(self, user: User, *, expected_version: int) -> None:
        # One statement: the update, and whether the row existed at all (the
        # EXISTS sees the snapshot from before the update).
        with translating(email=user.email):
            (row,) = await self._fetch(
                "WITH changed AS (UPDATE users SET name = $2, email = $3, email_key = $4,"
                " version = $5, update_time = $6, name_key = $8, email_reversed = $9"
                " WHERE id = $1 AND version = $7 RETURNING 1)"
                " SELECT (SELECT count(*) FROM changed) AS changed,"
                " EXISTS (SELECT 1 FROM users WHERE id = $1) AS present",
                user.id,
                user.name,
                user.email,
                user.email_key,
                user.version,
                user.update_time,
                expected_version,
                user.name_key,
                user.email_key[::-1],
            )
        _check_changed(row, user.id)

    async def remove(self, user_id: str, *, expected_version: int | None) -> None:
        with translating():
            (row,) = await self._fetch(
                "WITH changed AS (DELETE FROM users WHERE id = $1"
                " AND ($2::bigint IS NULL OR version = $2) RETURNING 1)"
                " SELECT (SELECT count(*) FROM changed) AS changed,"
                " EXISTS (SELECT 1 FROM users WHERE id = $1) AS present",
                user_id,
                expected_version,
            )
        _check_changed(row, user_id)

    def change_token(self) -> None:
        # Other replicas write without telling this one, and asking the
        # database costs a round trip: no cache is cheaper than a correct one.
        return None

    def signing_key(self) -> bytes:
        return self._signing_key

    async def ping(self) -> bool:
        try:
            with translating(quiet=True):
                async with asyncio.timeout(PING_TIMEOUT):
                    (row,) = await self._fetch("SELECT 1 AS answer")
        except PeopleError:
            return False
        return bool(row["answer"] == 1)

    async def aclose(self) -> None:
        try:
            async with asyncio.timeout(self._acquire_timeout):
                await self._pool.close()
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            # A connection that cannot say goodbye is dropped instead.
            self._pool.terminate()

    async def _fetch(self, query: str, *args: object) -> list[Mapping[str, Any]]:
        """Run one statement on a pooled connection, again if it lost to a concurrent one.

        Each statement is its own transaction, so running it again is safe:
        the first run changed nothing.
        """

        async def fetch(connection: Any) -> list[Mapping[str, Any]]:
            rows: list[Mapping[str, Any]] = await connection.fetch(query, *args)
            return rows

        return await self._retrying(fetch)

    async def _retrying(self, work: Callable[[Any], Awaitable[_T]]) -> _T:
        """Run ``work`` (one transaction) on a pooled connection, again if it lost to a
        concurrent one: the run that failed changed nothing."""
        attempt = 1
        while True:
            try:
                async with self._connection() as connection:
                    return await work(connection)
            except asyncpg.PostgresError as exc:
                if not is_conflict(exc) or attempt >= self._conflict_attempts:
                    raise
                retrying(exc, attempt, self._conflict_attempts)
            await asyncio.sleep(backoff(attempt))
            attempt += 1

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection, waiting at most the acquire timeout for a free one.

        Raises:
            PoolExhausted: every connection stayed busy for the whole timeout.
        """
        try:
            await asyncio.wait_for(self._slots.acquire(), self._acquire_timeout)
        except TimeoutError:
            raise PoolExhausted(self._pool_size, self._acquire_timeout) from None
        try:
            # A slot is free, so this waits only for a connection to open.
            async with self._pool.acquire(timeout=self._acquire_timeout) as connection:
                yield connection
        finally:
            self._slots.release()

    async def _migrate(self) -> None:
        with translating(opening=True):
            async with self._connection() as connection:
                self._signing_key = await migrate(connection)


def _check_changed(row: Mapping[str, Any], user_id: str) -> None:
    if row["changed"]:
        return
    if not row["present"]:
        raise UserNotFound(user_id)
    raise StaleVersion(user_id)


def _row(user: User) -> tuple[str, str, str, str, int, datetime, datetime, str, str]:
    return (
        user.id,
        user.name,
        user.email,
        user.email_key,
        user.version,
        user.create_time,
        user.update_time,
        user.name_key,
        user.email_key[::-1],
    )


def _first_skipped(users: Sequence[User], stored: set[str]) -> User:
    """The first user whose row was not inserted: its email was taken before, or in the batch."""
    seen: set[str] = set()
    for user in users:
        if user.email_key not in stored or user.email_key in seen:
            return user
        seen.add(user.email_key)
    raise AssertionError("every row was inserted")


def _user(row: Mapping[str, Any]) -> User:
    create_time: datetime = row["create_time"]
    update_time: datetime = row["update_time"]
    return User(
        id=str(row["id"]),
        name=str(row["name"]),
        email=str(row["email"]),
        version=int(row["version"]),
        create_time=create_time,
        update_time=update_time,
    )


def _split_options(url: str) -> tuple[str, dict[str, int]]:
    """Take people's own options out of a database URL's query string.

    Raises:
        InvalidField: an option is not a non-negative integer.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidField("database", f"not a usable PostgreSQL URL: {exc}") from exc
    kept: list[tuple[str, str]] = []
    options: dict[str, int] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in (_POOL_SIZE_PARAMETER, _STATEMENT_CACHE_PARAMETER):
            kept.append((key, value))
            continue
        if not value.isascii() or not value.isdigit():
            raise InvalidField("database", f"{key} must be a whole number, not {value!r}")
        options[key] = int(value)
    if options.get(_POOL_SIZE_PARAMETER, 1) < 1:
        raise InvalidField("database", f"{_POOL_SIZE_PARAMETER} must be at least 1")
    if not options:
        return url, options
    return urlunsplit(parts._replace(query=urlencode(kept))), options
