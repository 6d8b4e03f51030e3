"""A connection as the fast lane's deferred calls see it (:class:`people.rpc.deferred.LaneHost`).

A deferred call outlives the ``data_received`` that started it: it must find its
stream's h2 state, write its frames, wait for the peer to open a flow-control
window, and tell the connection when it ends. :class:`ConnectionLane` gives it
exactly that, and keeps the connection's deferred calls, so the connection can
count them as open streams, cancel one whose stream the client resets, and
cancel them all when it is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from people.rpc.internals import Connection, RefusingH2Connection


class ConnectionLane:
    """The deferred calls of one connection, and what they need of it.

    Args:
        connection: grpclib's connection (its write buffer and state).
        h2: h2's state of the connection.
        peer: The client's address.
        on_released: Told when a deferred call ends (the connection's idle clock
            and drain).
    """

    def __init__(
        self,
        connection: Connection,
        h2: RefusingH2Connection,
        peer: Any,
        on_released: Callable[[], None],
    ) -> None:
        #: Deferred calls in flight, by stream id.
        self.deferred: dict[int, asyncio.Task[None]] = {}
        self._connection = connection
        self._h2 = h2
        self._peer = peer
        self._on_released = on_released
        self._window_waiters: list[asyncio.Future[None]] = []

    @property
    def h2(self) -> RefusingH2Connection:
        """h2's state of the connection."""
        return self._h2

    @property
    def peer(self) -> Any:
        """The client's address."""
        return self._peer

    def is_closing(self) -> bool:
        """True once the connection is closing."""
        return self._connection.is_closing()

    def send_pending(self) -> None:
        """Write what h2 has queued."""
        self._connection.flush()

    def call_released(self) -> None:
        """A deferred call ended."""
        self._on_released()

    async def window_opened(self) -> None:
        """Return when the peer next opens a flow-control window or changes its settings."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._window_waiters.append(waiter)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._window_waiters.remove(waiter)

    def window_changed(self) -> None:
        """The peer opened a window or changed its settings: wake the calls waiting for one."""
        for waiter in self._window_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def reset(self, stream_id: int) -> None:
        """The client reset ``stream_id``: cancel its deferred call, if it has one."""
        task = self.deferred.get(stream_id)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        """The connection is gone: cancel every deferred call."""
        for task in list(self.deferred.values()):
            task.cancel()
