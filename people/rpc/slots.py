"""Waiting for a handler slot: counted as queued, refused after the queue timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from people.rpc.observe import CallObserver


@asynccontextmanager
async def held(
    slots: asyncio.Semaphore, *, queue_timeout: float, observer: CallObserver
) -> AsyncIterator[None]:
    """Hold one of ``slots``, waiting at most ``queue_timeout`` for it.

    Raises:
        GRPCError: RESOURCE_EXHAUSTED when no slot came free in time.
    """
    observer.queue_changed(1)
    try:
        await asyncio.wait_for(slots.acquire(), queue_timeout)
    except TimeoutError:
        observer.refused("cap")
        raise GRPCError(
            Status.RESOURCE_EXHAUSTED,
            "the server is busy, too many calls are running; retry later",
        ) from None
    finally:
        observer.queue_changed(-1)
    try:
        yield
    finally:
        slots.release()
