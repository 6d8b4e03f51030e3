"""Prometheus metrics for ``people serve``: where they live, and people's own.

With ``--metrics-address HOST:PORT`` the server serves ``/metrics`` over HTTP.
The runtime's metrics (:mod:`people.rpc.metrics`: go-grpc-prometheus names,
connections, calls in flight and queued, refusals) come with people's own:
read-cache hits and misses, store operation latency by operation and store,
the number of users (:mod:`people.server.user_count`), and build information.

One process registers its metrics in a registry of its own and serves it from
a thread. Under ``--workers N`` the parent points ``PROMETHEUS_MULTIPROC_DIR``
(prometheus_client's multiprocess mode) at a fresh directory before any worker
starts and before prometheus_client is imported (:mod:`people.server.workers`);
each worker writes its values there, and the parent serves them all from one
endpoint, summed (counters survive a worker's exit; live gauges drop it).
This module is imported only when metrics are on: without them prometheus_client
is never loaded.
"""

from __future__ import annotations

import platform
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

from people import __version__
from people.rpc.metrics import GrpcMetrics

#: Seconds: store operations take tens of microseconds to seconds.
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0)


class PeopleMetrics:
    """Every metric one server process keeps.

    Args:
        registry: Where they are registered.
        store: The store's kind (``sqlite``, ``postgresql``, ``memory``), a label.
    """

    def __init__(self, registry: CollectorRegistry, *, store: str) -> None:
        self.grpc = GrpcMetrics(registry)
        self._store = store
        self._hits = Counter(
            "people_read_cache_hits_total",
            "Reads answered from the read cache.",
            registry=registry,
        )
        self._misses = Counter(
            "people_read_cache_misses_total",
            "Reads the read cache could not answer (PostgreSQL: every read).",
            registry=registry,
        )
        # Kept as plain ints per call and added in the runtime's batches (its flush).
        self._lookups = [0, 0]  # misses, hits
        self.grpc.add_flusher(self._flush_lookups)
        self._store_seconds = Histogram(
            "people_store_operation_seconds",
            "Time one store operation took, in seconds.",
            ("operation", "store"),
            buckets=STORE_BUCKETS,
            registry=registry,
        )
        self._users = Gauge(
            "people_users",
            "Users in the store, counted at start and shortly after writes.",
            registry=registry,
            # Every worker counts the same store: the latest count is the truest.
            multiprocess_mode="mostrecent",
        )
        info = Gauge(
            "people_build_info",
            "Always 1; the labels say which people, Python and store run.",
            ("version", "python", "store"),
            registry=registry,
            multiprocess_mode="max",
        )
        info.labels(__version__, platform.python_version(), store).set(1)

    def cache_lookup(self, hit: bool) -> None:
        """Count one read-cache lookup (on the event loop)."""
        self._lookups[hit] += 1
        self.grpc.changed()

    def _flush_lookups(self) -> None:
        (misses, hits), self._lookups = self._lookups, [0, 0]
        self._hits.inc(hits)
        self._misses.inc(misses)

    def store_operation(self, operation: str, seconds: float) -> None:
        """Record how long one store operation took."""
        self._store_seconds.labels(operation, self._store).observe(seconds)

    def users(self, count: int) -> None:
        """Record how many users the store holds."""
        self._users.set(count)


class WorkerMetrics:
    """The supervisor's own metrics under ``--workers``: workers started and exited.

    Args:
        registry: Where they are registered (their values go to the multiprocess files).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._starts = Counter(
            "people_worker_starts_total",
            "Worker processes started by the supervisor.",
            registry=registry,
        )
        self._exits = Counter(
            "people_worker_exits_total",
            "Worker processes that ended: asked to stop (expected) or not (unexpected).",
            ("cause",),
            registry=registry,
        )

    def started(self, pid: int) -> None:
        """A worker started."""
        self._starts.inc()

    def exited(self, pid: int, *, expected: bool) -> None:
        """A worker ended: count it, and drop its live gauges from the sums."""
        self._exits.labels("expected" if expected else "unexpected").inc()
        forget_process(pid)


def serve_metrics(address: str, registry: CollectorRegistry) -> Callable[[], None]:
    """Serve ``registry`` at ``http://ADDRESS/metrics`` from a thread; return what stops it."""
    host, _, port = address.rpartition(":")
    server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop


def multiprocess_registry() -> CollectorRegistry:
    """A registry that reads every worker's values from the multiprocess directory."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call] # unannotated upstream
    return registry


def forget_process(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay in the sums)."""
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call] # unannotated upstream
