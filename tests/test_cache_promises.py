"""What the README promises about the read cache: repeats stay off the store, other processes'
writes are seen at once."""

from __future__ import annotations

from pathlib import Path

from grpclib.testing import ChannelFor

from people._gen.people import (
    CreateUserRequest,
    Empty,
    ListUsersRequest,
    User,
    UserIdRequest,
    UserServiceStub,
)
from people.api.user_service import UserService
from people.domain.directory import UserDirectory
from tests.support import running_server, stub_for
from tests.test_cache import CountingSQLiteStore


class TestListUsersIsCached:
    """A ListUsers page asked again is answered without reading the store."""

    async def test_repeated_pages_read_the_store_once(self, tmp_path: Path) -> None:
        """The first page and a later one, each asked five times, read the store once each."""
        store = await CountingSQLiteStore.open(tmp_path / "people.db")
        try:
            async with ChannelFor([UserService(UserDirectory(store))]) as channel:
                stub = UserServiceStub(channel)
                for n in range(5):
                    await stub.create_user(
                        CreateUserRequest(name=f"User {n}", email=f"user{n}@example.com")
                    )
                first = ListUsersRequest(page_size=2)
                token = (await stub.list_users(first)).next_page_token
                second = ListUsersRequest(page_size=2, page_token=token)
                pages = [await stub.list_users(second)]
                scans = store.scans
                for _ in range(4):
                    await stub.list_users(first)
                    pages.append(await stub.list_users(second))
                assert store.scans == scans
                assert all(page == pages[0] for page in pages)
                await stub.create_user(CreateUserRequest(name="New", email="new@example.com"))
                await stub.list_users(second)
                assert store.scans == scans + 1
        finally:
            await store.aclose()


class TestAnotherProcessWrites:
    """Two `people serve` processes on one SQLite file, as two workers are."""

    async def test_reads_see_the_other_process_write(self, tmp_path: Path) -> None:
        """GetAllUsers, a ListUsers page and GetUserById, read (and cached) on one server,
        show a create and an update made through the other at once."""
        database = f"sqlite:///{tmp_path / 'people.db'}"
        with (
            running_server("--database", database, "--no-access-log") as reader,
            running_server("--database", database, "--no-access-log") as writer,
        ):
            async with stub_for(reader) as read, stub_for(writer) as write:
                ada = (
                    await write.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
                ).id
                page = ListUsersRequest(page_size=10)
                for _ in range(2):
                    assert [u.id for u in (await read.get_all_users(Empty())).user] == [ada]
                    assert [u.id for u in (await read.list_users(page)).users] == [ada]
                    assert (await read.get_user_by_id(UserIdRequest(id=ada))).name == "Ada"
                bob = (
                    await write.create_user(CreateUserRequest(name="Bob", email="bob@example.com"))
                ).id
                await write.update_user(User(id=ada, name="Ada King"))
                everyone = (await read.get_all_users(Empty())).user
                listed = (await read.list_users(page)).users
                renamed = await read.get_user_by_id(UserIdRequest(id=ada))
            assert reader.stop() == 0, reader.output()
            assert writer.stop() == 0, writer.output()
        assert [(u.id, u.name) for u in everyone] == [(ada, "Ada King"), (bob, "Bob")]
        assert listed == everyone
        assert renamed.name == "Ada King"
