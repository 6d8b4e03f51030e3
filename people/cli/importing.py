"""`people import`'s engine: lines sent in batches through BatchCreateUsers.

Each batch (up to 1,000 lines) is one atomic call. A batch that fails on one
entry is sent again without it, so every line still ends up created, already
existing or rejected with the reason it would have had on its own:

- The first time a batch fails on an entry, the lines the server would refuse
  are settled at once instead of one retry each: each line is checked with the
  same rules the server applies (same messages), emails repeated inside the
  batch count as already existing, and emails the directory already holds are
  looked up with one filtered ListUsers per 200 lines.
- Any later failure names its entry (``requests[i]``): that line alone is taken
  out, as existing (ALREADY_EXISTS) or rejected (INVALID_ARGUMENT), and the
  rest is sent again.
- A batch too large for the server's message limits (RESOURCE_EXHAUSTED,
  nothing written) is split in two, and each half sent on its own.
- A failure that names no entry sends the batch's lines one at a time, and a
  server without BatchCreateUsers gets every line one at a time, as before.

The import stops early only when the server itself fails (unreachable,
unauthenticated...), because then no later line could succeed either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice

from people.cli.bulk import ImportSummary, Record, Rejected
from people.client import PeopleClient, filter_literal
from people.client.people_client import MAX_BATCH
from people.domain import errors

#: Calls in flight: a batch keeps the server busy; a few hide the round trips.
DEFAULT_CONCURRENCY = 4
#: Seconds between two progress reports.
PROGRESS_INTERVAL = 0.1
#: Emails looked up per ListUsers call when a batch meets taken emails.
LOOKUP_CHUNK = 200


async def import_users(
    client: PeopleClient,
    records: Iterable[Record],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    batch_size: int = MAX_BATCH,
    progress: Callable[[ImportSummary], None] | None = None,
) -> ImportSummary:
    """Create a user for every record, ``batch_size`` records per call.

    Returns:
        What happened to each line. ``failure`` is set if the server failed
        and the import stopped before the end.
    """
    importer = _Importer(client, concurrency)
    batches = _batches(records, batch_size)
    last_report = 0.0

    async def worker() -> None:
        nonlocal last_report
        for batch in batches:  # shared iterator: each batch goes to one worker
            if importer.summary.failure is not None:
                return
            await importer.batch(batch)
            now = time.monotonic()
            if progress is not None and now - last_report >= PROGRESS_INTERVAL:
                last_report = now
                progress(importer.summary)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    importer.summary.rejected.sort(key=lambda rejected: rejected.line)
    if progress is not None:
        progress(importer.summary)
    return importer.summary


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    source = iter(records)
    while batch := list(islice(source, size)):
        yield batch


class _Importer:
    def __init__(self, client: PeopleClient, concurrency: int) -> None:
        self.client = client
        self.concurrency = concurrency
        self.summary = ImportSummary()
        #: Set once the server answers UNIMPLEMENTED: every later line goes alone.
        self.one_at_a_time = False

    async def batch(self, records: list[Record]) -> None:
        pending: list[Record] = []
        for record in records:
            if record.error:
                self.summary.rejected.append(Rejected(record.line, record.error))
            else:
                pending.append(record)
        await self._send(pending)

    async def _send(self, pending: list[Record]) -> None:
        """Create ``pending`` in one call, again without each line that fails it."""
        settled = False
        while pending and not self.one_at_a_time:
            try:
                await self.client.batch_create_ids([(r.name, r.email) for r in pending])
            except (errors.EmailAlreadyExists, errors.InvalidField) as exc:
                if exc.index is None or exc.index >= len(pending):
                    break  # not about one entry: let each line speak for itself
                if not settled:
                    settled = True
                    pending = await self._settle(pending)
                    continue
                failed = pending.pop(exc.index)
                self._count_failure(failed, exc)
            except errors.ResourceExhausted as exc:
                # Too big for the server's message limits (nothing was written): halve it.
                if len(pending) == 1:
                    self._fail(exc)
                    return
                half = len(pending) // 2
                await self._send(pending[:half])
                await self._send(pending[half:])
                return
            except errors.ServerError as exc:
                if exc.status != "UNIMPLEMENTED":
                    self._fail(exc)
                    return
                self.one_at_a_time = True
            except errors.PeopleError as exc:
                self._fail(exc)
                return
            else:
                self.summary.created += len(pending)
                return
        await self._one_at_a_time(pending)

    async def _settle(self, pending: list[Record]) -> list[Record]:
        """The lines left once those the server would refuse are counted, without a call each."""
        # Imported here: email_validator takes some 50 ms to load, which no other
        # command, and no import that meets no failure, should pay.
        from people.domain.model import email_key, normalise_email, normalise_name

        keys: dict[int, str] = {}
        first_with: set[str] = set()
        for record in pending:
            try:
                normalise_name(record.name)
                key = email_key(normalise_email(record.email))
            except errors.InvalidField as exc:
                self.summary.rejected.append(Rejected(record.line, exc.message))
                continue
            if key in first_with:
                self.summary.existing += 1
                continue
            first_with.add(key)
            keys[record.line] = key
        taken = await self._taken(list(keys.values()))
        left = []
        for record in pending:
            settled = keys.get(record.line)
            if settled is None:
                continue
            if settled in taken:
                self.summary.existing += 1
            else:
                left.append(record)
        return left

    async def _taken(self, keys: Sequence[str]) -> set[str]:
        """Which of these email keys the directory already holds."""
        from people.domain.model import email_key

        found: set[str] = set()
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start : start + LOOKUP_CHUNK]
            query = " OR ".join(f"email = {filter_literal(key)}" for key in chunk)
            async for user in self.client.iter_users(filter=query):
                found.add(email_key(user.email))
        return found

    async def _one_at_a_time(self, records: list[Record]) -> None:
        lines = iter(records)

        async def worker() -> None:
            for record in lines:
                if self.summary.failure is not None:
                    return
                await self._create(record)

        await asyncio.gather(*(worker() for _ in range(min(len(records), 4 * self.concurrency))))

    async def _create(self, record: Record) -> None:
        try:
            await self.client.create(record.name, record.email)
        except (errors.EmailAlreadyExists, errors.InvalidField) as exc:
            self._count_failure(record, exc)
        except errors.PeopleError as exc:
            self._fail(exc)
        else:
            self.summary.created += 1

    def _count_failure(self, record: Record, exc: errors.PeopleError) -> None:
        if isinstance(exc, errors.EmailAlreadyExists):
            self.summary.existing += 1
        elif exc.index is None:
            self.summary.rejected.append(Rejected(record.line, exc.message))
        elif isinstance(exc, errors.InvalidField):
            # "invalid requests[3].email: ..." reads "invalid email: ..." for one line.
            field = exc.field.partition("].")[2]
            self.summary.rejected.append(Rejected(record.line, f"invalid {field}: {exc.reason}"))

    def _fail(self, exc: errors.PeopleError) -> None:
        if self.summary.failure is None:
            self.summary.failure = exc
