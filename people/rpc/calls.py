"""One gRPC call, from its request headers to its trailers, the way the spec says.

grpclib's ``request_handler`` answers a unary call with zero or two messages OK
or UNKNOWN, sends "method not found" without ``content-type`` and turns
unexpected exceptions into UNKNOWN. This module replaces that one function and
keeps the rest of grpclib: requests are read by :class:`people.rpc.stream.CallStream`
(size limit on the prefix, unary cardinality), every status goes out with
``content-type``, unexpected exceptions become INTERNAL with a generic message
(the traceback stays in the server log), calls past the concurrency cap wait
briefly and then get RESOURCE_EXHAUSTED, and every call produces one access-log
record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from grpclib.const import Cardinality, Status
from grpclib.encoding.base import GRPC_CONTENT_TYPE, CodecBase, StatusDetailsCodecBase
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.metadata import Deadline, decode_metadata, encode_grpc_message

from people.rpc.accesslog import CallRecord, log_call
from people.rpc.internals import (
    DeadlineWrapper,
    DispatchServerEvents,
    H2Stream,
    HandlerHooks,
    Wrapper,
)
from people.rpc.policy import CallPolicy
from people.rpc.stream import CallStream

if TYPE_CHECKING:
    from grpclib import const

log = logging.getLogger("people.rpc.calls")

#: The message every unexpected failure gets; details go to the server log only.
INTERNAL_ERROR = "internal server error"
#: Calls that skip the concurrency cap, so probes answer under load.
UNLIMITED_PREFIXES = ("/grpc.health.v1.Health/",)

_Headers = list[tuple[str, str]]


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


async def handle_call(
    policy: CallPolicy,
    mapping: dict[str, const.Handler],
    h2_stream: H2Stream,
    headers: _Headers,
    codec: CodecBase,
    status_details_codec: StatusDetailsCodecBase | None,
    dispatch: DispatchServerEvents,
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
    h2_stream: H2Stream,
    headers: _Headers,
    headers_map: dict[str, str],
    deadline: Deadline | None,
    codec: CodecBase,
    status_details_codec: StatusDetailsCodecBase | None,
    dispatch: DispatchServerEvents,
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


class CallHandler(HandlerHooks):
    """grpclib's per-connection handler, serving each call with :func:`handle_call`."""

    def __init__(self, *args: Any, policy: CallPolicy) -> None:
        super().__init__(*args)
        self.policy = policy

    def serve(
        self, stream: H2Stream, headers: _Headers, release_stream: Callable[[], Any]
    ) -> asyncio.Task[None]:
        """Start serving a new call."""
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
        # Counted from acceptance, so a drain also waits for calls not yet started.
        self.policy.running[task] = True
        return task
