"""The PostgreSQL store's schema, and the migrations that bring a database up to date.

Migrations run at start under an advisory lock, so several workers or replicas
starting at once do not race: one migrates, the others find the schema current.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from people.domain.errors import StoreUnavailable
from people.domain.model import name_key

#: The key of the advisory lock that serialises migrations across processes.
MIGRATION_LOCK = 0x70656F706C65  # "people" in ASCII


async def _add_filter_keys(connection: Any) -> None:
    """Migration 3: the keys and indexes behind ListUsers' filters and orders.

    Text the filters compare or order by is in the "C" collation (code point
    order, as in SQLite and the memory store, and what range scans on a prefix
    need). Existing rows get their folded name from Python, whose casefold()
    PostgreSQL's lower() does not match.
    """
    await connection.execute(
        """
        ALTER TABLE users ALTER COLUMN email_key TYPE text COLLATE "C";
        ALTER TABLE users ADD COLUMN name_key text COLLATE "C";
        ALTER TABLE users ADD COLUMN email_reversed text COLLATE "C";
        UPDATE users SET email_reversed = reverse(email_key);
        """
    )
    rows = await connection.fetch("SELECT id, name FROM users")
    await connection.executemany(
        "UPDATE users SET name_key = $2 WHERE id = $1",
        [(row["id"], name_key(row["name"])) for row in rows],
    )
    await connection.execute(
        """
        ALTER TABLE users ALTER COLUMN name_key SET NOT NULL,
            ALTER COLUMN email_reversed SET NOT NULL;
        CREATE INDEX users_name_order ON users (name_key, id);
        CREATE INDEX users_email_reversed ON users (email_reversed);
        CREATE INDEX users_update_order ON users (update_time, id);
        """
    )


#: Migration ``n`` takes the schema from version ``n`` to ``n + 1``: SQL, or a
#: function of the connection for a step that needs Python. Only ever append.
_MIGRATIONS: tuple[str | Callable[[Any], Awaitable[None]], ...] = (
    """
    CREATE TABLE users (
        id          text COLLATE "C" PRIMARY KEY,
        name        text NOT NULL,
        email       text NOT NULL,
        email_key   text NOT NULL,
        version     bigint NOT NULL,
        create_time timestamptz NOT NULL,
        update_time timestamptz NOT NULL
    );
    CREATE UNIQUE INDEX users_email_key ON users (email_key);
    CREATE INDEX users_creation_order ON users (create_time, id);
    """,
    # Secrets made once per database, such as the key that signs page tokens.
    "CREATE TABLE secrets (name text PRIMARY KEY, value bytea NOT NULL);",
    _add_filter_keys,
)
SCHEMA_VERSION = len(_MIGRATIONS)
_SIGNING_KEY_ROW = "page_token_key"


async def migrate(connection: Any) -> bytes:
    """Bring the schema up to date under an advisory lock; return the page-token key."""
    async with connection.transaction():
        # Held until commit: a second process waits here, then finds the schema
        # already current.
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
        )
        found = await connection.fetchval("SELECT max(version) FROM schema_version")
        current = int(found or 0)
        if current > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the database schema is version {current}, newer than this"
                f" people understands ({SCHEMA_VERSION}); upgrade people"
            )
        for migration in _MIGRATIONS[current:SCHEMA_VERSION]:
            if isinstance(migration, str):
                await connection.execute(migration)
            else:
                await migration(connection)
        if current < SCHEMA_VERSION:
            await connection.execute("DELETE FROM schema_version")
            await connection.execute(
                "INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION
            )
        await connection.execute(
            "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            _SIGNING_KEY_ROW,
            secrets.token_bytes(32),
        )
        key: bytes = await connection.fetchval(
            "SELECT value FROM secrets WHERE name = $1", _SIGNING_KEY_ROW
        )
    return bytes(key)
