"""A UserStore that times every operation and traces it, around any other store.

Metrics want each operation's latency by operation and store; traces want a
child span per operation under the call's span. :class:`InstrumentedStore`
delegates every method of the port and reports both, so the adapters stay free
of either concern.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar

from people.domain.model import User
from people.domain.ports import Cursor, UserStore
from people.domain.query import DEFAULT_QUERY, Query

_T = TypeVar("_T")

#: Records one operation's name and seconds.
OnOperation = Callable[[str, float], None]
#: Opens the span of one operation, by name.
OpenSpan = Callable[[str], AbstractContextManager[object]]
#: Told after each write that may have changed how many users there are.
OnWrite = Callable[[], None]


class InstrumentedStore:
    """``store``, with every operation timed (``on_operation``) and spanned (``span``).

    Args:
        store: The store that does the work.
        on_operation: Told each operation's name and duration.
        span: Opens a span around each operation.
        on_write: Told after each add, batch add and remove that succeeded.
    """

    def __init__(
        self,
        store: UserStore,
        *,
        on_operation: OnOperation | None = None,
        span: OpenSpan | None = None,
        on_write: OnWrite | None = None,
    ) -> None:
        self._store = store
        self._on_operation = on_operation
        self._span = span
        self._on_write = on_write

    def _written(self) -> None:
        if self._on_write is not None:
            self._on_write()

    async def _run(self, operation: str, call: Callable[[], Awaitable[_T]]) -> _T:
        started = time.perf_counter()
        try:
            with self._span(operation) if self._span is not None else nullcontext():
                return await call()
        finally:
            if self._on_operation is not None:
                self._on_operation(operation, time.perf_counter() - started)

    async def add(self, user: User) -> None:
        await self._run("add", lambda: self._store.add(user))
        self._written()

    async def add_many(self, users: Sequence[User]) -> None:
        await self._run("add_many", lambda: self._store.add_many(users))
        self._written()

    async def get(self, user_id: str) -> User:
        return await self._run("get", lambda: self._store.get(user_id))

    async def get_many(self, user_ids: Sequence[str]) -> list[User]:
        return await self._run("get_many", lambda: self._store.get_many(user_ids))

    async def list_page(
        self, *, after: Cursor | None, limit: int, query: Query = DEFAULT_QUERY
    ) -> list[User]:
        return await self._run(
            "list_page", lambda: self._store.list_page(after=after, limit=limit, query=query)
        )

    async def replace(self, user: User, *, expected_version: int) -> None:
        await self._run(
            "replace", lambda: self._store.replace(user, expected_version=expected_version)
        )

    async def remove(self, user_id: str, *, expected_version: int | None) -> None:
        await self._run(
            "remove", lambda: self._store.remove(user_id, expected_version=expected_version)
        )
        self._written()

    async def count(self) -> int:
        return await self._run("count", self._store.count)

    def change_token(self) -> Hashable | None:
        # Asked before every cacheable read and answered without I/O: not an operation.
        return self._store.change_token()

    def signing_key(self) -> bytes:
        return self._store.signing_key()

    async def ping(self) -> bool:
        return await self._run("ping", self._store.ping)

    async def aclose(self) -> None:
        await self._store.aclose()
