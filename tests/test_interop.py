"""Non-Python clients call the new RPCs of a real `people serve`: `buf curl` knowing the
service only through reflection, and grpc-js knowing it only through proto/people.proto.

The node packages (tests/interop/package.json, locked) come from the directory named by
PEOPLE_INTEROP_DIR, which .ci/run prepares with `npm ci`; without it they are installed
once into the pytest cache. Where node, npm or the packages cannot be had the tests are
skipped, unless PEOPLE_REQUIRE_INTEROP=1 (CI sets it): then they fail, and nothing is
fetched from the network at test time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.support import ServerProcess, running_server

REQUIRE_VARIABLE = "PEOPLE_REQUIRE_INTEROP"
DIRECTORY_VARIABLE = "PEOPLE_INTEROP_DIR"
PACKAGES = Path(__file__).parent / "interop"
PROTO_DIR = Path(__file__).parent.parent / "proto"
INSTALL_TIMEOUT = 300
CALL_TIMEOUT = 60


def interop_required() -> bool:
    """True when missing tools must fail the tests instead of skipping them."""
    return os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0")


def unavailable(reason: str) -> NoReturn:
    """Skip for lack of the node tools, or fail when they are required."""
    if interop_required():
        pytest.fail(f"{REQUIRE_VARIABLE} is set but the interop tools are unavailable: {reason}")
    pytest.skip(f"interop tools unavailable: {reason}")


def installed(root: Path) -> bool:
    """True if ``root`` holds the locked packages (installed from this very lock file)."""
    lock = root / "package-lock.json"
    return (
        (root / "node_modules" / ".bin" / "buf").exists()
        and (root / "node_modules" / "@grpc" / "grpc-js").is_dir()
        and (root / "node_modules" / "@grpc" / "proto-loader").is_dir()
        and lock.exists()
        and lock.read_bytes() == (PACKAGES / "package-lock.json").read_bytes()
    )


def install(root: Path) -> None:
    """`npm ci` the locked packages into ``root`` (scripts off: buf needs none)."""
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed")
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(PACKAGES / name, root / name)
    try:
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix", str(root)],
            capture_output=True,
            check=True,
            timeout=INSTALL_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        unavailable(f"npm ci failed: {exc}")


@pytest.fixture(scope="session")
def node_modules(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The node_modules directory holding buf, grpc-js and proto-loader."""
    if shutil.which("node") is None:
        unavailable("node is not installed")
    prepared = os.environ.get(DIRECTORY_VARIABLE)
    if prepared:
        root = Path(prepared)
    elif interop_required():
        unavailable(f"{DIRECTORY_VARIABLE} does not name the directory .ci/run prepared")
    else:
        # The pytest cache keeps the download between runs; without it (-p no:cacheprovider)
        # this run's temporary directory does.
        cache = getattr(request.config, "cache", None)
        if cache is not None:
            root = Path(cache.mkdir("people-interop"))
        else:
            root = tmp_path_factory.mktemp("people-interop")
        if not installed(root):
            install(root)
    if not installed(root):
        unavailable(f"{root} does not hold the packages of {PACKAGES / 'package-lock.json'}")
    return root / "node_modules"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A `people serve` on a fresh SQLite file."""
    with running_server("--database", f"sqlite:///{tmp_path / 'people.db'}") as running:
        yield running


def buf_curl(
    node_modules: Path, server: ServerProcess, method: str, body: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """`buf curl` one method (or --list-methods) of the server, with its schema from reflection."""
    command = [
        str(node_modules / ".bin" / "buf"),
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
    ]
    if body is None:
        command += ["--list-methods", f"http://{server.address}"]
    else:
        command += ["-d", json.dumps(body), f"http://{server.address}/people.UserService/{method}"]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=CALL_TIMEOUT, check=False
    )


def answer(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON answer of a successful `buf curl`."""
    assert result.returncode == 0, result.stderr
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


class TestBufCurl:
    """`buf curl` through server reflection, with no proto file."""

    def test_lists_the_new_methods(self, node_modules: Path, server: ServerProcess) -> None:
        """Reflection lists BatchGetUsers and BatchCreateUsers beside the older RPCs."""
        methods = buf_curl(node_modules, server, "").stdout.split()
        assert "people.UserService/BatchGetUsers" in methods
        assert "people.UserService/BatchCreateUsers" in methods
        assert "people.UserService/ListUsers" in methods

    def test_batches_and_filter(self, node_modules: Path, server: ServerProcess) -> None:
        """BatchCreateUsers, BatchGetUsers and a filtered, ordered ListUsers answer in JSON."""
        created = answer(
            buf_curl(
                node_modules,
                server,
                "BatchCreateUsers",
                {
                    "requests": [
                        {"name": "Grace Hopper", "email": "grace@acme.com"},
                        {"name": "Ada Lovelace", "email": "ada@example.com"},
                        {"name": "Alan Turing", "email": "alan@acme.com"},
                    ]
                },
            )
        )
        ids = [user["id"] for user in created["users"]]
        assert [user["etag"] for user in created["users"]] == ['W/"1"'] * 3
        fetched = answer(buf_curl(node_modules, server, "BatchGetUsers", {"ids": ids[::-1]}))
        assert [user["name"] for user in fetched["users"]] == [
            "Alan Turing",
            "Ada Lovelace",
            "Grace Hopper",
        ]
        listed = answer(
            buf_curl(
                node_modules,
                server,
                "ListUsers",
                {"filter": 'email = "*@ACME.com"', "orderBy": "name desc"},
            )
        )
        assert [user["name"] for user in listed["users"]] == ["Grace Hopper", "Alan Turing"]

    def test_failed_batch_names_the_entry(self, node_modules: Path, server: ServerProcess) -> None:
        """A batch repeating an email fails with already_exists naming requests[1], and
        nothing of it is stored."""
        result = buf_curl(
            node_modules,
            server,
            "BatchCreateUsers",
            {
                "requests": [
                    {"name": "Ada", "email": "ada@example.com"},
                    {"name": "Again", "email": "ADA@example.com"},
                ]
            },
        )
        assert result.returncode != 0
        assert "already_exists" in result.stderr
        assert "requests[1]" in result.stderr
        assert answer(buf_curl(node_modules, server, "ListUsers", {})).get("users", []) == []


class TestGrpcJs:
    """grpc-js with @grpc/proto-loader, from proto/people.proto."""

    def test_batches_and_filter(self, node_modules: Path, server: ServerProcess) -> None:
        """The proto file is enough to call the new RPCs and read their answers and errors."""
        result = subprocess.run(
            ["node", str(PACKAGES / "client.js"), server.address, str(PROTO_DIR)],
            capture_output=True,
            text=True,
            timeout=CALL_TIMEOUT,
            check=False,
            env={**os.environ, "NODE_PATH": str(node_modules)},
        )
        assert result.returncode == 0, result.stderr
        value = json.loads(result.stdout)
        created = value["created"]["users"]
        assert [user["name"] for user in created] == ["Grace Hopper", "Ada Lovelace", "Alan Turing"]
        assert all(user["create_time"]["seconds"] for user in created)
        assert [user["id"] for user in value["fetched"]["users"]] == [
            created[2]["id"],
            created[0]["id"],
        ]
        assert [user["name"] for user in value["listed"]["users"]] == [
            "Grace Hopper",
            "Alan Turing",
        ]
        assert value["repeated"] == {
            "code": 6,  # ALREADY_EXISTS
            "details": "requests[1]: a user with email 'ADA@example.com' already exists",
        }
        assert value["missing"] == {"code": 5, "details": "User with ID no-such-id not found"}
        assert value["after"]["users"] == []  # nothing of the failed batch was stored
