"""The PostgreSQL store: one database shared by any number of stateless replicas.

asyncpg talks to the server through a small connection pool per process. The
schema is created and versioned at start under an advisory lock, so several
workers or replicas starting at once do not race. Every driver exception is
translated here, in :func:`_translated`: unique violations become
:class:`EmailAlreadyExists`, everything else (refused or lost connections, a
server shutting down, timeouts, a closed pool) becomes :class:`StoreUnavailable`.

The pool heals itself: asyncpg notices connections the server closed and opens
new ones on the next acquire, so once the database is back the same store works.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from people.domain.errors import (
    EmailAlreadyExists,
    InvalidField,
    StaleVersion,
    StoreUnavailable,
    UserNotFound,
)
from people.domain.model import User
from people.domain.ports import Cursor

#: The key of the advisory lock that serialises migrations across processes.
MIGRATION_LOCK = 0x70656F706C65  # "people" in ASCII
#: Migration ``n`` takes the schema from version ``n`` to ``n + 1``.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id          text COLLATE "C" PRIMARY KEY,
        name        text NOT NULL,
        email       text NOT NULL,
        email_key   text NOT NULL,
        version     bigint NOT NULL,
        create_time timestamptz NOT NULL,
        update_time timestamptz NOT NULL
    );
    CREATE UNIQUE INDEX users_email_key ON users (email_key);
    CREATE INDEX users_creation_order ON users (create_time, id);
    """,
    # Secrets made once per database, such as the key that signs page tokens.
    "CREATE TABLE secrets (name text PRIMARY KEY, value bytea NOT NULL);",
)
SCHEMA_VERSION = len(_MIGRATIONS)
_SIGNING_KEY_ROW = "page_token_key"
_COLUMNS = "id, name, email, version, create_time, update_time"
#: The unique index that decides "email taken".
_EMAIL_INDEX = "users_email_key"

DEFAULT_POOL_SIZE = 10
#: Seconds to open one connection, and to wait for a free one from the pool.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds one statement may run before the call fails as unavailable.
DEFAULT_COMMAND_TIMEOUT = 10.0
#: Seconds a health check waits for ``SELECT 1``.
PING_TIMEOUT = 2.0
#: URL query parameters people reads itself; the rest go to asyncpg.
_POOL_SIZE_PARAMETER = "pool_size"
_STATEMENT_CACHE_PARAMETER = "statement_cache_size"


class PostgresStore:
    """Users in a PostgreSQL database. Create it with :meth:`open`."""

    def __init__(self, pool: object, *, acquire_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        # asyncpg is untyped; the pool stays private so Any goes no further.
        self._pool: Any = pool
        self._acquire_timeout = acquire_timeout
        self._signing_key = b""

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
    ) -> Self:
        """Connect to the database at ``url`` and bring its schema up to date.

        Args:
            url: ``postgresql://user:password@host:port/dbname``. The query may
                carry ``pool_size`` (connections per process) and
                ``statement_cache_size`` (0 behind pgbouncer in transaction
                mode); other parameters (``sslmode``...) go to asyncpg.
            pool_size: Connections per process, unless the URL says otherwise.
            connect_timeout: Seconds to open a connection or wait for one.
            command_timeout: Seconds a statement may run.

        Raises:
            InvalidField: the URL or its options are malformed.
            StoreUnavailable: the database cannot be reached, or its schema is
                newer than this version of people understands.
        """
        dsn, options = _split_options(url)
        size = options.get(_POOL_SIZE_PARAMETER, pool_size)
        with _translated():
            try:
                pool = await asyncpg.create_pool(
                    dsn,
                    min_size=1,
                    max_size=size,
                    timeout=connect_timeout,
                    command_timeout=command_timeout,
                    statement_cache_size=options.get(_STATEMENT_CACHE_PARAMETER, 100),
                )
            except ValueError as exc:  # asyncpg's ClientConfigurationError is one too
                raise InvalidField("database", f"not a usable PostgreSQL URL: {exc}") from exc
        store = cls(pool, acquire_timeout=connect_timeout)
        try:
            await store._migrate()
        except BaseException:
            await store.aclose()
            raise
        return store

    async def add(self, user: User) -> None:
        with _translated(email=user.email):
            await self._fetch(
                "INSERT INTO users (id, name, email, email_key, version, create_time,"
                " update_time) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                user.id,
                user.name,
                user.email,
                user.email_key,
                user.version,
                user.create_time,
                user.update_time,
            )

    async def get(self, user_id: str) -> User:
        with _translated():
            rows = await self._fetch(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id)
        if not rows:
            raise UserNotFound(user_id)
        return _user(rows[0])

    async def list_page(self, *, after: Cursor | None, limit: int) -> list[User]:
        with _translated():
            if after is None:
                rows = await self._fetch(
                    f"SELECT {_COLUMNS} FROM users ORDER BY create_time, id LIMIT $1", limit
                )
            else:
                rows = await self._fetch(
                    f"SELECT {_COLUMNS} FROM users WHERE (create_time, id) > ($1, $2)"
                    " ORDER BY create_time, id LIMIT $3",
                    after[0],
                    after[1],
                    limit,
                )
        return [_user(row) for row in rows]

    async def replace(self, user: User, *, expected_version: int) -> None:
        # One statement: the update, and whether the row existed at all (the
        # EXISTS sees the snapshot from before the update).
        with _translated(email=user.email):
            (row,) = await self._fetch(
                "WITH changed AS (UPDATE users SET name = $2, email = $3, email_key = $4,"
                " version = $5, update_time = $6 WHERE id = $1 AND version = $7 RETURNING 1)"
                " SELECT (SELECT count(*) FROM changed) AS changed,"
                " EXISTS (SELECT 1 FROM users WHERE id = $1) AS present",
                user.id,
                user.name,
                user.email,
                user.email_key,
                user.version,
                user.update_time,
                expected_version,
            )
        _check_changed(row, user.id)

    async def remove(self, user_id: str, *, expected_version: int | None) -> None:
        with _translated():
            (row,) = await self._fetch(
                "WITH changed AS (DELETE FROM users WHERE id = $1"
                " AND ($2::bigint IS NULL OR version = $2) RETURNING 1)"
                " SELECT (SELECT count(*) FROM changed) AS changed,"
                " EXISTS (SELECT 1 FROM users WHERE id = $1) AS present",
                user_id,
                expected_version,
            )
        _check_changed(row, user_id)

    async def change_token(self) -> None:
        # Other replicas write without telling this one, and asking the
        # database costs a round trip: no cache is cheaper than a correct one.
        return None

    def signing_key(self) -> bytes:
        return self._signing_key

    async def ping(self) -> bool:
        try:
            with _translated():
                async with asyncio.timeout(PING_TIMEOUT):
                    (row,) = await self._fetch("SELECT 1 AS answer")
        except StoreUnavailable:
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
        """Run one statement on a pooled connection; waiting for one is bounded too."""
        async with self._pool.acquire(timeout=self._acquire_timeout) as connection:
            rows: list[Mapping[str, Any]] = await connection.fetch(query, *args)
        return rows

    async def _migrate(self) -> None:
        with _translated():
            async with self._pool.acquire(timeout=self._acquire_timeout) as connection:
                self._signing_key = await _migrate(connection)


async def _migrate(connection: Any) -> bytes:
    """Bring the schema up to date under an advisory lock; return the page-token key."""
    async with connection.transaction():
        # Held until commit: a second process waits here, then finds the schema
        # already current.
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
        )
        found = await connection.fetchval("SELECT max(version) FROM schema_version")
        current = int(found or 0)
        if current > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the database schema is version {current}, newer than this"
                f" people understands ({SCHEMA_VERSION}); upgrade people"
            )
        for migration in _MIGRATIONS[current:SCHEMA_VERSION]:
            await connection.execute(migration)
        if current < SCHEMA_VERSION:
            await connection.execute("DELETE FROM schema_version")
            await connection.execute(
                "INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION
            )
        await connection.execute(
            "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            _SIGNING_KEY_ROW,
            secrets.token_bytes(32),
        )
        key: bytes = await connection.fetchval(
            "SELECT value FROM secrets WHERE name = $1", _SIGNING_KEY_ROW
        )
    return bytes(key)


@contextmanager
def _translated(*, email: str | None = None) -> Iterator[None]:
    """Turn asyncpg's and the network's exceptions into domain errors.

    Args:
        email: The email a write tries to claim, for EmailAlreadyExists.
    """
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        if email is not None and exc.constraint_name == _EMAIL_INDEX:
            raise EmailAlreadyExists(email) from exc
        raise StoreUnavailable(f"the PostgreSQL store refused a write: {exc}") from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
        # Connection loss, server shutdown, a closed pool: nothing the caller can
        # fix but retrying later. (A SQL mistake would land here too, and say so.)
        raise StoreUnavailable(f"the PostgreSQL database is unavailable: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise StoreUnavailable(
            f"the PostgreSQL database is unavailable: {str(exc) or type(exc).__name__}"
        ) from exc


def _check_changed(row: Mapping[str, Any], user_id: str) -> None:
    if row["changed"]:
        return
    if not row["present"]:
        raise UserNotFound(user_id)
    raise StaleVersion(user_id)


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
