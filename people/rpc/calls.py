"""One gRPC call, from its request headers to its trailers, the way the spec says.

grpclib's ``request_handler`` answers a unary call with zero or two messages OK
or UNKNOWN, sends "method not found" without ``content-type``, turns unexpected
exceptions into UNKNOWN, and lets a call hold resources while its client takes
its time. :class:`CallHandler` replaces it and keeps the rest of grpclib:

- every status goes out with ``content-type``; unexpected exceptions become
  INTERNAL with a generic message (the traceback stays in the server log);
- the request is read (by :class:`people.rpc.stream.CallStream`: size limit on
  the prefix, exactly one message) *before* the call takes a handler slot, and
  must arrive within the request timeout, so a client that never sends its body
  holds no slot, and gives up its stream;
- unary calls take one of the policy's slots, streaming calls one of a separate
  set (and a few per connection), so long-lived streams cannot eat unary slots;
  a call that finds no slot within the queue timeout gets RESOURCE_EXHAUSTED;
- a unary call runs at most the server's maximum call duration, or its own
  deadline when that is shorter;
- every call produces one access-log record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from grpclib.const import Cardinality, Status
from grpclib.encoding.base import GRPC_CONTENT_TYPE
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.metadata import Deadline, decode_metadata, encode_grpc_message

from people.rpc.auth import TokenAuth
from people.rpc.defaults import INTERNAL_ERROR
from people.rpc.internals import DeadlineWrapper, H2Stream, HandlerHooks, Wrapper
from people.rpc.observe import CallObserver, CallRecord, GrpcType
from people.rpc.policy import CallPolicy
from people.rpc.slots import held
from people.rpc.stream import CallStream

if TYPE_CHECKING:
    from grpclib import const

log = logging.getLogger("people.rpc.calls")

#: Calls that skip the unary concurrency cap, so probes answer under load.
UNLIMITED_PREFIXES = ("/grpc.health.v1.Health/",)

_Headers = list[tuple[str, str]]
_GRPC_TYPES: dict[Cardinality, GrpcType] = {
    Cardinality.UNARY_UNARY: "unary",
    Cardinality.UNARY_STREAM: "server_stream",
    Cardinality.STREAM_UNARY: "client_stream",
    Cardinality.STREAM_STREAM: "bidi_stream",
}


async def refuse(
    h2_stream: H2Stream,
    status: Status,
    message: str,
    record: CallRecord,
    *,
    http_status: int = 200,
    extra: _Headers = (),  # type: ignore[assignment] # an empty tuple is a fine empty list
) -> None:
    """Answer a call trailers-only, with ``content-type`` as the gRPC spec requires."""
    record.status = status
    headers = [
        (":status", str(http_status)),
        ("content-type", GRPC_CONTENT_TYPE),
        ("grpc-status", str(status.value)),
        ("grpc-message", encode_grpc_message(message)),
        *extra,
    ]
    await h2_stream.send_headers(headers, end_stream=True)
    if h2_stream.closable:
        h2_stream.reset_nowait()


class CallHandler(HandlerHooks):
    """grpclib's per-connection handler, serving each call the way the module says."""

    def __init__(
        self,
        *args: Any,
        policy: CallPolicy,
        observer: CallObserver,
        auth: Callable[[], TokenAuth | None],
    ) -> None:
        super().__init__(*args)
        self.policy = policy
        self.observer = observer
        self._auth = auth
        #: Streaming calls running on this connection.
        self.streaming = 0

    def serve(
        self, stream: H2Stream, headers: _Headers, release_stream: Callable[[], Any]
    ) -> asyncio.Task[None]:
        """Start serving a new call."""
        headers_map = dict(headers)
        peer = stream.connection.get_peer().addr()
        record = CallRecord(method=headers_map.get(":path", "?"), peer=peer)
        task = self.loop.create_task(self._serve(stream, headers, headers_map, record))
        # Counted from acceptance, so a drain also waits for calls not yet started.
        self.policy.running[task] = True

        def finished(task: asyncio.Task[None]) -> None:
            # Here, not in the coroutine: a call cancelled before it ever ran (the
            # client reset it at once) still frees its stream and leaves its record.
            self.policy.running.pop(task, None)
            release_stream()
            self.observer.call_finished(record)

        task.add_done_callback(finished)
        return task

    async def _serve(
        self,
        h2_stream: H2Stream,
        headers: _Headers,
        headers_map: dict[str, str],
        record: CallRecord,
    ) -> None:
        try:
            method = await self._check(h2_stream, headers_map, record)
            if method is None:
                return
            record.grpc_type = _GRPC_TYPES[method.cardinality]
            unary = method.cardinality is Cardinality.UNARY_UNARY
            task = asyncio.current_task()
            assert task is not None
            self.policy.running[task] = unary
            try:
                deadline = self._deadline(headers, unary=unary)
            except ValueError:
                await refuse(h2_stream, Status.INVALID_ARGUMENT, "invalid grpc-timeout", record)
                return
            await self._run(method, h2_stream, headers, headers_map, deadline, record)
        except ProtocolError:
            log.exception("protocol error in %s", record.method)
        except Exception:
            log.exception("server error in %s", record.method)

    async def _check(
        self, h2_stream: H2Stream, headers_map: dict[str, str], record: CallRecord
    ) -> const.Handler | None:
        """The method a call's headers name, or None after refusing a call the spec rules out."""
        if headers_map.get(":method") != "POST":
            await refuse(h2_stream, Status.UNIMPLEMENTED, "only POST", record, http_status=405)
            return None
        base, _, subtype = headers_map.get("content-type", "").partition("+")
        if base != GRPC_CONTENT_TYPE or subtype not in ("", self.codec.__content_subtype__):
            await refuse(
                h2_stream, Status.UNKNOWN, "unacceptable content-type", record, http_status=415
            )
            return None
        method: const.Handler | None = self.mapping.get(record.method)
        if method is None:
            await refuse(h2_stream, Status.UNIMPLEMENTED, f"unknown method {record.method}", record)
            return None
        encoding = headers_map.get("grpc-encoding", "identity")
        if encoding != "identity":
            await refuse(
                h2_stream,
                Status.UNIMPLEMENTED,
                f"grpc-encoding {encoding} is not supported",
                record,
                extra=[("grpc-accept-encoding", "identity")],
            )
            return None
        return method

    def _deadline(self, headers: _Headers, *, unary: bool) -> Deadline | None:
        """The client's deadline, or the server's maximum call duration when that is sooner.

        Raises:
            ValueError: the ``grpc-timeout`` header is malformed.
        """
        deadline = Deadline.from_headers(headers)
        limit = self.policy.max_call_duration
        if not unary or limit is None:
            return deadline
        longest = Deadline.from_timeout(limit)
        return longest if deadline is None or longest < deadline else deadline

    async def _run(
        self,
        method: const.Handler,
        h2_stream: H2Stream,
        headers: _Headers,
        headers_map: dict[str, str],
        deadline: Deadline | None,
        record: CallRecord,
    ) -> None:
        user_agent = headers_map.get("user-agent")
        stream = CallStream(
            h2_stream,
            record.method,
            method.cardinality,
            method.request_type,
            method.reply_type,
            codec=self.codec,
            status_details_codec=self.status_details_codec,
            dispatch=self.dispatch,
            deadline=deadline,
            user_agent=user_agent,
            policy=self.policy,
            record=record,
            observer=self.observer,
        )
        async with stream:
            wrapper: Wrapper
            deadline_wrapper: Any
            if deadline is None:
                wrapper = h2_stream.wrapper = Wrapper()
                deadline_wrapper = nullcontext()
            elif not deadline.time_remaining():
                # grpclib's wrapper raises a bare TimeoutError for a deadline already past.
                raise GRPCError(Status.DEADLINE_EXCEEDED, "deadline exceeded")
            else:
                wrapper = h2_stream.wrapper = DeadlineWrapper()
                deadline_wrapper = wrapper.start(deadline)
            try:
                with deadline_wrapper, wrapper:
                    metadata = decode_metadata(headers)
                    record.started = True
                    self.observer.call_started(record, metadata)
                    auth = self._auth()
                    if auth is not None:
                        record.caller = auth.check(record.method, metadata)
                    stream.metadata, method_func = await self.dispatch.recv_request(
                        metadata,
                        method.func,
                        method_name=record.method,
                        deadline=deadline,
                        content_type=headers_map.get("content-type", ""),
                        user_agent=user_agent,
                        peer=stream.peer,
                    )
                    if stream.unary_request:
                        await self._receive_request(stream)
                    async with self._slot(method, record.method):
                        await method_func(stream)
            except GRPCError:
                raise
            except TimeoutError:
                if wrapper.cancelled or wrapper.cancel_failed:
                    raise GRPCError(Status.DEADLINE_EXCEEDED, "deadline exceeded") from None
                log.exception("timeout in %s", record.method)
                raise GRPCError(Status.INTERNAL, INTERNAL_ERROR) from None
            except StreamTerminatedError:
                record.status = Status.CANCELLED
                raise
            except Exception:
                log.exception("unexpected error in %s", record.method)
                raise GRPCError(Status.INTERNAL, INTERNAL_ERROR) from None

    async def _receive_request(self, stream: CallStream) -> None:
        """Read the whole request before the call takes a slot, within the request timeout."""
        limit = self.policy.request_timeout
        try:
            async with asyncio.timeout(limit):
                await stream.prefetch()
        except TimeoutError:
            self.observer.refused("limits")
            raise GRPCError(
                Status.DEADLINE_EXCEEDED,
                f"the request message did not arrive within the server's {limit:g} s",
            ) from None

    @asynccontextmanager
    async def _slot(self, method: const.Handler, path: str) -> AsyncIterator[None]:
        """Hold a handler slot while the handler runs: a unary slot, or a streaming one."""
        if method.cardinality is Cardinality.UNARY_UNARY:
            if path.startswith(UNLIMITED_PREFIXES):
                yield
                return
            async with self._held(self.policy.slots):
                yield
            return
        if self.streaming >= self.policy.max_streaming_calls_per_connection:
            self.observer.refused("limits")
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"at most {self.policy.max_streaming_calls_per_connection} streaming calls"
                " may run on one connection",
            )
        self.streaming += 1
        try:
            async with self._held(self.policy.streaming_slots):
                yield
        finally:
            self.streaming -= 1

    def _held(self, slots: asyncio.Semaphore) -> AbstractAsyncContextManager[None]:
        return held(slots, queue_timeout=self.policy.queue_timeout, observer=self.observer)
