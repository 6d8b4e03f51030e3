"""Connection and load protections: timeouts, caps, stream floods and cancelled writes."""

from __future__ import annotations

import asyncio
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import Frame, GoAwayFrame, SettingsFrame

from people._gen.people import CreateUserRequest, User, UserIdRequest, UserServiceStub
from people.rpc.defaults import DEFAULT_QUEUE_TIMEOUT
from people.rpc.goaway import ALL_STREAMS
from people.store.sqlite import SQLiteStore
from tests.inprocess import GatedStore, RawH2, Served, frame, serving, until
from tests.pki import Pki, client_context
from tests.support import ServerProcess, running_server

CREATE = "/people.UserService/CreateUser"
UPDATE = "/people.UserService/UpdateUser"
GET = "/people.UserService/GetUserById"

#: Small timeouts so the whole file stays fast; bounds below allow for a busy machine.
HANDSHAKE = 0.3
IDLE = 0.5
SLACK = 1.5


async def eof_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Read and discard until the server closes; return the seconds that took."""
    started = time.monotonic()
    deadline = started + limit
    try:
        while await asyncio.wait_for(reader.read(65536), max(0.0, deadline - time.monotonic())):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {limit}s") from None
    return time.monotonic() - started


async def frames_until_eof(client: RawH2, limit: float) -> tuple[list[Frame], float]:
    """Read frames until the server closes; return them and the monotonic time of the EOF."""
    frames: list[Frame] = []
    deadline = time.monotonic() + limit
    while True:
        try:
            frames.append(await client.read_frame(max(0.0, deadline - time.monotonic())))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return frames, time.monotonic()
        except TimeoutError:
            raise AssertionError(f"the server kept the connection open for {limit}s") from None


async def frames_during(client: RawH2, seconds: float) -> list[Frame]:
    """Read frames for ``seconds``; fail if the server closes the connection meanwhile."""
    frames: list[Frame] = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            frames.append(await client.read_frame(remaining))
        except TimeoutError:
            break
        except (asyncio.IncompleteReadError, ConnectionResetError):
            raise AssertionError(f"the server closed the connection; frames: {frames}") from None
    return frames


def cancel(client: RawH2, stream_id: int) -> None:
    """Cancel a call the way a client does: RST_STREAM with CANCEL."""
    client.h2.reset_stream(stream_id, error_code=ErrorCodes.CANCEL)
    client.flush()


def create_request(name: str, email: str) -> bytes:
    """A framed CreateUser request."""
    return frame(bytes(CreateUserRequest(name=name, email=email)))


async def user_count(served: Served) -> int:
    """How many users the served store holds."""
    return len(await served.store.list_page(after=None, limit=100))


class TestHandshakeTimeout:
    """Connections that never become HTTP/2."""

    @pytest.mark.parametrize("sent", [b"", b"PRI * HTTP/2.0\r\n"], ids=["nothing", "half-preface"])
    async def test_connection_without_preface_is_closed(self, sent: bytes) -> None:
        """A connection that never completes the HTTP/2 preface is closed at handshake_timeout."""
        async with serving(handshake_timeout=HANDSHAKE) as served:
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(sent)
            took = await eof_after(reader, HANDSHAKE + SLACK)
            writer.close()
            await until(lambda: not served.server.protocols)
        assert took >= HANDSHAKE * 0.8


def client_hello(pki: Pki) -> bytes:
    """The first flight of a TLS client (its ClientHello), as it would go on the wire."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[ServerProcess]:
    """`people serve` over TLS with a short --handshake-timeout."""
    args = [
        "--database", "memory://", "--no-access-log", "--handshake-timeout", str(HANDSHAKE),
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
    ]  # fmt: skip
    with running_server(*args) as server:
        yield server


class TestTlsHandshakeTimeout:
    """Connections to a TLS server that never finish their TLS or HTTP/2 handshake."""

    async def test_half_a_client_hello(self, tls_server: ServerProcess, pki: Pki) -> None:
        """A client that sends half a ClientHello and stops is closed at --handshake-timeout."""
        hello = client_hello(pki)
        reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.port)
        writer.write(hello[: len(hello) // 2])
        took = await eof_after(reader, HANDSHAKE + SLACK)
        writer.close()
        assert took >= HANDSHAKE * 0.8

    async def test_tls_without_http2_preface(self, tls_server: ServerProcess, pki: Pki) -> None:
        """A client that completes TLS but sends no HTTP/2 preface is closed too."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", tls_server.port, ssl=client_context(pki), server_hostname="localhost"
        )
        took = await eof_after(reader, HANDSHAKE + SLACK)
        writer.close()
        assert took >= HANDSHAKE * 0.8


class TestIdleTimeout:
    """Connections that completed the handshake but carry no calls."""

    async def test_idle_connection_gets_goaway_then_eof(self) -> None:
        """A handshaken connection without calls gets GOAWAY(NO_ERROR) and EOF at idle_timeout."""
        async with serving(handshake_timeout=HANDSHAKE, idle_timeout=IDLE) as served:
            client = await RawH2.connect(served.port)
            started = time.monotonic()
            frames, closed_at = await frames_until_eof(client, IDLE + SLACK)
            client.close()
        goaways = [received for received in frames if isinstance(received, GoAwayFrame)]
        assert [(goaway.last_stream_id, goaway.error_code) for goaway in goaways] == [
            (ALL_STREAMS, ErrorCodes.NO_ERROR),
            (0, ErrorCodes.NO_ERROR),
        ], frames
        # Not the handshake timer: the handshake finished, so the idle timer closed it.
        assert closed_at - started >= IDLE * 0.9

    async def test_running_call_keeps_the_connection_open(self) -> None:
        """A connection whose call outlasts several idle timeouts stays open; the call answers."""
        store = GatedStore()
        async with serving(store=store, handshake_timeout=HANDSHAKE, idle_timeout=IDLE) as served:
            client = await RawH2.connect(served.port)
            stream_id = client.call(CREATE, create_request("Ada", "ada@example.com"))
            await until(lambda: store.waiting == 1)
            frames = await frames_during(client, 3 * IDLE)
            assert not [received for received in frames if isinstance(received, GoAwayFrame)]
            store.gate.set()
            answer = await client.answer(stream_id)
            client.close()
        assert answer["grpc-status"] == str(Status.OK.value)

    async def test_idle_time_counts_from_the_end_of_the_last_call(self) -> None:
        """After a long call ends, the connection stays open for a full idle_timeout."""
        store = GatedStore()
        async with serving(store=store, handshake_timeout=HANDSHAKE, idle_timeout=IDLE) as served:
            client = await RawH2.connect(served.port)
            stream_id = client.call(CREATE, create_request("Ada", "ada@example.com"))
            await until(lambda: store.waiting == 1)
            await asyncio.sleep(2.5 * IDLE)
            store.gate.set()
            answer = await client.answer(stream_id)
            ended = time.monotonic()
            frames, closed_at = await frames_until_eof(client, IDLE + SLACK)
            client.close()
        assert answer["grpc-status"] == str(Status.OK.value)
        assert [received for received in frames if isinstance(received, GoAwayFrame)]
        assert closed_at - ended >= IDLE * 0.9, closed_at - ended


class TestConnectionCap:
    """max_connections."""

    async def test_connection_past_the_cap_is_closed_and_the_others_work(self) -> None:
        """With max_connections=2 a third connection is closed at once; the first two still work."""
        async with serving(max_connections=2) as served:
            channels = [served.channel() for _ in range(2)]
            stubs = [UserServiceStub(channel) for channel in channels]
            for index, stub in enumerate(stubs):
                await stub.create_user(CreateUserRequest(name="A", email=f"a{index}@example.com"))
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            took = await eof_after(reader, 1.0)
            writer.close()
            for index, stub in enumerate(stubs):
                await stub.create_user(CreateUserRequest(name="B", email=f"b{index}@example.com"))
            assert len(served.server.protocols) == 2
            for channel in channels:
                channel.close()
        assert took < 1.0

    async def test_closed_connection_frees_its_place(self) -> None:
        """When one of max_connections closes, a new connection is admitted."""
        async with serving(max_connections=1) as served:
            first = served.channel()
            await UserServiceStub(first).create_user(CreateUserRequest(name="A", email="a@x.org"))
            first.close()
            await until(lambda: not served.server.protocols)
            second = served.channel()
            await UserServiceStub(second).create_user(CreateUserRequest(name="B", email="b@x.org"))
            second.close()

    async def test_refused_connections_leave_nothing_behind(self) -> None:
        """Connections refused at the cap leave no per-connection handler on the server."""
        async with serving(max_connections=1) as served:
            channel = served.channel()
            await UserServiceStub(channel).create_user(CreateUserRequest(name="A", email="a@x.org"))
            for _ in range(30):
                reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
                await eof_after(reader, 1.0)
                writer.close()
            # grpclib drops closed handlers in a periodic sweep; run it now.
            served.server.__gc_collect__()
            handlers = len(served.server._handlers)
            channel.close()
        assert handlers == 1


def occupy(stub: UserServiceStub, count: int, prefix: str = "busy") -> list[asyncio.Task[object]]:
    """Start ``count`` CreateUser calls in the background."""
    return [
        asyncio.create_task(
            stub.create_user(CreateUserRequest(name="Busy", email=f"{prefix}{i}@example.com"))
        )
        for i in range(count)
    ]


@dataclass
class Saturated:
    """A server whose every handler slot is held by a CreateUser waiting at the store's gate."""

    served: Served
    store: GatedStore
    channel: Channel
    busy: list[asyncio.Task[object]]

    async def release(self) -> None:
        """Open the gate and let the held calls finish."""
        self.store.gate.set()
        await asyncio.gather(*self.busy)


@asynccontextmanager
async def saturated(slots: int) -> AsyncIterator[Saturated]:
    """A server with ``slots`` handler slots, all of them busy."""
    store = GatedStore()
    async with serving(store=store, max_concurrent_calls=slots) as served:
        channel = served.channel()
        busy = occupy(UserServiceStub(channel), slots)
        await until(lambda: store.waiting == slots)
        try:
            yield Saturated(served, store, channel, busy)
        finally:
            channel.close()


class TestConcurrencyCap:
    """max_concurrent_calls: excess calls queue DEFAULT_QUEUE_TIMEOUT, then RESOURCE_EXHAUSTED."""

    async def test_excess_call_waits_then_is_resource_exhausted(self) -> None:
        """With every slot busy, a call waits the queue timeout, then gets RESOURCE_EXHAUSTED."""
        async with saturated(2) as full:
            stub = UserServiceStub(full.channel)
            started = time.monotonic()
            with pytest.raises(GRPCError) as caught:
                await stub.get_user_by_id(UserIdRequest(id="nobody"), timeout=10)
            waited = time.monotonic() - started
            await full.release()
            # Healthy afterwards: the slots are free again and nothing is left running.
            await asyncio.gather(*occupy(stub, 3, prefix="more"))
            await until(lambda: not full.served.server.policy.running)
        assert caught.value.status is Status.RESOURCE_EXHAUSTED
        assert "busy" in (caught.value.message or "")
        assert DEFAULT_QUEUE_TIMEOUT * 0.9 <= waited < DEFAULT_QUEUE_TIMEOUT + SLACK

    async def test_queued_call_runs_when_a_slot_frees(self) -> None:
        """A call queued behind a full server runs as soon as a slot frees within the timeout."""
        async with saturated(2) as full:
            stub = UserServiceStub(full.channel)
            queued = asyncio.create_task(stub.get_user_by_id(UserIdRequest(id="nobody")))
            await asyncio.sleep(DEFAULT_QUEUE_TIMEOUT / 4)
            assert not queued.done()
            full.store.gate.set()
            with pytest.raises(GRPCError) as caught:
                await queued
            await full.release()
        assert caught.value.status is Status.NOT_FOUND

    async def test_health_answers_while_every_slot_is_busy(self) -> None:
        """Health checks skip the concurrency cap, so probes answer on a saturated server."""
        async with saturated(1) as full:
            answer = await asyncio.wait_for(
                HealthStub(full.channel).Check(HealthCheckRequest()), DEFAULT_QUEUE_TIMEOUT / 2
            )
            await full.release()
        assert answer is not None
        assert answer.status == HealthCheckResponse.SERVING


class TestStreamFlood:
    """A client that ignores SETTINGS_MAX_CONCURRENT_STREAMS."""

    async def test_streams_past_the_limit_are_refused_alone(self) -> None:
        """150 streams at once: 100 are answered, 50 refused with REFUSED_STREAM; the
        connection lives on, and another client's calls all succeed meanwhile."""
        async with serving() as served:
            channel = served.channel()
            stub = UserServiceStub(channel)
            created = await stub.create_user(CreateUserRequest(name="Ada", email="ada@x.org"))
            flooder = await RawH2.connect(served.port)
            settings = await flooder.read_frame()
            assert isinstance(settings, SettingsFrame)
            assert settings.settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 100
            others = [
                asyncio.create_task(stub.get_user_by_id(UserIdRequest(id=created.id)))
                for _ in range(50)
            ]
            request = frame(bytes(UserIdRequest(id=created.id)))
            streams = [flooder.call(GET, request) for _ in range(150)]
            outcomes = list((await flooder.answers(streams)).values())
            answers = await asyncio.gather(*others)
            # The same connection still serves.
            again = await flooder.answer(flooder.call(GET, request))
            flooder.close()
            channel.close()
        refused = [o for o in outcomes if o.get(":reset") == str(ErrorCodes.REFUSED_STREAM)]
        answered = [o for o in outcomes if o.get("grpc-status") == "0"]
        assert (len(answered), len(refused)) == (100, 50)
        assert again["grpc-status"] == "0"
        assert [answer.email for answer in answers] == ["ada@x.org"] * 50


class TestCancelledWrites:
    """A call cancelled while its write is in the store."""

    async def test_cancelled_create_stores_nothing_and_frees_its_slot(self) -> None:
        """CreateUser cancelled inside the store stores no part of the user; serving goes on."""
        store = GatedStore()
        async with serving(store=store, max_concurrent_calls=1) as served:
            client = await RawH2.connect(served.port)
            stream_id = client.call(CREATE, create_request("Ada", "ada@example.com"))
            await until(lambda: store.waiting == 1)
            cancel(client, stream_id)
            await until(lambda: not served.server.policy.running)
            store.gate.set()
            await asyncio.sleep(0.05)
            stored = await user_count(served)
            # The one slot was given back, and the email was never taken.
            channel = served.channel()
            again = await UserServiceStub(channel).create_user(
                CreateUserRequest(name="Ada", email="ada@example.com"), timeout=5
            )
            user = await served.store.get(again.id)
            channel.close()
            client.close()
        assert stored == 0
        assert (user.name, user.email, user.version) == ("Ada", "ada@example.com", 1)

    async def test_cancelled_update_leaves_the_old_user_whole(self) -> None:
        """UpdateUser cancelled inside the store leaves the user as it was; the server serves on."""
        store = GatedStore(closed=False)
        async with serving(store=store, max_concurrent_calls=1) as served:
            channel = served.channel()
            stub = UserServiceStub(channel)
            created = await stub.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
            before = await served.store.get(created.id)
            store.gate.clear()
            client = await RawH2.connect(served.port)
            change = User(id=created.id, name="Grace", email="grace@example.com")
            stream_id = client.call(UPDATE, frame(bytes(change)))
            await until(lambda: store.waiting == 1)
            cancel(client, stream_id)
            await until(lambda: not served.server.policy.running)
            store.gate.set()
            await asyncio.sleep(0.05)
            after = await served.store.get(created.id)
            # The old email is still taken, the new one free, and updates still work.
            with pytest.raises(GRPCError) as taken:
                await stub.create_user(CreateUserRequest(name="X", email="ada@example.com"))
            await stub.create_user(CreateUserRequest(name="Grace", email="grace@example.com"))
            await stub.update_user(User(id=created.id, name="Ada Lovelace"), timeout=5)
            updated = await served.store.get(created.id)
            channel.close()
            client.close()
        assert after == before
        assert taken.value.status is Status.ALREADY_EXISTS
        assert (updated.name, updated.email, updated.version) == ("Ada Lovelace", before.email, 2)

    async def test_sqlite_write_cancelled_mid_commit_is_whole_or_absent(
        self, tmp_path: Path
    ) -> None:
        """CreateUser cancelled while SQLite waits on a lock leaves the whole user or nothing."""
        path = tmp_path / "people.db"
        store = await SQLiteStore.open(path)
        try:
            async with serving(store=store, max_concurrent_calls=1) as served:
                blocker = sqlite3.connect(path, isolation_level=None)
                blocker.execute("BEGIN IMMEDIATE")  # the store's insert now waits for this lock
                client = await RawH2.connect(served.port)
                stream_id = client.call(CREATE, create_request("Ada", "ada@example.com"))
                await asyncio.sleep(0.3)
                cancel(client, stream_id)
                await until(lambda: not served.server.policy.running)
                blocker.execute("ROLLBACK")
                blocker.close()
                channel = served.channel()
                stub = UserServiceStub(channel)
                # Queued behind the cancelled insert on the store's one writer thread.
                other = await stub.create_user(
                    CreateUserRequest(name="Bob", email="bob@example.com"), timeout=10
                )
                users = await store.list_page(after=None, limit=10)
                ada = [
                    (user.name, user.email, user.version) for user in users if user.id != other.id
                ]
                try:
                    await stub.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
                    status = Status.OK
                except GRPCError as exc:
                    status = exc.status
                channel.close()
                client.close()
        finally:
            await store.aclose()
        assert ada in ([], [("Ada", "ada@example.com", 1)])
        assert status is (Status.ALREADY_EXISTS if ada else Status.OK)
