"""Read answers come from a cache only while the store says nothing changed, in any process."""

from __future__ import annotations

import asyncio
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
from people.domain.model import User as DomainUser
from people.domain.ports import Cursor, UserStore
from people.store.memory import MemoryStore
from people.store.postgres import PostgresStore
from people.store.sqlite import SQLiteStore
from tests.test_store_contract import make_user


class CountingSQLiteStore(SQLiteStore):
    """A SQLite store that counts how often users are read, in pages and one by one."""

    scans = 0
    gets = 0

    async def list_page(self, *, after: Cursor | None, limit: int) -> list[DomainUser]:
        """Count, then read."""
        self.scans += 1
        return await super().list_page(after=after, limit=limit)

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


async def emails(stub: UserServiceStub) -> list[str]:
    """The emails GetAllUsers answers, in order."""
    return [user.email for user in (await stub.get_all_users(Empty())).user]


class TestChangeToken:
    """A store's change token moves with every write and stays put otherwise."""

    async def test_moves_on_every_write(self, store: UserStore) -> None:
        """add, replace and remove each change the token; reads do not."""
        first = await store.change_token()
        if isinstance(store, PostgresStore):
            assert first is None  # no cheap cross-replica signal: never cached
            return
        assert first == await store.change_token()
        user = make_user(1)
        await store.add(user)
        after_add = await store.change_token()
        await store.get(user.id)
        assert after_add == await store.change_token()
        await store.replace(replace(user, name="renamed", version=2), expected_version=1)
        after_replace = await store.change_token()
        await store.remove(user.id, expected_version=None)
        after_remove = await store.change_token()
        assert len({first, after_add, after_replace, after_remove}) == 4

    async def test_sqlite_sees_another_connection(
        self, sqlite_pair: tuple[CountingSQLiteStore, SQLiteStore]
    ) -> None:
        """A write through another store on the same file (another process) moves the token."""
        served, other = sqlite_pair
        before = await served.change_token()
        await other.add(make_user(1))
        assert await served.change_token() != before


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
