"""Rolling restarts behind nginx: two replicas on one PostgreSQL, each restarted, lose no call."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial

import asyncpg
import grpc
import pytest

from people._gen.people import CreateUserRequest, CreateUserResponse
from tests.nginx import recommended_site, require_nginx, running_nginx, site_for
from tests.postgres import PostgresServer, free_port
from tests.support import ServerProcess, running_server

pytestmark = [pytest.mark.postgres, pytest.mark.nginx]

WRITERS = 6
CALL_TIMEOUT = 30.0
#: Generous: only detects a hang (no progress at all).
PROGRESS_TIMEOUT = 60.0
#: Calls each replica serves before the roll starts, and after it is over.
SERVED = 20
#: Calls the writers end between one replica's restart and the next one's stop.
CALLS_BETWEEN = 20
CREATE = "/people.UserService/CreateUser"
#: Seconds a writer waits after a failed call.
FAILURE_PAUSE = 0.01


@dataclass
class Writers:
    """Threads that create users through one address until stopped, each on its own channel."""

    target: str
    count: int = WRITERS
    acknowledged: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        """Start every writer."""
        for index in range(self.count):
            thread = threading.Thread(target=self._write, args=(index,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Let each writer finish its call in flight, then end it."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CALL_TIMEOUT + 10)
            assert not thread.is_alive(), "a writer hung"

    def done(self) -> int:
        """Calls that ended so far, acknowledged or failed."""
        with self._lock:
            return len(self.acknowledged) + len(self.failures)

    def _write(self, index: int) -> None:
        with grpc.insecure_channel(self.target) as channel:
            create = channel.unary_unary(
                CREATE, request_serializer=bytes, response_deserializer=CreateUserResponse.parse
            )
            number = 0
            while not self._stop.is_set():
                email = f"writer{index}-{number}@example.com"
                number += 1
                request = CreateUserRequest(name=f"Writer {index}", email=email)
                try:
                    reply = create(request, timeout=CALL_TIMEOUT)
                except grpc.RpcError as exc:
                    with self._lock:
                        self.failures.append(f"{email}: {exc.code()} {exc.details()}")
                    # A proxy that fails every call answers at once: do not spin.
                    self._stop.wait(FAILURE_PAUSE)
                else:
                    with self._lock:
                        self.acknowledged[email] = reply.id


class Replica:
    """``people serve`` on a fixed port, which can be stopped and started again on it."""

    def __init__(self, port: int, database: str) -> None:
        self.port = port
        self.database = database
        self.generations: list[ServerProcess] = []
        self._stack = ExitStack()

    def start(self) -> None:
        """Start a new process on the port and wait until it is ready (logged its address)."""
        server = self._stack.enter_context(
            running_server("--port", str(self.port), "--database", self.database)
        )
        self.generations.append(server)

    def current(self) -> ServerProcess:
        """The process started last."""
        return self.generations[-1]

    def close(self) -> None:
        """Stop every process still running."""
        self._stack.close()


@contextmanager
def replicas(count: int, database: str) -> Iterator[list[Replica]]:
    """``count`` replicas on free ports, sharing ``database``; all stopped afterwards."""
    fleet = [Replica(free_port(), database) for _ in range(count)]
    try:
        for replica in fleet:
            replica.start()
        yield fleet
    finally:
        for replica in fleet:
            replica.close()


def served_at_least(server: ServerProcess, calls: int) -> bool:
    """True once ``server``'s access log shows ``calls`` CreateUser calls answered OK."""
    return sum("CreateUser OK " in line for line in server.log) >= calls


def calls_ended(writers: Writers, calls: int) -> bool:
    """True once ``writers`` ended ``calls`` calls, acknowledged or failed."""
    return writers.done() >= calls


def wait_until(condition: Callable[[], bool], what: str, diagnose: Callable[[], str]) -> None:
    """Wait for ``condition()``; fail with ``diagnose()`` if nothing happens for a long time."""
    deadline = time.monotonic() + PROGRESS_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen:\n{diagnose()}")
        time.sleep(0.02)


@dataclass
class Rollout:
    """What a rolling restart left behind: the writers' results and nginx's logs."""

    writers: Writers
    error_log: str
    access_log: list[str]

    def retried(self) -> list[str]:
        """nginx's access lines of calls it passed to more than one replica."""
        return [line for line in self.access_log if re.search(r"upstream=\S+, ", line)]

    def report(self) -> str:
        """The first failures, and nginx's errors other than the expected refused connects."""
        failures = "\n".join(self.writers.failures[:10])
        errors = [
            line
            for line in self.error_log.splitlines()
            if "[error]" in line and "(111: Connection refused)" not in line
        ]
        unexpected = "\n".join(errors[:20])
        return f"{len(self.writers.failures)} failed, e.g.:\n{failures}\nnginx:\n{unexpected}"


def roll(site: str, database: str) -> Rollout:
    """Restart two replicas behind nginx (configured with ``site``) in turn while writers write.

    Each replica is stopped with SIGTERM, waited for, started again on its port and
    waited for until it is ready; the next one is stopped right after, as a rollout
    gated on readiness does. Only then does the roll wait for nginx to use both again.
    """
    require_nginx()  # skip (or fail) before anything is started
    listen = free_port()
    with replicas(2, database) as fleet:
        config = site_for(site, listen_port=listen, replica_ports=[r.port for r in fleet])
        with running_nginx(config, listen) as proxy:
            writers = Writers(f"127.0.0.1:{listen}")

            def diagnose() -> str:
                return Rollout(writers, proxy.error_log(), []).report()

            writers.start()
            try:
                for replica in fleet:
                    served = partial(served_at_least, replica.current(), SERVED)
                    wait_until(served, f"replica {replica.port} serving", diagnose)
                for replica in fleet:
                    assert replica.current().stop() == 0, replica.current().output()
                    replica.start()
                    more = partial(calls_ended, writers, writers.done() + CALLS_BETWEEN)
                    wait_until(more, "calls after a restart", diagnose)
                for replica in fleet:
                    served = partial(served_at_least, replica.current(), SERVED)
                    wait_until(served, f"replica {replica.port} serving again", diagnose)
            finally:
                writers.stop()
            return Rollout(writers, proxy.error_log(), proxy.access_log())


async def stored_users(url: str) -> dict[str, str]:
    """email -> id of every user in the database at ``url``."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT id, email FROM users")
    finally:
        await connection.close()
    return {row["email"]: row["id"] for row in rows}


def without_keepalive(site: str) -> str:
    """``site`` without its upstream keepalive: nginx's default, a new connection per call."""
    return re.sub(r"^[ \t]*keepalive(_timeout)?[ \t][^;\n]*;[^\n]*\n", "", site, flags=re.M)


def with_default_max_fails(site: str) -> str:
    """``site`` with nginx's default passive health check (max_fails=1 fail_timeout=10s)."""
    return site.replace(" max_fails=0", "")


class TestRollingRestart:
    """Each replica behind nginx restarted with SIGTERM while clients keep writing."""

    @pytest.mark.parametrize(
        "variant",
        [recommended_site, lambda: without_keepalive(recommended_site())],
        ids=["recipe", "recipe-without-keepalive"],
    )
    def test_no_call_fails_and_every_acknowledged_create_is_stored(
        self, postgres_server: PostgresServer, variant: Callable[[], str]
    ) -> None:
        """Six grpcio writers through nginx (the recipe, with and without upstream keepalive)
        see no failed call, and the database holds exactly the users they were told exist."""
        database = asyncio.run(postgres_server.create_database())
        rollout = roll(variant(), database)
        assert not rollout.writers.failures, rollout.report()
        # Calls nginx sent to a stopped replica were refused at connect and went to the other.
        assert rollout.retried()
        assert asyncio.run(stored_users(database)) == rollout.writers.acknowledged

    def test_nginx_default_max_fails_takes_every_replica_out(
        self, postgres_server: PostgresServer
    ) -> None:
        """With nginx's default max_fails=1 fail_timeout=10s a roll faster than 10 s leaves no
        replica in rotation: nginx answers 502 (UNAVAILABLE) with "no live upstreams"."""
        database = asyncio.run(postgres_server.create_database())
        rollout = roll(with_default_max_fails(recommended_site()), database)
        assert rollout.writers.failures
        assert "no live upstreams" in rollout.error_log
        assert asyncio.run(stored_users(database)) == rollout.writers.acknowledged
