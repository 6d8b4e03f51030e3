"""`people serve --workers N`: several processes on one port, as correct as one, stopped cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from multiprocessing.connection import wait
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from people._gen.people import CreateUserRequest, Empty, UserServiceStub
from people.server.signals import SignalSocket
from people.server.workers import STOP_MARGIN
from tests.inprocess import RawH2, frame
from tests.postgres import free_port
from tests.support import ServerProcess, run_cli, running_server

WORKERS = 3
STARTED = re.compile(r"people worker (?P<index>\d+) started \(pid (?P<pid>\d+)\)")
LISTENING = re.compile(r"people worker \d+ listening on (?P<address>\S+)")
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
#: Upper bound for a process to disappear after its parent is gone (not a timing assertion).
GONE_TIMEOUT = 20.0


@asynccontextmanager
async def channel_to(server: ServerProcess) -> AsyncIterator[Channel]:
    """A grpclib channel (one TCP connection) to ``server``, closed afterwards."""
    host, port = server.address.rsplit(":", 1)
    channel = Channel(host.strip("[]"), int(port))
    try:
        yield channel
    finally:
        channel.close()


def worker_pids(server: ServerProcess) -> list[int]:
    """The pids of the workers the parent says it started."""
    return [int(match["pid"]) for match in STARTED.finditer(server.output())]


def alive(pid: int) -> bool:
    """True while ``pid`` is a running (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_gone(pids: list[int]) -> list[int]:
    """Wait (bounded) for every pid to exit; return those still running."""
    deadline = time.monotonic() + GONE_TIMEOUT
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL every worker can share: a SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'people.db'}"
    server = request.getfixturevalue("postgres_server")
    url: str = await server.create_database()
    return url


class TestStartup:
    """The parent announces the server once, when every worker listens on the shared port."""

    def test_one_ready_line_after_every_worker_listens(self, tmp_path: Path) -> None:
        """With --port 0 all workers listen on one port and only then the parent logs ready."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        with running_server("--workers", str(WORKERS), "--database", database) as server:
            lines = server.log[:]
            code = server.stop()
        assert code == 0, server.output()
        ready = [n for n, line in enumerate(lines) if "people serving on" in line]
        listening = {
            n: match["address"] for n, line in enumerate(lines) if (match := LISTENING.search(line))
        }
        assert len(ready) == 1
        assert f"{WORKERS} workers" in lines[ready[0]]
        assert len(listening) == WORKERS
        assert max(listening) < ready[0]
        assert set(listening.values()) == {server.address}

    def test_first_worker_listens_before_the_others_start(self, tmp_path: Path) -> None:
        """Worker 1 opens the database alone: it listens before worker 2 is started."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        with running_server("--workers", "2", "--database", database) as server:
            lines = server.log[:]
            assert server.stop() == 0, server.output()
        first = [n for n, line in enumerate(lines) if "people worker 1 listening on" in line]
        second = [n for n, line in enumerate(lines) if "people worker 2 started" in line]
        assert len(first) == len(second) == 1, lines
        assert first[0] < second[0]

    def test_memory_database_is_refused(self) -> None:
        """memory:// cannot be shared by processes, so --workers 2 with it is a usage error."""
        result = run_cli("serve", "--port", "0", "--workers", "2", "--database", "memory://")
        assert result.returncode == 2
        assert "memory://" in result.stderr

    def test_zero_workers_is_a_usage_error(self) -> None:
        """--workers 0 is rejected before anything starts."""
        result = run_cli("serve", "--port", "0", "--workers", "0", "--database", "memory://")
        assert result.returncode == 2
        assert "workers" in result.stderr


class TestCorrectness:
    """Several processes keep the guarantees of one: one email owner, no lost writes."""

    async def test_email_race_has_one_winner(self, database: str) -> None:
        """20 concurrent creates of one email in different case, each on its own connection,
        across the workers: exactly one succeeds, the rest are ALREADY_EXISTS."""
        emails = [
            "".join(c.upper() if (n >> i) & 1 else c for i, c in enumerate("race@example.com"))
            for n in range(20)
        ]
        with running_server("--workers", str(WORKERS), "--database", database) as server:

            async def create(email: str) -> Status:
                async with channel_to(server) as channel:
                    try:
                        await UserServiceStub(channel).create_user(
                            CreateUserRequest(name="Racer", email=email)
                        )
                    except GRPCError as exc:
                        return exc.status
                    return Status.OK

            outcomes = await asyncio.gather(*(create(email) for email in emails))
            async with channel_to(server) as channel:
                listed = await UserServiceStub(channel).get_all_users(Empty())
            assert server.stop() == 0, server.output()
        assert outcomes.count(Status.OK) == 1, outcomes
        assert outcomes.count(Status.ALREADY_EXISTS) == 19, outcomes
        assert len(listed.user) == 1

    async def test_no_acknowledged_write_is_lost(self, database: str) -> None:
        """Every create acknowledged by some worker is there after a restart with one process."""
        with running_server("--workers", str(WORKERS), "--database", database) as server:

            async def create_many(connection: int) -> list[str]:
                async with channel_to(server) as channel:
                    stub = UserServiceStub(channel)
                    answers = await asyncio.gather(
                        *(
                            stub.create_user(
                                CreateUserRequest(name="W", email=f"w{connection}.{n}@example.com")
                            )
                            for n in range(10)
                        )
                    )
                return [answer.id for answer in answers]

            acknowledged = [
                user_id
                for batch in await asyncio.gather(*(create_many(c) for c in range(8)))
                for user_id in batch
            ]
            assert server.stop() == 0, server.output()

        with running_server("--database", database) as single:
            async with channel_to(single) as channel:
                stored = await UserServiceStub(channel).get_all_users(Empty())
            assert single.stop() == 0, single.output()
        assert len(acknowledged) == 80
        assert {user.id for user in stored.user} == set(acknowledged)

    async def test_acknowledged_writes_survive_a_stop_mid_traffic(self, tmp_path: Path) -> None:
        """SIGTERM while 8 connections keep creating: every create that was acknowledged is
        stored, and the server still exits 0."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        acknowledged: list[str] = []
        enough = asyncio.Event()
        with running_server("--workers", str(WORKERS), "--database", database) as server:

            async def keep_creating(connection: int) -> None:
                async with channel_to(server) as channel:
                    stub = UserServiceStub(channel)
                    for n in range(10_000):
                        try:
                            answer = await stub.create_user(
                                CreateUserRequest(name="W", email=f"m{connection}.{n}@example.com")
                            )
                        except (GRPCError, OSError, ConnectionError, StreamTerminatedError):
                            return
                        acknowledged.append(answer.id)
                        if len(acknowledged) >= 40:
                            enough.set()

            writers = asyncio.gather(*(keep_creating(c) for c in range(8)))
            await asyncio.wait_for(enough.wait(), 60)
            server.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(writers, 60)
            code = await asyncio.to_thread(server.process.wait, 60)
        assert code == 0, server.output()

        with running_server("--database", database) as single:
            async with channel_to(single) as channel:
                stored = await UserServiceStub(channel).get_all_users(Empty())
            assert single.stop() == 0, single.output()
        assert set(acknowledged) <= {user.id for user in stored.user}


async def health_on_a_new_connection(port: int) -> RawH2 | None:
    """A new connection with one health Check answered on it, or None if the server closed it."""
    # The kernel completes the TCP handshake; a refusing server closes the socket after.
    client = await RawH2.connect(port)
    try:
        answer = await client.answer(client.call(HEALTH_CHECK, frame(b"")))
    except (asyncio.IncompleteReadError, ConnectionError):
        client.close()
        return None
    assert answer["grpc-status"] == "0", answer
    return client


class TestEachWorkerIsAServer:
    """Each worker has its own limits and health service."""

    async def test_max_connections_counts_per_worker(self, tmp_path: Path) -> None:
        """With --max-connections 1 and two workers, exactly two connections stay open, and each
        was answered by a worker's own health service.

        The kernel hashes each new connection to a worker; 40 attempts all landing on one
        worker happens once in 2^39 runs.
        """
        database = f"sqlite:///{tmp_path / 'people.db'}"
        args = ("--workers", "2", "--max-connections", "1", "--database", database)
        with running_server(*args) as server:
            opened = [await health_on_a_new_connection(server.port) for _ in range(40)]
            accepted = [client for client in opened if client is not None]
            for client in accepted:
                client.close()
            assert server.stop() == 0, server.output()
        assert len(accepted) == 2

    def test_stop_margin(self) -> None:
        """A worker still running 3 s after the grace period is killed (the margin's value)."""
        assert STOP_MARGIN == 3.0


class TestStartupFailure:
    """A worker that cannot start takes the whole server down, without orphans."""

    def test_unreachable_database_exits_1(self) -> None:
        """With a PostgreSQL URL nobody answers, the first worker fails, the parent exits 1, never
        logs the ready line and leaves no worker behind."""
        url = f"postgresql://nobody@127.0.0.1:{free_port()}/people"
        result = run_cli("serve", "--port", "0", "--workers", "2", "--database", url)
        assert result.returncode == 1, result.stderr
        assert "people serving on" not in result.stderr
        assert "failed to start" in result.stderr
        pids = [int(match["pid"]) for match in STARTED.finditer(result.stderr)]
        assert pids, "no worker was started"
        assert [pid for pid in pids if alive(pid)] == []


class TestStartupErrors:
    """A worker that cannot start fails the server with the one line a single process prints."""

    @pytest.mark.parametrize(
        "args",
        [
            ["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
            ["--token-file", "/nonexistent/tokens"],
        ],
        ids=["tls", "token"],
    )
    def test_same_line_as_one_process(self, tmp_path: Path, args: list[str]) -> None:
        """A bad TLS or token file exits 1 with the same `people serve:` line, no traceback."""
        database = ["--database", f"sqlite:///{tmp_path / 'people.db'}"]
        single = run_cli("serve", "--port", "0", *database, *args)
        several = run_cli("serve", "--port", "0", "--workers", "2", *database, *args)
        assert (single.returncode, several.returncode) == (1, 1), several.stderr
        expected = [line for line in single.stderr.splitlines() if line.startswith("people serve:")]
        assert len(expected) == 1, single.stderr
        assert expected[0] in several.stderr.splitlines()
        assert "Traceback" not in several.stderr


class TestShutdown:
    """Stopping the parent stops every worker; no process outlives it."""

    def test_signals_never_hang_the_parent(self, tmp_path: Path) -> None:
        """Stopped right after it announces itself, with stderr buffered, the parent always exits.

        A signal handler that logged could interrupt the ready line being written
        and fail, so the workers were never told to stop (about one start in ten).
        """
        database = f"sqlite:///{tmp_path / 'people.db'}"
        for _ in range(8):
            with running_server(
                "--workers", "2", "--database", database, env={"PYTHONUNBUFFERED": ""}
            ) as server:
                assert server.stop(signal.SIGINT) == 0, server.output()

    def test_a_worker_that_ignores_sigterm_is_killed(self, tmp_path: Path) -> None:
        """A worker that does not stop is killed after the grace period; the parent exits 1."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        args = ("--workers", "2", "--grace-period", "1", "--database", database)
        with running_server(*args) as server:
            pids = worker_pids(server)
            os.kill(pids[1], signal.SIGSTOP)
            try:
                code = server.stop(signal.SIGTERM)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pids[1], signal.SIGCONT)
        assert code == 1, server.output()
        assert "people worker 2 did not stop in time; killing it" in server.output()
        assert wait_until_gone(pids) == []

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_signal_stops_every_worker(self, tmp_path: Path, signum: int) -> None:
        """SIGTERM or SIGINT to the parent stops all workers, and the parent exits 0."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        with running_server("--workers", str(WORKERS), "--database", database) as server:
            pids = worker_pids(server)
            assert len(pids) == WORKERS
            assert all(alive(pid) for pid in pids)
            code = server.stop(signum)
        assert code == 0, server.output()
        assert [pid for pid in pids if alive(pid)] == []
        assert "Traceback" not in server.output()

    def test_workers_stop_when_the_parent_is_killed(self, tmp_path: Path) -> None:
        """If the parent is SIGKILLed, its workers notice and exit on their own."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        with running_server("--workers", str(WORKERS), "--database", database) as server:
            pids = worker_pids(server)
            server.stop(signal.SIGKILL)
            assert wait_until_gone(pids) == [], server.output()

    async def test_a_worker_killed_under_load(self, tmp_path: Path) -> None:
        """SIGKILL to one worker while 8 connections create users: the parent stops the others
        and exits 1, and every create that was acknowledged is stored."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        acknowledged: list[str] = []
        enough = asyncio.Event()
        args = ("--workers", str(WORKERS), "--grace-period", "2", "--database", database)
        with running_server(*args) as server:
            pids = worker_pids(server)

            async def keep_creating(connection: int) -> None:
                async with channel_to(server) as channel:
                    stub = UserServiceStub(channel)
                    for n in range(10_000):
                        try:
                            answer = await stub.create_user(
                                CreateUserRequest(name="K", email=f"k{connection}.{n}@example.com")
                            )
                        except (GRPCError, OSError, ConnectionError, StreamTerminatedError):
                            return
                        acknowledged.append(answer.id)
                        if len(acknowledged) >= 40:
                            enough.set()

            writers = asyncio.gather(*(keep_creating(c) for c in range(8)))
            await asyncio.wait_for(enough.wait(), 60)
            os.kill(pids[0], signal.SIGKILL)
            await asyncio.wait_for(writers, 60)
            code = await asyncio.to_thread(server.process.wait, 60)
        assert code == 1, server.output()
        assert wait_until_gone(pids) == []
        with running_server("--database", database) as single:
            async with channel_to(single) as channel:
                stored = await UserServiceStub(channel).get_all_users(Empty())
            assert single.stop() == 0, single.output()
        assert set(acknowledged) <= {user.id for user in stored.user}

    @pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
    def test_a_lost_worker_stops_the_server(self, tmp_path: Path, signum: int) -> None:
        """When one worker dies or is stopped on its own, the parent stops the others and exits
        1, so a supervisor restarts the whole group."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        with running_server("--workers", str(WORKERS), "--database", database) as server:
            pids = worker_pids(server)
            os.kill(pids[0], signum)
            code = server.process.wait(timeout=60)
        assert code == 1, server.output()
        assert [pid for pid in pids if alive(pid)] == []
        assert "exited unexpectedly" in server.output()


class TestWakeup:
    """The parent's signal handling: signals become bytes on a socket, handlers do nothing."""

    def test_signals_arrive_as_bytes(self) -> None:
        """SIGTERM, SIGINT and SIGHUP while installed run no Python code and are read back in
        order."""
        with SignalSocket((signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) as wakeup:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGHUP)
            assert wait([wakeup.reader], timeout=5) == [wakeup.reader]
            time.sleep(0.05)
            assert wakeup.received() == [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
            assert wakeup.received() == []
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
