"""Prometheus metrics of the runtime, named as go-grpc-prometheus names them.

Existing Grafana dashboards for gRPC servers query ``grpc_server_started_total``,
``grpc_server_handled_total{grpc_code}``, ``grpc_server_handling_seconds`` and
the message counters with labels ``grpc_type``, ``grpc_service`` and
``grpc_method``; :class:`GrpcMetrics` keeps them, plus the runtime's own:
connections open, calls in flight and queued for a slot, and refusals by
reason. Only methods the server serves get per-method series, so a client
cannot grow the label space by calling made-up paths.

prometheus_client takes a lock for every ``inc()``, and a call would make
seven of them. So the per-call counts are kept as plain integers on the event
loop and added to the metrics in batches (:meth:`GrpcMetrics.flush`): before
every scrape of the process's own registry, within a second of any call
(which is when a ``--workers`` parent, reading the workers' files, sees them),
and at shutdown. Only the latency histogram is observed call by call.

``prometheus_client`` is imported only by servers that export metrics.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from grpclib.const import Status
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

from people.rpc.observe import CallRecord, NullObserver, RefusalReason, service_and_method

#: Seconds: finer than Prometheus' defaults at the low end, where unary calls live.
HANDLING_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_METHOD_LABELS = ("grpc_type", "grpc_service", "grpc_method")
#: Seconds from a call to its counts reaching the metrics, at most.
FLUSH_INTERVAL = 1.0
#: Seconds a scrape waits for the event loop to flush before it reads what is there.
SCRAPE_FLUSH_TIMEOUT = 1.0


def grpc_code_name(status: Status) -> str:
    """The status as Go's ``codes.Code.String()`` spells it (``NotFound``, ``Canceled``)."""
    if status is Status.CANCELLED:
        return "Canceled"
    if status is Status.OK:
        return "OK"
    return "".join(part.capitalize() for part in status.name.split("_"))


class GrpcMetrics(NullObserver):
    """The runtime's metrics in ``registry``; an observer of every call.

    Args:
        registry: Where the metrics are registered.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        # First in the registry, so a scrape flushes before it reads the counters.
        registry.register(_FlushBeforeScrape(self.flush_from_thread))
        self._started = Counter(
            "grpc_server_started_total",
            "RPCs started on the server.",
            _METHOD_LABELS,
            registry=registry,
        )
        self._handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, whatever their status.",
            (*_METHOD_LABELS, "grpc_code"),
            registry=registry,
        )
        self._handling = Histogram(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server, in seconds.",
            _METHOD_LABELS,
            buckets=HANDLING_BUCKETS,
            registry=registry,
        )
        self._received = Counter(
            "grpc_server_msg_received_total",
            "Messages received from clients.",
            _METHOD_LABELS,
            registry=registry,
        )
        self._sent = Counter(
            "grpc_server_msg_sent_total",
            "Messages sent to clients.",
            _METHOD_LABELS,
            registry=registry,
        )
        self._connections = Gauge(
            "people_connections",
            "HTTP/2 connections open.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._in_flight = Gauge(
            "people_calls_in_flight",
            "Calls started and not yet finished.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._queued = Gauge(
            "people_calls_queued",
            "Calls waiting for a free handler slot.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._refused = Counter(
            "people_refused_total",
            "Calls and connections turned away, by reason (cap, limits, drain, abuse).",
            ("reason",),
            registry=registry,
        )
        # Labelled children, made once per method (and code): .labels() costs four
        # times what .inc() does.
        self._children: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}
        self._handled_children: dict[tuple[str, str, int], Any] = {}
        # Counts since the last flush: (type, method) -> [started, received, sent],
        # and (type, method, status code) -> handled.
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._handled_counts: dict[tuple[str, str, int], int] = {}
        self._in_flight_now = 0
        self._flushers: list[Callable[[], None]] = [self._flush_calls]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def _for(self, key: tuple[str, str]) -> tuple[Any, Any, Any, Any]:
        children = self._children.get(key)
        if children is None:
            labels = (key[0], *service_and_method(key[1]))
            children = (
                self._started.labels(*labels),
                self._handling.labels(*labels),
                self._received.labels(*labels),
                self._sent.labels(*labels),
            )
            self._children[key] = children
        return children

    def call_started(self, record: CallRecord, metadata: Mapping[str, Any]) -> None:
        """Count the start."""
        assert record.grpc_type is not None
        key = (record.grpc_type, record.method)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0, 0, 0]
        counts[0] += 1
        self._in_flight_now += 1
        self.changed()

    def call_finished(self, record: CallRecord) -> None:
        """Count the end, its code, its duration and its messages."""
        if not record.started:
            return
        assert record.grpc_type is not None
        self._in_flight_now -= 1
        key = (record.grpc_type, record.method)
        counts = self._counts.get(key)
        if counts is None:  # flushed since the call started
            counts = self._counts[key] = [0, 0, 0]
        counts[1] += record.received
        counts[2] += record.sent
        # By the code's number: an Enum member hashes in Python, an int in C.
        handled = (record.grpc_type, record.method, record.final_status.value)
        self._handled_counts[handled] = self._handled_counts.get(handled, 0) + 1
        self._for(key)[1].observe(time.monotonic() - record.start)
        self.changed()

    def changed(self) -> None:
        """Counts were kept since the last flush: flush within :data:`FLUSH_INTERVAL`."""
        if self._timer is None:
            self._loop = loop = asyncio.get_running_loop()
            self._timer = loop.call_later(FLUSH_INTERVAL, self.flush)

    def add_flusher(self, flush: Callable[[], None]) -> None:
        """Run ``flush`` too whenever the call counts are flushed (counts kept elsewhere)."""
        self._flushers.append(flush)

    def flush(self) -> None:
        """Add every count kept since the last flush to the metrics; on the event loop."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for flush in self._flushers:
            flush()

    def flush_from_thread(self) -> None:
        """Have the event loop flush, and wait for it (a while at most): for a scrape."""
        loop = self._loop
        if loop is None:
            return  # no call yet: nothing kept
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # scraped from the loop itself: waiting would block it
            self.flush()
            return
        done = threading.Event()

        def flush() -> None:
            try:
                self.flush()
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(flush)
        except RuntimeError:
            return  # the loop is closed; its last counts were flushed at shutdown
        done.wait(SCRAPE_FLUSH_TIMEOUT)

    def _flush_calls(self) -> None:
        counts, self._counts = self._counts, {}
        for key, (started, received, sent) in counts.items():
            started_child, _, received_child, sent_child = self._for(key)
            started_child.inc(started)
            received_child.inc(received)
            sent_child.inc(sent)
        handled, self._handled_counts = self._handled_counts, {}
        for (grpc_type, method, code), value in handled.items():
            child = self._handled_children.get((grpc_type, method, code))
            if child is None:
                labels = (grpc_type, *service_and_method(method), grpc_code_name(Status(code)))
                child = self._handled.labels(*labels)
                self._handled_children[grpc_type, method, code] = child
            child.inc(value)
        self._in_flight.set(self._in_flight_now)

    def refused(self, reason: RefusalReason) -> None:
        """Count a refusal."""
        self._refused.labels(reason).inc()

    def connections_changed(self, delta: int) -> None:
        """Follow the open connections."""
        self._connections.inc(delta)

    def queue_changed(self, delta: int) -> None:
        """Follow the calls waiting for a slot."""
        self._queued.inc(delta)


class _FlushBeforeScrape:
    """A collector of no metrics that flushes the kept counts when a scrape begins."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        self._flush()
        return iter(())
