"""Server logs: one access record per call, text or JSON, and nothing secret in them."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from people._gen.people import (
    CreateUserRequest,
    Empty,
    ListUsersRequest,
    User,
    UserIdRequest,
    UserServiceStub,
)
from people.domain.model import User as DomainUser
from people.server.logs import JsonFormatter, TextFormatter
from people.store.memory import MemoryStore
from tests.inprocess import serving
from tests.support import ServerProcess, free_args, running_server

T = TypeVar("T")

#: The keys every JSON access record carries.
ACCESS_KEYS = {"method", "status", "code", "duration_ms", "peer"}
CREATE = "/people.UserService/CreateUser"
GET_ALL = "/people.UserService/GetAllUsers"
GET_ONE = "/people.UserService/GetUserById"
#: How long to wait for a stopped server's last log line to be read.
LAST_LINE_TIMEOUT = 10.0

TOKEN_ONE = "log-secret-token-0n3-c1a0"
TOKEN_TWO = "log-secret-token-tw0-77b2"
WRONG_TOKEN = "log-guessed-token-5e3f"
EMAIL = "alice.liddell@example.com"
#: The same address as the server would see it from another client, for the duplicate.
EMAIL_VARIANT = "Alice.Liddell@Example.COM"
#: Invalid addresses, which the email-shaped mask would not catch if they were logged.
INVALID_EMAILS = ["bob.example.org", "carol@@example.net"]
#: What the failing store raises: a path and an address that belong in the log only.
SECRET = "secret internals at /srv/people/db.key for dba@corp.example"


@dataclass
class Run:
    """A finished server: every line it logged, and the calls made to it, in order."""

    lines: list[str]
    calls: list[tuple[str, Status]]


def in_thread(calls: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``calls`` on an event loop of its own, apart from pytest's."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, calls()).result(timeout=60)


def finished(server: ServerProcess) -> list[str]:
    """Stop ``server``, wait until its last line is read, and return its non-blank lines."""
    assert server.stop() == 0, server.output()
    deadline = time.monotonic() + LAST_LINE_TIMEOUT
    while "people stopped" not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.02)
    return [line.rstrip("\n") for line in server.log if line.strip()]


async def outcome(call: Coroutine[Any, Any, object]) -> Status:
    """Await one call and return its status."""
    try:
        await call
    except GRPCError as exc:
        return exc.status
    return Status.OK


async def some_calls(port: int) -> list[tuple[str, Status]]:
    """Three calls with three outcomes; return each one's method and status."""
    channel = Channel("127.0.0.1", port)
    stub = UserServiceStub(channel)
    try:
        request = CreateUserRequest(name="Lewis", email="lewis@example.com")
        return [
            (GET_ALL, await outcome(stub.get_all_users(Empty(), timeout=10))),
            (CREATE, await outcome(stub.create_user(request, timeout=10))),
            (CREATE, await outcome(stub.create_user(request, timeout=10))),
        ]
    finally:
        channel.close()


def serve_and_call(*args: str) -> Run:
    """Start `people serve ARGS`, make :func:`some_calls`, stop it and return the run."""
    with running_server(*free_args(args)) as server:
        calls = in_thread(lambda: some_calls(server.port))
        lines = finished(server)
    assert [status for _, status in calls] == [Status.OK, Status.OK, Status.ALREADY_EXISTS]
    return Run(lines=lines, calls=calls)


def parse(lines: list[str]) -> list[dict[str, Any]]:
    """Each line as a JSON object; fails on the first line that is not one."""
    objects = []
    for line in lines:
        parsed = json.loads(line)
        assert isinstance(parsed, dict), line
        objects.append(parsed)
    return objects


@pytest.fixture(scope="module")
def json_run() -> Run:
    """A server logging JSON, after three calls."""
    return serve_and_call("--log-format", "json")


@pytest.fixture(scope="module")
def text_run() -> Run:
    """A server logging text (the default), after three calls."""
    return serve_and_call()


class TestJsonFormat:
    """`people serve --log-format json`."""

    def test_every_line_is_a_json_object(self, json_run: Run) -> None:
        """Each line on stderr, startup and shutdown included, is one JSON object."""
        messages = [line["message"] for line in parse(json_run.lines)]
        assert any(message.startswith("people serving on") for message in messages)
        assert "people stopped" in messages

    def test_one_access_record_per_call(self, json_run: Run) -> None:
        """Every call has exactly one access record, in order, with its method and status."""
        records = [line for line in parse(json_run.lines) if line["logger"] == "people.access"]
        assert [(record["method"], Status[record["status"]]) for record in records] == (
            json_run.calls
        )

    def test_one_line_at_drain_then_one_at_stop(self, json_run: Run) -> None:
        """Stopping logs "people draining (grace period 10s)", then "people stopped", once each."""
        messages = [line["message"] for line in parse(json_run.lines)]
        draining = [n for n, message in enumerate(messages) if message.startswith("people drain")]
        stopped = [n for n, message in enumerate(messages) if message == "people stopped"]
        assert [messages[n] for n in draining] == ["people draining (grace period 10s)"]
        assert len(stopped) == 1
        assert draining[0] < stopped[0]

    def test_access_record_fields(self, json_run: Run) -> None:
        """An access record has method, status, numeric code, duration in ms and the peer."""
        records = [line for line in parse(json_run.lines) if line["logger"] == "people.access"]
        assert records
        for record in records:
            assert record.keys() >= ACCESS_KEYS
            assert record["code"] == Status[record["status"]].value
            assert isinstance(record["duration_ms"], int | float)
            assert 0 <= record["duration_ms"] < 10_000
            assert re.fullmatch(r"127\.0\.0\.1:\d+", record["peer"]), record


class TestTextFormat:
    """`people serve` with the default text format."""

    def test_one_access_line_per_call(self, text_run: Run) -> None:
        """Every call has exactly one access line, in order, naming its method and status."""
        access = [line for line in text_run.lines if " people.access " in line]
        assert len(access) == len(text_run.calls), text_run.lines
        for line, (method, status) in zip(access, text_run.calls, strict=True):
            assert f" people.access {method} {status.name} " in line
            assert re.search(r" \d+\.\d{3}ms 127\.0\.0\.1:\d+$", line), line

    def test_no_access_log(self) -> None:
        """--no-access-log silences access lines and nothing else."""
        run = serve_and_call("--no-access-log")
        assert not [line for line in run.lines if "people.access" in line]
        assert any("people serving on" in line for line in run.lines)

    def test_no_access_log_in_json(self) -> None:
        """--no-access-log works in JSON too: no record from the access logger."""
        run = serve_and_call("--no-access-log", "--log-format", "json")
        assert [line["logger"] for line in parse(run.lines)].count("people.access") == 0


async def leaky_calls(port: int) -> list[tuple[str, Status]]:
    """Calls carrying tokens and email addresses, most of them failing."""
    channel = Channel("127.0.0.1", port)
    stub = UserServiceStub(channel)

    def bearer(token: str) -> Mapping[str, str]:
        return {"authorization": f"Bearer {token}"}

    def create(email: str, token: str) -> Coroutine[Any, Any, object]:
        request = CreateUserRequest(name="Alice", email=email)
        return stub.create_user(request, metadata=bearer(token), timeout=10)

    try:
        calls = [
            (CREATE, await outcome(create(EMAIL, TOKEN_ONE))),
            (CREATE, await outcome(create(EMAIL_VARIANT, TOKEN_TWO))),
            *[(CREATE, await outcome(create(email, TOKEN_ONE))) for email in INVALID_EMAILS],
            (CREATE, await outcome(create("eve@example.com", WRONG_TOKEN))),
            (GET_ALL, await outcome(stub.get_all_users(Empty(), metadata=bearer(WRONG_TOKEN)))),
            (
                GET_ONE,
                await outcome(
                    stub.get_user_by_id(UserIdRequest(id=EMAIL), metadata=bearer(TOKEN_ONE))
                ),
            ),
        ]
        # The client is told which address is taken: that is its own input.
        with pytest.raises(GRPCError) as taken:
            await create(EMAIL_VARIANT, TOKEN_ONE)
        assert taken.value.status is Status.ALREADY_EXISTS
        assert EMAIL.lower() in (taken.value.message or "").lower()
        return [*calls, (CREATE, Status.ALREADY_EXISTS)]
    finally:
        channel.close()


#: A name no log line would hold unless a request was logged.
NAME = "Quetzalcoatl Vexmoor"
RENAMED = "Xochitl Brindlewick"


async def content_calls(port: int) -> str:
    """Create, read, rename, list and read all, with :data:`NAME`; return the new user's id."""
    channel = Channel("127.0.0.1", port)
    stub = UserServiceStub(channel)
    try:
        created = await stub.create_user(
            CreateUserRequest(name=NAME, email="quetzal@example.com"), timeout=10
        )
        assert (await stub.get_user_by_id(UserIdRequest(id=created.id), timeout=10)).name == NAME
        await stub.update_user(User(id=created.id, name=RENAMED), timeout=10)
        assert (await stub.list_users(ListUsersRequest(), timeout=10)).users[0].name == RENAMED
        assert (await stub.get_all_users(Empty(), timeout=10)).user[0].id == created.id
        return created.id
    finally:
        channel.close()


class TestNothingSensitive:
    """Tokens, email addresses, requests and responses stay out of the server's logs."""

    @pytest.mark.parametrize("log_level", ["info", "debug"])
    def test_requests_and_responses_are_not_logged(self, log_level: str) -> None:
        """A distinctive name, sent and answered, and the id the server made are in no line."""
        with running_server(*free_args(["--log-level", log_level])) as server:
            user_id = in_thread(lambda: content_calls(server.port))
            lines = finished(server)
        output = "\n".join(lines)
        # The calls were logged, one access line each, just not what they carried.
        assert output.count("people.access") == 5, output
        for content in [NAME, RENAMED, user_id, *NAME.split(), *RENAMED.split()]:
            assert content not in output

    @pytest.mark.parametrize("log_format", ["text", "json"])
    def test_no_email_or_token_in_logs(self, tmp_path: Path, log_format: str) -> None:
        """Calls with tokens, taken and invalid addresses leave no token or address in stderr."""
        tokens = tmp_path / "tokens"
        tokens.write_text(f"# tokens\n{TOKEN_ONE}\n{TOKEN_TWO}\n", encoding="utf-8")
        args = free_args(["--token-file", str(tokens), "--log-format", log_format])
        with running_server(*args) as server:
            calls = in_thread(lambda: leaky_calls(server.port))
            lines = finished(server)
        assert [status for _, status in calls] == [
            Status.OK,
            Status.ALREADY_EXISTS,
            Status.INVALID_ARGUMENT,
            Status.INVALID_ARGUMENT,
            Status.UNAUTHENTICATED,
            Status.UNAUTHENTICATED,
            Status.NOT_FOUND,
            Status.ALREADY_EXISTS,
        ]
        output = "\n".join(lines).lower()
        # The logs were written (one access line per call), they just hold nothing secret.
        assert output.count("people.access") == len(calls), output
        for secret in [TOKEN_ONE, TOKEN_TWO, WRONG_TOKEN, EMAIL, "eve@example.com"]:
            assert secret.lower() not in output
        for invalid in INVALID_EMAILS:
            assert invalid not in output
        assert "example.com" not in output


def record_with(
    message: str, *args: object, error: BaseException | None = None
) -> logging.LogRecord:
    """A log record as ``logger.error(message, *args)`` would make, with ``error`` attached."""
    exc_info = None
    if error is not None:
        try:
            raise error
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord("people.test", logging.ERROR, __file__, 1, message, args, exc_info)


#: Messages that carry an address in the shapes code tends to log it.
ADDRESS_MESSAGES = [
    pytest.param("user %s exists", ("ann@example.com",), id="plain"),
    pytest.param("user %r exists", ("ann@example.com",), id="repr"),
    pytest.param("user %r exists", ("o'hara@example.com",), id="repr-double-quoted"),
    pytest.param('user "%s" exists', ("ann@example.com",), id="double-quoted"),
    pytest.param("users %s", (["ann@example.com", "bo@example.com"],), id="in-a-list"),
    pytest.param("user %s\ttab", ("ann@example.com",), id="before-a-tab"),
]


class TestMasking:
    """The formatters `people serve` installs mask email addresses wherever they come from."""

    @pytest.mark.parametrize(("message", "args"), ADDRESS_MESSAGES)
    def test_json_line_stays_valid_and_masked(self, message: str, args: tuple[object]) -> None:
        """A masked JSON line is still one valid JSON object, and holds no address."""
        line = JsonFormatter().format(record_with(message, *args))
        parsed = json.loads(line)
        assert isinstance(parsed, dict)
        assert "example.com" not in line
        assert "<email>" in parsed["message"]
        assert parsed["message"].startswith("user")

    def test_json_masks_the_exception(self) -> None:
        """An address in an exception's message is masked in the JSON traceback."""
        line = JsonFormatter().format(record_with("failed", error=KeyError("ann@example.com")))
        parsed = json.loads(line)
        assert "KeyError" in parsed["exception"]
        assert "example.com" not in line

    @pytest.mark.parametrize(("message", "args"), ADDRESS_MESSAGES)
    def test_text_line_is_masked(self, message: str, args: tuple[object]) -> None:
        """The text format masks addresses in the message."""
        line = TextFormatter().format(record_with(message, *args))
        assert "example.com" not in line
        assert "<email>" in line

    def test_text_masks_the_exception(self) -> None:
        """An address in an exception's message is masked in the text traceback."""
        line = TextFormatter().format(record_with("failed", error=KeyError("ann@example.com")))
        assert "KeyError" in line
        assert "example.com" not in line


class FailingStore(MemoryStore):
    """A memory store whose writes fail in a way nobody planned for."""

    async def add(self, user: DomainUser) -> None:
        """Fail with internal details that belong in the server log only."""
        raise RuntimeError(SECRET)


@pytest.fixture
def failing_call(
    caplog: pytest.LogCaptureFixture,
) -> Callable[[], Coroutine[Any, Any, GRPCError]]:
    """A CreateUser against a store that raises RuntimeError; returns the client's error."""
    caplog.set_level(logging.INFO)

    async def call() -> GRPCError:
        async with serving(store=FailingStore()) as served:
            channel = served.channel()
            stub = UserServiceStub(channel)
            with pytest.raises(GRPCError) as caught:
                await stub.create_user(
                    CreateUserRequest(name="Ann", email="ann@example.com"), timeout=5
                )
            # The failure was one call's, not the server's.
            await stub.get_all_users(Empty(), timeout=5)
            channel.close()
        return caught.value

    return call


class TestUnexpectedErrors:
    """An exception no one planned for, raised inside a handler."""

    async def test_client_gets_a_generic_internal(
        self, failing_call: Callable[[], Coroutine[Any, Any, GRPCError]]
    ) -> None:
        """The client gets INTERNAL with a generic message: no exception text, no traceback."""
        error = await failing_call()
        assert error.status is Status.INTERNAL
        told = f"{error.message} {error.details}"
        for leak in ["secret", "/srv/people", "corp.example", "RuntimeError", "Traceback"]:
            assert leak not in told, told

    async def test_server_log_records_the_exception(
        self,
        failing_call: Callable[[], Coroutine[Any, Any, GRPCError]],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The server logs the exception with its traceback, with the address masked."""
        await failing_call()
        failures = [
            record
            for record in caplog.records
            if record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
        ]
        assert len(failures) == 1, caplog.records
        (failure,) = failures
        assert failure.levelno == logging.ERROR
        assert CREATE in failure.getMessage()
        line = TextFormatter().format(failure)
        assert "secret internals at /srv/people/db.key" in line
        assert "Traceback" in line
        assert "corp.example" not in line
