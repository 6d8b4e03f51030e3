"""HTTP/2 abuse costs only the abuser: raw frames from one connection, a canary on another."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
)

from people._gen.people import CreateUserRequest, UserIdRequest, UserServiceStub
from tests.inprocess import RawH2, Served, frame, serving, until

GET = "/people.UserService/GetUserById"
#: Generous bound for the server to cut an abuser off; it only detects a hang.
CUTOFF = 10.0


@dataclasses.dataclass
class Canary:
    """Another client's GetUserById calls, running while an attack goes on."""

    answered: int = 0
    failed: list[BaseException] = dataclasses.field(default_factory=list)


@asynccontextmanager
async def canary(served: Served) -> AsyncIterator[Canary]:
    """Keep one innocent client calling on its own connection; every call must succeed."""
    channel = served.channel()
    stub = UserServiceStub(channel)
    created = await stub.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
    result = Canary()
    stop = asyncio.Event()

    async def call_again_and_again() -> None:
        while not stop.is_set():
            try:
                await stub.get_user_by_id(UserIdRequest(id=created.id), timeout=5)
            except Exception as exc:  # the assertion below shows what went wrong
                result.failed.append(exc)
            else:
                result.answered += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(call_again_and_again())
    try:
        yield result
    finally:
        stop.set()
        await task
        channel.close()
    assert result.failed == []
    assert result.answered > 0


async def frames_until_closed(client: RawH2) -> list[Frame]:
    """Every frame the server sends until it closes the connection."""
    frames: list[Frame] = []
    while True:
        try:
            frames.append(await client.read_frame(CUTOFF))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return frames


def calmed(frames: list[Frame], caplog: pytest.LogCaptureFixture, reason: str) -> bool:
    """True if the server closed the connection for ``reason`` with ENHANCE_YOUR_CALM.

    The GOAWAY frame itself reaches the client only when it is not sending: a
    socket closed with unread data answers with a TCP reset, which discards
    what the client had not read yet. The server's log line is always there.
    """
    goaways = [received.error_code for received in frames if isinstance(received, GoAwayFrame)]
    logged = [
        record.getMessage()
        for record in caplog.records
        if "ENHANCE_YOUR_CALM" in record.getMessage() and reason in record.getMessage()
    ]
    return bool(logged) and goaways in ([], [ErrorCodes.ENHANCE_YOUR_CALM])


async def flood(client: RawH2, make: Callable[[int], bytes], count: int) -> None:
    """Write ``count`` raw frames, yielding to the loop now and then."""
    for index in range(count):
        try:
            client.writer.write(make(index))
        except (ConnectionResetError, BrokenPipeError):
            return
        if index % 100 == 0:
            await asyncio.sleep(0)


class TestRapidReset:
    """CVE-2023-44487: streams opened and cancelled at once, in a loop."""

    async def test_the_abuser_is_cut_off_and_others_are_served(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Open-and-reset in a loop gets GOAWAY ENHANCE_YOUR_CALM; the canary never fails."""
        async with serving() as served:
            async with canary(served):
                attacker = await RawH2.connect(served.port)
                request = frame(bytes(UserIdRequest(id="nobody")))
                for index in range(3000):
                    stream_id = attacker.call(GET, request)
                    attacker.h2.reset_stream(stream_id, error_code=ErrorCodes.CANCEL)
                    attacker.flush()
                    if index % 50 == 0:
                        await asyncio.sleep(0)
                    if attacker.writer.is_closing():
                        break
                frames = await frames_until_closed(attacker)
                attacker.close()
            # Nothing of the attack is left running.
            await until(lambda: not served.server.policy.running)
        assert calmed(frames, caplog, "cancelled at once")

    async def test_a_client_that_cancels_some_calls_is_served(self) -> None:
        """A client that cancels a third of its 300 calls keeps its connection."""
        async with serving() as served:
            client = await RawH2.connect(served.port)
            request = frame(bytes(UserIdRequest(id="nobody")))
            answers: dict[int, dict[str, str]] = {}
            for _ in range(10):
                kept = []
                for index in range(30):
                    stream_id = client.call(GET, request)
                    if index % 3 == 0:
                        client.h2.reset_stream(stream_id, error_code=ErrorCodes.CANCEL)
                        client.flush()
                    else:
                        kept.append(stream_id)
                answers.update(await client.answers(kept))
            client.close()
        assert len(answers) == 200
        assert all(answer.get("grpc-status") == "5" for answer in answers.values())


class TestStreamsPastTheLimit:
    """A client that keeps opening far more streams than SETTINGS_MAX_CONCURRENT_STREAMS."""

    async def test_persistent_excess_is_cut_off(self, caplog: pytest.LogCaptureFixture) -> None:
        """1000 streams at once (limit 100): refused one by one, then ENHANCE_YOUR_CALM."""
        async with serving() as served, canary(served):
            attacker = await RawH2.connect(served.port)
            # h2 would keep the client itself within the limit: write the frames raw.
            attacker.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 2000})
            request = frame(bytes(UserIdRequest(id="nobody")))
            block = attacker.h2.encoder.encode(attacker.request_headers(GET))
            for number in range(1000):
                stream_id = 2 * number + 1
                attacker.writer.write(
                    HeadersFrame(stream_id, data=block, flags=["END_HEADERS"]).serialize()
                    + DataFrame(stream_id, data=request, flags=["END_STREAM"]).serialize()
                )
            frames = await frames_until_closed(attacker)
            attacker.close()
        assert calmed(frames, caplog, "")


class TestControlFloods:
    """Control frames with no call between them."""

    async def test_ping_flood(self, caplog: pytest.LogCaptureFixture) -> None:
        """PING after PING, never a call: ENHANCE_YOUR_CALM; the canary is served."""
        async with serving() as served, canary(served):
            attacker = await RawH2.connect(served.port)
            await flood(
                attacker, lambda n: PingFrame(0, opaque_data=n.to_bytes(8)).serialize(), 5000
            )
            assert calmed(await frames_until_closed(attacker), caplog, "flood")
            attacker.close()

    async def test_settings_flood(self, caplog: pytest.LogCaptureFixture) -> None:
        """SETTINGS after SETTINGS: ENHANCE_YOUR_CALM."""
        async with serving() as served, canary(served):
            attacker = await RawH2.connect(served.port)
            settings = SettingsFrame(0, settings={SettingCodes.ENABLE_PUSH: 0}).serialize()
            await flood(attacker, lambda n: settings, 5000)
            assert calmed(await frames_until_closed(attacker), caplog, "flood")
            attacker.close()

    async def test_priority_flood(self, caplog: pytest.LogCaptureFixture) -> None:
        """PRIORITY after PRIORITY: ENHANCE_YOUR_CALM."""
        async with serving() as served, canary(served):
            attacker = await RawH2.connect(served.port)
            await flood(
                attacker, lambda n: PriorityFrame(2 * n + 1, depends_on=0).serialize(), 5000
            )
            assert calmed(await frames_until_closed(attacker), caplog, "flood")
            attacker.close()

    async def test_empty_data_flood(self, caplog: pytest.LogCaptureFixture) -> None:
        """Empty DATA frames on an open stream, forever: ENHANCE_YOUR_CALM."""
        async with serving() as served, canary(served):
            attacker = await RawH2.connect(served.port)
            stream_id = attacker.h2.get_next_available_stream_id()
            attacker.h2.send_headers(stream_id, attacker.request_headers(GET))
            attacker.flush()
            await flood(attacker, lambda n: DataFrame(stream_id, data=b"").serialize(), 5000)
            assert calmed(await frames_until_closed(attacker), caplog, "flood")
            attacker.close()

    async def test_pings_between_calls_are_fine(self) -> None:
        """Pings interleaved with calls (as BDP probes are) never trip the guard."""
        async with serving() as served:
            client = await RawH2.connect(served.port)
            request = frame(bytes(UserIdRequest(id="nobody")))
            for round_ in range(40):
                for number in range(20):
                    ping = PingFrame(0, opaque_data=(round_ * 100 + number).to_bytes(8))
                    client.writer.write(ping.serialize())
                answer = await client.answers([client.call(GET, request)])
                assert next(iter(answer.values()))["grpc-status"] == "5"
            client.close()


class TestBackpressure:
    """A peer that sends but never reads what the server answers."""

    async def test_write_buffer_stays_bounded(self) -> None:
        """While a peer floods PINGs and reads nothing, the server stops reading from it:
        its write buffer stays small, and other clients are served."""
        async with serving() as served, canary(served):
            # Only the back-pressure is under test here, not the flood guard.
            served.server.limits = dataclasses.replace(
                served.server.limits, control_burst=10**9, control_per_second=10**9
            )
            attacker = await RawH2.connect(served.port)
            await until(lambda: len(served.server.protocols) == 2)
            port = attacker.writer.get_extra_info("sockname")[1]
            victim = next(
                protocol
                for protocol in served.server.protocols
                if protocol.connection.get_peer().addr() == ("127.0.0.1", port)
            )
            biggest = 0
            ping = PingFrame(0, opaque_data=b"12345678").serialize()
            for _ in range(200):
                attacker.writer.write(ping * 5000)
                await asyncio.sleep(0.005)
                biggest = max(biggest, victim.connection_transport().get_write_buffer_size())
            attacker.writer.transport.abort()
        # 1,000,000 PINGs asked for 17 MB of answers: far less was ever queued.
        assert biggest < 2 * 1024 * 1024
