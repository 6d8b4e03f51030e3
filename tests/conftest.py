"""Shared fixtures: stores, a directory, and the API served in memory."""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.testing import ChannelFor

from people._gen.people import UserServiceStub
from people.api.user_service import UserService
from people.domain.directory import UserDirectory
from people.domain.ports import UserStore
from people.store.memory import MemoryStore
from people.store.postgres import PostgresStore
from people.store.sqlite import SQLiteStore
from tests.pki import pki
from tests.postgres import postgres_server, postgres_url

__all__ = ["pki", "postgres_server", "postgres_url"]  # fixtures, re-exported for every test module

STORE_KINDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UserStore]:
    """Every store adapter in turn, empty."""
    opened: UserStore
    if request.param == "memory":
        opened = MemoryStore()
    elif request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        opened = await PostgresStore.open(await server.create_database())
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


def seed_notebook_text() -> str:
    """The seed notebook's text."""
    return SEED_NOTEBOOK.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def seed_proto_text() -> str:
    """The seed's people.proto: from its first comment to the end of `service UserService`."""
    text = seed_notebook_text()
    start = text.index("// Protocol Buffer revision specification")
    service = text.index("service UserService", start)
    end = text.index("\n}", service) + len("\n}")
    return text[start:end] + "\n"


@pytest.fixture(scope="session")
def seed_serialized_protobuf() -> bytes:
    """The seed's compiled FileDescriptorProto, the `serialized_protobuf = b'...'` line."""
    match = re.search(r"^serialized_protobuf = (b'.*')\s*$", seed_notebook_text(), re.MULTILINE)
    assert match is not None, "the seed notebook has no serialized_protobuf line"
    value = ast.literal_eval(match[1])
    assert isinstance(value, bytes)
    return value


@pytest.fixture(scope="session")
def seed_client_code() -> str:
    """The seed's client program: the code cell after the 'And finally' client section."""
    text = seed_notebook_text()
    section = text.index("And finally")
    marker = "In [None]:"
    start = text.index(marker, section) + len(marker)
    return text[start:].strip() + "\n"
