"""The composition root: settings in, a running gRPC server out.

Only this module builds object graphs: it opens the store, wraps it in the
directory and the API, adds health checking and reflection, binds the socket
and runs until SIGINT or SIGTERM. Everything it opens is closed by one
:class:`contextlib.AsyncExitStack`, in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack

from grpclib.health.check import ServiceCheck
from grpclib.health.service import Health
from grpclib.health.v1 import health_pb2
from grpclib.reflection.service import ServerReflection
from grpclib.server import Server

from people._gen.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from people.api import UserService
from people.config import Settings
from people.service import UserDirectory
from people.store import UserStore, open_store

log = logging.getLogger("people.server")

#: How long a health answer may be reused before the store is asked again.
HEALTH_CHECK_TTL = 1.0
HEALTH_CHECK_TIMEOUT = 2.0


def _descriptor_pool() -> object:
    """The pool reflection reads: the generated people.proto plus the health service's file."""
    pool = default_google_proto_descriptor_pool
    try:
        pool.FindFileByName(health_pb2.DESCRIPTOR.name)
    except KeyError:
        pool.AddSerializedFile(health_pb2.DESCRIPTOR.serialized_pb)
    return pool


def build_services(store: UserStore, settings: Settings) -> list[object]:
    """Return every servicer a people server exposes, wired to ``store``."""
    user_service = UserService(
        UserDirectory(store), max_send_message_bytes=settings.max_send_message_bytes
    )

    async def store_answers() -> bool:
        return await store.ping()

    check = ServiceCheck(
        store_answers, check_ttl=HEALTH_CHECK_TTL, check_timeout=HEALTH_CHECK_TIMEOUT
    )
    health = Health({user_service: [check]})
    return list(ServerReflection.extend([user_service, health], pool=_descriptor_pool()))


def bind(host: str, port: int) -> socket.socket:
    """Create the listening socket, so the real port is known even for port 0."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def serve(settings: Settings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Run a server until SIGINT or SIGTERM, then shut it down cleanly.

    Args:
        settings: What to serve and where.
        on_ready: Called with ``host:port`` once the socket accepts calls.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        store = await open_store(settings.database)
        stack.push_async_callback(store.aclose)

        server = Server(build_services(store, settings))  # type: ignore[arg-type]
        sock = bind(settings.host, settings.port)
        stack.callback(sock.close)
        await server.start(sock=sock)
        stack.push_async_callback(_close, server)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
            stack.callback(loop.remove_signal_handler, signum)

        address = _address(sock)
        log.info("people serving on %s (database %s)", address, _redact(settings.database))
        if on_ready is not None:
            on_ready(address)
        await stopping.wait()
        log.info("people stopping")


async def _close(server: Server) -> None:
    server.close()
    await server.wait_closed()


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _redact(url: str) -> str:
    """Hide a password in a database URL before it is logged."""
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{location}"
