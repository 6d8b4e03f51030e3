"""PeopleClient: one typed method per RPC over a grpclib channel (:mod:`people.client` shows
it in use); a failed call leaves through :func:`people.client.status.error_for_status`."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from people._gen.people import (
    PEOPLE_PROTO_DESCRIPTOR,
    BatchCreateUsersRequest,
    BatchGetUsersRequest,
    CreateUserRequest,
    Empty,
    ListUsersRequest,
    ListUsersResponse,
    User,
    UserIdRequest,
    UserServiceStub,
)
from people.client.connect import parse_target, tls_context
from people.client.status import error_for_status, failure_reason
from people.domain import errors

DEFAULT_TARGET: Final = "localhost:50051"
#: Seconds a call may take unless the caller says otherwise.
DEFAULT_TIMEOUT: Final = 10.0
#: The page size :meth:`PeopleClient.iter_users` asks for: the server's maximum.
LIST_PAGE_SIZE: Final = 1000
#: Most ids or users one BatchGetUsers or BatchCreateUsers call takes.
MAX_BATCH: Final = 1000
_BATCH_CREATE_PATH: Final = "/people.UserService/BatchCreateUsers"

T = TypeVar("T")


def filter_literal(value: str) -> str:
    """A quoted filter value that matches ``value`` exactly: ``"`` and ``\\`` escaped, and
    ``*`` too, so it is never a wildcard. ``f"email = {filter_literal(address)}"``."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("*", "\\*")
    return f'"{escaped}"'


class PeopleClient:
    """A connection to a people server, with one typed method per RPC.

    Use it as an async context manager, created inside a running event loop::

        async with PeopleClient("localhost:50051") as people:
            user = await people.get(user_id)

    Args:
        target: ``host:port`` of the server.
        timeout: Seconds each call may take; None waits forever. A call that
            runs out raises :class:`people.DeadlineExceeded`.
        tls: True for TLS with the system's CAs, an ``ssl.SSLContext`` for
            anything else (see :func:`tls_context`), False for plain text.
        token: A bearer token sent with every call.

    Raises:
        ValueError: ``target`` has a port that is not a number from 1 to 65535.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        tls: bool | ssl.SSLContext = False,
        token: str | None = None,
    ) -> None:
        host, port = parse_target(target)
        context = tls_context() if tls is True else tls or None
        channel = Channel(host, port, ssl=context)
        self._init(channel, target, timeout=timeout, token=token, owns_channel=True)

    @classmethod
    def from_channel(
        cls,
        channel: Channel,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        token: str | None = None,
    ) -> PeopleClient:
        """A client over an existing grpclib channel (``grpclib.testing.ChannelFor`` in tests).

        The channel stays the caller's: closing the client leaves it open.
        """
        client = cls.__new__(cls)
        client._init(
            channel, "in-process channel", timeout=timeout, token=token, owns_channel=False
        )
        return client

    def _init(
        self,
        channel: Channel,
        target: str,
        *,
        timeout: float | None,
        token: str | None,
        owns_channel: bool,
    ) -> None:
        self.target = target
        self._channel = channel
        self._owns_channel = owns_channel
        self._timeout = timeout
        self._metadata = {"authorization": f"Bearer {token}"} if token else None
        self._stub = UserServiceStub(channel, timeout=timeout, metadata=self._metadata)

    async def __aenter__(self) -> PeopleClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (unless the channel was passed in); later calls reopen it."""
        if self._owns_channel:
            self._channel.close()

    async def create(self, name: str, email: str) -> str:
        """Create a user and return its id.

        Raises:
            InvalidField: the name or email breaks a rule.
            EmailAlreadyExists: another user has this email.
        """
        request = CreateUserRequest(name=name, email=email)
        response = await self._call(self._stub.create_user(request), email=email)
        return response.id

    async def get(self, user_id: str) -> User:
        """Return the user with ``user_id``.

        Raises:
            UserNotFound: no user has this id.
        """
        return await self._call(self._stub.get_user_by_id(UserIdRequest(id=user_id)), user_id)

    async def get_all(self) -> list[User]:
        """Every user in creation order, in one response (GetAllUsers).

        Raises:
            ResourceExhausted: the list outgrew the server's message size;
                use :meth:`iter_users` instead.
        """
        return list((await self._call(self._stub.get_all_users(Empty()))).user)

    async def batch_get(self, user_ids: Sequence[str]) -> list[User]:
        """The users with these ids (at most 1000), in the same order (BatchGetUsers).

        Raises:
            UserNotFound: an id no user has (``user_id`` is the first such id);
                nothing is returned for the others.
            InvalidField: more than 1000 ids, or an empty one.
        """
        request = BatchGetUsersRequest(ids=list(user_ids))
        return list((await self._call(self._stub.batch_get_users(request))).users)

    async def batch_create(self, users: Iterable[tuple[str, str]]) -> list[User]:
        """Create a user for each ``(name, email)`` (at most 1000), all or none (BatchCreateUsers).

        Returns:
            The users created, in the same order, with their ids, etags and timestamps.

        Raises:
            InvalidField: an entry's name or email breaks a rule (``field`` is
                ``requests[i].name`` or ``requests[i].email``), or more than 1000 entries.
            EmailAlreadyExists: an entry's email is taken, or repeats an earlier entry's.
            Either way ``index`` is the entry's number i, and no user was created.
        """
        requests = [CreateUserRequest(name=name, email=email) for name, email in users]
        request = BatchCreateUsersRequest(requests=requests)
        return list((await self._call(self._stub.batch_create_users(request))).users)

    async def batch_create_ids(self, users: Iterable[tuple[str, str]]) -> list[str]:
        """As :meth:`batch_create`, returning only the new ids: for bulk loads.

        The request and answer are encoded and decoded by protobuf's C library
        (upb) instead of as generated messages, which for 1,000 users saves
        tens of milliseconds of client CPU per call.
        """
        request = _upb_class("BatchCreateUsersRequest")()
        add = request.requests.add
        for name, email in users:
            add(name=name, email=email)
        answer_type = _upb_class("BatchCreateUsersResponse")
        response = await self._call(self._unary(_BATCH_CREATE_PATH, request, answer_type))
        return [str(user.id) for user in response.users]

    async def list_page(
        self, *, page_size: int = 0, page_token: str = "", filter: str = "", order_by: str = ""
    ) -> ListUsersResponse:
        """One page of users (ListUsers); page_size 0 is the server's default.

        ``filter`` and ``order_by`` are AIP-160 and AIP-132 text (see the README);
        empty means every user, in creation order.

        Raises:
            InvalidField: the filter or order_by is malformed (the message says
                where), or the token belongs to another filter or order_by.
        """
        request = ListUsersRequest(
            page_size=page_size, page_token=page_token, filter=filter, order_by=order_by
        )
        return await self._call(self._stub.list_users(request))

    async def iter_users(
        self, *, page_size: int = LIST_PAGE_SIZE, filter: str = "", order_by: str = ""
    ) -> AsyncIterator[User]:
        """Every user ``filter`` matches, in ``order_by``'s order, fetched page by page."""
        token = ""
        while True:
            page = await self.list_page(
                page_size=page_size, page_token=token, filter=filter, order_by=order_by
            )
            for user in page.users:
                yield user
            token = page.next_page_token
            if not token:
                return

    async def find_by_email(self, email: str) -> User:
        """The user with this email, compared as the server stores emails (case-insensitively).

        Raises:
            EmailNotFound: no user has it (a UserNotFound, NOT_FOUND on the wire).
        """
        page = await self.list_page(page_size=1, filter=f"email = {filter_literal(email)}")
        if not page.users:
            raise errors.EmailNotFound(email)
        return page.users[0]

    async def update(self, user_id: str, *, name: str = "", email: str = "", etag: str = "") -> str:
        """Change a user's name and/or email (empty keeps the old value); return the reply.

        Raises:
            UserNotFound: no user has this id.
            StaleVersion: ``etag`` was given and the user changed since it was read.
            WriteConflict: the database kept refusing the change because of
                concurrent ones; try again.
            InvalidField, EmailAlreadyExists: as for :meth:`create`.
        """
        request = User(id=user_id, name=name, email=email, etag=etag)
        response = await self._call(self._stub.update_user(request), user_id, email=email)
        return response.message

    async def delete(self, user_id: str, *, etag: str = "") -> str:
        """Delete a user; return the server's message.

        Raises:
            UserNotFound: no user has this id.
            StaleVersion: ``etag`` was given and the user changed since it was read.
            WriteConflict: the database kept refusing the change because of
                concurrent ones; try again.
        """
        request = UserIdRequest(id=user_id, etag=etag)
        response = await self._call(self._stub.delete_user_by_id(request), user_id)
        return response.message

    async def _unary(self, path: str, request: Any, reply_type: type[Any]) -> Any:
        """One unary call with upb messages, with this client's timeout and credentials."""
        async with self._channel.request(
            path,
            Cardinality.UNARY_UNARY,
            type(request),
            reply_type,
            timeout=self._timeout,
            metadata=self._metadata,
        ) as stream:
            await stream.send_message(request, end=True)
            return await stream.recv_message()

    async def _call(self, call: Awaitable[T], user_id: str = "", *, email: str = "") -> T:
        """Await ``call``, turning every way it can fail into a :class:`people.PeopleError`."""
        try:
            return await call
        except GRPCError as exc:
            message = exc.message or ""
            raise error_for_status(exc.status, message, user_id=user_id, email=email) from None
        except TimeoutError:  # grpclib's deadline; must come before OSError
            raise errors.DeadlineExceeded(
                f"no answer from {self.target} within the deadline"
            ) from None
        except (OSError, StreamTerminatedError, ProtocolError) as exc:
            raise errors.Unavailable(
                f"cannot reach the people server at {self.target}: {failure_reason(exc)}"
            ) from None


def _upb_class(name: str) -> type[Any]:
    """protobuf's own (upb) class for people message ``name`` (cached by protobuf's pool)."""
    from google.protobuf import message_factory

    cls: type[Any] = message_factory.GetMessageClass(
        PEOPLE_PROTO_DESCRIPTOR.message_types_by_name[name]
    )
    return cls
