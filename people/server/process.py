"""The server process: open the store, serve until a signal, then drain and close.

Everything :func:`serve` opens is closed by one :class:`contextlib.AsyncExitStack`,
in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable
from contextlib import AsyncExitStack

from grpclib.health.check import ServiceStatus

from people.domain.errors import PeopleError
from people.rpc.accesslog import access_log
from people.rpc.tls import server_context
from people.server.compose import StartupError, build_server, build_services
from people.server.logs import SAFE, redact_url
from people.server.settings import Settings
from people.server.sockets import address, bind
from people.store import open_store

log = logging.getLogger("people.server")


async def serve(settings: Settings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Run a server until SIGINT or SIGTERM, then shut it down cleanly.

    Args:
        settings: What to serve and where.
        on_ready: Called with ``host:port`` once the socket accepts calls.

    Raises:
        StartupError: the server cannot start as configured (the database, the
            port, a TLS or token file); the message says what to fix.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    access_log.setLevel(logging.INFO if settings.access_log else logging.WARNING)
    async with AsyncExitStack() as stack:
        try:
            store = await open_store(settings.database)
        except PeopleError as exc:
            raise StartupError(str(exc)) from None
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

        where = address(sock)
        log.info(
            "people serving on %s (database %s)",
            where,
            redact_url(settings.database),
            extra={SAFE: True},
        )
        if on_ready is not None:
            on_ready(where)
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
