"""ListUsers, bounded GetAllUsers, etags and timestamps through a real `people serve` process.

tests/test_api.py pins each rule in memory; these run the whole stack over TCP on
SQLite and PostgreSQL, including while other clients write at the same time.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from people._gen.people import (
    CreateUserRequest,
    Empty,
    ListUsersRequest,
    User,
    UserIdRequest,
    UserServiceStub,
)
from tests.support import running_server, stub_for


async def create_users(stub: UserServiceStub, prefix: str, count: int) -> list[str]:
    """Create ``count`` users one after another and return their ids in creation order."""
    ids = []
    for n in range(count):
        answer = await stub.create_user(
            CreateUserRequest(name=f"{prefix} {n}", email=f"{prefix}{n}@example.com")
        )
        ids.append(answer.id)
    return ids


async def list_everything(stub: UserServiceStub, page_size: int) -> list[User]:
    """Follow next_page_token from the first page to the last."""
    users: list[User] = []
    token = ""
    while True:
        page = await stub.list_users(ListUsersRequest(page_size=page_size, page_token=token))
        users.extend(page.users)
        token = page.next_page_token
        if not token:
            return users


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database for one server: a SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'people.db'}"
    server = request.getfixturevalue("postgres_server")
    url: str = await server.create_database()
    return url


class TestListUsers:
    """Paging over TCP is stable, complete and matches GetAllUsers."""

    async def test_pages_match_get_all_users(self, database: str) -> None:
        """Walking ListUsers page by page yields exactly GetAllUsers, in creation order."""
        with running_server("--database", database) as server:
            async with stub_for(server) as stub:
                ids = await create_users(stub, "p", 23)
                paged = await list_everything(stub, page_size=5)
                everything = await stub.get_all_users(Empty())
            assert server.stop() == 0, server.output()
        assert [user.id for user in paged] == ids
        assert paged == everything.user

    async def test_stable_while_others_write(self, database: str) -> None:
        """While other connections create and delete users, a paging client sees every user
        that existed before its first page (and was not deleted) exactly once."""
        with running_server("--database", database) as server:
            async with stub_for(server) as stub, stub_for(server) as writer:
                existing = await create_users(stub, "old", 30)
                doomed = set(existing[::3])

                async def churn() -> None:
                    for n, user_id in enumerate(sorted(doomed)):
                        await writer.create_user(
                            CreateUserRequest(name=f"new {n}", email=f"new{n}@example.com")
                        )
                        await writer.delete_user_by_id(UserIdRequest(id=user_id))

                async def page_through() -> list[User]:
                    users: list[User] = []
                    token = ""
                    while True:
                        page = await stub.list_users(
                            ListUsersRequest(page_size=4, page_token=token)
                        )
                        users.extend(page.users)
                        token = page.next_page_token
                        await asyncio.sleep(0)
                        if not token:
                            return users

                seen, _ = await asyncio.gather(page_through(), churn())
            assert server.stop() == 0, server.output()
        seen_ids = [user.id for user in seen]
        assert len(seen_ids) == len(set(seen_ids)), "a user was returned twice"
        assert set(existing) - doomed <= set(seen_ids), "a user that stayed was skipped"

    async def test_paging_across_a_restart(self, database: str) -> None:
        """A page token from one server process resumes the listing on the next one."""
        with running_server("--database", database) as first:
            async with stub_for(first) as stub:
                ids = await create_users(stub, "r", 6)
                page = await stub.list_users(ListUsersRequest(page_size=4))
            assert first.stop() == 0, first.output()
        with running_server("--database", database) as second:
            async with stub_for(second) as stub:
                rest = await stub.list_users(
                    ListUsersRequest(page_size=4, page_token=page.next_page_token)
                )
            assert second.stop() == 0, second.output()
        assert [user.id for user in [*page.users, *rest.users]] == ids
        assert rest.next_page_token == ""

    async def test_token_from_one_replica_works_on_another(self, database: str) -> None:
        """Two servers on one database: page one from the first, every later page from the
        second, and the listing is complete and in order."""
        with (
            running_server("--database", database) as first,
            running_server("--database", database) as second,
        ):
            async with stub_for(first) as one, stub_for(second) as other:
                ids = await create_users(one, "replica", 7)
                page = await one.list_users(ListUsersRequest(page_size=3))
                users, token = list(page.users), page.next_page_token
                while token:
                    page = await other.list_users(ListUsersRequest(page_size=3, page_token=token))
                    users.extend(page.users)
                    token = page.next_page_token
            assert first.stop() == 0, first.output()
            assert second.stop() == 0, second.output()
        assert [user.id for user in users] == ids

    async def test_tampered_token_is_invalid(self, tmp_path: Path) -> None:
        """A token with one character changed is INVALID_ARGUMENT over TCP too."""
        with running_server("--database", f"sqlite:///{tmp_path / 'people.db'}") as server:
            async with stub_for(server) as stub:
                await create_users(stub, "t", 3)
                page = await stub.list_users(ListUsersRequest(page_size=1))
                token = page.next_page_token
                tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
                with pytest.raises(GRPCError) as caught:
                    await stub.list_users(ListUsersRequest(page_size=1, page_token=tampered))
            assert server.stop() == 0, server.output()
        assert caught.value.status == Status.INVALID_ARGUMENT


class TestGetAllUsersBounded:
    """GetAllUsers answers in full or refuses, pointing to ListUsers; it never truncates."""

    async def test_refuses_past_the_send_limit(self, tmp_path: Path) -> None:
        """Past --max-send-message-bytes GetAllUsers is RESOURCE_EXHAUSTED naming ListUsers,
        and ListUsers still returns every user."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        limit = ["--max-send-message-bytes", "4096"]
        with running_server("--database", database, *limit) as server:
            async with stub_for(server) as stub:
                ids = await create_users(stub, "big", 100)
                with pytest.raises(GRPCError) as caught:
                    await stub.get_all_users(Empty())
                paged = await list_everything(stub, page_size=10)
            assert server.stop() == 0, server.output()
        assert caught.value.status == Status.RESOURCE_EXHAUSTED
        assert "ListUsers" in (caught.value.message or "")
        assert [user.id for user in paged] == ids


class TestEtagsAndTimestamps:
    """Etags guard concurrent updates and timestamps are kept, across processes."""

    async def test_read_modify_write_race_has_one_winner(self, database: str) -> None:
        """Two clients updating with the same etag on different workers: one is ABORTED."""
        with running_server("--database", database, "--workers", "2") as server:
            async with stub_for(server) as first, stub_for(server) as second:
                created = await first.create_user(
                    CreateUserRequest(name="Ada", email="ada@example.com")
                )
                read = await first.get_user_by_id(UserIdRequest(id=created.id))

                async def rename(stub: UserServiceStub, name: str) -> Status:
                    try:
                        await stub.update_user(User(id=read.id, name=name, etag=read.etag))
                    except GRPCError as exc:
                        return exc.status
                    return Status.OK

                outcomes = await asyncio.gather(rename(first, "A"), rename(second, "B"))
                final = await second.get_user_by_id(UserIdRequest(id=created.id))
            assert server.stop() == 0, server.output()
        assert sorted(outcomes, key=lambda status: status.value) == [Status.OK, Status.ABORTED]
        assert final.etag != read.etag
        assert final.name in ("A", "B")

    async def test_timestamps_survive_and_move(self, database: str) -> None:
        """create_time stays put and update_time moves forward on update, across a restart."""
        with running_server("--database", database) as first:
            async with stub_for(first) as stub:
                created = await stub.create_user(
                    CreateUserRequest(name="Ada", email="ada@example.com")
                )
                before = await stub.get_user_by_id(UserIdRequest(id=created.id))
                await stub.update_user(User(id=created.id, name="Ada L."))
            assert first.stop() == 0, first.output()
        with running_server("--database", database) as second:
            async with stub_for(second) as stub:
                after = await stub.get_user_by_id(UserIdRequest(id=created.id))
            assert second.stop() == 0, second.output()
        assert isinstance(before.create_time, datetime)
        assert before.create_time == before.update_time
        assert after.create_time == before.create_time
        assert after.update_time is not None
        assert after.update_time > before.create_time
        assert after.etag != before.etag
