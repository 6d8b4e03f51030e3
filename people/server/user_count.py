"""The ``people_users`` gauge: counted once at start, then again shortly after writes.

A scrape never counts: Prometheus may scrape often, and counting a million rows
each time would cost more than the calls it watches. Instead the process counts
once when it starts and, after any write it makes that can change the number
(add, batch add, remove), once more ``delay`` seconds later — one count for a
whole burst of writes, so a steady stream of creates costs one count per
``delay``. Counting the store rather than adding up this process's own writes
keeps the gauge true when other processes write to it too: under ``--workers``
the endpoint shows the most recent count any worker made.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from people.domain.errors import PeopleError
from people.domain.ports import UserStore

log = logging.getLogger("people.server")

#: Seconds from a write to the count that follows it.
RECOUNT_DELAY = 1.0


class UserCount:
    """Tells ``publish`` how many users ``store`` holds, at start and after writes.

    Args:
        store: The store to count.
        publish: Told each count.
        delay: Seconds from the first write of a burst to the count.
    """

    def __init__(
        self, store: UserStore, publish: Callable[[int], None], *, delay: float = RECOUNT_DELAY
    ) -> None:
        self._store = store
        self._publish = publish
        self._delay = delay
        self._timer: asyncio.TimerHandle | None = None
        self._counting: asyncio.Task[None] | None = None

    async def count(self) -> None:
        """Count now and publish; a store that fails leaves the last count in place."""
        try:
            found = await self._store.count()
        except PeopleError as error:
            # The store's failure is logged and answered where calls meet it;
            # here it only means the gauge keeps its last value a little longer.
            log.warning("could not count users (%s); people_users keeps its last count", error)
            return
        self._publish(found)

    def written(self) -> None:
        """A write may have changed the number: count ``delay`` seconds from now, once."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._start_count)

    def _start_count(self) -> None:
        self._timer = None
        if self._counting is None or self._counting.done():
            self._counting = asyncio.get_running_loop().create_task(self.count())
        else:
            # A slow count is still running: count again after it, not beside it.
            self.written()

    def close(self) -> None:
        """Stop counting (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counting is not None:
            self._counting.cancel()
