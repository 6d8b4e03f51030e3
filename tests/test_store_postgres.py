"""What only the PostgreSQL store promises: schema versioning, outages, its URL.

The shared contract (tests/test_store_contract.py) runs against PostgreSQL
through the ``store`` fixture; these tests cover the rest, on a real server.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from people._gen.people import CreateUserRequest, UserIdRequest, UserServiceStub
from people.domain.errors import EmailAlreadyExists, InvalidField, StoreUnavailable
from people.domain.model import User
from people.store import open_store
from people.store.postgres import PostgresStore
from people.store.postgres_errors import UNAVAILABLE
from people.store.postgres_schema import SCHEMA_VERSION
from tests.postgres import PostgresServer, discard, free_port, started_server
from tests.support import running_server

#: Upper bound for health to change after the database does (not a timing assertion).
HEALTH_WAIT = 20.0


def make_user(n: int, *, email: str | None = None) -> User:
    """A valid user with distinct microsecond timestamps."""
    moment = datetime(2025, 1, 2, 3, 4, 5, n, tzinfo=UTC)
    return User(
        id=str(uuid.uuid4()),
        name=f"user {n}",
        email=email or f"user{n}@example.com",
        version=1,
        create_time=moment,
        update_time=moment,
    )


async def scalar(url: str, query: str) -> object:
    """Run one query on a fresh connection and return the first column of its first row."""
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


class TestSchema:
    """The schema is created once, versioned, and guarded by the database."""

    async def test_open_records_the_schema_version(self, postgres_url: str) -> None:
        """Opening an empty database creates the schema and records its version."""
        store = await PostgresStore.open(postgres_url)
        await store.aclose()
        assert await scalar(postgres_url, "SELECT max(version) FROM schema_version") == (
            SCHEMA_VERSION
        )

    async def test_concurrent_opens_do_not_race(self, postgres_url: str) -> None:
        """Eight stores opening one empty database at once all succeed, migrating it once."""
        stores = await asyncio.gather(*(PostgresStore.open(postgres_url) for _ in range(8)))
        for store in stores:
            await store.aclose()
        assert await scalar(postgres_url, "SELECT count(*) FROM schema_version") == 1

    async def test_reopen_keeps_the_data(self, postgres_url: str) -> None:
        """A second open of a migrated database finds the users already there."""
        user = make_user(1)
        first = await PostgresStore.open(postgres_url)
        await first.add(user)
        await first.aclose()
        second = await PostgresStore.open(postgres_url)
        try:
            assert await second.get(user.id) == user
        finally:
            await second.aclose()

    async def test_newer_schema_is_refused(self, postgres_url: str) -> None:
        """A database migrated by a newer people makes open fail as unavailable."""
        store = await PostgresStore.open(postgres_url)
        await store.aclose()
        await scalar(postgres_url, f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}")
        with pytest.raises(StoreUnavailable, match="newer"):
            await PostgresStore.open(postgres_url)

    async def test_email_uniqueness_is_the_databases(self, postgres_url: str) -> None:
        """Two stores on one database cannot both claim an email in different case."""
        first = await PostgresStore.open(postgres_url)
        second = await PostgresStore.open(postgres_url)
        try:
            await first.add(make_user(1, email="Same@Example.com"))
            with pytest.raises(EmailAlreadyExists):
                await second.add(make_user(2, email="same@example.COM"))
        finally:
            await first.aclose()
            await second.aclose()

    async def test_ties_are_ordered_like_python_strings(
        self, postgres_server: PostgresServer
    ) -> None:
        """Users created in the same microsecond are listed by id in code-point order (as the
        other stores do), even in a database whose collation sorts text otherwise (ICU en-US)."""
        ids = ["b", "B", "a-1", "a_1", "é", "Z", "10", "9"]
        moment = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        store = await PostgresStore.open(await postgres_server.create_database(icu_locale="en-US"))
        try:
            for n, user_id in enumerate(ids):
                user = make_user(n)
                await store.add(
                    User(
                        id=user_id,
                        name=user.name,
                        email=user.email,
                        version=1,
                        create_time=moment,
                        update_time=moment,
                    )
                )
            first = await store.list_page(after=None, limit=3)
            rest = await store.list_page(after=(moment, first[-1].id), limit=10)
        finally:
            await store.aclose()
        assert [user.id for user in [*first, *rest]] == sorted(ids)

    async def test_timestamps_keep_microseconds(self, postgres_url: str) -> None:
        """create_time is stored as timestamptz with its microseconds."""
        store = await PostgresStore.open(postgres_url)
        try:
            await store.add(make_user(123457))
        finally:
            await store.aclose()
        kind = await scalar(
            postgres_url,
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'users' AND column_name = 'create_time'",
        )
        micros = await scalar(
            postgres_url, "SELECT extract(microseconds FROM create_time)::int FROM users"
        )
        assert kind == "timestamp with time zone"
        assert micros == 5_123_457


class TestUrl:
    """open_store and PostgresStore.open read a postgresql:// URL."""

    async def test_open_store_opens_postgres(self, postgres_url: str) -> None:
        """open_store gives a working PostgresStore for a postgresql:// URL."""
        store = await open_store(postgres_url)
        try:
            assert isinstance(store, PostgresStore)
            assert await store.ping()
        finally:
            await store.aclose()

    async def test_pool_options_are_read_from_the_query(self, postgres_url: str) -> None:
        """pool_size and statement_cache_size are accepted in the URL's query string."""
        store = await open_store(f"{postgres_url}?pool_size=2&statement_cache_size=0")
        try:
            user = make_user(1)
            await store.add(user)
            assert await store.get(user.id) == user
        finally:
            await store.aclose()

    @pytest.mark.parametrize("query", ["pool_size=0", "pool_size=many", "statement_cache_size=-1"])
    async def test_bad_pool_options_are_invalid(self, query: str) -> None:
        """A malformed people option in the URL is an InvalidField naming the database."""
        with pytest.raises(InvalidField, match="database"):
            await open_store(f"postgresql://nobody@127.0.0.1:1/db?{query}")

    @pytest.mark.parametrize(
        "url",
        [
            "postgresql://nobody@127.0.0.1:notaport/db",
            "postgresql://nobody@[::1/db",
            "postgresql://nobody@127.0.0.1:1/db?sslmode=sometimes",
        ],
    )
    async def test_malformed_url_is_invalid(self, url: str) -> None:
        """A URL asyncpg cannot parse is an InvalidField naming the database, not a ValueError."""
        with pytest.raises(InvalidField, match="database"):
            await open_store(url)

    async def test_one_connection_at_rest(
        self, postgres_server: PostgresServer, postgres_url: str
    ) -> None:
        """With pool_size=3, a store whose calls never overlap holds one connection, not three."""
        store = await open_store(f"{postgres_url}?pool_size=3")
        try:
            user = make_user(1)
            await store.add(user)
            assert await store.get(user.id) == user
            name = postgres_url.rsplit("/", 1)[1]
            held = await scalar(
                postgres_server.url,
                f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'",
            )
        finally:
            await store.aclose()
        assert held == 1

    async def test_refused_connection_is_unavailable(self) -> None:
        """Opening a database nobody listens on fails with StoreUnavailable giving the driver's
        reason, for the operator starting the server."""
        with pytest.raises(StoreUnavailable) as caught:
            await PostgresStore.open(
                f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", connect_timeout=2
            )
        prefix = "cannot open the PostgreSQL database: "
        assert caught.value.message.startswith(prefix)
        assert str(caught.value.__cause__) in caught.value.message


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, which it may stop and start."""
    server = started_server()
    yield server
    discard(server)


class TestOutage:
    """The store survives the database going away and coming back."""

    async def test_calls_fail_while_down_and_work_again_after(
        self, own_server: PostgresServer
    ) -> None:
        """While PostgreSQL is stopped calls raise StoreUnavailable and ping is False; the same
        store works again once it restarts."""
        store = await PostgresStore.open(
            await own_server.create_database(), pool_size=3, connect_timeout=2
        )
        try:
            before = make_user(1)
            await store.add(before)
            assert await store.ping()

            await asyncio.to_thread(own_server.stop)
            assert not await store.ping()
            with pytest.raises(StoreUnavailable):
                await store.get(before.id)
            with pytest.raises(StoreUnavailable):
                await store.add(make_user(2))
            with pytest.raises(StoreUnavailable):
                await store.list_page(after=None, limit=10)

            await asyncio.to_thread(own_server.start)
            assert await store.ping()
            assert await store.get(before.id) == before
            after = make_user(3)
            await store.add(after)
            assert await store.list_page(after=None, limit=10) == [before, after]
        finally:
            await store.aclose()

    async def test_aclose_while_down_returns(self, own_server: PostgresServer) -> None:
        """Closing a store whose database has gone away does not hang or raise."""
        store = await PostgresStore.open(await own_server.create_database(), connect_timeout=2)
        await asyncio.to_thread(own_server.stop)
        await store.aclose()

    async def test_closed_store_is_unavailable(self, postgres_url: str) -> None:
        """Calls on a closed store raise StoreUnavailable, not a driver error."""
        store = await PostgresStore.open(postgres_url)
        await store.aclose()
        with pytest.raises(StoreUnavailable):
            await store.get("anything")
        assert not await store.ping()


async def health_of(target: str) -> int:
    """Ask the server's grpc.health.v1 Check for people.UserService; return the status."""
    host, port = target.rsplit(":", 1)
    channel = Channel(host.strip("[]"), int(port))
    try:
        answer = await HealthStub(channel).Check(HealthCheckRequest(service="people.UserService"))
    finally:
        channel.close()
    status: int = answer.status
    return status


async def wait_for_health(target: str, status: int) -> int:
    """Poll the health service (bounded) until it reports ``status``; return the last answer."""
    deadline = time.monotonic() + HEALTH_WAIT
    answer = await health_of(target)
    while answer != status and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        answer = await health_of(target)
    return answer


class TestServedOutage:
    """A server on PostgreSQL reports an outage and recovers from it by itself."""

    async def test_unavailable_and_not_serving_until_postgres_returns(
        self, own_server: PostgresServer
    ) -> None:
        """With PostgreSQL stopped, calls are UNAVAILABLE with a generic message (no host, no
        port) and health is NOT_SERVING; once it restarts the same server process answers and
        reports SERVING again."""
        url = await own_server.create_database()
        with running_server("--database", url) as server:
            host, port = server.address.rsplit(":", 1)
            channel = Channel(host.strip("[]"), int(port))
            stub = UserServiceStub(channel)
            try:
                created = await stub.create_user(
                    CreateUserRequest(name="Ada", email="ada@example.com")
                )
                await asyncio.to_thread(own_server.stop)
                with pytest.raises(GRPCError) as caught:
                    await stub.get_user_by_id(UserIdRequest(id=created.id))
                down = await wait_for_health(server.target, HealthCheckResponse.NOT_SERVING)
                # By now the pool has tried, and failed, to open a new connection too.
                with pytest.raises(GRPCError) as reconnecting:
                    await stub.get_user_by_id(UserIdRequest(id=created.id))

                await asyncio.to_thread(own_server.start)
                up = await wait_for_health(server.target, HealthCheckResponse.SERVING)
                again = await stub.get_user_by_id(UserIdRequest(id=created.id))
            finally:
                channel.close()
            assert server.stop() == 0, server.output()
        for error in (caught.value, reconnecting.value):
            assert (error.status, error.message) == (Status.UNAVAILABLE, UNAVAILABLE)
        assert "127.0.0.1" not in (caught.value.message or "") + (reconnecting.value.message or "")
        assert str(own_server.port) not in (reconnecting.value.message or "")
        assert down == HealthCheckResponse.NOT_SERVING
        assert up == HealthCheckResponse.SERVING
        assert again.email == "ada@example.com"


class TestWithoutPostgres:
    """The PostgreSQL tests without initdb and pg_ctl: skipped, or failed when required."""

    def test_skipped_unless_required(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """With no binaries on PATH a test is skipped; with PEOPLE_REQUIRE_POSTGRES=1 it fails."""
        monkeypatch.setenv("PATH", str(tmp_path))
        monkeypatch.delenv("PEOPLE_REQUIRE_POSTGRES", raising=False)
        with pytest.raises(pytest.skip.Exception):
            started_server()
        monkeypatch.setenv("PEOPLE_REQUIRE_POSTGRES", "1")
        with pytest.raises(pytest.fail.Exception, match="PEOPLE_REQUIRE_POSTGRES"):
            started_server()
