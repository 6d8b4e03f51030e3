"""Encoded answers kept while the store says nothing has changed.

The store's change token (:meth:`people.domain.ports.UserStore.change_token`) moves
on every committed write, from any process sharing the database. Entries are
filed under the token that was current *before* their data was read, and the
whole cache is emptied when the token moves, so an entry is never older than
the last write its reader could have seen. Invalidation is coarse on purpose:
one write empties everything, which is always correct and cheap to reason about.
"""

from __future__ import annotations

from collections.abc import Hashable, Sized
from typing import Generic, TypeVar

V = TypeVar("V", bound=Sized)

#: Bytes of answers one cache holds at most: GetAllUsers' largest answer (the
#: 4 MiB send limit) plus thousands of single users, well inside a worker's budget.
DEFAULT_MAX_BYTES = 8 * 1024 * 1024


class ReadCache(Generic[V]):
    """A size-bounded map from request keys to answers, valid for one change token.

    Args:
        max_bytes: The sum of ``len(answer)`` kept at most; the oldest entries
            go first when it is exceeded.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._token: Hashable | None = None
        self._entries: dict[Hashable, V] = {}
        self._bytes = 0

    def get(self, token: Hashable | None, key: Hashable) -> V | None:
        """The answer for ``key`` if it was stored under ``token``; None otherwise."""
        if token is None or token != self._token:
            return None
        return self._entries.get(key)

    def put(self, token: Hashable | None, key: Hashable, answer: V) -> None:
        """Keep ``answer`` for ``key``, read after the store reported ``token``."""
        if token is None:
            return
        if token != self._token:
            self.clear()
            self._token = token
        size = len(answer)
        if size > self._max_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self._bytes -= len(previous)
        while self._entries and self._bytes + size > self._max_bytes:
            oldest = next(iter(self._entries))
            self._bytes -= len(self._entries.pop(oldest))
        self._entries[key] = answer
        self._bytes += size

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)
