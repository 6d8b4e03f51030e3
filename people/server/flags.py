"""The ``people serve`` flags: one per setting, each also a ``PEOPLE_*`` variable."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from pathlib import Path

from people.rpc.defaults import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CALL_DURATION,
    DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_STREAMING_CALLS,
    DEFAULT_MAX_STREAMS_PER_CONNECTION,
    DEFAULT_REQUEST_TIMEOUT,
)
from people.server.settings import (
    DEFAULT_DATABASE,
    DEFAULT_HOST,
    DEFAULT_PORT,
    LOG_LEVELS,
    TRACING,
    Settings,
    workers_count,
)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare a flag for every setting; each defaults to None so the environment can fill it."""
    parser.add_argument("--host", help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument(
        "--database",
        help=f"sqlite:///FILE, postgresql://... or memory:// (default {DEFAULT_DATABASE})",
    )
    parser.add_argument(
        "--workers",
        type=workers_count,
        metavar="N|auto",
        help="server processes sharing the port (SO_REUSEPORT); auto: one per CPU (default 1)",
    )
    parser.add_argument(
        "--log-format", dest="log_format", choices=["text", "json"], help="log line format"
    )
    parser.add_argument(
        "--log-level",
        dest="log_level",
        choices=LOG_LEVELS,
        help="least severe level logged (default info); access lines follow --access-log alone",
    )
    parser.add_argument(
        "--access-log",
        dest="access_log",
        action=argparse.BooleanOptionalAction,
        help="write one log line per call (default on)",
    )
    observe = parser.add_argument_group("metrics and traces")
    observe.add_argument(
        "--metrics-address",
        dest="metrics_address",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: no metrics)",
    )
    observe.add_argument(
        "--tracing",
        dest="tracing",
        choices=TRACING,
        help="send OpenTelemetry traces (needs people[otel]; OTEL_* variables configure"
        " the exporter; default off)",
    )
    tls = parser.add_argument_group("TLS and authentication")
    tls.add_argument("--tls-cert", dest="tls_cert", type=Path, help="PEM certificate chain")
    tls.add_argument("--tls-key", dest="tls_key", type=Path, help="PEM private key")
    tls.add_argument(
        "--tls-client-ca",
        dest="tls_client_ca",
        type=Path,
        help="PEM CA bundle; clients must present a certificate it signed (mTLS)",
    )
    tls.add_argument(
        "--token-file",
        dest="token_file",
        type=Path,
        help="file of accepted bearer tokens, one per line",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-receive-message-bytes",
        dest="max_receive_message_bytes",
        type=int,
        help=f"largest request message accepted (default {DEFAULT_MAX_MESSAGE_BYTES})",
    )
    limits.add_argument(
        "--max-send-message-bytes",
        dest="max_send_message_bytes",
        type=int,
        help=f"largest response message sent (default {DEFAULT_MAX_MESSAGE_BYTES})",
    )
    limits.add_argument(
        "--grace-period",
        dest="grace_period",
        type=float,
        help=f"seconds running calls get to finish on shutdown (default {DEFAULT_GRACE_PERIOD})",
    )
    limits.add_argument(
        "--handshake-timeout",
        dest="handshake_timeout",
        type=float,
        help="seconds a new connection has to complete its TLS and HTTP/2 handshake"
        f" (default {DEFAULT_HANDSHAKE_TIMEOUT})",
    )
    limits.add_argument(
        "--idle-timeout",
        dest="idle_timeout",
        type=float,
        help=f"seconds a connection may stay without calls (default {DEFAULT_IDLE_TIMEOUT})",
    )
    limits.add_argument(
        "--max-connections",
        dest="max_connections",
        type=int,
        help=f"open connections at most (default {DEFAULT_MAX_CONNECTIONS})",
    )
    limits.add_argument(
        "--max-concurrent-calls",
        dest="max_concurrent_calls",
        type=int,
        help=f"calls handled at once; more wait briefly (default {DEFAULT_MAX_CONCURRENT_CALLS})",
    )
    limits.add_argument(
        "--max-streams-per-connection",
        dest="max_streams_per_connection",
        type=int,
        help="streams one connection may have open; one more is refused alone"
        f" (default {DEFAULT_MAX_STREAMS_PER_CONNECTION})",
    )
    limits.add_argument(
        "--max-streaming-calls",
        dest="max_streaming_calls",
        type=int,
        help="long-lived streaming calls (health Watch, reflection) at once, in slots of"
        f" their own (default {DEFAULT_MAX_STREAMING_CALLS})",
    )
    limits.add_argument(
        "--request-timeout",
        dest="request_timeout",
        type=float,
        help="seconds a call's request message may take to arrive after its headers"
        f" (default {DEFAULT_REQUEST_TIMEOUT:g})",
    )
    limits.add_argument(
        "--max-call-duration",
        dest="max_call_duration",
        type=float,
        help="seconds a unary call may run; a shorter client deadline wins; 0 for no limit"
        f" (default {DEFAULT_MAX_CALL_DURATION:g})",
    )
    limits.add_argument(
        "--max-connection-age",
        dest="max_connection_age",
        type=float,
        help="seconds (jittered by 10%%) after which a connection is drained with GOAWAY,"
        " so load balancers rebalance long-lived clients; 0 for never (default 0)",
    )
    limits.add_argument(
        "--read-cache",
        dest="read_cache",
        action=argparse.BooleanOptionalAction,
        help="keep encoded read answers until the store changes (default on)",
    )
    limits.add_argument(
        "--fast-lane",
        dest="fast_lane",
        action=argparse.BooleanOptionalAction,
        help="answer cached reads inside the connection's callback, and creates in one"
        " task, without grpclib's per-call machinery (default on)",
    )
    limits.add_argument(
        "--max-connection-age-grace",
        dest="max_connection_age_grace",
        type=float,
        help="seconds an aged connection's calls get before it is closed; 0 to wait for"
        " them (default 0)",
    )


def settings_from_arguments(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Combine parsed ``serve`` flags with ``PEOPLE_*`` variables; flags win.

    Raises:
        SettingsError: a value is malformed or out of range.
    """
    names = {field.name for field in dataclasses.fields(Settings)}
    return Settings.from_env(
        environ, **{name: value for name, value in vars(args).items() if name in names}
    )
