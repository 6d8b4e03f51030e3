"""Read answers come from a cache only while the store says nothing changed, in any process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.testing import ChannelFor

from people._gen.people import (
    CreateUserRequest,
    Empty,
    ListUsersRequest,
    User,
    UserIdRequest,
    UserServiceStub,
)
from people.api.read_cache import ReadCache
from people.api.user_service import UserService
from people.domain.directory import UserDirectory
from people.domain.errors import StoreUnavailable
from people.domain.model import User as DomainUser
from people.domain.ports import Cursor, UserStore
from people.domain.query import DEFAULT_QUERY, Query
from people.store.memory import MemoryStore
from people.store.postgres import PostgresStore
from people.store.sqlite import SQLiteStore
from tests.inprocess import until
from tests.test_store_contract import make_user
from tests.wal_recovery import recovering_elsewhere


class CountingSQLiteStore(SQLiteStore):
    """A SQLite store that counts how often users are read, in pages and one by one."""

    scans = 0
    gets = 0

    async def list_page(
        self, *, after: Cursor | None, limit: int, query: Query = DEFAULT_QUERY
    ) -> list[DomainUser]:
        """Count, then read."""
        self.scans += 1
        return await super().list_page(after=after, limit=limit, query=query)

    async def get(self, user_id: str) -> DomainUser:
        """Count, then read."""
        self.gets += 1
        return await super().get(user_id)


@pytest.fixture
async def sqlite_pair(tmp_path: Path) -> AsyncIterator[tuple[CountingSQLiteStore, SQLiteStore]]:
    """Two stores on one SQLite file, as two worker processes would have."""
    path = tmp_path / "people.db"
    served = await CountingSQLiteStore.open(path)
    other = await SQLiteStore.open(path)
    yield served, other
    await other.aclose()
    await served.aclose()


class ReadGatedStore(MemoryStore):
    """A memory store whose page reads each wait at a gate of their own, and may then fail."""

    def __init__(self) -> None:
        super().__init__()
        #: While True, every page read waits at a new gate, appended to ``gates`` in arrival order.
        self.gated = True
        self.gates: list[asyncio.Event] = []
        #: Raised by every page read once past its gate, when set.
        self.failure: Exception | None = None
        self.scans = 0
        self.token_reads = 0

    async def list_page(
        self, *, after: Cursor | None, limit: int, query: Query = DEFAULT_QUERY
    ) -> list[DomainUser]:
        """Read at once, then wait at the gate: the answer is the store as it was on arrival."""
        self.scans += 1
        users = await super().list_page(after=after, limit=limit, query=query)
        if self.gated:
            gate = asyncio.Event()
            self.gates.append(gate)
            await gate.wait()
        if self.failure is not None:
            raise self.failure
        return users

    def change_token(self) -> int:
        """Count, then read."""
        self.token_reads += 1
        return super().change_token()


async def emails(stub: UserServiceStub) -> list[str]:
    """The emails GetAllUsers answers, in order."""
    return [user.email for user in (await stub.get_all_users(Empty())).user]


class TestChangeToken:
    """A store's change token moves with every write and stays put otherwise."""

    async def test_moves_on_every_write(self, store: UserStore) -> None:
        """add, replace and remove each change the token; reads do not."""
        first = store.change_token()
        if isinstance(store, PostgresStore):
            assert first is None  # no cheap cross-replica signal: never cached
            return
        assert first == store.change_token()
        user = make_user(1)
        await store.add(user)
        after_add = store.change_token()
        await store.get(user.id)
        assert after_add == store.change_token()
        await store.replace(replace(user, name="renamed", version=2), expected_version=1)
        after_replace = store.change_token()
        await store.remove(user.id, expected_version=None)
        after_remove = store.change_token()
        assert len({first, after_add, after_replace, after_remove}) == 4

    async def test_sqlite_sees_another_connection(
        self, sqlite_pair: tuple[CountingSQLiteStore, SQLiteStore]
    ) -> None:
        """A write through another store on the same file (another process) moves the token."""
        served, other = sqlite_pair
        before = served.change_token()
        await other.add(make_user(1))
        assert served.change_token() != before


class TestGetAllUsersCache:
    """The cached answer is reused while valid and never outlives a write."""

    async def test_reused_until_a_write(
        self, sqlite_pair: tuple[CountingSQLiteStore, SQLiteStore]
    ) -> None:
        """Repeated calls read the store once; a create makes the next call read it again."""
        served, _ = sqlite_pair
        async with ChannelFor([UserService(UserDirectory(served))]) as channel:
            stub = UserServiceStub(channel)
            await stub.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
            assert await emails(stub) == ["ada@example.com"]
            scans = served.scans
            for _ in range(5):
                assert await emails(stub) == ["ada@example.com"]
            assert served.scans == scans
            await stub.create_user(CreateUserRequest(name="Bob", email="bob@example.com"))
            assert await emails(stub) == ["ada@example.com", "bob@example.com"]
            assert served.scans == scans + 1

    async def test_writes_from_another_process_invalidate(
        self, sqlite_pair: tuple[CountingSQLiteStore, SQLiteStore]
    ) -> None:
        """Adds, updates and deletes made through another store on the file show at once."""
        served, other = sqlite_pair
        async with ChannelFor([UserService(UserDirectory(served))]) as channel:
            stub = UserServiceStub(channel)
            assert await emails(stub) == []
            user = make_user(1)
            await other.add(user)
            assert await emails(stub) == [user.email]
            await other.replace(
                replace(user, email="new@example.com", version=2), expected_version=1
            )
            assert await emails(stub) == ["new@example.com"]
            await other.remove(user.id, expected_version=None)
            assert await emails(stub) == []

    async def test_update_and_delete_through_the_api(self, store: UserStore) -> None:
        """On every store, GetAllUsers reflects each update and delete made through the API."""
        async with ChannelFor([UserService(UserDirectory(store))]) as channel:
            stub = UserServiceStub(channel)
            created = await stub.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
            assert await emails(stub) == ["ada@example.com"]
            await stub.update_user(User(id=created.id, email="ada.king@example.com"))
            assert await emails(stub) == ["ada.king@example.com"]
            await stub.delete_user_by_id(UserIdRequest(id=created.id))
            assert await emails(stub) == []

    async def test_memory_store(self) -> None:
        """The memory store's counter keeps the cache honest too."""
        store = MemoryStore()
        async with ChannelFor([UserService(UserDirectory(store))]) as channel:
            stub = UserServiceStub(channel)
            assert await emails(stub) == []
            await store.add(make_user(1))
            assert await emails(stub) == ["user1@example.com"]


class TestOtherReads:
    """GetUserById and ListUsers are cached the same way and invalidated the same way."""

    async def test_get_user_by_id_sees_another_process_update(
        self, sqlite_pair: tuple[CountingSQLiteStore, SQLiteStore]
    ) -> None:
        """A user read (and cached) shows an update made through another store at once."""
        served, other = sqlite_pair
        user = make_user(1)
        await other.add(user)
        async with ChannelFor([UserService(UserDirectory(served))]) as channel:
            stub = UserServiceStub(channel)
            assert (await stub.get_user_by_id(UserIdRequest(id=user.id))).name == "user 1"
            assert (await stub.get_user_by_id(UserIdRequest(id=user.id))).name == "user 1"
            await other.replace(replace(user, name="renamed", version=2), expected_version=1)
            assert (await stub.get_user_by_id(UserIdRequest(id=user.id))).name == "renamed"
            await other.remove(user.id, expected_version=None)
            with pytest.raises(GRPCError) as caught:
                await stub.get_user_by_id(UserIdRequest(id=user.id))
            assert caught.value.status is Status.NOT_FOUND

    async def test_get_user_by_id_is_kept_per_user(
        self, sqlite_pair: tuple[CountingSQLiteStore, SQLiteStore]
    ) -> None:
        """Each user's answer is kept under its own id: repeats read the store once per user."""
        served, other = sqlite_pair
        ada, bob = make_user(1), make_user(2)
        await other.add(ada)
        await other.add(bob)
        async with ChannelFor([UserService(UserDirectory(served))]) as channel:
            stub = UserServiceStub(channel)
            for _ in range(3):
                for user in (ada, bob):
                    got = await stub.get_user_by_id(UserIdRequest(id=user.id))
                    assert got.email == user.email
        assert served.gets == 2

    async def test_list_users_is_kept_per_filter_and_order(
        self, sqlite_pair: tuple[CountingSQLiteStore, SQLiteStore]
    ) -> None:
        """Pages of one size but another filter or order are kept apart, each read once."""
        served, other = sqlite_pair
        for n in range(3):
            await other.add(make_user(n))
        listings = [("", ""), ('email = "user1*"', ""), ("", "create_time desc")]
        async with ChannelFor([UserService(UserDirectory(served))]) as channel:
            stub = UserServiceStub(channel)
            for _ in range(2):
                answers = [
                    [
                        user.email
                        for user in (
                            await stub.list_users(
                                ListUsersRequest(page_size=10, filter=filter, order_by=order_by)
                            )
                        ).users
                    ]
                    for filter, order_by in listings
                ]
                assert answers == [
                    ["user0@example.com", "user1@example.com", "user2@example.com"],
                    ["user1@example.com"],
                    ["user2@example.com", "user1@example.com", "user0@example.com"],
                ]
        assert served.scans == 3

    async def test_list_users_page_sees_another_process_create(
        self, sqlite_pair: tuple[CountingSQLiteStore, SQLiteStore]
    ) -> None:
        """A cached first page grows when another store adds a user."""
        served, other = sqlite_pair
        await other.add(make_user(1))
        async with ChannelFor([UserService(UserDirectory(served))]) as channel:
            stub = UserServiceStub(channel)
            request = ListUsersRequest(page_size=10)
            assert len((await stub.list_users(request)).users) == 1
            assert len((await stub.list_users(request)).users) == 1
            await other.add(make_user(2))
            assert len((await stub.list_users(request)).users) == 2


class CountingPostgresStore(PostgresStore):
    """A PostgreSQL store that counts single-user reads."""

    gets = 0

    async def get(self, user_id: str) -> DomainUser:
        """Count, then read."""
        self.gets += 1
        return await super().get(user_id)


@pytest.mark.postgres
class TestPostgresIsNeverCached:
    """Replicas write without telling each other, so on PostgreSQL every read asks the database."""

    async def test_every_read_reaches_the_database(self, postgres_url: str) -> None:
        """Repeating GetUserById reads PostgreSQL each time, and sees another replica's update."""
        served = await CountingPostgresStore.open(postgres_url)
        other = await PostgresStore.open(postgres_url)
        try:
            user = make_user(1)
            await other.add(user)
            async with ChannelFor([UserService(UserDirectory(served))]) as channel:
                stub = UserServiceStub(channel)
                for _ in range(3):
                    assert (await stub.get_user_by_id(UserIdRequest(id=user.id))).name == "user 1"
                assert served.gets == 3
                await other.replace(replace(user, name="renamed", version=2), expected_version=1)
                assert (await stub.get_user_by_id(UserIdRequest(id=user.id))).name == "renamed"
        finally:
            await other.aclose()
            await served.aclose()


class TestReadCache:
    """The cache itself: one token at a time, bounded in bytes."""

    def test_answers_only_for_the_token_it_was_filled_under(self) -> None:
        """An entry is returned for its token and forgotten once another token is used."""
        cache: ReadCache[bytes] = ReadCache()
        cache.put(1, "a", b"answer")
        assert cache.get(1, "a") == b"answer"
        assert cache.get(2, "a") is None
        cache.put(2, "b", b"other")
        assert cache.get(1, "a") is None
        assert len(cache) == 1

    def test_none_token_never_caches(self) -> None:
        """A store that cannot tell when it changed gets no caching at all."""
        cache: ReadCache[bytes] = ReadCache()
        cache.put(None, "a", b"answer")
        assert cache.get(None, "a") is None
        assert len(cache) == 0

    def test_bounded_in_bytes_oldest_first(self) -> None:
        """Past max_bytes the oldest entries go; an answer larger than the bound is not kept."""
        cache: ReadCache[bytes] = ReadCache(max_bytes=10)
        cache.put(1, "a", b"1234")
        cache.put(1, "b", b"5678")
        cache.put(1, "c", b"90ab")
        assert cache.get(1, "a") is None
        assert cache.get(1, "b") == b"5678"
        assert cache.get(1, "c") == b"90ab"
        cache.put(1, "huge", b"x" * 11)
        assert cache.get(1, "huge") is None
        assert len(cache) == 2

    def test_bounded_in_entries_however_small(self) -> None:
        """Past max_entries the oldest entries go, even when every answer is empty (an empty
        page is 0 bytes, and distinct filters can ask for any number of them)."""
        cache: ReadCache[bytes] = ReadCache(max_bytes=10, max_entries=3)
        for n in range(100):
            cache.put(1, f"filter {n}", b"")
        assert len(cache) == 3
        assert cache.get(1, "filter 99") == b""
        assert cache.get(1, "filter 96") is None

    def test_an_answer_under_an_older_token_is_dropped(self) -> None:
        """A put under a token older than the latest one looked up neither keeps nor evicts."""
        cache: ReadCache[bytes] = ReadCache()
        assert cache.get(1, "all") is None  # a miss starts under 1...
        assert cache.get(2, "all") is None  # ...a write lands, another miss starts under 2
        cache.put(1, "all", b"old")
        assert len(cache) == 0
        cache.put(2, "all", b"new")
        cache.put(1, "all", b"old")
        assert cache.get(2, "all") == b"new"
        assert len(cache) == 1


class TestReadCacheFetch:
    """fetch: concurrent misses for one key under one token share one computation."""

    async def test_a_cancelled_waiter_leaves_the_others_answered(self) -> None:
        """Cancelling the caller that started a computation leaves it running for its sharers."""
        cache: ReadCache[bytes] = ReadCache()
        gate = asyncio.Event()
        runs = 0

        async def compute() -> bytes:
            nonlocal runs
            runs += 1
            await gate.wait()
            return b"answer"

        starter = asyncio.create_task(cache.fetch(1, "k", compute))
        sharers = [asyncio.create_task(cache.fetch(1, "k", compute)) for _ in range(2)]
        await until(lambda: runs == 1)
        starter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starter
        gate.set()
        assert await asyncio.gather(*sharers) == [b"answer", b"answer"]
        assert runs == 1
        assert cache.get(1, "k") == b"answer"

    async def test_runs_to_its_end_when_every_waiter_is_gone(self) -> None:
        """With all its callers cancelled, a computation still finishes and keeps its answer."""
        cache: ReadCache[bytes] = ReadCache()
        gate = asyncio.Event()

        async def compute() -> bytes:
            await gate.wait()
            return b"answer"

        waiters = [asyncio.create_task(cache.fetch(1, "k", compute)) for _ in range(2)]
        await asyncio.sleep(0)
        for waiter in waiters:
            waiter.cancel()
        assert all(
            isinstance(outcome, asyncio.CancelledError)
            for outcome in await asyncio.gather(*waiters, return_exceptions=True)
        )
        gate.set()
        await until(lambda: cache.get(1, "k") == b"answer")

    async def test_waiters_share_one_failure_and_nothing_is_kept(self) -> None:
        """Every caller sharing a failed computation gets the very same exception; none is kept."""
        cache: ReadCache[bytes] = ReadCache()
        gate = asyncio.Event()
        failure = RuntimeError("the read failed")
        runs = 0

        async def compute() -> bytes:
            nonlocal runs
            runs += 1
            await gate.wait()
            raise failure

        waiters = [asyncio.create_task(cache.fetch(1, "k", compute)) for _ in range(3)]
        await until(lambda: runs == 1)
        gate.set()
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(outcome is failure for outcome in outcomes)
        assert runs == 1
        assert len(cache) == 0

    async def test_a_newer_token_never_joins_an_older_computation(self) -> None:
        """A caller whose token moved (a write landed) computes afresh, and its answer is kept."""
        cache: ReadCache[bytes] = ReadCache()
        gate = asyncio.Event()

        async def before_the_write() -> bytes:
            await gate.wait()
            return b"old"

        async def after_the_write() -> bytes:
            return b"new"

        older = asyncio.create_task(cache.fetch(1, "k", before_the_write))
        await asyncio.sleep(0)
        # Bounded: joining the older computation would wait at its gate forever.
        assert await asyncio.wait_for(cache.fetch(2, "k", after_the_write), 5) == b"new"
        gate.set()
        assert await older == b"old"
        assert cache.get(2, "k") == b"new"


async def test_every_acknowledged_write_is_read_back(tmp_path: Path) -> None:
    """Under concurrent writers, a read issued after a create's answer always sees that user."""
    store = await SQLiteStore.open(tmp_path / "people.db")
    try:
        async with ChannelFor([UserService(UserDirectory(store))]) as channel:
            stub = UserServiceStub(channel)

            async def writer(n: int) -> None:
                for i in range(15):
                    email = f"w{n}-{i}@example.com"
                    created = await stub.create_user(CreateUserRequest(name="W", email=email))
                    assert email in await emails(stub)
                    page = await stub.list_users(ListUsersRequest(page_size=1000))
                    assert created.id in {user.id for user in page.users}
                    got = await stub.get_user_by_id(UserIdRequest(id=created.id))
                    assert got.email == email

            await asyncio.gather(*(writer(n) for n in range(8)))
    finally:
        await store.aclose()


class TestLateAnswers:
    """An answer computed before a write never replaces the answers kept since."""

    async def test_a_slow_miss_ending_last_changes_nothing(self) -> None:
        """A GetAllUsers read before a write, ending after a later call, keeps the newer answer."""
        store = ReadGatedStore()
        await store.add(make_user(1))
        async with ChannelFor([UserService(UserDirectory(store))]) as channel:
            stub = UserServiceStub(channel)
            before_write = asyncio.create_task(emails(stub))
            await until(lambda: len(store.gates) == 1)
            await store.add(make_user(2))
            after_write = asyncio.create_task(emails(stub))
            await until(lambda: len(store.gates) == 2)
            store.gates[1].set()
            assert await after_write == ["user1@example.com", "user2@example.com"]
            store.gates[0].set()
            assert await before_write == ["user1@example.com"]
            store.gated = False
            assert await emails(stub) == ["user1@example.com", "user2@example.com"]
            assert store.scans == 2


class TestSingleFlight:
    """Concurrent misses for one answer share one store read, its answer or its failure."""

    async def test_concurrent_misses_read_the_store_once(self) -> None:
        """Twenty concurrent GetAllUsers after a write scan the store once and get one answer."""
        store = ReadGatedStore()
        await store.add(make_user(1))
        async with ChannelFor([UserService(UserDirectory(store))]) as channel:
            stub = UserServiceStub(channel)
            calls = [asyncio.create_task(emails(stub)) for _ in range(20)]
            await until(lambda: store.token_reads == 20 and bool(store.gates))
            assert len(store.gates) == 1
            store.gates[0].set()
            assert await asyncio.gather(*calls) == [["user1@example.com"]] * 20
            store.gated = False
            assert await emails(stub) == ["user1@example.com"]
            assert store.scans == 1

    async def test_a_failing_miss_fails_every_waiter_and_keeps_nothing(self) -> None:
        """When the shared read fails every concurrent call gets its status; the next one reads."""
        store = ReadGatedStore()
        await store.add(make_user(1))
        store.failure = StoreUnavailable("the disk went away")
        async with ChannelFor([UserService(UserDirectory(store))]) as channel:
            stub = UserServiceStub(channel)
            calls = [asyncio.create_task(emails(stub)) for _ in range(5)]
            await until(lambda: store.token_reads == 5 and bool(store.gates))
            assert len(store.gates) == 1
            store.gates[0].set()
            for outcome in await asyncio.gather(*calls, return_exceptions=True):
                assert isinstance(outcome, GRPCError)
                assert (outcome.status, outcome.message) == (
                    Status.UNAVAILABLE,
                    "the disk went away",
                )
            store.failure = None
            store.gated = False
            assert await emails(stub) == ["user1@example.com"]
            assert store.scans == 2


class TestBusyChangeToken:
    """Reading SQLite's change token never waits on a lock: a busy file is just not cached."""

    async def test_wal_index_rebuilt_elsewhere(self, tmp_path: Path) -> None:
        """While another process rebuilds the WAL index, the token is None at once; reads answer."""
        path = tmp_path / "people.db"
        served = await CountingSQLiteStore.open(path)
        try:
            user = make_user(1)
            await served.add(user)
            async with ChannelFor([UserService(UserDirectory(served))]) as channel:
                stub = UserServiceStub(channel)
                assert (await stub.get_user_by_id(UserIdRequest(id=user.id))).name == "user 1"
                assert served.gets == 1
                async with recovering_elsewhere(path):
                    started = time.monotonic()
                    assert served.change_token() is None
                    # Detects only a stall on the loop: waiting would take the 5 s busy timeout.
                    assert time.monotonic() - started < 2
                    call = asyncio.create_task(stub.get_user_by_id(UserIdRequest(id=user.id)))
                    # Not answered from the cache: the call reads the store, on a reader
                    # thread that waits (off the loop) until the rebuild is over.
                    await until(lambda: served.gets == 2)
                assert (await call).name == "user 1"
        finally:
            await served.aclose()
