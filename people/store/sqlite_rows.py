"""How a :class:`~people.domain.model.User` is stored in SQLite: its columns and row.

Kept apart from :mod:`people.store.sqlite`, which runs statements on threads:
this is only the mapping, timestamps as microseconds since the epoch, and the
dialect listing queries are spelled in.
"""

from __future__ import annotations

from datetime import UTC, datetime

from people.domain.model import User
from people.store.sql_filter import Dialect

#: The columns a User is read back from, in :func:`to_user`'s order.
COLUMNS = "id, name, email, version, create_time_us, update_time_us"
INSERT = (
    "INSERT INTO users (id, name, email, email_key, version, create_time_us, update_time_us,"
    " name_key, email_reversed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def micros(moment: datetime) -> int:
    """``moment`` as whole microseconds since the Unix epoch (how timestamps are stored)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC datetime of a stored timestamp."""
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: How listing queries are spelled here (see people.store.sql_filter).
DIALECT = Dialect(
    columns={
        "id": "id",
        "name": "name_key",
        "email": "email_key",
        "email_reversed": "email_reversed",
        "create_time": "create_time_us",
        "update_time": "update_time_us",
    },
    placeholder=lambda _: "?",
    contains="instr({column}, {value}) > 0",
    ends_with="substr({column}, -{length}) = {value}",
    time=micros,
)


def to_row(user: User) -> tuple[str, str, str, str, int, int, int, str, str]:
    """The values :data:`INSERT` takes for ``user``."""
    return (
        user.id,
        user.name,
        user.email,
        user.email_key,
        user.version,
        micros(user.create_time),
        micros(user.update_time),
        user.name_key,
        user.email_key[::-1],
    )


def to_user(row: tuple[str, str, str, int, int, int]) -> User:
    """The user a row selected as :data:`COLUMNS` holds."""
    user_id, name, email, version, created, updated = row
    return User(
        id=user_id,
        name=name,
        email=email,
        version=version,
        create_time=from_micros(created),
        update_time=from_micros(updated),
    )
