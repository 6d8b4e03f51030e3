"""Helpers for tests that run the real `people` command in a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from grpclib.client import Channel

from people._gen.people import UserServiceStub

READY = re.compile(r"people serving on (?P<address>\S+)")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


def people_command() -> list[str]:
    """The installed `people` console script of the interpreter running the tests."""
    script = Path(sys.executable).parent / "people"
    if script.exists():
        return [str(script)]
    found = shutil.which("people")
    assert found is not None, "the people console script is not installed"
    return [found]


@dataclass
class ServerProcess:
    """A running `people serve` and everything it has logged so far."""

    process: subprocess.Popen[str]
    address: str
    log: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self.address.rsplit(":", 1)[1])

    @property
    def target(self) -> str:
        """``host:port`` for clients."""
        return self.address

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and wait for the process to exit; return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=STOP_TIMEOUT)

    def output(self) -> str:
        """Everything the server wrote to stderr so far."""
        return "".join(self.log)


@asynccontextmanager
async def stub_for(server: ServerProcess) -> AsyncIterator[UserServiceStub]:
    """A generated stub over one TCP connection to ``server``."""
    host, port = server.address.rsplit(":", 1)
    channel = Channel(host.strip("[]"), int(port))
    try:
        yield UserServiceStub(channel)
    finally:
        channel.close()


@contextmanager
def running_server(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[ServerProcess]:
    """Start ``people serve --port 0 ARGS`` and stop it (SIGTERM) afterwards.

    Yields once the server logged its address. The caller's ``args`` come after
    ``--port 0``, so they may override it.
    """
    command = [*people_command(), "serve", "--port", "0", *args]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    assert process.stderr is not None
    log: list[str] = []
    ready = threading.Event()
    address: list[str] = []

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            match = READY.search(line)
            if match and not ready.is_set():
                address.append(match["address"])
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while not ready.wait(0.05):
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"people serve did not start: {''.join(log)}")
    if not address:
        process.wait(timeout=STOP_TIMEOUT)
        raise AssertionError(f"people serve exited with {process.returncode}: {''.join(log)}")
    server = ServerProcess(process=process, address=address[0], log=log)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``people ARGS`` to completion and capture its output."""
    return subprocess.run(
        [*people_command(), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        input=stdin,
        timeout=timeout,
        check=False,
    )


def free_args(extra: Sequence[str] = ()) -> list[str]:
    """Arguments that keep a test server self-contained: memory store plus ``extra``."""
    return ["--database", "memory://", *extra]
