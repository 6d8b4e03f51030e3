"""The fast lane answers cached reads inside data_received, keeping the normal path's promises."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame, PingFrame

from people._gen.people import (
    CreateUserRequest,
    Empty,
    ListUsersRequest,
    UserIdRequest,
    UserServiceStub,
)
from people._gen.people import User as UserMessage
from people.domain.model import User
from people.domain.ports import UserStore
from people.store.memory import MemoryStore
from tests.inprocess import GatedStore, RawH2, Served, call_raw, frame, serving, until

GET = "/people.UserService/GetUserById"
CREATE = "/people.UserService/CreateUser"
LIST = "/people.UserService/ListUsers"
ALL = "/people.UserService/GetAllUsers"
TOKEN = "fast-lane-token-5e1d"
#: Whether the server runs the fast lane, for tests that must hold both ways.
LANES = pytest.mark.parametrize("fast_lane", [True, False], ids=["fast", "normal"])


@dataclass
class Warm:
    """A server with one user whose GetUserById answer is already in the cache."""

    served: Served
    user_id: str

    @property
    def request(self) -> bytes:
        """A framed GetUserById for the user."""
        return frame(bytes(UserIdRequest(id=self.user_id)))

    @property
    def answered(self) -> int:
        """Calls the fast lane answered so far."""
        return self.served.server.fast_lane.answered


@asynccontextmanager
async def warm(
    fast_lane: bool = True, *, store: UserStore | None = None, **settings: Any
) -> AsyncIterator[Warm]:
    """Serve, create a user, and read it once so its answer is cached."""
    async with serving(store=store, fast_lane=fast_lane, **settings) as served:
        channel = served.channel()
        metadata = {"authorization": f"Bearer {TOKEN}"} if "token_file" in settings else None
        stub = UserServiceStub(channel, metadata=metadata)
        created = await stub.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
        await stub.get_user_by_id(UserIdRequest(id=created.id))
        channel.close()
        yield Warm(served, created.id)


async def one_call(client: RawH2, message: bytes, extra: list[tuple[str, str]]) -> dict[str, str]:
    """Send one unary GetUserById with ``extra`` headers; return its headers and trailers."""
    stream_id = client.call(GET, message, extra=extra)
    return (await client.answers([stream_id]))[stream_id]


class TestTakingTheLane:
    async def test_cache_hits_take_the_lane(self) -> None:
        """After a first read (a miss), repeated reads are answered by the lane, same bytes."""
        async with serving() as served:
            channel = served.channel()
            created = await UserServiceStub(channel).create_user(
                CreateUserRequest(name="Ada", email="ada@example.com")
            )
            channel.close()
            raw = served.raw_channel()
            request = bytes(UserIdRequest(id=created.id))
            normal = await call_raw(raw, GET, request)
            assert served.server.fast_lane.answered == 0
            fast = [await call_raw(raw, GET, request) for _ in range(20)]
            taken = served.server.fast_lane.answered
            raw.close()
        assert taken == 20
        assert set(fast) == {normal}

    async def test_grpc_c_core_frame_order(self) -> None:
        """A WINDOW_UPDATE between HEADERS and DATA, as grpcio sends it, keeps calls in the lane."""
        async with warm() as server:
            lane = server.served.server.fast_lane
            before = (lane.answered, lane.deferred)
            client = await RawH2.connect(server.served.port)
            stream_ids = []
            for message, path in [
                (server.request, GET),
                (frame(bytes(CreateUserRequest(name="Bo", email="bo@example.com"))), CREATE),
            ]:
                stream_id = client.h2.get_next_available_stream_id()
                client.h2.send_headers(stream_id, RawH2.request_headers(path))
                client.h2.increment_flow_control_window(65535, stream_id=stream_id)
                client.h2.send_data(stream_id, message, end_stream=True)
                client.flush()  # one write: HEADERS, WINDOW_UPDATE, DATA
                stream_ids.append(stream_id)
            answers = await client.answers(stream_ids)
            taken = (lane.answered - before[0], lane.deferred - before[1])
            client.close()
        assert [answers[stream_id]["grpc-status"] for stream_id in stream_ids] == ["0", "0"]
        assert taken == (1, 1)

    async def test_off_means_off(self) -> None:
        """With --no-fast-lane no call takes it."""
        async with warm(fast_lane=False) as server:
            raw = server.served.raw_channel()
            for _ in range(5):
                await call_raw(raw, GET, bytes(UserIdRequest(id=server.user_id)))
            raw.close()
        assert server.answered == 0

    @pytest.mark.parametrize(
        ("method", "request_message"),
        [
            (LIST, bytes(ListUsersRequest(page_size=5))),
            (LIST, bytes(ListUsersRequest(page_size=5, filter='name = "A*"', order_by="name"))),
            (ALL, bytes(Empty())),
        ],
        ids=["ListUsers", "ListUsers-filtered", "GetAllUsers"],
    )
    async def test_every_cached_read(self, method: str, request_message: bytes) -> None:
        """ListUsers pages (filtered or not) and GetAllUsers take the lane from their 2nd call."""
        async with warm() as server:
            raw = server.served.raw_channel()
            first = await call_raw(raw, method, request_message)
            before = server.answered
            second = await call_raw(raw, method, request_message)
            raw.close()
        assert first == second
        assert server.answered == before + 1

    async def test_filters_are_part_of_the_key(self) -> None:
        """A cached page is never the lane's answer to the same page with another filter."""
        async with warm() as server:
            raw = server.served.raw_channel()
            every = bytes(ListUsersRequest(page_size=5))
            nobody = bytes(ListUsersRequest(page_size=5, filter='name = "Zed"'))
            await call_raw(raw, LIST, every)
            before = server.answered
            filtered = await call_raw(raw, LIST, nobody)
            unfiltered = await call_raw(raw, LIST, every)
            raw.close()
        assert filtered != unfiltered
        assert server.answered == before + 1  # the unfiltered repeat only

    async def test_misses_and_failures_do_not(self) -> None:
        """A first read, an unknown id and writes other than CreateUser take the normal path."""
        async with warm() as server:
            before = server.answered
            channel = server.served.channel()
            stub = UserServiceStub(channel)
            await stub.update_user(UserMessage(id=server.user_id, name="Ada King"))
            await stub.delete_user_by_id(UserIdRequest(id=server.user_id))
            await stub.list_users(ListUsersRequest(page_size=3))
            with pytest.raises(Exception, match="not found"):
                await stub.get_user_by_id(UserIdRequest(id="nobody"))
            channel.close()
        assert server.answered == before


class TestSamePromises:
    """Requests the lane would answer but for one thing wrong get the normal path's answer."""

    @LANES
    async def test_access_lines(self, fast_lane: bool, caplog: pytest.LogCaptureFixture) -> None:
        """A cached read and a create write the same access lines on the lane as off it."""
        async with warm(fast_lane=fast_lane) as server:
            lane = server.served.server.fast_lane
            before = (lane.answered, lane.deferred)
            caplog.set_level(logging.INFO, logger="people.access")
            caplog.clear()
            raw = server.served.raw_channel()
            await call_raw(raw, GET, bytes(UserIdRequest(id=server.user_id)))
            await call_raw(raw, CREATE, bytes(CreateUserRequest(name="Bo", email="bo@example.org")))
            raw.close()
            taken = (lane.answered - before[0], lane.deferred - before[1])
        lines = [
            (record.access["method"], record.access["status"])  # type: ignore[attr-defined] # set by extra=
            for record in caplog.records
            if record.name == "people.access"
        ]
        assert lines == [(GET, "OK"), (CREATE, "OK")]
        assert taken == ((1, 1) if fast_lane else (0, 0))

    @LANES
    @pytest.mark.parametrize(
        ("extra", "status"),
        [
            ([("grpc-encoding", "gzip")], "12"),
            ([("grpc-timeout", "banana")], "3"),
            ([("grpc-timeout", "0n")], "4"),
        ],
        ids=["encoding", "bad-timeout", "expired"],
    )
    async def test_headers(
        self, fast_lane: bool, extra: list[tuple[str, str]], status: str
    ) -> None:
        """An unknown encoding, a malformed or an already expired grpc-timeout."""
        async with warm(fast_lane=fast_lane) as server:
            client = await RawH2.connect(server.served.port)
            answer = await one_call(client, server.request, extra)
            client.close()
            assert server.answered == 0 or not fast_lane
        assert answer["grpc-status"] == status

    @LANES
    async def test_content_type(self, fast_lane: bool) -> None:
        """A content-type that is not gRPC's is refused the same way."""
        async with warm(fast_lane=fast_lane) as server:
            client = await RawH2.connect(server.served.port)
            stream_id = client.h2.get_next_available_stream_id()
            headers = [
                (name, "application/json" if name == "content-type" else value)
                for name, value in client.request_headers(GET)
            ]
            client.h2.send_headers(stream_id, headers)
            client.h2.send_data(stream_id, server.request, end_stream=True)
            client.flush()
            answer = (await client.answers([stream_id]))[stream_id]
            client.close()
        assert (answer[":status"], answer["grpc-status"]) == ("415", "2")

    @LANES
    @pytest.mark.parametrize(
        ("body", "status"),
        [
            ("compressed", "13"),
            ("two messages", "13"),
            ("truncated", "13"),
            ("not protobuf", "13"),
            ("too large", "8"),
        ],
    )
    async def test_bodies(self, fast_lane: bool, body: str, status: str) -> None:
        """A compressed, doubled, truncated, malformed or oversized request."""
        async with warm(fast_lane=fast_lane, max_receive_message_bytes=1024) as server:
            message = bytes(UserIdRequest(id=server.user_id))
            data = {
                "compressed": frame(message, compressed=True),
                "two messages": server.request * 2,
                "truncated": server.request[:-3],
                "not protobuf": frame(b"\x0a\xff\xff\xff"),
                "too large": frame(message + b"\x12" + bytes([0x80, 0x10]) + b"x" * 2048),
            }[body]
            client = await RawH2.connect(server.served.port)
            answer = await one_call(client, data, [])
            client.close()
            assert server.answered == 0 or not fast_lane
        assert answer["grpc-status"] == status

    @LANES
    async def test_bearer_tokens(self, fast_lane: bool, tmp_path: Path) -> None:
        """Without the token the call is UNAUTHENTICATED; with it the lane answers it."""
        tokens = tmp_path / "tokens"
        tokens.write_text(f"{TOKEN}\n", encoding="utf-8")
        async with warm(fast_lane=fast_lane, token_file=tokens) as server:
            client = await RawH2.connect(server.served.port)
            refused = await one_call(client, server.request, [])
            wrong = await one_call(client, server.request, [("authorization", "Bearer nope")])
            before = server.answered
            good = await one_call(client, server.request, [("authorization", f"Bearer {TOKEN}")])
            client.close()
            taken = server.answered - before
        assert (refused["grpc-status"], wrong["grpc-status"], good["grpc-status"]) == (
            "16",
            "16",
            "0",
        )
        assert taken == (1 if fast_lane else 0)

    async def test_drain_refuses_late_streams(self) -> None:
        """After the final GOAWAY a cached read above its last stream id is REFUSED."""
        store = GatedStore(closed=False)
        async with warm(store=store) as server:
            store.gate.clear()
            client = await RawH2.connect(server.served.port)
            held = client.call(CREATE, frame(bytes(CreateUserRequest(name="B", email="b@x.org"))))
            await until(lambda: store.waiting == 1)
            drain = asyncio.create_task(server.served.server.drain(5))
            while not isinstance(received := await client.read_frame(), PingFrame):
                pass
            client.answer_ping(received)
            while not isinstance(await client.read_frame(), GoAwayFrame):
                pass
            before = server.answered
            late = await one_call(client, server.request, [])
            store.gate.set()
            finished = (await client.answers([held]))[held]
            client.close()
            await asyncio.wait_for(drain, 5)
        assert late[":reset"] == str(ErrorCodes.REFUSED_STREAM)
        assert finished["grpc-status"] == "0"
        assert server.answered == before

    async def test_small_flow_control_window(self) -> None:
        """A client whose window cannot take the answer at once is served by the normal path."""
        async with warm() as server:
            client = await RawH2.connect(server.served.port)
            client.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 8})
            client.flush()
            await asyncio.sleep(0.05)
            before = server.answered
            stream_id = client.call(GET, server.request)
            await asyncio.sleep(0.1)
            client.h2.increment_flow_control_window(65535, stream_id=stream_id)
            client.flush()
            answer = (await client.answers([stream_id]))[stream_id]
            client.close()
        assert answer["grpc-status"] == "0"
        assert server.answered == before


class CountingStore(MemoryStore):
    """A memory store that counts single-user reads."""

    gets = 0

    async def get(self, user_id: str) -> User:
        """Count, then read."""
        self.gets += 1
        return await super().get(user_id)


class TestWithoutTheReadCache:
    async def test_every_read_reaches_the_store(self) -> None:
        """With --no-read-cache nothing is kept: no read takes the lane, each reads the store."""
        store = CountingStore()
        async with warm(store=store, read_cache=False) as server:
            before = store.gets
            raw = server.served.raw_channel()
            for _ in range(3):
                await call_raw(raw, GET, bytes(UserIdRequest(id=server.user_id)))
            raw.close()
        assert server.answered == 0
        assert store.gets == before + 3
