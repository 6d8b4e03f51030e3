"""What an asyncpg error means to a caller: the PostgreSQL store's one classification.

PostgreSQL names every failure with a SQLSTATE (``exc.sqlstate``), whose first
two characters are its class. The caller gets a domain error with a generic
message (no driver text, host name or SQL); the ``people.store`` log gets the
driver's words and the traceback, once, here.

- StoreUnavailable (UNAVAILABLE): SQLSTATE class 08 (connection), 53 (resources:
  too many connections...), 57 (shutdown, cancel), 58 (I/O), 25006 (writing to a
  standby); a lost or closed connection, a network error, a statement timeout.
- ResourceExhausted (RESOURCE_EXHAUSTED): 53100 disk full ("the database disk is
  full"); no pooled connection free within the acquire timeout ("database
  connections exhausted").
- WriteConflict (ABORTED): 40001 serialization failure, 40P01 deadlock, once the
  store's own retries are spent.
- UnstorableValue (INVALID_ARGUMENT): class 22 (data exception), an argument
  asyncpg cannot encode.
- EmailAlreadyExists (ALREADY_EXISTS): a unique violation on the email index.
- StoreFailure (INTERNAL): any other integrity violation, an undefined table, a
  syntax error, anything else.

Also here: what a write that matched no row means.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import asyncpg

from people.domain.errors import (
    EmailAlreadyExists,
    PeopleError,
    ResourceExhausted,
    StaleVersion,
    StoreFailure,
    StoreUnavailable,
    UnstorableValue,
    UserNotFound,
    WriteConflict,
)

log = logging.getLogger("people.store")

CONNECTIONS_EXHAUSTED = "database connections exhausted"
DISK_FULL = "the database disk is full"
UNAVAILABLE = "the database is unavailable; try again later"
#: The unique index that decides "email taken".
EMAIL_INDEX = "users_email_key"
#: SQLSTATEs of a statement that lost to a concurrent one and may simply run again.
CONFLICT_STATES = frozenset({"40001", "40P01"})
#: SQLSTATE classes the caller can do nothing about but wait.
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58"})
#: Single SQLSTATEs of the same kind: writing to a standby (a failover in progress).
_UNAVAILABLE_STATES = frozenset({"25006"})
_UNIQUE_VIOLATION = "23505"
_DISK_FULL = "53100"
_DATA_EXCEPTION_CLASS = "22"
#: Seconds of the first retry's backoff ceiling; it doubles with every attempt.
_FIRST_BACKOFF = 0.005


class PoolExhausted(Exception):
    """Every pooled connection stayed busy for the whole acquire timeout."""

    def __init__(self, size: int, timeout: float) -> None:
        super().__init__(f"all {size} pooled connections stayed busy for {timeout:g}s")


#: What :func:`translating` handles: everything a statement or an acquire can raise.
STORE_EXCEPTIONS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
    PoolExhausted,
)


def is_conflict(exc: BaseException) -> bool:
    """True if ``exc`` is a serialization failure or deadlock: run the statement again."""
    return isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in CONFLICT_STATES


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): full jitter, doubling."""
    # Jitter keeps the statements that collided from colliding again in step.
    return random.uniform(0, _FIRST_BACKOFF * 2 ** (attempt - 1))


def retrying(exc: BaseException, attempt: int, attempts: int) -> None:
    """Log that a statement lost to a concurrent one and runs again."""
    log.debug(
        "PostgreSQL store: %s (SQLSTATE %s); running the statement again (%d of %d)",
        exc,
        getattr(exc, "sqlstate", "?"),
        attempt + 1,
        attempts,
    )


def classify(exc: BaseException, *, email: str | None = None) -> PeopleError:
    """The domain error ``exc`` stands for.

    Args:
        exc: What asyncpg, the network or the pool raised.
        email: The email a write tries to claim, for EmailAlreadyExists.
    """
    if isinstance(exc, PoolExhausted):
        return ResourceExhausted(CONNECTIONS_EXHAUSTED)
    if isinstance(exc, asyncpg.PostgresError):
        return _by_sqlstate(exc, email=email)
    if isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError):
        # asyncpg's client-side DataError: an argument it cannot encode.
        return UnstorableValue()
    if isinstance(exc, asyncpg.InterfaceError | OSError | TimeoutError):
        # A lost or closed connection, a closed pool, a refused or timed-out network.
        return StoreUnavailable(UNAVAILABLE)
    return StoreFailure()


def _by_sqlstate(exc: asyncpg.PostgresError, *, email: str | None) -> PeopleError:
    state = str(exc.sqlstate or "")
    if (
        state == _UNIQUE_VIOLATION
        and email is not None
        and getattr(exc, "constraint_name", None) == EMAIL_INDEX
    ):
        return EmailAlreadyExists(email)
    if state in CONFLICT_STATES:
        return WriteConflict()
    if state == _DISK_FULL:
        return ResourceExhausted(DISK_FULL)
    if state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES:
        return StoreUnavailable(UNAVAILABLE)
    if state[:2] == _DATA_EXCEPTION_CLASS:
        return UnstorableValue()
    return StoreFailure()


def translated(exc: BaseException, *, email: str | None = None, quiet: bool = False) -> PeopleError:
    """:func:`classify` ``exc``, logging the failure (not a taken email) with its traceback.

    Args:
        exc: What was raised, being handled now.
        email: The email a write tries to claim, for EmailAlreadyExists.
        quiet: Log at DEBUG only (health checks, which ask every few seconds).
    """
    error = classify(exc, email=email)
    if not isinstance(error, EmailAlreadyExists):
        level = logging.DEBUG if quiet else _level(error)
        state = getattr(exc, "sqlstate", None)
        log.log(
            level,
            "PostgreSQL store: %s (%s), answered as %s",
            str(exc) or type(exc).__name__,
            f"SQLSTATE {state}" if state else type(exc).__name__,
            type(error).__name__,
            exc_info=exc,
        )
    return error


def check_changed(row: Mapping[str, Any], user_id: str) -> None:
    """A write's ``changed`` and ``present`` answer: if it changed nothing, why not."""
    if row["changed"]:
        return
    if not row["present"]:
        raise UserNotFound(user_id)
    raise StaleVersion(user_id)


def _level(error: PeopleError) -> int:
    # INTERNAL is a bug or a damaged schema: someone has to act. The rest pass.
    return logging.ERROR if isinstance(error, StoreFailure) else logging.WARNING


@contextmanager
def translating(
    *, email: str | None = None, quiet: bool = False, opening: bool = False
) -> Iterator[None]:
    """Turn asyncpg's, the pool's and the network's exceptions into domain errors.

    Args:
        email: The email a write tries to claim, for EmailAlreadyExists.
        quiet: Log failures at DEBUG only (health checks).
        opening: The store is opening: any failure is StoreUnavailable with
            the driver's reason, for the operator starting the server.
    """
    try:
        yield
    except STORE_EXCEPTIONS as exc:
        if opening:
            reason = str(exc) or type(exc).__name__
            raise StoreUnavailable(f"cannot open the PostgreSQL database: {reason}") from exc
        raise translated(exc, email=email, quiet=quiet) from exc
