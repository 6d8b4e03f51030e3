"""PeopleClient: typed results, and every failure raised as the project's own error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.testing import ChannelFor

import people
from people import PeopleClient
from people._gen.people import ListUsersResponse, User
from people.api.user_service import UserService
from people.client import error_for_status, parse_target
from people.domain import errors
from people.domain.directory import UserDirectory
from people.domain.model import User as DomainUser
from people.store.memory import MemoryStore
from tests.inprocess import serving

MISSING_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
async def client() -> AsyncIterator[PeopleClient]:
    """A client over an in-memory channel to UserService on a memory store."""
    async with ChannelFor([UserService(UserDirectory(MemoryStore()))]) as channel:
        yield PeopleClient.from_channel(channel, timeout=5)


class SlowStore(MemoryStore):
    """A memory store whose reads take longer than any test's deadline."""

    async def get(self, user_id: str) -> DomainUser:
        """Wait a while, then read."""
        await asyncio.sleep(2)
        return await super().get(user_id)


class TestCalls:
    """Each method calls its RPC and returns generated messages or plain values."""

    async def test_create_then_get(self, client: PeopleClient) -> None:
        """create returns a UUID4 id; get returns that user as a generated User with an etag."""
        user_id = await client.create("Ada", "ada@example.com")
        assert uuid.UUID(user_id).version == 4
        user = await client.get(user_id)
        assert isinstance(user, User)
        assert (user.id, user.name, user.email) == (user_id, "Ada", "ada@example.com")
        assert user.etag
        assert user.create_time is not None

    async def test_get_all_in_creation_order(self, client: PeopleClient) -> None:
        """get_all returns every user as a list, oldest first."""
        ids = [await client.create(f"U{n}", f"u{n}@example.com") for n in range(5)]
        assert [user.id for user in await client.get_all()] == ids

    async def test_list_page_and_iter_users(self, client: PeopleClient) -> None:
        """list_page returns one ListUsersResponse; iter_users walks every page exactly once."""
        ids = [await client.create(f"U{n}", f"u{n}@example.com") for n in range(7)]
        page = await client.list_page(page_size=3)
        assert isinstance(page, ListUsersResponse)
        assert [user.id for user in page.users] == ids[:3]
        assert page.next_page_token
        assert [user.id async for user in client.iter_users(page_size=2)] == ids

    async def test_update_keeps_empty_fields(self, client: PeopleClient) -> None:
        """update changes only what is given and returns the seed's message."""
        user_id = await client.create("Ada", "ada@example.com")
        message = await client.update(user_id, name="Ada King")
        assert message == f"User with ID {user_id} updated successfully"
        user = await client.get(user_id)
        assert (user.name, user.email) == ("Ada King", "ada@example.com")

    async def test_delete(self, client: PeopleClient) -> None:
        """delete returns the seed's message and the user is gone."""
        user_id = await client.create("Ada", "ada@example.com")
        assert await client.delete(user_id) == f"User with ID {user_id} deleted successfully"
        with pytest.raises(errors.UserNotFound):
            await client.get(user_id)

    def test_importable_from_the_package(self) -> None:
        """PeopleClient is part of the package's public surface."""
        assert people.PeopleClient is PeopleClient
        assert "PeopleClient" in people.__all__


class TestErrors:
    """Failures arrive as the domain's exceptions, with the server's message and their data."""

    async def test_not_found(self, client: PeopleClient) -> None:
        """An unknown id is UserNotFound carrying the id and the seed's message."""
        with pytest.raises(errors.UserNotFound) as caught:
            await client.get(MISSING_ID)
        assert caught.value.user_id == MISSING_ID
        assert str(caught.value) == f"User with ID {MISSING_ID} not found"

    async def test_email_taken(self, client: PeopleClient) -> None:
        """A taken email (in any case) is EmailAlreadyExists carrying the email asked for."""
        await client.create("Ada", "ada@example.com")
        with pytest.raises(errors.EmailAlreadyExists) as caught:
            await client.create("Other", "ADA@example.com")
        assert caught.value.email == "ADA@example.com"
        assert "already exists" in str(caught.value)

    async def test_invalid_field(self, client: PeopleClient) -> None:
        """A bad email is InvalidField naming the field and the reason."""
        with pytest.raises(errors.InvalidField) as caught:
            await client.create("Ada", "not-an-email")
        assert caught.value.field == "email"
        assert caught.value.reason

    async def test_stale_etag(self, client: PeopleClient) -> None:
        """An update with an etag the user no longer has is StaleVersion."""
        user_id = await client.create("Ada", "ada@example.com")
        etag = (await client.get(user_id)).etag
        await client.update(user_id, name="Ada King", etag=etag)
        with pytest.raises(errors.StaleVersion) as caught:
            await client.update(user_id, name="Lady Ada", etag=etag)
        assert caught.value.user_id == user_id
        assert (await client.get(user_id)).name == "Ada King"

    async def test_timeout_is_deadline_exceeded(self) -> None:
        """A call that outlives the client's timeout raises DeadlineExceeded, not TimeoutError."""
        service = UserService(UserDirectory(SlowStore()))
        async with ChannelFor([service]) as channel:
            people_client = PeopleClient.from_channel(channel, timeout=0.1)
            with pytest.raises(errors.DeadlineExceeded):
                await people_client.get(MISSING_ID)

    async def test_unreachable_is_unavailable(self, unused_tcp_port: int) -> None:
        """Nothing listening is Unavailable, and the message names the target."""
        target = f"127.0.0.1:{unused_tcp_port}"
        async with PeopleClient(target, timeout=2) as people_client:
            with pytest.raises(errors.Unavailable) as caught:
                await people_client.get(MISSING_ID)
        assert target in str(caught.value)

    async def test_token(self, tmp_path: Path) -> None:
        """Without the server's token a call is Unauthenticated; with it, it succeeds."""
        token_file = tmp_path / "tokens"
        token_file.write_text("s3cret-token\n")
        async with serving(token_file=token_file) as served:
            target = f"127.0.0.1:{served.port}"
            async with PeopleClient(target) as anonymous:
                with pytest.raises(errors.Unauthenticated):
                    await anonymous.get_all()
            async with PeopleClient(target, token="wrong") as wrong:
                with pytest.raises(errors.Unauthenticated):
                    await wrong.get_all()
            async with PeopleClient(target, token="s3cret-token") as allowed:
                assert await allowed.get_all() == []

    @pytest.mark.parametrize(
        ("status", "error"),
        [
            (Status.NOT_FOUND, errors.UserNotFound),
            (Status.ALREADY_EXISTS, errors.EmailAlreadyExists),
            (Status.INVALID_ARGUMENT, errors.InvalidField),
            (Status.ABORTED, errors.StaleVersion),
            (Status.UNAVAILABLE, errors.Unavailable),
            (Status.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
            (Status.UNAUTHENTICATED, errors.Unauthenticated),
            (Status.PERMISSION_DENIED, errors.PermissionDenied),
            (Status.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
            (Status.INTERNAL, errors.ServerError),
            (Status.UNIMPLEMENTED, errors.ServerError),
        ],
    )
    def test_status_table(self, status: Status, error: type[errors.PeopleError]) -> None:
        """Each status maps to one error class, keeping the server's message as its text."""
        mapped = error_for_status(status, "what the server said")
        assert type(mapped) is error
        assert str(mapped) == "what the server said"

    def test_write_conflict_is_told_apart_from_a_stale_etag(self) -> None:
        """ABORTED with WriteConflict's message is a WriteConflict; any other ABORTED is a
        StaleVersion about the call's user."""
        conflict = error_for_status(Status.ABORTED, errors.WriteConflict.MESSAGE, user_id="u1")
        stale = error_for_status(Status.ABORTED, errors.StaleVersion("u1").message, user_id="u1")
        assert type(conflict) is errors.WriteConflict
        assert str(conflict) == errors.WriteConflict.MESSAGE
        assert isinstance(stale, errors.StaleVersion)
        assert stale.user_id == "u1"

    def test_unknown_status_keeps_its_name(self) -> None:
        """A status with no domain meaning is a ServerError that names it."""
        mapped = error_for_status(Status.DATA_LOSS, "")
        assert isinstance(mapped, errors.ServerError)
        assert mapped.status == "DATA_LOSS"
        assert str(mapped) == "DATA_LOSS"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("localhost:50051", ("localhost", 50051)),
        ("db.example.com", ("db.example.com", 50051)),
        ("[::1]:6000", ("::1", 6000)),
        ("::1", ("::1", 50051)),
        (":7000", ("localhost", 7000)),
    ],
)
def test_parse_target(target: str, expected: tuple[str, int]) -> None:
    """Targets are host:port, with IPv6 in brackets and 50051 as the default port."""
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["host:port", "host:0", "host:70000", "[::1]:x"])
def test_parse_target_rejects_bad_ports(target: str) -> None:
    """A port that is not 1-65535 is a ValueError naming the target."""
    with pytest.raises(ValueError, match="invalid port"):
        parse_target(target)
