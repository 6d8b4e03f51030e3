"""A fast-lane call whose answer must wait (a write): one task, and the answer frames at its end.

The fast lane (:mod:`people.rpc.fast_lane`) has already checked the call as the
normal path would and told the observers it started. :class:`Deferred` runs the
service's coroutine the way :class:`people.rpc.calls.CallHandler` runs a handler:

- it holds one of the policy's unary slots (queued, and refused with
  RESOURCE_EXHAUSTED after the queue timeout, as any call);
- it ends at the client's deadline or the server's maximum call duration,
  whichever is sooner, with DEADLINE_EXCEEDED;
- a GRPCError becomes that status; any other exception is logged and becomes
  INTERNAL with the generic message;
- an answer the flow-control windows cannot take whole goes out in pieces as
  they open, as any answer would;
- the server's drain waits for it (``policy.running``), the connection counts it
  as an open stream (``host.deferred``), and a reset of its stream or the end of
  the connection cancels it;
- its record reaches the observers when it ends, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Coroutine
from typing import Any, Protocol

from grpclib.const import Status
from grpclib.encoding.base import GRPC_CONTENT_TYPE
from grpclib.exceptions import GRPCError
from grpclib.metadata import encode_grpc_message

from people.rpc.defaults import INTERNAL_ERROR
from people.rpc.internals import RefusingH2Connection
from people.rpc.observe import CallObserver, CallRecord
from people.rpc.policy import CallPolicy
from people.rpc.slots import held

log = logging.getLogger("people.rpc.calls")

#: A gRPC message's prefix: compressed flag, length.
PREFIX = struct.Struct(">?I")
CONTENT_TYPE = f"{GRPC_CONTENT_TYPE}+proto"
ANSWER_HEADERS = [(b":status", b"200"), (b"content-type", CONTENT_TYPE.encode())]
OK_TRAILERS = [(b"grpc-status", str(Status.OK.value).encode())]


class LaneHost(Protocol):
    """The connection a fast-lane call arrived on."""

    #: Deferred calls in flight on the connection, by stream id.
    deferred: dict[int, asyncio.Task[None]]

    @property
    def h2(self) -> RefusingH2Connection:
        """h2's state of the connection."""
        ...

    @property
    def peer(self) -> Any:
        """The client's address."""
        ...

    def is_closing(self) -> bool:
        """True once the connection is closing: nothing more can be sent."""
        ...

    def send_pending(self) -> None:
        """Write what h2 has queued to the transport."""
        ...

    def call_released(self) -> None:
        """A call of the connection ended."""
        ...

    async def window_opened(self) -> None:
        """Return when the peer next opens a flow-control window (or changes its settings)."""
        ...


class Deferred:
    """One deferred call on ``host``'s stream ``stream_id``, reported through ``record``."""

    def __init__(
        self,
        host: LaneHost,
        stream_id: int,
        record: CallRecord,
        *,
        policy: CallPolicy,
        observer: CallObserver,
    ) -> None:
        self._host = host
        self._stream_id = stream_id
        self._record = record
        self._policy = policy
        self._observer = observer
        self._headers_sent = False

    def start(self, work: Coroutine[Any, Any, bytes], limit: float | None) -> None:
        """Run ``work`` in a task, for at most ``limit`` seconds, and answer with its result."""
        task = asyncio.get_running_loop().create_task(self._run(work, limit))
        self._host.deferred[self._stream_id] = task
        self._policy.running[task] = True
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        # Here, not in the coroutine: a task cancelled before it ever ran still
        # frees its stream and leaves its record.
        self._host.deferred.pop(self._stream_id, None)
        self._policy.running.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.error("deferred answer of %s failed", self._record.method, exc_info=error)
        self._observer.call_finished(self._record)
        self._host.call_released()

    async def _run(self, work: Coroutine[Any, Any, bytes], limit: float | None) -> None:
        failure: GRPCError | None = None
        try:
            async with asyncio.timeout(limit):
                message = await self._answer(work)
                if await self._send(message):
                    self._record.status = Status.OK
                    self._record.sent = 1
        except TimeoutError:
            failure = GRPCError(Status.DEADLINE_EXCEEDED, "deadline exceeded")
        except GRPCError as error:
            failure = error
        finally:
            work.close()  # a no-op once it ran; stops one cancelled before it started
        if failure is not None:
            self._record.status = failure.status
            self._send_status(failure)
        self._host.send_pending()

    async def _answer(self, work: Coroutine[Any, Any, bytes]) -> bytes:
        """``work``'s answer as a gRPC message, run in a slot; failures as GRPCError."""
        try:
            policy = self._policy
            async with held(
                policy.slots, queue_timeout=policy.queue_timeout, observer=self._observer
            ):
                answer = await work
        except GRPCError:
            raise
        except Exception:
            log.exception("unexpected error in %s", self._record.method)
            raise GRPCError(Status.INTERNAL, INTERNAL_ERROR) from None
        return PREFIX.pack(False, len(answer)) + answer

    def _open(self) -> bool:
        if self._host.is_closing():
            return False
        stream = self._host.h2.streams.get(self._stream_id)
        return stream is not None and not stream.closed

    async def _send(self, message: bytes) -> bool:
        """Send the answer; False if the stream is gone first.

        Whole when the windows allow (the usual case); otherwise, as the normal
        path does, headers first and the message in pieces as the windows open.
        """
        h2, stream_id = self._host.h2, self._stream_id
        if not self._open():
            return False
        if h2.send_unary_answer(stream_id, ANSWER_HEADERS, message, OK_TRAILERS):
            return True
        h2.send_headers(stream_id, ANSWER_HEADERS)
        self._headers_sent = True
        rest = memoryview(message)
        while rest:
            self._host.send_pending()
            room = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
            if room <= 0:
                await self._host.window_opened()
            else:
                h2.send_data(stream_id, bytes(rest[:room]))
                rest = rest[room:]
            if not self._open():
                return False
        h2.send_headers(stream_id, OK_TRAILERS, end_stream=True)
        return True

    def _send_status(self, failure: GRPCError) -> None:
        """End the call with ``failure``'s status, trailers-only unless headers went out."""
        if not self._open():
            return
        headers = [] if self._headers_sent else [(":status", "200"), ("content-type", CONTENT_TYPE)]
        headers.append(("grpc-status", str(failure.status.value)))
        if failure.message is not None:
            headers.append(("grpc-message", encode_grpc_message(failure.message)))
        self._host.h2.send_headers(self._stream_id, headers, end_stream=True)
