"""The composition root: settings in, a running gRPC server out.

Only this module builds object graphs: it opens the store, wraps it in the
directory and the API, adds health checking and reflection, binds the socket
and runs until SIGINT or SIGTERM. Everything it opens is closed by one
:class:`contextlib.AsyncExitStack`, in reverse order.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
import ssl
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from grpclib.health.check import ServiceCheck, ServiceStatus
from grpclib.health.service import OVERALL, Health
from grpclib.health.v1 import health_pb2
from grpclib.reflection.service import ServerReflection

from people._gen.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from people.accesslog import access_log
from people.api import UserService
from people.auth import TokenAuth, TokenFileError, read_tokens
from people.calls import CallPolicy
from people.codec import StrictCodec
from people.config import Settings
from people.service import UserDirectory
from people.store import UserStore, open_store
from people.tls import server_context
from people.transport import PeopleServer

log = logging.getLogger("people.server")

#: How long a health answer may be reused before the store is asked again.
HEALTH_CHECK_TTL = 1.0
HEALTH_CHECK_TIMEOUT = 2.0


def _descriptor_pool() -> Any:
    """The pool reflection reads: the generated people.proto plus the health service's file."""
    pool = default_google_proto_descriptor_pool
    try:
        pool.FindFileByName(health_pb2.DESCRIPTOR.name)
    except KeyError:
        pool.AddSerializedFile(health_pb2.DESCRIPTOR.serialized_pb)
    return pool


def build_services(
    store: UserStore, settings: Settings, *, serving: ServiceStatus | None = None
) -> list[object]:
    """Return every servicer a people server exposes, wired to ``store``.

    Args:
        store: Where users live.
        settings: Limits and the like.
        serving: When given, health reports NOT_SERVING while it is False (drain).
    """
    user_service = UserService(
        UserDirectory(store), max_send_message_bytes=settings.max_send_message_bytes
    )

    async def store_answers() -> bool:
        return await store.ping()

    check = ServiceCheck(
        store_answers, check_ttl=HEALTH_CHECK_TTL, check_timeout=HEALTH_CHECK_TIMEOUT
    )
    draining: list[Any] = [] if serving is None else [serving]
    # The whole server ("") reflects only the drain, not the database: a liveness
    # probe on "" must not restart every replica because the database is down.
    # Readiness belongs on people.UserService, which also follows the store.
    health = Health({user_service: [check, *draining], OVERALL: draining})
    return list(ServerReflection.extend([user_service, health], pool=_descriptor_pool()))


class StartupError(Exception):
    """The server cannot start as configured; the message says what to fix."""


def build_server(services: list[object], settings: Settings) -> PeopleServer:
    """Return a server for ``services`` with every limit in ``settings`` applied."""
    policy = CallPolicy(
        max_receive_message_bytes=settings.max_receive_message_bytes,
        max_concurrent_calls=settings.max_concurrent_calls,
    )
    codec = StrictCodec(_descriptor_pool(), max_send_message_bytes=settings.max_send_message_bytes)
    server = PeopleServer(
        services,
        codec=codec,
        policy=policy,
        max_connections=settings.max_connections,
        handshake_timeout=settings.handshake_timeout,
        idle_timeout=settings.idle_timeout,
    )
    if settings.token_file is not None:
        try:
            tokens = read_tokens(settings.token_file)
        except TokenFileError as exc:
            raise StartupError(str(exc)) from None
        TokenAuth(tokens).install(server)
        if not settings.tls and not _is_loopback(settings.host):
            log.warning(
                "bearer tokens are enabled without TLS on %s: tokens cross the network in"
                " clear text; use --tls-cert and --tls-key",
                settings.host,
            )
    return server


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


async def serve(settings: Settings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Run a server until SIGINT or SIGTERM, then shut it down cleanly.

    Args:
        settings: What to serve and where.
        on_ready: Called with ``host:port`` once the socket accepts calls.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    access_log.setLevel(logging.INFO if settings.access_log else logging.WARNING)
    async with AsyncExitStack() as stack:
        store = await open_store(settings.database)
        stack.push_async_callback(store.aclose)

        serving = ServiceStatus()
        serving.set(True)
        server = build_server(build_services(store, settings, serving=serving), settings)
        tls = _tls_context(settings)
        # One of several worker processes (people.workers) shares the port.
        try:
            sock = bind(settings.host, settings.port, reuse_port=settings.workers > 1)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
            ) from None
        stack.callback(sock.close)
        await server.start_on(sock, ssl=tls)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
            stack.callback(loop.remove_signal_handler, signum)

        address = _address(sock)
        log.info("people serving on %s (database %s)", address, _redact(settings.database))
        if on_ready is not None:
            on_ready(address)
        try:
            await stopping.wait()
        finally:
            log.info("people draining (grace period %gs)", settings.grace_period)
            serving.set(False)
            await server.drain(settings.grace_period)
        log.info("people stopped")


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    try:
        return server_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    except ssl.SSLError as exc:
        files = (settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        named = ", ".join(str(path) for path in files if path is not None)
        raise StartupError(f"cannot use the TLS files {named}: {exc}") from None
    except OSError as exc:
        raise StartupError(f"cannot read TLS file {exc.filename}: {exc.strerror or exc}") from None


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
