"""The access log: exactly one record per call on the ``people.access`` logger.

A record carries the call's method, status, duration and peer, the name of
the token that authenticated it and its trace id when there are such, and
never its request, response or credentials. Its fields travel as
``record.access`` too, so a structured formatter can write them as keys.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from people.rpc.observe import CallRecord, NullObserver

access_log = logging.getLogger("people.access")

#: Fields of an access record, in the order they are written (the last two when known).
ACCESS_FIELDS = ("method", "status", "code", "duration_ms", "peer", "caller", "trace_id")


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "-" if peer is None else str(peer)


def log_call(record: CallRecord) -> None:
    """Write the access-log line for a finished call."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    status = record.final_status
    fields: dict[str, object] = {
        "method": record.method,
        "status": status.name,
        "code": status.value,
        "duration_ms": round((time.monotonic() - record.start) * 1000, 3),
        "peer": _peer(record.peer),
    }
    line = "%s %s %.3fms %s"
    values: list[object] = [fields["method"], fields["status"], fields["duration_ms"]]
    values.append(fields["peer"])
    for name in ("caller", "trace_id"):
        value = getattr(record, name)
        if value is not None:
            fields[name] = value
            line += f" {name}=%s"
            values.append(value)
    access_log.info(line, *values, extra={"access": fields})


class AccessLog(NullObserver):
    """The observer that writes the access log."""

    def call_finished(self, record: CallRecord) -> None:
        """Log the call's line."""
        log_call(record)
