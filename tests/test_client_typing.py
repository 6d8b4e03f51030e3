"""A user program built on PeopleClient passes mypy --strict and sees concrete types."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

PROGRAM = """
import asyncio

from people import PeopleClient, PeopleError, UserNotFound


async def main() -> None:
    async with PeopleClient("localhost:50051", timeout=5, token="t") as people:
        user_id = await people.create("Ada", "ada@example.com")
        reveal_type(user_id)
        user = await people.get(user_id)
        reveal_type(user)
        reveal_type(user.email)
        reveal_type(await people.get_all())
        reveal_type(await people.list_page(page_size=10))
        async for each in people.iter_users():
            reveal_type(each)
        reveal_type(await people.update(user_id, name="Ada King", etag=user.etag))
        reveal_type(await people.delete(user_id))
        try:
            await people.get(user_id)
        except UserNotFound as exc:
            reveal_type(exc.user_id)
        except PeopleError as exc:
            reveal_type(exc.message)


asyncio.run(main())
"""

EXPECTED = [
    "str",
    "people._gen.people.User",
    "str",
    "list[people._gen.people.User]",
    "people._gen.people.ListUsersResponse",
    "people._gen.people.User",
    "str",
    "str",
    "str",
    "str",
]


def test_user_program_type_checks_with_concrete_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mypy --strict accepts the program and every revealed type is concrete, never Any."""
    monkeypatch.chdir(tmp_path)  # see people as installed (py.typed), not as a source folder
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    stdout, stderr, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(program)]
    )
    revealed = re.findall(r'Revealed type is "([^"]+)"', stdout)
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert not errors, stdout + stderr
    assert revealed == EXPECTED, stdout
    assert status == 0
