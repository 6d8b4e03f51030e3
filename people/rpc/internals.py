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
from grpclib.protocol import AbstractHandler, Connection, EventsProcessor, H2Protocol
from grpclib.protocol import Stream as H2Stream
from grpclib.server import Handler, Server
from grpclib.server import Stream as ServerStream
from grpclib.utils import DeadlineWrapper, Wrapper
from h2.config import H2Configuration

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
    H2Protocol: ("connection_made", "data_received", "connection_lost", "connection", "processor"),
    Connection: (
        "_connection",
        "_transport",
        "feed",
        "flush",
        "is_closing",
        "get_peer",
        "messages_received",
        "last_message_received",
    ),
    EventsProcessor: ("register", "process", "close", "streams"),
    H2Stream: (
        "recv_data",
        "send_headers",
        "reset_nowait",
        "closable",
        "wrapper",
        "connection",
    ),
    _DispatchServerEvents: ("recv_request", "recv_message"),
    h2.connection.H2Connection: ("highest_inbound_stream_id", "reset_stream", "close_connection"),
}


def h2_state(connection: Connection) -> h2.connection.H2Connection:
    """The h2 state machine behind a grpclib connection."""
    state: h2.connection.H2Connection = connection._connection
    return state


def raw_transport(connection: Connection) -> asyncio.Transport:
    """The transport a grpclib connection writes to, bypassing h2."""
    transport: asyncio.Transport = connection._transport
    return transport


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

    async def listen_on(
        self, sock: socket.socket, *, ssl: ssl.SSLContext | None, handshake_timeout: float
    ) -> None:
        """Start accepting on an already bound, listening socket."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol_factory,
            sock=sock,
            ssl=ssl,
            ssl_handshake_timeout=handshake_timeout if ssl is not None else None,
        )
        self._server_closed_fut = loop.create_future()

    @property
    def listening(self) -> bool:
        """True once :meth:`listen_on` ran."""
        return self._server is not None and self._server_closed_fut is not None

    def stop_listening(self) -> None:
        """Close the listening socket; connections already accepted stay open."""
        if self._server is not None:
            self._server.close()


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
