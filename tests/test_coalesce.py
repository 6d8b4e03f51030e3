"""CoalescingTransport: one socket write per loop turn, bytes in order, nothing lost on close."""

from __future__ import annotations

import asyncio
import socket

from people.rpc.coalesce import CoalescingTransport


class Recording(asyncio.Transport):
    """A transport that records each write instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Record one write."""
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        """Closed once close() was called."""
        return self.closed

    def close(self) -> None:
        """Remember the close."""
        self.closed = True


async def test_writes_of_one_turn_leave_in_one_write() -> None:
    """Headers, data and trailers written in one turn reach the socket as one write, in order."""
    inner = Recording()
    transport = CoalescingTransport(inner)
    for part in (b"headers", b"data", b"trailers"):
        transport.write(part)
    assert inner.writes == []
    await asyncio.sleep(0)
    assert inner.writes == [b"headersdatatrailers"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert inner.writes == [b"headersdatatrailers", b"next"]


async def test_close_sends_what_is_queued_first() -> None:
    """Closing right after a write (a GOAWAY, say) still sends it before the close."""
    inner = Recording()
    transport = CoalescingTransport(inner)
    transport.write(b"goaway")
    transport.close()
    assert inner.writes == [b"goaway"]
    assert inner.closed
    await asyncio.sleep(0)
    assert inner.writes == [b"goaway"]


async def test_over_a_real_socket() -> None:
    """Over a real socket pair every byte arrives, in order, and the peer sees EOF after close."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    raw, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    assert isinstance(raw, asyncio.Transport)
    transport = CoalescingTransport(raw)
    reader, writer = await asyncio.open_connection(sock=theirs)
    payload = [bytes([n]) * 1000 for n in range(50)]
    for chunk in payload:
        transport.write(chunk)
    transport.close()
    assert await reader.read() == b"".join(payload)
    writer.close()
    await writer.wait_closed()
