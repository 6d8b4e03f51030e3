"""grpclib's server, handler, stream and protocol, with the hooks the runtime builds on."""

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
from grpclib.protocol import AbstractHandler, Connection, EventsProcessor, H2Protocol, _set_nodelay
from grpclib.protocol import Stream as H2Stream
from grpclib.server import Handler, Server
from grpclib.server import Stream as ServerStream
from h2.config import H2Configuration
from h2.events import DataReceived
from h2.settings import SettingCodes

_Headers = list[tuple[str, str]]


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

    #: The listening socket, its TLS context and handshake timeout, once listening.
    _listening_socket: socket.socket | None = None
    _listening_ssl: ssl.SSLContext | None = None
    _handshake_timeout: float | None = None

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


class ReleaseReportingProcessor(EventsProcessor):
    """grpclib's events processor, which also reports each call's end (its stream's release)."""

    def __init__(
        self,
        handler: AbstractHandler,
        connection: Connection,
        *,
        on_release: Callable[[], None],
    ) -> None:
        super().__init__(handler, connection)
        self._on_release = on_release

    def process_data_received(self, event: DataReceived) -> None:
        """Pass DATA to its stream, skipping empty frames.

        grpclib's stream buffer takes an empty chunk for the end of the stream,
        so an empty DATA frame (legal, if pointless) would cut a request short.
        """
        if event.data:
            super().process_data_received(event)
        elif event.flow_controlled_length:
            self.connection.ack(event.stream_id, event.flow_controlled_length)

    def register(self, stream: H2Stream) -> Callable[[], None]:
        """Register a call's stream; its release also calls ``on_release``."""
        release = super().register(stream)

        def release_and_report() -> None:
            try:
                release()
            finally:
                self._on_release()

        return release_and_report
