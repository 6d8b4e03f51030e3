"""Shared fixtures: stores, a directory, and the API served in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.testing import ChannelFor

from people._gen.people import UserServiceStub
from people.api import UserService
from people.service import UserDirectory
from people.store import UserStore
from people.store.memory import MemoryStore
from people.store.sqlite import SQLiteStore

STORE_KINDS = ["memory", "sqlite"]


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UserStore]:
    """Every store adapter in turn, empty."""
    opened: UserStore
    if request.param == "memory":
        opened = MemoryStore()
    else:
        opened = await SQLiteStore.open(tmp_path / "people.db")
    yield opened
    await opened.aclose()


@pytest.fixture
async def stub() -> AsyncIterator[UserServiceStub]:
    """A generated stub talking to UserService over an in-memory channel, on a memory store."""
    service = UserService(UserDirectory(MemoryStore()))
    async with ChannelFor([service]) as channel:
        yield UserServiceStub(channel)


#: The seed notebook people started from, kept verbatim beside the tests.
SEED_NOTEBOOK = Path(__file__).parent / "seed" / "000_429682d8b024c27e.txt"
