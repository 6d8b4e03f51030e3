"""SQLite group commit: concurrent writes share a commit, and each fails or succeeds alone."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from people.domain.errors import (
    EmailAlreadyExists,
    PeopleError,
    ResourceExhausted,
    StaleVersion,
    UserNotFound,
)
from people.store.sqlite import SQLiteStore
from tests.test_store_contract import make_user


async def outcomes(*writes: object) -> list[BaseException | None]:
    """Run the writes at once; each one's exception, or None."""
    results = await asyncio.gather(*writes, return_exceptions=True)  # type: ignore[call-overload]
    return [result if isinstance(result, BaseException) else None for result in results]


class TestSharing:
    async def test_concurrent_writes_share_commits(self, tmp_path: Path) -> None:
        """60 concurrent creates take fewer commits than writes, and every one is stored."""
        store = await SQLiteStore.open(tmp_path / "people.db")
        try:
            users = [make_user(n) for n in range(60)]
            assert await outcomes(*(store.add(user) for user in users)) == [None] * 60
            writer = store._writer
            assert writer.committed_writes == 60
            assert writer.commits < 60
        finally:
            await store.aclose()
        reopened = await SQLiteStore.open(tmp_path / "people.db")
        try:
            stored = await reopened.list_page(after=None, limit=100)
        finally:
            await reopened.aclose()
        assert {user.id for user in stored} == {user.id for user in users}

    async def test_a_lone_write_is_committed_at_once(self, tmp_path: Path) -> None:
        """One write alone is committed alone, without waiting for company."""
        store = await SQLiteStore.open(tmp_path / "people.db")
        try:
            await store.add(make_user(1))
            assert (store._writer.commits, store._writer.committed_writes) == (1, 1)
        finally:
            await store.aclose()


class TestFailingAlone:
    async def test_taken_emails_fail_only_their_callers(self, tmp_path: Path) -> None:
        """In one burst, the creates whose email is taken (in any case) fail; the rest commit."""
        store = await SQLiteStore.open(tmp_path / "people.db")
        try:
            first = make_user(0, email="taken@example.com")
            await store.add(first)
            users = [make_user(n) for n in range(1, 21)]
            users[4] = make_user(4, email="TAKEN@example.com")
            users[9] = make_user(9, email="user3@example.com")  # same as users[2]
            results = await outcomes(*(store.add(user) for user in users))
            stored = {user.id for user in await store.list_page(after=None, limit=100)}
        finally:
            await store.aclose()
        failed = [index for index, result in enumerate(results) if result is not None]
        assert failed in ([4, 9], [2, 4])  # whichever of the twins came second
        assert all(isinstance(results[index], EmailAlreadyExists) for index in failed)
        assert stored == {first.id} | {users[i].id for i in range(20) if i not in failed}

    async def test_stale_and_missing_fail_alone(self, tmp_path: Path) -> None:
        """A stale etag and an unknown id fail their callers; other updates in the batch apply."""
        store = await SQLiteStore.open(tmp_path / "people.db")
        try:
            users = [make_user(n) for n in range(5)]
            for user in users:
                await store.add(user)
            results = await outcomes(
                store.replace(replace(users[0], name="new 0", version=2), expected_version=1),
                store.replace(replace(users[1], name="new 1", version=2), expected_version=7),
                store.remove("nobody", expected_version=None),
                store.replace(replace(users[2], name="new 2", version=2), expected_version=1),
            )
            names = [(await store.get(user.id)).name for user in users[:3]]
        finally:
            await store.aclose()
        assert [type(result) for result in results] == [
            type(None),
            StaleVersion,
            UserNotFound,
            type(None),
        ]
        assert names == ["new 0", "user 1", "new 2"]


class TestFullDisk:
    async def test_acknowledged_if_and_only_if_stored(self, tmp_path: Path) -> None:
        """When the disk fills mid-burst, each create either succeeded and is stored, or failed
        as RESOURCE_EXHAUSTED and is absent: none is half there."""
        path = tmp_path / "people.db"
        store = await SQLiteStore.open(path, max_pages=40)
        try:
            users = [replace(make_user(n), name="x" * 190) for n in range(400)]
            results = await outcomes(*(store.add(user) for user in users))
        finally:
            await store.aclose()
        reopened = await SQLiteStore.open(path)
        try:
            stored = {user.id for user in await reopened.list_page(after=None, limit=1000)}
        finally:
            await reopened.aclose()
        acknowledged = {user.id for user, result in zip(users, results, strict=True) if not result}
        failures = [result for result in results if result is not None]
        assert failures, "the disk never filled: the test proves nothing"
        assert all(isinstance(failure, ResourceExhausted) for failure in failures)
        assert stored == acknowledged


@pytest.mark.parametrize("count", [1, 7])
async def test_closed_store_refuses_writes(tmp_path: Path, count: int) -> None:
    """After aclose every write fails as unavailable, at once."""
    store = await SQLiteStore.open(tmp_path / "people.db")
    await store.aclose()
    results = await outcomes(*(store.add(make_user(n)) for n in range(count)))
    assert all(isinstance(result, PeopleError) for result in results)
