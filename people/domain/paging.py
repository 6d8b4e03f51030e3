"""Pages of a listing, and the signed tokens that resume one (AIP-158).

A page token names where the previous page ended: the sort key of its last
user (its ``create_time``, ``update_time``, folded name or folded email, as the
listing's order says) and its id. It is signed with HMAC-SHA256 under the
store's own secret (:meth:`people.domain.ports.UserStore.signing_key`), so a
token is accepted by every process sharing the database, across restarts, and
by nothing else: one that was altered, forged or issued for another database is
refused.

A token is also bound to its listing's filter and order (their
:attr:`~people.domain.query.Query.binding`): reused with another filter or
order, it is refused. A token of the unfiltered listing in creation order keeps
the form it had before filters existed, ``[create_time, id]``, so tokens issued
then still resume it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime

from people.domain.errors import InvalidField
from people.domain.model import User
from people.domain.ports import Cursor
from people.domain.query import DEFAULT_QUERY, Query, SortValue

#: Bytes of the HMAC kept in a token: 128 bits cannot be guessed.
_MAC_BYTES = 16
_INVALID_REASON = "is not a token this server issued; start from page one"
_OTHER_QUERY_REASON = (
    "was issued for another filter or order_by; send the same ones again, or start from page one"
)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``next_page_token`` is empty on the last page."""

    users: list[User]
    next_page_token: str
    #: The filter and order the page was listed with.
    query: Query = field(default=DEFAULT_QUERY)


class PageTokens:
    """Issues and checks page tokens under one secret key.

    Args:
        key: The store's signing key.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def after(self, last: User, query: Query = DEFAULT_QUERY) -> str:
        """A token that resumes the listing ``query`` describes after ``last``."""
        value = query.order.key(last)
        shown = value.isoformat() if isinstance(value, datetime) else value
        fields: list[str] = [shown, last.id]
        if not query.is_default:
            fields.append(query.binding)
        data = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._mac(data) + data).decode().rstrip("=")

    def cursor(self, token: str, query: Query = DEFAULT_QUERY) -> Cursor:
        """Where the page a token resumes starts, in the listing ``query`` describes.

        Raises:
            InvalidField: the token is malformed, altered, signed with another
                key, or issued for another filter or order.
        """
        invalid = InvalidField("page_token", _INVALID_REASON)
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise invalid from None
        mac, data = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(data)):
            raise invalid
        # Only tokens we signed get this far, but they are parsed defensively all the same.
        try:
            fields = json.loads(data)
        except (ValueError, RecursionError):
            raise invalid from None
        if not isinstance(fields, list) or len(fields) not in (2, 3):
            raise invalid
        binding = fields[2] if len(fields) == 3 else None
        if binding != (None if query.is_default else query.binding):
            raise InvalidField("page_token", _OTHER_QUERY_REASON)
        shown, user_id = fields[0], fields[1]
        if not isinstance(shown, str) or not isinstance(user_id, str):
            raise invalid
        value: SortValue = shown
        if query.order.field in ("create_time", "update_time"):
            try:
                value = datetime.fromisoformat(shown)
            except ValueError:
                raise invalid from None
            if value.tzinfo is None:
                raise invalid
        return (value, user_id)

    def first(self, page: Page, count: int) -> Page:
        """The first ``count`` users of ``page``, with a token that resumes after them."""
        if count >= len(page.users):
            return page
        kept = page.users[:count]
        return Page(kept, self.after(kept[-1], page.query), page.query)

    def _mac(self, data: bytes) -> bytes:
        return hmac.digest(self._key, data, hashlib.sha256)[:_MAC_BYTES]
