"""The fast lane: a complete unary request whose answer is already known, answered at once.

Most reads are answered from a cache. For those, grpclib's path (a Stream
object, a task, a deadline timer, a buffer, three awaited writes) costs several
times the work of the answer itself. When one read from the socket holds a
whole unary call (HEADERS, one DATA frame with exactly one message, END_STREAM)
and the method's service offers a synchronous fast handler
(``__fast_lane__()``: path -> ``handler(request bytes) -> answer bytes | None``),
the connection answers inside ``data_received``: nothing is scheduled.

A write cannot answer at once: its handler returns a coroutine instead, and
the lane runs just that coroutine in a task of its own (a *deferred* answer,
:mod:`people.rpc.deferred`), still without grpclib's stream, dispatch and
message codec, and writes the answer frames when it finishes.

It keeps every promise of the normal path: the method, ``content-type`` and
``grpc-encoding`` checks, a ``grpc-timeout`` that is valid and not already
past, the size limit, strict decoding (the handler parses with upb and gives up
on anything it would not accept), the bearer token, the drain (a refused stream
never gets here), flow control, the observers (access log, metrics) and the
idle clock. Whatever is unusual — a handler that cannot answer without waiting,
a token that fails, a traced server, a frame too large — declines, and the
call takes the normal path untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Literal

from grpclib.const import Status
from grpclib.encoding.base import GRPC_CONTENT_TYPE
from grpclib.exceptions import GRPCError
from grpclib.metadata import Deadline, decode_metadata
from h2.events import DataReceived, RequestReceived, StreamEnded, WindowUpdated
from h2.events import Event as H2Event

from people.rpc.auth import TokenAuth
from people.rpc.deferred import ANSWER_HEADERS, OK_TRAILERS, PREFIX, Deferred, LaneHost
from people.rpc.observe import CallObserver, CallRecord
from people.rpc.policy import CallPolicy

#: A service's answer to a request message: its bytes now, a coroutine that
#: produces them (raising GRPCError for any other status), or None to take the
#: normal path.
FastAnswer = bytes | Coroutine[Any, Any, bytes] | None
FastHandler = Callable[[bytes], FastAnswer]
#: What became of a call offered to the lane (None: it takes the normal path).
Taken = Literal["answered", "deferred"] | None

_ACCEPTED_CONTENT_TYPES = frozenset({GRPC_CONTENT_TYPE, f"{GRPC_CONTENT_TYPE}+proto"})


def collect_handlers(services: Iterable[object]) -> dict[str, FastHandler]:
    """Every fast handler the services offer, by path."""
    found: dict[str, FastHandler] = {}
    for service in services:
        offer = getattr(service, "__fast_lane__", None)
        if offer is not None:
            found.update(offer())
    return found


class FastLane:
    """Decides, per call, whether the fast lane can answer it, and does.

    Args:
        handlers: Fast handlers by path.
        policy: The server's limits: the receive limit, slots, maximum call duration.
        observer: Told of each call the lane answers, as for any other call.
        auth: The current bearer-token check, if any.
    """

    def __init__(
        self,
        handlers: Mapping[str, FastHandler],
        *,
        policy: CallPolicy,
        observer: CallObserver,
        auth: Callable[[], TokenAuth | None],
    ) -> None:
        self._handlers = dict(handlers)
        self._policy = policy
        self._max = policy.max_receive_message_bytes
        self._observer = observer
        self._auth = auth
        #: Calls answered here at once so far (tests and diagnostics).
        self.answered = 0
        #: Calls answered here when their coroutine finished, so far.
        self.deferred = 0

    def candidates(self, events: list[H2Event]) -> dict[int, tuple[bytes, int]]:
        """Streams of ``events`` that are a whole unary call: their data and its flow length."""
        if not self._handlers or self._observer.needs_task:
            return {}
        data: dict[int, list[DataReceived]] = {}
        complete: dict[int, tuple[bytes, int]] = {}
        for event in events:
            stream_id = getattr(event, "stream_id", None)
            if isinstance(event, RequestReceived):
                if event.stream_ended is None and event.priority_updated is None:
                    data[event.stream_id] = []
            elif isinstance(event, DataReceived) and stream_id in data:
                data[event.stream_id].append(event)
                if event.stream_ended is not None:
                    chunks = data.pop(event.stream_id)
                    body = b"".join(chunk.data for chunk in chunks)
                    flow = sum(chunk.flow_controlled_length for chunk in chunks)
                    complete[event.stream_id] = (body, flow)
            elif isinstance(event, StreamEnded | WindowUpdated):
                # A WINDOW_UPDATE only lets the answer be larger, and h2 has applied
                # it already; gRPC's C core sends one between HEADERS and DATA.
                continue
            elif stream_id in data or stream_id in complete:
                # Anything else about the stream (a reset, a priority): not for the lane.
                data.pop(stream_id, None)
                complete.pop(stream_id, None)
        return complete

    def answer(self, host: LaneHost, request: RequestReceived, body: bytes, flow: int) -> Taken:
        """Answer ``request`` now, or start its deferred answer, if everything allows."""
        headers: list[tuple[str, str]] = request.headers  # type: ignore[assignment] # h2 gives str with ascii header encoding
        found = dict(headers)
        path = found.get(":path", "")
        handler = self._handlers.get(path)
        if (
            handler is None
            or found.get(":method") != "POST"
            or found.get("content-type") not in _ACCEPTED_CONTENT_TYPES
            or found.get("grpc-encoding", "identity") != "identity"
            or len(body) < PREFIX.size
        ):
            return None
        compressed, length = PREFIX.unpack_from(body)
        if compressed or length != len(body) - PREFIX.size or length > self._max:
            return None
        timeout = self._policy.max_call_duration
        if "grpc-timeout" in found:
            try:
                deadline = Deadline.from_headers(headers)
            except ValueError:
                return None
            if deadline is not None:
                remaining = deadline.time_remaining()
                if not remaining:
                    return None
                timeout = remaining if timeout is None else min(timeout, remaining)
        metadata = decode_metadata(headers)
        caller = None
        auth = self._auth()
        if auth is not None:
            try:
                caller = auth.check(path, metadata)
            except GRPCError:
                return None
        started = time.monotonic()
        answer = handler(body[PREFIX.size :])
        if answer is None:
            return None
        record = CallRecord(
            method=path,
            peer=host.peer,
            start=started,
            grpc_type="unary",
            started=True,
            received=1,
            caller=caller,
        )
        stream_id = request.stream_id
        h2 = host.h2
        if not isinstance(answer, bytes):
            if self._policy.slots.locked():
                answer.close()  # every slot is taken: the normal path queues the call
                return None
            self._observer.call_started(record, metadata)
            if flow:
                h2.acknowledge_received_data(flow, stream_id)
            Deferred(host, stream_id, record, policy=self._policy, observer=self._observer).start(
                answer, timeout
            )
            self.deferred += 1
            return "deferred"
        message = PREFIX.pack(False, len(answer)) + answer
        if not h2.send_unary_answer(stream_id, ANSWER_HEADERS, message, OK_TRAILERS):
            return None
        if flow:
            # After the answer, as the normal path does: the stream is closed by
            # then, so only the connection's window is given back.
            h2.acknowledge_received_data(flow, stream_id)
        record.status = Status.OK
        record.sent = 1
        self._observer.call_started(record, metadata)
        self._observer.call_finished(record)
        self.answered += 1
        return "answered"
