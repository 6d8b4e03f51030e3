"""The encoded read path the wire uses answers with exactly the bytes of the typed path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from grpclib.exceptions import GRPCError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from people._gen.people import Empty, ListUsersRequest, ListUsersResponse, UserIdRequest
from people.api.answers import EncodedMessage, message_class
from people.api.user_service import UserService
from people.domain.directory import UserDirectory
from people.domain.model import User
from people.rpc.defaults import DEFAULT_MAX_MESSAGE_BYTES
from people.store.memory import MemoryStore

moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)
users = st.builds(
    User,
    id=st.text(min_size=1, max_size=40),
    name=st.text(max_size=60),
    email=st.emails(),
    version=st.integers(min_value=1, max_value=10**12),
    create_time=moments,
    update_time=moments,
)
stores = st.lists(
    users, max_size=25, unique_by=(lambda user: user.id, lambda user: user.email.casefold())
)
limits = st.sampled_from([1024, 1500, 4096, DEFAULT_MAX_MESSAGE_BYTES])
page_sizes = st.integers(min_value=-1, max_value=12)
#: Filters that select something, nothing, or are malformed.
filters = st.sampled_from(
    [
        "",
        'name = "a*"',
        'email = "*.com"',
        'name:"b" OR email:"c"',
        'NOT name = "a*"',
        'create_time > "2000-01-01T00:00:00Z" AND update_time < "5000-01-01T00:00:00Z"',
        'nickname = "x"',
        'name = "x',
    ]
)
orders = st.sampled_from(["", "name", "email desc", "update_time", "create_time desc", "id"])

#: (0, answer bytes, "") for an answer; (status code, b"", message) for a refusal.
Outcome = tuple[int, bytes, str]


class OneCall:
    """What a wire handler sees of a call: one request in, the answers it sends kept."""

    def __init__(self, request: object) -> None:
        self.request = request
        self.sent: list[EncodedMessage] = []

    async def recv_message(self) -> object:
        """The request, as the strict codec would have decoded it."""
        return self.request

    async def send_message(self, message: EncodedMessage) -> None:
        """Keep an answer."""
        self.sent.append(message)


async def outcome(call: Callable[[], Awaitable[bytes]]) -> Outcome:
    """The answer's bytes, or the status and message it failed with."""
    try:
        return (0, await call(), "")
    except GRPCError as exc:
        return (exc.status.value, b"", exc.message or "")


class ReadPaths:
    """One service, asked each read RPC through both of its paths."""

    def __init__(self, service: UserService) -> None:
        self.service = service
        self.routes = service.__mapping__()

    async def wire(self, method: str, request_type: str, **fields: Any) -> bytes:
        """The answer the route the server serves sends, as bytes."""
        handler = self.routes[f"/people.UserService/{method}"]
        assert handler.request_type is message_class(request_type)
        call = OneCall(message_class(request_type)(**fields))
        await handler.func(call)
        (answer,) = call.sent
        return bytes(answer)

    async def both(
        self,
        method: str,
        request_type: str,
        typed: Callable[[], Awaitable[Any]],
        **fields: Any,
    ) -> tuple[Outcome, Outcome]:
        """The outcomes of the wire route and of the typed method for one request."""

        async def typed_bytes() -> bytes:
            return bytes(await typed())

        return (
            await outcome(lambda: self.wire(method, request_type, **fields)),
            await outcome(typed_bytes),
        )


async def service_over(contents: list[User], limit: int) -> ReadPaths:
    """A service whose store holds exactly ``contents``, with send limit ``limit``."""
    store = MemoryStore()
    for user in contents:
        await store.add(user)
    return ReadPaths(UserService(UserDirectory(store), max_send_message_bytes=limit))


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class TestSameBytes:
    @SETTINGS
    @given(contents=stores, limit=limits, missing=st.text(max_size=40))
    async def test_get_user_by_id(self, contents: list[User], limit: int, missing: str) -> None:
        """GetUserById answers alike for every stored id, a missing id and an empty one."""
        paths = await service_over(contents, limit)
        for user_id in [*(user.id for user in contents), missing, ""]:
            wire, typed = await paths.both(
                "GetUserById",
                "UserIdRequest",
                partial(paths.service.get_user_by_id, UserIdRequest(id=user_id)),
                id=user_id,
            )
            assert wire == typed

    @SETTINGS
    @given(contents=stores, limit=limits, size=page_sizes, filter=filters, order_by=orders)
    async def test_list_users_page_by_page(
        self, contents: list[User], limit: int, size: int, filter: str, order_by: str
    ) -> None:
        """Every ListUsers page, filtered and ordered, followed token by token to the end, is
        alike on both paths."""
        paths = await service_over(contents, limit)
        token = ""
        for _ in range(len(contents) + 2):
            request = ListUsersRequest(
                page_size=size, page_token=token, filter=filter, order_by=order_by
            )
            wire, typed = await paths.both(
                "ListUsers",
                "ListUsersRequest",
                partial(paths.service.list_users, request),
                page_size=size,
                page_token=token,
                filter=filter,
                order_by=order_by,
            )
            assert wire == typed
            if wire[0] != 0:
                return
            token = ListUsersResponse.parse(wire[1]).next_page_token
            if not token:
                return
        raise AssertionError("the listing did not end")

    @SETTINGS
    @given(contents=stores, limit=limits, token=st.text(max_size=20))
    async def test_list_users_with_any_token(
        self, contents: list[User], limit: int, token: str
    ) -> None:
        """A token that was never issued fails the same way on both paths."""
        paths = await service_over(contents, limit)
        request = ListUsersRequest(page_size=3, page_token=token)
        wire, typed = await paths.both(
            "ListUsers",
            "ListUsersRequest",
            lambda: paths.service.list_users(request),
            page_size=3,
            page_token=token,
        )
        assert wire == typed

    @SETTINGS
    @given(contents=stores, first=filters, then=filters, order_by=orders)
    async def test_token_of_another_listing(
        self, contents: list[User], first: str, then: str, order_by: str
    ) -> None:
        """A token of one filter, sent with another filter or order, answers alike on both
        paths (refused unless the listing is the same)."""
        paths = await service_over(contents, DEFAULT_MAX_MESSAGE_BYTES)
        try:
            page = await paths.service.list_users(ListUsersRequest(page_size=1, filter=first))
        except GRPCError:
            return
        token = page.next_page_token
        request = ListUsersRequest(page_size=2, page_token=token, filter=then, order_by=order_by)
        wire, typed = await paths.both(
            "ListUsers",
            "ListUsersRequest",
            partial(paths.service.list_users, request),
            page_size=2,
            page_token=token,
            filter=then,
            order_by=order_by,
        )
        assert wire == typed

    @SETTINGS
    @given(contents=stores, limit=limits)
    async def test_get_all_users(self, contents: list[User], limit: int) -> None:
        """GetAllUsers answers alike, and refuses alike when the list outgrows the limit."""
        paths = await service_over(contents, limit)
        wire, typed = await paths.both(
            "GetAllUsers", "Empty", lambda: paths.service.get_all_users(Empty())
        )
        assert wire == typed

    async def test_both_outcomes_occur(self) -> None:
        """The cases above reach both answers and refusals (the comparison is not vacuous)."""
        big = [
            User(
                id=f"id-{n}",
                name="x" * 200,
                email=f"user{n}@example.com",
                version=1,
                create_time=datetime(2024, 1, 1, tzinfo=UTC),
                update_time=datetime(2024, 1, 1, tzinfo=UTC),
            )
            for n in range(12)
        ]
        paths = await service_over(big, 1024)
        wire, typed = await paths.both(
            "GetAllUsers", "Empty", lambda: paths.service.get_all_users(Empty())
        )
        assert wire == typed
        assert wire[0] != 0
        wire, typed = await paths.both(
            "GetUserById",
            "UserIdRequest",
            lambda: paths.service.get_user_by_id(UserIdRequest(id="id-3")),
            id="id-3",
        )
        assert wire == typed
        assert wire[0] == 0
