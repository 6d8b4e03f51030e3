"""`people import`'s engine: batches through BatchCreateUsers, with the per-line outcome that
creating the lines one at a time gives."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from grpclib.const import Handler
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from people.api.user_service import UserService
from people.cli.bulk import ImportSummary, Record
from people.cli.importing import import_users
from people.client import PeopleClient
from people.domain.directory import UserDirectory
from people.domain.model import email_key
from people.rpc.defaults import DEFAULT_MAX_MESSAGE_BYTES
from people.server.compose import build_server
from people.server.settings import Settings
from people.server.sockets import bind
from people.store.memory import MemoryStore


class WithoutBatches(UserService):
    """A server from before BatchCreateUsers: the route is gone (UNIMPLEMENTED)."""

    def __mapping__(self) -> dict[str, Handler]:
        """Every route but BatchCreateUsers."""
        mapping = super().__mapping__()
        del mapping["/people.UserService/BatchCreateUsers"]
        return mapping


class CountingService(UserService):
    """Counts the BatchCreateUsers and ListUsers calls it serves."""

    batches = 0
    lookups = 0

    def __mapping__(self) -> dict[str, Handler]:
        """The usual routes, counted."""
        mapping = super().__mapping__()
        for method, counter in (("BatchCreateUsers", "batches"), ("ListUsers", "lookups")):
            path = f"/people.UserService/{method}"
            mapping[path] = mapping[path]._replace(func=self._counting(mapping[path].func, counter))
        return mapping

    def _counting(
        self, func: Callable[[Any], Awaitable[None]], counter: str
    ) -> Callable[[Any], Awaitable[None]]:
        async def counted(stream: Any) -> None:
            setattr(self, counter, getattr(self, counter) + 1)
            await func(stream)

        return counted


@asynccontextmanager
async def client_for(
    service: UserService, *, max_send_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> AsyncIterator[PeopleClient]:
    """A PeopleClient talking over TCP to ``service`` on people's own runtime (which answers
    a missing method UNIMPLEMENTED, as the gRPC spec asks)."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        database="memory://",
        max_send_message_bytes=max_send_message_bytes,
    )
    server = build_server([service], settings)
    sock = bind(settings.host, 0)
    await server.start_on(sock)
    try:
        async with PeopleClient(f"127.0.0.1:{sock.getsockname()[1]}", timeout=30) as client:
            yield client
    finally:
        await server.drain(0.5)
        sock.close()


def summary_lines(summary: ImportSummary) -> list[str]:
    """The summary as `people import` prints it."""
    return [
        f"{summary.created} created, {summary.existing} already existed,"
        f" {len(summary.rejected)} rejected",
        *(f"line {r.line}: {r.reason}" for r in summary.rejected),
    ]


async def stored_emails(service: UserService) -> set[str]:
    """The email keys the service's directory holds."""
    async with client_for(service) as client:
        return {email_key(user.email) async for user in client.iter_users()}


def records(entries: list[tuple[str, str]]) -> list[Record]:
    """Records numbered from line 2 (after a header)."""
    return [Record(n, name=name, email=email) for n, (name, email) in enumerate(entries, start=2)]


#: Lines that exercise every outcome: a bad email, an empty name, a repeat inside a batch
#: in another case, emails already stored, and good lines.
ENTRIES = [
    ("Ada", "ada@example.com"),
    ("Bad", "not-an-email"),
    ("", "nameless@example.com"),
    ("Again", "ADA@example.com"),
    ("Stored", "stored@example.com"),
    ("Grace", "grace@example.com"),
    ("Stored too", "STORED2@example.com"),
    *((f"P{n}", f"p{n}@example.com") for n in range(20)),
    ("Late dup", "p3@EXAMPLE.com"),
]
PRESTORED = [("Before", "stored@example.com"), ("Before 2", "stored2@example.com")]


async def run(
    service: UserService, entries: list[tuple[str, str]], batch_size: int
) -> ImportSummary:
    """Store PRESTORED, then import ``entries`` through ``service``."""
    async with client_for(service) as client:
        for name, email in PRESTORED:
            await client.create(name, email)
        return await import_users(client, records(entries), batch_size=batch_size, concurrency=2)


class TestSameOutcomeAsOneAtATime:
    """Batches give the summary a server without BatchCreateUsers gives, line for line."""

    @pytest.mark.parametrize("batch_size", [1, 4, 7, 1000])
    async def test_every_outcome(self, batch_size: int) -> None:
        """Created, already existing and rejected lines are counted and named alike."""
        alone = WithoutBatches(UserDirectory(MemoryStore()))
        batched = UserService(UserDirectory(MemoryStore()))
        expected = await run(alone, ENTRIES, batch_size)
        got = await run(batched, ENTRIES, batch_size)
        assert summary_lines(got) == summary_lines(expected)
        assert summary_lines(got) == [
            "22 created, 4 already existed, 2 rejected",
            "line 3: invalid email: An email address must have an @-sign.",
            "line 4: invalid name: must not be empty",
        ]
        assert await stored_emails(batched) == await stored_emails(alone)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        picks=st.lists(st.integers(0, len(ENTRIES) - 1), max_size=40),
        batch_size=st.integers(1, 9),
    )
    async def test_any_file(self, picks: list[int], batch_size: int) -> None:
        """Any mix of those lines, in any batch size, gives the one-at-a-time counts."""
        entries = [ENTRIES[pick] for pick in picks]
        expected = await run(WithoutBatches(UserDirectory(MemoryStore())), entries, 1)
        got = await run(UserService(UserDirectory(MemoryStore())), entries, batch_size)
        assert summary_lines(got) == summary_lines(expected)


class TestCalls:
    """How many calls an import makes."""

    async def test_clean_file_is_one_call_per_batch(self) -> None:
        """2,500 good lines are three BatchCreateUsers calls and no lookup."""
        service = CountingService(UserDirectory(MemoryStore()))
        entries = [(f"U{n}", f"u{n}@example.com") for n in range(2500)]
        async with client_for(service) as client:
            summary = await import_users(client, records(entries), concurrency=2)
        assert summary_lines(summary) == ["2500 created, 0 already existed, 0 rejected"]
        assert (service.batches, service.lookups) == (3, 0)

    async def test_reimport_is_settled_with_lookups(self) -> None:
        """Importing 1,000 stored users again takes one failed batch and five lookups, not a
        retry per line."""
        service = CountingService(UserDirectory(MemoryStore()))
        entries = [(f"U{n}", f"u{n}@example.com") for n in range(1000)]
        async with client_for(service) as client:
            await import_users(client, records(entries))
            service.batches = service.lookups = 0
            summary = await import_users(client, records(entries))
        assert summary_lines(summary) == ["0 created, 1000 already existed, 0 rejected"]
        assert (service.batches, service.lookups) == (1, 5)

    async def test_batches_too_big_for_the_server_are_halved(self) -> None:
        """Against a server whose messages are small, batches are split until they fit, and
        every line is still created once."""
        limit = 4096
        service = CountingService(UserDirectory(MemoryStore()), max_send_message_bytes=limit)
        entries = [(f"U{n}", f"u{n}@example.com") for n in range(300)]
        async with client_for(service, max_send_message_bytes=limit) as client:
            summary = await import_users(client, records(entries))
            stored = [user.email async for user in client.iter_users()]
        assert summary_lines(summary) == ["300 created, 0 already existed, 0 rejected"]
        assert sorted(stored) == sorted(email for _, email in entries)
        assert service.batches > 300 // 32
