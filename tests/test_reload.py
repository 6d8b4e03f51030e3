"""SIGHUP: the token file and the TLS files are read again, and no connection is dropped."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from people._gen.people import Empty, UserServiceStub
from tests.pki import Pki, client_context
from tests.support import ServerProcess, people_command, running_server

OLD_TOKEN = "reload-old-token-5a7c"
NEW_TOKEN = "reload-new-token-e41b"
RELOADED = "people reloaded"
#: Upper bound for a reload to be logged; only a hang reaches it (not a timing assertion).
RELOAD_TIMEOUT = 20.0
#: What a client sees when the server ends the connection during or after the handshake.
REFUSED = (ssl.SSLError, ConnectionError, StreamTerminatedError)
GET_ALL = "/people.UserService/GetAllUsers"


def write(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content`` in one rename, as a careful operator would."""
    staged = path.with_name(path.name + ".new")
    staged.write_bytes(content)
    os.replace(staged, path)


def der(path: Path) -> bytes:
    """The DER bytes of the PEM certificate in ``path``."""
    return ssl.PEM_cert_to_DER_cert(path.read_text())


@dataclass(frozen=True)
class Files:
    """The files a test server is started with, which the test then rotates."""

    tokens: Path
    cert: Path
    key: Path
    client_ca: Path

    def tls_args(self) -> list[str]:
        """`people serve` flags for TLS with these files."""
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]

    def token_args(self) -> list[str]:
        """`people serve` flags for bearer tokens from these files."""
        return ["--token-file", str(self.tokens)]


@pytest.fixture
def files(tmp_path: Path, pki: Pki) -> Files:
    """The old token, the first server certificate and the test CA, in files of their own."""
    chosen = Files(
        tokens=tmp_path / "tokens",
        cert=tmp_path / "cert.pem",
        key=tmp_path / "key.pem",
        client_ca=tmp_path / "client-ca.pem",
    )
    write(chosen.tokens, f"{OLD_TOKEN}\n".encode())
    write(chosen.cert, pki.server_cert.read_bytes())
    write(chosen.key, pki.server_key.read_bytes())
    write(chosen.client_ca, pki.ca.read_bytes())
    return chosen


def memory() -> list[str]:
    """Flags for a one-process server on a throwaway store, logging JSON."""
    return ["--database", "memory://", "--log-format", "json"]


def shared(tmp_path: Path) -> list[str]:
    """Flags for a two-worker server on a SQLite file, logging JSON."""
    database = f"sqlite:///{tmp_path / 'people.db'}"
    return ["--workers", "2", "--database", database, "--log-format", "json"]


def reloads(server: ServerProcess) -> int:
    """How many reload outcome lines ``server`` has logged."""
    return server.output().count(RELOADED)


async def reload(server: ServerProcess, *, processes: int = 1) -> list[str]:
    """SIGHUP ``server``; wait until each of its serving ``processes`` logged its reload.

    Returns:
        The lines logged meanwhile.
    """
    seen = len(server.log)
    wanted = reloads(server) + processes
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while reloads(server) < wanted:
        assert server.process.poll() is None, server.output()
        assert time.monotonic() < deadline, server.output()
        await asyncio.sleep(0.02)
    return server.log[seen:]


def records(lines: list[str]) -> list[dict[str, object]]:
    """The JSON log records among ``lines``."""
    return [json.loads(line) for line in lines if line.startswith("{")]


def messages(lines: list[str], level: str) -> list[str]:
    """The messages of the records at ``level`` among ``lines``, access records left out."""
    return [
        str(r["message"])
        for r in records(lines)
        if r["level"] == level and r["logger"] != "people.access"
    ]


def peers(server: ServerProcess) -> list[str]:
    """The peer of every access record so far, in order: one address per client connection."""
    return [str(r["peer"]) for r in records(server.log) if r["logger"] == "people.access"]


@asynccontextmanager
async def channel_to(server: ServerProcess, tls: ssl.SSLContext | None) -> AsyncIterator[Channel]:
    """A grpclib channel (one connection) to ``server``, closed afterwards."""
    channel = Channel("127.0.0.1", server.port, ssl=tls)
    try:
        yield channel
    finally:
        channel.close()


async def call(channel: Channel, token: str | None = None) -> Status:
    """GetAllUsers on ``channel`` with ``token``; its status."""
    metadata = {} if token is None else {"authorization": f"Bearer {token}"}
    try:
        await UserServiceStub(channel).get_all_users(Empty(), metadata=metadata, timeout=10)
    except GRPCError as exc:
        return exc.status
    return Status.OK


async def call_anew(server: ServerProcess, token: str | None, tls: ssl.SSLContext | None) -> Status:
    """GetAllUsers with ``token`` on a new connection to ``server``; its status."""
    async with channel_to(server, tls) as channel:
        return await call(channel, token)


async def served_certificate(server: ServerProcess, tls: ssl.SSLContext) -> bytes:
    """The certificate ``server`` presents to a new TLS connection, as DER."""
    _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=tls)
    try:
        connection = writer.get_extra_info("ssl_object")
        assert isinstance(connection, ssl.SSLObject)
        certificate = connection.getpeercert(binary_form=True)
        assert certificate is not None
        return certificate
    finally:
        writer.close()


class TestTokenReload:
    """SIGHUP re-reads --token-file."""

    async def test_new_tokens_apply_to_the_next_call_on_an_open_connection(
        self, files: Files
    ) -> None:
        """After a rotation and SIGHUP the old token is refused and the new one accepted, on
        new connections and on one opened before, which is kept."""
        with running_server(*memory(), *files.token_args()) as server:
            async with channel_to(server, None) as kept:
                assert await call(kept, OLD_TOKEN) is Status.OK
                write(files.tokens, f"# rotated\n{NEW_TOKEN}\n".encode())
                lines = await reload(server)
                assert await call(kept, NEW_TOKEN) is Status.OK
                assert await call(kept, OLD_TOKEN) is Status.UNAUTHENTICATED
            assert await call_anew(server, NEW_TOKEN, None) is Status.OK
            assert await call_anew(server, OLD_TOKEN, None) is Status.UNAUTHENTICATED
            on_kept = peers(server)[:2]
        assert len(set(on_kept)) == 1, server.output()
        assert messages(lines, "INFO") == [f"people reloaded the token file {files.tokens}"]
        assert NEW_TOKEN not in server.output()

    @pytest.mark.parametrize("kind", ["comments-only", "missing"])
    async def test_an_unusable_token_file_keeps_the_old_tokens(
        self, files: Files, kind: str
    ) -> None:
        """A token file without tokens, or gone, is reported by name and the old tokens stay."""
        with running_server(*memory(), *files.token_args()) as server:
            if kind == "missing":
                files.tokens.unlink()
            else:
                write(files.tokens, f"# {NEW_TOKEN} is coming\n".encode())
            lines = await reload(server)
            assert await call_anew(server, OLD_TOKEN, None) is Status.OK
            assert await call_anew(server, NEW_TOKEN, None) is Status.UNAUTHENTICATED
        [error] = messages(lines, "ERROR")
        assert str(files.tokens) in error
        assert "keeping the tokens already loaded" in error
        assert messages(lines, "INFO") == ["people reloaded nothing"]
        assert OLD_TOKEN not in server.output()
        assert NEW_TOKEN not in server.output()


class TestCertificateReload:
    """SIGHUP re-reads --tls-cert, --tls-key and --tls-client-ca."""

    async def test_new_handshakes_get_the_new_certificate(self, files: Files, pki: Pki) -> None:
        """After a rotation and SIGHUP a new connection is shown the new certificate, and a
        connection opened before keeps working."""
        tls = client_context(pki)
        with running_server(*memory(), *files.tls_args()) as server:
            async with channel_to(server, tls) as kept:
                assert await call(kept) is Status.OK
                before = await served_certificate(server, tls)
                write(files.cert, pki.next_server_cert.read_bytes())
                write(files.key, pki.next_server_key.read_bytes())
                lines = await reload(server)
                after = await served_certificate(server, tls)
                assert await call(kept) is Status.OK
            assert await call_anew(server, None, tls) is Status.OK
            on_kept = peers(server)[:2]
        assert before == der(pki.server_cert)
        assert after == der(pki.next_server_cert)
        assert len(set(on_kept)) == 1, server.output()
        assert messages(lines, "INFO") == [f"people reloaded the TLS certificate {files.cert}"]

    @pytest.mark.parametrize("kind", ["not-pem", "key-of-another", "missing"])
    async def test_an_unusable_certificate_keeps_the_old_one(
        self, files: Files, pki: Pki, kind: str
    ) -> None:
        """A certificate that cannot be read or used is reported by name; the old one is served."""
        tls = client_context(pki)
        with running_server(*memory(), *files.tls_args()) as server:
            if kind == "missing":
                files.cert.unlink()
            elif kind == "not-pem":
                write(files.cert, b"not a certificate\n")
            else:
                write(files.cert, pki.next_server_cert.read_bytes())
            lines = await reload(server)
            served = await served_certificate(server, tls)
            assert await call_anew(server, None, tls) is Status.OK
        assert served == der(pki.server_cert)
        [error] = messages(lines, "ERROR")
        assert str(files.cert) in error
        assert "keeping the certificate already loaded" in error
        assert messages(lines, "INFO") == ["people reloaded nothing"]

    async def test_mutual_tls_after_reloads(self, files: Files, pki: Pki) -> None:
        """A reload keeps client certificates required, and a new --tls-client-ca decides which."""
        member = client_context(pki, cert=pki.client_cert, key=pki.client_key)
        stranger = client_context(pki, cert=pki.stranger_cert, key=pki.stranger_key)
        args = [*memory(), *files.tls_args(), "--tls-client-ca", str(files.client_ca)]
        with running_server(*args) as server:
            write(files.cert, pki.next_server_cert.read_bytes())
            write(files.key, pki.next_server_key.read_bytes())
            await reload(server)
            assert await served_certificate(server, member) == der(pki.next_server_cert)
            assert await call_anew(server, None, member) is Status.OK
            with pytest.raises(REFUSED):
                await asyncio.wait_for(call_anew(server, None, client_context(pki)), 10)
            with pytest.raises(REFUSED):
                await asyncio.wait_for(call_anew(server, None, stranger), 10)

            write(files.client_ca, pki.other_ca.read_bytes())
            await reload(server)
            assert await call_anew(server, None, stranger) is Status.OK
            with pytest.raises(REFUSED):
                await asyncio.wait_for(call_anew(server, None, member), 10)


class TestEachFileOnItsOwn:
    """The token file and the TLS files are judged separately."""

    async def test_a_bad_token_file_does_not_stop_a_new_certificate(
        self, files: Files, pki: Pki
    ) -> None:
        """With an unusable token file and a good new certificate, the certificate is taken and
        the old tokens stay."""
        tls = client_context(pki)
        with running_server(*memory(), *files.tls_args(), *files.token_args()) as server:
            write(files.tokens, b"")
            write(files.cert, pki.next_server_cert.read_bytes())
            write(files.key, pki.next_server_key.read_bytes())
            lines = await reload(server)
            assert await served_certificate(server, tls) == der(pki.next_server_cert)
            assert await call_anew(server, OLD_TOKEN, tls) is Status.OK
        [error] = messages(lines, "ERROR")
        assert str(files.tokens) in error
        assert messages(lines, "INFO") == [f"people reloaded the TLS certificate {files.cert}"]


class TestNothingToReload:
    """A server without TLS or tokens."""

    async def test_sighup_is_harmless(self) -> None:
        """SIGHUP to a plain server logs that nothing was reloaded and it goes on serving."""
        with running_server(*memory()) as server:
            lines = await reload(server)
            assert await call_anew(server, None, None) is Status.OK
            assert server.stop() == 0, server.output()
        assert messages(lines, "INFO") == ["people reloaded nothing"]


class TestWorkers:
    """Under --workers the parent forwards SIGHUP to every worker."""

    async def test_every_worker_reloads(self, files: Files, pki: Pki, tmp_path: Path) -> None:
        """Tokens and certificate rotated: every worker reloads both, new connections see the
        new ones, and a connection opened before is kept."""
        tls = client_context(pki)
        args = [*shared(tmp_path), *files.tls_args(), *files.token_args()]
        with running_server(*args) as server:
            async with channel_to(server, tls) as kept:
                assert await call(kept, OLD_TOKEN) is Status.OK
                write(files.tokens, f"{NEW_TOKEN}\n".encode())
                write(files.cert, pki.next_server_cert.read_bytes())
                write(files.key, pki.next_server_key.read_bytes())
                lines = await reload(server, processes=2)
                assert await call(kept, NEW_TOKEN) is Status.OK
                # Several connections, so that the kernel is likely to pick both workers.
                shown = {await served_certificate(server, tls) for _ in range(8)}
                for _ in range(8):
                    assert await call_anew(server, OLD_TOKEN, tls) is Status.UNAUTHENTICATED
                    assert await call_anew(server, NEW_TOKEN, tls) is Status.OK
            on_kept = peers(server)[:2]
            assert server.stop() == 0, server.output()
        assert shown == {der(pki.next_server_cert)}
        assert len(set(on_kept)) == 1, server.output()
        reloaded = f"people reloaded the token file {files.tokens} and the TLS certificate"
        info = messages(lines, "INFO")
        assert "people reloading 2 workers" in info
        assert sum(message.startswith(reloaded) for message in info) == 2

    async def test_unusable_files_are_refused_by_every_worker(
        self, files: Files, pki: Pki, tmp_path: Path
    ) -> None:
        """A bad token file and a bad certificate: each worker logs both errors, keeps both."""
        tls = client_context(pki)
        args = [*shared(tmp_path), *files.tls_args(), *files.token_args()]
        with running_server(*args) as server:
            write(files.tokens, b"\n")
            write(files.cert, b"not a certificate\n")
            lines = await reload(server, processes=2)
            shown = {await served_certificate(server, tls) for _ in range(8)}
            for _ in range(8):
                assert await call_anew(server, OLD_TOKEN, tls) is Status.OK
        assert shown == {der(pki.server_cert)}
        errors = messages(lines, "ERROR")
        assert sum(str(files.tokens) in error for error in errors) == 2
        assert sum(str(files.cert) in error for error in errors) == 2
        assert messages(lines, "INFO").count("people reloaded nothing") == 2

    def test_sighup_during_startup_waits_for_the_worker(self, tmp_path: Path) -> None:
        """SIGHUP while the first worker is still opening the database does not kill it: it
        reloads once it serves."""
        path = tmp_path / "people.db"
        # The first worker's migration waits for this write lock (up to SQLite's busy timeout).
        database = sqlite3.connect(path, isolation_level=None)
        database.execute("PRAGMA journal_mode = WAL")
        database.execute("BEGIN IMMEDIATE")
        try:
            with spawned("--port", "0", "--workers", "2", "--database", f"sqlite:///{path}") as (
                process,
                log,
            ):
                wait_for(log, "people worker 1 started", process)
                process.send_signal(signal.SIGHUP)
                wait_for(log, "people reloading 1 workers", process)
                database.execute("ROLLBACK")
                wait_for(log, "people serving on", process)
                wait_for(log, RELOADED, process)
                process.send_signal(signal.SIGTERM)
                code = process.wait(timeout=RELOAD_TIMEOUT)
        finally:
            database.close()
        assert code == 0, "".join(log)
        assert "exited unexpectedly" not in "".join(log)


@contextmanager
def spawned(*args: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """Start `people serve ARGS` without waiting for it; yield it and its stderr lines so far."""
    process = subprocess.Popen(
        [*people_command(), "serve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log: list[str] = []

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        yield process, log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(RELOAD_TIMEOUT)


def wait_for(log: list[str], text: str, process: subprocess.Popen[str]) -> None:
    """Wait (bounded) until a line in ``log`` contains ``text``."""
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while not any(text in line for line in log):
        assert process.poll() is None, "".join(log)
        assert time.monotonic() < deadline, "".join(log)
        time.sleep(0.02)
