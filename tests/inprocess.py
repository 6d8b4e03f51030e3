"""A real people server on a loopback socket inside the test's event loop, and raw clients."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.encoding.base import CodecBase
from grpclib.health.check import ServiceStatus
from h2.config import H2Configuration
from h2.connection import H2Connection
from hpack import Decoder
from hyperframe.frame import Frame, HeadersFrame, PingFrame, RstStreamFrame

from people.domain.model import User
from people.domain.ports import UserStore
from people.rpc.server import RpcServer
from people.server.compose import build_server, build_services
from people.server.instruments import Instruments
from people.server.settings import Settings
from people.server.sockets import bind
from people.store.memory import MemoryStore


@dataclass
class Served:
    """A running in-process server."""

    server: RpcServer
    port: int
    store: UserStore

    def channel(self, **kwargs: Any) -> Channel:
        """A new grpclib channel (one connection) to the server."""
        return Channel("127.0.0.1", self.port, **kwargs)

    def raw_channel(self) -> Channel:
        """A channel that sends and receives message bytes as they are."""
        return Channel("127.0.0.1", self.port, codec=RawCodec())


@asynccontextmanager
async def serving(
    settings: Settings | None = None,
    *,
    store: UserStore | None = None,
    instruments: Instruments | None = None,
    **overrides: Any,
) -> AsyncIterator[Served]:
    """Run a server with ``settings`` (port 0) on ``store`` (a new memory store by default).

    The caller opens and closes a store it passes in; ``instruments`` (metrics,
    traces) watch the server as ``people serve`` would have them.
    """
    settings = settings or Settings(host="127.0.0.1", port=0, database="memory://", **overrides)
    store = store or MemoryStore()
    instruments = instruments or Instruments()
    status = ServiceStatus()
    status.set(True)
    services = build_services(
        instruments.wrap(store),
        settings,
        serving=status,
        on_cache_lookup=instruments.on_cache_lookup,
    )
    server = build_server(services, settings, observers=instruments.observers)
    sock = bind(settings.host, 0)
    await server.start_on(sock)
    try:
        yield Served(server=server, port=sock.getsockname()[1], store=store)
    finally:
        await server.drain(0.5)
        sock.close()


class RawCodec(CodecBase):
    """A codec for bytes: the test decides exactly what goes on the wire."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        """Return the bytes unchanged."""
        assert isinstance(message, bytes)
        return message

    def decode(self, data: bytes, message_type: Any) -> bytes:
        """Return the bytes unchanged."""
        return data


async def call_raw(channel: Channel, method: str, *messages: bytes, limit: float = 5) -> bytes:
    """Send ``messages`` (any number) on one unary call and return the answer bytes.

    Raises:
        GRPCError: the server answered with a non-OK status.
    """
    async with channel.request(
        method, Cardinality.UNARY_UNARY, bytes, bytes, timeout=limit
    ) as stream:
        await stream.send_request()
        for message in messages:
            await stream.send_message(message)
        await stream.end()
        answer = await stream.recv_message()
        assert answer is not None
        return answer


async def call_frames(channel: Channel, method: str, data: bytes, *, limit: float = 5) -> bytes:
    """Send ``data`` as the call's whole DATA payload, length prefixes included."""
    async with channel.request(
        method, Cardinality.UNARY_UNARY, bytes, bytes, timeout=limit
    ) as stream:
        await stream.send_request()
        await stream._stream.send_data(data, end_stream=True)
        answer = await stream.recv_message()
        assert answer is not None
        return answer


def frame(message: bytes, *, compressed: bool = False, length: int | None = None) -> bytes:
    """The 5-byte gRPC prefix plus ``message``; ``length`` may lie."""
    return struct.pack(">?I", compressed, len(message) if length is None else length) + message


class GatedStore(MemoryStore):
    """A memory store whose writes wait inside the store while ``gate`` is closed (clear).

    Args:
        closed: Start with the gate closed (the default) or open.
    """

    def __init__(self, *, closed: bool = True) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        if not closed:
            self.gate.set()
        #: Writes waiting at the gate right now.
        self.waiting = 0

    async def _pass_gate(self) -> None:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1

    async def add(self, user: User) -> None:
        """Wait for the gate, then add."""
        await self._pass_gate()
        await super().add(user)

    async def replace(self, user: User, *, expected_version: int) -> None:
        """Wait for the gate, then replace."""
        await self._pass_gate()
        await super().replace(user, expected_version=expected_version)


async def until(predicate: Callable[[], bool], limit: float = 5) -> None:
    """Wait until ``predicate()`` holds, failing after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {limit}s")
        await asyncio.sleep(0.01)


class RawH2:
    """A bare HTTP/2 client: h2 writes the frames, hyperframe reads them back verbatim."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.decoder = Decoder()

    @classmethod
    async def connect(cls, port: int) -> RawH2:
        """Connect and send the HTTP/2 preface and settings."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        client.h2.initiate_connection()
        client.flush()
        return client

    def flush(self) -> None:
        """Write whatever h2 has queued."""
        self.writer.write(self.h2.data_to_send())

    def call(
        self, method: str, message: bytes, *, extra: list[tuple[str, str]] | None = None
    ) -> int:
        """Start a unary call with ``message`` (and ``extra`` headers); return its stream id."""
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, [*self.request_headers(method), *(extra or [])])
        self.h2.send_data(stream_id, message, end_stream=True)
        self.flush()
        return stream_id

    @staticmethod
    def request_headers(method: str) -> list[tuple[str, str]]:
        """The headers of a gRPC call to ``method``."""
        return [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", method),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]

    async def read_frame(self, limit: float = 5) -> Frame:
        """Return the next frame the server sent, waiting at most ``limit`` seconds."""
        header = await asyncio.wait_for(self.reader.readexactly(9), limit)
        parsed, length = Frame.parse_frame_header(memoryview(header))
        parsed.parse_body(memoryview(await self.reader.readexactly(length)))
        return parsed

    async def answer(self, stream_id: int) -> dict[str, str]:
        """Read until ``stream_id`` ends; return all its headers and trailers together."""
        headers: dict[str, str] = {}
        while True:
            received = await self.read_frame()
            if isinstance(received, HeadersFrame):
                decoded = self.decode(received)
                if received.stream_id == stream_id:
                    headers.update(decoded)
                    if "END_STREAM" in received.flags:
                        return headers
            elif isinstance(received, RstStreamFrame) and received.stream_id == stream_id:
                headers[":reset"] = str(received.error_code)
                return headers

    async def answers(self, stream_ids: list[int]) -> dict[int, dict[str, str]]:
        """Read until every stream in ``stream_ids`` ends; return each one's headers, trailers."""
        pending = set(stream_ids)
        found: dict[int, dict[str, str]] = {stream_id: {} for stream_id in stream_ids}
        while pending:
            received = await self.read_frame()
            if isinstance(received, HeadersFrame):
                decoded = self.decode(received)
                if received.stream_id in pending:
                    found[received.stream_id].update(decoded)
                    if "END_STREAM" in received.flags:
                        pending.discard(received.stream_id)
            elif isinstance(received, RstStreamFrame) and received.stream_id in pending:
                found[received.stream_id][":reset"] = str(received.error_code)
                pending.discard(received.stream_id)
        return found

    def answer_ping(self, ping: Frame) -> bool:
        """Acknowledge ``ping`` if it is a PING the server sent; return whether it was."""
        if not isinstance(ping, PingFrame) or "ACK" in ping.flags:
            return False
        self.writer.write(PingFrame(0, opaque_data=ping.opaque_data, flags=["ACK"]).serialize())
        return True

    def decode(self, headers_frame: HeadersFrame) -> dict[str, str]:
        """Decode a HEADERS frame's block (in the order frames arrived)."""
        return {
            bytes(name).decode(): bytes(value).decode()
            for name, value in self.decoder.decode(bytes(headers_frame.data), raw=True)
        }

    def close(self) -> None:
        """Close the socket."""
        self.writer.close()
