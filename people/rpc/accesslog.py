"""The access log: exactly one record per call on the ``people.access`` logger.

A record carries the call's method, status, duration and peer, and never its
request, response or credentials. Its fields travel as ``record.access`` too,
so a structured formatter can write them as keys.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from grpclib.const import Status

access_log = logging.getLogger("people.access")

#: Fields of an access record, in the order they are written.
ACCESS_FIELDS = ("method", "status", "code", "duration_ms", "peer")


@dataclass
class CallRecord:
    """What the access log says about one call; filled in as the call proceeds."""

    method: str
    peer: tuple[str, int] | Any | None
    start: float
    status: Status | None = None


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "-" if peer is None else str(peer)


def log_call(record: CallRecord) -> None:
    """Write the access-log line for a finished call."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    status = record.status if record.status is not None else Status.CANCELLED
    fields = {
        "method": record.method,
        "status": status.name,
        "code": status.value,
        "duration_ms": round((time.monotonic() - record.start) * 1000, 3),
        "peer": _peer(record.peer),
    }
    access_log.info(
        "%s %s %.3fms %s",
        fields["method"],
        fields["status"],
        fields["duration_ms"],
        fields["peer"],
        extra={"access": fields},
    )
