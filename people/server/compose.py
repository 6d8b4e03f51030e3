"""The composition root: settings and a store in, a configured gRPC server out.

Only this module builds object graphs: it wraps the store in the directory and
the people service, adds health checking and reflection, and puts them on the
hardened runtime with every limit the settings name. :mod:`people.server.process`
runs the result.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from grpclib.health.check import ServiceCheck, ServiceStatus
from grpclib.health.service import OVERALL, Health
from grpclib.health.v1 import health_pb2
from grpclib.reflection.service import ServerReflection

from people._gen.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from people.api.user_service import UserService
from people.domain.directory import UserDirectory
from people.domain.ports import UserStore
from people.rpc.auth import TokenAuth, TokenFileError, read_tokens
from people.rpc.observe import CallObserver
from people.rpc.policy import CallPolicy, ConnectionLimits
from people.rpc.server import RpcServer
from people.rpc.strict_codec import StrictCodec
from people.server.settings import Settings

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
    store: UserStore,
    settings: Settings,
    *,
    serving: ServiceStatus | None = None,
    on_cache_lookup: Callable[[bool], None] | None = None,
) -> list[object]:
    """Return every servicer a people server exposes, wired to ``store``.

    Args:
        store: Where users live.
        settings: Limits and the like.
        serving: When given, health reports NOT_SERVING while it is False (drain).
        on_cache_lookup: Told of every read-cache lookup (metrics).
    """
    user_service = UserService(
        UserDirectory(store),
        max_send_message_bytes=settings.max_send_message_bytes,
        on_cache_lookup=on_cache_lookup,
        read_cache=settings.read_cache,
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


def build_auth(settings: Settings) -> TokenAuth | None:
    """Return the bearer-token check ``settings.token_file`` asks for, or None without one.

    Raises:
        StartupError: the token file cannot be read or holds no token.
    """
    if settings.token_file is None:
        return None
    try:
        return TokenAuth(read_tokens(settings.token_file))
    except TokenFileError as exc:
        raise StartupError(str(exc)) from None


def build_server(
    services: list[object],
    settings: Settings,
    *,
    auth: TokenAuth | None = None,
    observers: tuple[CallObserver, ...] = (),
) -> RpcServer:
    """Return a server for ``services`` with every limit in ``settings`` applied.

    Args:
        services: The servicers to expose.
        settings: Limits, and the token file when ``auth`` is not given.
        auth: The token check to install (the caller keeps it to reload it);
            by default one is built from ``settings.token_file``.
        observers: What watches calls besides the access log (metrics, traces).

    Raises:
        StartupError: the token file cannot be read or holds no token.
    """
    policy = CallPolicy(
        max_receive_message_bytes=settings.max_receive_message_bytes,
        max_concurrent_calls=settings.max_concurrent_calls,
        max_streaming_calls=settings.max_streaming_calls,
        request_timeout=settings.request_timeout,
        max_call_duration=settings.max_call_duration or None,
    )
    limits = ConnectionLimits(
        max_streams=settings.max_streams_per_connection,
        handshake_timeout=settings.handshake_timeout,
        idle_timeout=settings.idle_timeout,
        max_age=settings.max_connection_age or None,
        max_age_grace=settings.max_connection_age_grace or None,
    )
    codec = StrictCodec(_descriptor_pool(), max_send_message_bytes=settings.max_send_message_bytes)
    server = RpcServer(
        services,
        codec=codec,
        policy=policy,
        limits=limits,
        max_connections=settings.max_connections,
        observers=observers,
        fast_lane=settings.fast_lane,
    )
    if auth is None:
        auth = build_auth(settings)
    if auth is not None:
        server.auth = auth
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
