"""The gRPC face of the directory: generated messages in, domain calls, messages out.

This is the only module where the domain meets the wire. Each handler converts
its request, calls :class:`people.service.UserDirectory`, and converts the
result back; :func:`people.status.status_for` turns domain errors into status codes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from people import errors
from people._gen.people import (
    CreateUserRequest,
    CreateUserResponse,
    Empty,
    ListUsersRequest,
    ListUsersResponse,
    UpdateUserResponse,
    User,
    UserIdRequest,
    UserList,
    UserServiceBase,
)
from people.cache import ReadCache
from people.config import DEFAULT_MAX_MESSAGE_BYTES
from people.model import User as DomainUser
from people.service import UserDirectory
from people.status import status_for
from people.wire import (
    EncodedMessage,
    encode_list_users_response,
    encode_user,
    encode_user_list,
    message_class,
)


@contextmanager
def domain_errors_as_status() -> Iterator[None]:
    """Re-raise domain errors as GRPCError with their status and message."""
    try:
        yield
    except errors.PeopleError as exc:
        raise GRPCError(status_for(exc), exc.message) from exc


def user_message(user: DomainUser) -> User:
    """Convert a domain user to its wire message."""
    return User(
        id=user.id,
        name=user.name,
        email=user.email,
        etag=user.etag,
        create_time=user.create_time,
        update_time=user.update_time,
    )


class UserService(UserServiceBase):
    """people.UserService, served by a :class:`UserDirectory`.

    Args:
        directory: The use cases behind every RPC.
        max_send_message_bytes: GetAllUsers refuses to answer with more than this.
    """

    def __init__(
        self,
        directory: UserDirectory,
        *,
        max_send_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._directory = directory
        self._max_send_message_bytes = max_send_message_bytes
        #: Encoded read answers, valid until the store's next write (see people.cache).
        self._cache: ReadCache[EncodedMessage] = ReadCache()

    def __mapping__(self) -> dict[str, Handler]:
        """The generated routes, but the read RPCs send bytes encoded by :mod:`people.wire`.

        Building betterproto2 messages dominates the cost of a large answer, so
        the wire path skips them; the typed methods below return the same data.
        """
        mapping = super().__mapping__()
        encoded_routes: dict[str, Callable[[Stream[Any, EncodedMessage]], Awaitable[None]]] = {
            "/people.UserService/GetAllUsers": self._send_all_users,
            "/people.UserService/ListUsers": self._send_page,
            "/people.UserService/GetUserById": self._send_user,
        }
        for path, send in encoded_routes.items():
            generated = mapping[path]
            # These handlers read one or two fields of the request: upb's object
            # serves that without building a betterproto2 message first.
            request_type = message_class(generated.request_type.__name__)
            mapping[path] = Handler(send, generated.cardinality, request_type, EncodedMessage)
        return mapping

    async def get_all_users(self, message: Empty) -> UserList:
        return UserList.parse(bytes(await self._all_users()))

    async def list_users(self, message: ListUsersRequest) -> ListUsersResponse:
        return ListUsersResponse.parse(bytes(await self._page(message)))

    async def get_user_by_id(self, message: UserIdRequest) -> User:
        return User.parse(bytes(await self._user(message)))

    async def _cached(
        self, key: Hashable, answer: Callable[[], Awaitable[EncodedMessage]]
    ) -> EncodedMessage:
        """``await answer()``, or the copy kept under ``key`` since the store last changed."""
        # The token is read *before* the answer: a write in between then only
        # makes a kept answer newer than its token, never older.
        token = await self._directory.change_token()
        cached = self._cache.get(token, key)
        if cached is None:
            cached = await answer()
            self._cache.put(token, key, cached)
        return cached

    async def _all_users(self) -> EncodedMessage:
        return await self._cached("all", self._encode_all_users)

    async def _encode_all_users(self) -> EncodedMessage:
        # Encoded batch by batch (repeated fields concatenate), stopping as soon as
        # the answer outgrows the limit: memory stays bounded however many users exist.
        parts: list[bytes] = []
        size = 0
        with domain_errors_as_status():
            async for batch in self._directory.scan():
                part = bytes(encode_user_list(batch))
                size += len(part)
                if size > self._max_send_message_bytes:
                    # Truncating would look like a complete answer; refuse instead.
                    raise GRPCError(
                        Status.RESOURCE_EXHAUSTED,
                        f"the users take more than the server's {self._max_send_message_bytes}"
                        "-byte message limit; page through them with ListUsers instead",
                    )
                parts.append(part)
        return EncodedMessage(b"".join(parts))

    async def _page(self, message: ListUsersRequest) -> EncodedMessage:
        size, token = message.page_size, message.page_token
        return await self._cached(("page", size, token), lambda: self._encode_page(size, token))

    async def _encode_page(self, page_size: int, page_token: str) -> EncodedMessage:
        with domain_errors_as_status():
            page = await self._directory.list_page(page_size=page_size, page_token=page_token)
        answer = encode_list_users_response(page.users, page.next_page_token)
        limit = self._max_send_message_bytes
        while len(answer) > limit and len(page.users) > 1:
            # AIP-158 lets a page be shorter than asked: shrink it to fit the
            # send limit rather than fail, and resume after its last user.
            fits = int(len(page.users) * limit / len(answer) * 0.9)
            page = page.first(max(1, min(fits, len(page.users) - 1)))
            answer = encode_list_users_response(page.users, page.next_page_token)
        if len(answer) > limit:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"one user takes {len(answer)} bytes, more than the server's {limit}-byte"
                " message limit",
            )
        return answer

    async def _user(self, message: UserIdRequest) -> EncodedMessage:
        user_id = message.id
        return await self._cached(("user", user_id), lambda: self._encode_user(user_id))

    async def _encode_user(self, user_id: str) -> EncodedMessage:
        with domain_errors_as_status():
            return encode_user(await self._directory.get(user_id))

    async def _send_all_users(self, stream: Stream[Any, EncodedMessage]) -> None:
        if await stream.recv_message() is None:
            raise GRPCError(Status.INTERNAL, "the request carried no message")
        await stream.send_message(await self._all_users())

    async def _send_page(self, stream: Stream[Any, EncodedMessage]) -> None:
        request = await stream.recv_message()
        if request is None:
            raise GRPCError(Status.INTERNAL, "the request carried no message")
        await stream.send_message(await self._page(request))

    async def _send_user(self, stream: Stream[Any, EncodedMessage]) -> None:
        request = await stream.recv_message()
        if request is None:
            raise GRPCError(Status.INTERNAL, "the request carried no message")
        await stream.send_message(await self._user(request))

    async def create_user(self, message: CreateUserRequest) -> CreateUserResponse:
        with domain_errors_as_status():
            user = await self._directory.create(name=message.name, email=message.email)
        return CreateUserResponse(id=user.id, message="User created successfully")

    async def update_user(self, message: User) -> UpdateUserResponse:
        with domain_errors_as_status():
            await self._directory.update(
                message.id, name=message.name, email=message.email, etag=message.etag
            )
        return UpdateUserResponse(message=f"User with ID {message.id} updated successfully")

    async def delete_user_by_id(self, message: UserIdRequest) -> UpdateUserResponse:
        with domain_errors_as_status():
            await self._directory.delete(message.id, etag=message.etag)
        return UpdateUserResponse(message=f"User with ID {message.id} deleted successfully")
