"""What every call on one server shares: its limits, the handler slots, the running calls."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from people.rpc.defaults import (
    DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_QUEUE_TIMEOUT,
)


@dataclass
class CallPolicy:
    """Limits shared by every call on a server, and the state that enforces them.

    Args:
        max_receive_message_bytes: Larger requests are refused before they are read.
        max_concurrent_calls: Handlers running at once; later calls queue.
        queue_timeout: How long a queued call waits before RESOURCE_EXHAUSTED.
    """

    max_receive_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT
    #: Running calls and whether each is unary (drain waits only for those).
    running: dict[asyncio.Task[None], bool] = field(default_factory=dict)
    _slots: asyncio.Semaphore | None = None

    @property
    def slots(self) -> asyncio.Semaphore:
        """The handler slots, created on first use inside the running loop."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent_calls)
        return self._slots

    def unary_calls(self) -> set[asyncio.Task[None]]:
        """Running calls that end by themselves (not long-lived streams)."""
        return {task for task, unary in self.running.items() if unary and not task.done()}
