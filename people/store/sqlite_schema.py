"""The SQLite store's schema, and the migrations that bring a file up to date.

The schema version is SQLite's ``PRAGMA user_version``; a file migrated by a
newer people is refused rather than misread.
"""

from __future__ import annotations

import secrets
import sqlite3

from people.domain.errors import StoreUnavailable
from people.domain.model import name_key

#: Migration ``n`` takes the schema from version ``n`` to ``n + 1`` (``PRAGMA user_version``).
#: Only ever append: a released step never changes.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS users (
            id             TEXT PRIMARY KEY,
            name           TEXT NOT NULL,
            email          TEXT NOT NULL,
            email_key      TEXT NOT NULL,
            version        INTEGER NOT NULL,
            create_time_us INTEGER NOT NULL,
            update_time_us INTEGER NOT NULL
        )""",
        "CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (email_key)",
        "CREATE INDEX IF NOT EXISTS users_creation_order ON users (create_time_us, id)",
    ),
    (
        # Secrets made once per database, such as the key that signs page tokens.
        "CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    ),
    (
        # Filters and orders (ListUsers): the folded name and the reversed email
        # key, filled in for existing rows by people's own functions (SQLite's
        # lower() folds ASCII only), and the indexes that serve exact names, name
        # prefixes, email suffixes such as "*@acme.com", and every order.
        "ALTER TABLE users ADD COLUMN name_key TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE users ADD COLUMN email_reversed TEXT NOT NULL DEFAULT ''",
        "UPDATE users SET name_key = people_name_key(name),"
        " email_reversed = people_reversed(email_key)",
        "CREATE INDEX users_name_order ON users (name_key, id)",
        "CREATE INDEX users_email_reversed ON users (email_reversed)",
        "CREATE INDEX users_update_order ON users (update_time_us, id)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
_SIGNING_KEY_ROW = "page_token_key"


def migrate(db: sqlite3.Connection) -> bytes:
    """Bring the schema up to date in one transaction; return the page-token key.

    ``BEGIN IMMEDIATE`` takes the write lock first, so of several processes
    opening a new file at once one migrates and the others then find it done.
    """
    # What the migrations compute in Python, so that stored keys match the ones
    # the store writes for new users exactly.
    db.create_function("people_name_key", 1, name_key, deterministic=True)
    db.create_function("people_reversed", 1, _reversed, deterministic=True)
    db.execute("BEGIN IMMEDIATE")
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the SQLite database was migrated by a newer people (schema version"
                f" {version}, this people knows {SCHEMA_VERSION}); upgrade people"
            )
        for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
        db.execute(
            "INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)",
            (_SIGNING_KEY_ROW, secrets.token_bytes(32)),
        )
        (key,) = db.execute(
            "SELECT value FROM secrets WHERE name = ?", (_SIGNING_KEY_ROW,)
        ).fetchone()
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return bytes(key)


def _reversed(text: str) -> str:
    return text[::-1]
