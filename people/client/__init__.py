"""PeopleClient: the typed async client library for Python callers.

Example::

    import asyncio

    from people import PeopleClient, UserNotFound


    async def main() -> None:
        async with PeopleClient("localhost:50051", timeout=5) as people:
            user_id = await people.create("Ada Lovelace", "ada@example.com")
            user = await people.get(user_id)
            print(user.name, user.email, user.etag)
            await people.update(user_id, name="Ada King", etag=user.etag)
            async for each in people.iter_users(filter='name = "Ada*"', order_by="name"):
                print(each.id, each.email)
            print((await people.find_by_email("ADA@example.com")).id)
            await people.delete(user_id)
            try:
                await people.get(user_id)
            except UserNotFound as exc:
                print(exc)


    asyncio.run(main())

Every failure is a :class:`people.PeopleError` subclass, mapped from the gRPC
status in :func:`error_for_status` and nowhere else; the server's message is
kept as the error's text.
"""

from __future__ import annotations

from people.client.connect import parse_target, tls_context
from people.client.people_client import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    PeopleClient,
    filter_literal,
)
from people.client.status import error_for_status

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "PeopleClient",
    "error_for_status",
    "filter_literal",
    "parse_target",
    "tls_context",
]
