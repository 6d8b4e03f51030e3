"""The one table from domain errors to gRPC status codes.

The server answers a failed call with :func:`status_for` of its domain error
(``people.api.user_service``); the CLI turns the error a call raised back into the same
status for its exit code. ``people.client.status`` holds the inverse, status to error.
"""

from __future__ import annotations

from grpclib.const import Status

from people.domain import errors

#: Looked up along the exception's MRO, so a subclass inherits its parent's code.
STATUS_BY_ERROR: dict[type[errors.PeopleError], Status] = {
    errors.UserNotFound: Status.NOT_FOUND,
    errors.EmailNotFound: Status.NOT_FOUND,
    errors.EmailAlreadyExists: Status.ALREADY_EXISTS,
    errors.InvalidField: Status.INVALID_ARGUMENT,
    errors.StaleVersion: Status.ABORTED,
    errors.StoreUnavailable: Status.UNAVAILABLE,
    errors.StoreFailure: Status.INTERNAL,
    errors.WriteConflict: Status.ABORTED,
    errors.UnstorableValue: Status.INVALID_ARGUMENT,
    errors.Unavailable: Status.UNAVAILABLE,
    errors.DeadlineExceeded: Status.DEADLINE_EXCEEDED,
    errors.Unauthenticated: Status.UNAUTHENTICATED,
    errors.PermissionDenied: Status.PERMISSION_DENIED,
    errors.ResourceExhausted: Status.RESOURCE_EXHAUSTED,
    errors.PeopleError: Status.INTERNAL,
}


def status_for(error: errors.PeopleError) -> Status:
    """Return the status code for a domain error (its closest listed ancestor's).

    A :class:`~people.errors.ServerError` carries the status it arrived with.
    """
    if isinstance(error, errors.ServerError):
        return Status.__members__.get(error.status, Status.UNKNOWN)
    for cls in type(error).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return Status.INTERNAL
