"""How a :class:`~people.domain.model.User` is stored in PostgreSQL: its columns and row.

Kept apart from :mod:`people.store.postgres`, which runs statements on pooled
connections: this is only the mapping, the batch INSERT (and which of its rows
it skipped), and the dialect listing queries are spelled in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from people.domain.model import User
from people.store.sql_filter import Dialect

#: The columns a User is read back from (:func:`to_user`).
COLUMNS = "id, name, email, version, create_time, update_time"
INSERTED = "id, name, email, email_key, version, create_time, update_time, name_key, email_reversed"
#: Every row of a batch in one statement; a taken email skips its row, which
#: add_many notices in the rows returned, and then rolls the whole batch back.
INSERT_MANY = (
    f"INSERT INTO users ({INSERTED}) SELECT * FROM unnest($1::text[], $2::text[],"
    " $3::text[], $4::text[], $5::bigint[], $6::timestamptz[], $7::timestamptz[],"
    " $8::text[], $9::text[]) ON CONFLICT (email_key) DO NOTHING RETURNING email_key"
)
#: How listing queries are spelled here (see people.store.sql_filter).
DIALECT = Dialect(
    columns={
        "id": "id",
        "name": "name_key",
        "email": "email_key",
        "email_reversed": "email_reversed",
        "create_time": "create_time",
        "update_time": "update_time",
    },
    placeholder=lambda number: f"${number}",
    contains="strpos({column}, {value}) > 0",
    ends_with="right({column}, {length}) = {value}",
    time=lambda moment: moment,
)


def to_row(user: User) -> tuple[str, str, str, str, int, datetime, datetime, str, str]:
    """The values :data:`INSERTED` names for ``user``, in that order."""
    return (
        user.id,
        user.name,
        user.email,
        user.email_key,
        user.version,
        user.create_time,
        user.update_time,
        user.name_key,
        user.email_key[::-1],
    )


def to_user(row: Mapping[str, Any]) -> User:
    """The user a row selected as :data:`COLUMNS` holds."""
    create_time: datetime = row["create_time"]
    update_time: datetime = row["update_time"]
    return User(
        id=str(row["id"]),
        name=str(row["name"]),
        email=str(row["email"]),
        version=int(row["version"]),
        create_time=create_time,
        update_time=update_time,
    )


def first_skipped(users: Sequence[User], stored: set[str]) -> User:
    """The first user whose row was not inserted: its email was taken before, or in the batch."""
    seen: set[str] = set()
    for user in users:
        if user.email_key not in stored or user.email_key in seen:
            return user
        seen.add(user.email_key)
    raise AssertionError("every row was inserted")
