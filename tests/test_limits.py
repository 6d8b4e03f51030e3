"""Message size limits: checked on the declared length, before the body is read."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import grpc
import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, ProtocolError

from people._gen.people import CreateUserRequest, UserIdRequest, UserServiceStub
from people.rpc.defaults import DEFAULT_MAX_MESSAGE_BYTES
from people.server.settings import Settings
from tests.inprocess import call_raw, frame, serving
from tests.support import running_server

CREATE = "/people.UserService/CreateUser"


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class TestReceiveLimit:
    """Requests over the receive limit."""

    def test_default_is_4_mib(self) -> None:
        """Both limits default to 4 MiB, as in gRPC's own servers."""
        settings = Settings()
        assert settings.max_receive_message_bytes == DEFAULT_MAX_MESSAGE_BYTES == 4 * 1024 * 1024
        assert settings.max_send_message_bytes == DEFAULT_MAX_MESSAGE_BYTES

    async def test_oversize_request_is_resource_exhausted(self) -> None:
        """A request one byte over the limit gets RESOURCE_EXHAUSTED naming the limit."""
        async with serving(max_receive_message_bytes=4096) as served:
            body = bytes(CreateUserRequest(name="x" * 5000, email="a@example.com"))
            with pytest.raises(GRPCError) as caught:
                await call_raw(served.raw_channel(), CREATE, body)
            assert caught.value.status is Status.RESOURCE_EXHAUSTED
            assert "4096" in (caught.value.message or "")

    async def test_request_at_the_limit_reaches_the_handler(self) -> None:
        """A request within the limit is decoded and judged by the service."""
        async with serving(max_receive_message_bytes=4096) as served:
            body = bytes(CreateUserRequest(name="x" * 4000, email="a@example.com"))
            with pytest.raises(GRPCError) as caught:
                await call_raw(served.raw_channel(), CREATE, body)
            assert caught.value.status is Status.INVALID_ARGUMENT

    async def test_limit_is_checked_before_the_body_arrives(self) -> None:
        """A 1 GiB length prefix is refused at once, without waiting for the body."""
        async with serving() as served:
            channel = served.raw_channel()
            headers: dict[str, str] = {}
            with contextlib.suppress(ProtocolError, GRPCError):
                async with channel.request(CREATE, Cardinality.UNARY_UNARY, bytes, bytes) as stream:
                    await stream.send_request()
                    await stream._stream.send_data(frame(b"\x0a\x01x", length=1 << 30))
                    headers = dict(await asyncio.wait_for(stream._stream.recv_headers(), 3))
            channel.close()
        assert headers["grpc-status"] == str(Status.RESOURCE_EXHAUSTED.value)

    def test_server_memory_does_not_grow(self, tmp_path: Path) -> None:
        """Three 48 MiB requests leave the server's resident memory within 24 MiB of before."""
        with running_server("--database", "memory://") as server:
            options = [("grpc.max_send_message_length", -1)]
            with grpc.insecure_channel(server.target, options=options) as channel:
                create = channel.unary_unary(CREATE)
                assert create is not None
                grpc.channel_ready_future(channel).result(timeout=10)
                before = _rss_bytes(server.process.pid)
                payload = bytes(CreateUserRequest(name="x" * (48 << 20), email="a@example.com"))
                for _ in range(3):
                    started = time.monotonic()
                    with pytest.raises(grpc.RpcError) as caught:
                        create(payload, timeout=15)
                    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert time.monotonic() - started < 10
                after = _rss_bytes(server.process.pid)
        assert after - before < 24 << 20, (before, after)


class TestSendLimit:
    """Answers over the send limit."""

    async def test_oversize_answer_is_resource_exhausted(self) -> None:
        """An answer larger than the send limit is refused with RESOURCE_EXHAUSTED, not sent."""
        async with serving(max_send_message_bytes=1024) as served:
            channel = served.channel()
            stub = UserServiceStub(channel)
            # 200 four-byte characters and a 250-character address: one user over 1 KiB.
            email = "a" * 60 + "@" + ".".join(["b" * 60] * 3) + ".com"
            big = await stub.create_user(CreateUserRequest(name="\U0001d504" * 200, email=email))
            small = await stub.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
            with pytest.raises(GRPCError) as caught:
                await stub.get_user_by_id(UserIdRequest(id=big.id))
            assert caught.value.status is Status.RESOURCE_EXHAUSTED
            assert "1024" in (caught.value.message or "")
            assert (await stub.get_user_by_id(UserIdRequest(id=small.id))).name == "Ada"
            channel.close()
