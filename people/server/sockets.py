"""Listening sockets: bound before the server starts, so port 0 has a real number."""

from __future__ import annotations

import socket


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Create the listening socket, so the real port is known even for port 0.

    Args:
        host: The address to listen on.
        port: The port, or 0 for any free one.
        reuse_port: Share the port with other processes that set it too
            (SO_REUSEPORT): the kernel spreads new connections across them.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that
    # say they are TCP, and with Nagle on every unary answer waits ~40 ms for an ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (but do not listen on) a SO_REUSEPORT socket, fixing the port for several workers.

    A bound socket that does not listen is never handed connections, so the
    port is held without taking any of the workers' load.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def address(sock: socket.socket) -> str:
    """``host:port`` (``[v6]:port``) a socket is bound to."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
