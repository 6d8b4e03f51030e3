"""The server process: open the store, serve until a signal, then drain and close.

Everything :func:`serve` opens is closed by one :class:`contextlib.AsyncExitStack`,
in reverse order. SIGHUP reloads the token file and the TLS files
(:mod:`people.server.reload`) while the server keeps serving.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from grpclib.health.check import ServiceStatus

from people.domain.errors import PeopleError
from people.rpc.accesslog import access_log
from people.server.compose import StartupError, build_auth, build_server, build_services
from people.server.instruments import open_instruments
from people.server.logs import SAFE, redact_url
from people.server.reload import Reloader, open_tls
from people.server.settings import Settings
from people.server.sockets import address, bind
from people.store import open_store

log = logging.getLogger("people.server")


async def serve(settings: Settings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Run a server until SIGINT or SIGTERM, then shut it down cleanly; reload on SIGHUP.

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
        instruments = open_instruments(settings)
        stack.callback(instruments.close)
        try:
            store = instruments.wrap(await open_store(settings.database))
        except PeopleError as exc:
            raise StartupError(str(exc)) from None
        stack.push_async_callback(store.aclose)
        if instruments.user_count is not None:
            await instruments.user_count.count()
            stack.callback(instruments.user_count.close)  # before the store closes

        serving = ServiceStatus()
        serving.set(True)
        auth = build_auth(settings)
        services = build_services(
            store, settings, serving=serving, on_cache_lookup=instruments.on_cache_lookup
        )
        server = build_server(services, settings, auth=auth, observers=instruments.observers)
        tls = open_tls(settings)
        # One of several worker processes (people.workers) shares the port.
        try:
            sock = bind(settings.host, settings.port, reuse_port=settings.workers > 1)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
            ) from None
        stack.callback(sock.close)
        await server.start_on(sock, ssl=None if tls is None else tls.listening)
        # Under --workers the parent serves every worker's metrics (people.server.workers).
        if instruments.registry is not None and settings.workers == 1:
            stack.callback(_serve_metrics(settings, instruments.registry))

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
            stack.callback(loop.remove_signal_handler, signum)
        loop.add_signal_handler(signal.SIGHUP, Reloader(settings, auth=auth, tls=tls).reload)
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        # A worker (people.server.workers) starts with SIGHUP blocked, so one sent
        # before this point waits for the handler instead of killing it; elsewhere
        # this changes nothing.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGHUP])

        where = address(sock)
        log.info(
            "people serving on %s (database %s)",
            where,
            redact_url(settings.database),
            extra={SAFE: True},
        )
        if on_ready is not None:
            on_ready(where)
        # Everything made so far lives as long as the server: keep it out of
        # every garbage collection pass from now on (it was ~10 ms a pass).
        gc.freeze()
        try:
            await stopping.wait()
        finally:
            log.info("people draining (grace period %gs)", settings.grace_period)
            serving.set(False)
            await server.drain(settings.grace_period)
        log.info("people stopped")


def _serve_metrics(settings: Settings, registry: Any) -> Callable[[], None]:
    """Serve ``registry`` at the metrics address; return what stops it.

    Raises:
        StartupError: the address cannot be listened on.
    """
    from people.server.metrics import serve_metrics

    assert settings.metrics_address is not None
    try:
        return serve_metrics(settings.metrics_address, registry)
    except OSError as exc:
        raise StartupError(
            f"cannot serve metrics on {settings.metrics_address}: {exc.strerror or exc}"
        ) from None
