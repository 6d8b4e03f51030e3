"""The `people` command as a user runs it: a subprocess talking to a `people serve` subprocess."""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import struct
import subprocess
import termios
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from people.cli.schema import file_descriptor
from people.client import PeopleClient
from people.domain import errors
from tests.support import ServerProcess, people_command, run_cli, running_server

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CREATED = re.compile(rf"User created successfully - ID = (?P<id>{UUID})\n")
ROW = re.compile(rf"ID: (?P<id>{UUID}), Name: (?P<name>.*), Email: (?P<email>.*)")
USER_KEYS = ["id", "name", "email", "etag", "create_time", "update_time"]
RPCS = [
    "GetAllUsers",
    "CreateUser",
    "GetUserById",
    "UpdateUser",
    "DeleteUserById",
    "ListUsers",
    "BatchGetUsers",
    "BatchCreateUsers",
]
CLIENT_COMMANDS = ["add", "get", "list", "find", "mod", "del", "export", "import"]
CONNECTION_OPTIONS = [
    "--target",
    "--timeout",
    "--tls",
    "--ca-file",
    "--client-cert",
    "--client-key",
    "--token-file",
]
#: Every variable the client reads, emptied (which the CLI treats as unset) so the
#: environment the tests run in cannot steer them.
NO_CLIENT_SETTINGS = {
    f"PEOPLE_{name}": ""
    for name in (
        "TARGET",
        "TIMEOUT",
        "TLS",
        "CA_FILE",
        "CLIENT_CERT",
        "CLIENT_KEY",
        "TOKEN_FILE",
        "TOKEN",
    )
}
TOKEN = "cli-test-token-4f1d9a"
#: Users in the bulk round trip, and the size of the other import.
BULK_USERS = 10_000
SMALL_LIMIT_USERS = 200
#: Rejected lines of the bulk file: line number -> the text placed there.
BULK_BAD_LINES = {
    2: '{"name": "Broken", "email": ',
    5000: '{"name": "Bad Email", "email": "not-an-email"}',
    7777: '{"name": "", "email": "nameless@example.com"}',
    10_005: '["Not", "an", "object"]',
}
#: A blank line: skipped, neither imported nor rejected, but still counted.
BULK_BLANK_LINE = 3


def unique_email(label: str) -> str:
    """An address no other test uses, so tests can share one server."""
    return f"{label}-{uuid.uuid4().hex[:12]}@example.com"


@dataclass(frozen=True)
class People:
    """The `people` command aimed at one server, deaf to PEOPLE_* variables set outside."""

    target: str

    def __call__(
        self, *args: str, env: Mapping[str, str] | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``people ARGS --target TARGET`` and capture its output."""
        return run_cli(
            *args,
            "--target",
            self.target,
            env={**NO_CLIENT_SETTINGS, **(env or {})},
            stdin=stdin,
            timeout=120,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        """Run the command, insist it exits 0, and return its standard output."""
        result = self(*args, stdin=stdin)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def add(self, name: str, email: str) -> str:
        """Create a user and return the id `people add` printed."""
        match = CREATED.fullmatch(self.ok("add", "-n", name, "-e", email))
        assert match is not None
        return match["id"]

    def users(self) -> list[dict[str, Any]]:
        """Every user, from `people get --json`."""
        value = json.loads(self.ok("get", "--json"))
        assert isinstance(value, list)
        return value


def failure_message(
    result: subprocess.CompletedProcess[str], command: str, status: str, code: int
) -> str:
    """Check ``result`` failed with ``code`` and one stderr line naming ``status``; return it."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    prefix = f"people {command}: {status}: "
    assert lines[0].startswith(prefix), lines[0]
    message = lines[0].removeprefix(prefix)
    assert message.strip()
    return message


def parse_rows(lines: Iterable[str]) -> list[re.Match[str]]:
    """The `people get` rows in ``lines``, each checked to be "ID: …, Name: …, Email: …"."""
    rows = []
    for line in lines:
        match = ROW.fullmatch(line)
        assert match is not None, line
        rows.append(match)
    return rows


def assert_user_object(value: object) -> dict[str, Any]:
    """Check ``value`` is a user as --json prints one: the six keys, RFC 3339 UTC timestamps."""
    assert isinstance(value, dict)
    assert list(value) == USER_KEYS
    assert all(isinstance(item, str) for item in value.values())
    assert re.fullmatch(UUID, value["id"])
    for key in ("create_time", "update_time"):
        assert value[key].endswith("Z")
        assert datetime.fromisoformat(value[key]).utcoffset() is not None
    return value


def _read_all(fd: int) -> bytes:
    """Everything left to read from a pseudo-terminal whose other end is closed."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # Linux reports the closed end of a pty as EIO
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def sqlite_url(path: Path) -> str:
    """The sqlite:// URL of an absolute path."""
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `people serve` on a temporary SQLite file, shared by the module's small tests."""
    path = tmp_path_factory.mktemp("cli") / "people.db"
    with running_server("--database", sqlite_url(path), "--no-access-log") as running:
        yield running


@pytest.fixture(scope="module")
def people(server: ServerProcess) -> People:
    """The `people` command aimed at the shared server."""
    return People(server.target)


@pytest.fixture
def dead_target() -> Iterator[str]:
    """host:port of a socket that is bound but not listening: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


class TestSeedParity:
    """The seed client's commands and output, line for line."""

    def test_add_prints_the_new_id(self, people: People) -> None:
        """`add -n -e` prints "User created successfully - ID = <uuid>" and nothing else."""
        result = people("add", "-n", "Ada Lovelace", "-e", unique_email("ada"))
        assert result.returncode == 0, result.stderr
        assert CREATED.fullmatch(result.stdout), result.stdout
        assert result.stderr == ""

    def test_get_by_id(self, people: People) -> None:
        """`get -i ID` prints "User: ID=…, Name=…, Email=…"."""
        email = unique_email("grace")
        user_id = people.add("Grace Hopper", email)
        assert people.ok("get", "-i", user_id) == (
            f"User: ID={user_id}, Name=Grace Hopper, Email={email}\n"
        )

    def test_get_lists_every_user_in_creation_order(self, people: People) -> None:
        """`get` prints a heading, a blank, one row per user oldest first, a blank, a count."""
        created = [(people.add(name, unique_email(name)), name) for name in ("Al", "Bo", "Cy")]
        lines = people.ok("get").splitlines()
        assert lines[:2] == ["List of retrieved users:", ""]
        rows = lines[2:-2]
        assert lines[-2:] == ["", f"{len(rows)} users retrieved"]
        listed = [(row["id"], row["name"]) for row in parse_rows(rows)]
        assert listed[-3:] == created
        assert len({user_id for user_id, _ in listed}) == len(rows)

    def test_mod_changes_the_name_and_keeps_the_email(self, people: People) -> None:
        """`mod -i ID -n NEW` prints "User with ID <id> updated successfully"; the email stays."""
        email = unique_email("alan")
        user_id = people.add("Alan", email)
        assert people.ok("mod", "-i", user_id, "-n", "Alan Turing") == (
            f"User with ID {user_id} updated successfully\n"
        )
        assert people.ok("get", "-i", user_id) == (
            f"User: ID={user_id}, Name=Alan Turing, Email={email}\n"
        )

    def test_del_removes_the_user(self, people: People) -> None:
        """`del -i ID` prints "User with ID <id> deleted successfully" and the user is gone."""
        user_id = people.add("Temp", unique_email("temp"))
        assert people.ok("del", "-i", user_id) == f"User with ID {user_id} deleted successfully\n"
        assert people("get", "-i", user_id).returncode == 15

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["add", "-n", "Ada"], "Both name and email are required when adding a new user."),
            (["add", "-e", "a@example.com"], "Both name and email are required when adding"),
            (["add"], "Both name and email are required when adding a new user."),
            (["del"], "User ID is required when deleting a user."),
            (["mod", "-n", "Ada"], "User ID is required when updating a user."),
        ],
    )
    def test_usage_errors(self, dead_target: str, args: list[str], message: str) -> None:
        """Missing flags exit 2 with the seed's message, before any connection is tried."""
        result = People(dead_target)(*args)
        assert result.returncode == 2, result.stderr
        assert f"people {args[0]}: error: {message}" in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


class TestTarget:
    """Where the command connects."""

    def test_target_from_the_environment(self, server: ServerProcess) -> None:
        """Without --target, PEOPLE_TARGET names the server."""
        email = unique_email("env")
        result = run_cli(
            "add",
            "-n",
            "From Env",
            "-e",
            email,
            env={**NO_CLIENT_SETTINGS, "PEOPLE_TARGET": server.target},
        )
        assert result.returncode == 0, result.stderr
        assert CREATED.fullmatch(result.stdout)
        assert email in [user["email"] for user in People(server.target).users()]

    def test_flag_wins_over_the_environment(self, server: ServerProcess, dead_target: str) -> None:
        """--target is used even when PEOPLE_TARGET names another (dead) address."""
        result = People(server.target)("get", env={"PEOPLE_TARGET": dead_target})
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("List of retrieved users:\n")


class TestJson:
    """--json prints valid JSON with stable keys."""

    def test_add(self, people: People) -> None:
        """`add --json` prints {"id", "message"}."""
        value = json.loads(people.ok("add", "-n", "Json", "-e", unique_email("json"), "--json"))
        assert list(value) == ["id", "message"]
        assert re.fullmatch(UUID, value["id"])
        assert value["message"] == "User created successfully"

    def test_get_by_id(self, people: People) -> None:
        """`get -i ID --json` prints one user object with exactly the six keys."""
        email = unique_email("one")
        user_id = people.add("One", email)
        user = assert_user_object(json.loads(people.ok("get", "-i", user_id, "--json")))
        assert (user["id"], user["name"], user["email"]) == (user_id, "One", email)
        assert user["etag"] == 'W/"1"'
        assert user["create_time"] == user["update_time"]

    @pytest.mark.parametrize("command", ["get", "list"])
    def test_every_user(self, people: People, command: str) -> None:
        """`get --json` and `list --json` print an array of user objects, oldest first."""
        user_id = people.add("Last", unique_email("last"))
        value = json.loads(people.ok(command, "--json"))
        assert isinstance(value, list)
        users = [assert_user_object(user) for user in value]
        assert users[-1]["id"] == user_id
        created = [datetime.fromisoformat(user["create_time"]) for user in users]
        assert created == sorted(created)

    def test_list_limit(self, people: People) -> None:
        """`list --limit 1 --json` prints the oldest user only."""
        people.add("Someone", unique_email("someone"))
        (first,) = json.loads(people.ok("list", "--limit", "1", "--json"))
        assert first == people.users()[0]

    def test_mod(self, people: People) -> None:
        """`mod --json` prints {"id", "message"}; the etag moves on."""
        user_id = people.add("Before", unique_email("mod"))
        value = json.loads(people.ok("mod", "-i", user_id, "-n", "After", "--json"))
        assert value == {"id": user_id, "message": f"User with ID {user_id} updated successfully"}
        assert list(value) == ["id", "message"]
        after = json.loads(people.ok("get", "-i", user_id, "--json"))
        assert (after["name"], after["etag"]) == ("After", 'W/"2"')

    def test_del(self, people: People) -> None:
        """`del --json` prints {"id", "message"}."""
        user_id = people.add("Gone", unique_email("gone"))
        value = json.loads(people.ok("del", "-i", user_id, "--json"))
        assert value == {"id": user_id, "message": f"User with ID {user_id} deleted successfully"}
        assert list(value) == ["id", "message"]


class TestErrors:
    """A failed call: one line on stderr, no traceback, exit code 10 + gRPC status."""

    @pytest.mark.parametrize(
        "args",
        [["get", "-i"], ["mod", "-n", "X", "-i"], ["del", "-i"]],
        ids=["get", "mod", "del"],
    )
    def test_not_found(self, people: People, args: list[str]) -> None:
        """An unknown id exits 15 (NOT_FOUND) and the message names the id."""
        missing = str(uuid.uuid4())
        message = failure_message(people(*args, missing), args[0], "NOT_FOUND", 15)
        assert missing in message

    def test_email_taken_in_other_case(self, people: People) -> None:
        """An email differing only in case from a taken one exits 16 (ALREADY_EXISTS)."""
        email = unique_email("case")
        people.add("First", email)
        result = people("add", "-n", "Second", "-e", email.upper())
        message = failure_message(result, "add", "ALREADY_EXISTS", 16)
        assert email.split("@")[0].upper() in message

    def test_bad_email(self, people: People) -> None:
        """A malformed email exits 13 (INVALID_ARGUMENT) and says the email is the problem."""
        result = people("add", "-n", "Bad", "-e", "not-an-email")
        assert "email" in failure_message(result, "add", "INVALID_ARGUMENT", 13)

    def test_stale_etag(self, people: People) -> None:
        """`mod --etag stale` exits 20 (ABORTED) and changes nothing."""
        email = unique_email("etag")
        user_id = people.add("Kept", email)
        result = people("mod", "-i", user_id, "-n", "Lost", "--etag", "stale")
        failure_message(result, "mod", "ABORTED", 20)
        assert people.ok("get", "-i", user_id) == f"User: ID={user_id}, Name=Kept, Email={email}\n"

    def test_current_etag_is_accepted(self, people: People) -> None:
        """`mod --etag` with the etag `get --json` showed succeeds."""
        user_id = people.add("Etag", unique_email("etag-ok"))
        etag = json.loads(people.ok("get", "-i", user_id, "--json"))["etag"]
        assert people("mod", "-i", user_id, "-n", "Etag 2", "--etag", etag).returncode == 0

    @pytest.mark.parametrize("command", ["get", "list", "export"])
    def test_unavailable(self, dead_target: str, command: str) -> None:
        """Nothing listening exits 24 (UNAVAILABLE) and the message names the target."""
        message = failure_message(People(dead_target)(command), command, "UNAVAILABLE", 24)
        assert dead_target in message

    def test_tls_to_a_plain_server(self, server: ServerProcess) -> None:
        """--tls against a plain-text server exits 24 and says TLS failed."""
        message = failure_message(People(server.target)("get", "--tls"), "get", "UNAVAILABLE", 24)
        assert "TLS" in message

    @pytest.mark.parametrize("target", ["localhost:notaport", "localhost:99999"])
    def test_malformed_target(self, target: str) -> None:
        """A malformed --target is one line on stderr naming it, exit 1, no traceback."""
        result = People(target)("get")
        assert "Traceback" not in result.stderr
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith("people get: ")
        assert target in result.stderr

    def test_unknown_host(self) -> None:
        """A host name that does not resolve exits 24 with a readable reason."""
        target = "no-such-host.invalid:50051"
        message = failure_message(People(target)("get"), "get", "UNAVAILABLE", 24)
        assert target in message
        assert "Unknown error" not in message

    def test_help_lists_exit_codes(self) -> None:
        """`people --help` documents the exit codes of failed calls."""
        result = run_cli("--help")
        assert result.returncode == 0
        assert "exit codes:" in result.stdout
        for code in (
            "13 INVALID_ARGUMENT",
            "15 NOT_FOUND",
            "16 ALREADY_EXISTS",
            "20 ABORTED",
            "24 UNAVAILABLE",
            "26 UNAUTHENTICATED",
        ):
            assert code in result.stdout

    @pytest.mark.parametrize("command", CLIENT_COMMANDS)
    def test_command_help(self, command: str) -> None:
        """Each client command's --help shows the connection options and the exit codes."""
        result = run_cli(command, "--help")
        assert result.returncode == 0, result.stderr
        for option in CONNECTION_OPTIONS:
            assert option in result.stdout
        assert "exit codes:" in result.stdout
        assert "24 UNAVAILABLE" in result.stdout


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[People]:
    """A server that sends no message over 4096 bytes, holding 200 users."""
    directory = tmp_path_factory.mktemp("small")
    source = directory / "users.jsonl"
    source.write_text(
        "".join(
            json.dumps({"name": f"Small {i}", "email": f"small{i}@example.com"}) + "\n"
            for i in range(SMALL_LIMIT_USERS)
        ),
        encoding="utf-8",
    )
    with running_server(
        "--database",
        sqlite_url(directory / "people.db"),
        "--max-send-message-bytes",
        "4096",
        "--no-access-log",
    ) as running:
        people = People(running.target)
        assert people.ok("import", str(source)).startswith(
            f"{SMALL_LIMIT_USERS} created, 0 already existed, 0 rejected\n"
        )
        yield people


async def test_get_all_users_is_refused(small: People) -> None:
    """The premise: GetAllUsers cannot answer with 200 users under a 4096-byte limit."""
    async with PeopleClient(small.target, timeout=10) as client:
        with pytest.raises(errors.ResourceExhausted):
            await client.get_all()


class TestSmallSendLimit:
    """`people get` pages through ListUsers, so the server's message limit does not cap it."""

    def test_get_lists_every_user(self, small: People) -> None:
        """`people get` still lists all 200 users."""
        result = small("get")
        assert result.returncode == 0, result.stderr
        assert result.stdout.endswith(f"\n{SMALL_LIMIT_USERS} users retrieved\n")


class TestSchema:
    """`people schema`: the service's contract without a server."""

    def test_text_names_the_service_and_its_rpcs(self) -> None:
        """The text holds `service UserService` and one rpc line for each of its RPCs."""
        result = run_cli("schema")
        assert result.returncode == 0, result.stderr
        assert "service UserService {" in result.stdout
        rpcs = re.findall(r"^\s*rpc (\w+) \(", result.stdout, re.MULTILINE)
        assert sorted(rpcs) == sorted(RPCS)

    def test_text_compiles_to_the_embedded_descriptor(self, tmp_path: Path) -> None:
        """protoc compiles the printed text to the FileDescriptorProto people embeds."""
        result = run_cli("schema")
        assert result.returncode == 0, result.stderr
        (tmp_path / "people.proto").write_text(result.stdout, encoding="utf-8")
        include = Path(grpc_tools.__file__).parent / "_proto"
        out = tmp_path / "people.pb"
        code = protoc.main(
            [
                "protoc",
                f"--proto_path={tmp_path}",
                f"--proto_path={include}",
                f"--descriptor_set_out={out}",
                str(tmp_path / "people.proto"),
            ]
        )
        assert code == 0
        compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
        (proto,) = compiled.file
        assert without_json_names(proto) == without_json_names(file_descriptor())

    def test_json(self) -> None:
        """`schema --json` is the descriptor as JSON, with "package": "people"."""
        result = run_cli("schema", "--json")
        assert result.returncode == 0, result.stderr
        value = json.loads(result.stdout)
        assert value["package"] == "people"
        assert value["name"] == "people.proto"
        (service,) = value["service"]
        assert [method["name"] for method in service["method"]] == RPCS


def without_json_names(
    proto: descriptor_pb2.FileDescriptorProto,
) -> descriptor_pb2.FileDescriptorProto:
    """A copy of ``proto`` with every field's json_name cleared (protoc fills them in)."""
    copy = descriptor_pb2.FileDescriptorProto()
    copy.CopyFrom(proto)

    def clear(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            for field in message.field:
                field.ClearField("json_name")
            clear(message.nested_type)

    clear(copy.message_type)
    return copy


class TestImportFiles:
    """`people import` reads JSON Lines or CSV from a file or stdin, and says what it did."""

    def test_csv_with_header(self, people: People, tmp_path: Path) -> None:
        """CSV: columns in any order, a quoted comma kept in a name, a short row rejected."""
        smith, bo, last = unique_email("smith"), unique_email("bo"), unique_email("last")
        source = tmp_path / "users.csv"
        source.write_text(
            f'Note,EMAIL,Name\nx,{smith},"Smith, Ann"\ny,{bo},Bo\nlonely\nz,{last},Last Row\n',
            encoding="utf-8",
        )
        result = people("import", str(source))
        assert result.returncode == 3, result.stderr
        assert result.stdout.splitlines() == [
            "3 created, 0 already existed, 1 rejected",
            "line 4: expected 3 columns, got 1",
        ]
        names = {user["email"]: user["name"] for user in people.users()}
        assert (names[smith], names[bo], names[last]) == ("Smith, Ann", "Bo", "Last Row")

    def test_stdin(self, people: People) -> None:
        """`import -` reads JSON Lines from standard input."""
        emails = [unique_email("stdin") for _ in range(2)]
        lines = "".join(
            json.dumps({"name": f"Piped {i}", "email": email}) + "\n"
            for i, email in enumerate(emails)
        )
        result = people("import", "-", stdin=lines)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "2 created, 0 already existed, 0 rejected\n"
        assert set(emails) <= {user["email"] for user in people.users()}

    def test_json_summary(self, people: People) -> None:
        """`import --json` prints created, existing, rejected (line and reason) and complete."""
        email = unique_email("summary")
        people.add("Existing", email)
        lines = f'{{"name": "Again", "email": "{email}"}}\nnot json\n'
        result = people("import", "-", "--json", stdin=lines)
        assert result.returncode == 3, result.stderr
        value = json.loads(result.stdout)
        assert list(value) == ["created", "existing", "rejected", "complete"]
        assert (value["created"], value["existing"], value["complete"]) == (0, 1, True)
        assert [item["line"] for item in value["rejected"]] == [2]

    def test_progress_on_a_terminal_only(self, people: People, tmp_path: Path) -> None:
        """On a terminal, import draws a bar with the lines done, the rate, the time left and
        the counts on stderr, and erases it; into a pipe it writes none."""
        source = tmp_path / "users.jsonl"
        source.write_text(
            "".join(
                json.dumps({"name": "Tty", "email": unique_email("tty")}) + "\n" for _ in range(300)
            ),
            encoding="utf-8",
        )
        terminal, stderr = os.openpty()
        # A terminal of 30 rows and 160 columns, as a person's would be.
        fcntl.ioctl(stderr, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 160, 0, 0))
        try:
            process = subprocess.Popen(
                [*people_command(), "import", str(source), "--target", people.target],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, **NO_CLIENT_SETTINGS},
                text=True,
            )
            os.close(stderr)
            stdout, _ = process.communicate(timeout=120)
            drawn = _read_all(terminal).decode()
        finally:
            os.close(terminal)
        assert process.returncode == 0
        assert stdout == "300 created, 0 already existed, 0 rejected\n"
        final = drawn.split("\r")[-3]
        assert re.fullmatch(
            r"importing: 100%\|█+\| 300/300 \[\d\d:\d\d<00:00, +[\d.]+ lines/s,"
            r" 300 created, 0 existed, 0 rejected\] *",
            final,
        ), drawn
        assert drawn.endswith("\r" + " " * len(final) + "\r"), drawn  # erased
        piped = people("import", str(source))
        assert "importing" not in piped.stderr
        assert piped.stdout == "0 created, 300 already existed, 0 rejected\n"

    def test_missing_file(self, people: People, tmp_path: Path) -> None:
        """A file that does not exist exits 1 with one line naming it."""
        missing = tmp_path / "nowhere.jsonl"
        result = people("import", str(missing))
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith(f"people import: cannot open {missing}")
        assert result.stdout == ""

    def test_csv_with_byte_order_mark(self, people: People, tmp_path: Path) -> None:
        """A CSV file saved with a UTF-8 byte-order mark still has a usable header."""
        email = unique_email("bom")
        source = tmp_path / "excel.csv"
        source.write_text(f"\ufeffname,email\nBom User,{email}\n", encoding="utf-8")
        result = people("import", str(source))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout == "1 created, 0 already existed, 0 rejected\n"

    def test_failed_export_keeps_the_previous_file(self, dead_target: str, tmp_path: Path) -> None:
        """An export that fails (server unreachable) leaves an existing output file untouched."""
        backup = tmp_path / "backup.jsonl"
        backup.write_text('{"name": "kept"}\n', encoding="utf-8")
        result = People(dead_target)("export", "-o", str(backup))
        assert result.returncode == 24
        assert backup.read_text(encoding="utf-8") == '{"name": "kept"}\n'
        assert [path.name for path in tmp_path.iterdir()] == ["backup.jsonl"]


@dataclass(frozen=True)
class RoundTrip:
    """What the bulk import, export and re-imports printed, and the files they used."""

    valid: set[tuple[str, str]]
    first_import: subprocess.CompletedProcess[str]
    listing: subprocess.CompletedProcess[str]
    export: subprocess.CompletedProcess[str]
    exported: Path
    reimport: subprocess.CompletedProcess[str]
    fresh_import: subprocess.CompletedProcess[str]
    fresh_exported: Path


def write_bulk_file(path: Path) -> set[tuple[str, str]]:
    """Write BULK_USERS valid users plus BULK_BAD_LINES and a blank line; return the valid ones."""
    total = BULK_USERS + len(BULK_BAD_LINES) + 1
    valid: set[tuple[str, str]] = set()
    lines: list[str] = []
    for number in range(1, total + 1):
        if number in BULK_BAD_LINES:
            lines.append(BULK_BAD_LINES[number])
        elif number == BULK_BLANK_LINE:
            lines.append("")
        else:
            index = len(valid)
            # Every seventh name is not ASCII, to carry UTF-8 through both files.
            name = f"Zoë Ångström {index}" if index % 7 == 0 else f"Person {index}"
            user = (name, f"person{index}@example.com")
            valid.add(user)
            lines.append(json.dumps({"name": user[0], "email": user[1]}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert len(valid) == BULK_USERS
    return valid


def exported_users(path: Path) -> list[dict[str, Any]]:
    """The users in an export file, each checked to be a user object."""
    return [assert_user_object(json.loads(line)) for line in path.read_text("utf-8").splitlines()]


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory) -> RoundTrip:
    """Import the bulk file into one server and export it; then, at once, list that server,
    re-import the export into it and import the export into a second, fresh server."""
    directory = tmp_path_factory.mktemp("bulk")
    source = directory / "users.jsonl"
    valid = write_bulk_file(source)
    exported, fresh_exported = directory / "export.jsonl", directory / "fresh.jsonl"
    with (
        running_server("--database", sqlite_url(directory / "a.db"), "--no-access-log") as one,
        running_server("--database", sqlite_url(directory / "b.db"), "--no-access-log") as two,
    ):
        first, fresh = People(one.target), People(two.target)
        first_import = first("import", str(source))
        export = first("export", "-o", str(exported))
        # The three are independent; together they keep both cores busy.
        with ThreadPoolExecutor(max_workers=3) as pool:
            listing = pool.submit(first, "get")
            reimport = pool.submit(first, "import", str(exported))
            fresh_import = pool.submit(fresh, "import", str(exported))
            done = RoundTrip(
                valid=valid,
                first_import=first_import,
                listing=listing.result(),
                export=export,
                exported=exported,
                reimport=reimport.result(),
                fresh_import=fresh_import.result(),
                fresh_exported=fresh_exported,
            )
        fresh.ok("export", "-o", str(fresh_exported))
    return done


class TestBulkRoundTrip:
    """10,000 users: import with bad lines, page through them, export, and import again."""

    def test_import_reports_created_and_rejected_lines(self, round_trip: RoundTrip) -> None:
        """Importing 10,000 good and 4 bad lines exits 3, creates 10,000, names each bad line."""
        result = round_trip.first_import
        assert result.returncode == 3, result.stderr
        lines = result.stdout.splitlines()
        assert (
            lines[0] == f"{BULK_USERS} created, 0 already existed, {len(BULK_BAD_LINES)} rejected"
        )
        numbers = []
        for line in lines[1:]:
            match = re.fullmatch(r"line (\d+): .+", line)
            assert match is not None, line
            numbers.append(int(match[1]))
        assert numbers == sorted(BULK_BAD_LINES)
        assert "not valid JSON" in lines[1]
        assert "email" in lines[2]
        assert "name" in lines[3]
        assert "object" in lines[4]

    def test_get_pages_through_every_user(self, round_trip: RoundTrip) -> None:
        """`people get` lists all 10,000 users (ten ListUsers pages), each once."""
        result = round_trip.listing
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[-1] == f"{BULK_USERS} users retrieved"
        rows = parse_rows(lines[2:-2])
        assert len({row["id"] for row in rows}) == BULK_USERS
        assert {(row["name"], row["email"]) for row in rows} == round_trip.valid

    def test_export_writes_every_user(self, round_trip: RoundTrip) -> None:
        """`export -o OUT` writes 10,000 user lines whose names and emails are the valid input."""
        assert round_trip.export.returncode == 0, round_trip.export.stderr
        assert round_trip.export.stdout == ""
        assert f"exported {BULK_USERS} users" in round_trip.export.stderr
        users = exported_users(round_trip.exported)
        assert len(users) == BULK_USERS
        assert {(user["name"], user["email"]) for user in users} == round_trip.valid

    def test_reimport_creates_nothing(self, round_trip: RoundTrip) -> None:
        """Importing the export into the same server finds every email taken and exits 0."""
        result = round_trip.reimport
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"0 created, {BULK_USERS} already existed, 0 rejected\n"

    def test_fresh_server_reproduces_the_users(self, round_trip: RoundTrip) -> None:
        """Importing the export into an empty server recreates the same names and emails."""
        result = round_trip.fresh_import
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{BULK_USERS} created, 0 already existed, 0 rejected\n"
        users = exported_users(round_trip.fresh_exported)
        assert len(users) == BULK_USERS
        assert {(user["name"], user["email"]) for user in users} == round_trip.valid


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[People, Path]]:
    """A server accepting one bearer token, and the file holding it."""
    directory = tmp_path_factory.mktemp("token")
    tokens = directory / "tokens"
    tokens.write_text(f"# the one token\n{TOKEN}\n", encoding="utf-8")
    with running_server(
        "--database",
        sqlite_url(directory / "people.db"),
        "--token-file",
        str(tokens),
        "--no-access-log",
    ) as running:
        yield People(running.target), tokens


class TestToken:
    """The client's token options against a server started with --token-file."""

    @pytest.mark.parametrize(
        "env", [{}, {"PEOPLE_TOKEN": "wrong-token"}], ids=["no-token", "wrong-token"]
    )
    def test_without_the_token(self, guarded: tuple[People, Path], env: dict[str, str]) -> None:
        """No token, or a wrong one, exits 26 (UNAUTHENTICATED) and never echoes the token."""
        people, _ = guarded
        message = failure_message(people("get", env=env), "get", "UNAUTHENTICATED", 26)
        assert TOKEN not in message

    def test_token_file(self, guarded: tuple[People, Path]) -> None:
        """--token-file (first non-comment line) lets `people get` through."""
        people, tokens = guarded
        result = people("get", "--token-file", str(tokens))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("List of retrieved users:\n")

    def test_token_from_the_environment(self, guarded: tuple[People, Path]) -> None:
        """PEOPLE_TOKEN lets `people add` and `people get` through."""
        people, _ = guarded
        email = unique_email("token")
        added = people("add", "-n", "Tok", "-e", email, env={"PEOPLE_TOKEN": TOKEN})
        assert added.returncode == 0, added.stderr
        listing = people("get", env={"PEOPLE_TOKEN": TOKEN})
        assert listing.returncode == 0, listing.stderr
        assert f"Email: {email}\n" in listing.stdout
