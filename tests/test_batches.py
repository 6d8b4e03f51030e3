"""BatchGetUsers, BatchCreateUsers, writes that answer with the user, and filtered ListUsers,
through the API and the Python client, on every store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.testing import ChannelFor

from people import EmailNotFound, PeopleClient
from people._gen.people import (
    BatchCreateUsersRequest,
    BatchGetUsersRequest,
    CreateUserRequest,
    ListUsersRequest,
    User,
    UserIdRequest,
    UserServiceStub,
)
from people.api.user_service import UserService
from people.client import filter_literal
from people.domain import errors
from people.domain.directory import UserDirectory
from people.domain.ports import UserStore
from people.store.memory import MemoryStore
from tests.inprocess import serving


@pytest.fixture
async def stub_on(store: UserStore) -> AsyncIterator[UserServiceStub]:
    """A stub talking to UserService over an in-memory channel, on each store in turn."""
    async with ChannelFor([UserService(UserDirectory(store))]) as channel:
        yield UserServiceStub(channel)


@pytest.fixture
async def client_on(store: UserStore) -> AsyncIterator[PeopleClient]:
    """A PeopleClient over an in-memory channel, on each store in turn."""
    async with ChannelFor([UserService(UserDirectory(store))]) as channel:
        yield PeopleClient.from_channel(channel, timeout=10)


def requests(count: int, prefix: str = "user") -> list[CreateUserRequest]:
    """``count`` valid, distinct create requests."""
    return [
        CreateUserRequest(name=f"{prefix} {n}", email=f"{prefix}{n}@example.com")
        for n in range(count)
    ]


async def everyone(stub: UserServiceStub) -> list[User]:
    """Every stored user, from ListUsers."""
    return list((await stub.list_users(ListUsersRequest(page_size=1000))).users)


async def failure(call: Awaitable[object]) -> GRPCError:
    """The GRPCError a call fails with."""
    with pytest.raises(GRPCError) as caught:
        await call
    return caught.value


class TestBatchCreateUsers:
    """Up to 1,000 users in one transaction: all of them, or none."""

    async def test_creates_all_in_order(self, stub_on: UserServiceStub) -> None:
        """The answer holds every user, in request order, as GetUserById then returns them."""
        answer = await stub_on.batch_create_users(BatchCreateUsersRequest(requests=requests(5)))
        assert [user.name for user in answer.users] == [f"user {n}" for n in range(5)]
        for user in answer.users:
            assert uuid.UUID(user.id).version == 4
            assert user.etag == 'W/"1"'
            assert user.create_time == user.update_time
            assert await stub_on.get_user_by_id(UserIdRequest(id=user.id)) == user
        assert len({user.id for user in answer.users}) == 5

    async def test_creation_order_is_request_order(self, store: UserStore) -> None:
        """Even when the clock does not move, the batch is listed in request order."""
        directory = UserDirectory(store, clock=lambda: datetime(2024, 5, 17, tzinfo=UTC))
        made = await directory.create_many([(f"n{n}", f"n{n}@example.com") for n in range(50)])
        listed = (await directory.list_page(page_size=100, page_token="")).users
        assert [user.name for user in listed] == [f"n{n}" for n in range(50)]
        assert listed == made

    async def test_empty_batch(self, stub_on: UserServiceStub) -> None:
        """An empty batch creates nothing and answers an empty list."""
        answer = await stub_on.batch_create_users(BatchCreateUsersRequest())
        assert answer.users == []

    @pytest.mark.parametrize(
        ("index", "bad", "field"),
        [
            (0, CreateUserRequest(name="", email="a@example.com"), "requests[0].name"),
            (3, CreateUserRequest(name="Bad", email="not-an-email"), "requests[3].email"),
            (4, CreateUserRequest(name="x" * 201, email="a@example.com"), "requests[4].name"),
        ],
    )
    async def test_invalid_entry_writes_nothing(
        self, stub_on: UserServiceStub, index: int, bad: CreateUserRequest, field: str
    ) -> None:
        """An invalid entry is INVALID_ARGUMENT naming requests[i] and its field; none is kept."""
        batch = requests(5)
        batch[index] = bad
        error = await failure(stub_on.batch_create_users(BatchCreateUsersRequest(requests=batch)))
        assert error.status is Status.INVALID_ARGUMENT
        assert (error.message or "").startswith(f"invalid {field}: ")
        assert await everyone(stub_on) == []

    async def test_taken_email_writes_nothing(self, stub_on: UserServiceStub) -> None:
        """An entry whose email is stored (in another case) is ALREADY_EXISTS naming requests[i];
        no entry of the batch is written."""
        await stub_on.create_user(CreateUserRequest(name="First", email="USER3@example.com"))
        error = await failure(
            stub_on.batch_create_users(BatchCreateUsersRequest(requests=requests(6)))
        )
        assert error.status is Status.ALREADY_EXISTS
        assert error.message == "requests[3]: a user with email 'user3@example.com' already exists"
        assert [user.name for user in await everyone(stub_on)] == ["First"]

    async def test_repeat_inside_the_batch_writes_nothing(self, stub_on: UserServiceStub) -> None:
        """An email repeated inside the batch (in another case) is ALREADY_EXISTS naming the
        later entry and the earlier one; nothing is written."""
        batch = requests(6)
        batch[4] = CreateUserRequest(name="Again", email="User1@Example.com")
        error = await failure(stub_on.batch_create_users(BatchCreateUsersRequest(requests=batch)))
        assert error.status is Status.ALREADY_EXISTS
        assert (error.message or "").startswith("requests[4]: a user with email")
        assert "requests[1] has it too" in (error.message or "")
        assert await everyone(stub_on) == []

    async def test_limit(self, stub: UserServiceStub) -> None:
        """1,000 users are one call; 1,001 are INVALID_ARGUMENT, and nothing is written."""
        error = await failure(
            stub.batch_create_users(BatchCreateUsersRequest(requests=requests(1001)))
        )
        assert error.status is Status.INVALID_ARGUMENT
        assert error.message == "invalid requests: at most 1000 per call, not 1001"
        assert await everyone(stub) == []
        answer = await stub.batch_create_users(BatchCreateUsersRequest(requests=requests(1000)))
        assert len(answer.users) == 1000
        assert len(await everyone(stub)) == 1000


class TestBatchGetUsers:
    """Up to 1,000 users by id, in the order asked; one missing id fails the call."""

    async def test_request_order(self, stub_on: UserServiceStub) -> None:
        """Users come back in the order of the ids, repeated ids repeated."""
        created = (
            await stub_on.batch_create_users(BatchCreateUsersRequest(requests=requests(4)))
        ).users
        ids = [created[2].id, created[0].id, created[2].id, created[3].id]
        answer = await stub_on.batch_get_users(BatchGetUsersRequest(ids=ids))
        assert [user.id for user in answer.users] == ids
        assert answer.users[1] == created[0]

    async def test_missing_id_fails_the_call(self, stub_on: UserServiceStub) -> None:
        """The first missing id, in request order, is NOT_FOUND naming it."""
        created = (
            await stub_on.batch_create_users(BatchCreateUsersRequest(requests=requests(2)))
        ).users
        missing = [str(uuid.uuid4()), str(uuid.uuid4())]
        ids = [created[0].id, missing[0], created[1].id, missing[1]]
        error = await failure(stub_on.batch_get_users(BatchGetUsersRequest(ids=ids)))
        assert error.status is Status.NOT_FOUND
        assert error.message == f"User with ID {missing[0]} not found"

    async def test_bad_ids(self, stub_on: UserServiceStub) -> None:
        """An empty id is INVALID_ARGUMENT naming ids[i]; an id no user could have is NOT_FOUND."""
        error = await failure(stub_on.batch_get_users(BatchGetUsersRequest(ids=["a", ""])))
        assert (error.status, error.message) == (
            Status.INVALID_ARGUMENT,
            "invalid ids[1]: must not be empty",
        )
        error = await failure(stub_on.batch_get_users(BatchGetUsersRequest(ids=["x" * 300])))
        assert error.status is Status.NOT_FOUND

    async def test_limit(self, stub: UserServiceStub) -> None:
        """1,001 ids are INVALID_ARGUMENT; none is an empty answer."""
        error = await failure(stub.batch_get_users(BatchGetUsersRequest(ids=["a"] * 1001)))
        assert (error.status, error.message) == (
            Status.INVALID_ARGUMENT,
            "invalid ids: at most 1000 per call, not 1001",
        )
        assert (await stub.batch_get_users(BatchGetUsersRequest())).users == []


class TestWritesAnswerWithTheUser:
    """CreateUser and UpdateUser answer with what they wrote; the seed's fields are unchanged."""

    async def test_create(self, stub_on: UserServiceStub) -> None:
        """CreateUserResponse carries id, the seed's message, and the user as stored."""
        answer = await stub_on.create_user(CreateUserRequest(name=" Ada ", email="Ada@Example.com"))
        assert answer.message == "User created successfully"
        assert answer.user is not None
        assert answer.user.id == answer.id
        assert answer.user == await stub_on.get_user_by_id(UserIdRequest(id=answer.id))
        assert (answer.user.name, answer.user.email) == ("Ada", "Ada@example.com")

    async def test_update(self, stub_on: UserServiceStub) -> None:
        """UpdateUserResponse carries the seed's message and the user with its new etag."""
        created = await stub_on.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
        answer = await stub_on.update_user(User(id=created.id, name="Ada King"))
        assert answer.message == f"User with ID {created.id} updated successfully"
        assert answer.user is not None
        assert answer.user == await stub_on.get_user_by_id(UserIdRequest(id=created.id))
        assert (answer.user.name, answer.user.etag) == ("Ada King", 'W/"2"')

    async def test_left_out_when_it_would_not_fit(self) -> None:
        """Under a small send limit, a user too large for the answer is left out (the seed's
        fields still come back); a smaller one is included."""
        service = UserService(UserDirectory(MemoryStore()), max_send_message_bytes=1024)
        email = "a" * 60 + "@" + ".".join(["b" * 60] * 3) + ".com"
        big = await service.create_user(CreateUserRequest(name="\U0001d504" * 200, email=email))
        assert (big.message, big.user) == ("User created successfully", None)
        assert len(bytes(big)) <= 1024
        updated = await service.update_user(User(id=big.id, name="\U0001d505" * 200))
        assert updated.user is None
        assert updated.message == f"User with ID {big.id} updated successfully"
        small = await service.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
        assert small.user is not None
        assert small.user.name == "Ada"

    async def test_delete_answers_no_user(self, stub_on: UserServiceStub) -> None:
        """DeleteUserById keeps the seed's message and leaves user unset."""
        created = await stub_on.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
        answer = await stub_on.delete_user_by_id(UserIdRequest(id=created.id))
        assert answer.message == f"User with ID {created.id} deleted successfully"
        assert answer.user is None


class TestFilteredListUsers:
    """ListUsers' filter and order_by on the wire."""

    async def test_filter_and_order(self, stub_on: UserServiceStub) -> None:
        """A filter selects and order_by sorts, page by page."""
        await stub_on.batch_create_users(
            BatchCreateUsersRequest(
                requests=[
                    CreateUserRequest(name="Grace", email="grace@acme.com"),
                    CreateUserRequest(name="Ada", email="ada@example.com"),
                    CreateUserRequest(name="Alan", email="alan@acme.com"),
                ]
            )
        )
        request = ListUsersRequest(page_size=1, filter='email = "*@ACME.com"', order_by="name")
        first = await stub_on.list_users(request)
        request.page_token = first.next_page_token
        second = await stub_on.list_users(request)
        assert [u.name for u in [*first.users, *second.users]] == ["Alan", "Grace"]
        assert second.next_page_token == ""

    @pytest.mark.parametrize(
        ("filter", "order_by", "message"),
        [
            ('nickname = "x"', "", "invalid filter: at position 1: unknown field 'nickname'"),
            ('name = "x', "", "invalid filter: at position 8: this string has no closing quote"),
            ('create_time > "soon"', "", "invalid filter: at position 15: create_time needs"),
            ("", "id", "invalid order_by: cannot order by 'id'"),
        ],
    )
    async def test_mistakes(
        self, stub: UserServiceStub, filter: str, order_by: str, message: str
    ) -> None:
        """A malformed filter or order_by is INVALID_ARGUMENT naming the position and problem."""
        error = await failure(stub.list_users(ListUsersRequest(filter=filter, order_by=order_by)))
        assert error.status is Status.INVALID_ARGUMENT
        assert (error.message or "").startswith(message), error.message

    async def test_token_with_another_filter(self, stub: UserServiceStub) -> None:
        """A token reused with another filter is INVALID_ARGUMENT."""
        await stub.batch_create_users(BatchCreateUsersRequest(requests=requests(3)))
        first = await stub.list_users(ListUsersRequest(page_size=1, filter='name = "user*"'))
        error = await failure(
            stub.list_users(
                ListUsersRequest(page_size=1, page_token=first.next_page_token, filter="")
            )
        )
        assert error.status is Status.INVALID_ARGUMENT
        assert "another filter or order_by" in (error.message or "")


class TestClient:
    """PeopleClient's lookups and batches."""

    async def test_find_by_email(self, client_on: PeopleClient) -> None:
        """find_by_email finds a user in any letter case, and raises EmailNotFound otherwise."""
        user_id = await client_on.create("Ada", "ada@example.com")
        await client_on.create("Star", "a*@example.com")
        assert (await client_on.find_by_email("ADA@Example.com")).id == user_id
        with pytest.raises(EmailNotFound) as caught:
            await client_on.find_by_email("nobody@example.com")
        assert isinstance(caught.value, errors.UserNotFound)
        assert caught.value.message == "no user has the email 'nobody@example.com'"
        # A * in an address is matched literally, never as a wildcard.
        assert (await client_on.find_by_email("a*@example.com")).name == "Star"
        with pytest.raises(EmailNotFound):
            await client_on.find_by_email("a*")

    async def test_iter_users_with_filter(self, client_on: PeopleClient) -> None:
        """iter_users follows every page of a filtered, ordered listing."""
        await client_on.batch_create([(f"N{n}", f"n{n}@example.com") for n in range(7)])
        names = [
            u.name
            async for u in client_on.iter_users(
                page_size=2, filter='name != "n3"', order_by="name desc"
            )
        ]
        assert names == ["N6", "N5", "N4", "N2", "N1", "N0"]

    async def test_batch_errors_carry_the_entry(self, client_on: PeopleClient) -> None:
        """A failed batch raises the domain error with ``index`` set to the failing entry."""
        await client_on.create("Taken", "taken@example.com")
        with pytest.raises(errors.EmailAlreadyExists) as taken:
            await client_on.batch_create([("A", "a@example.com"), ("B", "TAKEN@example.com")])
        assert taken.value.index == 1
        with pytest.raises(errors.InvalidField) as invalid:
            await client_on.batch_create([("A", "a@example.com"), ("", "b@example.com")])
        assert (invalid.value.index, invalid.value.field) == (1, "requests[1].name")
        missing = str(uuid.uuid4())
        with pytest.raises(errors.UserNotFound) as not_found:
            await client_on.batch_get([missing])
        assert not_found.value.user_id == missing

    async def test_batch_round_trip(self, client_on: PeopleClient) -> None:
        """batch_create returns the users made; batch_get returns them again by id."""
        made = await client_on.batch_create([("A", "a@example.com"), ("B", "b@example.com")])
        again = await client_on.batch_get([made[1].id, made[0].id])
        assert again == [made[1], made[0]]


def test_filter_literal() -> None:
    """filter_literal quotes a value so that it matches exactly: no wildcard, no escape left."""
    assert filter_literal('a"b\\c*') == '"a\\"b\\\\c\\*"'


class TestAnswerLimit:
    """A batch whose answer could not be sent is refused whole, before anything is written."""

    async def test_on_the_wire(self) -> None:
        """Past --max-send-message-bytes, BatchCreateUsers is RESOURCE_EXHAUSTED and stores
        none of the batch; a smaller batch then goes through."""
        async with (
            serving(max_send_message_bytes=4096) as served,
            PeopleClient(f"127.0.0.1:{served.port}", timeout=10) as client,
        ):
            with pytest.raises(errors.ResourceExhausted) as caught:
                await client.batch_create([(f"U{n}", f"u{n}@example.com") for n in range(100)])
            assert "send fewer users per call (none was created)" in caught.value.message
            assert [user async for user in client.iter_users()] == []
            made = await client.batch_create([(f"U{n}", f"u{n}@example.com") for n in range(5)])
            assert [user.name for user in made] == [f"U{n}" for n in range(5)]

    async def test_typed_path(self) -> None:
        """The generated method refuses alike."""
        store = MemoryStore()
        service = UserService(UserDirectory(store), max_send_message_bytes=4096)
        request = BatchCreateUsersRequest(requests=requests(100))
        with pytest.raises(GRPCError) as caught:
            await service.batch_create_users(request)
        assert caught.value.status is Status.RESOURCE_EXHAUSTED
        assert await store.list_page(after=None, limit=10) == []
