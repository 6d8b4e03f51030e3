"""One worker process of ``people serve --workers N``: the ordinary server, watched and watching.

A worker is forked by the supervisor (:mod:`people.server.workers`) with signals
blocked. It stops writing signals to the parent's wakeup socket, moves to its
own process group (a terminal's Ctrl-C reaches only the parent, which forwards
it once), runs :func:`people.server.process.serve`, tells the parent when it
listens or why it cannot start, and stops by itself if the parent disappears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from types import FrameType

from people.server.compose import StartupError
from people.server.process import serve
from people.server.settings import Settings
from people.server.signals import SignalSocket

EXIT_OK = 0
EXIT_FAILED = 1
#: How often a worker checks that its parent is still alive.
PARENT_CHECK_INTERVAL = 0.5
#: Signals that stop the server.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _ReadyLineFilter(logging.Filter):
    """Rename a worker's own ready line: only the parent announces the server as ready."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self._index = index

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "people serving on" in message:
            record.msg = message.replace(
                "people serving on", f"people worker {self._index} listening on", 1
            )
            record.args = None
        return True


def work(
    settings: Settings, index: int, parent: int, ready: Connection, wakeup: SignalSocket
) -> None:
    """A worker process's whole life: serve until signalled, or until the parent is gone."""
    # Signals are still blocked here (see _Supervisor._start): stop writing them
    # to the parent's wakeup socket before any can arrive.
    signal.set_wakeup_fd(-1)
    wakeup.close()
    # Its own process group: a terminal's Ctrl-C reaches only the parent, which
    # forwards it once.
    os.setpgid(0, 0)
    logging.getLogger("people.server").addFilter(_ReadyLineFilter(index))
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()

    def on_ready(address: str) -> None:
        ready.send(("ready", address))
        ready.close()

    # Until serve() installs its own handlers, a stop request ends the worker
    # quietly, and SIGHUP stays blocked: serve() unblocks it once it can reload,
    # so a reload asked for during startup happens then instead of killing it.
    for signum in STOP_SIGNALS:
        signal.signal(signum, _exit_quietly)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        asyncio.run(serve(settings, on_ready=on_ready))
    except StartupError as exc:
        with contextlib.suppress(OSError):
            ready.send(("failed", str(exc)))
        sys.exit(EXIT_FAILED)


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    sys.exit(EXIT_OK)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_INTERVAL)
    os.kill(os.getpid(), signal.SIGTERM)
