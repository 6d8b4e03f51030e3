"""The rules of UserDirectory, on the real in-memory store."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from people.domain.directory import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, UserDirectory
from people.domain.errors import EmailAlreadyExists, InvalidField, StaleVersion, UserNotFound
from people.domain.model import User, format_etag
from people.domain.paging import PageTokens
from people.store.memory import MemoryStore

START = datetime(2024, 1, 1, tzinfo=UTC)


class TickingClock:
    """A clock that moves one millisecond forward every time it is read."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@pytest.fixture
def store() -> MemoryStore:
    """An empty memory store."""
    return MemoryStore()


@pytest.fixture
def directory(store: MemoryStore) -> UserDirectory:
    """A directory on the empty memory store with a deterministic clock."""
    return UserDirectory(store, clock=TickingClock())


async def populate(directory: UserDirectory, count: int) -> list[User]:
    """Create ``count`` users named user-0, user-1, ... and return them in creation order."""
    return [
        await directory.create(name=f"user-{n}", email=f"user{n}@example.com") for n in range(count)
    ]


async def all_users(directory: UserDirectory) -> list[User]:
    """Every user, from every batch of a scan."""
    return [user async for batch in directory.scan() for user in batch]


async def walk(directory: UserDirectory, page_size: int) -> list[User]:
    """Collect every user by following next_page_token to the end."""
    seen: list[User] = []
    token = ""
    while True:
        page = await directory.list_page(page_size=page_size, page_token=token)
        seen.extend(page.users)
        if not page.next_page_token:
            return seen
        token = page.next_page_token


def signed_token(key: bytes, payload: bytes) -> str:
    """A token around an arbitrary payload, signed with ``key`` as the server signs."""
    mac = hmac.digest(key, payload, hashlib.sha256)[:16]
    return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")


def unkeyed_token(payload: bytes) -> str:
    """A token as people once checked them: an unkeyed hash anyone can recompute."""
    check = hashlib.blake2b(payload, digest_size=8, person=b"people-page").digest()
    return base64.urlsafe_b64encode(check + payload).decode().rstrip("=")


class TestCreate:
    """create validates, normalises and stores a new user."""

    async def test_returns_a_new_user(self, directory: UserDirectory) -> None:
        """A created user has a UUID4 id, version 1 and equal create and update times."""
        user = await directory.create(name="  Ada ", email="Ada@Example.com")
        assert uuid.UUID(user.id).version == 4
        assert (user.name, user.email, user.version) == ("Ada", "Ada@example.com", 1)
        assert user.create_time == user.update_time
        assert user.etag == format_etag(1)

    async def test_ids_are_unique(self, directory: UserDirectory) -> None:
        """Every create gets a different id."""
        users = await populate(directory, 20)
        assert len({user.id for user in users}) == 20

    async def test_rejects_an_invalid_name(self, directory: UserDirectory) -> None:
        """An empty name is an InvalidField naming `name`, and nothing is stored."""
        with pytest.raises(InvalidField) as caught:
            await directory.create(name=" ", email="ada@example.com")
        assert caught.value.field == "name"
        assert await all_users(directory) == []

    async def test_rejects_an_invalid_email(self, directory: UserDirectory) -> None:
        """A malformed email is an InvalidField naming `email`."""
        with pytest.raises(InvalidField) as caught:
            await directory.create(name="Ada", email="not-an-email")
        assert caught.value.field == "email"

    async def test_rejects_a_taken_email_in_any_case(self, directory: UserDirectory) -> None:
        """An email that differs from a stored one only in case is taken."""
        await directory.create(name="Ada", email="ada@example.com")
        with pytest.raises(EmailAlreadyExists):
            await directory.create(name="Other Ada", email="ADA@EXAMPLE.COM")


class TestGet:
    """get returns one user by id."""

    async def test_returns_the_stored_user(self, directory: UserDirectory) -> None:
        """A created user reads back equal."""
        user = await directory.create(name="Ada", email="ada@example.com")
        assert await directory.get(user.id) == user

    async def test_unknown_id(self, directory: UserDirectory) -> None:
        """An unknown id raises UserNotFound carrying the id and the seed's message."""
        with pytest.raises(UserNotFound) as caught:
            await directory.get("nope")
        assert caught.value.user_id == "nope"
        assert caught.value.message == "User with ID nope not found"

    async def test_empty_id(self, directory: UserDirectory) -> None:
        """An empty id is an InvalidField naming `id`."""
        with pytest.raises(InvalidField) as caught:
            await directory.get("")
        assert caught.value.field == "id"


class TestScan:
    """scan returns everyone in creation order, in batches."""

    async def test_empty(self, directory: UserDirectory) -> None:
        """An empty directory lists no users."""
        assert await all_users(directory) == []

    async def test_creation_order(self, directory: UserDirectory) -> None:
        """Users come back in the order they were created."""
        users = await populate(directory, 30)
        assert await all_users(directory) == users

    async def test_more_than_one_scan_batch(self, directory: UserDirectory) -> None:
        """Directories larger than one internal batch are listed completely."""
        users = await populate(directory, MAX_PAGE_SIZE + 5)
        assert [user.id for user in await all_users(directory)] == [user.id for user in users]
        assert [len(batch) async for batch in directory.scan()] == [1000, MAX_PAGE_SIZE + 5 - 1000]


class TestUpdate:
    """update changes the fields given and keeps the rest."""

    async def test_empty_fields_keep_their_values(self, directory: UserDirectory) -> None:
        """Updating with empty name and email changes neither."""
        user = await directory.create(name="Ada", email="ada@example.com")
        updated = await directory.update(user.id)
        assert (updated.name, updated.email) == ("Ada", "ada@example.com")

    async def test_changes_only_the_name(self, directory: UserDirectory) -> None:
        """A new name replaces the old one and the email stays."""
        user = await directory.create(name="Ada", email="ada@example.com")
        updated = await directory.update(user.id, name=" Ada King ")
        assert (updated.name, updated.email) == ("Ada King", "ada@example.com")
        assert await directory.get(user.id) == updated

    async def test_changes_only_the_email(self, directory: UserDirectory) -> None:
        """A new email replaces the old one, normalised, and the name stays."""
        user = await directory.create(name="Ada", email="ada@example.com")
        updated = await directory.update(user.id, email="ada@Analytical.Engine")
        assert (updated.name, updated.email) == ("Ada", "ada@analytical.engine")

    async def test_version_and_update_time_advance(self, directory: UserDirectory) -> None:
        """Each update adds one to the version, moves update_time and keeps create_time."""
        user = await directory.create(name="Ada", email="ada@example.com")
        first = await directory.update(user.id, name="Ada 2")
        second = await directory.update(user.id, name="Ada 3")
        assert (first.version, second.version) == (2, 3)
        assert user.update_time < first.update_time < second.update_time
        assert first.create_time == second.create_time == user.create_time
        assert second.etag != first.etag != user.etag

    async def test_old_email_is_freed(self, directory: UserDirectory) -> None:
        """After changing email, the old address can be used by someone else."""
        user = await directory.create(name="Ada", email="ada@example.com")
        await directory.update(user.id, email="ada@new.example.com")
        other = await directory.create(name="Other", email="ada@example.com")
        assert other.email == "ada@example.com"

    async def test_own_email_in_another_case(self, directory: UserDirectory) -> None:
        """A user may change the letter case of their own email."""
        user = await directory.create(name="Ada", email="ada@example.com")
        updated = await directory.update(user.id, email="ADA@example.com")
        assert updated.email == "ADA@example.com"

    async def test_taken_email(self, directory: UserDirectory) -> None:
        """Changing to another user's email raises EmailAlreadyExists and changes nothing."""
        ada = await directory.create(name="Ada", email="ada@example.com")
        await directory.create(name="Bob", email="bob@example.com")
        with pytest.raises(EmailAlreadyExists):
            await directory.update(ada.id, email="Bob@Example.com")
        assert await directory.get(ada.id) == ada

    async def test_invalid_name(self, directory: UserDirectory) -> None:
        """A name with a control character is rejected and nothing changes."""
        ada = await directory.create(name="Ada", email="ada@example.com")
        with pytest.raises(InvalidField) as caught:
            await directory.update(ada.id, name="A\x00da")
        assert caught.value.field == "name"
        assert await directory.get(ada.id) == ada

    async def test_unknown_user(self, directory: UserDirectory) -> None:
        """Updating an unknown id raises UserNotFound."""
        with pytest.raises(UserNotFound):
            await directory.update("nope", name="Ada")

    async def test_current_etag_applies(self, directory: UserDirectory) -> None:
        """An update carrying the current etag succeeds."""
        user = await directory.create(name="Ada", email="ada@example.com")
        updated = await directory.update(user.id, name="Ada King", etag=user.etag)
        assert updated.version == 2

    async def test_stale_etag(self, directory: UserDirectory) -> None:
        """An update carrying an etag from before another update raises StaleVersion."""
        user = await directory.create(name="Ada", email="ada@example.com")
        await directory.update(user.id, name="First", etag=user.etag)
        with pytest.raises(StaleVersion) as caught:
            await directory.update(user.id, name="Second", etag=user.etag)
        assert caught.value.user_id == user.id
        assert (await directory.get(user.id)).name == "First"

    @pytest.mark.parametrize("etag", ["garbage", 'W/"x"', '"1"', 'W/"99"'])
    async def test_garbage_etag(self, directory: UserDirectory, etag: str) -> None:
        """An etag that was never issued for this user raises StaleVersion."""
        user = await directory.create(name="Ada", email="ada@example.com")
        with pytest.raises(StaleVersion):
            await directory.update(user.id, name="Other", etag=etag)
        assert await directory.get(user.id) == user

    @pytest.mark.parametrize("etag", ["garbage", 'W/"1"'])
    async def test_unknown_user_with_an_etag(self, directory: UserDirectory, etag: str) -> None:
        """A missing user is UserNotFound even when the etag is also wrong."""
        with pytest.raises(UserNotFound):
            await directory.update("nope", name="Ada", etag=etag)


class TestDelete:
    """delete removes a user, optionally only at a given etag."""

    async def test_removes_the_user(self, directory: UserDirectory) -> None:
        """A deleted user can no longer be read, and others remain."""
        ada, bob = await populate(directory, 2)
        await directory.delete(ada.id)
        with pytest.raises(UserNotFound):
            await directory.get(ada.id)
        assert await all_users(directory) == [bob]

    async def test_frees_the_email(self, directory: UserDirectory) -> None:
        """After a delete, the email can be used again."""
        user = await directory.create(name="Ada", email="ada@example.com")
        await directory.delete(user.id)
        await directory.create(name="Ada again", email="Ada@example.com")

    async def test_unknown_user(self, directory: UserDirectory) -> None:
        """Deleting an unknown id (or twice) raises UserNotFound."""
        user = await directory.create(name="Ada", email="ada@example.com")
        await directory.delete(user.id)
        with pytest.raises(UserNotFound):
            await directory.delete(user.id)

    async def test_empty_id(self, directory: UserDirectory) -> None:
        """Deleting an empty id is an InvalidField naming `id`."""
        with pytest.raises(InvalidField) as caught:
            await directory.delete("")
        assert caught.value.field == "id"

    async def test_current_etag(self, directory: UserDirectory) -> None:
        """A delete carrying the current etag succeeds."""
        user = await directory.create(name="Ada", email="ada@example.com")
        await directory.delete(user.id, etag=user.etag)
        assert await all_users(directory) == []

    async def test_stale_etag(self, directory: UserDirectory) -> None:
        """A delete carrying an outdated etag raises StaleVersion and keeps the user."""
        user = await directory.create(name="Ada", email="ada@example.com")
        updated = await directory.update(user.id, name="Ada King")
        with pytest.raises(StaleVersion):
            await directory.delete(user.id, etag=user.etag)
        assert await directory.get(user.id) == updated

    async def test_garbage_etag(self, directory: UserDirectory) -> None:
        """A delete carrying a malformed etag raises StaleVersion and keeps the user."""
        user = await directory.create(name="Ada", email="ada@example.com")
        with pytest.raises(StaleVersion):
            await directory.delete(user.id, etag="garbage")
        assert await directory.get(user.id) == user

    @pytest.mark.parametrize("etag", ["garbage", 'W/"1"'])
    async def test_unknown_user_with_an_etag(self, directory: UserDirectory, etag: str) -> None:
        """A missing user is UserNotFound even when the etag is also wrong."""
        with pytest.raises(UserNotFound):
            await directory.delete("nope", etag=etag)


class TestListPage:
    """list_page pages through users in creation order with opaque tokens."""

    async def test_default_page_size(self, directory: UserDirectory) -> None:
        """Page size 0 means 50 users per page."""
        users = await populate(directory, DEFAULT_PAGE_SIZE + 1)
        page = await directory.list_page(page_size=0, page_token="")
        assert page.users == users[:DEFAULT_PAGE_SIZE]
        assert page.next_page_token

    async def test_maximum_page_size(self, directory: UserDirectory) -> None:
        """A page size above 1000 is clamped to 1000."""
        users = await populate(directory, MAX_PAGE_SIZE + 1)
        page = await directory.list_page(page_size=MAX_PAGE_SIZE * 5, page_token="")
        assert len(page.users) == MAX_PAGE_SIZE
        rest = await directory.list_page(page_size=MAX_PAGE_SIZE, page_token=page.next_page_token)
        assert rest.users == users[MAX_PAGE_SIZE:]

    async def test_negative_page_size(self, directory: UserDirectory) -> None:
        """A negative page size is an InvalidField naming `page_size`."""
        with pytest.raises(InvalidField) as caught:
            await directory.list_page(page_size=-1, page_token="")
        assert caught.value.field == "page_size"

    async def test_empty_directory(self, directory: UserDirectory) -> None:
        """An empty directory gives one empty last page."""
        page = await directory.list_page(page_size=10, page_token="")
        assert (page.users, page.next_page_token) == ([], "")

    async def test_exact_fit_has_no_next_page(self, directory: UserDirectory) -> None:
        """When the users exactly fill a page, no next_page_token is issued."""
        users = await populate(directory, 5)
        page = await directory.list_page(page_size=5, page_token="")
        assert (page.users, page.next_page_token) == (users, "")

    @pytest.mark.parametrize("size", [1, 2, 3, 7, 23, 24])
    async def test_visits_every_user_once_in_order(
        self, directory: UserDirectory, size: int
    ) -> None:
        """Following tokens visits each user exactly once, in creation order."""
        users = await populate(directory, 23)
        assert await walk(directory, size) == users

    async def test_created_mid_paging(self, directory: UserDirectory) -> None:
        """Users created between pages cause no duplicate and no skipped earlier user."""
        users = await populate(directory, 10)
        first = await directory.list_page(page_size=4, page_token="")
        late = [
            await directory.create(name=f"late-{n}", email=f"late{n}@example.com") for n in range(3)
        ]
        rest = await walk_from(directory, 4, first.next_page_token)
        seen = [user.id for user in [*first.users, *rest]]
        assert len(seen) == len(set(seen))
        assert seen[: len(users)] == [user.id for user in users]
        assert set(seen) <= {user.id for user in [*users, *late]}

    async def test_deleted_mid_paging(self, directory: UserDirectory) -> None:
        """Deleting users between pages, even the page's last one, skips no other user."""
        users = await populate(directory, 10)
        first = await directory.list_page(page_size=4, page_token="")
        deleted = {first.users[-1].id, users[6].id}
        for user_id in deleted:
            await directory.delete(user_id)
        rest = await walk_from(directory, 4, first.next_page_token)
        seen = [user.id for user in [*first.users, *rest]]
        assert len(seen) == len(set(seen))
        expected = [user.id for user in users if user.id not in deleted or user in first.users]
        assert seen == expected

    async def test_updates_mid_paging(self, directory: UserDirectory) -> None:
        """Updating users between pages does not move them in the order."""
        users = await populate(directory, 6)
        first = await directory.list_page(page_size=3, page_token="")
        await directory.update(users[0].id, name="changed")
        await directory.update(users[4].id, name="changed")
        rest = await walk_from(directory, 3, first.next_page_token)
        assert [user.id for user in [*first.users, *rest]] == [user.id for user in users]

    @settings(max_examples=60, deadline=None)
    @given(
        page_sizes=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=8),
        churn=st.lists(
            st.tuples(st.sampled_from(["create", "delete"]), st.integers(0, 99)), max_size=12
        ),
    )
    async def test_paging_under_churn(
        self, page_sizes: list[int], churn: list[tuple[str, int]]
    ) -> None:
        """Whatever is created or deleted between pages, no user repeats and no survivor is lost."""
        directory = UserDirectory(MemoryStore(), clock=TickingClock())
        original = await populate(directory, 15)
        deleted: set[str] = set()
        seen: list[User] = []
        token = ""
        step = 0
        while True:
            size = page_sizes[step % len(page_sizes)]
            page = await directory.list_page(page_size=size, page_token=token)
            seen.extend(page.users)
            if not page.next_page_token:
                break
            token = page.next_page_token
            if step < len(churn):
                action, n = churn[step]
                if action == "create":
                    await directory.create(name=f"new {step}", email=f"new{step}@example.com")
                else:
                    victims = await all_users(directory)
                    if victims:
                        victim = victims[n % len(victims)]
                        await directory.delete(victim.id)
                        deleted.add(victim.id)
            step += 1
        ids = [user.id for user in seen]
        assert len(ids) == len(set(ids))
        assert [user.create_time for user in seen] == sorted(user.create_time for user in seen)
        survivors = {user.id for user in original} - deleted
        assert survivors <= set(ids)

    @pytest.mark.parametrize("token", ["garbage", "!!!", "é", "AAAA", "a" * 7, "=" * 8])
    async def test_garbage_token(self, directory: UserDirectory, token: str) -> None:
        """A token that was never issued is an InvalidField naming `page_token`."""
        await populate(directory, 3)
        with pytest.raises(InvalidField) as caught:
            await directory.list_page(page_size=1, page_token=token)
        assert caught.value.field == "page_token"

    async def test_tampered_token(self, directory: UserDirectory) -> None:
        """Changing any character of a real token makes it invalid."""
        await populate(directory, 3)
        token = (await directory.list_page(page_size=1, page_token="")).next_page_token
        for index in range(len(token)):
            replacement = "A" if token[index] != "A" else "B"
            tampered = token[:index] + replacement + token[index + 1 :]
            if tampered.rstrip("A") == token.rstrip("A"):
                continue  # only the base64 padding bits changed: same bytes
            with pytest.raises(InvalidField):
                await directory.list_page(page_size=1, page_token=tampered)

    @pytest.mark.parametrize(
        "payload",
        [
            b"null",
            b"1e999",
            b'"ab"',
            b"{}",
            b"[1, 2]",
            b'["2024-01-01T00:00:00", "naive"]',
            b'["2024-01-01T00:00:00+00:00", 7]',
            b'["2024-01-01T00:00:00+00:00", "x", "extra"]',
            b"\xff\xfe",
            b"[" * 100_000,
        ],
    )
    async def test_well_signed_nonsense(
        self, directory: UserDirectory, store: MemoryStore, payload: bytes
    ) -> None:
        """A token signed with the store's key but holding nonsense is an InvalidField."""
        token = signed_token(store.signing_key(), payload)
        with pytest.raises(InvalidField) as caught:
            await directory.list_page(page_size=1, page_token=token)
        assert caught.value.field == "page_token"

    async def test_recomputed_checksum_is_refused(self, directory: UserDirectory) -> None:
        """A token whose check anyone could recompute (no key) is refused."""
        users = await populate(directory, 3)
        payload = f'["{users[0].create_time.isoformat()}","{users[0].id}"]'.encode()
        with pytest.raises(InvalidField):
            await directory.list_page(page_size=1, page_token=unkeyed_token(payload))

    async def test_token_of_another_database_is_refused(self, directory: UserDirectory) -> None:
        """A real token from a directory on another store (another key) is refused here."""
        other = UserDirectory(MemoryStore(), clock=TickingClock())
        await populate(other, 3)
        await populate(directory, 3)
        token = (await other.list_page(page_size=1, page_token="")).next_page_token
        with pytest.raises(InvalidField):
            await directory.list_page(page_size=1, page_token=token)

    async def test_token_round_trip(self, directory: UserDirectory, store: MemoryStore) -> None:
        """A token resumes after exactly the user it was made from."""
        user = await directory.create(name="Ada", email="ada@example.com")
        tokens = PageTokens(store.signing_key())
        assert tokens.cursor(tokens.after(user)) == (user.create_time, user.id)


async def walk_from(directory: UserDirectory, page_size: int, token: str) -> list[User]:
    """Collect the users from ``token`` to the end of the listing."""
    seen: list[User] = []
    while token:
        page = await directory.list_page(page_size=page_size, page_token=token)
        seen.extend(page.users)
        token = page.next_page_token
    return seen
