"""`people serve` as a real process: TCP, SQLite on disk, health, reflection, signals."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.reflection.v1.reflection_pb2 import (
    ServerReflectionRequest,
    ServerReflectionResponse,
)
from grpclib.reflection.v1alpha import reflection_grpc as v1alpha_grpc
from grpclib.reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from people._gen.people import CreateUserRequest, Empty, User, UserIdRequest, UserServiceStub
from tests.support import ServerProcess, running_server

SERVICE = "people.UserService"
#: Health answers are cached for about a second; this many tries spans well over that.
HEALTH_ATTEMPTS = 40


@asynccontextmanager
async def channel_to(server: ServerProcess) -> AsyncIterator[Channel]:
    """A grpclib channel over TCP to ``server``, closed afterwards."""
    host, port = server.address.rsplit(":", 1)
    channel = Channel(host.strip("[]"), int(port))
    try:
        yield channel
    finally:
        channel.close()


def database_url(path: Path) -> str:
    """The sqlite:// URL of an absolute path."""
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `people serve` on a temporary SQLite file, shared by the read-only checks."""
    path = tmp_path_factory.mktemp("served") / "people.db"
    with running_server("--database", database_url(path)) as running:
        yield running


async def reflect(channel: Channel, request: ServerReflectionRequest) -> ServerReflectionResponse:
    """Send one reflection request on a fresh stream and return the answer."""
    async with ServerReflectionStub(channel).ServerReflectionInfo.open() as stream:
        await stream.send_message(request, end=True)
        answer = await stream.recv_message()
        assert answer is not None
        return answer


async def health_once_settled(channel: Channel, wanted: int) -> int:
    """Ask Check until it answers ``wanted`` (answers are cached briefly); return the last."""
    status = HealthCheckResponse.UNKNOWN
    for _ in range(HEALTH_ATTEMPTS):
        answer = await HealthStub(channel).Check(HealthCheckRequest(service=SERVICE))
        status = answer.status
        if status == wanted:
            break
        await asyncio.sleep(0.25)
    return status


class TestRestart:
    """Data written through one server process is there for the next one."""

    async def test_data_survives_a_restart(self, tmp_path: Path) -> None:
        """Create, update and delete over TCP, stop with SIGTERM (exit 0), restart, read back."""
        url = database_url(tmp_path / "people.db")
        with running_server("--database", url) as first:
            async with channel_to(first) as channel:
                stub = UserServiceStub(channel)
                ada = await stub.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
                bob = await stub.create_user(CreateUserRequest(name="Bob", email="bob@example.com"))
                gone = await stub.create_user(CreateUserRequest(name="Cy", email="cy@example.com"))
                await stub.update_user(User(id=bob.id, name="Robert"))
                await stub.delete_user_by_id(UserIdRequest(id=gone.id))
                before = await stub.get_all_users(Empty())
            code = first.stop(signal.SIGTERM)
            assert code == 0, first.output()

        with running_server("--database", url) as second:
            async with channel_to(second) as channel:
                stub = UserServiceStub(channel)
                after = await stub.get_all_users(Empty())
                robert = await stub.get_user_by_id(UserIdRequest(id=bob.id))
            assert second.stop(signal.SIGTERM) == 0, second.output()

        assert [(user.id, user.name, user.email) for user in after.user] == [
            (ada.id, "Ada", "ada@example.com"),
            (bob.id, "Robert", "bob@example.com"),
        ]
        assert after.user == before.user
        assert robert.etag == 'W/"2"'


class TestHealth:
    """grpc.health.v1.Health reports the service while the store answers."""

    @pytest.mark.parametrize("service", ["", SERVICE])
    async def test_serving(self, server: ServerProcess, service: str) -> None:
        """Check answers SERVING for the whole server and for people.UserService."""
        async with channel_to(server) as channel:
            answer = await HealthStub(channel).Check(HealthCheckRequest(service=service))
        assert answer.status == HealthCheckResponse.SERVING

    async def test_not_serving_when_the_store_fails(self, tmp_path: Path) -> None:
        """When the SQLite store stops answering, Check reports NOT_SERVING."""
        path = tmp_path / "people.db"
        with running_server("--database", database_url(path)) as running:
            with sqlite3.connect(path) as db:
                db.execute("DROP TABLE users")
            db.close()
            async with channel_to(running) as channel:
                status = await health_once_settled(channel, HealthCheckResponse.NOT_SERVING)
            assert status == HealthCheckResponse.NOT_SERVING
            assert running.stop() == 0, running.output()


class TestReflection:
    """Server reflection describes the service from the embedded descriptors."""

    async def test_lists_services(self, server: ServerProcess) -> None:
        """list_services names people.UserService and grpc.health.v1.Health."""
        async with channel_to(server) as channel:
            answer = await reflect(channel, ServerReflectionRequest(list_services=""))
        names = {service.name for service in answer.list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health"} <= names

    async def test_file_containing_the_service(self, server: ServerProcess) -> None:
        """file_containing_symbol people.UserService returns people.proto with the service."""
        async with channel_to(server) as channel:
            answer = await reflect(channel, ServerReflectionRequest(file_containing_symbol=SERVICE))
        protos = answer.file_descriptor_response.file_descriptor_proto
        assert protos, answer
        files = [descriptor_pb2.FileDescriptorProto.FromString(raw) for raw in protos]
        people = next(file for file in files if file.name == "people.proto")
        assert people.package == "people"
        assert "UserService" in [service.name for service in people.service]

    async def test_file_containing_the_health_service(self, server: ServerProcess) -> None:
        """The health service's descriptor is in the reflection pool too."""
        async with channel_to(server) as channel:
            answer = await reflect(
                channel, ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health")
            )
        assert answer.file_descriptor_response.file_descriptor_proto, answer

    async def test_v1alpha_lists_services(self, server: ServerProcess) -> None:
        """Older clients using reflection v1alpha also see people.UserService."""
        async with (
            channel_to(server) as channel,
            v1alpha_grpc.ServerReflectionStub(channel).ServerReflectionInfo.open() as stream,
        ):
            await stream.send_message(
                v1alpha_pb2.ServerReflectionRequest(list_services=""), end=True
            )
            answer = await stream.recv_message()
        assert answer is not None
        names = {service.name for service in answer.list_services_response.service}
        assert SERVICE in names


class TestLifecycle:
    """The process logs where it serves and stops cleanly on signals."""

    def test_start_line_names_address_and_database(self, server: ServerProcess) -> None:
        """The start log line gives the listening address and the database URL."""
        (line,) = [line for line in server.log if "people serving on" in line]
        assert server.address in line
        assert "127.0.0.1:" in server.address
        assert "sqlite:///" in line
        assert "people.db" in line

    def test_default_database_is_in_the_working_directory(self, tmp_path: Path) -> None:
        """Without --database the server keeps its users in ./people.db, and says so."""
        with running_server(cwd=tmp_path, env={"PEOPLE_DATABASE": ""}) as running:
            (line,) = [line for line in running.log if "people serving on" in line]
            assert running.stop() == 0, running.output()
        assert line.rstrip().endswith(
            f"people serving on {running.address} (database sqlite:///people.db)"
        )
        assert (tmp_path / "people.db").is_file()

    def test_sigint_exits_cleanly(self, tmp_path: Path) -> None:
        """Ctrl-C (SIGINT) stops the server with exit code 0 and no traceback."""
        with running_server("--database", database_url(tmp_path / "people.db")) as running:
            code = running.stop(signal.SIGINT)
        assert code == 0, running.output()
        assert "Traceback" not in running.output()

    def test_sigterm_exits_cleanly(self, tmp_path: Path) -> None:
        """SIGTERM stops the server with exit code 0 and no traceback."""
        with running_server("--database", database_url(tmp_path / "people.db")) as running:
            code = running.stop(signal.SIGTERM)
        assert code == 0, running.output()
        assert "Traceback" not in running.output()


class TestOverallHealth:
    """The whole-server health status ("") is for liveness: it ignores the database."""

    async def test_overall_stays_serving_when_the_store_fails(self, tmp_path: Path) -> None:
        """With the store failing, "" stays SERVING while people.UserService turns NOT_SERVING."""
        path = tmp_path / "people.db"
        with running_server("--database", database_url(path)) as running:
            with sqlite3.connect(path) as db:
                db.execute("DROP TABLE users")
            db.close()
            async with channel_to(running) as channel:
                service = await health_once_settled(channel, HealthCheckResponse.NOT_SERVING)
                overall = await HealthStub(channel).Check(HealthCheckRequest(service=""))
            assert service == HealthCheckResponse.NOT_SERVING
            assert overall.status == HealthCheckResponse.SERVING
            assert running.stop() == 0, running.output()
