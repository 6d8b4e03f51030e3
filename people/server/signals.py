"""Signals as bytes on a socket, so a process can wait for them beside anything else.

A Python signal handler runs between two bytecodes of whatever the main thread
was doing; one that logs can interrupt a log line half-written to a buffered
stream and fail. :class:`SignalSocket` installs handlers that do nothing and
lets the interpreter's C-level handler write each signal's number to a socket
(:func:`signal.set_wakeup_fd`), which the process reads in its own loop.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from types import FrameType, TracebackType


class SignalSocket:
    """Signals delivered as bytes on a socket, for a wait to watch.

    While installed, ``signals`` run a Python handler that does nothing; the
    interpreter's own C-level handler writes each signal's number to the socket.

    Args:
        signals: The signals to catch this way.
    """

    def __init__(self, signals: tuple[int, ...]) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)
        self._handlers = {signum: signal.signal(signum, _ignore) for signum in signals}
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)

    def __enter__(self) -> SignalSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        self.close()

    def received(self) -> list[int]:
        """The signals delivered since the last call, in order."""
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := self.reader.recv(4096):
                data += chunk
        return list(data)

    def close(self) -> None:
        """Close both ends (in a forked worker, which must not write to its parent's)."""
        self.reader.close()
        self._writer.close()


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A Python-level handler that does nothing: the wakeup socket carries the signal."""
