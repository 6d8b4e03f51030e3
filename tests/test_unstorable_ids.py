"""Ids no store could hold (control characters, more than 128 characters) match nobody.

They are answered NOT_FOUND with the seed's message before any store sees
them, so every store answers alike: PostgreSQL cannot even look up text
holding NUL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.testing import ChannelFor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from people._gen.people import User, UserIdRequest, UserServiceStub
from people.api.user_service import UserService
from people.domain.directory import UserDirectory
from people.domain.model import MAX_ID_LENGTH
from people.domain.model import User as DomainUser
from people.domain.ports import UserStore
from people.store.memory import MemoryStore

UNSTORABLE_IDS = [
    pytest.param("a\x00b", id="nul"),
    pytest.param("\x00", id="only-nul"),
    pytest.param("tab\tbed", id="tab"),
    pytest.param("line\nbreak", id="newline"),
    pytest.param("del\x7f", id="del"),
    pytest.param("c1\x85", id="c1-control"),
    pytest.param("x" * (MAX_ID_LENGTH + 1), id="one-too-long"),
    pytest.param("x" * 100_000, id="very-long"),
]
Call = Callable[[UserServiceStub, str], Awaitable[object]]
#: The three RPCs that take an id, each sent with nothing else that could fail first.
CALLS: dict[str, Call] = {
    "GetUserById": lambda stub, user_id: stub.get_user_by_id(UserIdRequest(id=user_id)),
    "UpdateUser": lambda stub, user_id: stub.update_user(User(id=user_id, name="Ada")),
    "DeleteUserById": lambda stub, user_id: stub.delete_user_by_id(UserIdRequest(id=user_id)),
}


class UntouchableStore(MemoryStore):
    """A memory store that fails the test if a user is looked up, replaced or removed."""

    async def get(self, user_id: str) -> DomainUser:
        """Fail: nothing should have asked."""
        raise AssertionError(f"the store was asked for {user_id!r}")

    async def replace(self, user: DomainUser, *, expected_version: int) -> None:
        """Fail: nothing should have asked."""
        raise AssertionError(f"the store was asked to replace {user.id!r}")

    async def remove(self, user_id: str, *, expected_version: int | None) -> None:
        """Fail: nothing should have asked."""
        raise AssertionError(f"the store was asked to remove {user_id!r}")


async def answer(store: UserStore, call: Call, user_id: str) -> tuple[Status, str]:
    """The status and message ``call`` with ``user_id`` gets from UserService on ``store``."""
    async with ChannelFor([UserService(UserDirectory(store))]) as channel:
        with pytest.raises(GRPCError) as caught:
            await call(UserServiceStub(channel), user_id)
    return caught.value.status, caught.value.message or ""


def not_found(user_id: str) -> tuple[Status, str]:
    """The seed's answer for an id that matches nobody (long ids are cut in the message)."""
    shown = user_id if len(user_id) <= MAX_ID_LENGTH else user_id[:MAX_ID_LENGTH] + "…"
    return Status.NOT_FOUND, f"User with ID {shown} not found"


class TestUnstorableIds:
    """NOT_FOUND on every store, for every RPC that takes an id."""

    @pytest.mark.parametrize("user_id", UNSTORABLE_IDS)
    @pytest.mark.parametrize("rpc", sorted(CALLS))
    async def test_not_found_on_every_store(self, store: UserStore, rpc: str, user_id: str) -> None:
        """The id is NOT_FOUND with the seed's message, whichever store is behind."""
        assert await answer(store, CALLS[rpc], user_id) == not_found(user_id)

    @pytest.mark.parametrize("user_id", UNSTORABLE_IDS)
    @pytest.mark.parametrize("rpc", sorted(CALLS))
    async def test_store_is_never_asked(self, rpc: str, user_id: str) -> None:
        """The answer comes before any store lookup."""
        assert await answer(UntouchableStore(), CALLS[rpc], user_id) == not_found(user_id)

    async def test_long_ids_are_cut_in_the_message(self) -> None:
        """A 100 000-character id is answered with its first 128 characters and an ellipsis."""
        status, message = await answer(MemoryStore(), CALLS["GetUserById"], "y" * 100_000)
        assert status is Status.NOT_FOUND
        assert message == f"User with ID {'y' * MAX_ID_LENGTH}… not found"

    @pytest.mark.parametrize("rpc", sorted(CALLS))
    async def test_empty_stays_invalid_argument(self, store: UserStore, rpc: str) -> None:
        """An empty id is still INVALID_ARGUMENT naming the id field."""
        status, message = await answer(store, CALLS[rpc], "")
        assert status is Status.INVALID_ARGUMENT
        assert message.startswith("invalid id:")

    @settings(
        max_examples=150,
        deadline=None,
        # The store is shared by every example, which is safe: nothing here writes to it.
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(user_id=st.text(min_size=1, max_size=MAX_ID_LENGTH + 40))
    async def test_any_text_is_not_found(self, store: UserStore, user_id: str) -> None:
        """Any non-empty id on an empty store is NOT_FOUND with the seed's message, never a
        store error."""
        assert await answer(store, CALLS["GetUserById"], user_id) == not_found(user_id)
