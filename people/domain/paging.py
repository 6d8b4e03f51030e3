"""Pages of a listing, and the signed tokens that resume one (AIP-158).

A page token names where the previous page ended: the ``(create_time, id)`` of
its last user. It is signed with HMAC-SHA256 under the store's own secret
(:meth:`people.domain.ports.UserStore.signing_key`), so a token is accepted by
every process sharing the database, across restarts, and by nothing else: one
that was altered, forged or issued for another database is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime

from people.domain.errors import InvalidField
from people.domain.model import User
from people.domain.ports import Cursor

#: Bytes of the HMAC kept in a token: 128 bits cannot be guessed.
_MAC_BYTES = 16
_INVALID_REASON = "is not a token this server issued; start from page one"


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``next_page_token`` is empty on the last page."""

    users: list[User]
    next_page_token: str


class PageTokens:
    """Issues and checks page tokens under one secret key.

    Args:
        key: The store's signing key.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def after(self, last: User) -> str:
        """A token that resumes a listing after ``last``."""
        payload = json.dumps([last.create_time.isoformat(), last.id], separators=(",", ":"))
        data = payload.encode()
        return base64.urlsafe_b64encode(self._mac(data) + data).decode().rstrip("=")

    def cursor(self, token: str) -> Cursor:
        """Where the page a token resumes starts.

        Raises:
            InvalidField: the token is malformed, altered, or signed with another key.
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
            created, user_id = json.loads(data)
            moment = datetime.fromisoformat(created)
        except (ValueError, TypeError, RecursionError):
            raise invalid from None
        if not isinstance(user_id, str) or moment.tzinfo is None:
            raise invalid
        return (moment, user_id)

    def first(self, page: Page, count: int) -> Page:
        """The first ``count`` users of ``page``, with a token that resumes after them."""
        if count >= len(page.users):
            return page
        kept = page.users[:count]
        return Page(users=kept, next_page_token=self.after(kept[-1]))

    def _mac(self, data: bytes) -> bytes:
        return hmac.digest(self._key, data, hashlib.sha256)[:_MAC_BYTES]
