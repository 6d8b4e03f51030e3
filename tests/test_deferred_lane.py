"""CreateUser takes the fast lane's deferred path and keeps every promise of the normal path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import DataFrame, Frame

from people._gen.people import CreateUserRequest, CreateUserResponse, UserServiceStub
from people.domain.model import User
from people.domain.ports import UserStore
from people.store.memory import MemoryStore
from tests.inprocess import GatedStore, RawH2, Served, call_raw, frame, serving, until

CREATE = "/people.UserService/CreateUser"
#: Whether the server runs the fast lane, for tests that must hold both ways.
LANES = pytest.mark.parametrize("fast_lane", [True, False], ids=["fast", "normal"])


def create(name: str, email: str) -> bytes:
    """A framed CreateUser request."""
    return frame(bytes(CreateUserRequest(name=name, email=email)))


@asynccontextmanager
async def served(
    fast_lane: bool = True, *, store: UserStore | None = None, **settings: Any
) -> AsyncIterator[Served]:
    """A server (on ``store``) with or without the fast lane."""
    async with serving(store=store, fast_lane=fast_lane, **settings) as running:
        yield running


def deferred(running: Served) -> int:
    """Calls the lane answered when their coroutine finished."""
    return running.server.fast_lane.deferred


class FailingStore(MemoryStore):
    """A memory store whose adds raise an unexpected error."""

    async def add(self, user: User) -> None:
        """Fail as a bug would."""
        raise RuntimeError("disk on fire at /var/lib/people")


class TestTakingTheLane:
    async def test_creates_are_deferred(self) -> None:
        """Each CreateUser is answered by the lane when its write is done, and is stored."""
        async with served() as running:
            raw = running.raw_channel()
            answers = [
                CreateUserResponse.parse(await call_raw(raw, CREATE, bytes(request)))
                for request in (
                    CreateUserRequest(name="Ada", email="ada@example.com"),
                    CreateUserRequest(name="Bob", email="bob@example.com"),
                )
            ]
            raw.close()
            assert deferred(running) == 2
            stored = [await running.store.get(answer.id) for answer in answers]
        assert [user.email for user in stored] == ["ada@example.com", "bob@example.com"]
        assert [answer.message for answer in answers] == ["User created successfully"] * 2
        assert answers[0].user is not None
        assert (answers[0].user.id, answers[0].user.name) == (answers[0].id, "Ada")

    async def test_same_answer_as_the_normal_path(self) -> None:
        """Apart from the new id and times, both paths send the same answer bytes' fields."""
        answers = []
        for fast_lane in (True, False):
            async with served(fast_lane) as running:
                raw = running.raw_channel()
                data = bytes(CreateUserRequest(name=" Ada ", email="Ada@Example.COM"))
                answers.append(CreateUserResponse.parse(await call_raw(raw, CREATE, data)))
                raw.close()
        fast, normal = answers
        assert fast.user is not None
        assert normal.user is not None
        assert (fast.message, fast.user.name, fast.user.email) == (
            normal.message,
            normal.user.name,
            normal.user.email,
        )
        assert fast.id == fast.user.id != normal.id


class TestSamePromises:
    @LANES
    @pytest.mark.parametrize(
        ("name", "email", "status", "message"),
        [
            ("Ada", "not an email", "3", "invalid email: "),
            ("", "ada@example.com", "3", "invalid name: "),
            ("Ada", "taken@example.com", "6", "a user with email 'taken@example.com' already"),
        ],
        ids=["email", "name", "taken"],
    )
    async def test_refusals(
        self, fast_lane: bool, name: str, email: str, status: str, message: str
    ) -> None:
        """Invalid fields and a taken email get the same status and message on both paths."""
        async with served(fast_lane) as running:
            stub = UserServiceStub(running.channel())
            await stub.create_user(CreateUserRequest(name="First", email="taken@example.com"))
            stub.channel.close()
            client = await RawH2.connect(running.port)
            answer = await client.answer(client.call(CREATE, create(name, email)))
            client.close()
        assert answer["grpc-status"] == status
        assert answer["grpc-message"].startswith(message), answer
        assert answer["content-type"] == "application/grpc+proto"

    @LANES
    async def test_unexpected_failure_is_a_generic_internal(
        self, fast_lane: bool, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A store bug is INTERNAL with the generic message; the details stay in the log."""
        caplog.set_level(logging.ERROR)
        async with served(fast_lane, store=FailingStore()) as running:
            client = await RawH2.connect(running.port)
            answer = await client.answer(client.call(CREATE, create("Ada", "ada@example.com")))
            client.close()
        assert (answer["grpc-status"], answer["grpc-message"]) == ("13", "internal server error")
        assert "disk on fire" in caplog.text

    @LANES
    async def test_deadline(self, fast_lane: bool) -> None:
        """A create whose write outlives the client's deadline gets DEADLINE_EXCEEDED."""
        store = GatedStore()
        async with served(fast_lane, store=store) as running:
            client = await RawH2.connect(running.port)
            stream_id = client.call(
                CREATE, create("Ada", "ada@example.com"), extra=[("grpc-timeout", "200m")]
            )
            answer = await client.answer(stream_id)
            store.gate.set()
            client.close()
        assert answer["grpc-status"] == "4"

    @LANES
    async def test_maximum_call_duration(self, fast_lane: bool) -> None:
        """Without a deadline, the server's maximum call duration ends a stuck create."""
        store = GatedStore()
        async with served(fast_lane, store=store, max_call_duration=0.2) as running:
            client = await RawH2.connect(running.port)
            answer = await client.answer(client.call(CREATE, create("Ada", "ada@example.com")))
            store.gate.set()
            client.close()
        assert answer["grpc-status"] == "4"

    async def test_reset_cancels_and_frees_the_slot(self) -> None:
        """A client that resets a waiting create frees its stream and slot; a canary is served."""
        store = GatedStore()
        async with served(store=store, max_concurrent_calls=1) as running:
            client = await RawH2.connect(running.port)
            stream_id = client.call(CREATE, create("Ada", "ada@example.com"))
            await until(lambda: store.waiting == 1)
            assert deferred(running) == 1
            client.h2.reset_stream(stream_id, error_code=ErrorCodes.CANCEL)
            client.flush()
            await until(lambda: store.waiting == 0)
            assert not running.server.policy.running
            store.gate.set()
            canary = await client.answer(client.call(CREATE, create("Bob", "bob@example.com")))
            client.close()
        assert canary["grpc-status"] == "0"

    async def test_lost_connection_cancels(self) -> None:
        """A connection that closes under a waiting create leaves no call running."""
        store = GatedStore()
        async with served(store=store) as running:
            client = await RawH2.connect(running.port)
            client.call(CREATE, create("Ada", "ada@example.com"))
            await until(lambda: store.waiting == 1)
            assert deferred(running) == 1
            client.close()
            await until(lambda: not running.server.policy.running)
            store.gate.set()

    async def test_full_slots_take_the_normal_queue(self) -> None:
        """With every slot taken, a create waits in the normal path's queue, then is served."""
        store = GatedStore()
        async with served(store=store, max_concurrent_calls=1) as running:
            client = await RawH2.connect(running.port)
            first = client.call(CREATE, create("Ada", "ada@example.com"))
            await until(lambda: store.waiting == 1)
            second = client.call(CREATE, create("Bob", "bob@example.com"))
            await asyncio.sleep(0.1)
            assert store.waiting == 1  # the second is queued, not in the store
            store.gate.set()
            answers = await client.answers([first, second])
            client.close()
            assert deferred(running) == 1
        assert [answers[first]["grpc-status"], answers[second]["grpc-status"]] == ["0", "0"]

    async def test_drain_waits_for_a_deferred_create(self) -> None:
        """A drain lets a create that is waiting for its write finish and answer."""
        store = GatedStore()
        async with served(store=store) as running:
            client = await RawH2.connect(running.port)
            stream_id = client.call(CREATE, create("Ada", "ada@example.com"))
            await until(lambda: store.waiting == 1)
            assert deferred(running) == 1
            drain = asyncio.create_task(running.server.drain(5))
            await asyncio.sleep(0.1)
            assert not drain.done()
            store.gate.set()
            answer = await client.answer(stream_id)
            await asyncio.wait_for(drain, 5)
            client.close()
        assert answer["grpc-status"] == "0"

    async def test_answer_waits_for_the_window(self) -> None:
        """A client whose window cannot take the answer gets it once it opens the window."""
        async with served() as running:
            client = await RawH2.connect(running.port)
            client.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 8})
            client.flush()
            await asyncio.sleep(0.05)
            stream_id = client.call(CREATE, create("Ada", "ada@example.com"))
            await until(lambda: deferred(running) == 1)
            await asyncio.sleep(0.1)
            client.h2.increment_flow_control_window(65535, stream_id=stream_id)
            client.flush()
            answer = await client.answer(stream_id)
            client.close()
        assert answer["grpc-status"] == "0"

    async def test_the_answer_is_one_data_frame(self) -> None:
        """The deferred answer is HEADERS, one DATA frame with the message, trailers."""
        async with served() as running:
            client = await RawH2.connect(running.port)
            stream_id = client.call(CREATE, create("Ada", "ada@example.com"))
            frames: list[Frame] = []
            while not frames or "END_STREAM" not in frames[-1].flags:
                received = await client.read_frame()
                if received.stream_id == stream_id:
                    frames.append(received)
            client.close()
        data = [each for each in frames if isinstance(each, DataFrame)]
        assert len(data) == 1
        assert CreateUserResponse.parse(bytes(data[0].data)[5:]).user is not None
