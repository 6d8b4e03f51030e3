"""`--log-level` and log timestamps: how much the server logs, and when, in UTC."""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from people.server.logs import JsonFormatter, TextFormatter
from tests.postgres import free_port
from tests.support import people_command, run_cli

#: A zone far from UTC (POSIX TZ syntax: local = UTC+05:30), so local time cannot pass for UTC.
FAR_ZONE = "PPL-05:30"
#: 2026-12-02 05:32:56.123 UTC.
INSTANT = calendar.timegm((2026, 12, 2, 5, 32, 56)) + 0.123
#: Upper bound for a server to start or stop; only a hang reaches it (not a timing assertion).
PROCESS_TIMEOUT = 20.0
#: A log line's time may be this far from the test's clock; it only catches a wrong zone.
CLOCK_SLACK = timedelta(minutes=10)
RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
TOKEN = "log-level-token-3d9a"


@pytest.fixture
def far_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's local time zone is UTC+05:30 for the test."""
    monkeypatch.setenv("TZ", FAR_ZONE)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def record_at(created: float) -> logging.LogRecord:
    """An INFO record made at ``created`` (seconds since the epoch)."""
    record = logging.LogRecord("people.server", logging.INFO, __file__, 1, "hello", None, None)
    record.created = created
    record.msecs = round((created - int(created)) * 1000)
    return record


class TestTimestamps:
    """Every log line's time is UTC, whatever the host's zone."""

    def test_json_time_is_rfc3339_utc_with_milliseconds(self, far_zone: None) -> None:
        """A JSON line's `time` is like 2026-12-02T05:32:56.123Z."""
        line = json.loads(JsonFormatter().format(record_at(INSTANT)))
        assert line["time"] == "2026-12-02T05:32:56.123Z"

    def test_text_time_is_utc(self, far_zone: None) -> None:
        """A text line starts with the classic 2026-12-02 05:32:56,123, in UTC."""
        line = TextFormatter().format(record_at(INSTANT))
        assert line == "2026-12-02 05:32:56,123 INFO people.server hello"

    @pytest.mark.parametrize("log_format", ["json", "text"])
    def test_server_lines_are_utc(self, log_format: str) -> None:
        """Every line of a real server in a far zone carries the current UTC time."""
        run = quiet_run("--log-format", log_format, env={"TZ": FAR_ZONE})
        now = datetime.now(UTC)
        assert run.code == 0, run.output
        assert run.lines
        for line in run.lines:
            if log_format == "json":
                stamp = json.loads(line)["time"]
                assert RFC3339_MS_UTC.match(stamp), line
                when = datetime.fromisoformat(stamp)
            else:
                match = TEXT_TIME.match(line)
                assert match is not None, line
                when = datetime.fromisoformat(f"{match[1]}.{match[2]}").replace(tzinfo=UTC)
            assert abs(now - when) < CLOCK_SLACK, line


@dataclass
class Run:
    """A server that was started, called once and stopped."""

    code: int
    lines: list[str]

    @property
    def output(self) -> str:
        """Everything it wrote to stderr."""
        return "\n".join(self.lines)

    def levels(self, logger: str | None = None) -> set[str]:
        """The levels of the JSON lines (from ``logger`` only, if given)."""
        parsed = [json.loads(line) for line in self.lines]
        return {p["level"] for p in parsed if logger is None or p["logger"] == logger}


async def _health_once_serving(port: int) -> None:
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while True:
        channel = Channel("127.0.0.1", port)
        try:
            answer = await HealthStub(channel).Check(HealthCheckRequest(), timeout=5)
            if answer.status == HealthCheckResponse.SERVING:
                return
        except OSError:
            pass  # not listening yet
        finally:
            channel.close()
        assert time.monotonic() < deadline, "the server did not start"
        await asyncio.sleep(0.05)


def quiet_run(*args: str, env: dict[str, str] | None = None) -> Run:
    """Start `people serve ARGS` on a free port, wait until a health check answers (which
    needs no ready line), stop it with SIGTERM and return its exit code and lines."""
    port = free_port()
    process = subprocess.Popen(
        [*people_command(), "serve", "--database", "memory://", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: list[str] = []

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if line.strip():
                lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        asyncio.run(_health_once_serving(port))
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=PROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(PROCESS_TIMEOUT)
    return Run(code=code, lines=lines)


def exposed(tmp_path: Path) -> list[str]:
    """Flags that make the server warn at start: tokens without TLS on a public address."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    return ["--host", "0.0.0.0", "--token-file", str(tokens), "--log-format", "json"]


class TestLogLevel:
    """`--log-level` (PEOPLE_LOG_LEVEL) sets the least severe level logged."""

    def test_default_is_info(self, tmp_path: Path) -> None:
        """By default INFO lines (start, stop) and warnings are logged, DEBUG lines are not."""
        run = quiet_run(*exposed(tmp_path))
        assert run.code == 0, run.output
        assert run.levels("people.server") == {"INFO", "WARNING"}
        assert "DEBUG" not in run.levels()

    def test_debug(self) -> None:
        """--log-level debug adds DEBUG lines."""
        run = quiet_run("--log-level", "debug", "--log-format", "json")
        assert run.code == 0, run.output
        assert "DEBUG" in run.levels()

    @pytest.mark.parametrize("how", ["flag", "environment"])
    def test_warning(self, tmp_path: Path, how: str) -> None:
        """At warning the start warning stays and people's INFO lines go; access lines stay."""
        if how == "flag":
            run = quiet_run(*exposed(tmp_path), "--log-level", "warning")
        else:
            run = quiet_run(*exposed(tmp_path), env={"PEOPLE_LOG_LEVEL": "warning"})
        assert run.code == 0, run.output
        assert run.levels("people.server") == {"WARNING"}
        assert "people.access" in {json.loads(line)["logger"] for line in run.lines}

    def test_error(self, tmp_path: Path) -> None:
        """At error not even the start warning is logged."""
        run = quiet_run(*exposed(tmp_path), "--log-level", "error", "--no-access-log")
        assert run.code == 0, run.output
        assert run.lines == []

    @pytest.mark.parametrize("level", ["debug", "error"])
    def test_access_log_follows_its_own_flag(self, level: str) -> None:
        """Per-call access lines are written at every level, and at none with --no-access-log."""
        with_access = quiet_run("--log-level", level, "--log-format", "json")
        without = quiet_run("--log-level", level, "--log-format", "json", "--no-access-log")
        assert with_access.levels("people.access") == {"INFO"}
        assert without.levels("people.access") == set()

    def test_unknown_level_is_a_usage_error(self) -> None:
        """An unknown level, as a flag or in PEOPLE_LOG_LEVEL, stops `people serve` with 2."""
        flag = run_cli("serve", "--port", "0", "--database", "memory://", "--log-level", "loud")
        variable = run_cli(
            "serve", "--port", "0", "--database", "memory://", env={"PEOPLE_LOG_LEVEL": "loud"}
        )
        assert flag.returncode == 2, flag.stderr
        assert variable.returncode == 2, variable.stderr
        assert "log_level" in variable.stderr
        assert "debug, info, warning, error" in variable.stderr
