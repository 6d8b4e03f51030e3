"""`people find`, `people list --filter --order-by` and a batched `people import`, run as a
user runs them: subprocesses talking to a `people serve` subprocess."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, run_cli, running_server
from tests.test_cli import People, assert_user_object, failure_message, sqlite_url

#: name, email; created in this order.
DIRECTORY = [
    ("Ada Lovelace", "ada@example.com"),
    ("Grace Hopper", "grace@acme.com"),
    ("Alan Turing", "alan@acme.com"),
    ("ada king", "Ada.King@example.org"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `people serve` on a SQLite file holding DIRECTORY."""
    directory = tmp_path_factory.mktemp("search")
    source = directory / "users.csv"
    source.write_text(
        "name,email\n" + "".join(f"{name},{email}\n" for name, email in DIRECTORY),
        encoding="utf-8",
    )
    with running_server("--database", sqlite_url(directory / "people.db"), "--no-access-log") as s:
        assert People(s.target).ok("import", str(source)) == (
            "4 created, 0 already existed, 0 rejected\n"
        )
        yield s


@pytest.fixture(scope="module")
def people(server: ServerProcess) -> People:
    """The `people` command aimed at the server."""
    return People(server.target)


class TestFind:
    """`people find -e EMAIL`: one user by email, as `get -i` prints one."""

    def test_prints_the_user(self, people: People) -> None:
        """An email in any letter case prints "User: ID=…, Name=…, Email=…"."""
        out = people.ok("find", "-e", "GRACE@ACME.COM")
        assert re.fullmatch(
            r"User: ID=[0-9a-f-]{36}, Name=Grace Hopper, Email=grace@acme.com\n", out
        )

    def test_json(self, people: People) -> None:
        """`find --json` prints the user object with its six keys."""
        user = assert_user_object(json.loads(people.ok("find", "-e", "ada@example.com", "--json")))
        assert user["name"] == "Ada Lovelace"

    def test_nobody(self, people: People) -> None:
        """An email nobody has exits 15 (NOT_FOUND) and says so."""
        message = failure_message(
            people("find", "-e", "nobody@example.com"), "find", "NOT_FOUND", 15
        )
        assert message == "no user has the email 'nobody@example.com'"

    def test_email_is_required(self, people: People) -> None:
        """Without -e, find is a usage error (exit 2)."""
        result = people("find")
        assert result.returncode == 2
        assert "-e/--email" in result.stderr


class TestList:
    """`people list --filter … --order-by …`."""

    def test_filter_and_order(self, people: People) -> None:
        """The table holds the matching users in the order asked."""
        out = people.ok("list", "--filter", 'email = "*@acme.com"', "--order-by", "name desc")
        lines = out.splitlines()
        assert lines[0].split() == ["ID", "NAME", "EMAIL", "CREATE_TIME"]
        assert [line.split("  ")[1].strip() for line in lines[1:]] == [
            "Grace Hopper",
            "Alan Turing",
        ]

    def test_json_with_limit(self, people: People) -> None:
        """--json prints user objects; --limit keeps the first ones."""
        value = json.loads(
            people.ok("list", "--filter", 'name = "ADA*"', "--order-by", "name", "--json")
        )
        assert [user["name"] for user in value] == ["ada king", "Ada Lovelace"]
        limited = json.loads(people.ok("list", "--order-by", "email", "--limit", "1", "--json"))
        assert [user["email"] for user in limited] == ["Ada.King@example.org"]

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--filter", 'name = "x'], "invalid filter: at position 8: this string has no"),
            (["--filter", "name = x"], "invalid filter: at position 8: expected a quoted value"),
            (["--order-by", "id"], "invalid order_by: cannot order by 'id'"),
        ],
    )
    def test_mistakes(self, people: People, args: list[str], message: str) -> None:
        """A malformed filter or order exits 13 (INVALID_ARGUMENT) with the position and problem."""
        assert failure_message(people("list", *args), "list", "INVALID_ARGUMENT", 13).startswith(
            message
        )

    def test_help(self) -> None:
        """`list --help` shows --filter and --order-by; `people --help` lists find."""
        result = run_cli("list", "--help")
        assert "--filter FILTER" in result.stdout
        assert "--order-by ORDER" in result.stdout
        assert "find" in run_cli("--help").stdout


class TestBatchedImport:
    """`people import` through BatchCreateUsers keeps the per-line summary of one at a time."""

    def test_batches_smaller_than_the_file(self, people: People, tmp_path: Path) -> None:
        """Bad lines, repeats and stored emails across several batches are each named or
        counted once, as before."""
        source = tmp_path / "users.csv"
        rows = ["name,email"]
        for n in range(40):
            if n == 5:
                rows.append("Bad,not-an-email")
            elif n == 11:
                rows.append(",nameless@example.com")
            elif n == 20:
                rows.append("Again,GRACE@acme.com")
            elif n == 30:
                rows.append("Repeat,batch3@example.com")
            else:
                rows.append(f"Batch {n},batch{n}@example.com")
        source.write_text("\n".join(rows) + "\n", encoding="utf-8")
        result = people("import", str(source), "--batch-size", "7")
        assert result.returncode == 3, result.stderr
        assert result.stdout.splitlines() == [
            "36 created, 2 already existed, 2 rejected",
            "line 7: invalid email: An email address must have an @-sign.",
            "line 13: invalid name: must not be empty",
        ]

    @pytest.mark.parametrize("size", ["0", "1001"])
    def test_batch_size_bounds(self, people: People, size: str) -> None:
        """--batch-size outside 1 to 1000 is a usage error."""
        result = people("import", "-", "--batch-size", size, stdin="")
        assert result.returncode == 2
        assert "--batch-size must be between 1 and 1000" in result.stderr
