"""The wire codec: protobuf's own parser guards betterproto2's lenient one.

betterproto2 accepts truncated strings, puts values of the wrong wire type into
typed fields and concatenates unknown fields in quadratic time on the event
loop. So every request is first parsed by upb (protobuf's C parser) from the
same descriptor: bytes upb rejects are refused with INTERNAL, unknown fields
are discarded, and betterproto2 only ever parses upb's canonical re-encoding.
Outgoing messages larger than the send limit are refused with
RESOURCE_EXHAUSTED instead of being written.
"""

from __future__ import annotations

import functools
from typing import Any

import betterproto2
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import DecodeError, Message
from grpclib.const import Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError

from people.rpc.defaults import DEFAULT_MAX_MESSAGE_BYTES

#: What a client is told when its request does not parse; no parser internals.
PARSE_ERROR = "error parsing request"


def within_send_limit(data: bytes, limit: int) -> bytes:
    """``data``, an encoded answer, if it is at most ``limit`` bytes.

    Raises:
        GRPCError: RESOURCE_EXHAUSTED for a larger answer.
    """
    if len(data) > limit:
        raise GRPCError(
            Status.RESOURCE_EXHAUSTED,
            f"response message is {len(data)} bytes, more than the server's {limit}-byte limit",
        )
    return data


class StrictCodec(CodecBase):
    """``application/grpc+proto`` for betterproto2 and protobuf messages alike.

    Args:
        pool: The descriptor pool holding every betterproto2 message served.
        max_send_message_bytes: Answers larger than this are refused.
    """

    __content_subtype__ = "proto"

    def __init__(
        self,
        pool: DescriptorPool,
        *,
        max_send_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._pool = pool
        self._max_send_message_bytes = max_send_message_bytes

    @functools.cache  # noqa: B019 - one codec per server; the cache is the point
    def _upb_class(self, full_name: str) -> type[Message]:
        return message_factory.GetMessageClass(self._pool.FindMessageTypeByName(full_name))

    def encode(self, message: Any, message_type: Any) -> bytes:
        """Serialise ``message``, refusing answers over the send limit."""
        if not isinstance(message, message_type):
            raise TypeError(f"message must be {message_type!r}, not {type(message)!r}")
        data = message.SerializeToString() if isinstance(message, Message) else bytes(message)
        return within_send_limit(data, self._max_send_message_bytes)

    def decode(self, data: bytes, message_type: Any) -> Any:
        """Parse ``data`` strictly into ``message_type``.

        Raises:
            GRPCError: INTERNAL when protobuf's parser rejects the bytes.
        """
        if issubclass(message_type, Message):
            upb_type: type[Message] = message_type
        else:
            upb_type = self._upb_class(message_type.DESCRIPTOR.full_name)
        try:
            checked = upb_type.FromString(data)
        except DecodeError:
            raise GRPCError(Status.INTERNAL, PARSE_ERROR) from None
        checked.DiscardUnknownFields()
        if upb_type is message_type:
            return checked
        canonical = checked.SerializeToString()
        assert issubclass(message_type, betterproto2.Message)
        try:
            return message_type.parse(canonical)
        except Exception:  # betterproto2 failing on upb's own output is our bug, not the client's
            raise GRPCError(Status.INTERNAL, PARSE_ERROR) from None
