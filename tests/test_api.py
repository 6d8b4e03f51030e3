"""UserService over an in-memory channel: every RPC, every error path, the seed's messages."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.testing import ChannelFor

from people._gen.people import (
    CreateUserRequest,
    CreateUserResponse,
    Empty,
    ListUsersRequest,
    User,
    UserIdRequest,
    UserServiceStub,
)
from people.api.status import STATUS_BY_ERROR, status_for
from people.api.user_service import UserService
from people.domain import errors
from people.domain.directory import DEFAULT_PAGE_SIZE, UserDirectory
from people.domain.model import User as DomainUser
from people.domain.ports import Cursor
from people.domain.query import DEFAULT_QUERY, Query
from people.store.memory import MemoryStore
from people.store.sqlite import SQLiteStore

MISSING_ID = "00000000-0000-4000-8000-000000000000"


class CountingStore(MemoryStore):
    """A memory store that counts the pages read from it."""

    pages_read = 0

    async def list_page(
        self, *, after: Cursor | None, limit: int, query: Query = DEFAULT_QUERY
    ) -> list[DomainUser]:
        """Count, then read."""
        self.pages_read += 1
        return await super().list_page(after=after, limit=limit, query=query)


async def create(stub: UserServiceStub, name: str = "Ada", email: str = "") -> CreateUserResponse:
    """Create a user through the stub, with a unique email unless one is given."""
    email = email or f"{uuid.uuid4().hex[:12]}@example.com"
    return await stub.create_user(CreateUserRequest(name=name, email=email))


class TestCreateUser:
    """CreateUser answers a fresh UUID4 and the seed's message."""

    async def test_returns_a_uuid4_and_the_seed_message(self, stub: UserServiceStub) -> None:
        """The answer carries a new UUID4 id and "User created successfully"."""
        created = await create(stub)
        assert uuid.UUID(created.id).version == 4
        assert created.message == "User created successfully"

    async def test_ids_differ(self, stub: UserServiceStub) -> None:
        """Two creates return two different ids."""
        assert (await create(stub)).id != (await create(stub)).id

    async def test_stores_normalised_values(self, stub: UserServiceStub) -> None:
        """The name is trimmed and the email's domain lower-cased."""
        created = await create(stub, name="  Ada  ", email="Ada@Example.COM")
        user = await stub.get_user_by_id(UserIdRequest(id=created.id))
        assert (user.name, user.email) == ("Ada", "Ada@example.com")

    @pytest.mark.parametrize("name", ["", "   ", "x" * 201, "A\x00da", "A\nda"])
    async def test_invalid_name(self, stub: UserServiceStub, name: str) -> None:
        """A bad name is INVALID_ARGUMENT and the message names the field."""
        with pytest.raises(GRPCError) as caught:
            await create(stub, name=name, email="ada@example.com")
        assert caught.value.status is Status.INVALID_ARGUMENT
        assert caught.value.message is not None
        assert caught.value.message.startswith("invalid name:")

    @pytest.mark.parametrize("email", ["", "ada", "ada@", "@example.com", "a" * 250 + "@x.com"])
    async def test_invalid_email(self, stub: UserServiceStub, email: str) -> None:
        """A bad email is INVALID_ARGUMENT and the message names the field."""
        with pytest.raises(GRPCError) as caught:
            await stub.create_user(CreateUserRequest(name="Ada", email=email))
        assert caught.value.status is Status.INVALID_ARGUMENT
        assert caught.value.message is not None
        assert caught.value.message.startswith("invalid email:")

    async def test_taken_email(self, stub: UserServiceStub) -> None:
        """An email taken in another letter case is ALREADY_EXISTS naming the email."""
        await create(stub, email="ada@example.com")
        with pytest.raises(GRPCError) as caught:
            await create(stub, email="ADA@example.com")
        assert caught.value.status is Status.ALREADY_EXISTS
        assert "ADA@example.com" in (caught.value.message or "")


class TestGetUserById:
    """GetUserById returns one user or NOT_FOUND with the seed's message."""

    async def test_returns_the_user_with_metadata(self, stub: UserServiceStub) -> None:
        """The user comes back with its etag and both timestamps."""
        created = await create(stub, email="ada@example.com")
        user = await stub.get_user_by_id(UserIdRequest(id=created.id))
        assert (user.id, user.name, user.email) == (created.id, "Ada", "ada@example.com")
        assert user.etag == 'W/"1"'
        assert isinstance(user.create_time, datetime)
        assert user.create_time == user.update_time
        assert abs((datetime.now(UTC) - user.create_time).total_seconds()) < 3600

    async def test_not_found(self, stub: UserServiceStub) -> None:
        """An unknown id is NOT_FOUND "User with ID <id> not found"."""
        with pytest.raises(GRPCError) as caught:
            await stub.get_user_by_id(UserIdRequest(id=MISSING_ID))
        assert caught.value.status is Status.NOT_FOUND
        assert caught.value.message == f"User with ID {MISSING_ID} not found"

    async def test_empty_id(self, stub: UserServiceStub) -> None:
        """An empty id is INVALID_ARGUMENT naming the id field."""
        with pytest.raises(GRPCError) as caught:
            await stub.get_user_by_id(UserIdRequest(id=""))
        assert caught.value.status is Status.INVALID_ARGUMENT
        assert (caught.value.message or "").startswith("invalid id:")


class TestGetAllUsers:
    """GetAllUsers returns everyone in creation order, or refuses when too large."""

    async def test_empty(self, stub: UserServiceStub) -> None:
        """An empty directory answers an empty list."""
        assert (await stub.get_all_users(Empty())).user == []

    async def test_creation_order(self, stub: UserServiceStub) -> None:
        """Users come back in the order they were created, with their metadata."""
        ids = [(await create(stub, name=f"user {n}")).id for n in range(12)]
        users = (await stub.get_all_users(Empty())).user
        assert [user.id for user in users] == ids
        assert all(user.etag and user.create_time and user.update_time for user in users)

    async def test_stops_reading_once_too_large(self) -> None:
        """Over the limit, GetAllUsers stops at the first batch that overflows, not after all."""
        store = CountingStore()
        directory = UserDirectory(store)
        for n in range(2500):
            await directory.create(name=f"user {n}", email=f"user{n}@example.com")
        service = UserService(directory, max_send_message_bytes=4096)
        async with ChannelFor([service]) as channel:
            with pytest.raises(GRPCError) as caught:
                await UserServiceStub(channel).get_all_users(Empty())
        assert caught.value.status is Status.RESOURCE_EXHAUSTED
        assert store.pages_read == 1

    async def test_too_large_for_one_message(self) -> None:
        """Over the send limit it is RESOURCE_EXHAUSTED and points to ListUsers."""
        service = UserService(UserDirectory(MemoryStore()), max_send_message_bytes=2048)
        async with ChannelFor([service]) as channel:
            stub = UserServiceStub(channel)
            for _ in range(40):
                await create(stub)
            with pytest.raises(GRPCError) as caught:
                await stub.get_all_users(Empty())
            assert caught.value.status is Status.RESOURCE_EXHAUSTED
            assert "ListUsers" in (caught.value.message or "")
            page = await stub.list_users(ListUsersRequest(page_size=5))
            assert len(page.users) == 5


class TestUpdateUser:
    """UpdateUser changes the fields sent non-empty and keeps the rest."""

    async def test_seed_message_and_change(self, stub: UserServiceStub) -> None:
        """The answer is the seed's message and the new name is stored."""
        created = await create(stub, email="ada@example.com")
        answer = await stub.update_user(User(id=created.id, name="Ada King"))
        assert answer.message == f"User with ID {created.id} updated successfully"
        user = await stub.get_user_by_id(UserIdRequest(id=created.id))
        assert (user.name, user.email) == ("Ada King", "ada@example.com")

    async def test_empty_fields_keep_values(self, stub: UserServiceStub) -> None:
        """Name and email sent empty keep their stored values; etag and update_time move."""
        created = await create(stub, email="ada@example.com")
        before = await stub.get_user_by_id(UserIdRequest(id=created.id))
        await stub.update_user(User(id=created.id))
        after = await stub.get_user_by_id(UserIdRequest(id=created.id))
        assert (after.name, after.email) == (before.name, before.email)
        assert after.etag != before.etag
        assert after.create_time == before.create_time
        assert before.update_time is not None
        assert after.update_time is not None
        assert after.update_time >= before.update_time

    async def test_only_email(self, stub: UserServiceStub) -> None:
        """Sending only an email changes only the email."""
        created = await create(stub, name="Ada")
        await stub.update_user(User(id=created.id, email="new@example.com"))
        user = await stub.get_user_by_id(UserIdRequest(id=created.id))
        assert (user.name, user.email) == ("Ada", "new@example.com")

    async def test_not_found(self, stub: UserServiceStub) -> None:
        """An unknown id is NOT_FOUND "User with ID <id> not found"."""
        with pytest.raises(GRPCError) as caught:
            await stub.update_user(User(id=MISSING_ID, name="x"))
        assert caught.value.status is Status.NOT_FOUND
        assert caught.value.message == f"User with ID {MISSING_ID} not found"

    async def test_not_found_beats_a_bad_etag(self, stub: UserServiceStub) -> None:
        """An unknown id with a malformed etag is still NOT_FOUND, not ABORTED."""
        with pytest.raises(GRPCError) as caught:
            await stub.update_user(User(id=MISSING_ID, name="x", etag="garbage"))
        assert caught.value.status is Status.NOT_FOUND

    async def test_invalid_name(self, stub: UserServiceStub) -> None:
        """A bad new name is INVALID_ARGUMENT naming the field."""
        created = await create(stub)
        with pytest.raises(GRPCError) as caught:
            await stub.update_user(User(id=created.id, name="x" * 201))
        assert caught.value.status is Status.INVALID_ARGUMENT
        assert (caught.value.message or "").startswith("invalid name:")

    async def test_invalid_email(self, stub: UserServiceStub) -> None:
        """A bad new email is INVALID_ARGUMENT naming the field."""
        created = await create(stub)
        with pytest.raises(GRPCError) as caught:
            await stub.update_user(User(id=created.id, email="nope"))
        assert caught.value.status is Status.INVALID_ARGUMENT
        assert (caught.value.message or "").startswith("invalid email:")

    async def test_taken_email(self, stub: UserServiceStub) -> None:
        """Taking another user's email is ALREADY_EXISTS."""
        await create(stub, email="bob@example.com")
        ada = await create(stub)
        with pytest.raises(GRPCError) as caught:
            await stub.update_user(User(id=ada.id, email="Bob@example.com"))
        assert caught.value.status is Status.ALREADY_EXISTS

    async def test_current_etag(self, stub: UserServiceStub) -> None:
        """An update carrying the etag just read succeeds."""
        created = await create(stub)
        user = await stub.get_user_by_id(UserIdRequest(id=created.id))
        await stub.update_user(User(id=created.id, name="New", etag=user.etag))
        assert (await stub.get_user_by_id(UserIdRequest(id=created.id))).name == "New"

    @pytest.mark.parametrize("stale", ['W/"1"', "garbage"])
    async def test_stale_etag(self, stub: UserServiceStub, stale: str) -> None:
        """An outdated or malformed etag is ABORTED and the user is unchanged."""
        created = await create(stub)
        await stub.update_user(User(id=created.id, name="First"))
        with pytest.raises(GRPCError) as caught:
            await stub.update_user(User(id=created.id, name="Second", etag=stale))
        assert caught.value.status is Status.ABORTED
        assert created.id in (caught.value.message or "")
        assert (await stub.get_user_by_id(UserIdRequest(id=created.id))).name == "First"


class TestDeleteUserById:
    """DeleteUserById removes a user or answers NOT_FOUND."""

    async def test_seed_message(self, stub: UserServiceStub) -> None:
        """The answer is the seed's message and the user is gone."""
        created = await create(stub)
        answer = await stub.delete_user_by_id(UserIdRequest(id=created.id))
        assert answer.message == f"User with ID {created.id} deleted successfully"
        with pytest.raises(GRPCError) as caught:
            await stub.get_user_by_id(UserIdRequest(id=created.id))
        assert caught.value.status is Status.NOT_FOUND

    async def test_not_found(self, stub: UserServiceStub) -> None:
        """An unknown id is NOT_FOUND "User with ID <id> not found"."""
        with pytest.raises(GRPCError) as caught:
            await stub.delete_user_by_id(UserIdRequest(id=MISSING_ID))
        assert caught.value.status is Status.NOT_FOUND
        assert caught.value.message == f"User with ID {MISSING_ID} not found"

    async def test_not_found_beats_a_bad_etag(self, stub: UserServiceStub) -> None:
        """An unknown id with a malformed etag is still NOT_FOUND, not ABORTED."""
        with pytest.raises(GRPCError) as caught:
            await stub.delete_user_by_id(UserIdRequest(id=MISSING_ID, etag="garbage"))
        assert caught.value.status is Status.NOT_FOUND
        assert caught.value.message == f"User with ID {MISSING_ID} not found"

    async def test_empty_id(self, stub: UserServiceStub) -> None:
        """An empty id is INVALID_ARGUMENT naming the id field."""
        with pytest.raises(GRPCError) as caught:
            await stub.delete_user_by_id(UserIdRequest(id=""))
        assert caught.value.status is Status.INVALID_ARGUMENT
        assert (caught.value.message or "").startswith("invalid id:")

    async def test_current_etag(self, stub: UserServiceStub) -> None:
        """A delete carrying the current etag succeeds."""
        created = await create(stub)
        user = await stub.get_user_by_id(UserIdRequest(id=created.id))
        await stub.delete_user_by_id(UserIdRequest(id=created.id, etag=user.etag))
        assert (await stub.get_all_users(Empty())).user == []

    @pytest.mark.parametrize("stale", ['W/"1"', "garbage"])
    async def test_stale_etag(self, stub: UserServiceStub, stale: str) -> None:
        """A delete with an outdated or malformed etag is ABORTED and the user stays."""
        created = await create(stub)
        await stub.update_user(User(id=created.id, name="Changed"))
        with pytest.raises(GRPCError) as caught:
            await stub.delete_user_by_id(UserIdRequest(id=created.id, etag=stale))
        assert caught.value.status is Status.ABORTED
        assert (await stub.get_user_by_id(UserIdRequest(id=created.id))).name == "Changed"


class TestListUsers:
    """ListUsers pages through users in creation order."""

    async def test_page_shrinks_to_the_send_limit(self) -> None:
        """A page that would pass the send limit comes back shorter, and paging still sees all."""
        limit = 2048
        service = UserService(UserDirectory(MemoryStore()), max_send_message_bytes=limit)
        async with ChannelFor([service]) as channel:
            stub = UserServiceStub(channel)
            ids = [(await create(stub)).id for _ in range(60)]
            seen: list[str] = []
            token = ""
            while True:
                page = await stub.list_users(ListUsersRequest(page_size=1000, page_token=token))
                assert 0 < len(bytes(page)) <= limit
                seen += [user.id for user in page.users]
                token = page.next_page_token
                if not token:
                    break
            assert seen == ids

    @pytest.fixture
    async def ids(self, stub: UserServiceStub) -> list[str]:
        """The ids of 7 users created in order."""
        return [(await create(stub, name=f"user {n}")).id for n in range(7)]

    async def test_pages_in_order(self, stub: UserServiceStub, ids: list[str]) -> None:
        """Following next_page_token visits every user once, in creation order."""
        seen: list[str] = []
        token = ""
        while True:
            page = await stub.list_users(ListUsersRequest(page_size=3, page_token=token))
            assert len(page.users) <= 3
            seen += [user.id for user in page.users]
            token = page.next_page_token
            if not token:
                break
        assert seen == ids

    async def test_users_carry_metadata(self, stub: UserServiceStub, ids: list[str]) -> None:
        """Listed users have an etag and timestamps."""
        page = await stub.list_users(ListUsersRequest(page_size=1))
        (user,) = page.users
        assert (user.id, user.etag) == (ids[0], 'W/"1"')
        assert user.create_time is not None
        assert user.update_time is not None

    async def test_default_page_size(self, stub: UserServiceStub) -> None:
        """Page size 0 (unset) gives 50 users and a token for the rest."""
        for _ in range(DEFAULT_PAGE_SIZE + 1):
            await create(stub)
        page = await stub.list_users(ListUsersRequest())
        assert len(page.users) == DEFAULT_PAGE_SIZE
        rest = await stub.list_users(ListUsersRequest(page_token=page.next_page_token))
        assert (len(rest.users), rest.next_page_token) == (1, "")

    async def test_negative_page_size(self, stub: UserServiceStub) -> None:
        """A negative page size is INVALID_ARGUMENT naming page_size."""
        with pytest.raises(GRPCError) as caught:
            await stub.list_users(ListUsersRequest(page_size=-5))
        assert caught.value.status is Status.INVALID_ARGUMENT
        assert "page_size" in (caught.value.message or "")

    async def test_tampered_token(self, stub: UserServiceStub, ids: list[str]) -> None:
        """A token altered by the client is INVALID_ARGUMENT naming page_token."""
        page = await stub.list_users(ListUsersRequest(page_size=2))
        token = page.next_page_token
        tampered = token[:4] + ("B" if token[4] != "B" else "C") + token[5:]
        with pytest.raises(GRPCError) as caught:
            await stub.list_users(ListUsersRequest(page_size=2, page_token=tampered))
        assert caught.value.status is Status.INVALID_ARGUMENT
        assert "page_token" in (caught.value.message or "")

    async def test_garbage_token(self, stub: UserServiceStub) -> None:
        """A token that was never issued is INVALID_ARGUMENT."""
        with pytest.raises(GRPCError) as caught:
            await stub.list_users(ListUsersRequest(page_token="not-a-token"))
        assert caught.value.status is Status.INVALID_ARGUMENT


class TestStatusTable:
    """One table maps every domain error to a status code."""

    @pytest.mark.parametrize(
        ("error", "status"),
        [
            (errors.UserNotFound("x"), Status.NOT_FOUND),
            (errors.EmailAlreadyExists("a@b.c"), Status.ALREADY_EXISTS),
            (errors.InvalidField("name", "bad"), Status.INVALID_ARGUMENT),
            (errors.StaleVersion("x"), Status.ABORTED),
            (errors.StoreUnavailable("down"), Status.UNAVAILABLE),
            (errors.StoreFailure(), Status.INTERNAL),
            (errors.WriteConflict(), Status.ABORTED),
            (errors.UnstorableValue(), Status.INVALID_ARGUMENT),
            (errors.ResourceExhausted("database connections exhausted"), Status.RESOURCE_EXHAUSTED),
            (errors.PeopleError("odd"), Status.INTERNAL),
        ],
    )
    def test_status_for(self, error: errors.PeopleError, status: Status) -> None:
        """Each domain error has its status code."""
        assert status_for(error) is status

    def test_subclasses_inherit(self) -> None:
        """An unlisted subclass gets its closest listed ancestor's status."""

        class Gone(errors.UserNotFound):
            pass

        assert status_for(Gone("x")) is Status.NOT_FOUND

    def test_every_public_error_is_listed(self) -> None:
        """Every error people exports has an entry of its own (except ServerError, client-only)."""
        exported = {
            value
            for value in vars(errors).values()
            if isinstance(value, type) and issubclass(value, errors.PeopleError)
        }
        assert exported - set(STATUS_BY_ERROR) == {errors.ServerError}

    async def test_store_failure_is_internal(self, tmp_path: Path) -> None:
        """A real SQLite file that lost its table surfaces as INTERNAL with the generic message,
        not UNAVAILABLE and not SQLite's words."""
        path = tmp_path / "people.db"
        store = await SQLiteStore.open(path)
        with sqlite3.connect(path) as db:
            db.execute("DROP TABLE users")
        db.close()
        try:
            async with ChannelFor([UserService(UserDirectory(store))]) as channel:
                with pytest.raises(GRPCError) as caught:
                    await UserServiceStub(channel).get_user_by_id(UserIdRequest(id="x"))
        finally:
            await store.aclose()
        assert caught.value.status is Status.INTERNAL
        assert caught.value.message == errors.StoreFailure().message

    @pytest.mark.parametrize(
        "error",
        [
            errors.StoreFailure(),
            errors.StoreUnavailable("the database is unavailable; try again later"),
            errors.WriteConflict(),
            errors.UnstorableValue(),
            errors.ResourceExhausted("database connections exhausted"),
        ],
    )
    async def test_only_the_domain_message_reaches_the_client(
        self, error: errors.PeopleError
    ) -> None:
        """A store error caused by a driver exception answers with the domain error's message
        alone: nothing of the cause (its text, a host name) travels."""

        class FailingStore(MemoryStore):
            async def get(self, user_id: str) -> DomainUser:
                try:
                    raise OSError("connect to db.internal:5432 failed: SELECT secret")
                except OSError as cause:
                    raise error from cause

        async with ChannelFor([UserService(UserDirectory(FailingStore()))]) as channel:
            with pytest.raises(GRPCError) as caught:
                await UserServiceStub(channel).get_user_by_id(UserIdRequest(id="x"))
        assert caught.value.status is status_for(error)
        assert caught.value.message == error.message
        assert caught.value.details is None
