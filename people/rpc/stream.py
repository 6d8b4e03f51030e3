"""A call's server stream that reads its request the way the gRPC spec says.

grpclib's own stream buffers any request up to 4 GiB and lets a unary call
carry zero or two messages. This one checks the size on the 5-byte prefix
before the body is read, refuses compressed messages (none is negotiated) and
makes a unary request exactly one message followed by the end of the stream.
"""

from __future__ import annotations

import struct
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from people.rpc.internals import StreamHooks
from people.rpc.observe import CallObserver, CallRecord
from people.rpc.policy import CallPolicy

_PREFIX = struct.Struct(">?I")


class CallStream(StreamHooks):
    """grpclib's server stream with a receive limit and unary cardinality checks."""

    def __init__(
        self,
        *args: Any,
        policy: CallPolicy,
        record: CallRecord,
        observer: CallObserver,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._policy = policy
        self._record = record
        self._observer = observer
        self._request_done = False
        self._prefetched: list[Any] = []

    async def _read(self, size: int) -> bytes:
        try:
            return await self.read_bytes(size)
        except AssertionError:  # grpclib's Buffer: the stream ended inside a message
            raise GRPCError(Status.INTERNAL, "request message is truncated") from None

    async def _recv_bytes(self) -> bytes | None:
        prefix = await self._read(_PREFIX.size)
        if not prefix:
            return None
        if len(prefix) != _PREFIX.size:
            raise GRPCError(Status.INTERNAL, "request message is truncated")
        compressed, length = _PREFIX.unpack(prefix)
        if compressed:
            raise GRPCError(
                Status.INTERNAL, "compressed message received, but no compression is negotiated"
            )
        limit = self._policy.max_receive_message_bytes
        if length > limit:
            self._observer.refused("limits")
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"request message is {length} bytes, more than the server's {limit}-byte limit",
            )
        body = await self._read(length) if length else b""
        if len(body) != length:
            raise GRPCError(Status.INTERNAL, "request message is truncated")
        return body

    async def prefetch(self) -> None:
        """Read a unary request now; the handler's :meth:`recv_message` then returns it.

        Raises:
            GRPCError: as :meth:`recv_message`.
        """
        assert self.unary_request
        self._prefetched.append(await self.recv_message())

    async def recv_message(self) -> Any:
        """Receive one request message; a unary request must be exactly one.

        Raises:
            GRPCError: RESOURCE_EXHAUSTED over the receive limit, INTERNAL for a
                truncated, compressed, missing or extra message or bytes that do
                not parse.
        """
        if self._prefetched:
            return self._prefetched.pop()
        unary = self.unary_request
        if unary and self._request_done:
            return None
        data = await self._recv_bytes()
        if data is None:
            if unary:
                raise GRPCError(Status.INTERNAL, "missing request message for a unary call")
            return None
        if unary:
            if await self._read(_PREFIX.size):
                raise GRPCError(Status.INTERNAL, "too many request messages for a unary call")
            self._request_done = True
        message = await self.delivered(self.decode(data))
        self._record.received += 1
        return message

    async def send_message(self, message: Any) -> None:
        """Send one answer message, counting it."""
        await super().send_message(message)
        self._record.sent += 1

    async def send_trailing_metadata(self, *, status: Status = Status.OK, **kwargs: Any) -> None:
        """Send the trailers and remember the status for the access log."""
        if self._record.status is None:
            self._record.status = status
        await super().send_trailing_metadata(status=status, **kwargs)
