"""Strict decoding: bytes protobuf's parser rejects never reach a handler.

Every test here runs against a server on each store kind: random and mutated
requests must get the same answers whether memory, SQLite or PostgreSQL holds
the users (an id PostgreSQL could not look up is still NOT_FOUND).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import pytest
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from people._gen.people import (
    CreateUserRequest,
    Empty,
    ListUsersRequest,
    User,
    UserIdRequest,
)
from people.domain.errors import UnstorableValue
from people.rpc.strict_codec import PARSE_ERROR
from tests.conftest import STORE_KINDS
from tests.postgres import PostgresServer
from tests.support import ServerProcess, running_server

#: Every RPC, with a valid request to mutate.
REQUESTS: dict[str, bytes] = {
    "/people.UserService/GetAllUsers": bytes(Empty()),
    "/people.UserService/CreateUser": bytes(CreateUserRequest(name="Ada", email="ada@example.com")),
    "/people.UserService/GetUserById": bytes(UserIdRequest(id="abc", etag="1")),
    "/people.UserService/UpdateUser": bytes(User(id="abc", name="Ada", email="a@example.com")),
    "/people.UserService/DeleteUserById": bytes(UserIdRequest(id="abc")),
    "/people.UserService/ListUsers": bytes(ListUsersRequest(page_size=3, page_token="")),
}
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
}
CREATE = "/people.UserService/CreateUser"


@pytest.fixture(scope="module", params=STORE_KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One real server per store kind (memory, SQLite, PostgreSQL), shared by the tests here."""
    if request.param == "memory":
        database = "memory://"
    elif request.param == "sqlite":
        database = f"sqlite:///{tmp_path_factory.mktemp('decoding') / 'people.db'}"
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        database = asyncio.run(postgres.create_database())
    with running_server("--database", database, "--no-access-log") as process:
        yield process


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    """A grpcio channel to the server; requests and answers are raw bytes."""
    with grpc.insecure_channel(server.target) as opened:
        grpc.channel_ready_future(opened).result(timeout=10)
        yield opened


def call(channel: grpc.Channel, method: str, data: bytes) -> tuple[grpc.StatusCode, str]:
    """Send ``data`` to ``method``; return the status code and message."""
    try:
        channel.unary_unary(method)(data, timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def healthy(channel: grpc.Channel) -> bool:
    """True when the health service answers SERVING."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=HealthCheckRequest.SerializeToString,
        response_deserializer=HealthCheckResponse.FromString,
    )
    answer = check(HealthCheckRequest(service=""), timeout=5)
    return bool(answer.status == HealthCheckResponse.SERVING)


class TestMalformedRequests:
    """Known ways to make betterproto misbehave, each refused cleanly."""

    @pytest.mark.parametrize(
        ("data", "why"),
        [
            (b"\x0a\x05ab", "a string longer than the message"),
            (b"\x00\x00", "field number 0"),
            (b"\x0a\x02\xff\xfe", "a string that is not UTF-8"),
            (b"\x0b", "a group start without its end"),
            (b"\x08" + b"\xff" * 11, "a varint of 11 bytes"),
        ],
    )
    def test_rejected_like_protobuf(self, channel: grpc.Channel, data: bytes, why: str) -> None:
        """Bytes protobuf's parser rejects get INTERNAL "error parsing request"."""
        assert call(channel, CREATE, data) == (grpc.StatusCode.INTERNAL, PARSE_ERROR), why

    def test_wrong_wire_type_never_reaches_the_handler(self, channel: grpc.Channel) -> None:
        """A varint where the name string belongs is dropped as unknown, not put in ``name``."""
        data = b"\x08\x05" + b"\x12\x0fada@example.com"
        code, message = call(channel, CREATE, data)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "name" in message

    def test_unknown_fields_are_dropped_in_linear_time(self, channel: grpc.Channel) -> None:
        """1 MB of tiny unknown fields answer in well under a second."""
        data = REQUESTS["/people.UserService/GetUserById"] + b"\x78\x00" * 500_000
        started = time.monotonic()
        code, _ = call(channel, "/people.UserService/GetUserById", data)
        assert code is grpc.StatusCode.NOT_FOUND
        assert time.monotonic() - started < 1.0


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """A method and bytes for it: random, or a valid request mutated."""
    method = draw(st.sampled_from(sorted(REQUESTS)))
    if draw(st.booleans()):
        return method, draw(st.binary(max_size=300))
    data = bytearray(REQUESTS[method])
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "control", "insert", "truncate", "delete"]))
        if action == "flip" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif action == "control" and position < len(data):
            # A control byte in place keeps the message well formed: a string with NUL
            # in it is exactly what some stores cannot hold.
            data[position] = draw(st.sampled_from([0x00, 0x01, 0x1B, 0x7F]))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "truncate":
            del data[position:]
        elif position < len(data):
            del data[position]
    return method, bytes(data)


class TestFuzz:
    """Random and mutated bytes against every RPC."""

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(request=requests())
    def test_only_spec_statuses(self, channel: grpc.Channel, request: tuple[str, bytes]) -> None:
        """Every answer is a status from the allowed set, on every store; INTERNAL only as a
        parse error, never a store failure, never UNAVAILABLE, and no value a store refused."""
        method, data = request
        code, message = call(channel, method, data)
        assert code in ALLOWED, (method, data, code, message)
        if code is grpc.StatusCode.INTERNAL:
            assert message == PARSE_ERROR
        assert message != UnstorableValue().message, (method, data)

    def test_server_is_still_healthy(self, channel: grpc.Channel, server: ServerProcess) -> None:
        """After all that the server still answers, serves and logged no crash."""
        assert healthy(channel)
        code, _ = call(channel, CREATE, REQUESTS[CREATE])
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.ALREADY_EXISTS)
        assert server.process.poll() is None
        assert "Traceback" not in server.output()
