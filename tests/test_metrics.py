"""Prometheus metrics scraped from a real `people serve`, after a known mix of calls."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from people._gen.people import (
    CreateUserRequest,
    ListUsersRequest,
    UserIdRequest,
    UserServiceStub,
)
from people.rpc.metrics import FLUSH_INTERVAL, GrpcMetrics
from people.rpc.observe import CallRecord
from people.server.instruments import open_instruments
from people.server.metrics import WorkerMetrics
from people.server.settings import Settings
from tests.inprocess import RawCodec, call_raw
from tests.postgres import free_port
from tests.support import ServerProcess, run_cli, running_server

#: So that a 2,000-byte request is refused as too large.
SMALL_REQUESTS = ("--max-receive-message-bytes", "1024")
#: (name, labels) -> value, for every sample of a scrape.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(address: str) -> Samples:
    """Every sample ``/metrics`` at ``address`` reports."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape_until(address: str, name: str, expected: float, limit: float = 5) -> Samples:
    """Scrape until the unlabelled ``name`` reads ``expected`` (or ``limit`` seconds pass)."""
    deadline = time.monotonic() + limit
    while True:
        samples = await asyncio.to_thread(scrape, address)
        if value(samples, name) == expected or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.05)


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def method(name: str, **more: str) -> dict[str, str]:
    """The go-grpc-prometheus labels of a people.UserService method."""
    return {
        "grpc_type": "unary",
        "grpc_service": "people.UserService",
        "grpc_method": name,
        **more,
    }


async def known_mix(server: ServerProcess, connections: int = 1) -> None:
    """3 creates (one of them a taken email), 3 GetUserById (one unknown), 1 ListUsers,
    one request over the receive limit, and a made-up method; over ``connections``."""
    host, port = server.address.rsplit(":", 1)
    channels = [Channel(host, int(port)) for _ in range(connections)]
    try:
        stubs = [UserServiceStub(channel) for channel in channels]
        first = stubs[0]
        ada = await first.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
        await stubs[-1].create_user(CreateUserRequest(name="Bob", email="bob@example.com"))
        with pytest.raises(GRPCError):
            await first.create_user(CreateUserRequest(name="Ada", email="ADA@example.com"))
        for stub in (first, stubs[-1]):
            await stub.get_user_by_id(UserIdRequest(id=ada.id))
        with pytest.raises(GRPCError):
            await first.get_user_by_id(UserIdRequest(id="nobody"))
        await first.list_users(ListUsersRequest(page_size=10))
        raw = Channel(host, int(port), codec=RawCodec())
        try:
            with pytest.raises(GRPCError) as big:
                await call_raw(raw, "/people.UserService/CreateUser", b"\x0a" * 2000)
            assert big.value.status is Status.RESOURCE_EXHAUSTED
            with pytest.raises(GRPCError):
                await call_raw(raw, "/people.UserService/MadeUp", b"")
        finally:
            raw.close()
    finally:
        for channel in channels:
            channel.close()


def assert_known_mix(samples: Samples) -> None:
    """The counters the known mix must have produced, exactly."""
    handled = "grpc_server_handled_total"
    assert value(samples, "grpc_server_started_total", **method("CreateUser")) == 4
    assert value(samples, handled, **method("CreateUser", grpc_code="OK")) == 2
    assert value(samples, handled, **method("CreateUser", grpc_code="AlreadyExists")) == 1
    assert value(samples, handled, **method("CreateUser", grpc_code="ResourceExhausted")) == 1
    assert value(samples, "grpc_server_started_total", **method("GetUserById")) == 3
    assert value(samples, handled, **method("GetUserById", grpc_code="OK")) == 2
    assert value(samples, handled, **method("GetUserById", grpc_code="NotFound")) == 1
    assert value(samples, handled, **method("ListUsers", grpc_code="OK")) == 1
    assert value(samples, "grpc_server_handling_seconds_count", **method("GetUserById")) == 3
    assert value(samples, "grpc_server_msg_received_total", **method("GetUserById")) == 3
    assert value(samples, "grpc_server_msg_sent_total", **method("GetUserById")) == 2
    assert value(samples, "people_refused_total", reason="limits") == 1
    assert not [key for key in samples if ("grpc_method", "MadeUp") in key[1]]
    assert value(samples, "people_store_operation_seconds_count", operation="add", store="sqlite")
    assert value(samples, "people_calls_in_flight") == 0
    assert value(samples, "people_calls_queued") == 0


async def scrape_until_known_mix(address: str, limit: float = 5) -> Samples:
    """Scrape until the known mix's counters are all there (or ``limit`` seconds pass)."""
    deadline = time.monotonic() + limit
    while True:
        samples = await asyncio.to_thread(scrape, address)
        try:
            assert_known_mix(samples)
        except AssertionError:
            if time.monotonic() > deadline:
                return samples
            await asyncio.sleep(0.1)
        else:
            return samples


@pytest.fixture
def metrics_address() -> str:
    """A free loopback address for the metrics endpoint."""
    return f"127.0.0.1:{free_port()}"


class TestOneProcess:
    async def test_exact_counters_after_a_known_mix(
        self, tmp_path: Path, metrics_address: str
    ) -> None:
        """Each method's started, handled-by-code, latency and message counts are exact."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        args = ("--database", database, "--metrics-address", metrics_address, *SMALL_REQUESTS)
        with running_server(*args) as server:
            await known_mix(server)
            samples = await asyncio.to_thread(scrape, metrics_address)
            counted = await scrape_until(metrics_address, "people_users", 2)
            host, port = server.address.rsplit(":", 1)
            channel = Channel(host, int(port))
            await UserServiceStub(channel).list_users(ListUsersRequest())
            # The mix's own connections close as the server notices: wait for that.
            while_open = await scrape_until(metrics_address, "people_connections", 1)
            channel.close()
        assert_known_mix(samples)
        assert value(while_open, "people_connections") == 1
        # The two users created, counted after the writes; and at start by the next server.
        assert value(counted, "people_users") == 2
        with running_server(*args):
            assert value(await asyncio.to_thread(scrape, metrics_address), "people_users") == 2
        # GetUserById for one id twice: the second is a cache hit; every other read missed.
        assert value(samples, "people_read_cache_hits_total") == 1
        assert value(samples, "people_read_cache_misses_total") == 3
        info = [labels for name, labels in samples if name == "people_build_info"]
        assert info
        assert ("store", "sqlite") in info[0]

    def test_no_metrics_without_the_flag(self, tmp_path: Path) -> None:
        """Without --metrics-address neither prometheus_client nor OpenTelemetry is loaded."""
        program = (
            "import sys\n"
            "from people.cli.main import main\n"
            "from people.server.instruments import open_instruments\n"
            "from people.server.settings import Settings\n"
            "open_instruments(Settings())\n"
            "optional = ('prometheus_client', 'opentelemetry')\n"
            "loaded = [m for m in sys.modules if m.startswith(optional)]\n"
            "assert not loaded, loaded\n"
        )
        subprocess.run([sys.executable, "-c", program], check=True, timeout=60)


class TestWorkers:
    async def test_one_endpoint_sums_every_worker(
        self, tmp_path: Path, metrics_address: str
    ) -> None:
        """With --workers 2 the parent's endpoint reports the calls of both workers, exactly."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        args = (
            *("--workers", "2", "--database", database),
            *("--metrics-address", metrics_address, *SMALL_REQUESTS),
        )
        with running_server(*args) as server:
            await known_mix(server, connections=4)
            # Each worker adds its counts to its file within a second of a call.
            samples = await scrape_until_known_mix(metrics_address)
            counted = await scrape_until(metrics_address, "people_users", 2)
            assert server.stop() == 0
        assert_known_mix(samples)
        assert value(counted, "people_users") == 2
        assert value(samples, "people_worker_starts_total") == 2

    def test_starts_and_exits_are_counted_by_cause(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The supervisor's counters: every worker started, every exit as expected or not."""
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # where exits are forgotten
        registry = CollectorRegistry()
        workers = WorkerMetrics(registry)
        for pid in (101, 102, 103):
            workers.started(pid)
        workers.exited(101, expected=False)
        workers.exited(102, expected=True)
        workers.exited(103, expected=True)
        assert registry.get_sample_value("people_worker_starts_total") == 3
        exits = "people_worker_exits_total"
        assert registry.get_sample_value(exits, {"cause": "unexpected"}) == 1
        assert registry.get_sample_value(exits, {"cause": "expected"}) == 2

    def test_a_taken_metrics_port_is_a_startup_error(self, tmp_path: Path) -> None:
        """A metrics address already in use stops the server at start with one line."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        with running_server("--database", "memory://") as other:
            taken = other.address
            for workers in ("1", "2"):
                result = run_cli(
                    "serve",
                    "--port",
                    "0",
                    "--database",
                    database,
                    "--workers",
                    workers,
                    "--metrics-address",
                    taken,
                )
                assert result.returncode == 1, result.stderr
                assert f"people serve: cannot serve metrics on {taken}" in result.stderr
                assert "Traceback" not in result.stderr


def started_calls(registry: CollectorRegistry) -> float | None:
    """grpc_server_started_total of GetUserById, read without the flush a scrape makes."""
    counters = registry.restricted_registry(["grpc_server_started_total"])
    for family in counters.collect():
        for sample in family.samples:
            if sample.name == "grpc_server_started_total" and sample.labels == method(
                "GetUserById"
            ):
                return sample.value
    return None


def answer_one_call(metrics: GrpcMetrics) -> None:
    """Tell ``metrics`` of one GetUserById call that ended OK."""
    record = CallRecord(
        method="/people.UserService/GetUserById",
        peer=None,
        grpc_type="unary",
        started=True,
        received=1,
    )
    metrics.call_started(record, {})
    record.status, record.sent = Status.OK, 1
    metrics.call_finished(record)


class TestBatches:
    async def test_a_scrape_sees_every_call_at_once(self) -> None:
        """A scrape from another thread flushes the counts kept on the loop before it reads."""
        registry = CollectorRegistry()
        metrics = GrpcMetrics(registry)
        for _ in range(3):
            answer_one_call(metrics)
        assert started_calls(registry) == 0  # kept, not yet added
        samples = await asyncio.to_thread(generate_latest, registry)
        assert b'grpc_method="GetUserById",grpc_service="people.UserService"' in samples
        assert started_calls(registry) == 3

    async def test_counts_arrive_within_a_second_unscraped(self) -> None:
        """Without a scrape (a --workers parent reads files), counts are added within a second."""
        registry = CollectorRegistry()
        metrics = GrpcMetrics(registry)
        answer_one_call(metrics)
        await asyncio.sleep(FLUSH_INTERVAL + 0.2)
        assert started_calls(registry) == 1

    async def test_a_scrape_on_the_loop_does_not_wait_for_it(self) -> None:
        """A scrape made on the event loop's own thread flushes at once, never waiting on itself."""
        registry = CollectorRegistry()
        metrics = GrpcMetrics(registry)
        answer_one_call(metrics)
        assert registry.get_sample_value("grpc_server_started_total", method("GetUserById")) == 1

    async def test_shutdown_adds_the_last_counts(self, metrics_address: str) -> None:
        """Closing the instruments flushes what was kept, so a worker's last second is not lost."""
        instruments = open_instruments(Settings(metrics_address=metrics_address))
        assert instruments.metrics is not None
        answer_one_call(instruments.metrics.grpc)
        instruments.close()
        assert started_calls(instruments.registry) == 1
