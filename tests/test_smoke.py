"""A first end-to-end check of the in-memory API."""

from __future__ import annotations

from people._gen.people import CreateUserRequest, UserIdRequest, UserServiceStub


async def test_create_then_get(stub: UserServiceStub) -> None:
    """A created user can be read back by its id."""
    created = await stub.create_user(CreateUserRequest(name="Ada", email="ada@example.com"))
    user = await stub.get_user_by_id(UserIdRequest(id=created.id))
    assert (user.name, user.email) == ("Ada", "ada@example.com")
