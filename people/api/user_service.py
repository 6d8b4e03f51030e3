"""``people.UserService``: generated messages in, domain calls, messages out.

Each handler converts its request, calls :class:`people.domain.directory.UserDirectory`,
and converts the result back; :func:`people.api.status.status_for` turns domain
errors into status codes.

The three read RPCs have two implementations that answer with the same bytes.
The generated, typed methods (:meth:`UserService.get_user_by_id` and friends)
build betterproto2 messages. The wire serves the read RPCs from a faster path
instead (:meth:`UserService.__mapping__`): requests decoded into upb's objects,
answers encoded with upb and kept in a read cache until the store changes.
``tests/test_read_paths.py`` holds the two against each other over random stores.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, NamedTuple, TypeVar

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from people._gen.people import (
    BatchGetUsersRequest,
    BatchGetUsersResponse,
    Empty,
    ListUsersRequest,
    ListUsersResponse,
    User,
    UserIdRequest,
    UserList,
    UserServiceBase,
)
from people.api.answers import (
    BatchCreateFields,
    EncodedMessage,
    ListUsersFields,
    UserIdFields,
    encode_list_users_response,
    encode_user,
    encode_user_list,
    message_class,
    parsed,
)
from people.api.batches import create_within_limit
from people.api.messages import domain_errors_as_status, page_message, user_message
from people.api.read_cache import ReadCache
from people.api.user_writes import UserWrites
from people.domain.directory import UserDirectory
from people.domain.model import User as DomainUser
from people.domain.paging import Page
from people.rpc.defaults import DEFAULT_MAX_MESSAGE_BYTES
from people.rpc.fast_lane import FastHandler

_Request = TypeVar("_Request")
# The fast lane parses requests with upb, as the strict codec does on the normal path.
_USER_ID_REQUEST = message_class("UserIdRequest")
_LIST_USERS_REQUEST = message_class("ListUsersRequest")
_EMPTY = message_class("Empty")


def _encoded_page(page: Page) -> EncodedMessage:
    return encode_list_users_response(page.users, page.next_page_token)


def _page_key(listing: ListUsersFields) -> Hashable:
    """The read-cache key of a ListUsers answer: the whole request, the same from either path.

    A filter of up to 20,000 characters is kept as a digest with its order_by.
    """
    if not (listing.filter or listing.order_by):
        return ("page", listing.page_size, listing.page_token, b"")
    text = f"{len(listing.filter)}:{listing.filter}{listing.order_by}"
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    return ("page", listing.page_size, listing.page_token, digest)


class _Listing(NamedTuple):
    """What a ListUsers request asks for, from either read path."""

    page_size: int
    page_token: str
    filter: str
    order_by: str


class UserService(UserWrites, UserServiceBase):
    """people.UserService, served by a :class:`UserDirectory`.

    Args:
        directory: The use cases behind every RPC.
        max_send_message_bytes: No answer is larger: GetAllUsers refuses and
            ListUsers pages shrink to fit.
        on_cache_lookup: Told of every read-cache lookup, True for a hit (metrics).
        read_cache: Keep encoded read answers until the store changes; without
            it every read reaches the store, as on PostgreSQL.
    """

    def __init__(
        self,
        directory: UserDirectory,
        *,
        max_send_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        on_cache_lookup: Callable[[bool], None] | None = None,
        read_cache: bool = True,
    ) -> None:
        self._directory = directory
        self._max_send_message_bytes = max_send_message_bytes
        #: Encoded read answers, valid until the store's next write (see people.api.read_cache).
        self._cache: ReadCache[EncodedMessage] = ReadCache(on_lookup=on_cache_lookup)
        self._read_cache = read_cache

    def __mapping__(self) -> dict[str, Handler]:
        """The generated routes, with the read RPCs served by the encoded path."""
        mapping = super().__mapping__()
        encoded_routes: dict[str, Callable[[Any], Awaitable[None]]] = {
            "/people.UserService/GetAllUsers": self._send_all_users,
            "/people.UserService/BatchCreateUsers": self._send_created,
            "/people.UserService/ListUsers": self._send_page,
            "/people.UserService/GetUserById": self._send_user,
        }
        for path, send in encoded_routes.items():
            generated = mapping[path]
            # The strict codec decodes these requests straight into upb's objects.
            request_type = message_class(generated.request_type.__name__)
            mapping[path] = Handler(send, generated.cardinality, request_type, EncodedMessage)
        return mapping

    def __fast_lane__(self) -> dict[str, FastHandler]:
        """What the runtime may answer without grpclib's stream: reads already kept in the
        cache (at once), and CreateUser (when its write is committed)."""
        return {
            "/people.UserService/GetUserById": self._fast_user,
            "/people.UserService/ListUsers": self._fast_page,
            "/people.UserService/GetAllUsers": self._fast_all_users,
            "/people.UserService/CreateUser": self._fast_create,
        }

    # -- the typed read path: betterproto2 messages ----------------------------------

    async def get_user_by_id(self, message: UserIdRequest) -> User:
        with domain_errors_as_status():
            return user_message(await self._directory.get(message.id))

    async def list_users(self, message: ListUsersRequest) -> ListUsersResponse:
        page = await self._page_within_limit(
            _Listing(message.page_size, message.page_token, message.filter, message.order_by),
            lambda page: len(bytes(page_message(page))),
        )
        return page_message(page)

    async def get_all_users(self, message: Empty) -> UserList:
        answer = UserList()
        size = 0
        async for batch in self._scan():
            users = [user_message(user) for user in batch]
            # Repeated fields concatenate: the answer's size is the sum of its batches'.
            size += len(bytes(UserList(user=users)))
            self._check_all_users_size(size)
            answer.user.extend(users)
        return answer

    # -- the encoded read path: upb requests in, cached bytes out --------------------

    async def _send_user(self, stream: Stream[UserIdFields, EncodedMessage]) -> None:
        request = await self._request(stream)
        user_id = request.id
        await stream.send_message(
            await self._cached(("user", user_id), lambda: self._encode_user(user_id))
        )

    async def _send_page(self, stream: Stream[ListUsersFields, EncodedMessage]) -> None:
        request = await self._request(stream)
        listing = _Listing(request.page_size, request.page_token, request.filter, request.order_by)
        await stream.send_message(
            await self._cached(_page_key(listing), lambda: self._encode_page(listing))
        )

    async def _send_all_users(self, stream: Stream[object, EncodedMessage]) -> None:
        await self._request(stream)
        await stream.send_message(await self._cached("all", self._encode_all_users))

    @staticmethod
    async def _request(stream: Stream[_Request, EncodedMessage]) -> _Request:
        request = await stream.recv_message()
        if request is None:
            raise GRPCError(Status.INTERNAL, "the request carried no message")
        return request

    def _fast_user(self, data: bytes) -> bytes | None:
        request = parsed(_USER_ID_REQUEST, data)
        return None if request is None else self._kept(("user", request.id))

    def _fast_page(self, data: bytes) -> bytes | None:
        request = parsed(_LIST_USERS_REQUEST, data)
        if request is None:
            return None
        return self._kept(_page_key(request))

    def _fast_all_users(self, data: bytes) -> bytes | None:
        return None if parsed(_EMPTY, data) is None else self._kept("all")

    def _kept(self, key: Hashable) -> bytes | None:
        """The answer kept under ``key`` for the store as it is now; None if there is none."""
        if not self._read_cache:
            return None
        answer = self._cache.peek(self._directory.change_token(), key)
        return None if answer is None else answer.data

    async def _cached(
        self, key: Hashable, answer: Callable[[], Awaitable[EncodedMessage]]
    ) -> EncodedMessage:
        """``await answer()``, or the copy kept under ``key`` since the store last changed.

        Concurrent misses for ``key`` share one ``answer()`` (see people.api.read_cache).
        """
        # The token is read *before* the answer: a write in between then only
        # makes a kept answer newer than its token, never older. Without the
        # read cache, None: nothing is kept.
        token = self._directory.change_token() if self._read_cache else None
        # No await between reading the token and handing it to the cache: the
        # cache sees tokens in the order they were read (see people.api.read_cache).
        return await self._cache.fetch(token, key, answer)

    async def _encode_user(self, user_id: str) -> EncodedMessage:
        with domain_errors_as_status():
            return encode_user(await self._directory.get(user_id))

    async def _encode_page(self, listing: _Listing) -> EncodedMessage:
        page = await self._page_within_limit(listing, lambda page: len(_encoded_page(page)))
        return _encoded_page(page)

    async def _encode_all_users(self) -> EncodedMessage:
        # Encoded batch by batch (repeated fields concatenate), stopping as soon as
        # the answer outgrows the limit: memory stays bounded however many users exist.
        parts: list[bytes] = []
        size = 0
        async for batch in self._scan():
            part = bytes(encode_user_list(batch))
            size += len(part)
            self._check_all_users_size(size)
            parts.append(part)
        return EncodedMessage(b"".join(parts))

    # -- what both read paths share -------------------------------------------------

    async def _scan(self) -> AsyncIterator[list[DomainUser]]:
        with domain_errors_as_status():
            async for batch in self._directory.scan():
                yield batch

    def _check_all_users_size(self, size: int) -> None:
        if size > self._max_send_message_bytes:
            # Truncating would look like a complete answer; refuse instead.
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"the users take more than the server's {self._max_send_message_bytes}"
                "-byte message limit; page through them with ListUsers instead",
            )

    async def _page_within_limit(
        self, listing: _Listing, encoded_size: Callable[[Page], int]
    ) -> Page:
        """The page asked for, shortened until ``encoded_size`` of it fits the send limit."""
        with domain_errors_as_status():
            page = await self._directory.list_page(
                page_size=listing.page_size,
                page_token=listing.page_token,
                filter=listing.filter,
                order_by=listing.order_by,
            )
        limit = self._max_send_message_bytes
        size = encoded_size(page)
        while size > limit and len(page.users) > 1:
            # AIP-158 lets a page be shorter than asked: shrink it to fit the
            # send limit rather than fail, and resume after its last user.
            fits = int(len(page.users) * limit / size * 0.9)
            page = self._directory.shorten(page, max(1, min(fits, len(page.users) - 1)))
            size = encoded_size(page)
        if size > limit:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"one user takes {size} bytes, more than the server's {limit}-byte message limit",
            )
        return page

    # -- BatchCreateUsers' encoded path, and BatchGetUsers (the typed writes: UserWrites) --

    async def _send_created(self, stream: Stream[BatchCreateFields, EncodedMessage]) -> None:
        # The fast path of BatchCreateUsers: upb in and out (BatchCreateUsersResponse
        # has UserList's wire form), 1,000 users in a few milliseconds.
        request = await self._request(stream)
        with domain_errors_as_status():
            answer = await create_within_limit(
                self._directory, request.requests, encode_user_list, self._max_send_message_bytes
            )
        await stream.send_message(answer)

    async def batch_get_users(self, message: BatchGetUsersRequest) -> BatchGetUsersResponse:
        with domain_errors_as_status():
            users = await self._directory.get_many(message.ids)
        return BatchGetUsersResponse(users=[user_message(user) for user in users])
