"""The write RPCs of ``people.UserService``: CreateUser (also from the fast lane),
UpdateUser, BatchCreateUsers and DeleteUserById, with the typed messages.

Kept apart from :mod:`people.api.user_service`, which is mostly the two read
paths and their cache; :class:`UserWrites` is one of its bases.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from people._gen.people import (
    BatchCreateUsersRequest,
    BatchCreateUsersResponse,
    CreateUserRequest,
    CreateUserResponse,
    UpdateUserResponse,
    User,
    UserIdRequest,
)
from people.api.answers import encode_user, message_class, parsed
from people.api.batches import create_within_limit
from people.api.messages import domain_errors_as_status, user_message
from people.domain.directory import UserDirectory
from people.domain.model import User as DomainUser
from people.rpc.strict_codec import within_send_limit

# The fast lane parses requests with upb, as the strict codec does on the normal path.
_CREATE_USER_REQUEST = message_class("CreateUserRequest")


class UserWrites:
    """The write handlers; :class:`people.api.user_service.UserService` sets the two fields."""

    _directory: UserDirectory
    _max_send_message_bytes: int

    async def create_user(self, message: CreateUserRequest) -> CreateUserResponse:
        return await self._create(message.name, message.email)

    def _fast_create(self, data: bytes) -> Coroutine[Any, Any, bytes] | None:
        request = parsed(_CREATE_USER_REQUEST, data)
        return None if request is None else self._encoded_create(request.name, request.email)

    async def _encoded_create(self, name: str, email: str) -> bytes:
        answer = bytes(await self._create(name, email))
        return within_send_limit(answer, self._max_send_message_bytes)

    async def _create(self, name: str, email: str) -> CreateUserResponse:
        with domain_errors_as_status():
            user = await self._directory.create(name=name, email=email)
        text = "User created successfully"
        return CreateUserResponse(id=user.id, message=text, user=self._fitting(user, user.id, text))

    async def update_user(self, message: User) -> UpdateUserResponse:
        with domain_errors_as_status():
            user = await self._directory.update(
                message.id, name=message.name, email=message.email, etag=message.etag
            )
        text = f"User with ID {message.id} updated successfully"
        return UpdateUserResponse(message=text, user=self._fitting(user, text))

    def _fitting(self, user: DomainUser, *seed_fields: str) -> User | None:
        """``user`` for a write's answer, or None if the answer would then outgrow the send limit.

        The write is done by now: its answer must go out. The seed's fields
        alone always fit, so a user too large to add is left out.
        """
        # Each field costs its bytes, a tag and a length (at most 6 bytes together).
        size = len(encode_user(user)) + sum(len(f.encode()) for f in seed_fields) + 6 * 3
        return user_message(user) if size <= self._max_send_message_bytes else None

    async def batch_create_users(
        self, message: BatchCreateUsersRequest
    ) -> BatchCreateUsersResponse:
        with domain_errors_as_status():
            return await create_within_limit(
                self._directory,
                message.requests,
                lambda users: BatchCreateUsersResponse(users=[user_message(u) for u in users]),
                self._max_send_message_bytes,
            )

    async def delete_user_by_id(self, message: UserIdRequest) -> UpdateUserResponse:
        with domain_errors_as_status():
            await self._directory.delete(message.id, etag=message.etag)
        return UpdateUserResponse(message=f"User with ID {message.id} deleted successfully")
