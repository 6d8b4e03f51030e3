"""Log lines that help operators and leak nothing, as text or JSON.

The formatters installed by :func:`configure_logging` mask anything shaped like
an email address, wherever it came from (an exception message, a library), so a
user's address cannot reach a log file by accident. A record whose message
people built itself from values that are never user data (the ready line with
its redacted database URL) says so with ``extra={SAFE: True}`` and is written as
it is. Tokens and passwords are never logged at all.

Every timestamp is UTC, whatever the host's time zone: text lines keep the
classic ``2026-12-02 05:32:56,123``, JSON lines carry RFC 3339
``2026-12-02T05:32:56.123Z``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from typing import Any
from urllib.parse import unquote

from people.rpc.accesslog import access_log
from people.server.settings import LogFormat, LogLevel

#: Anything that looks like an email address, masked in every log line.
EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+")
EMAIL_MASK = "<email>"
#: ``extra`` key of a record whose message holds no user data, so nothing in it is masked.
SAFE = "people_safe"
#: Query parameters of a database URL whose values are secrets (libpq's names).
SECRET_URL_PARAMETERS = frozenset({"password", "sslpassword"})
REDACTED = "***"


def redact(text: str) -> str:
    """Mask email addresses in ``text``."""
    # Most lines hold no "@"; the membership test is far cheaper than the regex.
    return EMAIL.sub(EMAIL_MASK, text) if "@" in text else text


def redact_url(url: str) -> str:
    """``url`` with its password and secret query parameters replaced by ``***``.

    ``postgresql://ada:pw@db/people?sslpassword=x`` becomes
    ``postgresql://ada:***@db/people?sslpassword=***``; everything else is kept
    as written.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    location, question, query = rest.partition("?")
    authority, slash, path = location.partition("/")
    credentials, at, hosts = authority.rpartition("@")
    if at and ":" in credentials:
        authority = f"{credentials.split(':', 1)[0]}:{REDACTED}@{hosts}"
    pieces = []
    for piece in query.split("&") if question else []:
        name, equals, _ = piece.partition("=")
        secret = unquote(name).strip().lower() in SECRET_URL_PARAMETERS
        pieces.append(f"{name}={REDACTED}" if secret and equals else piece)
    return f"{scheme}://{authority}{slash}{path}{question}{'&'.join(pieces)}"


def _is_safe(record: logging.LogRecord) -> bool:
    return getattr(record, SAFE, False) is True


class TextFormatter(logging.Formatter):
    """The classic one-line format (time in UTC), with email addresses masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        """Format as usual, then mask (unless the record is marked safe)."""
        text = super().format(record)
        return text if _is_safe(record) else redact(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; access records carry their fields as keys."""

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as a JSON line, with email addresses masked."""
        line: dict[str, Any] = {
            "time": rfc3339(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            line.update(access)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if not _is_safe(record):
            # Mask the values, not the encoded line: a mask that swallowed the backslash
            # of an escaped quote would leave a line that is no longer JSON.
            line = {
                key: redact(value) if isinstance(value, str) else value
                for key, value in line.items()
            }
        return json.dumps(line, ensure_ascii=False)


def rfc3339(record: logging.LogRecord) -> str:
    """When ``record`` was made, in UTC to the millisecond: ``2026-12-02T05:32:56.123Z``."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class TurnBufferedHandler(logging.StreamHandler):  # type: ignore[type-arg] # TextIO stream
    """A stream handler that writes its lines once per event-loop turn.

    Busy servers write thousands of access lines a second; one ``write`` and
    ``flush`` each cost more than the rest of a cached read. Lines formatted
    during one turn of the running loop go out together at its end (in order);
    outside a running loop, and on close, they are written at once.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the formatted line; the first of a turn schedules the write."""
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        if len(self._lines) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop running: nothing would call us back
                self.flush()

    def flush(self) -> None:
        """Write what is queued, then flush the stream."""
        self.acquire()
        try:
            if self._lines:
                lines, self._lines = self._lines, []
                self.stream.write("".join(lines))
            self.stream.flush()
        finally:
            self.release()


def configure_logging(
    log_format: LogFormat = "text", *, access: bool = True, level: LogLevel = "info"
) -> None:
    """Send ``level`` and above to stderr in ``log_format``.

    The per-call access lines follow ``access`` alone, whatever ``level`` says.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Access lines take a handler of their own, writing once per loop turn.
    for old in list(access_log.handlers):
        access_log.removeHandler(old)
        old.close()
    buffered = TurnBufferedHandler(sys.stderr)
    buffered.setFormatter(handler.formatter)
    access_log.addHandler(buffered)
    access_log.propagate = False
    access_log.setLevel(logging.INFO if access else logging.WARNING)
