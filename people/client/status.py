"""The client's one mapping from a failed call to a :class:`people.PeopleError`.

The inverse of :mod:`people.api.status`: a gRPC status (and the server's
message) becomes the domain error it stands for; and why a server could not be
reached, in words for the error's text.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from typing import Final

from grpclib.const import Status

from people.domain import errors

#: Status codes whose meaning is one domain error, whatever the call.
_ERROR_BY_STATUS: Final[dict[Status, Callable[[str], errors.PeopleError]]] = {
    Status.UNAVAILABLE: errors.Unavailable,
    Status.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    Status.UNAUTHENTICATED: errors.Unauthenticated,
    Status.PERMISSION_DENIED: errors.PermissionDenied,
    Status.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
}


def error_for_status(
    status: Status, message: str, *, user_id: str = "", email: str = ""
) -> errors.PeopleError:
    """The domain error a call failing with ``status`` and ``message`` stands for.

    ``user_id`` and ``email`` are what the call was about, so the error carries
    them as attributes; the server's ``message`` becomes the error's text.
    """
    error: errors.PeopleError
    if status is Status.NOT_FOUND:
        error = errors.UserNotFound(user_id or _named_id(message))
    elif status is Status.ALREADY_EXISTS:
        error = errors.EmailAlreadyExists(email)
        error.index = _named_entry(message)
    elif status is Status.ABORTED and message == errors.WriteConflict.MESSAGE:
        error = errors.WriteConflict()
    elif status is Status.ABORTED:
        error = errors.StaleVersion(user_id)
    elif status is Status.INVALID_ARGUMENT:
        field, _, reason = message.removeprefix("invalid ").partition(": ")
        error = errors.InvalidField(field, reason) if reason else errors.InvalidField("", message)
    elif status in _ERROR_BY_STATUS:
        error = _ERROR_BY_STATUS[status](message)
    else:
        error = errors.ServerError(message, status=status.name)
    error.message = message or status.name
    error.args = (error.message,)
    return error


def _named_id(message: str) -> str:
    """The id in the server's ``User with ID <id> not found``; empty if it names none."""
    if message.startswith("User with ID ") and message.endswith(" not found"):
        return message.removeprefix("User with ID ").removesuffix(" not found")
    return ""


def _named_entry(message: str) -> int | None:
    """The entry number of a batch error's ``requests[i]: ...``; None if it names none."""
    field, colon, _ = message.partition(":")
    return errors.entry_index(field) if colon else None


def failure_reason(exc: BaseException) -> str:
    """Why a connection to the server failed, in words for the error's text."""
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
