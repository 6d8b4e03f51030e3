"""The seed's own grpcio client, generated and run unchanged against `people serve`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ServerProcess, running_server

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
CREATED = re.compile(rf"^User created successfully - ID = (?P<id>{UUID})$", re.MULTILINE)
CLIENT_TIMEOUT = 60.0

PEOPLE_CONF = '''\
"""The seed client's connection settings, written by the test."""

import grpc

channel = grpc.insecure_channel({target!r})
'''


def clean_environment() -> dict[str, str]:
    """This process's environment without PYTHONPATH, so nothing of ours leaks in."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


@dataclass(frozen=True)
class SeedClient:
    """The seed's client program and its generated stubs in one directory."""

    directory: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``python client.py ARGS`` there and capture what it prints."""
        env = clean_environment()
        env["PYTHONPATH"] = str(self.directory)
        return subprocess.run(
            [sys.executable, "client.py", *args],
            cwd=self.directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )

    def ok(self, *args: str) -> str:
        """Run the client, insist it exits 0, and return its standard output."""
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def add(self, name: str, email: str) -> str:
        """Create a user with the seed's `add` and return the id it printed."""
        match = CREATED.search(self.ok("add", "-n", name, "-e", email))
        assert match is not None
        return match["id"]


@pytest.fixture(scope="module")
def seed_stubs(
    tmp_path_factory: pytest.TempPathFactory, seed_proto_text: str, seed_client_code: str
) -> Path:
    """A directory holding the seed's people.proto, its grpcio stubs and its client."""
    directory = tmp_path_factory.mktemp("seed_client")
    (directory / "people.proto").write_text(seed_proto_text, encoding="utf-8")
    # The command the seed notebook gives, run where the proto is.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--grpc_python_out=.",
            "people.proto",
        ],
        cwd=directory,
        env=clean_environment(),
        check=True,
        capture_output=True,
        timeout=CLIENT_TIMEOUT,
    )
    assert (directory / "people_pb2.py").exists()
    assert (directory / "people_pb2_grpc.py").exists()
    (directory / "client.py").write_text(seed_client_code, encoding="utf-8")
    return directory


def seed_client_for(stubs: Path, server: ServerProcess, directory: Path) -> SeedClient:
    """Copy the seed's files into ``directory`` and point its people_conf at ``server``."""
    directory.mkdir(exist_ok=True)
    for name in ("people_pb2.py", "people_pb2_grpc.py", "client.py"):
        (directory / name).write_bytes((stubs / name).read_bytes())
    (directory / "people_conf.py").write_text(PEOPLE_CONF.format(target=server.target))
    return SeedClient(directory)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`people serve` on a temporary SQLite file, shared by this module."""
    path = tmp_path_factory.mktemp("seed_server") / "people.db"
    with running_server("--database", f"sqlite:///{path}") as running:
        yield running


@pytest.fixture(scope="module")
def client(
    seed_stubs: Path, server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> SeedClient:
    """The seed's client, aimed at the shared server."""
    return seed_client_for(seed_stubs, server, tmp_path_factory.mktemp("client"))


def unique_email() -> str:
    """An email no other test uses."""
    return f"{uuid.uuid4().hex[:12]}@example.com"


class TestSeedClientCode:
    """What the test extracted is the seed's client as written."""

    def test_client_is_the_seed_program(self, seed_client_code: str) -> None:
        """The extracted cell imports people_conf and ends with the seed's run_client call."""
        assert seed_client_code.startswith("import people_pb2\n")
        assert "from people_conf import channel" in seed_client_code
        assert seed_client_code.rstrip().endswith(
            "run_client(args.action, args.name, args.email, args.id)"
        )
        compile(seed_client_code, "client.py", "exec")


class TestSeedClient:
    """Each of the seed client's actions prints what it printed against the seed's server."""

    def test_add(self, client: SeedClient) -> None:
        """`add -n -e` prints "User created successfully - ID = <uuid4>"."""
        out = client.ok("add", "-n", "Ada Lovelace", "-e", unique_email())
        assert CREATED.fullmatch(out.strip()), out

    def test_get_one(self, client: SeedClient) -> None:
        """`get -i` prints the user's id, name and email on one line."""
        email = unique_email()
        user_id = client.add("Ada Lovelace", email)
        out = client.ok("get", "-i", user_id)
        assert out == f"User: ID={user_id}, Name=Ada Lovelace, Email={email}\n"

    def test_get_unknown(self, client: SeedClient) -> None:
        """`get -i` of an unknown id fails with NOT_FOUND and the seed's message."""
        missing = str(uuid.uuid4())
        result = client.run("get", "-i", missing)
        assert result.returncode != 0
        assert "StatusCode.NOT_FOUND" in result.stderr
        assert f"User with ID {missing} not found" in result.stderr

    def test_mod_name_only(self, client: SeedClient) -> None:
        """`mod -i -n` prints the seed's message, changes the name and keeps the email."""
        email = unique_email()
        user_id = client.add("Ada", email)
        out = client.ok("mod", "-i", user_id, "-n", "Ada King")
        assert out == f"User with ID {user_id} updated successfully\n"
        assert client.ok("get", "-i", user_id) == (
            f"User: ID={user_id}, Name=Ada King, Email={email}\n"
        )

    def test_mod_email_only(self, client: SeedClient) -> None:
        """`mod -i -e` changes the email and keeps the name."""
        user_id = client.add("Ada", unique_email())
        email = unique_email()
        client.ok("mod", "-i", user_id, "-e", email)
        assert client.ok("get", "-i", user_id) == f"User: ID={user_id}, Name=Ada, Email={email}\n"

    def test_mod_unknown(self, client: SeedClient) -> None:
        """`mod` of an unknown id fails with NOT_FOUND and the seed's message."""
        missing = str(uuid.uuid4())
        result = client.run("mod", "-i", missing, "-n", "Nobody")
        assert result.returncode != 0
        assert "StatusCode.NOT_FOUND" in result.stderr
        assert f"User with ID {missing} not found" in result.stderr

    def test_del(self, client: SeedClient) -> None:
        """`del -i` prints the seed's deleted message and the user is gone."""
        user_id = client.add("Ada", unique_email())
        assert client.ok("del", "-i", user_id) == f"User with ID {user_id} deleted successfully\n"
        assert "StatusCode.NOT_FOUND" in client.run("get", "-i", user_id).stderr

    def test_del_unknown(self, client: SeedClient) -> None:
        """`del -i` of an unknown id fails with NOT_FOUND and the seed's message."""
        missing = str(uuid.uuid4())
        result = client.run("del", "-i", missing)
        assert result.returncode != 0
        assert "StatusCode.NOT_FOUND" in result.stderr
        assert f"User with ID {missing} not found" in result.stderr

    def test_invalid_email_is_refused(self, client: SeedClient) -> None:
        """Where the seed stored anything, people answers INVALID_ARGUMENT naming the field."""
        result = client.run("add", "-n", "Ada", "-e", "not-an-email")
        assert result.returncode != 0
        assert "StatusCode.INVALID_ARGUMENT" in result.stderr
        assert "invalid email" in result.stderr


class TestSeedClientListing:
    """`get` with no id lists every user, as the seed printed it."""

    def test_get_all(self, seed_stubs: Path, tmp_path: Path) -> None:
        """`get` prints the header, one line per user in creation order, and the count."""
        with running_server("--database", f"sqlite:///{tmp_path / 'people.db'}") as running:
            client = seed_client_for(seed_stubs, running, tmp_path / "client")
            assert client.ok("get") == "List of retrieved users:\n\n\n0 users retrieved\n"
            first = client.add("Ada", "ada@example.com")
            second = client.add("Bob", "bob@example.com")
            out = client.ok("get")
            assert running.stop() == 0, running.output()
        assert out == (
            "List of retrieved users:\n\n"
            f"ID: {first}, Name: Ada, Email: ada@example.com\n"
            f"ID: {second}, Name: Bob, Email: bob@example.com\n"
            "\n2 users retrieved\n"
        )


class TestSeedArgumentValidation:
    """The seed client's own argparse checks still apply (no server involved)."""

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("add", "-n", "Ada"), "Both name and email are required when adding a new user."),
            (("add", "-e", "a@example.com"), "Both name and email are required"),
            (("del",), "User ID is required when deleting a user."),
            (("mod", "-n", "Ada"), "User ID is required when updating a user."),
            (("list",), "invalid choice: 'list'"),
            ((), "the following arguments are required: ACTION"),
        ],
    )
    def test_usage_errors(self, client: SeedClient, args: tuple[str, ...], message: str) -> None:
        """A usage error exits 2 with the seed's message on stderr."""
        result = client.run(*args)
        assert result.returncode == 2
        assert message in result.stderr
        assert result.stdout == ""
