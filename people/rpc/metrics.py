"""Prometheus metrics of the runtime, named as go-grpc-prometheus names them.

Existing Grafana dashboards for gRPC servers query ``grpc_server_started_total``,
``grpc_server_handled_total{grpc_code}``, ``grpc_server_handling_seconds`` and
the message counters with labels ``grpc_type``, ``grpc_service`` and
``grpc_method``; :class:`GrpcMetrics` keeps them, plus the runtime's own:
connections open, calls in flight and queued for a slot, and refusals by
reason. Only methods the server serves get per-method series, so a client
cannot grow the label space by calling made-up paths.

``prometheus_client`` is imported only by servers that export metrics.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from grpclib.const import Status
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from people.rpc.observe import CallRecord, NullObserver, RefusalReason

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
        # times what .inc() does, and these run on every call.
        self._children: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}
        self._handled_children: dict[tuple[str, str, Status], Any] = {}

    def _for(self, record: CallRecord) -> tuple[Any, Any, Any, Any]:
        assert record.grpc_type is not None
        key = (record.grpc_type, record.method)
        children = self._children.get(key)
        if children is None:
            labels = (record.grpc_type, *record.service_and_method)
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
        self._for(record)[0].inc()
        self._in_flight.inc()

    def call_finished(self, record: CallRecord) -> None:
        """Count the end, its code, its duration and its messages."""
        if not record.started:
            return
        self._in_flight.dec()
        _, handling, received, sent = self._for(record)
        assert record.grpc_type is not None
        status = record.final_status
        key = (record.grpc_type, record.method, status)
        handled = self._handled_children.get(key)
        if handled is None:
            labels = (record.grpc_type, *record.service_and_method, grpc_code_name(status))
            handled = self._handled_children[key] = self._handled.labels(*labels)
        handled.inc()
        handling.observe(time.monotonic() - record.start)
        if record.received:
            received.inc(record.received)
        if record.sent:
            sent.inc(record.sent)

    def refused(self, reason: RefusalReason) -> None:
        """Count a refusal."""
        self._refused.labels(reason).inc()

    def connections_changed(self, delta: int) -> None:
        """Follow the open connections."""
        self._connections.inc(delta)

    def queue_changed(self, delta: int) -> None:
        """Follow the calls waiting for a slot."""
        self._queued.inc(delta)
