"""What the README promises about the `people` command, each pinned against real servers."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from grpclib.const import Status
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import RequestReceived

from people.cli.exits import exit_code
from people.client import DEFAULT_TIMEOUT, error_for_status
from people.domain.model import User
from people.store.memory import MemoryStore
from tests.inprocess import GatedStore, serving
from tests.pki import Pki
from tests.support import ServerProcess, run_cli, running_server

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CREATED = re.compile(rf"User created successfully - ID = (?P<id>{UUID})\n")
#: Every variable the client reads, emptied (the CLI treats empty as unset).
NO_CLIENT_SETTINGS = {
    f"PEOPLE_{name}": ""
    for name in ("TARGET", "TIMEOUT", "TLS", "CA_FILE", "CLIENT_CERT", "CLIENT_KEY", "TOKEN_FILE")
} | {"PEOPLE_TOKEN": ""}
#: The exit codes the README's table lists for failed calls.
DOCUMENTED_STATUSES = [
    Status.INVALID_ARGUMENT,
    Status.DEADLINE_EXCEEDED,
    Status.NOT_FOUND,
    Status.ALREADY_EXISTS,
    Status.PERMISSION_DENIED,
    Status.RESOURCE_EXHAUSTED,
    Status.ABORTED,
    Status.INTERNAL,
    Status.UNAVAILABLE,
    Status.UNAUTHENTICATED,
]


def people(
    *args: str, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``people ARGS``, deaf to PEOPLE_* variables set outside the test."""
    return run_cli(*args, env={**NO_CLIENT_SETTINGS, **(env or {})}, stdin=stdin, timeout=60)


async def people_async(
    *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """:func:`people` in a thread, so an in-process server on this loop can answer it."""
    return await asyncio.to_thread(people, *args, env=env)


def one_line_failure(result: subprocess.CompletedProcess[str], code: int) -> str:
    """Check ``result`` exited ``code`` with one stderr line and no traceback; return the line."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def unique_email(label: str) -> str:
    """An address no other test uses."""
    return f"{label}-{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `people serve` on a temporary SQLite file for the module's tests."""
    path = tmp_path_factory.mktemp("promises") / "people.db"
    with running_server("--database", f"sqlite:///{path}", "--no-access-log") as running:
        yield running


@pytest.fixture
def dead_target() -> Iterator[str]:
    """host:port of a socket that is bound but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def add(target: str, name: str, email: str) -> str:
    """Create a user with `people add` and return its id."""
    result = people("add", "-n", name, "-e", email, "--target", target)
    match = CREATED.fullmatch(result.stdout)
    assert match is not None, (result.stdout, result.stderr)
    return match["id"]


class TestReadmeSession:
    """The console session at the top of "The command line", line for line."""

    def test_session(self, tmp_path: Path) -> None:
        """add, get, mod, get, a taken email in other case, import, export, del print as shown."""
        with running_server("--database", "memory://", "--no-access-log") as fresh:
            target = ["--target", fresh.target]
            ada = add(fresh.target, "Ada Lovelace", "ada@example.com")
            got = people("get", "-i", ada, *target)
            assert got.stdout == f"User: ID={ada}, Name=Ada Lovelace, Email=ada@example.com\n"
            modded = people("mod", "-i", ada, "-n", "Ada King", *target)
            assert modded.stdout == f"User with ID {ada} updated successfully\n"
            listed = people("get", *target)
            assert listed.stdout == (
                "List of retrieved users:\n\n"
                f"ID: {ada}, Name: Ada King, Email: ada@example.com\n\n"
                "1 users retrieved\n"
            )
            impostor = people("add", "-n", "Impostor", "-e", "ADA@example.com", *target)
            assert one_line_failure(impostor, 16) == (
                "people add: ALREADY_EXISTS: a user with email 'ADA@example.com' already exists"
            )
            source = tmp_path / "users.csv"
            rows = ["name,email", *(f"P {n},p{n}@example.com" for n in range(2, 22))]
            rows[16] = "Bad,not-an-address"
            rows[20] = ",nameless@example.com"
            source.write_text("\n".join(rows) + "\n", encoding="utf-8")
            imported = people("import", str(source), *target)
            assert imported.stdout.splitlines() == [
                "18 created, 0 already existed, 2 rejected",
                "line 17: invalid email: An email address must have an @-sign.",
                "line 21: invalid name: must not be empty",
            ]
            exported = people("export", "-o", str(tmp_path / "backup.jsonl"), *target)
            assert exported.stderr == "exported 19 users\n"
            deleted = people("del", "-i", ada, *target)
            assert deleted.stdout == f"User with ID {ada} deleted successfully\n"


class TestList:
    """`people list`: an aligned table."""

    def test_aligned_table(self, server: ServerProcess) -> None:
        """Headings ID NAME EMAIL CREATE_TIME; each column starts at one place in every row."""
        add(server.target, "Short", unique_email("s"))
        add(server.target, "A much longer name than the heading", unique_email("long-address"))
        result = people("list", "--target", server.target)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split() == ["ID", "NAME", "EMAIL", "CREATE_TIME"]
        starts = [lines[0].index(heading) for heading in ("NAME", "EMAIL", "CREATE_TIME")]
        assert len(lines) >= 3
        for line in lines[1:]:
            for start in starts:
                # Every column begins right after two spaces, at the heading's column.
                assert line[start - 2 : start] == "  ", (line, start)
                assert line[start] != " ", (line, start)
        assert result.stderr.strip() == f"{len(lines) - 1} users"


class TestExport:
    """`people export` without -o."""

    def test_writes_json_lines_to_stdout(self, server: ServerProcess) -> None:
        """Each stdout line is one user object with the six keys; the count goes to stderr."""
        email = unique_email("stdout")
        user_id = add(server.target, "Stdout", email)
        result = people("export", "--target", server.target)
        assert result.returncode == 0, result.stderr
        users = [json.loads(line) for line in result.stdout.splitlines()]
        assert all(
            list(user) == ["id", "name", "email", "etag", "create_time", "update_time"]
            for user in users
        )
        assert {"id": user_id, "email": email}.items() <= users[-1].items()
        assert result.stderr == f"exported {len(users)} users\n"


class TestDelete:
    """`people del --etag`."""

    def test_stale_etag_deletes_nothing(self, server: ServerProcess) -> None:
        """A stale etag exits 20 (ABORTED) and the user is still there."""
        email = unique_email("kept")
        user_id = add(server.target, "Kept", email)
        people("mod", "-i", user_id, "-n", "Kept Too", "--target", server.target)
        result = people("del", "-i", user_id, "--etag", 'W/"1"', "--target", server.target)
        assert one_line_failure(result, 20).startswith("people del: ABORTED: ")
        still = people("get", "-i", user_id, "--target", server.target)
        assert still.stdout == f"User: ID={user_id}, Name=Kept Too, Email={email}\n"


class TestImport:
    """`people import`."""

    def test_csv_from_stdin(self, server: ServerProcess) -> None:
        """`import - --format csv` reads CSV from standard input."""
        first, second = unique_email("csv-a"), unique_email("csv-b")
        text = f"email,name\n{first},Piped One\n{second},Piped Two\n"
        result = people("import", "-", "--format", "csv", "--target", server.target, stdin=text)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "2 created, 0 already existed, 0 rejected\n"
        exported = people("export", "--target", server.target).stdout.splitlines()
        names = {user["email"]: user["name"] for user in map(json.loads, exported)}
        assert (names[first], names[second]) == ("Piped One", "Piped Two")

    def test_imported_users_get_new_ids(self, tmp_path: Path) -> None:
        """An export imported into an empty server makes new ids, none of the exported ones."""
        backup = tmp_path / "backup.jsonl"
        with running_server("--database", "memory://", "--no-access-log") as first:
            for n in range(3):
                add(first.target, f"User {n}", f"user{n}@example.com")
            assert people("export", "-o", str(backup), "--target", first.target).returncode == 0
        with running_server("--database", "memory://", "--no-access-log") as second:
            assert people("import", str(backup), "--target", second.target).returncode == 0
            again = people("export", "--target", second.target).stdout.splitlines()
        before = {json.loads(line)["email"]: json.loads(line)["id"] for line in backup.open()}
        after = {json.loads(line)["email"]: json.loads(line)["id"] for line in again}
        assert set(before) == set(after) == {f"user{n}@example.com" for n in range(3)}
        assert not set(before.values()) & set(after.values())


class HeaderCatcher:
    """A bare HTTP/2 listener that records the headers of the first call, then hangs up."""

    def __init__(self) -> None:
        self.headers: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Speak HTTP/2 until a request arrives, keep its headers and close."""
        h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        h2.initiate_connection()
        writer.write(h2.data_to_send())
        try:
            while not self.headers.done() and (data := await reader.read(65536)):
                for event in h2.receive_data(data):
                    if isinstance(event, RequestReceived) and not self.headers.done():
                        self.headers.set_result({str(k): str(v) for k, v in event.headers or []})
                writer.write(h2.data_to_send())
        finally:
            writer.close()


@asynccontextmanager
async def catching_headers() -> AsyncIterator[tuple[str, HeaderCatcher]]:
    """A :class:`HeaderCatcher` listening on a free port: its target, and itself."""
    catcher = HeaderCatcher()
    listener = await asyncio.start_server(catcher.handle, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{listener.sockets[0].getsockname()[1]}", catcher
    finally:
        listener.close()


def grpc_timeout_seconds(value: str) -> float:
    """A ``grpc-timeout`` header value in seconds."""
    units = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
    return int(value[:-1]) * units[value[-1]]


class NeverAnswering(GatedStore):
    """A store whose writes wait at a closed gate, counting those that arrived."""

    arrived = 0

    async def add(self, user: User) -> None:
        """Count, then wait at the gate."""
        self.arrived += 1
        await super().add(user)


class TestTimeout:
    """`--timeout` and PEOPLE_TIMEOUT: how long a call may take."""

    @pytest.mark.parametrize(
        ("flag", "variable", "seconds"),
        [
            pytest.param([], "", DEFAULT_TIMEOUT, id="default"),
            pytest.param([], "3", 3.0, id="variable"),
            pytest.param(["--timeout", "2"], "3", 2.0, id="flag-wins"),
        ],
    )
    async def test_deadline_sent(self, flag: list[str], variable: str, seconds: float) -> None:
        """The call's grpc-timeout is 10 s by default, PEOPLE_TIMEOUT's, or --timeout's."""
        assert DEFAULT_TIMEOUT == 10
        async with catching_headers() as (target, catcher):
            call = asyncio.create_task(
                people_async(
                    "get", "-i", "x", "--target", target, *flag, env={"PEOPLE_TIMEOUT": variable}
                )
            )
            headers = await asyncio.wait_for(catcher.headers, 30)
            await call
        # What is left of the deadline when the headers are sent: a little under it.
        assert seconds - 1 < grpc_timeout_seconds(headers["grpc-timeout"]) <= seconds

    @pytest.mark.parametrize("how", ["flag", "variable"])
    async def test_call_past_its_deadline_exits_14(self, how: str) -> None:
        """A call the server never answers ends at the deadline with exit 14 DEADLINE_EXCEEDED."""
        store = NeverAnswering()
        async with serving(store=store) as served:
            target = f"127.0.0.1:{served.port}"
            args = ["--timeout", "0.3"] if how == "flag" else []
            env = {"PEOPLE_TIMEOUT": "0.3"} if how == "variable" else {}
            result = await people_async(
                "add", "-n", "Slow", "-e", "slow@example.com", "--target", target, *args, env=env
            )
            reached = store.arrived
            store.gate.set()
        assert reached == 1
        assert one_line_failure(result, 14).startswith("people add: DEADLINE_EXCEEDED: ")


class FailingStore(MemoryStore):
    """A memory store whose writes fail in a way nobody planned for."""

    async def add(self, user: User) -> None:
        """Fail unexpectedly."""
        raise RuntimeError("nobody planned for this")


class TestStatusExitCodes:
    """A failed call exits 10 + its gRPC status."""

    @pytest.mark.parametrize("status", [s for s in Status if s is not Status.OK], ids=str)
    def test_every_status(self, status: Status) -> None:
        """The error a status stands for exits with 10 + the status, whatever the status."""
        assert exit_code(error_for_status(status, "")) == 10 + status.value

    def test_documented_codes(self) -> None:
        """The README's table: 13, 14, 15, 16, 17, 18, 20, 23, 24, 26."""
        assert [10 + status.value for status in DOCUMENTED_STATUSES] == [
            13, 14, 15, 16, 17, 18, 20, 23, 24, 26,
        ]  # fmt: skip

    def test_message_too_large_exits_18(self) -> None:
        """A request over the server's receive limit exits 18 RESOURCE_EXHAUSTED."""
        args = ["--database", "memory://", "--max-receive-message-bytes", "1024"]
        with running_server(*args) as small:
            result = people(
                "add", "-n", "N" * 2000, "-e", "big@example.com", "--target", small.target
            )
        assert one_line_failure(result, 18).startswith("people add: RESOURCE_EXHAUSTED: ")

    async def test_unexpected_server_failure_exits_23(self) -> None:
        """A store failing in an unplanned way exits 23 INTERNAL, with a generic message."""
        async with serving(store=FailingStore()) as served:
            result = await people_async(
                "add", "-n", "Ann", "-e", "ann@example.com", "--target", f"127.0.0.1:{served.port}"
            )
        line = one_line_failure(result, 23)
        assert line.startswith("people add: INTERNAL: ")
        assert "nobody planned" not in line


class TestLocalProblems:
    """Exit 1: a local problem, one line on stderr, no traceback, no call made."""

    def test_export_into_a_missing_directory(self, dead_target: str, tmp_path: Path) -> None:
        """`export -o` into a directory that does not exist."""
        missing = tmp_path / "nowhere"
        result = people("export", "-o", str(missing / "out.jsonl"), "--target", dead_target)
        line = one_line_failure(result, 1)
        assert line.startswith("people export: cannot open ")
        assert str(missing) in line

    def test_missing_token_file(self, dead_target: str, tmp_path: Path) -> None:
        """--token-file naming no file; the line names it."""
        missing = tmp_path / "tokens"
        result = people("get", "--token-file", str(missing), "--target", dead_target)
        assert str(missing) in one_line_failure(result, 1)

    def test_missing_ca_file(self, dead_target: str, tmp_path: Path) -> None:
        """--ca-file naming no file."""
        result = people("get", "--ca-file", str(tmp_path / "ca.pem"), "--target", dead_target)
        assert "TLS" in one_line_failure(result, 1)

    @pytest.mark.parametrize("variable", ["PEOPLE_TIMEOUT", "PEOPLE_TARGET"])
    def test_malformed_variable(self, variable: str) -> None:
        """A PEOPLE_TIMEOUT or PEOPLE_TARGET that cannot be used, named in the line."""
        value = {"PEOPLE_TIMEOUT": "soon", "PEOPLE_TARGET": "localhost:notaport"}[variable]
        result = people("get", env={variable: value})
        assert value in one_line_failure(result, 1)


class TestUsageErrors:
    """Exit 2: the command line (or a server setting) is wrong, before anything runs."""

    @pytest.mark.parametrize(
        "args",
        [
            pytest.param(["get", "--timeout", "soon"], id="flag-not-a-number"),
            pytest.param(["get", "--no-such-flag"], id="unknown-flag"),
            pytest.param(["add", "-n", "Ada"], id="missing-flag"),
            pytest.param(["serve", "--port", "70000"], id="serve-out-of-range"),
        ],
    )
    def test_exit_2(self, args: list[str], dead_target: str) -> None:
        """Each exits 2 with a message on stderr and no traceback."""
        extra = [] if args[0] == "serve" else ["--target", dead_target]
        result = people(*args, *extra)
        assert result.returncode == 2, result.stderr
        assert result.stderr
        assert "Traceback" not in result.stderr

    def test_serve_variable_out_of_range(self) -> None:
        """A `people serve` setting from its variable that cannot be used exits 2 too."""
        result = people("serve", env={"PEOPLE_PORT": "soon"})
        assert one_line_failure(result, 2) == "people serve: PEOPLE_PORT='soon' is not a valid int"


@pytest.fixture(scope="module")
def env_tls_server(pki: Pki) -> Iterator[ServerProcess]:
    """`people serve` told to speak TLS by PEOPLE_TLS_CERT and PEOPLE_TLS_KEY alone."""
    env = {"PEOPLE_TLS_CERT": str(pki.server_cert), "PEOPLE_TLS_KEY": str(pki.server_key)}
    with running_server("--database", "memory://", "--no-access-log", env=env) as server:
        yield server


@pytest.fixture(scope="module")
def env_mtls_server(pki: Pki) -> Iterator[ServerProcess]:
    """`people serve` wanting client certificates, configured by PEOPLE_TLS_* alone."""
    env = {
        "PEOPLE_TLS_CERT": str(pki.server_cert),
        "PEOPLE_TLS_KEY": str(pki.server_key),
        "PEOPLE_TLS_CLIENT_CA": str(pki.ca),
    }
    with running_server("--database", "memory://", "--no-access-log", env=env) as server:
        yield server


def localhost(server: ServerProcess) -> str:
    """The server's target by the name its certificate carries."""
    return f"localhost:{server.port}"


class TestTlsOptions:
    """The CLI's TLS options and variables, against servers configured by variables."""

    def test_server_tls_from_variables(self, env_tls_server: ServerProcess, pki: Pki) -> None:
        """The server speaks TLS: plain text fails (24), trusting its CA works."""
        plain = people("get", "--target", localhost(env_tls_server))
        assert plain.returncode == 24, plain.stderr
        trusting = people("get", "--target", localhost(env_tls_server), "--ca-file", str(pki.ca))
        assert trusting.returncode == 0, trusting.stderr

    def test_ca_file_variable_implies_tls(self, env_tls_server: ServerProcess, pki: Pki) -> None:
        """PEOPLE_CA_FILE alone turns TLS on and trusts that CA."""
        result = people(
            "get", "--target", localhost(env_tls_server), env={"PEOPLE_CA_FILE": str(pki.ca)}
        )
        assert result.returncode == 0, result.stderr

    def test_tls_variable(self, env_tls_server: ServerProcess, pki: Pki) -> None:
        """PEOPLE_TLS=1 alone turns TLS on with the system's CAs (here SSL_CERT_FILE's)."""
        system = {"SSL_CERT_FILE": str(pki.ca)}
        without = people("get", "--target", localhost(env_tls_server), env=system)
        assert without.returncode == 24, without.stderr
        result = people(
            "get", "--target", localhost(env_tls_server), env={**system, "PEOPLE_TLS": "1"}
        )
        assert result.returncode == 0, result.stderr

    def test_client_cert_flag_implies_tls(self, env_mtls_server: ServerProcess, pki: Pki) -> None:
        """--client-cert and --client-key without --tls or --ca-file speak mTLS."""
        result = people(
            "get", "--target", localhost(env_mtls_server),
            "--client-cert", str(pki.client_cert), "--client-key", str(pki.client_key),
            env={"SSL_CERT_FILE": str(pki.ca)},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    def test_client_cert_variables(self, env_mtls_server: ServerProcess, pki: Pki) -> None:
        """PEOPLE_CA_FILE, PEOPLE_CLIENT_CERT and PEOPLE_CLIENT_KEY alone speak mTLS."""
        env = {
            "PEOPLE_CA_FILE": str(pki.ca),
            "PEOPLE_CLIENT_CERT": str(pki.client_cert),
            "PEOPLE_CLIENT_KEY": str(pki.client_key),
        }
        result = people("get", "--target", localhost(env_mtls_server), env=env)
        assert result.returncode == 0, result.stderr
        without_certificate = people(
            "get", "--target", localhost(env_mtls_server), env={"PEOPLE_CA_FILE": str(pki.ca)}
        )
        assert without_certificate.returncode == 24, without_certificate.stderr


class TestTokenFileVariable:
    """PEOPLE_TOKEN_FILE, the variable of --token-file."""

    def test_token_file_from_the_variable(self, tmp_path: Path) -> None:
        """PEOPLE_TOKEN_FILE alone lets a call through a server that wants a token."""
        tokens = tmp_path / "tokens"
        tokens.write_text("cli-promise-token-81c2\n", encoding="utf-8")
        args = ["--database", "memory://", "--no-access-log", "--token-file", str(tokens)]
        with running_server(*args) as guarded:
            refused = people("get", "--target", guarded.target)
            allowed = people(
                "get", "--target", guarded.target, env={"PEOPLE_TOKEN_FILE": str(tokens)}
            )
        assert refused.returncode == 26, refused.stderr
        assert allowed.returncode == 0, allowed.stderr


class TestServeCannotStart:
    """`people serve` that cannot start exits 1 with one line."""

    def test_port_taken(self) -> None:
        """A port another socket listens on: exit 1, the line names the address."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = people("serve", "--database", "memory://", "--port", str(port))
        line = one_line_failure(result, 1)
        assert line.startswith(f"people serve: cannot listen on 127.0.0.1:{port}: ")
