"""One gRPC call, from its request headers to its trailers, the way the spec says.

grpclib's ``request_handler`` buffers any request up to 4 GiB, answers a unary
call with zero or two messages OK or UNKNOWN, sends "method not found" without
``content-type`` and turns unexpected exceptions into UNKNOWN. This module
replaces that one function (and the stream it builds) and keeps the rest of
grpclib: the size limit is checked on the 5-byte prefix before the body is
read, a unary request must be exactly one message followed by the end of the
stream, every status goes out with ``content-type``, unexpected exceptions
become INTERNAL with a generic message (the traceback stays in the server log),
calls past the concurrency cap wait briefly and then get RESOURCE_EXHAUSTED,
and every call produces one access-log record.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grpclib.const import Cardinality, Status
from grpclib.encoding.base import GRPC_CONTENT_TYPE, CodecBase, StatusDetailsCodecBase
from grpclib.events import _DispatchServerEvents
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.metadata import Deadline, decode_metadata, encode_grpc_message
from grpclib.server import Handler
from grpclib.server import Stream as GrpclibStream
from grpclib.utils import DeadlineWrapper, Wrapper

from people.accesslog import CallRecord, log_call
from people.config import DEFAULT_MAX_CONCURRENT_CALLS, DEFAULT_MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from grpclib import const, protocol

log = logging.getLogger("people.calls")

#: The message every unexpected failure gets; details go to the server log only.
INTERNAL_ERROR = "internal server error"
#: How long a call may wait for a free handler slot before RESOURCE_EXHAUSTED.
DEFAULT_QUEUE_TIMEOUT = 1.0
#: Calls that skip the concurrency cap, so probes answer under load.
UNLIMITED_PREFIXES = ("/grpc.health.v1.Health/",)

_Headers = list[tuple[str, str]]


@dataclass
class CallPolicy:
    """What every call on a server shares: limits, the handler slots, running calls.

    Args:
        max_receive_message_bytes: Larger requests are refused before they are read.
        max_concurrent_calls: Handlers running at once; later calls queue.
        queue_timeout: How long a queued call waits before RESOURCE_EXHAUSTED.
    """

    max_receive_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT
    #: Running calls and whether each is unary (drain waits only for those).
    running: dict[asyncio.Task[None], bool] = field(default_factory=dict)
    _slots: asyncio.Semaphore | None = None

    @property
    def slots(self) -> asyncio.Semaphore:
        """The handler slots, created on first use inside the running loop."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent_calls)
        return self._slots

    def unary_calls(self) -> set[asyncio.Task[None]]:
        """Running calls that end by themselves (not long-lived streams)."""
        return {task for task, unary in self.running.items() if unary and not task.done()}


class CallStream(GrpclibStream[Any, Any]):
    """grpclib's server stream with a receive limit and unary cardinality checks."""

    def __init__(self, *args: Any, policy: CallPolicy, record: CallRecord, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._policy = policy
        self._record = record
        self._request_done = False

    async def _read(self, size: int) -> bytes:
        try:
            return await self._stream.recv_data(size)
        except AssertionError:  # grpclib's Buffer: the stream ended inside a message
            raise GRPCError(Status.INTERNAL, "request message is truncated") from None

    async def _recv_bytes(self) -> bytes | None:
        prefix = await self._read(5)
        if not prefix:
            return None
        if len(prefix) != 5:
            raise GRPCError(Status.INTERNAL, "request message is truncated")
        compressed, length = struct.unpack(">?I", prefix)
        if compressed:
            raise GRPCError(
                Status.INTERNAL, "compressed message received, but no compression is negotiated"
            )
        limit = self._policy.max_receive_message_bytes
        if length > limit:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"request message is {length} bytes, more than the server's {limit}-byte limit",
            )
        body = await self._read(length) if length else b""
        if len(body) != length:
            raise GRPCError(Status.INTERNAL, "request message is truncated")
        return body

    async def recv_message(self) -> Any:
        """Receive one request message; a unary request must be exactly one.

        Raises:
            GRPCError: RESOURCE_EXHAUSTED over the receive limit, INTERNAL for a
                truncated, compressed, missing or extra message or bytes that do
                not parse.
        """
        unary = not self._cardinality.client_streaming
        if unary and self._request_done:
            return None
        data = await self._recv_bytes()
        if data is None:
            if unary:
                raise GRPCError(Status.INTERNAL, "missing request message for a unary call")
            return None
        if unary:
            if await self._read(5):
                raise GRPCError(Status.INTERNAL, "too many request messages for a unary call")
            self._request_done = True
        message = self._codec.decode(data, self._recv_type)
        (message,) = await self._dispatch.recv_message(message)
        self._messages_received += 1
        self._stream.connection.messages_received += 1
        self._stream.connection.last_message_received = time.monotonic()
        return message

    async def send_trailing_metadata(self, *, status: Status = Status.OK, **kwargs: Any) -> None:
        """Send the trailers and remember the status for the access log."""
        if self._record.status is None:
            self._record.status = status
        await super().send_trailing_metadata(status=status, **kwargs)


async def refuse(
    h2_stream: protocol.Stream,
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


async def handle_call(
    policy: CallPolicy,
    mapping: dict[str, const.Handler],
    h2_stream: protocol.Stream,
    headers: _Headers,
    codec: CodecBase,
    status_details_codec: StatusDetailsCodecBase | None,
    dispatch: _DispatchServerEvents,
    release_stream: Callable[[], Any],
) -> None:
    """Serve one call; the replacement for ``grpclib.server.request_handler``."""
    headers_map = dict(headers)
    peer = h2_stream.connection.get_peer().addr()
    record = CallRecord(method=headers_map.get(":path", "?"), peer=peer, start=time.monotonic())
    task = asyncio.current_task()
    assert task is not None
    try:
        if headers_map.get(":method") != "POST":
            await refuse(h2_stream, Status.UNIMPLEMENTED, "only POST", record, http_status=405)
            return
        content_type = headers_map.get("content-type", "")
        base, _, subtype = content_type.partition("+")
        if base != GRPC_CONTENT_TYPE or subtype not in ("", codec.__content_subtype__):
            await refuse(
                h2_stream, Status.UNKNOWN, "unacceptable content-type", record, http_status=415
            )
            return
        method = mapping.get(record.method)
        if method is None:
            await refuse(h2_stream, Status.UNIMPLEMENTED, f"unknown method {record.method}", record)
            return
        policy.running[task] = method.cardinality is Cardinality.UNARY_UNARY
        encoding = headers_map.get("grpc-encoding", "identity")
        if encoding != "identity":
            await refuse(
                h2_stream,
                Status.UNIMPLEMENTED,
                f"grpc-encoding {encoding} is not supported",
                record,
                extra=[("grpc-accept-encoding", "identity")],
            )
            return
        try:
            deadline = Deadline.from_headers(headers)
        except ValueError:
            await refuse(h2_stream, Status.INVALID_ARGUMENT, "invalid grpc-timeout", record)
            return
        limited = not record.method.startswith(UNLIMITED_PREFIXES)
        if limited:
            try:
                await asyncio.wait_for(policy.slots.acquire(), policy.queue_timeout)
            except TimeoutError:
                await refuse(
                    h2_stream,
                    Status.RESOURCE_EXHAUSTED,
                    "the server is busy, too many calls are running; retry later",
                    record,
                )
                return
        try:
            await _run(
                method,
                h2_stream,
                headers,
                headers_map,
                deadline,
                codec,
                status_details_codec,
                dispatch,
                policy,
                record,
            )
        finally:
            if limited:
                policy.slots.release()
    except ProtocolError:
        log.exception("protocol error in %s", record.method)
    except Exception:
        log.exception("server error in %s", record.method)
    finally:
        policy.running.pop(task, None)
        release_stream()
        log_call(record)


async def _run(
    method: const.Handler,
    h2_stream: protocol.Stream,
    headers: _Headers,
    headers_map: dict[str, str],
    deadline: Deadline | None,
    codec: CodecBase,
    status_details_codec: StatusDetailsCodecBase | None,
    dispatch: _DispatchServerEvents,
    policy: CallPolicy,
    record: CallRecord,
) -> None:
    user_agent = headers_map.get("user-agent")
    async with CallStream(
        h2_stream,
        record.method,
        method.cardinality,
        method.request_type,
        method.reply_type,
        codec=codec,
        status_details_codec=status_details_codec,
        dispatch=dispatch,
        deadline=deadline,
        user_agent=user_agent,
        policy=policy,
        record=record,
    ) as stream:
        wrapper: Wrapper
        deadline_wrapper: Any
        if deadline is None:
            wrapper = h2_stream.wrapper = Wrapper()
            deadline_wrapper = nullcontext()
        else:
            wrapper = h2_stream.wrapper = DeadlineWrapper()
            deadline_wrapper = wrapper.start(deadline)
        try:
            with deadline_wrapper, wrapper:
                stream.metadata, method_func = await dispatch.recv_request(
                    decode_metadata(headers),
                    method.func,
                    method_name=record.method,
                    deadline=deadline,
                    content_type=headers_map.get("content-type", ""),
                    user_agent=user_agent,
                    peer=stream.peer,
                )
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


class CallHandler(Handler):
    """grpclib's per-connection handler, serving each call with :func:`handle_call`."""

    def __init__(self, *args: Any, policy: CallPolicy) -> None:
        super().__init__(*args)
        self.policy = policy

    def accept(
        self, stream: protocol.Stream, headers: _Headers, release_stream: Callable[[], Any]
    ) -> None:
        """Start serving a new call."""
        self.__gc_step__()
        task = self.loop.create_task(
            handle_call(
                self.policy,
                self.mapping,
                stream,
                headers,
                self.codec,
                self.status_details_codec,
                self.dispatch,
                release_stream,
            )
        )
        self._tasks[stream] = task
        # Counted from acceptance, so a drain also waits for calls not yet started.
        self.policy.running[task] = True
