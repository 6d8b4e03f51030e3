"""The listening socket is set up so that asyncio can turn Nagle's algorithm off."""

from __future__ import annotations

import socket

from people.server.sockets import bind


class TestBind:
    def test_socket_declares_tcp(self) -> None:
        """bind() makes an IPPROTO_TCP socket: asyncio sets TCP_NODELAY only on those,
        and without it each unary answer stalls ~40 ms on delayed ACKs."""
        sock = bind("127.0.0.1", 0)
        try:
            assert sock.proto == socket.IPPROTO_TCP
        finally:
            sock.close()

    def test_accepted_connections_have_nodelay(self) -> None:
        """A connection accepted on the bound socket inherits the TCP protocol number."""
        sock = bind("127.0.0.1", 0)
        try:
            sock.setblocking(True)
            with socket.create_connection(sock.getsockname()[:2]):
                accepted, _ = sock.accept()
                with accepted:
                    assert accepted.proto == socket.IPPROTO_TCP
        finally:
            sock.close()
