"""Every part of grpclib and h2 the runtime relies on beyond their documented API.

grpclib offers no public way to replace its per-connection protocol or its
request handler, so the runtime builds on a few of its internal classes and
reads a few private attributes. This module is the only one that touches them:
the rest of :mod:`people.rpc` subclasses the hook classes below and calls the
accessors. :data:`RELIED_ON` lists every such name, and ``tests/test_internals.py``
checks each against the installed packages, so an upgrade that drops one fails
there with the name, not somewhere deep in a call. grpclib, h2 and hyperframe
are pinned exactly in ``pyproject.toml`` for the same reason.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import h2.connection
from grpclib.config import Configuration
from grpclib.encoding.base import CodecBase, StatusDetailsCodecBase
from grpclib.events import _DispatchServerEvents
from grpclib.protocol import (
    AbstractHandler,
    Connection,
    EventsProcessor,
    H2Protocol,
    _set_nodelay,
)
from grpclib.protocol import Stream as H2Stream
from grpclib.server import Handler, Server
from grpclib.server import Stream as ServerStream
from grpclib.utils import DeadlineWrapper, Wrapper
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import Event as H2Event
from h2.exceptions import StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import DataFrame, HeadersFrame

__all__ = [
    "RELIED_ON",
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
    "ServerHooks",
    "StreamHooks",
    "Wrapper",
    "h2_state",
    "raw_transport",
]

DispatchServerEvents = _DispatchServerEvents
_Headers = list[tuple[str, str]]

#: Class -> the attributes of it the runtime uses that grpclib or h2 do not document.
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
        "_handle_data_on_closed_stream",
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


class RefusingH2Connection(h2.connection.H2Connection):
    """h2's connection state, refusing a stream past the concurrency limit alone.

    h2 ends the whole connection when the peer opens more streams than
    SETTINGS_MAX_CONCURRENT_STREAMS allows; RFC 9113 §5.1.2 makes that a stream
    error. Such a stream is opened as usual, so HPACK's table and flow control
    stay in step, then reset at once with REFUSED_STREAM; none of its events
    reach grpclib, and the client may retry it.

    Args:
        config: h2's configuration.
        max_concurrent_streams: The limit advertised to, and enforced on, the peer.
    """

    #: Closed streams h2 remembers (to tell late frames' errors apart); h2's own
    #: 2**16 costs about 5 MiB on every long-lived connection.
    MAX_CLOSED_STREAMS = 4096

    def __init__(self, config: H2Configuration, *, max_concurrent_streams: int) -> None:
        super().__init__(config=config)
        self.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.DEFAULT_MAX_HEADER_LIST_SIZE,
            },
        )
        self._admitting_one_more = False
        #: Streams refused for exceeding the limit, over the connection's life.
        self.refused_streams = 0
        #: DATA frames that arrived on streams already closed (h2 answers each with RST_STREAM).
        self.frames_on_closed_streams = 0

    @property
    def open_inbound_streams(self) -> int:
        """Open streams the peer started (one fewer than the limit while admitting one)."""
        count = super().open_inbound_streams
        if self._admitting_one_more:
            return min(count, self.local_settings.max_concurrent_streams - 1)
        return count

    def _receive_headers_frame(self, frame: HeadersFrame) -> tuple[list[Any], list[H2Event]]:
        over_limit = (
            frame.stream_id not in self.streams
            and self.open_inbound_streams >= self.local_settings.max_concurrent_streams
        )
        if not over_limit:
            return super()._receive_headers_frame(frame)
        self._admitting_one_more = True
        try:
            frames, events = super()._receive_headers_frame(frame)
        finally:
            self._admitting_one_more = False
        self.reset_stream(frame.stream_id, error_code=ErrorCodes.REFUSED_STREAM)
        self.refused_streams += 1
        kept = [event for event in events if getattr(event, "stream_id", None) != frame.stream_id]
        return frames, kept

    def _handle_data_on_closed_stream(
        self, events: list[H2Event], exc: StreamClosedError, frame: DataFrame
    ) -> tuple[list[Any], list[H2Event]]:
        self.frames_on_closed_streams += 1
        return super()._handle_data_on_closed_stream(events, exc, frame)


class ProtocolHooks(H2Protocol):
    """grpclib's per-connection protocol, with its h2 state and events processor made by hooks."""

    def new_h2_connection(self) -> h2.connection.H2Connection:
        """h2's state machine for a new connection (h2's own by default)."""
        return h2.connection.H2Connection(config=self.h2_config)

    def new_processor(self) -> EventsProcessor:
        """The processor of h2's events (grpclib's own by default)."""
        return EventsProcessor(self.handler, self.connection)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """grpclib 0.4.9's ``H2Protocol.connection_made``, building through the hooks above."""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _set_nodelay(sock)
        h2_conn = self.new_h2_connection()
        h2_conn.initiate_connection()
        initial = h2_conn.local_settings.initial_window_size
        connection_delta = self.config.http2_connection_window_size - initial
        stream_delta = self.config.http2_stream_window_size - initial
        if connection_delta:
            h2_conn.increment_flow_control_window(connection_delta)
        if stream_delta:
            h2_conn.update_settings(
                {SettingCodes.INITIAL_WINDOW_SIZE: self.config.http2_stream_window_size}
            )
        assert isinstance(transport, asyncio.Transport)
        self.connection = Connection(h2_conn, transport, config=self.config)
        self.connection.flush()
        self.connection.initialize()
        self.processor = self.new_processor()


class ServerHooks(Server):
    """grpclib's server with its two construction steps as overridable hooks."""

    #: The listening socket, its TLS context and handshake timeout, once listening.
    _listening_socket: socket.socket | None = None
    _listening_ssl: ssl.SSLContext | None = None
    _handshake_timeout: float | None = None

    def new_handler(
        self,
        mapping: dict[str, Any],
        codec: CodecBase,
        status_details_codec: StatusDetailsCodecBase | None,
        dispatch: _DispatchServerEvents,
    ) -> Handler:
        """The per-connection call handler (grpclib's own by default)."""
        return Handler(mapping, codec, status_details_codec, dispatch)

    def new_protocol(
        self, handler: Handler, config: Configuration, h2_config: H2Configuration
    ) -> H2Protocol:
        """The per-connection protocol (grpclib's own by default)."""
        return H2Protocol(handler, config, h2_config)

    def _protocol_factory(self) -> H2Protocol:
        self.__gc_step__()
        handler = self.new_handler(
            self._mapping, self._codec, self._status_details_codec, self.__dispatch__
        )
        self._handlers.add(handler)
        return self.new_protocol(handler, self._config, self._h2_config)

    async def listen_on(
        self, sock: socket.socket, *, ssl: ssl.SSLContext | None, handshake_timeout: float
    ) -> None:
        """Start accepting on an already bound, listening socket."""
        loop = asyncio.get_running_loop()
        self._listening_socket = sock
        self._listening_ssl = ssl
        self._handshake_timeout = handshake_timeout if ssl is not None else None
        self._server = await loop.create_server(
            self._protocol_factory,
            sock=sock,
            ssl=ssl,
            ssl_handshake_timeout=self._handshake_timeout,
        )
        self._server_closed_fut = loop.create_future()

    @property
    def listening(self) -> bool:
        """True once :meth:`listen_on` ran."""
        return self._server is not None and self._server_closed_fut is not None

    async def stop_listening(self) -> None:
        """Close the listening socket, serving every connection accepted until then.

        Connections already accepted stay open. Clients of the others have
        usually sent a call already (a proxy that opens a connection for one call
        does), so dropping them would fail calls that never ran, in a way the
        client cannot tell from a crash. Two kinds would be dropped: those the
        kernel holds in the accept queue (closing the socket resets them), and
        those asyncio has accepted but not yet given a transport (on Python 3.11
        that fails once the server is closed, and the socket is dropped). So
        asyncio stops accepting first, gets two turns to set up what it accepted,
        the queue is accepted here and served like any connection, and only then
        is the socket closed.
        """
        if self._server is None:
            return
        sock = self._listening_socket
        if sock is None or sock.fileno() == -1:
            self._server.close()
            return
        asyncio.get_running_loop().remove_reader(sock.fileno())
        # asyncio sets up a connection it accepted in a task: the transport on the
        # task's next turn, the protocol's connection_made on the turn after.
        for _ in range(2):
            await asyncio.sleep(0)
        queued: list[socket.socket] = []
        while True:
            try:
                connection, _ = sock.accept()
            except ConnectionAbortedError:
                continue
            except OSError:  # BlockingIOError: the queue is empty
                break
            queued.append(connection)
        self._server.close()
        await asyncio.gather(*(self._serve_accepted(connection) for connection in queued))

    async def _serve_accepted(self, connection: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        connection.setblocking(False)
        try:
            await loop.connect_accepted_socket(
                self._protocol_factory,
                connection,
                ssl=self._listening_ssl,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except (OSError, TimeoutError):  # TLS handshake failed or timed out
            connection.close()


class HandlerHooks(Handler):
    """grpclib's per-connection handler; subclasses say how a call is served."""

    def serve(
        self, stream: H2Stream, headers: _Headers, release_stream: Callable[[], Any]
    ) -> asyncio.Task[None]:
        """Start serving one call and return its task."""
        raise NotImplementedError

    def accept(
        self, stream: H2Stream, headers: _Headers, release_stream: Callable[[], Any]
    ) -> None:
        """Start a new call; the handler tracks its task so closing cancels it."""
        self.__gc_step__()
        self._tasks[stream] = self.serve(stream, headers, release_stream)


class StreamHooks(ServerStream[Any, Any]):
    """grpclib's server stream, with what a stricter receive path needs from it."""

    @property
    def unary_request(self) -> bool:
        """True when the method takes exactly one request message."""
        return not self._cardinality.client_streaming

    async def read_bytes(self, size: int) -> bytes:
        """Up to ``size`` bytes of the request body (fewer only at its end)."""
        data: bytes = await self._stream.recv_data(size)
        return data

    def decode(self, data: bytes) -> Any:
        """Decode one request message with the server's codec."""
        return self._codec.decode(data, self._recv_type)

    async def delivered(self, message: Any) -> Any:
        """Tell grpclib's listeners and counters that ``message`` arrived; return it."""
        (message,) = await self._dispatch.recv_message(message)
        self._messages_received += 1
        self._stream.connection.messages_received += 1
        self._stream.connection.last_message_received = time.monotonic()
        return message
