"""BatchCreateUsers' one rule beyond the directory's: never store a batch it cannot answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import SupportsBytes, TypeVar

from people.api.answers import CreateUserFields
from people.domain import errors
from people.domain.directory import UserDirectory
from people.domain.model import User

Answer = TypeVar("Answer", bound=SupportsBytes)


async def create_within_limit(
    directory: UserDirectory,
    requests: Sequence[CreateUserFields],
    answer: Callable[[list[User]], Answer],
    max_bytes: int,
) -> Answer:
    """Create the users ``requests`` ask for, and return ``answer(users)``.

    The answer is made and measured once the users are valid and before
    anything is written: a batch whose answer would outgrow the send limit is
    refused whole (ResourceExhausted), never stored and then left unanswered.

    Raises:
        ResourceExhausted: the answer would take more than ``max_bytes``; nothing was written.
        InvalidField, EmailAlreadyExists: as for UserDirectory.create_many.
    """
    made: list[Answer] = []

    def fits(users: list[User]) -> None:
        made.append(answer(users))
        size = len(bytes(made[0]))
        if size > max_bytes:
            raise errors.ResourceExhausted(
                f"the answer for {len(users)} users would take {size} bytes, more than the"
                f" server's {max_bytes}-byte message limit; send fewer users per call"
                " (none was created)"
            )

    await directory.create_many(
        [(request.name, request.email) for request in requests], before_write=fits
    )
    return made[0]
