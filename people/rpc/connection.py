"""One HTTP/2 connection: timeouts, an age, a graceful GOAWAY, and abuse that costs only the abuser.

grpclib holds a connection that never sends the HTTP/2 preface forever, closes
the whole connection when a client opens one stream too many, and closing h2's
state machine loses the answers still in flight ("stream removed").
:class:`ServerProtocol` is grpclib's protocol plus

- a handshake timeout, an idle timeout counted from the end of the last call,
  and an optional maximum age (jittered), after which the connection drains;
- a stream past SETTINGS_MAX_CONCURRENT_STREAMS refused alone with
  REFUSED_STREAM (:class:`people.rpc.internals.RefusingH2Connection`);
- :meth:`ServerProtocol.go_away`, the two-phase GOAWAY of RFC 9113 §6.8
  (:mod:`people.rpc.goaway`), then closing once the last accepted call ends;
- the fast lane's deferred calls, kept and served by
  :class:`people.rpc.lane_host.ConnectionLane`;
- GOAWAY ENHANCE_YOUR_CALM, and the end of the connection, for a peer that
  :class:`people.rpc.abuse.AbuseWatch` finds abusive (rapid reset, streams
  past the limit, control-frame floods);
- reading paused while the transport cannot write (its buffer is over the
  high-water mark), so a peer that does not read its answers cannot make the
  server queue unbounded replies.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Protocol

from h2.errors import ErrorCodes
from h2.events import Event as H2Event
from h2.events import RemoteSettingsChanged, RequestReceived, StreamReset, WindowUpdated

from people.rpc.abuse import AbuseWatch
from people.rpc.coalesce import CoalescingTransport
from people.rpc.fast_lane import FastLane
from people.rpc.goaway import TwoPhaseGoAway
from people.rpc.internals import (
    EventsProcessor,
    ProtocolHooks,
    RefusingH2Connection,
    ReleaseReportingProcessor,
    raw_transport,
)
from people.rpc.lane_host import ConnectionLane
from people.rpc.observe import CallObserver
from people.rpc.policy import ConnectionLimits

log = logging.getLogger("people.rpc.connection")


class ConnectionOwner(Protocol):
    """What a connection needs from its server (:class:`people.rpc.server.RpcServer`)."""

    @property
    def limits(self) -> ConnectionLimits:
        """The limits every connection is held to."""
        ...

    @property
    def observer(self) -> CallObserver:
        """What watches refusals."""
        ...

    @property
    def fast_lane(self) -> FastLane:
        """Answers complete unary calls whose answer is known, inside data_received."""
        ...

    @property
    def draining(self) -> bool:
        """True once the server drains: a connection it still admits gets GOAWAY at once."""
        ...

    def admit(self, protocol: ServerProtocol) -> bool:
        """Register a new connection; False when it must be turned away."""
        ...

    def forget(self, protocol: ServerProtocol) -> None:
        """A connection closed."""
        ...


class ServerProtocol(ProtocolHooks):
    """grpclib's HTTP/2 protocol plus the timeouts, GOAWAY and defences the module describes."""

    def __init__(self, *args: Any, owner: ConnectionOwner) -> None:
        super().__init__(*args)
        self._owner = owner
        self._limits = owner.limits
        self._timer: asyncio.TimerHandle | None = None
        self._age_timer: asyncio.TimerHandle | None = None
        self._handshaken = False
        self._last_active = time.monotonic()
        self._refused = False
        self._close_when_done = False
        #: The drain's GOAWAY (``goaway.sent`` is done once it is over).
        self.goaway = TwoPhaseGoAway()

    # -- lifetime ----------------------------------------------------------------

    def new_h2_connection(self) -> RefusingH2Connection:
        """h2's state, refusing streams past the limit one by one."""
        self._h2 = RefusingH2Connection(
            self.h2_config, max_concurrent_streams=self._limits.max_streams
        )
        self._abuse = AbuseWatch(self._limits, self._h2)
        return self._h2

    def new_processor(self) -> EventsProcessor:
        """Report each call's end, so idle time counts from it."""
        return ReleaseReportingProcessor(
            self.handler, self.connection, on_release=self._stream_released
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Accept the connection, unless the server is full or has stopped."""
        if not self._owner.admit(self):
            self._refused = True
            # Marks the handler closed, so the server's sweep forgets it.
            self.handler.close()
            transport.close()
            self.goaway.ended()
            return
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(CoalescingTransport(transport))
        self._peer = self.connection.get_peer().addr()
        self._lane = ConnectionLane(self.connection, self._h2, self._peer, self._stream_released)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._limits.handshake_timeout, self._handshake_expired)
        if self._limits.max_age is not None:
            age = self._limits.max_age * random.uniform(0.9, 1.1)
            self._age_timer = loop.call_later(age, self._too_old)
        if self._owner.draining:
            # Accepted as the listener closed: serve what the client already sent, no more.
            self.go_away(close_when_done=True)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Forget the connection and cancel its timers."""
        if self._refused:
            return
        for timer in (self._timer, self._age_timer):
            if timer is not None:
                timer.cancel()
        self.goaway.ended()
        self._lane.cancel_all()
        self._owner.forget(self)
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The transport's buffer is full: stop reading too, so replies cannot pile up."""
        super().pause_writing()
        self.connection_transport().pause_reading()

    def resume_writing(self) -> None:
        """The transport drained: read again."""
        super().resume_writing()
        self.connection_transport().resume_reading()

    def connection_transport(self) -> asyncio.Transport:
        """The transport this connection writes to."""
        return raw_transport(self.connection)

    def _stream_released(self) -> None:
        self._last_active = time.monotonic()
        if self._close_when_done and self.goaway.last_stream_id is not None:
            self.close_if_done()

    def _handshake_expired(self) -> None:
        if not self._handshaken:
            log.info("closing a connection that sent no HTTP/2 preface in time")
            self.processor.close("handshake timeout")

    def _idle_check(self) -> None:
        idle_for = time.monotonic() - self._last_active
        remaining = self._limits.idle_timeout - idle_for
        if self.open_streams() == 0 and remaining <= 0:
            self.go_away(close_when_done=True)
            return
        delay = remaining if remaining > 0 else self._limits.idle_timeout
        self._timer = asyncio.get_running_loop().call_later(delay, self._idle_check)

    def _too_old(self) -> None:
        self.go_away(close_when_done=True)
        grace = self._limits.max_age_grace
        if grace is not None:
            self._age_timer = asyncio.get_running_loop().call_later(grace, self.force_close)

    def open_streams(self) -> int:
        """Calls in flight on this connection."""
        return len(self.processor.streams) + len(self._lane.deferred)

    # -- data --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Feed h2; watch for abuse; refuse streams opened after the final GOAWAY."""
        if self._refused or self.connection.is_closing():
            return
        refused = self._h2.refused_streams
        try:
            events = self.connection.feed(data)
        except Exception:  # h2's ProtocolError and friends: the peer broke HTTP/2
            log.debug("HTTP/2 protocol error", exc_info=True)
            self.connection.flush()
            self.processor.close("Protocol error")
            return
        self.connection.flush()
        for _ in range(self._h2.refused_streams - refused):
            self._owner.observer.refused("limits")
        abuse = self._abuse.unseen()
        if abuse is not None:
            self._enhance_your_calm(abuse)
            return
        fast = self._owner.fast_lane
        candidates = fast.candidates(events)
        answered: set[int] = set()
        for event in events:
            self._observe(event)
            abuse = self._abuse.observe(event)
            if abuse is not None:
                self._enhance_your_calm(abuse)
                return
            if self._refuse(event):
                continue
            stream_id = getattr(event, "stream_id", None)
            if isinstance(event, StreamReset):
                self._lane.reset(event.stream_id)
            if stream_id in answered:
                continue
            if isinstance(event, RequestReceived) and event.stream_id in candidates:
                body, flow = candidates[event.stream_id]
                taken = fast.answer(self._lane, event, body, flow)
                if taken is not None:
                    answered.add(event.stream_id)
                    if taken == "answered":
                        self._stream_released()
                    continue
            self.processor.process(event)
        self.connection.flush()

    def _observe(self, event: H2Event) -> None:
        self.goaway.observe(event)
        if isinstance(event, RequestReceived):
            self._last_active = time.monotonic()
        elif not self._handshaken and isinstance(event, RemoteSettingsChanged):
            self._handshaken = True
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(
                self._limits.idle_timeout, self._idle_check
            )
        if isinstance(event, WindowUpdated | RemoteSettingsChanged):
            self._lane.window_changed()

    def _refuse(self, event: H2Event) -> bool:
        if not self.goaway.refuse(event, self._h2):
            return False
        self._owner.observer.refused("drain")
        return True

    def _enhance_your_calm(self, reason: str) -> None:
        log.warning("closing the connection from %s with ENHANCE_YOUR_CALM: %s", self._peer, reason)
        self._owner.observer.refused("abuse")
        self._h2.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
        self.connection.flush()
        self.processor.close("enhance your calm")

    # -- drain -------------------------------------------------------------------

    def go_away(self, *, close_when_done: bool = False) -> None:
        """Start the two-phase GOAWAY: no new streams after those the client already sent.

        Args:
            close_when_done: Close the connection once its last call ends
                (the server's drain closes connections itself).
        """
        self._close_when_done = self._close_when_done or close_when_done
        if self.goaway.started:
            return
        self._abuse.expecting_cancellations = True
        self.goaway.start(self.connection, self._h2, on_final=self._goaway_sent)

    def _goaway_sent(self) -> None:
        if self._close_when_done:
            self.close_if_done()

    def close_if_done(self) -> bool:
        """Close the connection once it carries no calls; return True if closed."""
        if self.connection.is_closing():
            return True
        if self.open_streams():
            return False
        if self.goaway.last_stream_id is None:
            self._h2.close_connection()
            self.connection.flush()
        self.processor.close("server draining")
        return True

    def force_close(self) -> None:
        """Close the connection now, whatever it still carries (the grace period is over)."""
        if not self.connection.is_closing():
            self.processor.close("server stopped")
