"""The storage adapters (``memory``, ``sqlite``, ``postgres``) and :func:`open_store`.

Each adapter implements :class:`people.domain.ports.UserStore` and translates
its driver's exceptions into domain errors at its own edge.
"""

from __future__ import annotations

from people.domain.errors import InvalidField
from people.domain.ports import UserStore


async def open_store(url: str) -> UserStore:
    """Open the store a database URL names.

    Args:
        url: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
            ``memory://`` or ``postgresql://user@host:port/dbname``.

    Raises:
        InvalidField: the URL names no store people knows.
        StoreUnavailable: the database cannot be opened.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidField("database", f"{url!r} is not a URL such as sqlite:///people.db")
    if scheme == "memory":
        from people.store.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        from people.store.sqlite import SQLiteStore

        path = rest.removeprefix("/")
        if not path:
            raise InvalidField("database", "sqlite URLs need a path: sqlite:///people.db")
        return await SQLiteStore.open(path)
    if scheme in ("postgresql", "postgres"):
        from people.store.postgres import PostgresStore

        return await PostgresStore.open(url)
    raise InvalidField(
        "database", f"unknown scheme {scheme!r}: use sqlite://, postgresql:// or memory://"
    )
