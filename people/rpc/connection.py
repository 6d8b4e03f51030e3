"""One HTTP/2 connection: timeouts, an age, a graceful GOAWAY, and abuse that costs only the abuser.

grpclib holds a connection that never sends the HTTP/2 preface forever, closes
the whole connection when a client opens one stream too many, and closing h2's
state machine loses the answers still in flight ("stream removed").
:class:`ServerProtocol` is grpclib's protocol plus

- a handshake timeout, an idle timeout counted from the end of the last call,
  and an optional maximum age (jittered), after which the connection drains;
- a stream past SETTINGS_MAX_CONCURRENT_STREAMS refused alone with
  REFUSED_STREAM (:class:`people.rpc.internals.RefusingH2Connection`);
- :meth:`ServerProtocol.go_away`, the two-phase GOAWAY of RFC 9113 §6.8 that
  gRPC's own servers send: first a GOAWAY naming stream 2^31-1 plus a PING, and
  only after the PING's answer (or a short timeout) the real GOAWAY naming the
  highest stream accepted. Streams the client sent before it saw the first are
  still served; later ones are refused with REFUSED_STREAM, which tells the
  client (and a proxy in front) they never ran and may be retried. The frames
  are written straight to the transport, leaving h2's state open, so accepted
  calls still answer;
- GOAWAY ENHANCE_YOUR_CALM, and the end of the connection, for a client that
  cancels most of its streams (rapid reset, CVE-2023-44487), keeps opening
  streams past the limit, or floods control frames (PING, SETTINGS, PRIORITY,
  empty DATA) with no calls between them;
- reading paused while the transport cannot write (its buffer is over the
  high-water mark), so a peer that does not read its answers cannot make the
  server queue unbounded replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from h2.errors import ErrorCodes
from h2.events import (
    DataReceived,
    PingAckReceived,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamReset,
)
from h2.events import Event as H2Event
from h2.exceptions import StreamClosedError
from hyperframe.frame import GoAwayFrame

from people.rpc.coalesce import CoalescingTransport
from people.rpc.defaults import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_STREAMS_PER_CONNECTION,
)
from people.rpc.internals import (
    AbstractHandler,
    Connection,
    EventsProcessor,
    H2Stream,
    ProtocolHooks,
    RefusingH2Connection,
    raw_transport,
)

log = logging.getLogger("people.rpc.connection")

#: The last stream id of a first GOAWAY: "everything you sent so far may still run".
ALL_STREAMS = 2**31 - 1
#: Opaque data of the PING that follows the first GOAWAY.
GOAWAY_PING = b"people\x00\x01"
#: Seconds to wait for that PING's answer before sending the real GOAWAY anyway.
GOAWAY_PING_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What every connection of a server is held to.

    Args:
        max_streams: SETTINGS_MAX_CONCURRENT_STREAMS; a stream past it is refused alone.
        handshake_timeout: Seconds to complete the HTTP/2 handshake.
        idle_timeout: Seconds without calls before the connection drains.
        max_age: Seconds (±10 % jitter) before the connection drains; None for no limit.
        max_age_grace: Seconds its calls get after that GOAWAY before it is closed;
            None to wait for them however long they take.
        abuse_threshold: Streams a client may refuse or cancel early before the
            ratio below is checked.
        abuse_ratio: Share of its streams a client may cancel early or push past
            the limit; above it the connection gets ENHANCE_YOUR_CALM.
        control_burst: Control frames (PING, SETTINGS, PRIORITY, empty DATA)
            tolerated in a row without a call between them.
        control_per_second: How fast that allowance refills.
    """

    max_streams: int = DEFAULT_MAX_STREAMS_PER_CONNECTION
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_age: float | None = None
    max_age_grace: float | None = None
    abuse_threshold: int = 100
    abuse_ratio: float = 0.5
    control_burst: int = 500
    control_per_second: float = 10.0


class ConnectionOwner(Protocol):
    """What a connection needs from its server (:class:`people.rpc.server.RpcServer`)."""

    @property
    def limits(self) -> ConnectionLimits:
        """The limits every connection is held to."""
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


class ControlBudget:
    """A token bucket for control frames: a burst, refilled over time and by every call."""

    def __init__(self, burst: int, per_second: float) -> None:
        self._burst = burst
        self._per_second = per_second
        self._tokens = float(burst)
        self._at = time.monotonic()

    def spend(self) -> bool:
        """Take one token; False when none is left."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._per_second)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def refill(self) -> None:
        """A call went by: control frames around calls are normal (BDP pings, settings)."""
        self._tokens = float(self._burst)


class ServerProtocol(ProtocolHooks):
    """grpclib's HTTP/2 protocol plus the timeouts, GOAWAY and defences the module describes."""

    def __init__(self, *args: Any, owner: ConnectionOwner) -> None:
        super().__init__(*args)
        self._owner = owner
        self._limits = owner.limits
        self._timer: asyncio.TimerHandle | None = None
        self._age_timer: asyncio.TimerHandle | None = None
        self._goaway_timer: asyncio.TimerHandle | None = None
        self._handshaken = False
        self._last_active = time.monotonic()
        self._refused = False
        self._close_when_done = False
        self._goaway_started = False
        self._streams_opened = 0
        self._cancelled_early = 0
        self._control = ControlBudget(self._limits.control_burst, self._limits.control_per_second)
        #: Set once the final GOAWAY is sent: streams above this id are refused.
        self.goaway_last_stream_id: int | None = None
        #: Done when the final GOAWAY is sent or the connection is gone.
        self.goaway_sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- lifetime ----------------------------------------------------------------

    def new_h2_connection(self) -> RefusingH2Connection:
        """h2's state, refusing streams past the limit one by one."""
        self._h2 = RefusingH2Connection(
            self.h2_config, max_concurrent_streams=self._limits.max_streams
        )
        return self._h2

    def new_processor(self) -> EventsProcessor:
        """Report each call's end, so idle time counts from it."""
        return CallEventsProcessor(self.handler, self.connection, on_release=self._stream_released)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Accept the connection, unless the server is full or has stopped."""
        if not self._owner.admit(self):
            self._refused = True
            # Marks the handler closed, so the server's sweep forgets it.
            self.handler.close()
            transport.close()
            self.goaway_sent.set_result(None)
            return
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(CoalescingTransport(transport))
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
        for timer in (self._timer, self._age_timer, self._goaway_timer):
            if timer is not None:
                timer.cancel()
        if not self.goaway_sent.done():
            self.goaway_sent.set_result(None)
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
        if self._close_when_done and self.goaway_last_stream_id is not None:
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
        return len(self.processor.streams)

    # -- data --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Feed h2; watch for abuse; refuse streams opened after the final GOAWAY."""
        if self._refused or self.connection.is_closing():
            return
        on_closed, refused = self._h2.frames_on_closed_streams, self._h2.refused_streams
        try:
            events = self.connection.feed(data)
        except Exception:  # h2's ProtocolError and friends: the peer broke HTTP/2
            log.debug("HTTP/2 protocol error", exc_info=True)
            self.connection.flush()
            self.processor.close("Protocol error")
            return
        self.connection.flush()
        abuse = self._unseen_abuse(on_closed, refused)
        if abuse is not None:
            self._enhance_your_calm(abuse)
            return
        for event in events:
            abuse = self._observe(event)
            if abuse is not None:
                self._enhance_your_calm(abuse)
                return
            if self._refuse(event):
                continue
            self.processor.process(event)
        self.connection.flush()

    def _observe(self, event: H2Event) -> str | None:
        """Note what ``event`` says about the peer; return why it is abusive, if it is."""
        if isinstance(event, RequestReceived):
            self._last_active = time.monotonic()
            self._streams_opened += 1
            self._control.refill()
        elif isinstance(event, DataReceived):
            if event.flow_controlled_length or event.stream_ended is not None:
                self._control.refill()
            elif not self._control.spend():
                return "a flood of empty DATA frames"
        elif isinstance(event, StreamReset):
            # After a GOAWAY clients cancel what they sent too late (grpcio does): expected.
            if event.remote_reset and not self._goaway_started:
                self._cancelled_early += 1
                return self._check_cancellations()
        elif isinstance(event, PingReceived | PriorityUpdated) or (
            isinstance(event, RemoteSettingsChanged) and self._handshaken
        ):
            if not self._control.spend():
                return "a flood of control frames"
        elif isinstance(event, PingAckReceived) and event.ping_data == GOAWAY_PING:
            self._final_goaway()
        if not self._handshaken and isinstance(event, RemoteSettingsChanged):
            self._handshaken = True
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(
                self._limits.idle_timeout, self._idle_check
            )
        if isinstance(event, RequestReceived):
            return self._check_cancellations()
        return None

    def _unseen_abuse(self, on_closed: int, refused: int) -> str | None:
        """Abuse that h2 handled without an event: DATA on closed streams, refused streams."""
        for _ in range(self._h2.frames_on_closed_streams - on_closed):
            if not self._control.spend():
                return "a flood of DATA frames on closed streams"
        if self._h2.refused_streams != refused:
            return self._check_cancellations()
        return None

    def _check_cancellations(self) -> str | None:
        """Rapid reset: most streams cancelled at once, or opened past the limit."""
        refused = self._h2.refused_streams
        wasted = self._cancelled_early + refused
        opened = self._streams_opened + refused
        if wasted >= self._limits.abuse_threshold and wasted > opened * self._limits.abuse_ratio:
            return f"{wasted} of its {opened} streams cancelled at once or past the limit"
        return None

    def _refuse(self, event: H2Event) -> bool:
        if not isinstance(event, RequestReceived) or self.goaway_last_stream_id is None:
            return False
        stream_id = event.stream_id
        if stream_id <= self.goaway_last_stream_id:
            return False
        h2 = self._h2
        # The client may have reset it in the same batch (grpcio does, for streams
        # above the GOAWAY's last id): then nothing is left to refuse.
        with contextlib.suppress(StreamClosedError):
            h2.reset_stream(stream_id, error_code=ErrorCodes.REFUSED_STREAM)
        return True

    def _enhance_your_calm(self, reason: str) -> None:
        peer = self.connection.get_peer().addr()
        log.warning("closing the connection from %s with ENHANCE_YOUR_CALM: %s", peer, reason)
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
        if self._goaway_started:
            return
        self._goaway_started = True
        if self.connection.is_closing():
            if not self.goaway_sent.done():
                self.goaway_sent.set_result(None)
            return
        self.connection.flush()
        first = GoAwayFrame(stream_id=0, last_stream_id=ALL_STREAMS, error_code=ErrorCodes.NO_ERROR)
        raw_transport(self.connection).write(first.serialize())
        self._h2.ping(GOAWAY_PING)
        self.connection.flush()
        self._goaway_timer = asyncio.get_running_loop().call_later(
            GOAWAY_PING_TIMEOUT, self._final_goaway
        )

    def _final_goaway(self) -> None:
        """The PING came back (or took too long): name the last stream that will be served."""
        if self._goaway_timer is None or self.goaway_sent.done():
            return
        self._goaway_timer.cancel()
        self.goaway_sent.set_result(None)
        if self.connection.is_closing():
            return
        self.goaway_last_stream_id = self._h2.highest_inbound_stream_id
        self.connection.flush()
        final = GoAwayFrame(
            stream_id=0,
            last_stream_id=self.goaway_last_stream_id,
            error_code=ErrorCodes.NO_ERROR,
        )
        raw_transport(self.connection).write(final.serialize())
        if self._close_when_done:
            self.close_if_done()

    def close_if_done(self) -> bool:
        """Close the connection once it carries no calls; return True if closed."""
        if self.connection.is_closing():
            return True
        if self.open_streams():
            return False
        if self.goaway_last_stream_id is None:
            self._h2.close_connection()
            self.connection.flush()
        self.processor.close("server draining")
        return True

    def force_close(self) -> None:
        """Close the connection now, whatever it still carries (the grace period is over)."""
        if not self.connection.is_closing():
            self.processor.close("server stopped")
