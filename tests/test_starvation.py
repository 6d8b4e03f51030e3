"""No starvation: calls hold slots only while they run, and nothing runs forever."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame, PingFrame

from people._gen.people import (
    CreateUserRequest,
    CreateUserResponse,
    UserIdRequest,
    UserServiceStub,
)
from people.rpc.goaway import ALL_STREAMS
from tests.inprocess import GatedStore, RawH2, frame, serving, until

GET = "/people.UserService/GetUserById"
CREATE = "/people.UserService/CreateUser"
WATCH = "/grpc.health.v1.Health/Watch"


def open_without_body(client: RawH2, count: int, method: str = GET) -> list[int]:
    """Open ``count`` calls whose headers arrive and whose request never does."""
    streams = []
    for _ in range(count):
        stream_id = client.h2.get_next_available_stream_id()
        client.h2.send_headers(stream_id, client.request_headers(method))
        streams.append(stream_id)
    client.flush()
    return streams


class TestBodilessStreams:
    """Streams whose HEADERS arrive and whose request message never does."""

    async def test_they_hold_no_slot(self) -> None:
        """300 body-less streams on 3 connections, with 4 slots: other calls are served."""
        async with serving(max_concurrent_calls=4, request_timeout=30) as served:
            attackers = [await RawH2.connect(served.port) for _ in range(3)]
            for attacker in attackers:
                open_without_body(attacker, 100)
            await until(lambda: len(served.server.policy.running) == 300)
            channel = served.channel()
            stub = UserServiceStub(channel)
            created = await stub.create_user(
                CreateUserRequest(name="Ada", email="ada@example.com"), timeout=5
            )
            answers = await asyncio.gather(
                *(stub.get_user_by_id(UserIdRequest(id=created.id), timeout=5) for _ in range(20))
            )
            channel.close()
            for attacker in attackers:
                attacker.close()
        assert {answer.email for answer in answers} == {"ada@example.com"}

    async def test_they_end_at_the_request_timeout(self) -> None:
        """A call whose request does not arrive gets DEADLINE_EXCEEDED saying so."""
        async with serving(request_timeout=0.3) as served:
            client = await RawH2.connect(served.port)
            (stream_id,) = open_without_body(client, 1)
            partial = frame(bytes(UserIdRequest(id="someone")))[:7]
            client.h2.send_data(stream_id, partial)
            client.flush()
            answer = (await client.answers([stream_id]))[stream_id]
            client.close()
            await until(lambda: not served.server.policy.running)
        assert answer["grpc-status"] == str(Status.DEADLINE_EXCEEDED.value)
        assert "did not arrive" in answer["grpc-message"]


class TestMaxCallDuration:
    """The server's limit on how long one unary call may run."""

    async def test_a_call_past_it_is_deadline_exceeded(self) -> None:
        """A call stuck in the store ends with DEADLINE_EXCEEDED at max_call_duration."""
        store = GatedStore()
        async with serving(store=store, max_call_duration=0.3) as served:
            channel = served.channel()
            stub = UserServiceStub(channel)
            with pytest.raises(GRPCError) as caught:
                await stub.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
            channel.close()
            await until(lambda: not served.server.policy.running)
        assert caught.value.status is Status.DEADLINE_EXCEEDED
        assert await store.list_page(after=None, limit=1) == []

    async def test_a_shorter_client_deadline_wins(self) -> None:
        """A client's 0.3 s deadline ends the call and its store write, despite a 60 s limit."""
        store = GatedStore()
        async with serving(store=store, max_call_duration=60) as served:
            client = await RawH2.connect(served.port)
            request = frame(bytes(CreateUserRequest(name="Ada", email="ada@example.com")))
            stream_id = client.call(CREATE, request, extra=[("grpc-timeout", "300m")])
            answer = (await client.answers([stream_id]))[stream_id]
            await until(lambda: store.waiting == 0)
            client.close()
        assert answer["grpc-status"] == str(Status.DEADLINE_EXCEEDED.value)
        assert await store.list_page(after=None, limit=1) == []

    async def test_health_is_not_limited(self) -> None:
        """Calls that finish in time are untouched by the limit."""
        async with serving(max_call_duration=0.3) as served:
            channel = served.channel()
            answer = await HealthStub(channel).Check(HealthCheckRequest(), timeout=5)
            channel.close()
        assert answer is not None


class TestStreamingSlots:
    """Long-lived streams have slots of their own."""

    async def test_watches_do_not_take_unary_slots(self) -> None:
        """With one unary slot, five open health Watch streams leave unary calls served."""
        async with serving(max_concurrent_calls=1) as served:
            channel = served.channel()
            watches = []
            for _ in range(5):
                stream = HealthStub(channel).Watch.open()
                await stream.__aenter__()
                await stream.send_message(HealthCheckRequest(), end=True)
                await stream.recv_message()
                watches.append(stream)
            stub = UserServiceStub(channel)
            created = await stub.create_user(
                CreateUserRequest(name="Ada", email="ada@example.com"), timeout=5
            )
            assert (await stub.get_user_by_id(UserIdRequest(id=created.id))).name == "Ada"
            for stream in watches:
                await stream.cancel()
                await stream.__aexit__(None, None, None)
            channel.close()

    async def test_per_connection_cap(self) -> None:
        """The eleventh Watch on one connection is RESOURCE_EXHAUSTED; another connection is not."""
        async with serving() as served:
            client = await RawH2.connect(served.port)
            request = frame(bytes(HealthCheckRequest().SerializeToString()))
            streams = [client.call(WATCH, request) for _ in range(11)]
            eleventh = (await client.answers(streams[-1:]))[streams[-1]]
            other = served.channel()
            second = HealthStub(other).Watch.open()
            async with second:
                await second.send_message(HealthCheckRequest(), end=True)
                assert await second.recv_message() is not None
                await second.cancel()
            other.close()
            client.close()
        assert eleventh["grpc-status"] == str(Status.RESOURCE_EXHAUSTED.value)
        assert "streaming calls" in eleventh["grpc-message"]

    async def test_server_cap(self) -> None:
        """Past max_streaming_calls a Watch waits, then is RESOURCE_EXHAUSTED; unary calls go on."""
        async with serving(max_streaming_calls=2) as served:
            client = await RawH2.connect(served.port)
            request = frame(bytes(HealthCheckRequest().SerializeToString()))
            streams = [client.call(WATCH, request) for _ in range(3)]
            third = (await client.answers(streams[-1:]))[streams[-1]]
            channel = served.channel()
            answer = await HealthStub(channel).Check(HealthCheckRequest(), timeout=5)
            channel.close()
            client.close()
        assert third["grpc-status"] == str(Status.RESOURCE_EXHAUSTED.value)
        assert answer is not None


class TestMaxConnectionAge:
    """Connections drained after an age, so balancers can move long-lived clients."""

    async def test_goaway_after_the_age_then_closed_when_idle(self) -> None:
        """An aged connection gets the two-phase GOAWAY and is closed once its calls end."""
        async with serving(max_connection_age=0.3) as served:
            client = await RawH2.connect(served.port)
            goaways: list[tuple[int, int]] = []
            while len(goaways) < 2:
                received = await client.read_frame(5)
                client.answer_ping(received)
                if isinstance(received, GoAwayFrame):
                    goaways.append((received.last_stream_id, received.error_code))
            await until(lambda: not served.server.protocols)
            client.close()
        assert goaways == [(ALL_STREAMS, ErrorCodes.NO_ERROR), (0, ErrorCodes.NO_ERROR)]

    async def test_a_running_call_finishes_within_the_grace(self) -> None:
        """A call running when the age comes still answers; the connection closes after it."""
        store = GatedStore()
        async with serving(store=store, max_connection_age=0.3) as served:
            client = await RawH2.connect(served.port)
            create = frame(bytes(CreateUserRequest(name="Ada", email="ada@example.com")))
            stream_id = client.call("/people.UserService/CreateUser", create)
            await until(lambda: store.waiting == 1)
            while not isinstance(received := await client.read_frame(5), PingFrame):
                pass
            client.answer_ping(received)
            await asyncio.sleep(0.1)
            assert len(served.server.protocols) == 1
            store.gate.set()
            answer = (await client.answers([stream_id]))[stream_id]
            await until(lambda: not served.server.protocols)
            client.close()
        assert answer["grpc-status"] == "0"

    async def test_the_grace_ends_a_call_that_runs_on(self) -> None:
        """A call still running max_connection_age_grace after the GOAWAY is cut off."""
        store = GatedStore()
        async with serving(
            store=store, max_connection_age=0.2, max_connection_age_grace=0.3
        ) as served:
            channel = served.channel()
            stub = UserServiceStub(channel)
            with_error: list[BaseException] = []
            try:
                await stub.create_user(
                    CreateUserRequest(name="Ada", email="ada@example.com"), timeout=10
                )
            except Exception as exc:  # the connection was closed under the call
                with_error.append(exc)
            await until(lambda: not served.server.protocols)
            channel.close()
        assert with_error

    async def test_grpc_clients_reconnect_transparently(self) -> None:
        """A grpcio channel keeps working across its connections' ages, without a failed call."""
        async with serving(max_connection_age=0.2) as served:

            def call_for_a_while() -> int:
                with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
                    create = channel.unary_unary(
                        "/people.UserService/CreateUser",
                        request_serializer=bytes,
                        response_deserializer=CreateUserResponse.parse,
                    )
                    for number in range(40):
                        request = CreateUserRequest(name="Ada", email=f"ada{number}@example.com")
                        create(request, timeout=5)
                        time.sleep(0.02)
                return 40

            created = await asyncio.to_thread(call_for_a_while)
        assert created == 40
        assert len(await served.store.list_page(after=None, limit=100)) == 40
