"""The gRPC face of the directory: generated messages in, domain calls, messages out.

This is the only module where the domain meets the wire. Each handler converts
its request, calls :class:`people.service.UserDirectory`, and converts the
result back; :data:`STATUS_BY_ERROR` turns domain errors into status codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from grpclib.const import Status
from grpclib.exceptions import GRPCError

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
from people.config import DEFAULT_MAX_MESSAGE_BYTES
from people.model import User as DomainUser
from people.service import UserDirectory

#: The one table from domain errors to gRPC status codes, looked up along the
#: exception's MRO so a subclass inherits its parent's code.
STATUS_BY_ERROR: dict[type[errors.PeopleError], Status] = {
    errors.UserNotFound: Status.NOT_FOUND,
    errors.EmailAlreadyExists: Status.ALREADY_EXISTS,
    errors.InvalidField: Status.INVALID_ARGUMENT,
    errors.StaleVersion: Status.ABORTED,
    errors.StoreUnavailable: Status.UNAVAILABLE,
    errors.Unavailable: Status.UNAVAILABLE,
    errors.DeadlineExceeded: Status.DEADLINE_EXCEEDED,
    errors.Unauthenticated: Status.UNAUTHENTICATED,
    errors.PermissionDenied: Status.PERMISSION_DENIED,
    errors.ResourceExhausted: Status.RESOURCE_EXHAUSTED,
    errors.PeopleError: Status.INTERNAL,
}


def status_for(error: errors.PeopleError) -> Status:
    """Return the status code for a domain error (its closest listed ancestor's)."""
    for cls in type(error).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return Status.INTERNAL


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

    async def get_all_users(self, message: Empty) -> UserList:
        with domain_errors_as_status():
            users = await self._directory.list_all()
        answer = UserList(user=[user_message(user) for user in users])
        size = len(bytes(answer))
        if size > self._max_send_message_bytes:
            # Truncating would look like a complete answer; refuse instead.
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"all {len(users)} users take {size} bytes, more than the server's"
                f" {self._max_send_message_bytes}-byte message limit; page through"
                " them with ListUsers instead",
            )
        return answer

    async def list_users(self, message: ListUsersRequest) -> ListUsersResponse:
        with domain_errors_as_status():
            page = await self._directory.list_page(
                page_size=message.page_size, page_token=message.page_token
            )
        return ListUsersResponse(
            users=[user_message(user) for user in page.users],
            next_page_token=page.next_page_token,
        )

    async def create_user(self, message: CreateUserRequest) -> CreateUserResponse:
        with domain_errors_as_status():
            user = await self._directory.create(name=message.name, email=message.email)
        return CreateUserResponse(id=user.id, message="User created successfully")

    async def get_user_by_id(self, message: UserIdRequest) -> User:
        with domain_errors_as_status():
            user = await self._directory.get(message.id)
        return user_message(user)

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
