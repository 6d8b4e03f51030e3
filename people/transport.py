"""Connections: timeouts, a cap, and a drain that tells clients which calls ran.

grpclib holds a connection that never sends the HTTP/2 preface forever, accepts
any number of connections, and its ``Server.close()`` cancels running calls and
closes h2's state machine, so answers in flight are lost ("stream removed").
:class:`PeopleServer` keeps grpclib's machinery but builds its own protocol per
connection, which

- closes connections that do not finish the HTTP/2 handshake in time, and
  connections without calls for the idle timeout (counted from the end of the
  last call);
- refuses connections past the cap;
- on :meth:`PeopleServer.drain` writes a GOAWAY frame (last stream id = the
  highest stream accepted) straight to the transport, leaving h2's state open so
  accepted calls still answer, and refuses later streams with REFUSED_STREAM, so
  clients know those were never processed and may retry them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from grpclib.config import Configuration
from grpclib.protocol import AbstractHandler, Connection, EventsProcessor, H2Protocol, Stream
from grpclib.server import Server
from h2.errors import ErrorCodes
from h2.events import Event as H2Event
from h2.events import RemoteSettingsChanged, RequestReceived
from h2.exceptions import StreamClosedError
from hyperframe.frame import GoAwayFrame

from people.calls import CallHandler, CallPolicy
from people.coalesce import CoalescingTransport
from people.config import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
)

log = logging.getLogger("people.transport")

#: How long streaming calls get to flush their last messages on drain.
STREAM_SETTLE_SECONDS = 0.1


class CallEventsProcessor(EventsProcessor):
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

    def register(self, stream: Stream) -> Callable[[], None]:
        """Register a call's stream; its release also calls ``on_release``."""
        release = super().register(stream)

        def release_and_report() -> None:
            try:
                release()
            finally:
                self._on_release()

        return release_and_report


class ServerProtocol(H2Protocol):
    """grpclib's HTTP/2 protocol plus handshake and idle timeouts and GOAWAY."""

    def __init__(self, *args: Any, server: PeopleServer) -> None:
        super().__init__(*args)
        self._server = server
        self._timer: asyncio.TimerHandle | None = None
        self._handshaken = False
        self._last_active = time.monotonic()
        self._refused = False
        #: Streams above this id arrived after our GOAWAY and are refused.
        self.goaway_last_stream_id: int | None = None

    # -- lifetime ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Accept the connection, unless the server is full or draining."""
        if not self._server.admit(self):
            self._refused = True
            # Marks the handler closed, so the server's sweep forgets it.
            self.handler.close()
            transport.close()
            return
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(CoalescingTransport(transport))
        # Idle time counts from the end of the last call, not from its start.
        self.processor = CallEventsProcessor(self.handler, self.connection, on_release=self._touch)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._server.handshake_timeout, self._handshake_expired)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Forget the connection and cancel its timers."""
        if self._refused:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._server.forget(self)
        super().connection_lost(exc)

    def _touch(self) -> None:
        self._last_active = time.monotonic()

    def _handshake_expired(self) -> None:
        if not self._handshaken:
            log.info("closing a connection that sent no HTTP/2 preface in time")
            self.processor.close("handshake timeout")

    def _idle_check(self) -> None:
        idle_for = time.monotonic() - self._last_active
        remaining = self._server.idle_timeout - idle_for
        if self.open_streams() == 0 and remaining <= 0:
            self.go_away()
            self.close_if_done()
            return
        delay = remaining if remaining > 0 else self._server.idle_timeout
        self._timer = asyncio.get_running_loop().call_later(delay, self._idle_check)

    def open_streams(self) -> int:
        """Calls in flight on this connection."""
        return len(self.processor.streams)

    # -- data --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Feed h2, refusing streams opened after our GOAWAY."""
        if self._refused:
            return
        try:
            events = self.connection.feed(data)
        except Exception:  # h2's ProtocolError and friends: the peer broke HTTP/2
            log.debug("HTTP/2 protocol error", exc_info=True)
            self.connection.flush()
            self.processor.close("Protocol error")
            return
        self.connection.flush()
        for event in events:
            self._observe(event)
            if self._refuse(event):
                continue
            self.processor.process(event)
        self.connection.flush()

    def _observe(self, event: H2Event) -> None:
        if isinstance(event, RequestReceived):
            self._last_active = time.monotonic()
        if not self._handshaken and isinstance(event, RemoteSettingsChanged):
            self._handshaken = True
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(
                self._server.idle_timeout, self._idle_check
            )

    def _refuse(self, event: H2Event) -> bool:
        if not isinstance(event, RequestReceived) or self.goaway_last_stream_id is None:
            return False
        stream_id = event.stream_id
        if stream_id <= self.goaway_last_stream_id:
            return False
        h2 = self.connection._connection
        # The client may have reset it in the same batch (grpcio does, for streams
        # above the GOAWAY's last id): then nothing is left to refuse.
        with contextlib.suppress(StreamClosedError):
            h2.reset_stream(stream_id, error_code=ErrorCodes.REFUSED_STREAM)
        return True

    # -- drain -------------------------------------------------------------------

    def go_away(self) -> None:
        """Tell the client no stream above the highest accepted one will be served."""
        if self.goaway_last_stream_id is not None or self.connection.is_closing():
            return
        h2 = self.connection._connection
        self.goaway_last_stream_id = h2.highest_inbound_stream_id
        self.connection.flush()
        frame = GoAwayFrame(
            stream_id=0,
            last_stream_id=self.goaway_last_stream_id,
            error_code=ErrorCodes.NO_ERROR,
        )
        self.connection._transport.write(frame.serialize())

    def close_if_done(self) -> bool:
        """Close the connection once it carries no calls; return True if closed."""
        if self.connection.is_closing():
            return True
        if self.open_streams():
            return False
        h2 = self.connection._connection
        h2.close_connection(last_stream_id=self.goaway_last_stream_id)
        self.connection.flush()
        self.processor.close("server draining")
        return True

    def force_close(self) -> None:
        """Close the connection now, whatever it still carries (the grace period is over)."""
        if not self.connection.is_closing():
            self.processor.close("server stopped")


class PeopleServer(Server):
    """A grpclib server whose connections are :class:`ServerProtocol` s.

    Args:
        handlers: The servicers.
        codec: The message codec.
        policy: Limits shared by every call.
        max_connections: Connections past this are closed at once.
        handshake_timeout: Seconds a new connection has to send the HTTP/2 preface.
        idle_timeout: Seconds a connection may stay without calls.
        config: grpclib's HTTP/2 settings.
    """

    def __init__(
        self,
        handlers: Any,
        *,
        codec: Any,
        policy: CallPolicy,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        config: Configuration | None = None,
    ) -> None:
        super().__init__(handlers, codec=codec, config=config)
        self.policy = policy
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.protocols: set[ServerProtocol] = set()
        self.draining = False

    def _protocol_factory(self) -> H2Protocol:
        self.__gc_step__()
        handler = CallHandler(
            self._mapping,
            self._codec,
            self._status_details_codec,
            self.__dispatch__,
            policy=self.policy,
        )
        self._handlers.add(handler)
        return ServerProtocol(handler, self._config, self._h2_config, server=self)

    def admit(self, protocol: ServerProtocol) -> bool:
        """Register a new connection; False when it must be turned away."""
        if self.draining:
            return False
        if len(self.protocols) >= self.max_connections:
            log.warning("refusing a connection: %d connections open", len(self.protocols))
            return False
        self.protocols.add(protocol)
        return True

    def forget(self, protocol: ServerProtocol) -> None:
        """A connection closed."""
        self.protocols.discard(protocol)

    async def start_on(self, sock: socket.socket, *, ssl: ssl.SSLContext | None = None) -> None:
        """Serve on an already bound, listening socket."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol_factory,
            sock=sock,
            ssl=ssl,
            ssl_handshake_timeout=self.handshake_timeout if ssl is not None else None,
        )
        self._server_closed_fut = loop.create_future()

    async def drain(self, grace_period: float = DEFAULT_GRACE_PERIOD) -> None:
        """Stop accepting, GOAWAY every connection, let accepted calls finish, then close.

        Calls still running after ``grace_period`` seconds are cancelled.
        """
        self.draining = True
        if self._server is not None:
            self._server.close()
        for protocol in list(self.protocols):
            protocol.go_away()
        deadline = time.monotonic() + grace_period
        calls = self.policy.unary_calls()
        if calls:
            await asyncio.wait(calls, timeout=max(0.0, deadline - time.monotonic()))
        # Long-lived streams (health Watch) get a moment to send what the drain
        # changed (NOT_SERVING) before they are cancelled.
        if self.policy.running:
            await asyncio.sleep(STREAM_SETTLE_SECONDS)
        else:
            await asyncio.sleep(0)  # the last trailers reach the sockets
        for protocol in list(self.protocols):
            protocol.close_if_done()
        if self._server is not None and self._server_closed_fut is not None:
            self.close()  # cancels the calls that outlived the grace period
            # Since Python 3.12 asyncio's Server.wait_closed() also waits for
            # every connection to end, and clients may hold theirs open forever.
            for protocol in list(self.protocols):
                protocol.force_close()
            await self.wait_closed()
        for protocol in list(self.protocols):
            protocol.close_if_done()
