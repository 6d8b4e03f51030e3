"""UserDirectory: the use cases of the directory, on top of any UserStore.

No gRPC and no SQL here: requests arrive as plain strings, results leave as
:class:`people.domain.model.User`, and every failure is a
:mod:`people.domain.errors` error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from people.domain.errors import EmailAlreadyExists, InvalidField, StaleVersion, UserNotFound
from people.domain.filtering import parse_query
from people.domain.ids import new_user_id
from people.domain.model import (
    User,
    check_id,
    email_key,
    normalise_email,
    normalise_name,
    parse_etag,
)
from people.domain.paging import Page, PageTokens
from people.domain.ports import MAX_BATCH, Cursor, UserStore

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
        new_id: Callable[[], str] = new_user_id,
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

    async def create_many(
        self,
        entries: Sequence[tuple[str, str]],
        *,
        before_write: Callable[[list[User]], None] | None = None,
    ) -> list[User]:
        """Create a user for each ``(name, email)``, all in one transaction (AIP-233).

        All or nothing: if any entry fails, no user is created. Errors name the
        entry as ``requests[i]``, counted from 0.

        Args:
            entries: The users to create, in order.
            before_write: Called with the users once they are valid, before
                anything is stored; whatever it raises fails the call with
                nothing written (the API checks that its answer will fit).

        Raises:
            InvalidField: more than 1000 entries, or an entry's name or email
                breaks a rule (field ``requests[i].name`` or ``requests[i].email``).
            EmailAlreadyExists: an entry's email is taken, in the store or by an
                earlier entry (compared case-insensitively); ``index`` is i.
        """
        _check_batch_size("requests", len(entries))
        users: list[User] = []
        first_with: dict[str, int] = {}
        for index, (name, email) in enumerate(entries):
            try:
                valid_name, valid_email = normalise_name(name), normalise_email(email)
            except InvalidField as exc:
                raise InvalidField(f"requests[{index}].{exc.field}", exc.reason) from exc
            now = self._clock()
            if users and now <= users[-1].create_time:
                # Strictly after the entry before: creation order is request order.
                now = users[-1].create_time + timedelta(microseconds=1)
            user = User(
                id=self._new_id(),
                name=valid_name,
                email=valid_email,
                version=1,
                create_time=now,
                update_time=now,
            )
            earlier = first_with.setdefault(user.email_key, index)
            if earlier != index:
                raise EmailAlreadyExists(
                    user.email, index=index, reason=f"requests[{earlier}] has it too"
                )
            users.append(user)
        if before_write is not None:
            before_write(users)
        try:
            await self._store.add_many(users)
        except EmailAlreadyExists as exc:
            failed = first_with.get(email_key(exc.email))
            raise EmailAlreadyExists(exc.email, index=failed) from exc
        return users

    async def get(self, user_id: str) -> User:
        """Return one user.

        Raises:
            UserNotFound: no such user, or an id no user could have (see check_id).
            InvalidField: the id is empty.
        """
        return await self._store.get(check_id(user_id))

    async def get_many(self, user_ids: Sequence[str]) -> list[User]:
        """The users with these ids, in the order asked (AIP-231); repeated ids repeat.

        Raises:
            InvalidField: more than 1000 ids, or an empty one (field ``ids[i]``).
            UserNotFound: the first id, in the order asked, that no user has.
        """
        _check_batch_size("ids", len(user_ids))
        wanted: list[str] = []
        for index, user_id in enumerate(user_ids):
            try:
                wanted.append(check_id(user_id))
            except InvalidField as exc:
                raise InvalidField(f"ids[{index}]", exc.reason) from exc
        found = {user.id: user for user in await self._store.get_many(list(dict.fromkeys(wanted)))}
        for user_id in wanted:
            if user_id not in found:
                raise UserNotFound(user_id)
        return [found[user_id] for user_id in wanted]

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

    async def list_page(
        self, *, page_size: int, page_token: str, filter: str = "", order_by: str = ""
    ) -> Page:
        """Return one page of the users ``filter`` matches, in ``order_by``'s order.

        AIP-158 paging with AIP-132's filter and order_by; see
        :mod:`people.domain.filtering` for both languages.

        Args:
            page_size: 0 means the default (50); larger than 1000 is clamped.
            page_token: Empty for the first page, else a previous ``next_page_token``
                from a call with the same filter and order_by.
            filter: Empty for every user.
            order_by: Empty for creation order.

        Raises:
            InvalidField: the page size is negative, the filter or order_by is
                malformed, or the token was not issued here for this filter and order.
        """
        if page_size < 0:
            raise InvalidField("page_size", "must not be negative")
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        query = parse_query(filter, order_by)
        after = self._tokens.cursor(page_token, query) if page_token else None
        # One extra row tells whether another page follows without a second query.
        users = await self._store.list_page(after=after, limit=limit + 1, query=query)
        if len(users) <= limit:
            return Page(users, "", query)
        users = users[:limit]
        return Page(users, self._tokens.after(users[-1], query), query)

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


def _check_batch_size(field: str, count: int) -> None:
    if count > MAX_BATCH:
        raise InvalidField(field, f"at most {MAX_BATCH} per call, not {count}")
