"""Filters, orders and batches: the same cases on the memory, SQLite and PostgreSQL stores."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from people.domain.directory import UserDirectory
from people.domain.errors import EmailAlreadyExists, InvalidField, StoreFailure
from people.domain.filtering import parse_query
from people.domain.model import User, normalise_email
from people.domain.ports import UserStore
from people.store import postgres_schema
from people.store.postgres import PostgresStore
from people.store.sqlite import SQLiteStore
from tests.test_store_contract import SQLITE_SCHEMA_V1

T0 = datetime(2024, 5, 17, 12, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    """T0 plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def iso(seconds: int) -> str:
    """T0 plus ``seconds`` in RFC 3339."""
    return at(seconds).isoformat().replace("+00:00", "Z")


def uid(n: int) -> str:
    """The id of user number ``n``: ids sort as their numbers do."""
    return f"user-{n:02d}-ab"


#: (name, email, created at T0 + s, updated at T0 + s). Twins share a name and an
#: instant, so their order is decided by id alone.
PEOPLE = [
    ("Ada Lovelace", "ada@example.com", 0, 0),
    ("ada king", "ADA.KING@acme.com", 1, 1),
    ("Grace Hopper", "grace@acme.com", 2, 50),
    ("Alan Turing", "alan@turing.org", 3, 40),
    ("Zoë Ångström", "zoe@example.org", 4, 4),
    ("Straße Müller", "strasse@example.de", 5, 5),
    ("Bob*Star", "bob*star@example.com", 6, 6),
    ("李雷", "li@例子.广告", 7, 7),
    ("Twin", "twin.b@example.net", 8, 8),
    ("Twin", "twin.a@example.net", 8, 8),
]
ALL = [name for name, *_ in PEOPLE]
#: People's names as listed by create_time, then id (twins by id: PEOPLE's order).
BY_CREATION = ALL

#: (filter, order_by, the names listed, in order). Each operator and each order is here.
CASES: list[tuple[str, str, list[str]]] = [
    ("", "", BY_CREATION),
    # Emails: the stored normal form, compared case-insensitively.
    ('email = "ADA@Example.com"', "", ["Ada Lovelace"]),
    ('email = "ada.king@ACME.COM"', "", ["ada king"]),
    ('email = " grace@acme.com "', "", ["Grace Hopper"]),
    ('email = "nobody@example.com"', "", []),
    ('email = "not an address"', "", []),
    ('email != "ada@example.com"', "", ALL[1:]),
    ('email = "*@acme.com"', "", ["ada king", "Grace Hopper"]),
    ('email = "*@ACME.COM"', "", ["ada king", "Grace Hopper"]),
    ('email = "*.org"', "", ["Alan Turing", "Zoë Ångström"]),
    ('email = "ada*"', "", ["Ada Lovelace", "ada king"]),
    ('email = "*example*"', "",
     ["Ada Lovelace", "Zoë Ångström", "Straße Müller", "Bob*Star", "Twin", "Twin"]),
    ('email != "*@example.net"', "", ALL[:8]),
    ('email:"ACME"', "", ["ada king", "Grace Hopper"]),
    ('email = "bob\\*star@example.com"', "", ["Bob*Star"]),
    ('email = "*@例子.广告"', "", ["李雷"]),
    # Names: case-insensitive (casefolded), wildcards at either end, : contains.
    ('name = "ADA LOVELACE"', "", ["Ada Lovelace"]),
    ('name = "Ada"', "", []),
    ('name = "ada*"', "", ["Ada Lovelace", "ada king"]),
    ('name = "*HOPPER"', "", ["Grace Hopper"]),
    ('name = "*ing*"', "", ["ada king", "Alan Turing"]),
    ('name:"love"', "", ["Ada Lovelace"]),
    ('name:"ÅNG"', "", ["Zoë Ångström"]),
    ('name = "strasse*"', "", ["Straße Müller"]),
    ('name = "STRASSE MÜLLER"', "", ["Straße Müller"]),
    ('name = "bob\\*star"', "", ["Bob*Star"]),
    ('name = "bob\\**"', "", ["Bob*Star"]),
    ('name = "李*"', "", ["李雷"]),
    ('name = "*"', "", ALL),
    ('name != "twin"', "", ALL[:8]),
    # Ids: exact.
    (f'id = "{uid(2)}"', "", ["Grace Hopper"]),
    (f'id = "{uid(2).upper()}"', "", []),
    (f'id != "{uid(2)}"', "", ALL[:2] + ALL[3:]),
    ('id = "user-0*"', "", ALL),
    ('id = "*5-ab"', "", ["Straße Müller"]),
    # Times, RFC 3339 in any offset.
    (f'create_time < "{iso(2)}"', "", ALL[:2]),
    (f'create_time <= "{iso(2)}"', "", ALL[:3]),
    (f'create_time > "{iso(6)}"', "", ALL[7:]),
    (f'create_time >= "{iso(6)}"', "", ALL[6:]),
    (f'create_time = "{iso(8)}"', "", ["Twin", "Twin"]),
    (f'create_time != "{iso(8)}"', "", ALL[:8]),
    ('create_time < "2024-05-17T14:00:01+02:00"', "", ALL[:1]),
    (f'update_time > "{iso(10)}"', "", ["Grace Hopper", "Alan Turing"]),
    # AND, OR (binding tighter), NOT, -, parentheses.
    ('name = "ada*" AND email = "*@acme.com"', "", ["ada king"]),
    ('name = "ada*" OR email = "*@acme.com"', "", ["Ada Lovelace", "ada king", "Grace Hopper"]),
    ('email = "*@acme.com" AND name = "grace*" OR name = "ada l*"', "", ["Grace Hopper"]),
    ('(email = "*@acme.com" AND name = "grace*") OR name = "ada l*"', "",
     ["Ada Lovelace", "Grace Hopper"]),
    ('NOT name = "ada*"', "", ALL[2:]),
    ('-name = "ada*" AND -email:"example"', "", ["Grace Hopper", "Alan Turing", "李雷"]),
    ('NOT (name = "ada*" OR name = "twin")', "", ALL[2:8]),
    (f'name = "a*" AND create_time > "{iso(0)}" AND update_time < "{iso(45)}"', "",
     ["ada king", "Alan Turing"]),
    # Orders: ties broken by id, in the same direction.
    ("", "create_time desc", ALL[::-1]),
    ("", "name", ["ada king", "Ada Lovelace", "Alan Turing", "Bob*Star", "Grace Hopper",
                  "Straße Müller", "Twin", "Twin", "Zoë Ångström", "李雷"]),
    ("", "name desc", ["李雷", "Zoë Ångström", "Twin", "Twin", "Straße Müller", "Grace Hopper",
                       "Bob*Star", "Alan Turing", "Ada Lovelace", "ada king"]),
    ("", "email", ["ada king", "Ada Lovelace", "Alan Turing", "Bob*Star", "Grace Hopper",
                   "李雷", "Straße Müller", "Twin", "Twin", "Zoë Ångström"]),
    ("", "update_time desc", ["Grace Hopper", "Alan Turing", "Twin", "Twin", "李雷", "Bob*Star",
                              "Straße Müller", "Zoë Ångström", "ada king", "Ada Lovelace"]),
    ("", "update_time", ["Ada Lovelace", "ada king", "Zoë Ångström", "Straße Müller",
                         "Bob*Star", "李雷", "Twin", "Twin", "Alan Turing", "Grace Hopper"]),
    ('email = "*@acme.com" OR name = "twin"', "name desc", ["Twin", "Twin", "Grace Hopper",
                                                           "ada king"]),
]  # fmt: skip
#: The twins' ids in each order the cases list them: ascending unless the order is desc.
TWIN_IDS = (uid(8), uid(9))


def people() -> list[User]:
    """PEOPLE as users with ids uid(0), uid(1), ..."""
    return [
        User(
            id=uid(n),
            name=name,
            email=normalise_email(email),
            version=1 if created == updated else 2,
            create_time=at(created),
            update_time=at(updated),
        )
        for n, (name, email, created, updated) in enumerate(PEOPLE)
    ]


async def populated(store: UserStore) -> UserDirectory:
    """Add PEOPLE to ``store``; return a directory over it."""
    await store.add_many(people())
    return UserDirectory(store)


async def listed(directory: UserDirectory, filter: str, order_by: str, size: int) -> list[User]:
    """Every user the query lists, page by page, following each token to the end."""
    users: list[User] = []
    token = ""
    while True:
        page = await directory.list_page(
            page_size=size, page_token=token, filter=filter, order_by=order_by
        )
        users.extend(page.users)
        token = page.next_page_token
        if not token:
            return users


class TestFilterCases:
    """Each case lists the same users, in the same order, on every store."""

    @pytest.mark.parametrize(
        ("filter", "order_by", "names"), CASES, ids=[c[0] + "|" + c[1] for c in CASES]
    )
    async def test_case(
        self, store: UserStore, filter: str, order_by: str, names: list[str]
    ) -> None:
        """Listed in one page, and in pages of 3, the case gives exactly its names, in order."""
        directory = await populated(store)
        whole = await listed(directory, filter, order_by, 1000)
        assert [user.name for user in whole] == names
        assert await listed(directory, filter, order_by, 3) == whole
        twins = [user.id for user in whole if user.name == "Twin"]
        if len(twins) == 2 and not order_by.startswith("email"):
            descending = order_by.endswith("desc")
            assert tuple(twins) == (TWIN_IDS[::-1] if descending else TWIN_IDS)


class TestTokensAreBound:
    """A page token resumes only the listing it came from."""

    @pytest.mark.parametrize(
        ("filter", "order_by"),
        [('name = "ada*"', ""), ("", "name"), ("", ""), ('name = "ADA*"', "name desc")],
    )
    async def test_other_query_is_refused(
        self, store: UserStore, filter: str, order_by: str
    ) -> None:
        """A token of `name = "ada*"` by name desc is refused with another filter or order."""
        directory = await populated(store)
        first = await directory.list_page(
            page_size=1, page_token="", filter='name = "ada*"', order_by="name desc"
        )
        token = first.next_page_token
        if (filter, order_by) == ('name = "ADA*"', "name desc"):
            # The same query spelled otherwise: the token resumes it.
            rest = await directory.list_page(
                page_size=5, page_token=token, filter=filter, order_by=order_by
            )
            assert [user.name for user in rest.users] == ["ada king"]
            return
        with pytest.raises(InvalidField) as caught:
            await directory.list_page(
                page_size=1, page_token=token, filter=filter, order_by=order_by
            )
        assert caught.value.field == "page_token"
        assert "another filter or order_by" in caught.value.reason


class TestBatches:
    """add_many stores all of a batch or none of it; get_many finds what exists."""

    async def test_add_many_round_trip(self, store: UserStore) -> None:
        """Every user of a batch is stored with every field."""
        users = people()
        await store.add_many(users)
        assert (
            sorted(await store.get_many([user.id for user in users]), key=lambda u: u.id) == users
        )

    @pytest.mark.parametrize("where", [0, 5, 9])
    async def test_taken_email_stores_nothing(self, store: UserStore, where: int) -> None:
        """A batch with one email already stored (in another case) stores none of its users."""
        batch = people()
        await store.add(replace(batch[where], id="taken", email=batch[where].email.upper()))
        with pytest.raises(EmailAlreadyExists) as caught:
            await store.add_many(batch)
        assert caught.value.email == batch[where].email
        assert [user.id for user in await store.list_page(after=None, limit=100)] == ["taken"]

    async def test_repeat_inside_the_batch_stores_nothing(self, store: UserStore) -> None:
        """A batch holding one email twice (in two cases) fails on the second and stores none."""
        batch = people()
        batch[7] = replace(batch[7], email=batch[2].email.upper())
        with pytest.raises(EmailAlreadyExists) as caught:
            await store.add_many(batch)
        assert caught.value.email == batch[7].email
        assert await store.list_page(after=None, limit=100) == []

    async def test_repeated_id_stores_nothing(self, store: UserStore) -> None:
        """A batch repeating a stored id fails as a bug (StoreFailure) and stores none of it."""
        await store.add(people()[0])
        batch = [
            replace(user, id=uid(0)) if n == 4 else user for n, user in enumerate(people()[1:])
        ]
        with pytest.raises(StoreFailure):
            await store.add_many(batch)
        assert [user.id for user in await store.list_page(after=None, limit=100)] == [uid(0)]

    async def test_get_many(self, store: UserStore) -> None:
        """get_many returns the users that exist among the ids, each once."""
        await store.add_many(people())
        found = await store.get_many([uid(2), "missing", uid(5)])
        assert sorted(user.id for user in found) == [uid(2), uid(5)]
        assert await store.get_many([]) == []

    async def test_updates_keep_the_keys(self, store: UserStore) -> None:
        """After a rename and an email change, filters find the user by the new values only."""
        directory = await populated(store)
        await directory.update(uid(0), name="Countess", email="countess@Lovelace.org")
        assert [u.id for u in await listed(directory, 'name = "countess"', "", 10)] == [uid(0)]
        assert await listed(directory, 'name = "ada l*"', "", 10) == []
        assert [u.id for u in await listed(directory, 'email = "*@lovelace.org"', "", 10)] == [
            uid(0)
        ]
        assert await listed(directory, 'email = "ada@example.com"', "", 10) == []


# -- generated queries: SQL stores against the memory store's evaluator ----------------------

names = st.sampled_from(["ada", "ADA", "a", "gr", "twin", "ß", "straße", "李", "zoë", "x", ""])
comparisons = st.one_of(
    st.builds(lambda v: f'name = "{v}*"', names),
    st.builds(lambda v: f'name = "*{v}"', names),
    st.builds(lambda v: f'name:"{v}"', names),
    st.builds(lambda v: f'email = "{v}*"', names),
    st.builds(lambda d: f'email = "*{d}"', st.sampled_from(["@acme.com", ".org", "example.net"])),
    st.builds(
        lambda op, s: f'create_time {op} "{iso(s)}"',
        st.sampled_from(["<", "<=", ">", ">=", "=", "!="]),
        st.integers(-1, 9),
    ),
    st.builds(lambda n: f'id = "{uid(n)}"', st.integers(0, 10)),
)
queries = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        inner.map(lambda f: f"NOT ({f})"),
        st.tuples(inner, inner).map(lambda p: f"({p[0]}) AND ({p[1]})"),
        st.tuples(inner, inner).map(lambda p: f"({p[0]}) OR ({p[1]})"),
    ),
    max_leaves=4,
)
orders = st.sampled_from(["", "create_time desc", "name", "name desc", "email", "update_time"])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(filter=queries, order_by=orders, size=st.integers(1, 4))
async def test_sql_stores_agree_with_the_evaluator(
    store: UserStore, filter: str, order_by: str, size: int
) -> None:
    """Any generated query lists, page by page, what the domain's evaluator selects and sorts."""
    if not await store.get_many([uid(0)]):
        await store.add_many(people())
    query = parse_query(filter, order_by)
    expected = sorted(
        (user for user in people() if query.matches(user)),
        key=query.sort_key,
        reverse=query.order.descending,
    )
    assert await listed(UserDirectory(store), filter, order_by, size) == expected


class TestMigration:
    """Users stored before filters existed are found by them once the schema is migrated."""

    async def test_sqlite_version_one_file(self, tmp_path: Path) -> None:
        """A file of people's first schema gets folded names and reversed emails for its users."""
        path = tmp_path / "people.db"
        with sqlite3.connect(path) as db:
            for statement in SQLITE_SCHEMA_V1:
                db.execute(statement)
            for user in people():
                db.execute(
                    "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (user.id, user.name, user.email, user.email_key, user.version, 0, 0),
                )
            db.execute("PRAGMA user_version = 1")
        db.close()
        store = await SQLiteStore.open(path)
        try:
            await self.check(store)
        finally:
            await store.aclose()

    @pytest.mark.postgres
    async def test_postgres_version_two_database(self, postgres_url: str) -> None:
        """A database of people's second schema gets the keys, the "C" collation and indexes."""
        connection = await asyncpg.connect(postgres_url)
        try:
            for step in postgres_schema._MIGRATIONS[:2]:
                assert isinstance(step, str)
                await connection.execute(step)
            await connection.execute("CREATE TABLE schema_version (version integer NOT NULL)")
            await connection.execute("INSERT INTO schema_version VALUES (2)")
            await connection.executemany(
                "INSERT INTO users VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [
                    (u.id, u.name, u.email, u.email_key, u.version, u.create_time, u.update_time)
                    for u in people()
                ],
            )
        finally:
            await connection.close()
        store = await PostgresStore.open(postgres_url)
        try:
            await self.check(store)
        finally:
            await store.aclose()

    @pytest.mark.postgres
    async def test_postgres_refuses_users_without_keys(self, postgres_url: str) -> None:
        """On a migrated database a user written without the keys (as an older people would
        write one) is refused, never stored unfindable."""
        await (await PostgresStore.open(postgres_url)).aclose()
        connection = await asyncpg.connect(postgres_url)
        try:
            with pytest.raises(asyncpg.NotNullViolationError):
                await connection.execute(
                    "INSERT INTO users (id, name, email, email_key, version, create_time,"
                    " update_time) VALUES ('x', 'Old', 'old@example.com', 'old@example.com', 1,"
                    " now(), now())"
                )
        finally:
            await connection.close()

    @staticmethod
    async def check(store: UserStore) -> None:
        """Filters on folded names, email suffixes and the name order see the old users."""
        directory = UserDirectory(store)
        found = await listed(directory, 'name = "strasse*" OR email = "*@acme.com"', "name", 10)
        assert [user.name for user in found] == ["ada king", "Grace Hopper", "Straße Müller"]
        by_name = await listed(directory, "", "name desc", 4)
        assert [user.name for user in by_name][:3] == ["李雷", "Zoë Ångström", "Twin"]
