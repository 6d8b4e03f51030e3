"""Telling a misbehaving HTTP/2 peer from a busy one, frame by frame.

:class:`AbuseWatch` sees every event of one connection (and what h2 handled
without an event) and says when the peer has gone too far:

- rapid reset (CVE-2023-44487): once 100 or more of its streams were cancelled
  before they were answered, or refused for exceeding the stream limit, and
  they are more than half of all it opened;
- floods of control frames (PING, SETTINGS, PRIORITY, empty DATA, DATA on
  closed streams) with no call between them: a burst is tolerated and refills
  with time and with every call, because clients do send such frames around
  calls (BDP pings, window settings).

The connection answers with GOAWAY ENHANCE_YOUR_CALM (:mod:`people.rpc.connection`).
"""

from __future__ import annotations

import time

from h2.events import (
    DataReceived,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamReset,
)
from h2.events import Event as H2Event

from people.rpc.internals import RefusingH2Connection
from people.rpc.policy import ConnectionLimits


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
        """A call went by: control frames around calls are normal."""
        self._tokens = float(self._burst)


class AbuseWatch:
    """One connection's record of streams and control frames.

    Args:
        limits: The thresholds.
        h2: The connection's h2 state, which counts what it refuses and drops.
    """

    def __init__(self, limits: ConnectionLimits, h2: RefusingH2Connection) -> None:
        self._limits = limits
        self._h2 = h2
        self._control = ControlBudget(limits.control_burst, limits.control_per_second)
        self._streams_opened = 0
        self._cancelled_early = 0
        self._seen_on_closed = 0
        self._seen_refused = 0
        #: After a GOAWAY clients cancel what they sent too late (grpcio does): not abuse.
        self.expecting_cancellations = False

    def observe(self, event: H2Event) -> str | None:
        """Note ``event``; return why the peer is abusive, if it now is."""
        if isinstance(event, RequestReceived):
            self._streams_opened += 1
            self._control.refill()
            return self._cancellations()
        if isinstance(event, DataReceived):
            if event.flow_controlled_length or event.stream_ended is not None:
                self._control.refill()
                return None
            return None if self._control.spend() else "a flood of empty DATA frames"
        if isinstance(event, StreamReset):
            if event.remote_reset and not self.expecting_cancellations:
                self._cancelled_early += 1
                return self._cancellations()
            return None
        if isinstance(event, PingReceived | PriorityUpdated | RemoteSettingsChanged):
            return None if self._control.spend() else "a flood of control frames"
        return None

    def unseen(self) -> str | None:
        """What h2 handled without an event since the last call: DATA on closed streams,
        refused streams."""
        on_closed, self._seen_on_closed = (
            self._h2.frames_on_closed_streams - self._seen_on_closed,
            self._h2.frames_on_closed_streams,
        )
        for _ in range(on_closed):
            if not self._control.spend():
                return "a flood of DATA frames on closed streams"
        if self._h2.refused_streams != self._seen_refused:
            self._seen_refused = self._h2.refused_streams
            return self._cancellations()
        return None

    def _cancellations(self) -> str | None:
        refused = self._h2.refused_streams
        wasted = self._cancelled_early + refused
        opened = self._streams_opened + refused
        if wasted >= self._limits.abuse_threshold and wasted > opened * self._limits.abuse_ratio:
            return f"{wasted} of its {opened} streams cancelled at once or past the limit"
        return None
