"""Domain values as wire messages, and domain errors as gRPC statuses, for every handler.

Kept apart from :mod:`people.api.user_service` because both its read paths and
its writes (:mod:`people.api.user_writes`) convert the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from grpclib.exceptions import GRPCError

from people._gen.people import ListUsersResponse, User
from people.api.status import status_for
from people.domain import errors
from people.domain.model import User as DomainUser
from people.domain.paging import Page


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


def page_message(page: Page) -> ListUsersResponse:
    """Convert a page of domain users to its wire message."""
    return ListUsersResponse(
        users=[user_message(user) for user in page.users], next_page_token=page.next_page_token
    )
