"""OpenTelemetry traces of calls and of the store operations under them (optional).

Installed with ``pip install 'people[otel]'`` and switched on with
``--tracing otlp`` (or ``console``). Each call continues the caller's trace
from its W3C ``traceparent`` metadata (or starts one) with a server span named
``package.Service/Method`` carrying the RPC semantic-convention attributes and
its status; every store operation under it gets a child span. Exporters are
configured by the standard ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER`` ...), which the SDK reads itself.
Without ``--tracing`` nothing of OpenTelemetry is imported.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from grpclib.const import Status
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from people import __version__
from people.rpc.observe import CallRecord, NullObserver

#: Statuses that make a server span an error (OpenTelemetry's gRPC conventions).
ERROR_STATUSES = frozenset(
    {
        Status.UNKNOWN,
        Status.DEADLINE_EXCEEDED,
        Status.UNIMPLEMENTED,
        Status.INTERNAL,
        Status.UNAVAILABLE,
        Status.DATA_LOSS,
    }
)


def tracer_provider(exporter: str) -> TracerProvider:
    """A provider exporting to ``exporter`` (``otlp`` or ``console``), configured by OTEL_*."""
    provider = TracerProvider(resource=Resource.create({"service.version": __version__}))
    chosen: SpanExporter
    if exporter == "console":
        chosen = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        chosen = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(chosen))
    return provider


class CallTracer(NullObserver):
    """Opens a server span per call and a child span per store operation.

    Args:
        provider: Where spans go.
        store: The store's kind, for the ``db.system`` attribute.
    """

    #: The call's span must be current inside its task, for the store spans below it.
    needs_task = True

    def __init__(self, provider: trace.TracerProvider, *, store: str) -> None:
        self._tracer = provider.get_tracer("people", __version__)
        self._store = store
        self._spans: weakref.WeakKeyDictionary[CallRecord, trace.Span] = weakref.WeakKeyDictionary()

    def call_started(self, record: CallRecord, metadata: Mapping[str, Any]) -> None:
        """Open the call's span as a child of the caller's, and make it current for the call."""
        service, method = record.service_and_method
        attributes: dict[str, str | int] = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": method,
        }
        if isinstance(record.peer, tuple) and len(record.peer) >= 2:
            attributes["network.peer.address"] = str(record.peer[0])
            attributes["network.peer.port"] = int(record.peer[1])
        span = self._tracer.start_span(
            f"{service}/{method}",
            context=propagate.extract(dict(metadata)),
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        # Runs inside the call's own task: the span is current for the rest of it.
        context.attach(trace.set_span_in_context(span))
        self._spans[record] = span
        record.trace_id = format(span.get_span_context().trace_id, "032x")

    def call_finished(self, record: CallRecord) -> None:
        """Close the call's span with its status."""
        span = self._spans.pop(record, None)
        if span is None:
            return
        status = record.final_status
        span.set_attribute("rpc.grpc.status_code", status.value)
        if status in ERROR_STATUSES:
            span.set_status(StatusCode.ERROR, status.name)
        span.end()

    def store_span(self, operation: str) -> AbstractContextManager[object]:
        """A child span around one store operation."""
        return self._tracer.start_as_current_span(
            f"store {operation}",
            kind=SpanKind.CLIENT,
            attributes={"db.system": self._store, "db.operation": operation},
        )
