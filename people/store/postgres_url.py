"""The options people reads itself from a PostgreSQL URL's query string.

Kept apart from :mod:`people.store.postgres`: parsing the URL is plain text
work, done before any connection, and the rest of the URL goes to asyncpg as is.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from people.domain.errors import InvalidField

#: URL query parameters people reads itself; the rest go to asyncpg.
POOL_SIZE_PARAMETER = "pool_size"
STATEMENT_CACHE_PARAMETER = "statement_cache_size"


def split_options(url: str) -> tuple[str, dict[str, int]]:
    """Take people's own options out of a database URL's query string.

    Raises:
        InvalidField: an option is not a non-negative integer.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidField("database", f"not a usable PostgreSQL URL: {exc}") from exc
    kept: list[tuple[str, str]] = []
    options: dict[str, int] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in (POOL_SIZE_PARAMETER, STATEMENT_CACHE_PARAMETER):
            kept.append((key, value))
            continue
        if not value.isascii() or not value.isdigit():
            raise InvalidField("database", f"{key} must be a whole number, not {value!r}")
        options[key] = int(value)
    if options.get(POOL_SIZE_PARAMETER, 1) < 1:
        raise InvalidField("database", f"{POOL_SIZE_PARAMETER} must be at least 1")
    if not options:
        return url, options
    return urlunsplit(parts._replace(query=urlencode(kept))), options
