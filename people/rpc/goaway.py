"""The two-phase GOAWAY of RFC 9113 §6.8, as gRPC's own servers send it.

A single GOAWAY naming the highest stream seen so far refuses the streams a
client (or a proxy in front of it) had already sent but the server had not yet
read, and a proxy does not retry those. So :class:`TwoPhaseGoAway` first sends
a GOAWAY naming stream 2^31-1 ("everything you sent so far may still run")
together with a PING, and only after the PING's answer (or a short timeout) the
real GOAWAY naming the highest stream accepted; streams above it are refused
with REFUSED_STREAM, which tells the client they never ran and may be retried.
The frames are written straight to the transport, leaving h2's state open, so
the accepted calls still answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable

from h2.errors import ErrorCodes
from h2.events import Event as H2Event
from h2.events import PingAckReceived, RequestReceived
from h2.exceptions import StreamClosedError
from hyperframe.frame import GoAwayFrame

from people.rpc.internals import Connection, RefusingH2Connection, raw_transport

#: The last stream id of a first GOAWAY: "everything you sent so far may still run".
ALL_STREAMS = 2**31 - 1
#: The payload of the PING sent with the first GOAWAY (8 bytes).
GOAWAY_PING = b"people\x00\x01"
#: Seconds to wait for that PING's answer before sending the final GOAWAY anyway.
GOAWAY_PING_TIMEOUT = 1.0


class TwoPhaseGoAway:
    """One connection's GOAWAY, from the first frame to the last stream it serves."""

    def __init__(self) -> None:
        self.started = False
        #: Set once the final GOAWAY is sent: streams above this id are refused.
        self.last_stream_id: int | None = None
        #: Done when the final GOAWAY is sent or the connection is gone.
        self.sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._finish: Callable[[], None] | None = None

    def start(
        self, connection: Connection, h2: RefusingH2Connection, on_final: Callable[[], None]
    ) -> None:
        """Send the first GOAWAY and its PING; the final one follows, then ``on_final()``."""
        if self.started:
            return
        self.started = True
        if connection.is_closing():
            self.ended()
            return
        connection.flush()
        first = GoAwayFrame(stream_id=0, last_stream_id=ALL_STREAMS, error_code=ErrorCodes.NO_ERROR)
        raw_transport(connection).write(first.serialize())
        h2.ping(GOAWAY_PING)
        connection.flush()
        self._finish = functools.partial(self._send_final, connection, h2, on_final)
        self._timer = asyncio.get_running_loop().call_later(GOAWAY_PING_TIMEOUT, self._finish)

    def observe(self, event: H2Event) -> None:
        """Send the final GOAWAY when ``event`` answers the first one's PING."""
        if (
            self._finish is not None
            and isinstance(event, PingAckReceived)
            and event.ping_data == GOAWAY_PING
        ):
            self._finish()

    def _send_final(
        self, connection: Connection, h2: RefusingH2Connection, on_final: Callable[[], None]
    ) -> None:
        """The PING came back (or took too long): name the last stream that will be served."""
        if self.sent.done():
            return
        if self._timer is not None:
            self._timer.cancel()
        self.sent.set_result(None)
        if connection.is_closing():
            return
        self.last_stream_id = h2.highest_inbound_stream_id
        connection.flush()
        final = GoAwayFrame(
            stream_id=0, last_stream_id=self.last_stream_id, error_code=ErrorCodes.NO_ERROR
        )
        raw_transport(connection).write(final.serialize())
        on_final()

    def refuse(self, event: H2Event, h2: RefusingH2Connection) -> bool:
        """Refuse ``event``'s stream if it opened after the final GOAWAY; True if refused."""
        if not isinstance(event, RequestReceived) or self.last_stream_id is None:
            return False
        stream_id = event.stream_id
        if stream_id <= self.last_stream_id:
            return False
        # The client may have reset it in the same batch (grpcio does, for streams
        # above the GOAWAY's last id): then nothing is left to refuse.
        with contextlib.suppress(StreamClosedError):
            h2.reset_stream(stream_id, error_code=ErrorCodes.REFUSED_STREAM)
        return True

    def ended(self) -> None:
        """The connection is gone (or was never accepted): nothing more will be sent."""
        if self._timer is not None:
            self._timer.cancel()
        if not self.sent.done():
            self.sent.set_result(None)
