"""The storage port: what the directory needs from a database.

Adapters live in :mod:`people.store` (memory, SQLite, PostgreSQL). Each
translates its driver's exceptions into :mod:`people.domain.errors` at its own
edge, so no driver exception ever reaches the directory.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from typing import Protocol

from people.domain.model import User

#: Where a page ends: the (create_time, id) of its last user. Users are ordered
#: by this pair, which never changes once a user exists, so paging is stable.
Cursor = tuple[datetime, str]


class UserStore(Protocol):
    """Persistence for users. Every method is safe to call concurrently.

    Besides the errors each method lists, any of them may fail because of the
    database itself, with a generic message (the adapter logs the details):
    StoreUnavailable (it cannot be reached), ResourceExhausted (a full disk,
    no free connection), WriteConflict (concurrent writes kept winning),
    UnstorableValue (it refused a value) or StoreFailure (anything else).
    """

    async def add(self, user: User) -> None:
        """Store a new user. Raises EmailAlreadyExists if its email key is taken."""
        ...

    async def get(self, user_id: str) -> User:
        """Return one user. Raises UserNotFound."""
        ...

    async def list_page(self, *, after: Cursor | None, limit: int) -> list[User]:
        """Return up to ``limit`` users in creation order, starting after ``after``."""
        ...

    async def replace(self, user: User, *, expected_version: int) -> None:
        """Overwrite a user if its stored version is ``expected_version``.

        Raises:
            UserNotFound: no such user.
            StaleVersion: the stored version differs.
            EmailAlreadyExists: the new email belongs to another user.
        """
        ...

    async def remove(self, user_id: str, *, expected_version: int | None) -> None:
        """Delete a user, checking its version if one is given.

        Raises:
            UserNotFound: no such user.
            StaleVersion: ``expected_version`` is given and differs.
        """
        ...

    def change_token(self) -> Hashable | None:
        """Return a value that differs whenever the stored users may have changed.

        Changes made by any process sharing the store count. It is synchronous
        and must never wait (callers ask on the event loop before every read
        they might answer from a cache, some inside the loop's own callbacks);
        None means the store cannot tell right now, and nothing may be cached.
        """
        ...

    def signing_key(self) -> bytes:
        """A random secret made once per database and kept in it.

        Every process that opens the same database gets the same key, before
        and after restarts, so what one signs (page tokens) the others accept.
        """
        ...

    async def ping(self) -> bool:
        """Return True if the store answers right now (for health checks)."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads. The store is unusable afterwards."""
        ...
