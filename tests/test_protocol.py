"""Protocol edge cases get the status the gRPC spec names, never OK or a crash."""

from __future__ import annotations

import grpc
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from people._gen.people import CreateUserRequest, UserIdRequest
from tests.inprocess import RawH2, call_frames, call_raw, frame, serving

GET = "/people.UserService/GetUserById"


class TestUnknownMethods:
    """Calls to methods the server does not have."""

    @pytest.mark.parametrize(
        "method", ["/people.UserService/Nope", "/no.Such/Service", "/grpc.health.v1.Health/Nope"]
    )
    async def test_unimplemented_with_content_type(self, method: str) -> None:
        """The answer is UNIMPLEMENTED, trailers-only, with a gRPC content-type."""
        async with serving() as served:
            client = await RawH2.connect(served.port)
            answer = await client.answer(client.call(method, frame(b"")))
            client.close()
        assert answer[":status"] == "200"
        assert answer["content-type"].startswith("application/grpc")
        assert answer["grpc-status"] == str(Status.UNIMPLEMENTED.value)

    def test_grpcio_reads_unimplemented(self) -> None:
        """grpcio, an independent client, sees UNIMPLEMENTED for an unknown method."""
        from tests.support import running_server

        with (
            running_server("--database", "memory://") as server,
            grpc.insecure_channel(server.target) as channel,
        ):
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary("/people.UserService/Nope")(b"", timeout=10)
            assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


class TestUnaryCardinality:
    """A unary call carries exactly one request message."""

    async def test_no_message_is_internal(self) -> None:
        """A unary call that ends without a message gets INTERNAL, not UNKNOWN."""
        async with serving() as served:
            channel = served.raw_channel()
            with pytest.raises(GRPCError) as caught:
                await call_frames(channel, GET, b"")
            channel.close()
        assert caught.value.status is Status.INTERNAL
        assert "missing request" in (caught.value.message or "")

    async def test_two_messages_is_internal(self) -> None:
        """A unary call with two messages gets INTERNAL, not OK for the first one."""
        async with serving() as served:
            channel = served.raw_channel()
            created = await call_raw(
                channel,
                "/people.UserService/CreateUser",
                bytes(CreateUserRequest(name="Ada", email="ada@example.com")),
            )
            assert created
            request = bytes(UserIdRequest(id="x"))
            with pytest.raises(GRPCError) as caught:
                await call_frames(channel, GET, frame(request) + frame(request))
            channel.close()
        assert caught.value.status is Status.INTERNAL
        assert "too many" in (caught.value.message or "")

    async def test_truncated_message_is_internal(self) -> None:
        """A message shorter than its length prefix gets INTERNAL."""
        async with serving() as served:
            channel = served.raw_channel()
            with pytest.raises(GRPCError) as caught:
                await call_frames(channel, GET, frame(b"\x0a\x01x", length=10))
            channel.close()
        assert caught.value.status is Status.INTERNAL


class TestCompression:
    """The server supports no compression and says so per the spec."""

    async def test_compressed_flag_without_encoding_is_internal(self) -> None:
        """A compressed-flag message without grpc-encoding gets INTERNAL."""
        async with serving() as served:
            channel = served.raw_channel()
            with pytest.raises(GRPCError) as caught:
                await call_frames(
                    channel, GET, frame(bytes(UserIdRequest(id="x")), compressed=True)
                )
            channel.close()
        assert caught.value.status is Status.INTERNAL
        assert "compress" in (caught.value.message or "")

    async def test_unknown_encoding_is_unimplemented(self) -> None:
        """grpc-encoding gzip gets UNIMPLEMENTED with grpc-accept-encoding: identity."""
        async with serving() as served:
            client = await RawH2.connect(served.port)
            answer = await client.answer(
                client.call(GET, frame(b"", compressed=True), extra=[("grpc-encoding", "gzip")])
            )
            client.close()
        assert answer["grpc-status"] == str(Status.UNIMPLEMENTED.value)
        assert answer["grpc-accept-encoding"] == "identity"
        assert answer["content-type"].startswith("application/grpc")
