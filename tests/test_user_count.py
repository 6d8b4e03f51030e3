"""The people_users gauge's counting: once at start, then once per burst of writes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from people.domain.errors import EmailAlreadyExists, StoreUnavailable
from people.server.instrumented_store import InstrumentedStore
from people.server.user_count import UserCount
from people.store.memory import MemoryStore
from tests.test_store_contract import make_user

#: Short enough for tests, long enough that a burst lands within it.
DELAY = 0.05


class CountingStore(MemoryStore):
    """A memory store that counts its counts, and can be made to fail or stall them."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = 0
        self.failing = False
        self.stall: asyncio.Event | None = None

    async def count(self) -> int:
        self.counts += 1
        if self.stall is not None:
            await self.stall.wait()
        if self.failing:
            raise StoreUnavailable("the database is unreachable")
        return await super().count()


def counted(store: CountingStore) -> tuple[UserCount, list[int], InstrumentedStore]:
    """A UserCount over ``store``, what it published, and the store wrapped to report writes."""
    published: list[int] = []
    users = UserCount(store, published.append, delay=DELAY)
    return users, published, InstrumentedStore(store, on_write=users.written)


async def test_a_burst_of_writes_is_counted_once_after_the_delay() -> None:
    """Five adds and a remove in a row lead to one count, after the delay, of the final number."""
    store = CountingStore()
    users, published, wrapped = counted(store)
    await users.count()
    added = [make_user(n) for n in range(5)]
    for user in added:
        await wrapped.add(user)
    await wrapped.remove(added[0].id, expected_version=None)
    assert published == [0]
    await asyncio.sleep(DELAY * 4)
    assert published == [0, 4]
    assert store.counts == 2


async def test_batch_adds_are_writes_too() -> None:
    """add_many leads to a count like add does."""
    store = CountingStore()
    _, published, wrapped = counted(store)
    await wrapped.add_many([make_user(n) for n in range(3)])
    await asyncio.sleep(DELAY * 4)
    assert published == [3]


async def test_reads_and_failed_writes_count_nothing() -> None:
    """Reads, and a write the store refused, never start a count."""
    store = CountingStore()
    _, published, wrapped = counted(store)
    await store.add(make_user(1))
    await wrapped.list_page(after=None, limit=10)
    with pytest.raises(EmailAlreadyExists):
        await wrapped.add(make_user(2, email="user1@example.com"))
    await asyncio.sleep(DELAY * 4)
    assert published == []
    assert store.counts == 0


async def test_a_failing_store_keeps_the_last_count(caplog: pytest.LogCaptureFixture) -> None:
    """A count the store fails is logged and leaves the gauge alone; the next write counts again."""
    store = CountingStore()
    users, published, wrapped = counted(store)
    await users.count()
    store.failing = True
    await wrapped.add(make_user(1))
    with caplog.at_level(logging.WARNING, logger="people.server"):
        await asyncio.sleep(DELAY * 4)
    assert published == [0]
    assert "could not count users (the database is unreachable)" in caplog.text
    store.failing = False
    await wrapped.add(make_user(2))
    await asyncio.sleep(DELAY * 4)
    assert published == [0, 2]


async def test_a_write_during_a_slow_count_counts_again_after_it() -> None:
    """Counts never overlap: a write while one is stalled leads to another once it ends."""
    store = CountingStore()
    _, published, wrapped = counted(store)
    store.stall = asyncio.Event()
    await wrapped.add(make_user(1))
    await asyncio.sleep(DELAY * 3)  # the first count has started, and waits
    await wrapped.add(make_user(2))
    await asyncio.sleep(DELAY * 3)
    assert store.counts == 1
    store.stall.set()
    await asyncio.sleep(DELAY * 4)
    assert store.counts == 2
    assert published == [2, 2]


async def test_close_stops_a_pending_count() -> None:
    """After close, a write already made is never counted."""
    store = CountingStore()
    users, published, wrapped = counted(store)
    await wrapped.add(make_user(1))
    users.close()
    await asyncio.sleep(DELAY * 4)
    assert store.counts == 0
    assert published == []
