"""One contract for every UserStore adapter, plus what only SQLite promises."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from people.domain.directory import UserDirectory
from people.domain.errors import (
    EmailAlreadyExists,
    StaleVersion,
    StoreFailure,
    StoreUnavailable,
    UserNotFound,
)
from people.domain.model import User, normalise_email
from people.domain.ports import UserStore
from people.store import open_store
from people.store.memory import MemoryStore
from people.store.postgres import PostgresStore
from people.store.sqlite import SQLiteStore
from people.store.sqlite_schema import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from tests.postgres import PostgresServer

START = datetime(2024, 5, 17, 12, 0, 0, 123456, tzinfo=UTC)
#: The SQLite schema as people 0.1 created it (user_version 1), for the migration test.
SQLITE_SCHEMA_V1 = (
    "CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,"
    " email_key TEXT NOT NULL, version INTEGER NOT NULL, create_time_us INTEGER NOT NULL,"
    " update_time_us INTEGER NOT NULL)",
    "CREATE UNIQUE INDEX users_email_key ON users (email_key)",
    "CREATE INDEX users_creation_order ON users (create_time_us, id)",
)


def make_user(
    n: int, *, email: str | None = None, created: datetime | None = None, user_id: str = ""
) -> User:
    """A valid user whose create_time is ``n`` milliseconds after START unless given."""
    moment = created if created is not None else START + timedelta(milliseconds=n)
    return User(
        id=user_id or str(uuid.uuid4()),
        name=f"user {n}",
        email=normalise_email(email or f"user{n}@example.com"),
        version=1,
        create_time=moment,
        update_time=moment,
    )


async def add_all(store: UserStore, count: int) -> list[User]:
    """Add ``count`` users with increasing create_time and return them."""
    users = [make_user(n) for n in range(count)]
    for user in users:
        await store.add(user)
    return users


class TestAddAndGet:
    """add stores a user that get returns unchanged."""

    async def test_round_trip(self, store: UserStore) -> None:
        """Every field, including microsecond timestamps, survives add then get."""
        user = make_user(1)
        await store.add(user)
        assert await store.get(user.id) == user

    async def test_non_utc_times_are_the_same_instant(self, store: UserStore) -> None:
        """A timestamp in another zone comes back as the same instant."""
        moment = datetime(2024, 1, 1, 9, 30, tzinfo=UTC).astimezone()
        user = make_user(1, created=moment)
        await store.add(user)
        assert (await store.get(user.id)).create_time == moment

    async def test_unicode_round_trip(self, store: UserStore) -> None:
        """Non-ASCII names and emails are stored faithfully."""
        user = replace(make_user(1, email="用户@例子.广告"), name="Ада 李")
        await store.add(user)
        assert await store.get(user.id) == user

    async def test_unknown_id(self, store: UserStore) -> None:
        """get of an unknown id raises UserNotFound with that id."""
        with pytest.raises(UserNotFound) as caught:
            await store.get("missing")
        assert caught.value.user_id == "missing"

    async def test_sql_looking_ids_are_just_ids(self, store: UserStore) -> None:
        """An id full of SQL is looked up literally."""
        await store.add(make_user(1))
        with pytest.raises(UserNotFound):
            await store.get("' OR '1'='1")

    async def test_duplicate_email(self, store: UserStore) -> None:
        """A second user with the same email raises EmailAlreadyExists carrying the email."""
        await store.add(make_user(1, email="ada@example.com"))
        with pytest.raises(EmailAlreadyExists) as caught:
            await store.add(make_user(2, email="ada@example.com"))
        assert caught.value.email == "ada@example.com"

    async def test_duplicate_email_in_another_case(self, store: UserStore) -> None:
        """Emails that differ only in letter case collide (the key is casefolded)."""
        await store.add(make_user(1, email="ada@example.com"))
        with pytest.raises(EmailAlreadyExists):
            await store.add(make_user(2, email="Ada@Example.com"))
        assert len(await store.list_page(after=None, limit=10)) == 1


class TestListPage:
    """list_page returns users ordered by (create_time, id), resuming after a cursor."""

    async def test_empty(self, store: UserStore) -> None:
        """An empty store lists nothing."""
        assert await store.list_page(after=None, limit=10) == []

    async def test_creation_order(self, store: UserStore) -> None:
        """Users come back by create_time, not by the order they were added."""
        users = [make_user(n) for n in range(8)]
        for user in reversed(users):
            await store.add(user)
        assert await store.list_page(after=None, limit=100) == users

    async def test_ties_are_broken_by_id(self, store: UserStore) -> None:
        """Users created at the same instant are ordered by id."""
        ids = sorted(str(uuid.uuid4()) for _ in range(5))
        users = [make_user(n, created=START, user_id=ids[n]) for n in range(5)]
        for user in reversed(users):
            await store.add(user)
        assert await store.list_page(after=None, limit=100) == users

    async def test_limit(self, store: UserStore) -> None:
        """At most ``limit`` users are returned."""
        users = await add_all(store, 5)
        assert await store.list_page(after=None, limit=3) == users[:3]

    async def test_cursor_resumes_after_the_user(self, store: UserStore) -> None:
        """A cursor made of a user's (create_time, id) resumes with the next user."""
        users = await add_all(store, 5)
        cursor = (users[1].create_time, users[1].id)
        assert await store.list_page(after=cursor, limit=10) == users[2:]

    async def test_cursor_of_a_tie(self, store: UserStore) -> None:
        """A cursor in the middle of same-instant users skips only those up to it."""
        ids = sorted(str(uuid.uuid4()) for _ in range(4))
        users = [make_user(n, created=START, user_id=ids[n]) for n in range(4)]
        for user in users:
            await store.add(user)
        assert await store.list_page(after=(START, ids[1]), limit=10) == users[2:]

    async def test_cursor_of_a_deleted_user(self, store: UserStore) -> None:
        """A cursor still works after its user was removed."""
        users = await add_all(store, 5)
        await store.remove(users[2].id, expected_version=None)
        cursor = (users[2].create_time, users[2].id)
        assert await store.list_page(after=cursor, limit=10) == users[3:]

    async def test_cursor_past_the_end(self, store: UserStore) -> None:
        """A cursor after the last user gives an empty page."""
        users = await add_all(store, 3)
        assert await store.list_page(after=(users[-1].create_time, users[-1].id), limit=5) == []


class TestReplace:
    """replace overwrites a user only at the expected version."""

    async def test_overwrites(self, store: UserStore) -> None:
        """A replace at the stored version is read back."""
        user = make_user(1)
        await store.add(user)
        changed = replace(
            user,
            name="New",
            email="new@example.com",
            version=2,
            update_time=user.update_time + timedelta(seconds=1),
        )
        await store.replace(changed, expected_version=1)
        assert await store.get(user.id) == changed

    async def test_frees_the_old_email(self, store: UserStore) -> None:
        """After an email change, the old email can be added again."""
        user = make_user(1, email="old@example.com")
        await store.add(user)
        await store.replace(replace(user, email="new@example.com", version=2), expected_version=1)
        await store.add(make_user(2, email="old@example.com"))

    async def test_keeps_own_email_in_another_case(self, store: UserStore) -> None:
        """Changing only the letter case of one's own email is not a conflict."""
        user = make_user(1, email="ada@example.com")
        await store.add(user)
        await store.replace(replace(user, email="ADA@example.com", version=2), expected_version=1)
        assert (await store.get(user.id)).email == "ADA@example.com"

    async def test_stale_version(self, store: UserStore) -> None:
        """A replace at another version raises StaleVersion and changes nothing."""
        user = make_user(1)
        await store.add(user)
        with pytest.raises(StaleVersion):
            await store.replace(replace(user, name="New", version=3), expected_version=2)
        assert await store.get(user.id) == user

    async def test_unknown_user(self, store: UserStore) -> None:
        """Replacing a user that does not exist raises UserNotFound."""
        with pytest.raises(UserNotFound):
            await store.replace(make_user(1), expected_version=1)

    async def test_taken_email(self, store: UserStore) -> None:
        """Taking another user's email (in any case) raises EmailAlreadyExists."""
        ada = make_user(1, email="ada@example.com")
        await store.add(ada)
        await store.add(make_user(2, email="bob@example.com"))
        with pytest.raises(EmailAlreadyExists):
            await store.replace(
                replace(ada, email="BOB@example.com", version=2), expected_version=1
            )
        assert await store.get(ada.id) == ada


class TestRemove:
    """remove deletes a user, checking the version when one is given."""

    async def test_without_version(self, store: UserStore) -> None:
        """Without an expected version the user is removed whatever its version."""
        user = make_user(1)
        await store.add(user)
        await store.remove(user.id, expected_version=None)
        with pytest.raises(UserNotFound):
            await store.get(user.id)

    async def test_with_the_current_version(self, store: UserStore) -> None:
        """With the stored version the user is removed and its email freed."""
        user = make_user(1, email="ada@example.com")
        await store.add(user)
        await store.remove(user.id, expected_version=1)
        await store.add(make_user(2, email="Ada@example.com"))

    async def test_with_a_stale_version(self, store: UserStore) -> None:
        """With another version it raises StaleVersion and the user stays."""
        user = make_user(1)
        await store.add(user)
        with pytest.raises(StaleVersion):
            await store.remove(user.id, expected_version=5)
        assert await store.get(user.id) == user

    @pytest.mark.parametrize("expected", [None, 1])
    async def test_unknown_user(self, store: UserStore, expected: int | None) -> None:
        """Removing an unknown id raises UserNotFound, with or without a version."""
        with pytest.raises(UserNotFound):
            await store.remove("missing", expected_version=expected)

    async def test_leaves_others(self, store: UserStore) -> None:
        """Only the named user disappears."""
        users = await add_all(store, 3)
        await store.remove(users[1].id, expected_version=None)
        assert await store.list_page(after=None, limit=10) == [users[0], users[2]]


class TestCount:
    """count says how many users the store holds."""

    async def test_follows_adds_and_removes(self, store: UserStore) -> None:
        """count is 0 when empty, then follows adds, batch adds and removes."""
        assert await store.count() == 0
        users = await add_all(store, 3)
        await store.add_many([make_user(n) for n in range(3, 5)])
        assert await store.count() == 5
        await store.remove(users[0].id, expected_version=None)
        assert await store.count() == 4


class TestPing:
    """ping reports whether the store answers."""

    async def test_answers(self, store: UserStore) -> None:
        """An open store answers True."""
        assert await store.ping() is True


class TestDirectoryOverStore:
    """UserDirectory's concurrency promises hold on every store."""

    async def test_updates_without_etag_all_apply(self, store: UserStore) -> None:
        """Concurrent updates without an etag all succeed and none undoes another's field."""
        directory = UserDirectory(store)
        user = await directory.create(name="Ada", email="ada@example.com")
        results = await asyncio.gather(
            directory.update(user.id, name="Ada King"),
            directory.update(user.id, email="king@example.com"),
            *(directory.update(user.id) for _ in range(8)),
        )
        assert all(isinstance(result, User) for result in results)
        final = await directory.get(user.id)
        assert (final.name, final.email, final.version) == ("Ada King", "king@example.com", 11)

    async def test_updates_with_one_etag_have_one_winner(self, store: UserStore) -> None:
        """Of concurrent updates carrying the same etag, exactly one applies."""
        directory = UserDirectory(store)
        user = await directory.create(name="Ada", email="ada@example.com")
        results = await asyncio.gather(
            *(directory.update(user.id, name=f"v{n}", etag=user.etag) for n in range(10)),
            return_exceptions=True,
        )
        winners = [result for result in results if isinstance(result, User)]
        assert len(winners) == 1
        assert all(isinstance(r, StaleVersion) for r in results if not isinstance(r, User))
        assert await directory.get(user.id) == winners[0]


class TestSigningKey:
    """Each database keeps one secret key, so every process that opens it signs alike."""

    async def test_a_key_of_its_own(self, store: UserStore) -> None:
        """Every store has a key of 32 random bytes."""
        assert len(store.signing_key()) == 32

    async def test_sqlite_keeps_it_across_reopens_and_processes(self, tmp_path: Path) -> None:
        """Stores on one file share the key, after a restart too; another file has another key."""
        first = await SQLiteStore.open(tmp_path / "people.db")
        second = await SQLiteStore.open(tmp_path / "people.db")
        await first.aclose()
        reopened = await SQLiteStore.open(tmp_path / "people.db")
        elsewhere = await SQLiteStore.open(tmp_path / "other.db")
        try:
            assert first.signing_key() == second.signing_key() == reopened.signing_key()
            assert elsewhere.signing_key() != first.signing_key()
        finally:
            for store in (second, reopened, elsewhere):
                await store.aclose()

    @pytest.mark.postgres
    async def test_postgres_shares_it_between_replicas(
        self, postgres_server: PostgresServer
    ) -> None:
        """Replicas on one PostgreSQL database share the key; another database has another."""
        url = await postgres_server.create_database()
        replicas = [await PostgresStore.open(url) for _ in range(2)]
        elsewhere = await PostgresStore.open(await postgres_server.create_database())
        try:
            assert replicas[0].signing_key() == replicas[1].signing_key()
            assert elsewhere.signing_key() != replicas[0].signing_key()
        finally:
            for store in (*replicas, elsewhere):
                await store.aclose()

    async def test_page_tokens_outlive_a_restart(self, tmp_path: Path) -> None:
        """A page token from one server process resumes the listing on the next one."""
        path = tmp_path / "people.db"
        before = await SQLiteStore.open(path)
        users = await add_all(before, 5)
        page = await UserDirectory(before).list_page(page_size=2, page_token="")
        await before.aclose()
        after = await SQLiteStore.open(path)
        try:
            rest = await UserDirectory(after).list_page(
                page_size=10, page_token=page.next_page_token
            )
            assert [user.id for user in rest.users] == [user.id for user in users[2:]]
        finally:
            await after.aclose()


class TestOpenStore:
    """open_store chooses the adapter from a database URL."""

    async def test_memory(self) -> None:
        """memory:// opens an empty in-memory store."""
        store = await open_store("memory://")
        assert isinstance(store, MemoryStore)
        await store.aclose()

    async def test_sqlite(self, tmp_path: Path) -> None:
        """sqlite:////absolute/path opens (and creates) that file."""
        path = tmp_path / "people.db"
        store = await open_store(f"sqlite:///{path}")
        assert isinstance(store, SQLiteStore)
        await store.aclose()
        assert path.exists()


class TestSQLite:
    """What only the SQLite store promises: durability, atomic uniqueness, clean errors."""

    async def test_survives_reopening(self, tmp_path: Path) -> None:
        """Users, updates and deletes are all there after closing and reopening the file."""
        path = tmp_path / "people.db"
        store = await SQLiteStore.open(path)
        users = await add_all(store, 3)
        updated = replace(users[0], name="changed", version=2)
        await store.replace(updated, expected_version=1)
        await store.remove(users[1].id, expected_version=None)
        await store.aclose()

        reopened = await SQLiteStore.open(path)
        try:
            assert await reopened.list_page(after=None, limit=10) == [updated, users[2]]
            with pytest.raises(EmailAlreadyExists):
                await reopened.add(make_user(9, email=users[2].email.upper()))
        finally:
            await reopened.aclose()

    async def test_uses_wal(self, tmp_path: Path) -> None:
        """The file is in WAL journal mode."""
        path = tmp_path / "people.db"
        store = await SQLiteStore.open(path)
        await store.aclose()
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        db.close()

    async def test_one_winner_among_racing_creates(self, tmp_path: Path) -> None:
        """Of 20 concurrent creates with one email in different cases, exactly one succeeds."""
        store = await SQLiteStore.open(tmp_path / "people.db")
        directory = UserDirectory(store)
        emails = [
            "".join(c.upper() if (n >> i) & 1 else c for i, c in enumerate("racer@example.com"))
            for n in range(20)
        ]
        assert len(set(emails)) == 20
        try:
            results = await asyncio.gather(
                *(directory.create(name=f"racer {n}", email=e) for n, e in enumerate(emails)),
                return_exceptions=True,
            )
            winners = [result for result in results if isinstance(result, User)]
            losers = [result for result in results if not isinstance(result, User)]
            assert len(winners) == 1
            assert all(isinstance(loser, EmailAlreadyExists) for loser in losers)
            assert await store.list_page(after=None, limit=100) == winners
        finally:
            await store.aclose()

    async def test_not_a_database(self, tmp_path: Path) -> None:
        """A file that is not a database gives StoreUnavailable with SQLite's reason (for the
        operator starting the server), not an sqlite3 error."""
        path = tmp_path / "notes.txt"
        path.write_bytes(b"this is not a database, just some text\n" * 200)
        with pytest.raises(StoreUnavailable) as caught:
            await SQLiteStore.open(path)
        assert isinstance(caught.value.__cause__, sqlite3.Error)
        assert caught.value.message == "cannot open the SQLite database: file is not a database"

    async def test_closed_store(self, tmp_path: Path) -> None:
        """A closed store raises StoreUnavailable and reports itself unhealthy."""
        store = await SQLiteStore.open(tmp_path / "people.db")
        await store.aclose()
        with pytest.raises(StoreUnavailable):
            await store.get("x")
        assert await store.ping() is False

    async def test_lost_table(self, tmp_path: Path) -> None:
        """When the table disappears, calls raise StoreFailure (a bug, not an outage) and ping
        answers False."""
        path = tmp_path / "people.db"
        store = await SQLiteStore.open(path)
        try:
            with sqlite3.connect(path) as db:
                db.execute("DROP TABLE users")
            db.close()
            with pytest.raises(StoreFailure):
                await store.list_page(after=None, limit=1)
            assert await store.ping() is False
        finally:
            await store.aclose()

    async def test_missing_directory(self, tmp_path: Path) -> None:
        """A path inside a directory that does not exist gives StoreUnavailable."""
        with pytest.raises(StoreUnavailable):
            await SQLiteStore.open(tmp_path / "no" / "such" / "people.db")

    async def test_migrates_a_version_one_file(self, tmp_path: Path) -> None:
        """A file made by people's first schema is migrated in place and keeps its users."""
        path = tmp_path / "people.db"
        user = make_user(1)
        with sqlite3.connect(path) as db:
            for statement in SQLITE_SCHEMA_V1:
                db.execute(statement)
            db.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?, 1, 1715947200123456, 1715947200123456)",
                (user.id, user.name, user.email, user.email_key),
            )
            db.execute("PRAGMA user_version = 1")
        db.close()
        store = await SQLiteStore.open(path)
        try:
            assert (await store.get(user.id)).email == user.email
            assert store.signing_key()
        finally:
            await store.aclose()
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA user_version").fetchone() == (SQLITE_SCHEMA_VERSION,)
        db.close()

    async def test_newer_schema(self, tmp_path: Path) -> None:
        """A database written by a newer people is refused with StoreUnavailable."""
        path = tmp_path / "people.db"
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA user_version = 99")
        db.close()
        with pytest.raises(StoreUnavailable, match="newer"):
            await SQLiteStore.open(path)
