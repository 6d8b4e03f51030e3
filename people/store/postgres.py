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
from typing import Any, Self, TypeVar

import asyncpg

from people.domain.errors import (
    EmailAlreadyExists,
    InvalidField,
    PeopleError,
    UserNotFound,
)
from people.domain.model import User
from people.domain.ports import Cursor
from people.domain.query import DEFAULT_QUERY, Query
from people.store.postgres_errors import (
    PoolExhausted,
    backoff,
    check_changed,
    is_conflict,
    retrying,
    translating,
)
from people.store.postgres_rows import (
    COLUMNS,
    DIALECT,
    INSERT_MANY,
    INSERTED,
    first_skipped,
    to_row,
    to_user,
)
from people.store.postgres_schema import migrate
from people.store.postgres_url import (
    POOL_SIZE_PARAMETER,
    STATEMENT_CACHE_PARAMETER,
    split_options,
)
from people.store.sql_filter import select_page

_T = TypeVar("_T")

DEFAULT_POOL_SIZE = 10
#: Seconds to open one connection, and to wait for a free one from the pool.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds one statement may run before the call fails as unavailable.
DEFAULT_COMMAND_TIMEOUT = 10.0
#: How often a statement runs in all when it keeps losing to concurrent ones.
DEFAULT_CONFLICT_ATTEMPTS = 5
#: Seconds a health check waits for ``SELECT 1``.
PING_TIMEOUT = 2.0


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
        dsn, options = split_options(url)
        size = options.get(POOL_SIZE_PARAMETER, pool_size)
        with translating(opening=True):
            try:
                pool = await asyncpg.create_pool(
                    dsn,
                    min_size=1,
                    max_size=size,
                    timeout=connect_timeout,
                    command_timeout=command_timeout,
                    statement_cache_size=options.get(STATEMENT_CACHE_PARAMETER, 100),
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
                f"INSERT INTO users ({INSERTED}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                *to_row(user),
            )

    async def add_many(self, users: Sequence[User]) -> None:
        if not users:
            return
        columns = [list(column) for column in zip(*(to_row(user) for user in users), strict=True)]

        async def insert(connection: Any) -> None:
            async with connection.transaction():
                rows = await connection.fetch(INSERT_MANY, *columns)
                if len(rows) < len(users):
                    stored = {row["email_key"] for row in rows}
                    # Raised inside the transaction, so nothing of the batch stays.
                    raise EmailAlreadyExists(first_skipped(users, stored).email)

        with translating():
            await self._retrying(insert)

    async def get(self, user_id: str) -> User:
        with translating():
            rows = await self._fetch(f"SELECT {COLUMNS} FROM users WHERE id = $1", user_id)
        if not rows:
            raise UserNotFound(user_id)
        return to_user(rows[0])

    async def get_many(self, user_ids: Sequence[str]) -> list[User]:
        with translating():
            rows = await self._fetch(
                f"SELECT {COLUMNS} FROM users WHERE id = ANY($1::text[])", list(user_ids)
            )
        return [to_user(row) for row in rows]

    async def count(self) -> int:
        with translating():
            rows = await self._fetch("SELECT count(*) AS users FROM users")
        return int(rows[0]["users"])

    async def list_page(
        self, *, after: Cursor | None, limit: int, query: Query = DEFAULT_QUERY
    ) -> list[User]:
        tail, params = select_page(DIALECT, query, after, limit)
        with translating():
            rows = await self._fetch(f"SELECT {COLUMNS} FROM users {tail}", *params)
        return [to_user(row) for row in rows]

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
        check_changed(row, user.id)

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
        check_changed(row, user_id)

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
