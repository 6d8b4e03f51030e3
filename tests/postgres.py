"""A throwaway PostgreSQL server for tests, and the fixtures built on it.

The server lives in a temporary directory, listens on a free port of 127.0.0.1
(its unix socket stays in that directory too) and trusts local connections.
initdb refuses to run as root, so as root every server binary runs as the
``postgres`` system user.

Without PostgreSQL the tests that need it are skipped, unless
``PEOPLE_REQUIRE_POSTGRES=1`` is set (CI sets it): then they fail, loudly.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import asyncpg
import pytest

REQUIRE_VARIABLE = "PEOPLE_REQUIRE_POSTGRES"
SERVER_USER = "postgres"
COMMAND_TIMEOUT = 60.0
#: Durability is not what these tests are about; skipping fsync keeps them fast.
SERVER_OPTIONS = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


class PostgresUnavailable(RuntimeError):
    """A throwaway PostgreSQL server could not be set up on this machine."""


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; start, stop and restart it.

    Args:
        root: An empty directory the server may own.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self.port = free_port()
        self._as_user = _run_as()

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database, as the superuser."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """The URL of ``database`` on this server, as the superuser."""
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """Create the cluster (initdb).

        Raises:
            PostgresUnavailable: the binaries are missing or initdb failed.
        """
        if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
            raise PostgresUnavailable("initdb and pg_ctl are not on PATH")
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            account = pwd.getpwnam(SERVER_USER)
            for path in (self.root, self.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._run(
            "initdb",
            "--pgdata",
            str(self.data),
            "--username",
            SERVER_USER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections.

        Raises:
            PostgresUnavailable: pg_ctl could not start it.
        """
        options = " ".join(
            [
                "-p",
                str(self.port),
                "-k",
                str(self.socket_dir),
                "-c",
                "listen_addresses=127.0.0.1",
                *SERVER_OPTIONS,
            ]
        )
        self._run(
            "pg_ctl",
            "start",
            "--wait",
            "--pgdata",
            str(self.data),
            "--log",
            str(self.root / "server.log"),
            "-o",
            options,
        )

    def stop(self) -> None:
        """Stop the server at once, closing every client connection (fast mode)."""
        self._run("pg_ctl", "stop", "--wait", "--pgdata", str(self.data), "--mode", "fast")

    def running(self) -> bool:
        """True while the server process is alive."""
        status = subprocess.run(
            [*self._as_user, "pg_ctl", "status", "--pgdata", str(self.data)],
            capture_output=True,
            check=False,
            timeout=COMMAND_TIMEOUT,
        )
        return status.returncode == 0

    async def create_database(self, *, icu_locale: str | None = None) -> str:
        """Create a new empty database and return its URL.

        Args:
            icu_locale: Give the database this ICU collation (e.g. ``en-US``)
                instead of the cluster's default.
        """
        name = f"people_{uuid.uuid4().hex[:12]}"
        collation = (
            f" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}'"
            if icu_locale
            else ""
        )
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"{collation}')
        finally:
            await connection.close()
        return self.url_for(name)

    def _run(self, *command: str) -> None:
        try:
            subprocess.run(
                [*self._as_user, *command],
                capture_output=True,
                text=True,
                check=True,
                timeout=COMMAND_TIMEOUT,
                cwd=self.root,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            log = self.root / "server.log"
            if log.exists():
                detail += log.read_text(errors="replace")[-2000:]
            raise PostgresUnavailable(f"{' '.join(command[:2])} failed: {exc}\n{detail}") from exc


def _run_as() -> list[str]:
    """The prefix that runs a command as the server's user (none unless we are root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailable(f"running as root and there is no {SERVER_USER!r} user") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root and runuser is not installed")
    return [runuser, "-u", SERVER_USER, "--"]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_required() -> bool:
    """True when a missing PostgreSQL must fail the tests instead of skipping them."""
    return os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0")


def unavailable(reason: str) -> NoReturn:
    """Skip the current test for lack of PostgreSQL, or fail it when PostgreSQL is required."""
    if postgres_required():
        pytest.fail(f"{REQUIRE_VARIABLE} is set but PostgreSQL is unavailable: {reason}")
    pytest.skip(f"PostgreSQL is unavailable: {reason}")


def new_root() -> Path:
    """A fresh temporary directory the server's user can reach."""
    root = Path(tempfile.mkdtemp(prefix="people-pg-"))
    root.chmod(0o755)
    return root


def started_server() -> PostgresServer:
    """Initialise and start a new server, or skip/fail the current test."""
    root = new_root()
    try:
        server = PostgresServer(root)
        server.init()
        server.start()
    except PostgresUnavailable as exc:
        shutil.rmtree(root, ignore_errors=True)
        unavailable(str(exc))
    return server


def discard(server: PostgresServer) -> None:
    """Stop ``server`` if it runs and delete its directory."""
    try:
        if server.running():
            server.stop()
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server shared by the whole session (each test makes its own database)."""
    server = started_server()
    yield server
    discard(server)


@pytest.fixture
async def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's server."""
    return await postgres_server.create_database()
