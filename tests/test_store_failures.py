"""Store failures, told honestly: each driver error gets its own status and a generic message.

Real SQLite files and the real throwaway PostgreSQL server fail in the ways
README's "When the database fails" table lists; the client sees the status and
a message with no driver text, and the ``people.store`` log gets the details
with one traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.testing import ChannelFor

from people._gen.people import CreateUserRequest, User, UserIdRequest, UserServiceStub
from people.api.user_service import UserService
from people.domain import errors
from people.domain.directory import UserDirectory
from people.domain.ports import UserStore
from people.store.postgres import PostgresStore
from people.store.postgres_errors import CONNECTIONS_EXHAUSTED, EMAIL_INDEX, classify
from people.store.sqlite import SQLiteStore
from people.store.sqlite_errors import DISK_FULL, UNAVAILABLE
from tests.postgres import PostgresServer

#: Upper bound for a blocked statement to show up as waiting (only detects a hang).
WAIT_LIMIT = 20.0
_T = TypeVar("_T")


@asynccontextmanager
async def stub_over(
    store: UserStore, *, new_id: Callable[[], str] | None = None
) -> AsyncIterator[UserServiceStub]:
    """A stub talking to UserService on ``store`` over an in-memory channel."""
    directory = UserDirectory(store) if new_id is None else UserDirectory(store, new_id=new_id)
    async with ChannelFor([UserService(directory)]) as channel:
        yield UserServiceStub(channel)


async def failure(call: Awaitable[object]) -> GRPCError:
    """The GRPCError ``call`` fails with."""
    with pytest.raises(GRPCError) as caught:
        await call
    return caught.value


def store_tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records the people.store logger wrote with a traceback."""
    return [r for r in caplog.records if r.name == "people.store" and r.exc_info]


def create_request(n: int = 0) -> CreateUserRequest:
    """A valid CreateUser request with its own email."""
    return CreateUserRequest(name=f"user {n}", email=f"user{n}-{uuid.uuid4().hex[:8]}@example.com")


async def eventually(check: Callable[[], Awaitable[_T]]) -> _T:
    """Poll ``check`` until it returns something truthy (bounded, so a hang fails)."""
    deadline = time.monotonic() + WAIT_LIMIT
    while True:
        answer = await check()
        if answer or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.02)


class TestSQLiteFailures:
    """A real SQLite file failing in each way the table lists."""

    async def test_dropped_table_is_internal(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A lost table is INTERNAL with a generic message; the log has SQLite's words once."""
        path = tmp_path / "people.db"
        store = await SQLiteStore.open(path)
        with sqlite3.connect(path) as db:
            db.execute("DROP TABLE users")
        db.close()
        caplog.set_level(logging.INFO, logger="people.store")
        try:
            async with stub_over(store) as stub:
                error = await failure(stub.get_user_by_id(UserIdRequest(id="x")))
        finally:
            await store.aclose()
        assert error.status is Status.INTERNAL
        assert error.message == errors.StoreFailure().message
        (record,) = store_tracebacks(caplog)
        assert "no such table: users" in record.getMessage()
        assert record.levelno == logging.ERROR

    async def test_failing_health_check_logs_at_debug_only(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """ping answers False for a lost table and logs it at DEBUG, not as an error."""
        path = tmp_path / "people.db"
        store = await SQLiteStore.open(path)
        with sqlite3.connect(path) as db:
            db.execute("DROP TABLE users")
        db.close()
        caplog.set_level(logging.DEBUG, logger="people.store")
        try:
            assert await store.ping() is False
        finally:
            await store.aclose()
        (record,) = store_tracebacks(caplog)
        assert record.levelno == logging.DEBUG

    async def test_full_disk_is_resource_exhausted(self, tmp_path: Path) -> None:
        """A file that cannot grow answers RESOURCE_EXHAUSTED "the database disk is full"."""
        path = tmp_path / "people.db"
        await (await SQLiteStore.open(path)).aclose()
        with sqlite3.connect(path) as db:
            (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.close()
        store = await SQLiteStore.open(path, max_pages=pages)
        try:
            async with stub_over(store) as stub:
                for n in range(1000):  # the few pages there are fill after a dozen users
                    try:
                        await stub.create_user(create_request(n))
                    except GRPCError as exc:
                        error = exc
                        break
                else:
                    pytest.fail("the file never filled up")
        finally:
            await store.aclose()
        assert (error.status, error.message) == (Status.RESOURCE_EXHAUSTED, DISK_FULL)

    async def test_locked_file_is_unavailable(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A file another connection holds exclusively is UNAVAILABLE after the busy timeout,
        logged as a warning."""
        caplog.set_level(logging.INFO, logger="people.store")
        path = tmp_path / "people.db"
        store = await SQLiteStore.open(path, busy_timeout_ms=50)
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            async with stub_over(store) as stub:
                holder.execute("BEGIN EXCLUSIVE")
                error = await failure(stub.create_user(create_request()))
                holder.execute("COMMIT")
                await stub.create_user(create_request())
        finally:
            holder.close()
            await store.aclose()
        assert (error.status, error.message) == (Status.UNAVAILABLE, UNAVAILABLE)
        (record,) = store_tracebacks(caplog)
        assert "SQLITE_BUSY" in record.getMessage()
        assert record.levelno == logging.WARNING


class TestDuplicateId:
    """Ids are fresh UUID4s: a repeated one is a bug (INTERNAL), not a taken email."""

    async def test_internal_not_already_exists(self, store: UserStore) -> None:
        """A second user with the same id and another email is INTERNAL on every store."""
        async with stub_over(store, new_id=lambda: "the-same-id") as stub:
            await stub.create_user(create_request(1))
            error = await failure(stub.create_user(create_request(2)))
            kept = await stub.get_user_by_id(UserIdRequest(id="the-same-id"))
        assert (error.status, error.message) == (Status.INTERNAL, errors.StoreFailure().message)
        assert kept.name == "user 1"


def server_error(sqlstate: str, constraint: str | None = None) -> asyncpg.PostgresError:
    """The exception asyncpg raises when the server answers with ``sqlstate``."""
    fields = {"C": sqlstate, "M": "what the server said"}
    if constraint is not None:
        fields["n"] = constraint
    error: asyncpg.PostgresError = asyncpg.PostgresError.new(fields)
    return error


class TestPostgresClassification:
    """Every SQLSTATE class the table names gets its domain error (and so its status)."""

    @pytest.mark.parametrize(
        ("exc", "expected"),
        [
            (server_error("08006"), errors.StoreUnavailable),  # connection failure
            (server_error("08003"), errors.StoreUnavailable),  # connection does not exist
            (server_error("57P01"), errors.StoreUnavailable),  # admin shutdown
            (server_error("57P02"), errors.StoreUnavailable),  # crash shutdown
            (server_error("57P03"), errors.StoreUnavailable),  # cannot connect now
            (server_error("57014"), errors.StoreUnavailable),  # statement timeout
            (server_error("53300"), errors.StoreUnavailable),  # too many connections
            (server_error("58030"), errors.StoreUnavailable),  # I/O error
            (server_error("25006"), errors.StoreUnavailable),  # read-only: a standby
            (asyncpg.InterfaceError("pool is closing"), errors.StoreUnavailable),
            (ConnectionRefusedError(111, "Connect call failed"), errors.StoreUnavailable),
            (TimeoutError(), errors.StoreUnavailable),
            (server_error("53100"), errors.ResourceExhausted),  # disk full
            (server_error("40001"), errors.WriteConflict),
            (server_error("40P01"), errors.WriteConflict),
            (server_error("22021"), errors.UnstorableValue),  # NUL in text
            (server_error("22003"), errors.UnstorableValue),  # numeric out of range
            (server_error("23505", EMAIL_INDEX), errors.EmailAlreadyExists),
            (server_error("23505", "users_pkey"), errors.StoreFailure),
            (server_error("23503"), errors.StoreFailure),  # foreign key
            (server_error("42P01"), errors.StoreFailure),  # undefined table
            (server_error("42601"), errors.StoreFailure),  # syntax error
            (server_error("XX000"), errors.StoreFailure),  # internal error
        ],
        ids=lambda value: getattr(value, "sqlstate", None) or type(value).__name__,
    )
    def test_classify(self, exc: BaseException, expected: type[errors.PeopleError]) -> None:
        """The exception is classified as the table says, with a message free of its text."""
        error = classify(exc, email="ada@example.com")
        assert type(error) is expected
        assert "what the server said" not in error.message


async def execute(url: str, query: str) -> None:
    """Run one statement on a fresh connection."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(query)
    finally:
        await connection.close()


async def waiting_on_a_lock(url: str) -> bool:
    """True once some statement in the database waits for a lock."""
    connection = await asyncpg.connect(url)
    try:
        found = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    finally:
        await connection.close()
    return bool(found)


class TestPostgresFailures:
    """The real PostgreSQL server failing in each way the table lists."""

    async def test_dropped_table_is_internal(
        self, postgres_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A lost table is INTERNAL, not UNAVAILABLE; the log has the SQLSTATE once."""
        store = await PostgresStore.open(postgres_url)
        await execute(postgres_url, "DROP TABLE users")
        caplog.set_level(logging.INFO, logger="people.store")
        try:
            async with stub_over(store) as stub:
                error = await failure(stub.get_user_by_id(UserIdRequest(id="x")))
        finally:
            await store.aclose()
        assert (error.status, error.message) == (Status.INTERNAL, errors.StoreFailure().message)
        (record,) = store_tracebacks(caplog)
        assert "42P01" in record.getMessage()

    async def test_nul_reaching_the_store_is_invalid_argument(self, postgres_url: str) -> None:
        """Text PostgreSQL refuses (NUL, SQLSTATE 22021) is UnstorableValue, not an outage."""
        store = await PostgresStore.open(postgres_url)
        try:
            with pytest.raises(errors.UnstorableValue) as caught:
                await store.get("a\x00b")
        finally:
            await store.aclose()
        assert "database" in caught.value.message
        assert "0x00" not in caught.value.message

    async def test_exhausted_pool_is_resource_exhausted(self, postgres_url: str) -> None:
        """With the one pooled connection busy, the next call waits the acquire timeout and
        gets RESOURCE_EXHAUSTED "database connections exhausted"; the busy one then succeeds."""
        store = await PostgresStore.open(f"{postgres_url}?pool_size=1", connect_timeout=0.5)
        locker = await asyncpg.connect(postgres_url)
        try:
            async with stub_over(store) as stub:
                created = await stub.create_user(create_request())
                await locker.execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
                busy = asyncio.ensure_future(stub.get_user_by_id(UserIdRequest(id=created.id)))
                assert await eventually(lambda: waiting_on_a_lock(postgres_url))
                error = await failure(stub.get_user_by_id(UserIdRequest(id=created.id)))
                await locker.execute("COMMIT")
                answered = await busy
        finally:
            await locker.close()
            await store.aclose()
        assert (error.status, error.message) == (Status.RESOURCE_EXHAUSTED, CONNECTIONS_EXHAUSTED)
        assert answered.id == created.id


@asynccontextmanager
async def serializable_database(server: PostgresServer) -> AsyncIterator[str]:
    """A new database whose sessions all run SERIALIZABLE; yields its URL."""
    url = await server.create_database()
    name = url.rsplit("/", 1)[1]
    await execute(
        server.url, f'ALTER DATABASE "{name}" SET default_transaction_isolation = serializable'
    )
    yield url


async def update_behind_a_concurrent_one(url: str, store: PostgresStore) -> GRPCError | None:
    """UpdateUser while another SERIALIZABLE transaction changes the same user and commits.

    The update waits on the other's row lock, then fails with SQLSTATE 40001
    once the other commits. Returns the update's error, or None if it applied.
    """
    other = await asyncpg.connect(url)
    try:
        async with stub_over(store) as stub:
            created = await stub.create_user(create_request())
            await other.execute("BEGIN")
            await other.execute("UPDATE users SET name = 'other' WHERE id = $1", created.id)
            update = asyncio.ensure_future(stub.update_user(User(id=created.id, name="mine")))
            assert await eventually(lambda: waiting_on_a_lock(url))
            await other.execute("COMMIT")
            try:
                await update
            except GRPCError as exc:
                return exc
            stored = await stub.get_user_by_id(UserIdRequest(id=created.id))
            assert stored.name == "mine"
            return None
    finally:
        await other.close()


class TestSerializationFailure:
    """A statement that loses to a concurrent one runs again, then ends ABORTED, never
    UNAVAILABLE."""

    async def test_retried_and_applied(
        self, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A real serialization failure is retried inside the store and the update applies."""
        caplog.set_level(logging.DEBUG, logger="people.store")
        async with serializable_database(postgres_server) as url:
            store = await PostgresStore.open(url)
            try:
                error = await update_behind_a_concurrent_one(url, store)
            finally:
                await store.aclose()
        assert error is None
        retries = [r for r in caplog.records if "running the statement again" in r.getMessage()]
        assert retries
        assert "40001" in retries[0].getMessage()

    async def test_aborted_once_the_retries_are_spent(
        self, postgres_server: PostgresServer
    ) -> None:
        """With no retry left, a serialization failure is ABORTED with WriteConflict's message."""
        async with serializable_database(postgres_server) as url:
            store = await PostgresStore.open(url, conflict_attempts=1)
            try:
                error = await update_behind_a_concurrent_one(url, store)
            finally:
                await store.aclose()
        assert error is not None
        assert (error.status, error.message) == (Status.ABORTED, errors.WriteConflict.MESSAGE)
