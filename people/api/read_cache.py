"""Encoded answers kept while the store says nothing has changed, each computed once.

The store's change token (:meth:`people.domain.ports.UserStore.change_token`) moves
on every committed write, from any process sharing the database. Answers are
filed under the token that was current *before* their data was read, so an
answer is never older than the last write its reader could have seen.
Invalidation is coarse on purpose: one write retires every answer, which is
always correct and cheap to reason about.

**Which token is newest.** Tokens are opaque: the cache only ever compares them
for equality, never for order. It needs no more, because every token is read on
the one event loop, and a caller looks its token up (:meth:`ReadCache.get`,
:meth:`ReadCache.fetch`) in the same loop step that read it, with no ``await``
in between (SQLite and the memory store read theirs without suspending). So the
cache sees tokens in the order they were read, and the latest token looked up
is the newest. From that:

- An answer is kept only if its token is the latest one looked up. Its caller
  looked the token up before computing it, so a different latest token was
  read *later*: a write may have landed in between, and the answer is dropped.
  It is never stored and never evicts the answers kept under the newer token.
  (A slow miss started under T1 that ends after another call kept answers under
  T2 therefore changes nothing.)
- The kept answers belong to one token; storing the first answer under a newer
  token empties them.
- A cache that has looked up no token yet takes the token of its first put.
- ``None`` (the store cannot tell when it changed) is never looked up, kept or shared.

**Single flight.** Concurrent misses for one key under one token share one
computation, run as a task: the store is read once however many calls wait.
The task keeps its answer (under the rule above) before any waiter resumes.
Waiters await it through :func:`asyncio.shield`, so a cancelled waiter (its
client went away) leaves the computation running for the others; if every
waiter goes, it still runs to its end, which is one bounded store read. If it
fails, every waiter gets the same exception and nothing is kept. A caller
under a newer token never joins an older computation: it starts its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sized
from functools import partial
from typing import Generic, TypeVar

V = TypeVar("V", bound=Sized)

#: Bytes of answers one cache holds at most: GetAllUsers' largest answer (the
#: 4 MiB send limit) plus thousands of single users, well inside a worker's budget.
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
#: Answers one cache holds at most, however small: an empty page is 0 bytes, and
#: distinct filters can ask for any number of them.
DEFAULT_MAX_ENTRIES = 20_000

_Flight = tuple[Hashable, Hashable]


class ReadCache(Generic[V]):
    """A size-bounded map from request keys to answers, valid for the newest change token.

    Args:
        max_bytes: The sum of ``len(answer)`` kept at most; the oldest entries
            go first when it is exceeded.
        max_entries: The number of answers kept at most, oldest out first.
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        *,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._on_lookup = on_lookup
        #: The latest token looked up, hence the newest (see the module docstring).
        self._latest: Hashable | None = None
        #: The token the kept entries were filed under: the latest, or an older one
        #: until the first answer under the latest is stored.
        self._filed_under: Hashable | None = None
        self._entries: dict[Hashable, V] = {}
        self._bytes = 0
        #: Computations running now, by (token, key); each removes itself when done.
        self._flights: dict[_Flight, asyncio.Task[V]] = {}

    async def fetch(
        self, token: Hashable | None, key: Hashable, compute: Callable[[], Awaitable[V]]
    ) -> V:
        """The answer for ``key``: kept, shared with a computation under way, or computed now.

        ``token`` must have been read in this loop step (no ``await`` since), so
        that the cache sees tokens in the order they were read.

        Raises:
            Exception: whatever ``compute`` raised; every caller that shared the
                computation gets the same exception object.
        """
        if token is None:
            self._looked_up(hit=False)
            return await compute()
        kept = self.get(token, key)
        self._looked_up(hit=kept is not None)
        if kept is not None:
            return kept
        flight = self._flights.get((token, key))
        if flight is None:
            flight = asyncio.create_task(self._compute_and_keep(token, key, compute))
            self._flights[token, key] = flight
            flight.add_done_callback(partial(self._landed, (token, key)))
        # shield: cancelling this caller must not cancel the others' computation.
        return await asyncio.shield(flight)

    def peek(self, token: Hashable | None, key: Hashable) -> V | None:
        """The kept answer, or None without computing anything (the fast lane's lookup).

        A hit counts as a lookup; a miss does not, since the caller then
        :meth:`fetch` es, which counts it.
        """
        kept = self.get(token, key)
        if kept is not None:
            self._looked_up(hit=True)
        return kept

    def _looked_up(self, *, hit: bool) -> None:
        if self._on_lookup is not None:
            self._on_lookup(hit)

    def get(self, token: Hashable | None, key: Hashable) -> V | None:
        """The answer kept for ``key`` under ``token``; None otherwise.

        Looking ``token`` up makes it the latest (newest) token the cache has seen.
        """
        if token is None:
            return None
        self._latest = token
        if token != self._filed_under:
            return None
        return self._entries.get(key)

    def put(self, token: Hashable | None, key: Hashable, answer: V) -> None:
        """Keep ``answer`` for ``key``, read after the store reported ``token``.

        Dropped unless ``token`` is the latest token looked up: the answer may
        predate a write (see the module docstring).
        """
        if token is None:
            return
        if self._latest is None:
            self._latest = token
        if token != self._latest:
            return
        if token != self._filed_under:
            self.clear()
            self._filed_under = token
        size = len(answer)
        if size > self._max_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self._bytes -= len(previous)
        while self._entries and (
            self._bytes + size > self._max_bytes or len(self._entries) >= self._max_entries
        ):
            oldest = next(iter(self._entries))
            self._bytes -= len(self._entries.pop(oldest))
        self._entries[key] = answer
        self._bytes += size

    def clear(self) -> None:
        """Forget every kept entry (computations under way finish and keep theirs)."""
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def _compute_and_keep(
        self, token: Hashable, key: Hashable, compute: Callable[[], Awaitable[V]]
    ) -> V:
        answer = await compute()
        self.put(token, key, answer)
        return answer

    def _landed(self, flight_key: _Flight, flight: asyncio.Task[V]) -> None:
        if self._flights.get(flight_key) is flight:
            del self._flights[flight_key]
        if not flight.cancelled():
            # Mark a failure retrieved: when every waiter has gone, nobody is
            # left to see it, and asyncio would log it as never retrieved.
            flight.exception()
