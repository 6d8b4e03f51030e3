"""OpenTelemetry traces: each call continues its caller's trace, with store spans below it."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from grpclib.exceptions import GRPCError
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from people._gen.people import CreateUserRequest, UserIdRequest, UserServiceStub
from people.server.instruments import Instruments
from people.server.tracing import CallTracer
from tests.inprocess import serving

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans, kept in memory as they end."""
    kept = InMemorySpanExporter()
    yield kept
    kept.clear()


def tracer(exporter: InMemorySpanExporter) -> CallTracer:
    """A call tracer whose spans reach ``exporter`` at once."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return CallTracer(provider, store="memory")


def one(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    """The single span called ``name``."""
    (found,) = [span for span in spans if span.name == name]
    return found


class TestSpans:
    async def test_server_span_continues_the_callers_trace(
        self, exporter: InMemorySpanExporter
    ) -> None:
        """A call with traceparent gets a server span in that trace, and a store span below it."""
        async with serving(instruments=Instruments(tracer=tracer(exporter))) as served:
            channel = served.channel()
            stub = UserServiceStub(channel)
            await stub.create_user(
                CreateUserRequest(name="Ada", email="ada@example.com"),
                metadata={"traceparent": TRACEPARENT},
            )
            channel.close()
        spans = exporter.get_finished_spans()
        server = one(spans, "people.UserService/CreateUser")
        store = one(spans, "store add")
        assert server.kind is SpanKind.SERVER
        assert server.context is not None
        assert server.parent is not None
        assert server.context.trace_id == TRACE_ID
        assert server.parent.span_id == PARENT_ID
        assert store.parent is not None
        assert store.context is not None
        assert store.parent.span_id == server.context.span_id
        assert store.context.trace_id == TRACE_ID
        expected = {
            "rpc.system": "grpc",
            "rpc.service": "people.UserService",
            "rpc.method": "CreateUser",
            "rpc.grpc.status_code": 0,
        }
        assert dict(server.attributes or {}).items() >= expected.items()
        store_expected = {"db.system": "memory", "db.operation": "add"}
        assert dict(store.attributes or {}).items() >= store_expected.items()

    async def test_a_call_without_traceparent_starts_a_trace(
        self, exporter: InMemorySpanExporter
    ) -> None:
        """Without traceparent the server span is the root of a new trace."""
        async with serving(instruments=Instruments(tracer=tracer(exporter))) as served:
            channel = served.channel()
            await UserServiceStub(channel).create_user(
                CreateUserRequest(name="Ada", email="ada@example.com")
            )
            channel.close()
        server = one(exporter.get_finished_spans(), "people.UserService/CreateUser")
        assert server.parent is None
        assert server.context is not None
        assert server.context.trace_id != TRACE_ID

    async def test_status_and_error(self, exporter: InMemorySpanExporter) -> None:
        """NOT_FOUND is recorded as the span's gRPC status but is not an error."""
        async with serving(instruments=Instruments(tracer=tracer(exporter))) as served:
            channel = served.channel()
            with pytest.raises(GRPCError):
                await UserServiceStub(channel).get_user_by_id(UserIdRequest(id="nobody"))
            channel.close()
        server = one(exporter.get_finished_spans(), "people.UserService/GetUserById")
        assert (server.attributes or {})["rpc.grpc.status_code"] == 5
        assert server.status.status_code is StatusCode.UNSET

    async def test_access_line_carries_the_trace_id(
        self, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The call's access line names its trace id."""
        caplog.set_level(logging.INFO, logger="people.access")
        async with serving(instruments=Instruments(tracer=tracer(exporter))) as served:
            channel = served.channel()
            await UserServiceStub(channel).create_user(
                CreateUserRequest(name="Ada", email="ada@example.com"),
                metadata={"traceparent": TRACEPARENT},
            )
            channel.close()
        (line,) = [r for r in caplog.records if r.name == "people.access"]
        assert f"trace_id={TRACE_ID:032x}" in line.getMessage()
        assert getattr(line, "access", {})["trace_id"] == f"{TRACE_ID:032x}"


class TestWithoutTheExtra:
    def test_tracing_without_opentelemetry_is_a_startup_error(self) -> None:
        """--tracing without the otel extra installed names the extra to install."""
        program = (
            "import sys\n"
            "sys.modules['opentelemetry'] = None\n"  # as if it were not installed
            "from people.server.compose import StartupError\n"
            "from people.server.instruments import open_instruments\n"
            "from people.server.settings import Settings\n"
            "try:\n"
            "    open_instruments(Settings(tracing='otlp'))\n"
            "except StartupError as exc:\n"
            "    print(exc)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
        )
        assert "pip install 'people[otel]'" in result.stdout
