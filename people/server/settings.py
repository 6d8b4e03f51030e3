"""Settings: how a server is configured, read once from the environment and flags.

Nothing below this module reads ``os.environ``; the composition root receives a
frozen :class:`Settings` and passes the parts down. The command-line flags that
fill it are declared in :mod:`people.server.flags`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

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

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051
DEFAULT_DATABASE = "sqlite:///people.db"

LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
Tracing = Literal["off", "otlp", "console"]
TRACING: tuple[Tracing, ...] = ("off", "otlp", "console")
ENV_PREFIX = "PEOPLE_"


class SettingsError(ValueError):
    """A setting has a value people cannot use; the message names it."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything ``people serve`` can be told. Each field has a ``PEOPLE_<NAME>`` variable."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    database: str = DEFAULT_DATABASE
    workers: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    token_file: Path | None = None
    max_receive_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_send_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace_period: float = DEFAULT_GRACE_PERIOD
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS
    max_streams_per_connection: int = DEFAULT_MAX_STREAMS_PER_CONNECTION
    max_streaming_calls: int = DEFAULT_MAX_STREAMING_CALLS
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    #: 0: no limit but the client's deadline.
    max_call_duration: float = DEFAULT_MAX_CALL_DURATION
    #: 0: connections may live forever.
    max_connection_age: float = 0.0
    #: 0: after the age's GOAWAY, wait for the connection's calls however long they take.
    max_connection_age_grace: float = 0.0
    #: Answer cached reads inside the connection's callback, and creates in one
    #: task (people.rpc.fast_lane).
    fast_lane: bool = True
    #: Keep encoded read answers until the store changes (people.api.read_cache).
    read_cache: bool = True
    log_format: LogFormat = "text"
    log_level: LogLevel = "info"
    access_log: bool = True
    #: ``HOST:PORT`` to serve Prometheus metrics on, at /metrics; None: no metrics.
    metrics_address: str | None = None
    #: Where traces go (needs the ``otel`` extra); ``off``: nothing is traced.
    tracing: Tracing = "off"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port must be between 0 and 65535, not {self.port}")
        if self.workers < 1:
            raise SettingsError(f"workers must be at least 1, not {self.workers}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("tls_cert and tls_key must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise SettingsError("tls_client_ca needs tls_cert and tls_key")
        for name in ("max_receive_message_bytes", "max_send_message_bytes"):
            if getattr(self, name) < 1024:
                raise SettingsError(f"{name} must be at least 1024")
        for name in (
            "max_connections",
            "max_concurrent_calls",
            "max_streams_per_connection",
            "max_streaming_calls",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        for name in ("grace_period", "handshake_timeout", "idle_timeout", "request_timeout"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        for name in ("max_call_duration", "max_connection_age", "max_connection_age_grace"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative (0 means no limit)")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"log_format must be text or json, not {self.log_format!r}")
        if self.metrics_address is not None:
            host, colon, port = self.metrics_address.rpartition(":")
            if not colon or not host or not port.isdigit() or int(port) > 65535:
                raise SettingsError(
                    f"metrics_address must be HOST:PORT, not {self.metrics_address!r}"
                )
        if self.tracing not in TRACING:
            raise SettingsError(
                f"tracing must be one of {', '.join(TRACING)}, not {self.tracing!r}"
            )
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(
                f"log_level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}"
            )

    @property
    def tls(self) -> bool:
        """True when the server speaks TLS."""
        return self.tls_cert is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from ``PEOPLE_*`` variables, then apply explicit overrides.

        Overrides whose value is None are ignored, so parsed command-line flags
        can be passed straight through.

        Raises:
            SettingsError: a value is malformed or out of range.
        """
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None and raw != "":
                values[field.name] = _parse(field.name, field.type, raw)
        values.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return cls(**values)
        except TypeError as exc:
            raise SettingsError(str(exc)) from exc


def workers_count(raw: str) -> int:
    """A worker count: a number, or ``auto`` for one worker per CPU.

    Raises:
        ValueError: neither.
    """
    if raw.strip().lower() == "auto":
        return os.cpu_count() or 1
    return int(raw)


def _parse(name: str, kind: object, raw: str) -> object:
    try:
        if name == "workers":
            return workers_count(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        if kind == "Path | None":
            return Path(raw)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw
