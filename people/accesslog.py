"""Logs that help operators and leak nothing: one access line per call, text or JSON.

Every call ends in exactly one record on the ``people.access`` logger with its
method, status, duration and peer, and never its request or response. The
formatters installed by :func:`configure_logging` also mask anything shaped like
an email address, wherever it came from (an exception message, a library), so a
user's address cannot reach a log file by accident. Tokens are never logged by
people at all.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

from grpclib.const import Status

access_log = logging.getLogger("people.access")

#: Anything that looks like an email address, masked in every log line.
EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+")
EMAIL_MASK = "<email>"
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


def redact(text: str) -> str:
    """Mask email addresses in ``text``."""
    # Most lines hold no "@"; the membership test is far cheaper than the regex.
    return EMAIL.sub(EMAIL_MASK, text) if "@" in text else text


class TextFormatter(logging.Formatter):
    """The classic one-line format, with email addresses masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Format as usual, then mask."""
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; access records carry their fields as keys."""

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as a JSON line, with email addresses masked."""
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            line.update(access)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # Mask the values, not the encoded line: a mask that swallowed the backslash
        # of an escaped quote would leave a line that is no longer JSON.
        masked = {
            key: redact(value) if isinstance(value, str) else value for key, value in line.items()
        }
        return json.dumps(masked, ensure_ascii=False)


def configure_logging(log_format: Literal["text", "json"] = "text", *, access: bool = True) -> None:
    """Send INFO and above to stderr in ``log_format``; ``access=False`` silences access lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    access_log.setLevel(logging.INFO if access else logging.WARNING)
