"""UserDirectory: the use cases of the directory, on top of any UserStore.

No gRPC and no SQL here: requests arrive as plain strings, results leave as
:class:`people.domain.model.User`, and every failure is a
:mod:`people.domain.errors` error.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import replace
from datetime import UTC, datetime

from people.domain.errors import InvalidField, StaleVersion
from people.domain.model import User, check_id, normalise_email, normalise_name, parse_etag
from people.domain.paging import Page, PageTokens
from people.domain.ports import Cursor, UserStore

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Page size used when the directory walks the whole table for GetAllUsers.
_SCAN_BATCH = 1000
#: How often an update without an etag re-reads after losing a race to another writer.
_MAX_UPDATE_ATTEMPTS = 64
#: Versions start at 1, so this matches no stored user.
_NEVER_ISSUED_VERSION = 0


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


class UserDirectory:
    """Create, read, list, update and delete users, enforcing the field rules.

    Args:
        store: Where users live.
        clock: Returns the current UTC time (injected for tests).
        new_id: Returns a fresh user id (injected for tests).
    """

    def __init__(
        self,
        store: UserStore,
        *,
        clock: Callable[[], datetime] = _now,
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_id = new_id
        self._tokens = PageTokens(store.signing_key())

    async def create(self, *, name: str, email: str) -> User:
        """Create a user with a new id.

        Raises:
            InvalidField: the name or email breaks a rule.
            EmailAlreadyExists: another user has this email.
        """
        now = self._clock()
        user = User(
            id=self._new_id(),
            name=normalise_name(name),
            email=normalise_email(email),
            version=1,
            create_time=now,
            update_time=now,
        )
        await self._store.add(user)
        return user

    async def get(self, user_id: str) -> User:
        """Return one user.

        Raises:
            UserNotFound: no such user, or an id no user could have (see check_id).
            InvalidField: the id is empty.
        """
        return await self._store.get(check_id(user_id))

    def change_token(self) -> Hashable | None:
        """A value that changes whenever the users may have (see UserStore.change_token)."""
        return self._store.change_token()

    async def scan(self) -> AsyncIterator[list[User]]:
        """Every user in creation order, a batch at a time, so a caller can stop early."""
        after: Cursor | None = None
        while True:
            batch = await self._store.list_page(after=after, limit=_SCAN_BATCH)
            if batch:
                yield batch
            if len(batch) < _SCAN_BATCH:
                return
            after = (batch[-1].create_time, batch[-1].id)

    async def list_page(self, *, page_size: int, page_token: str) -> Page:
        """Return one page of users in creation order (AIP-158).

        Args:
            page_size: 0 means the default (50); larger than 1000 is clamped.
            page_token: Empty for the first page, else a previous ``next_page_token``.

        Raises:
            InvalidField: the page size is negative or the token was not issued here.
        """
        if page_size < 0:
            raise InvalidField("page_size", "must not be negative")
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = self._tokens.cursor(page_token) if page_token else None
        # One extra row tells whether another page follows without a second query.
        users = await self._store.list_page(after=after, limit=limit + 1)
        if len(users) <= limit:
            return Page(users=users, next_page_token="")
        users = users[:limit]
        return Page(users=users, next_page_token=self._tokens.after(users[-1]))

    def shorten(self, page: Page, count: int) -> Page:
        """The first ``count`` users of ``page``, with a token that resumes after them.

        AIP-158 lets a page be shorter than asked: a caller that cannot send a
        whole page (a message size limit) sends the start of it instead.
        """
        return self._tokens.first(page, count)

    async def update(
        self, user_id: str, *, name: str = "", email: str = "", etag: str = ""
    ) -> User:
        """Change a user's name and/or email; empty values keep the stored ones.

        With an ``etag`` the update applies only if the user has not changed
        since that etag was read; without one the last writer wins.

        Raises:
            UserNotFound: no such user, or an id no user could have (see check_id).
            InvalidField: a new value breaks a rule.
            EmailAlreadyExists: the new email belongs to another user.
            StaleVersion: the etag is out of date (without an etag: only after
                losing the race to other writers many times in a row).
            WriteConflict: the store kept refusing the write because of concurrent ones.
        """
        expected = self._expected_version(etag)
        for _ in range(_MAX_UPDATE_ATTEMPTS):
            current = await self.get(user_id)
            if expected is not None and expected != current.version:
                raise StaleVersion(user_id)
            updated = replace(
                current,
                name=normalise_name(name) if name else current.name,
                email=normalise_email(email) if email else current.email,
                version=current.version + 1,
                update_time=self._clock(),
            )
            # Checked against the version read above, so a concurrent update in
            # between makes this one fail instead of silently undoing it.
            try:
                await self._store.replace(updated, expected_version=current.version)
            except StaleVersion:
                if expected is not None:
                    raise
                # No etag: last writer wins, so re-read and apply our fields on top.
                continue
            return updated
        raise StaleVersion(user_id)

    async def delete(self, user_id: str, *, etag: str = "") -> None:
        """Delete a user, optionally only if it still matches ``etag``.

        Raises:
            UserNotFound: no such user, or an id no user could have (see check_id).
            StaleVersion: the etag is out of date.
            WriteConflict: the store kept refusing the write because of concurrent ones.
        """
        expected = self._expected_version(etag)
        await self._store.remove(check_id(user_id), expected_version=expected)

    @staticmethod
    def _expected_version(etag: str) -> int | None:
        if not etag:
            return None
        version = parse_etag(etag)
        if version is None:
            # An etag we never issued cannot match the current user, but a
            # missing user is still NOT_FOUND: let the store decide which.
            return _NEVER_ISSUED_VERSION
        return version
