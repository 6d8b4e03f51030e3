"""The runtime's default limits and timeouts, in one place for flags and docs to quote."""

from __future__ import annotations

#: Largest request and response message, in bytes (gRPC's customary 4 MiB).
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Seconds accepted calls get to finish after a drain starts.
DEFAULT_GRACE_PERIOD = 10.0
#: Seconds a new connection has to complete its TLS and HTTP/2 handshake.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Seconds a connection may stay without calls before it is closed.
DEFAULT_IDLE_TIMEOUT = 300.0
#: Open connections at most; later ones are closed at once.
DEFAULT_MAX_CONNECTIONS = 1000
#: Handlers running at once; later calls queue briefly.
DEFAULT_MAX_CONCURRENT_CALLS = 256
#: How long a queued call waits for a free handler slot before RESOURCE_EXHAUSTED.
DEFAULT_QUEUE_TIMEOUT = 1.0
#: Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS);
#: a stream past it is refused alone, with REFUSED_STREAM.
DEFAULT_MAX_STREAMS_PER_CONNECTION = 100
#: Long-lived streaming calls (health Watch, reflection) running at once, in
#: slots of their own so they cannot take the unary calls' slots.
DEFAULT_MAX_STREAMING_CALLS = 1000
#: Streaming calls one connection may have running at once.
DEFAULT_MAX_STREAMING_CALLS_PER_CONNECTION = 10
#: Seconds a call's request message may take to arrive after its headers.
DEFAULT_REQUEST_TIMEOUT = 5.0
#: Seconds a unary call may run at most (a client's shorter deadline still wins).
DEFAULT_MAX_CALL_DURATION = 60.0

#: The message every unexpected failure gets; details go to the server log only.
INTERNAL_ERROR = "internal server error"
