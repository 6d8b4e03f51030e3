"""``people serve --workers N``: N server processes on one port, and their supervisor.

The parent reserves the port first: it binds a SO_REUSEPORT socket without
listening on it, so ``--port 0`` resolves to one port that every worker then
shares (a bound socket that does not listen is never handed connections). Each
worker is a forked process running the ordinary :func:`people.server.process.serve`
with its own store, health service and drain; the kernel spreads new
connections across the workers' listening sockets.

The first worker starts alone, so it creates or migrates the schema before the
others open the database (two SQLite processes switching a new file to WAL at
once can fail with "database is locked"). The parent logs the ready line once
every worker listens, forwards SIGHUP (reload) to the workers unless it is
stopping them, forwards SIGTERM and SIGINT to them, waits for them and exits
0 if they all stopped cleanly; a worker still running a few
seconds after the grace period is killed. If a worker exits on its own the
parent stops the others and exits 1, leaving restarts to whatever runs people
(systemd, Kubernetes). A worker that cannot start reports why, and the parent
fails with that same one line. Workers watch their parent and stop by
themselves if it disappears, so none is left orphaned. Linux only
(SO_REUSEPORT balancing, fork).

The parent never acts inside a signal handler: signals arrive as bytes on a
socket (:func:`signal.set_wakeup_fd`) that its one wait watches, beside the
workers and a timer, so a signal can neither interrupt a log line half-written
nor be slept through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Protocol

from people.server.compose import StartupError
from people.server.logs import SAFE, redact_url
from people.server.settings import Settings
from people.server.signals import SignalSocket
from people.server.sockets import address, reserve_port
from people.server.worker import EXIT_FAILED, EXIT_OK, STOP_SIGNALS, work

log = logging.getLogger("people.workers")

EXIT_USAGE = 2
#: Extra seconds, beyond the grace period, that stopping workers get before SIGKILL.
STOP_MARGIN = 3.0
#: The parent looks at its workers at least this often, whatever else happens.
TICK = 1.0
#: prometheus_client's multiprocess mode: where every process writes its values.
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: Every signal the parent handles: SIGHUP reloads the workers' files.
_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP)


@dataclasses.dataclass
class _Worker:
    index: int
    process: BaseProcess
    ready: Connection | None
    listening: bool = False


def run(settings: Settings) -> int:
    """Serve with ``settings.workers`` processes until SIGTERM or SIGINT; SIGHUP reloads them.

    Returns:
        The exit status: 0 after a clean shutdown, 1 if a worker failed, 2 if
        the settings cannot work with several processes.

    Raises:
        StartupError: the port cannot be reserved, or a worker could not start
            (the message is the worker's, as one process would have said it).
    """
    if settings.database.startswith("memory:"):
        print(
            "people serve: memory:// is private to each process; --workers needs"
            " a sqlite:// or postgresql:// database",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        reserved = reserve_port(settings.host, settings.port)
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    with reserved:
        shared = dataclasses.replace(settings, port=reserved.getsockname()[1])
        with _metrics_for_every_worker(shared) as events:
            return _Supervisor(shared, address(reserved), events=events).run()


class WorkerEvents(Protocol):
    """What the supervisor reports about its workers (the metrics, when they are on)."""

    def started(self, pid: int) -> None:
        """A worker started."""
        ...

    def exited(self, pid: int, *, expected: bool) -> None:
        """A worker ended, asked to or not."""
        ...


@contextlib.contextmanager
def _metrics_for_every_worker(settings: Settings) -> Iterator[WorkerEvents | None]:
    """With ``--metrics-address``, one endpoint in this process for every worker's metrics.

    Raises:
        StartupError: the metrics address cannot be listened on.
    """
    if settings.metrics_address is None:
        yield None
        return
    # prometheus_client picks its multiprocess mode when it is imported, from
    # the environment: set it first, here in the parent, before any worker forks.
    directory = Path(tempfile.mkdtemp(prefix="people-metrics-"))
    os.environ[MULTIPROCESS_VARIABLE] = str(directory)
    try:
        from prometheus_client import CollectorRegistry

        from people.server.metrics import WorkerMetrics, multiprocess_registry, serve_metrics

        try:
            stop = serve_metrics(settings.metrics_address, multiprocess_registry())
        except OSError as exc:
            raise StartupError(
                f"cannot serve metrics on {settings.metrics_address}: {exc.strerror or exc}"
            ) from None
        try:
            yield WorkerMetrics(CollectorRegistry())
        finally:
            stop()
    finally:
        os.environ.pop(MULTIPROCESS_VARIABLE, None)
        shutil.rmtree(directory, ignore_errors=True)


class _Supervisor:
    def __init__(self, settings: Settings, address: str, *, events: WorkerEvents | None) -> None:
        self._settings = settings
        self._address = address
        self._events = events
        self._workers: list[_Worker] = []
        self._stopping = False
        self._failed = False
        self._startup_error: str | None = None
        self._stop_deadline: float | None = None

    def run(self) -> int:
        with SignalSocket(_SIGNALS) as wakeup:
            # The first worker opens (and if need be migrates) the database alone;
            # the others start once it listens (see _supervise).
            self._start([1], wakeup)
            self._supervise(wakeup)
        if self._startup_error is not None:
            raise StartupError(self._startup_error)
        return EXIT_FAILED if self._failed else EXIT_OK

    def _start(self, indexes: list[int], wakeup: SignalSocket) -> None:
        # A signal arriving mid-fork waits until the new workers exist, so it is
        # forwarded to them too; each worker unblocks signals for itself.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            context = multiprocessing.get_context("fork")
            for index in indexes:
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(
                    target=work,
                    args=(self._settings, index, os.getpid(), sender, wakeup),
                    name=f"people-worker-{index}",
                )
                process.start()
                sender.close()
                self._workers.append(_Worker(index, process, receiver))
                log.info("people worker %d started (pid %s)", index, process.pid)
                if self._events is not None and process.pid is not None:
                    self._events.started(process.pid)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _supervise(self, wakeup: SignalSocket) -> None:
        announced = False
        while alive := [worker for worker in self._workers if worker.process.exitcode is None]:
            waiting = [worker.ready for worker in alive if worker.ready is not None]
            sentinels = {worker.process.sentinel: worker for worker in alive}
            ready = wait([wakeup.reader, *waiting, *sentinels], timeout=self._wait_timeout())
            for event in ready:
                if event is wakeup.reader:
                    for signum in wakeup.received():
                        self._on_signal(signum)
                elif isinstance(event, int):
                    self._on_exit(sentinels[event])
                else:
                    self._on_ready(event)
            if self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
                self._kill_the_rest()
            if len(self._workers) < self._settings.workers and not self._stopping:
                if self._workers[0].listening:
                    self._start(list(range(2, self._settings.workers + 1)), wakeup)
                continue
            if not (announced or self._stopping) and all(w.listening for w in self._workers):
                announced = True
                log.info(
                    "people serving on %s (database %s, %d workers)",
                    self._address,
                    redact_url(self._settings.database),
                    len(self._workers),
                    extra={SAFE: True},
                )

    def _wait_timeout(self) -> float:
        if self._stop_deadline is None:
            return TICK
        return max(0.0, min(TICK, self._stop_deadline - time.monotonic()))

    def _kill_the_rest(self) -> None:
        for worker in self._workers:
            if worker.process.exitcode is None:
                log.error("people worker %d did not stop in time; killing it", worker.index)
                worker.process.kill()
        self._failed = True
        self._stop_deadline = None

    def _on_ready(self, connection: object) -> None:
        for worker in self._workers:
            if worker.ready is not None and worker.ready is connection:
                try:
                    outcome, detail = worker.ready.recv()
                except EOFError:
                    pass  # It died first; its sentinel says so.
                else:
                    worker.listening = outcome == "ready"
                    if outcome == "failed" and self._startup_error is None:
                        self._startup_error = detail
                worker.ready.close()
                worker.ready = None

    def _on_exit(self, worker: _Worker) -> None:
        worker.process.join()
        code = worker.process.exitcode
        if self._events is not None and worker.process.pid is not None:
            self._events.exited(worker.process.pid, expected=self._stopping)
        if worker.ready is not None:
            worker.ready.close()
            worker.ready = None
        if not self._stopping and not worker.listening:
            log.error("people worker %d failed to start (exit code %s)", worker.index, code)
        elif not self._stopping:
            log.error("people worker %d exited unexpectedly (exit code %s)", worker.index, code)
        if code != 0 or not self._stopping:
            # Even a clean exit nobody asked for leaves the server short of a worker.
            self._failed = True
        if not self._stopping:
            self._stop(signal.SIGTERM)

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self._reload()
            return
        if not self._stopping:
            log.info("people stopping %d workers", len(self._workers))
        self._stop(signum)

    def _reload(self) -> None:
        # A stopping worker has nothing to reload, and once its serve() has returned
        # SIGHUP would kill it; workers started later read the files afresh anyway.
        if self._stopping:
            return
        running = [w.process.pid for w in self._workers if w.process.exitcode is None]
        log.info("people reloading %d workers", len(running))
        for pid in running:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)

    def _stop(self, signum: int) -> None:
        self._stopping = True
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self._settings.grace_period + STOP_MARGIN
        for worker in self._workers:
            if worker.process.exitcode is None and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signum)
