"""The storage port: what the directory needs from a database.

Adapters live in :mod:`people.store` (memory, SQLite, PostgreSQL). Each
translates its driver's exceptions into :mod:`people.domain.errors` at its own
edge, so no driver exception ever reaches the directory.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Protocol

from people.domain.model import User
from people.domain.query import DEFAULT_QUERY, Query, SortValue

#: Where a page ends: the sort key of its last user (its create_time in the
#: default order; see Query.sort_key) and its id. Users are ordered by this
#: pair, and the id breaks ties, so paging is stable.
Cursor = tuple[SortValue, str]
#: Most users one add_many or get_many call takes.
MAX_BATCH = 1000


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

    async def add_many(self, users: Sequence[User]) -> None:
        """Store new users in one transaction: all of them, or none.

        Raises:
            EmailAlreadyExists: the first user (in ``users``' order) whose email
                key is taken, in the store or by an earlier user of ``users``;
                nothing was stored.
        """
        ...

    async def get(self, user_id: str) -> User:
        """Return one user. Raises UserNotFound."""
        ...

    async def get_many(self, user_ids: Sequence[str]) -> list[User]:
        """Return the users with these ids that exist, in no particular order."""
        ...

    async def list_page(
        self, *, after: Cursor | None, limit: int, query: Query = DEFAULT_QUERY
    ) -> list[User]:
        """Return up to ``limit`` users ``query`` matches, in its order, starting after ``after``.

        ``after`` is ``query.sort_key`` of the last user of the previous page.
        """
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

    async def count(self) -> int:
        """Return how many users the store holds."""
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
