"""Domain errors: what can go wrong in the directory, with the data to explain it.

Every error shares one base, :class:`PeopleError`, so callers can catch the
whole family at once. Errors carry their facts (``user_id``, ``email``,
``field``) as attributes; how they travel on the wire is decided elsewhere
(``people.api.status`` on the server, ``people.client`` on the client).
"""

from __future__ import annotations


class PeopleError(Exception):
    """Base of every error people raises on purpose."""

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


class EmailAlreadyExists(PeopleError):
    """Another user already has this email (compared case-insensitively)."""

    def __init__(self, email: str) -> None:
        super().__init__(f"a user with email {email!r} already exists")
        self.email = email


class InvalidField(PeopleError):
    """A field of a request breaks a rule; ``field`` names it, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason


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
