"""Domain errors: what can go wrong in the directory, with the data to explain it.

Every error shares one base, :class:`PeopleError`, so callers can catch the
whole family at once. Errors carry their facts (``user_id``, ``email``,
``field``) as attributes; how they travel on the wire is decided elsewhere
(``people.api.status`` on the server, ``people.client`` on the client).
"""

from __future__ import annotations


class PeopleError(Exception):
    """Base of every error people raises on purpose."""

    #: In a batch call, the entry (counted from 0) the error is about; None otherwise.
    index: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


#: Characters of an id that a message repeats; a longer id (which matches nobody) is cut.
_ID_SHOWN = 128


class UserNotFound(PeopleError):
    """No user has the given id."""

    def __init__(self, user_id: str) -> None:
        shown = user_id if len(user_id) <= _ID_SHOWN else user_id[:_ID_SHOWN] + "…"
        super().__init__(f"User with ID {shown} not found")
        self.user_id = user_id


class EmailNotFound(UserNotFound):
    """No user has this email (a lookup by email, which answers NOT_FOUND like a lookup by id)."""

    def __init__(self, email: str) -> None:
        super().__init__("")
        self.message = f"no user has the email {email!r}"
        self.args = (self.message,)
        self.email = email


class EmailAlreadyExists(PeopleError):
    """Another user already has this email (compared case-insensitively).

    In a batch, ``index`` names the entry as ``requests[i]`` at the start of the
    message, and ``reason`` may say more (which earlier entry has the email).
    """

    def __init__(self, email: str, *, index: int | None = None, reason: str = "") -> None:
        message = f"a user with email {email!r} already exists"
        if index is not None:
            message = f"requests[{index}]: {message}"
        super().__init__(f"{message} ({reason})" if reason else message)
        self.email = email
        self.index = index


class InvalidField(PeopleError):
    """A field of a request breaks a rule; ``field`` names it, ``reason`` says why.

    In a batch the field names the entry: ``requests[3].email``, ``ids[0]``;
    ``index`` is then that entry's number.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason
        self.index = entry_index(field)


def entry_index(field: str) -> int | None:
    """The entry number a batch field such as ``requests[3].email`` names; None for others."""
    _, bracket, rest = field.partition("[")
    number, closing, _ = rest.partition("]")
    if bracket and closing and number.isascii() and number.isdigit():
        return int(number)
    return None


class StaleVersion(PeopleError):
    """The caller's etag no longer matches the stored user: someone changed it first."""

    def __init__(self, user_id: str) -> None:
        super().__init__(
            f"User with ID {user_id} was changed by someone else; read it again and retry"
        )
        self.user_id = user_id


class StoreUnavailable(PeopleError):
    """The store cannot be reached right now; the call may be retried."""


class StoreFailure(PeopleError):
    """The store failed in a way a retry will not fix: a bug, or a schema someone changed.

    The message is the same whatever happened; the details go to the server log.
    """

    def __init__(self) -> None:
        super().__init__("the database failed; the server log has the details")


class WriteConflict(PeopleError):
    """The database kept refusing a change because of concurrent ones; the call may be retried."""

    #: The one message, by which a client tells this apart from StaleVersion.
    MESSAGE = "the database refused the change because of concurrent changes; try again"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class UnstorableValue(InvalidField):
    """The database refused a value of the request as data it cannot hold."""

    def __init__(self) -> None:
        super().__init__("request", "holds a value the database cannot store")


class Unavailable(PeopleError):
    """The server cannot be reached or is shutting down; the call may be retried."""


class DeadlineExceeded(PeopleError):
    """The call took longer than its deadline; whether it took effect is unknown."""


class Unauthenticated(PeopleError):
    """The call carried no valid credentials."""


class PermissionDenied(PeopleError):
    """The credentials are valid but do not allow this call."""


class ResourceExhausted(PeopleError):
    """A limit was hit (message size, concurrency); the message says which."""


class ServerError(PeopleError):
    """The server failed in a way the caller cannot fix; ``status`` names the gRPC status."""

    def __init__(self, message: str, *, status: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.status = status
