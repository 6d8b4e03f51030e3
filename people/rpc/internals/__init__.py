"""Every part of grpclib and h2 the runtime relies on beyond their documented API.

grpclib offers no public way to replace its per-connection protocol or its
request handler, so the runtime builds on a few of its internal classes and
reads a few private attributes. This package is the only place that touches them:
the rest of :mod:`people.rpc` subclasses its hook classes and calls its
accessors (``h2_connection`` holds the h2 subclass, ``grpclib_hooks`` the
grpclib ones). :data:`RELIED_ON` lists every such name, and ``tests/test_internals.py``
checks each against the installed packages, so an upgrade that drops one fails
there with the name, not somewhere deep in a call. grpclib, h2, hpack and
hyperframe are pinned exactly in ``pyproject.toml`` for the same reason.
"""

from __future__ import annotations

import asyncio

import h2.connection
import h2.stream
import hpack.hpack
import hpack.table
from grpclib.events import _DispatchServerEvents
from grpclib.protocol import AbstractHandler, Connection, EventsProcessor, H2Protocol
from grpclib.protocol import Stream as H2Stream
from grpclib.server import Handler, Server
from grpclib.server import Stream as ServerStream
from grpclib.utils import DeadlineWrapper, Wrapper
from h2.exceptions import StreamClosedError

from people.rpc.internals.grpclib_hooks import (
    HandlerHooks,
    ProtocolHooks,
    ReleaseReportingProcessor,
    ServerHooks,
    StreamHooks,
)
from people.rpc.internals.h2_connection import RefusingH2Connection

__all__ = [
    "RELIED_ON",
    "RELIED_ON_FUNCTIONS",
    "AbstractHandler",
    "Connection",
    "DeadlineWrapper",
    "DispatchServerEvents",
    "EventsProcessor",
    "H2Protocol",
    "H2Stream",
    "Handler",
    "HandlerHooks",
    "ProtocolHooks",
    "RefusingH2Connection",
    "ReleaseReportingProcessor",
    "ServerHooks",
    "StreamHooks",
    "Wrapper",
    "h2_state",
    "raw_transport",
]

DispatchServerEvents = _DispatchServerEvents

RELIED_ON: dict[type, tuple[str, ...]] = {
    Server: (
        "_protocol_factory",
        "__gc_step__",
        "_mapping",
        "_codec",
        "_status_details_codec",
        "__dispatch__",
        "_handlers",
        "_config",
        "_h2_config",
        "_server",
        "_server_closed_fut",
    ),
    Handler: (
        "accept",
        "__gc_step__",
        "_tasks",
        "loop",
        "mapping",
        "codec",
        "status_details_codec",
        "dispatch",
    ),
    ServerStream: (
        "_stream",
        "_cardinality",
        "_codec",
        "_recv_type",
        "_dispatch",
        "_messages_received",
        "send_trailing_metadata",
        "peer",
    ),
    H2Protocol: (
        "connection_made",
        "data_received",
        "connection_lost",
        "pause_writing",
        "resume_writing",
        "connection",
        "processor",
        "handler",
        "config",
        "h2_config",
    ),
    Connection: (
        "_connection",
        "_transport",
        "feed",
        "flush",
        "is_closing",
        "get_peer",
        "messages_received",
        "last_message_received",
        "initialize",
        "ack",
    ),
    EventsProcessor: ("register", "process", "process_data_received", "close", "streams"),
    H2Stream: (
        "recv_data",
        "send_headers",
        "reset_nowait",
        "closable",
        "wrapper",
        "connection",
    ),
    _DispatchServerEvents: ("recv_request", "recv_message"),
    h2.connection.H2Connection: (
        "_receive_headers_frame",
        "_receive_frame",
        "_frame_dispatch_table",
        "_stream_is_closed_by_reset",
        "_stream_is_closed_by_end",
        "_prepare_for_sending",
        "_handle_data_on_closed_stream",
        "_data_to_send",
        "state_machine",
        "outbound_flow_control_window",
        "local_flow_control_window",
        "max_outbound_frame_size",
        "encoder",
        "decoder",
        "open_inbound_streams",
        "local_settings",
        "streams",
        "highest_inbound_stream_id",
        "reset_stream",
        "close_connection",
        "ping",
        "MAX_CLOSED_STREAMS",
        "DEFAULT_MAX_HEADER_LIST_SIZE",
    ),
    h2.stream.H2Stream: ("state_machine", "outbound_flow_control_window"),
    h2.connection.ConnectionInputs: ("SEND_HEADERS", "SEND_DATA"),
    h2.stream.StreamInputs: ("SEND_HEADERS", "SEND_DATA", "SEND_END_STREAM"),
    hpack.hpack.Decoder: ("header_table", "decode", "max_header_list_size"),
    hpack.hpack.Encoder: ("header_table", "encode"),
    hpack.table.HeaderTable: ("add", "maxsize", "resized"),
    StreamClosedError: ("_events", "error_code", "stream_id"),
}
#: Private functions the runtime calls, by module.
RELIED_ON_FUNCTIONS = {"grpclib.protocol": ("_set_nodelay",)}


def h2_state(connection: Connection) -> h2.connection.H2Connection:
    """The h2 state machine behind a grpclib connection."""
    state: h2.connection.H2Connection = connection._connection
    return state


def raw_transport(connection: Connection) -> asyncio.Transport:
    """The transport a grpclib connection writes to, bypassing h2."""
    transport: asyncio.Transport = connection._transport
    return transport
