"""What an sqlite3 error means to a caller: the SQLite store's one classification.

SQLite names every failure with a result code (``sqlite_errorcode``, whose low
byte is the primary code). The caller gets a domain error with a generic
message; the ``people.store`` log gets SQLite's own words and the traceback,
once, here.

- StoreUnavailable (UNAVAILABLE): BUSY and LOCKED (after the busy timeout),
  IOERR, CANTOPEN, NOTADB, CORRUPT, READONLY, PERM, PROTOCOL, NOMEM, NOLFS.
- ResourceExhausted (RESOURCE_EXHAUSTED): FULL ("the database disk is full").
- UnstorableValue (INVALID_ARGUMENT): TOOBIG.
- EmailAlreadyExists (ALREADY_EXISTS): the UNIQUE constraint on ``users.email_key``.
- StoreFailure (INTERNAL): any other constraint (a duplicate id), no such table,
  SQL errors, anything else.

Also here: what a failure to open the file, and a write that matched no row, mean.
"""

from __future__ import annotations

import logging
import sqlite3

from people.domain.errors import (
    EmailAlreadyExists,
    PeopleError,
    ResourceExhausted,
    StaleVersion,
    StoreFailure,
    StoreUnavailable,
    UnstorableValue,
    UserNotFound,
)

log = logging.getLogger("people.store")

DISK_FULL = "the database disk is full"
UNAVAILABLE = "the database is unavailable; try again later"
#: Primary result codes of a file or lock the caller can do nothing about but wait.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_NOLFS,
    }
)
#: SQLite's message for a taken email: the unique index's column.
_EMAIL_TAKEN = "UNIQUE constraint failed: users.email_key"


def classify(exc: sqlite3.Error, *, email: str | None = None) -> PeopleError:
    """The domain error ``exc`` stands for.

    Args:
        exc: What sqlite3 raised.
        email: The email a write tries to claim, for EmailAlreadyExists.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        # Raised by the sqlite3 module itself (a closed connection, a bad binding).
        return StoreFailure()
    primary = code & 0xFF
    if primary == sqlite3.SQLITE_FULL:
        return ResourceExhausted(DISK_FULL)
    if primary in _UNAVAILABLE_CODES:
        return StoreUnavailable(UNAVAILABLE)
    if primary == sqlite3.SQLITE_TOOBIG:
        return UnstorableValue()
    if code == sqlite3.SQLITE_CONSTRAINT_UNIQUE and email is not None and str(exc) == _EMAIL_TAKEN:
        return EmailAlreadyExists(email)
    return StoreFailure()


def translated(exc: sqlite3.Error, *, email: str | None = None, quiet: bool = False) -> PeopleError:
    """:func:`classify` ``exc``, logging the failure (not a taken email) with its traceback.

    Args:
        exc: What sqlite3 raised, being handled now.
        email: The email a write tries to claim, for EmailAlreadyExists.
        quiet: Log at DEBUG only (health checks, which ask every few seconds).
    """
    error = classify(exc, email=email)
    if not isinstance(error, EmailAlreadyExists):
        level = logging.DEBUG if quiet else _level(error)
        log.log(
            level,
            "SQLite store: %s (%s), answered as %s",
            exc,
            getattr(exc, "sqlite_errorname", type(exc).__name__),
            type(error).__name__,
            exc_info=exc,
        )
    return error


def cannot_open(exc: sqlite3.Error, email: str | None) -> PeopleError:
    """Opening failed: the operator starting the server gets SQLite's own reason."""
    return StoreUnavailable(f"cannot open the SQLite database: {exc}")


def raise_missing_or_stale(db: sqlite3.Connection, user_id: str) -> None:
    """A write to ``user_id`` matched no row: UserNotFound if it is gone, else StaleVersion."""
    exists = db.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone()
    if exists is None:
        raise UserNotFound(user_id)
    raise StaleVersion(user_id)


def _level(error: PeopleError) -> int:
    # INTERNAL is a bug or a damaged schema: someone has to act. The rest pass.
    return logging.ERROR if isinstance(error, StoreFailure) else logging.WARNING
