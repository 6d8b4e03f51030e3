"""An in-memory store: the test double, and ``memory://`` for throwaway servers."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

from people.domain.errors import EmailAlreadyExists, StaleVersion, StoreFailure, UserNotFound
from people.domain.model import User
from people.domain.ports import Cursor
from people.domain.query import DEFAULT_QUERY, Query

log = logging.getLogger("people.store")


class MemoryStore:
    """Keeps users in dicts; nothing survives the process.

    All methods run without awaiting, so each is atomic on the event loop.
    """

    def __init__(self) -> None:
        self._users: dict[str, User] = {}
        self._ids_by_email: dict[str, str] = {}
        self._changes = 0
        self._signing_key = secrets.token_bytes(32)

    async def add(self, user: User) -> None:
        await self.add_many([user])

    async def add_many(self, users: Sequence[User]) -> None:
        # Every check first, then every change: nothing is stored unless all can be.
        emails: set[str] = set()
        ids: set[str] = set()
        for user in users:
            if user.email_key in self._ids_by_email or user.email_key in emails:
                raise EmailAlreadyExists(user.email)
            if user.id in self._users or user.id in ids:
                # Ids are fresh UUID4s: a repeat is a bug, as a primary key violation is elsewhere.
                log.error("memory store: a user with id %s already exists", user.id)
                raise StoreFailure
            emails.add(user.email_key)
            ids.add(user.id)
        for user in users:
            self._users[user.id] = user
            self._ids_by_email[user.email_key] = user.id
        self._changes += 1

    async def get(self, user_id: str) -> User:
        try:
            return self._users[user_id]
        except KeyError:
            raise UserNotFound(user_id) from None

    async def get_many(self, user_ids: Sequence[str]) -> list[User]:
        return [self._users[user_id] for user_id in user_ids if user_id in self._users]

    async def count(self) -> int:
        return len(self._users)

    async def list_page(
        self, *, after: Cursor | None, limit: int, query: Query = DEFAULT_QUERY
    ) -> list[User]:
        descending = query.order.descending
        chosen = [user for user in self._users.values() if query.matches(user)]
        ordered = sorted(chosen, key=query.sort_key, reverse=descending)
        if after is not None:
            ordered = [user for user in ordered if _beyond(query.sort_key(user), after, descending)]
        return ordered[:limit]

    async def replace(self, user: User, *, expected_version: int) -> None:
        current = await self.get(user.id)
        if current.version != expected_version:
            raise StaleVersion(user.id)
        owner = self._ids_by_email.get(user.email_key)
        if owner is not None and owner != user.id:
            raise EmailAlreadyExists(user.email)
        del self._ids_by_email[current.email_key]
        self._ids_by_email[user.email_key] = user.id
        self._users[user.id] = user
        self._changes += 1

    async def remove(self, user_id: str, *, expected_version: int | None) -> None:
        current = await self.get(user_id)
        if expected_version is not None and current.version != expected_version:
            raise StaleVersion(user_id)
        del self._users[user_id]
        del self._ids_by_email[current.email_key]
        self._changes += 1

    def change_token(self) -> int:
        return self._changes

    def signing_key(self) -> bytes:
        return self._signing_key

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._users.clear()
        self._ids_by_email.clear()


def _beyond(key: Cursor, after: Cursor, descending: bool) -> bool:
    """True if a user sorting at ``key`` comes after the cursor ``after``."""
    return key < after if descending else key > after
