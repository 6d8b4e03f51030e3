"""One HTTP/2 connection: handshake and idle timeouts, and a GOAWAY that keeps answers.

grpclib holds a connection that never sends the HTTP/2 preface forever, and
closing h2's state machine loses the answers still in flight ("stream
removed"). :class:`ServerProtocol` is grpclib's protocol plus

- a handshake timeout, and an idle timeout counted from the end of the last call;
- :meth:`ServerProtocol.go_away`, which writes a GOAWAY frame (last stream id =
  the highest stream accepted) straight to the transport, leaving h2's state
  open so accepted calls still answer, and refuses later streams with
  REFUSED_STREAM, so clients know those were never processed and may retry them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from h2.errors import ErrorCodes
from h2.events import Event as H2Event
from h2.events import RemoteSettingsChanged, RequestReceived
from h2.exceptions import StreamClosedError
from hyperframe.frame import GoAwayFrame

from people.rpc.coalesce import CoalescingTransport
from people.rpc.internals import (
    AbstractHandler,
    Connection,
    EventsProcessor,
    H2Protocol,
    H2Stream,
    h2_state,
    raw_transport,
)

log = logging.getLogger("people.rpc.connection")


class ConnectionOwner(Protocol):
    """What a connection needs from its server (:class:`people.rpc.server.RpcServer`)."""

    @property
    def handshake_timeout(self) -> float:
        """Seconds a new connection has to complete the HTTP/2 handshake."""
        ...

    @property
    def idle_timeout(self) -> float:
        """Seconds a connection may stay without calls."""
        ...

    def admit(self, protocol: ServerProtocol) -> bool:
        """Register a new connection; False when it must be turned away."""
        ...

    def forget(self, protocol: ServerProtocol) -> None:
        """A connection closed."""
        ...


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

    def register(self, stream: H2Stream) -> Callable[[], None]:
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

    def __init__(self, *args: Any, server: ConnectionOwner) -> None:
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
        h2 = h2_state(self.connection)
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
        h2 = h2_state(self.connection)
        self.goaway_last_stream_id = h2.highest_inbound_stream_id
        self.connection.flush()
        frame = GoAwayFrame(
            stream_id=0,
            last_stream_id=self.goaway_last_stream_id,
            error_code=ErrorCodes.NO_ERROR,
        )
        raw_transport(self.connection).write(frame.serialize())

    def close_if_done(self) -> bool:
        """Close the connection once it carries no calls; return True if closed."""
        if self.connection.is_closing():
            return True
        if self.open_streams():
            return False
        h2 = h2_state(self.connection)
        h2.close_connection(last_stream_id=self.goaway_last_stream_id)
        self.connection.flush()
        self.processor.close("server draining")
        return True

    def force_close(self) -> None:
        """Close the connection now, whatever it still carries (the grace period is over)."""
        if not self.connection.is_closing():
            self.processor.close("server stopped")
