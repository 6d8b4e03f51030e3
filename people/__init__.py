"""people: a typed, asyncio gRPC user directory."""

from __future__ import annotations

from people.client import PeopleClient
from people.domain.errors import (
    DeadlineExceeded,
    EmailAlreadyExists,
    EmailNotFound,
    InvalidField,
    PeopleError,
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    StaleVersion,
    StoreUnavailable,
    Unauthenticated,
    Unavailable,
    UserNotFound,
    WriteConflict,
)

__version__ = "0.1.0"

__all__ = [
    "DeadlineExceeded",
    "EmailAlreadyExists",
    "EmailNotFound",
    "InvalidField",
    "PeopleClient",
    "PeopleError",
    "PermissionDenied",
    "ResourceExhausted",
    "ServerError",
    "StaleVersion",
    "StoreUnavailable",
    "Unauthenticated",
    "Unavailable",
    "UserNotFound",
    "WriteConflict",
    "__version__",
]
