"""Graceful drain: on SIGTERM accepted calls finish, the rest are refused cleanly."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, PingFrame

from people._gen.people import CreateUserRequest, CreateUserResponse, User, UserIdRequest
from people.rpc.goaway import ALL_STREAMS, GOAWAY_PING_TIMEOUT
from people.store.sqlite import SQLiteStore
from tests.inprocess import GatedStore, RawH2, Served, frame, serving, until
from tests.support import running_server
from tests.test_store_contract import make_user

CALLS = 600
#: Ways a call can vanish that leave a client unable to tell whether it ran.
VANISHED = ("stream removed", "socket closed", "connection reset", "rst_stream")


def _create(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(
        "/people.UserService/CreateUser",
        request_serializer=bytes,
        response_deserializer=CreateUserResponse.parse,
    )


class TestSigterm:
    """SIGTERM against a real server with calls in flight."""

    def test_every_call_completes_or_is_refused(self, tmp_path: Path) -> None:
        """600 creates on one channel: each is OK or UNAVAILABLE, and every OK one persisted."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        acknowledged: dict[str, str] = {}
        with running_server("--database", database, "--grace-period", "10") as server:
            with grpc.insecure_channel(server.target) as channel:
                grpc.channel_ready_future(channel).result(timeout=10)
                create = _create(channel)
                futures: list[tuple[str, Future[CreateUserResponse]]] = []
                for index in range(CALLS):
                    email = f"user{index}@example.com"
                    request = CreateUserRequest(name=f"User {index}", email=email)
                    futures.append((email, create.future(request, timeout=30)))
                deadline = time.monotonic() + 10
                while sum(f.done() for _, f in futures) < 10 and time.monotonic() < deadline:
                    time.sleep(0.001)
                server.process.send_signal(signal.SIGTERM)
                failures: list[str] = []
                for email, future in futures:
                    try:
                        acknowledged[email] = future.result(timeout=30).id
                    except grpc.RpcError as exc:
                        details = (exc.details() or "").lower()
                        if exc.code() is not grpc.StatusCode.UNAVAILABLE or any(
                            word in details for word in VANISHED
                        ):
                            failures.append(f"{email}: {exc.code()} {exc.details()}")
                code = server.process.wait(timeout=20)
            assert not failures, failures[:10]
            assert code == 0, server.output()
        assert len(acknowledged) > 0, "no call completed before SIGTERM"
        with (
            running_server("--database", database) as restarted,
            grpc.insecure_channel(restarted.target) as channel,
        ):
            get = channel.unary_unary(
                "/people.UserService/GetUserById",
                request_serializer=bytes,
                response_deserializer=User.parse,
            )
            for email, user_id in acknowledged.items():
                assert get(UserIdRequest(id=user_id), timeout=10).email == email

    def test_sigint_also_drains(self) -> None:
        """SIGINT stops the server with exit code 0 too."""
        with running_server("--database", "memory://") as server:
            assert server.stop(signal.SIGINT) == 0


CREATE = "/people.UserService/CreateUser"
#: The one CreateUser a GOAWAY test holds in the store while the server drains.
ADA = frame(bytes(CreateUserRequest(name="Ada", email="ada@example.com")))
BOB = frame(bytes(CreateUserRequest(name="Bob", email="bob@example.com")))

F = TypeVar("F", bound=Frame)


async def next_frame(client: RawH2, kind: type[F]) -> F:
    """The next frame of ``kind`` the server sends, decoding the header blocks on the way."""
    while True:
        received = await client.read_frame()
        if isinstance(received, HeadersFrame):
            client.decode(received)
        if isinstance(received, kind):
            return received


@dataclass
class HeldCall:
    """A served connection with one CreateUser waiting at the store's gate."""

    served: Served
    store: GatedStore
    client: RawH2
    stream_id: int


@asynccontextmanager
async def held_call() -> AsyncIterator[HeldCall]:
    """Serve on a gated store and start one CreateUser that waits inside the store."""
    store = GatedStore()
    async with serving(store=store) as served:
        client = await RawH2.connect(served.port)
        stream_id = client.call(CREATE, ADA)
        await until(lambda: store.waiting == 1)
        try:
            yield HeldCall(served, store, client, stream_id)
        finally:
            client.close()


@dataclass
class SentCall:
    """A CreateUser sent on a new connection the server has not accepted yet."""

    sock: socket.socket
    h2: H2Connection
    stream_id: int

    @classmethod
    def on_new_connection(cls, port: int) -> SentCall:
        """Connect (blocking: the server's loop does not run) and send the whole call."""
        sock = socket.create_connection(("127.0.0.1", port))
        h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        h2.initiate_connection()
        stream_id = h2.get_next_available_stream_id()
        h2.send_headers(stream_id, RawH2.request_headers(CREATE))
        h2.send_data(stream_id, ADA, end_stream=True)
        sock.sendall(h2.data_to_send())
        return cls(sock, h2, stream_id)

    async def expect_served_and_sent_away(self, drain: asyncio.Task[None]) -> None:
        """Answer the drain's PING; the call must succeed and the final GOAWAY name it."""
        client = RawH2(*await asyncio.open_connection(sock=self.sock))
        client.h2 = self.h2
        try:
            goaway = await next_frame(client, GoAwayFrame)
            client.answer_ping(await next_frame(client, PingFrame))
            answered: dict[str, str] = {}
            final: GoAwayFrame | None = None
            while final is None or "grpc-status" not in answered:
                received = await client.read_frame()
                if isinstance(received, HeadersFrame):
                    answered.update(client.decode(received))
                elif isinstance(received, GoAwayFrame):
                    final = received
            await asyncio.wait_for(drain, 5)
        finally:
            client.close()
        assert (goaway.last_stream_id, final.last_stream_id) == (ALL_STREAMS, self.stream_id)
        assert answered["grpc-status"] == "0"


class TestGoaway:
    """What a connection sees when the server drains, frame by frame."""

    async def test_two_phase_goaway(self) -> None:
        """GOAWAY(2^31-1) and a PING first: a stream sent before the PING's answer is still
        served; the second GOAWAY names it, and a stream sent after that is REFUSED."""
        async with held_call() as held:
            client, first = held.client, held.stream_id
            drain = asyncio.create_task(held.served.server.drain(5))
            goaway = await next_frame(client, GoAwayFrame)
            assert (goaway.last_stream_id, goaway.error_code) == (ALL_STREAMS, ErrorCodes.NO_ERROR)
            ping = await next_frame(client, PingFrame)
            # Sent in flight, as a proxy would: before it could have seen the GOAWAY.
            second = client.call(CREATE, BOB)
            client.answer_ping(ping)
            final = await next_frame(client, GoAwayFrame)
            assert (final.last_stream_id, final.error_code) == (second, ErrorCodes.NO_ERROR)
            third = client.call(CREATE, frame(bytes(CreateUserRequest(name="C", email="c@x.org"))))
            refused = await client.answers([third])
            assert refused[third][":reset"] == str(ErrorCodes.REFUSED_STREAM)
            assert not drain.done()
            await until(lambda: held.store.waiting == 2)
            held.store.gate.set()
            answered = await client.answers([first, second])
            await asyncio.wait_for(drain, 5)
        assert [answered[first]["grpc-status"], answered[second]["grpc-status"]] == ["0", "0"]
        assert len(await held.store.list_page(after=None, limit=10)) == 2

    async def test_final_goaway_without_the_pings_answer(self) -> None:
        """A client that never answers the PING still gets the final GOAWAY, after a second."""
        async with held_call() as held:
            client, first = held.client, held.stream_id
            drain = asyncio.create_task(held.served.server.drain(5))
            goaways = [await next_frame(client, GoAwayFrame) for _ in range(2)]
            held.store.gate.set()
            assert (await client.answers([first]))[first]["grpc-status"] == "0"
            await asyncio.wait_for(drain, 5)
        assert [goaway.last_stream_id for goaway in goaways] == [ALL_STREAMS, first]
        assert GOAWAY_PING_TIMEOUT == 1.0

    async def test_stream_opened_and_cancelled_after_goaway_is_harmless(self) -> None:
        """A stream the client opens and resets in one batch after GOAWAY does not break the drain.

        grpcio does this: streams above GOAWAY's last id that it had already sent are
        cancelled at once, so the server reads their HEADERS and RST_STREAM together.
        """
        async with held_call() as held:
            client = held.client
            drain = asyncio.create_task(held.served.server.drain(5))
            client.answer_ping(await next_frame(client, PingFrame))
            final = await next_frame(client, GoAwayFrame)
            assert final.last_stream_id == held.stream_id
            late = client.h2.get_next_available_stream_id()
            client.h2.send_headers(late, client.request_headers(CREATE))
            client.h2.send_data(late, ADA, end_stream=True)
            client.h2.reset_stream(late, error_code=ErrorCodes.CANCEL)
            client.flush()
            await asyncio.sleep(0.05)
            held.store.gate.set()
            assert (await client.answer(held.stream_id))["grpc-status"] == "0"
            await asyncio.wait_for(drain, 5)
        assert len(await held.store.list_page(after=None, limit=10)) == 1

    async def test_call_waiting_in_the_accept_queue_is_served(self) -> None:
        """A connection still in the listener's accept queue when the drain starts, its call
        already sent (as a proxy's new connection has), is served and then sent away, not reset."""
        async with serving() as served:
            call = SentCall.on_new_connection(served.port)
            # Its first step (closing the listener) runs before the loop polls for accepts.
            drain = asyncio.create_task(served.server.drain(5))
            await call.expect_served_and_sent_away(drain)
        assert [user.email for user in await served.store.list_page(after=None, limit=10)] == [
            "ada@example.com"
        ]

    async def test_call_on_a_connection_accepted_as_the_drain_starts_is_served(self) -> None:
        """A connection asyncio accepted but had not set up yet when the drain started (on
        Python 3.11 closing the server dropped it) is served and then sent away, not reset."""
        async with serving() as served:
            call = SentCall.on_new_connection(served.port)
            # The next turn runs this coroutine, then asyncio's accept, which leaves setting
            # the connection up to a task that runs a turn later, after the drain's first step.
            await asyncio.sleep(0)
            drain = asyncio.create_task(served.server.drain(5))
            await call.expect_served_and_sent_away(drain)
        assert [user.email for user in await served.store.list_page(after=None, limit=10)] == [
            "ada@example.com"
        ]

    async def test_grace_period_bounds_the_wait(self) -> None:
        """A call that never finishes is cancelled once the grace period is over."""
        async with held_call() as held:
            started = time.monotonic()
            await asyncio.wait_for(held.served.server.drain(0.3), 5)
            assert 0.25 < time.monotonic() - started < 3


class TestDrainSteps:
    """The listener closes first; calls that outlive the grace period are cancelled."""

    async def test_listener_closes(self) -> None:
        """Once draining, a new connection is refused while an accepted call still runs."""
        async with held_call() as held:
            drain = asyncio.create_task(held.served.server.drain(5))
            await next_frame(held.client, GoAwayFrame)
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", held.served.port)
            assert held.store.waiting == 1
            held.store.gate.set()
            await asyncio.wait_for(drain, 5)

    async def test_calls_past_the_grace_period_are_cancelled(self) -> None:
        """A call still in the store when the grace period ends is cancelled and never stored."""
        async with held_call() as held:
            await asyncio.wait_for(held.served.server.drain(0.3), 5)
            # Cancelled where it waited: no call is left at the store's gate.
            assert held.store.waiting == 0
            try:
                answer = await held.client.answer(held.stream_id)
            except (asyncio.IncompleteReadError, ConnectionResetError):
                answer = {}
            held.store.gate.set()
            await asyncio.sleep(0.05)
            stored = await held.store.list_page(after=None, limit=10)
        assert answer.get("grpc-status") != "0"
        assert stored == []

    async def test_write_cancelled_by_the_drain_is_whole_or_absent(self, tmp_path: Path) -> None:
        """A create cut off by the grace period while SQLite waits on a lock is all or nothing."""
        path = tmp_path / "people.db"
        store = await SQLiteStore.open(path)
        try:
            async with serving(store=store) as served:
                blocker = sqlite3.connect(path, isolation_level=None)
                blocker.execute("BEGIN IMMEDIATE")  # the store's insert now waits for this lock
                client = await RawH2.connect(served.port)
                stream_id = client.call(CREATE, ADA)
                await until(lambda: bool(served.server.policy.running))
                await asyncio.sleep(0.2)
                await asyncio.wait_for(served.server.drain(0.3), 5)
                try:
                    answered = (await client.answer(stream_id)).get("grpc-status")
                except (asyncio.IncompleteReadError, ConnectionResetError):
                    answered = None
                client.close()
                blocker.execute("ROLLBACK")
                blocker.close()
            # Queued behind the cancelled insert on the store's one writer thread.
            await store.add(make_user(2))
            users = await store.list_page(after=None, limit=10)
        finally:
            await store.aclose()
        ada = [(u.name, u.email, u.version) for u in users if u.email == "ada@example.com"]
        assert ada in ([], [("Ada", "ada@example.com", 1)])
        assert answered != "0" or ada, "an acknowledged create must be stored"
        assert len(users) == len(ada) + 1


class TestHealth:
    """Health while draining."""

    def test_watch_sees_not_serving(self) -> None:
        """A health Watch open at SIGTERM receives NOT_SERVING before the server exits."""
        with (
            running_server("--database", "memory://") as server,
            grpc.insecure_channel(server.target) as channel,
        ):
            watch = channel.unary_stream(
                "/grpc.health.v1.Health/Watch",
                request_serializer=HealthCheckRequest.SerializeToString,
                response_deserializer=HealthCheckResponse.FromString,
            )
            answers = watch(HealthCheckRequest(service="people.UserService"), timeout=15)
            # The first answer may precede the first store check; wait for SERVING.
            while next(answers).status != HealthCheckResponse.SERVING:
                pass
            server.process.send_signal(signal.SIGTERM)
            assert next(answers).status == HealthCheckResponse.NOT_SERVING
            assert server.process.wait(timeout=15) == 0
