"""The SQLite store's one writer thread, committing concurrent writes together.

With ``synchronous=FULL`` every commit waits for an fsync (about 0.2 ms here,
far more on a busy disk), and SQLite has one writer at a time anyway. So the
writer thread takes every write that is waiting, opens one transaction, runs
each write inside a savepoint of its own, and commits once:

- each caller hears only after that commit: an acknowledged write is durable;
- a write that fails (a taken email, a stale etag, a missing user) is rolled
  back to its savepoint and fails its own caller only;
- if the commit itself fails, every write of the batch fails with that error,
  and none of them was applied.

A lone write is committed at once, so nothing waits for company. Operations
that manage their own transaction (the schema migration) run alone, outside
any batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from people.domain.errors import PeopleError, StoreFailure
from people.store.sqlite_errors import translated

log = logging.getLogger("people.store")

#: Writes one transaction takes at most.
MAX_BATCH = 256
_STOP = object()


@dataclass
class _Write:
    operation: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    email: str | None
    #: Runs alone, outside any transaction (it manages its own).
    solo: bool
    #: Turns an sqlite3 error into the caller's error (opening: with SQLite's reason).
    translate: Callable[[sqlite3.Error, str | None], PeopleError] = field(
        default=lambda exc, email: translated(exc, email=email)
    )

    def failure(self, exc: sqlite3.Error) -> PeopleError:
        """The caller's error for ``exc``, caused by it (as ``raise ... from exc`` would)."""
        error = self.translate(exc, self.email)
        error.__cause__ = exc
        return error


class GroupWriter:
    """A thread that applies writes on one connection, many to a commit.

    Args:
        connect: Opens the writer's connection (called on the thread).
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[_Write | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="people-sqlite-write", daemon=True)
        self._thread.start()
        #: Transactions committed, and the writes in them (for tests and diagnostics).
        self.commits = 0
        self.committed_writes = 0

    def submit(
        self,
        operation: Callable[[sqlite3.Connection], Any],
        *,
        email: str | None = None,
        solo: bool = False,
        translate: Callable[[sqlite3.Error, str | None], PeopleError] | None = None,
    ) -> asyncio.Future[Any]:
        """Queue ``operation``; the future resolves once it is committed (or failed)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        write = _Write(operation, future, email, solo)
        if translate is not None:
            write.translate = translate
        self._queue.put(write)
        return future

    def stop(self) -> None:
        """Finish what is queued, then end the thread (blocking: call it off the loop)."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            assert isinstance(first, _Write)
            batch = [first]
            while len(batch) < MAX_BATCH and not first.solo:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP or (isinstance(more, _Write) and more.solo):
                    self._queue.put(more)  # after this batch, in order
                    break
                assert isinstance(more, _Write)
                batch.append(more)
            if db is None:
                try:
                    db = self._connect()
                except sqlite3.Error as exc:
                    for write in batch:
                        _settle(write, error=write.failure(exc))
                    continue
            try:
                if first.solo:
                    self._solo(db, first)
                else:
                    while batch:
                        batch = self._together(db, batch)
            except Exception:  # a bug here must not leave callers waiting forever
                log.exception("SQLite writer: unexpected failure; reconnecting")
                for write in batch:
                    _settle(write, error=StoreFailure())
                with contextlib.suppress(sqlite3.Error):
                    db.close()
                db = None

    def _solo(self, db: sqlite3.Connection, write: _Write) -> None:
        try:
            result = write.operation(db)
        except sqlite3.Error as exc:
            _settle(write, error=write.failure(exc))
        except PeopleError as exc:
            _settle(write, error=exc)
        else:
            _settle(write, result=result)

    def _together(self, db: sqlite3.Connection, batch: list[_Write]) -> list[_Write]:
        """Apply ``batch`` in one transaction; return the writes still to apply.

        Some SQLite errors (a full disk, an I/O error, a busy database) roll the
        whole transaction back by themselves: then the writes applied so far in
        it fail too, and the ones not yet tried go into a new transaction.
        """
        outcomes: list[tuple[_Write, Any, PeopleError | None]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for write in batch:
                _settle(write, error=write.failure(exc))
            return []
        for position, write in enumerate(batch):
            db.execute("SAVEPOINT write")
            try:
                result = write.operation(db)
            except (sqlite3.Error, PeopleError) as exc:
                error = write.failure(exc) if isinstance(exc, sqlite3.Error) else exc
                if not db.in_transaction:
                    # SQLite rolled everything back: nothing of this batch was applied.
                    _settle(write, error=error)
                    for earlier, _, earlier_error in outcomes:
                        _settle(earlier, error=error if earlier_error is None else earlier_error)
                    return batch[position + 1 :]
                db.execute("ROLLBACK TO write")
                db.execute("RELEASE write")
                outcomes.append((write, None, error))
            else:
                db.execute("RELEASE write")
                outcomes.append((write, result, None))
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            for done, _, failed in outcomes:
                _settle(done, error=done.failure(exc) if failed is None else failed)
            return []
        self.commits += 1
        self.committed_writes += sum(failed is None for _, _, failed in outcomes)
        for done, answer, failed in outcomes:
            _settle(done, result=answer, error=failed)
        return []


def _settle(write: _Write, *, result: Any = None, error: PeopleError | None = None) -> None:
    """Resolve a write's future on its own loop (it may have been cancelled meanwhile)."""

    def resolve() -> None:
        if write.future.done():
            return
        if error is not None:
            write.future.set_exception(error)
        else:
            write.future.set_result(result)

    write.future.get_loop().call_soon_threadsafe(resolve)
