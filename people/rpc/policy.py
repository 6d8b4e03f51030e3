"""What every call and every connection of one server is held to, and the state behind it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from people.rpc.defaults import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CALL_DURATION,
    DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_STREAMING_CALLS,
    DEFAULT_MAX_STREAMING_CALLS_PER_CONNECTION,
    DEFAULT_MAX_STREAMS_PER_CONNECTION,
    DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
)


@dataclass
class CallPolicy:
    """Limits shared by every call on a server, and the state that enforces them.

    A unary call takes one of ``max_concurrent_calls`` slots only once its
    request has arrived, and holds it while its handler runs; a streaming call
    takes one of ``max_streaming_calls`` slots of its own instead.

    Args:
        max_receive_message_bytes: Larger requests are refused before they are read.
        max_concurrent_calls: Unary handlers running at once; later calls queue.
        max_streaming_calls: Streaming calls running at once.
        max_streaming_calls_per_connection: Streaming calls one connection may run at once.
        queue_timeout: How long a queued call waits for a slot before RESOURCE_EXHAUSTED.
        request_timeout: How long a unary call's request may take to arrive.
        max_call_duration: How long a unary call may run (None: as long as its deadline).
    """

    max_receive_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS
    max_streaming_calls: int = DEFAULT_MAX_STREAMING_CALLS
    max_streaming_calls_per_connection: int = DEFAULT_MAX_STREAMING_CALLS_PER_CONNECTION
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    max_call_duration: float | None = DEFAULT_MAX_CALL_DURATION
    #: Running calls and whether each is unary (drain waits only for those).
    running: dict[asyncio.Task[None], bool] = field(default_factory=dict)
    _slots: asyncio.Semaphore | None = None
    _streaming_slots: asyncio.Semaphore | None = None

    @property
    def slots(self) -> asyncio.Semaphore:
        """The unary handler slots, created on first use inside the running loop."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent_calls)
        return self._slots

    @property
    def streaming_slots(self) -> asyncio.Semaphore:
        """The streaming calls' slots, created on first use inside the running loop."""
        if self._streaming_slots is None:
            self._streaming_slots = asyncio.Semaphore(self.max_streaming_calls)
        return self._streaming_slots

    def unary_calls(self) -> set[asyncio.Task[None]]:
        """Running calls that end by themselves (not long-lived streams)."""
        return {task for task, unary in self.running.items() if unary and not task.done()}


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
