"""Which listing queries an index serves, and which scan, on SQLite and PostgreSQL.

The plans are asked of the databases themselves (SQLite's EXPLAIN QUERY PLAN,
PostgreSQL's EXPLAIN) for the exact SQL the stores run. PostgreSQL is asked
with sequential scans discouraged, so that on a tiny table it still shows
whether an index *can* serve the query.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from people.domain.filtering import parse_query
from people.domain.ports import Cursor
from people.store import postgres_rows, sqlite_rows
from people.store.postgres import PostgresStore
from people.store.sql_filter import select_page
from people.store.sqlite import SQLiteStore
from tests.test_store_contract import make_user

#: (filter, order_by, the index SQLite searches with, the index PostgreSQL scans).
INDEXED = [
    ('email = "Ada@Example.com"', "", "users_email_key (email_key=?)", "users_email_key"),
    ('name = "Ada*"', "", "users_name_order (name_key>? AND name_key<?)", "users_name_order"),
    (
        'email = "*@acme.com"',
        "",
        "users_email_reversed (email_reversed>? AND email_reversed<?)",
        "users_email_reversed",
    ),
    ('id = "x"', "", "sqlite_autoindex_users_1 (id=?)", "users_pkey"),
    (
        'create_time > "2024-01-01T00:00:00Z"',
        "",
        "users_creation_order (create_time_us>?)",
        "users_creation_order",
    ),
]
#: Orders, each walked along an index with no sort step.
ORDERS = [
    ("", "users_creation_order"),
    ("create_time desc", "users_creation_order"),
    ("update_time", "users_update_order"),
    ("update_time desc", "users_update_order"),
    ("name", "users_name_order"),
    ("name desc", "users_name_order"),
    ("email", "users_email_key"),
    ("email desc", "users_email_key"),
]
#: Filters no index serves: each user is looked at.
SCANNED = [
    'name:"love"',
    'email:"acme"',
    'name = "*hopper"',
    'name = "*ada*"',
    'name != "Ada"',
    'NOT email = "*@acme.com"',
]


def cursor_for(order_by: str) -> Cursor:
    """A cursor of the right type for ``order_by``."""
    if order_by.startswith(("name", "email")):
        return ("m", "some-id")
    return (datetime(2024, 1, 1, tzinfo=UTC), "some-id")


async def sqlite_plan(path: Path, filter: str, order_by: str, after: Cursor | None) -> str:
    """SQLite's plan for the page query the SQLite store would run."""
    await (await SQLiteStore.open(path)).aclose()
    tail, params = select_page(sqlite_rows.DIALECT, parse_query(filter, order_by), after, 51)
    with sqlite3.connect(path) as db:
        rows = db.execute(
            f"EXPLAIN QUERY PLAN SELECT {sqlite_rows.COLUMNS} FROM users {tail}", params
        )
        plan = " | ".join(row[3] for row in rows)
    db.close()
    return plan


@pytest.fixture
async def postgres_db(postgres_url: str) -> str:
    """A database of 2,000 users whose statistics the planner knows."""
    store = await PostgresStore.open(postgres_url)
    try:
        await store.add_many([make_user(n) for n in range(1000)])
        await store.add_many([make_user(n) for n in range(1000, 2000)])
    finally:
        await store.aclose()
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute("ANALYZE users")
    finally:
        await connection.close()
    return postgres_url


async def postgres_plan(url: str, filter: str, order_by: str, after: Cursor | None) -> str:
    """PostgreSQL's plan for the page query the PostgreSQL store would run."""
    tail, params = select_page(postgres_rows.DIALECT, parse_query(filter, order_by), after, 51)
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("SET enable_seqscan = off")
        rows = await connection.fetch(
            f"EXPLAIN SELECT {postgres_rows.COLUMNS} FROM users {tail}", *params
        )
    finally:
        await connection.close()
    return " | ".join(row[0].strip() for row in rows)


class TestSQLite:
    """SQLite's plans for the listing queries."""

    @pytest.mark.parametrize(("filter", "order_by", "index", "_"), INDEXED)
    async def test_indexed_filters(
        self, tmp_path: Path, filter: str, order_by: str, index: str, _: str
    ) -> None:
        """Exact emails and ids, name prefixes, email domains and time ranges search an index."""
        for after in (None, cursor_for(order_by)):
            plan = await sqlite_plan(tmp_path / "people.db", filter, order_by, after)
            assert f"SEARCH users USING INDEX {index}" in plan or (
                f"SEARCH users USING COVERING INDEX {index}" in plan
            ), plan

    @pytest.mark.parametrize(("order_by", "index"), ORDERS)
    async def test_orders_walk_an_index(self, tmp_path: Path, order_by: str, index: str) -> None:
        """Every order, from the first page or a cursor, walks its index without sorting."""
        for after in (None, cursor_for(order_by)):
            plan = await sqlite_plan(tmp_path / "people.db", "", order_by, after)
            assert f"INDEX {index}" in plan, plan
            assert "TEMP B-TREE" not in plan, plan

    @pytest.mark.parametrize("filter", SCANNED)
    async def test_contains_and_suffixes_scan(self, tmp_path: Path, filter: str) -> None:
        """`:`, a name suffix, a wildcard at both ends and a negation look at every user."""
        plan = await sqlite_plan(tmp_path / "people.db", filter, "", None)
        assert plan.startswith("SCAN users"), plan


@pytest.mark.postgres
class TestPostgres:
    """PostgreSQL's plans for the listing queries."""

    @pytest.mark.parametrize(("filter", "order_by", "_", "index"), INDEXED)
    async def test_indexed_filters(
        self, postgres_db: str, filter: str, order_by: str, _: str, index: str
    ) -> None:
        """Exact emails and ids, name prefixes, email domains and time ranges use an index."""
        plan = await postgres_plan(postgres_db, filter, order_by, None)
        assert f"using {index} on users" in plan or f"Index Scan on {index}" in plan, plan
        assert "Index Cond" in plan, plan

    @pytest.mark.parametrize(("order_by", "index"), ORDERS)
    async def test_orders_walk_an_index(self, postgres_db: str, order_by: str, index: str) -> None:
        """Every order walks its index without a sort step."""
        for after in (None, cursor_for(order_by)):
            plan = await postgres_plan(postgres_db, "", order_by, after)
            assert f"using {index}" in plan.lower(), plan
            assert "Sort" not in plan, plan

    @pytest.mark.parametrize("filter", SCANNED)
    async def test_contains_and_suffixes_scan(self, postgres_db: str, filter: str) -> None:
        """`:`, suffixes of names and negations are filters on every row, not index conditions."""
        plan = await postgres_plan(postgres_db, filter, "", None)
        assert "Filter" in plan, plan
        assert "name_key" not in plan.split("Filter")[0], plan
