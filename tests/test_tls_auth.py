"""TLS, mutual TLS and bearer tokens: who may talk to a server, and how it refuses the rest."""

from __future__ import annotations

import asyncio
import hmac
import ssl
import subprocess
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol, cast

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from people import PeopleClient, Unavailable
from people._gen.people import CreateUserRequest, Empty, UserIdRequest, UserServiceStub
from people.client import tls_context
from people.rpc.auth import Token, TokenAuth
from people.server.compose import build_services
from people.server.settings import Settings
from people.store.memory import MemoryStore
from tests.inprocess import call_raw, serving
from tests.pki import Pki, client_context
from tests.support import ServerProcess, free_args, run_cli, running_server

#: How long a refused client may take to find out; a hang fails the test instead.
REFUSAL_TIMEOUT = 5.0
#: What a client sees when the server ends the connection during or after the handshake.
REFUSED = (ssl.SSLError, ConnectionError, StreamTerminatedError)

TOKEN_ONE = "t0k3n-one-6b1d0c2a"
TOKEN_TWO = "t0k3n-two-93fe47d1"
TOKEN_COMMENT = "# tokens for the people tests"


@asynccontextmanager
async def channel_to(
    server: ServerProcess, context: ssl.SSLContext | None
) -> AsyncIterator[Channel]:
    """A grpclib channel to ``server``, over TLS when ``context`` is given."""
    channel = Channel("127.0.0.1", server.port, ssl=context)
    try:
        yield channel
    finally:
        channel.close()


async def refusal(call: Awaitable[object]) -> BaseException:
    """Await ``call`` and return what it raised, failing if it succeeded or hung."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(call, REFUSAL_TIMEOUT)
    except TimeoutError:
        pytest.fail(f"no answer within {REFUSAL_TIMEOUT}s: the client hung")
    except REFUSED as exc:
        assert time.monotonic() - started < REFUSAL_TIMEOUT
        return exc
    pytest.fail("the call succeeded")


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[ServerProcess]:
    """`people serve` with a server certificate and no client authentication."""
    args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    with running_server(*free_args(args)) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(pki: Pki) -> Iterator[ServerProcess]:
    """`people serve` that wants a client certificate signed by the test CA."""
    args = [
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca),
    ]  # fmt: skip
    with running_server(*free_args(args)) as server:
        yield server


class TestTls:
    """A server with --tls-cert and --tls-key."""

    async def test_trusted_client_calls(self, tls_server: ServerProcess, pki: Pki) -> None:
        """A client trusting the CA can create a user and read it back over TLS."""
        async with channel_to(tls_server, client_context(pki)) as channel:
            stub = UserServiceStub(channel)
            created = await stub.create_user(
                CreateUserRequest(name="Tess", email="tess@example.com"), timeout=10
            )
            everyone = await stub.get_all_users(Empty(), timeout=10)
            fetched = await stub.get_user_by_id(UserIdRequest(id=created.id), timeout=10)
        assert created.id in [user.id for user in everyone.user]
        assert fetched.name == "Tess"

    async def test_alpn_is_h2(self, tls_server: ServerProcess, pki: Pki) -> None:
        """The server picks h2 by ALPN even when the client would also take HTTP/1.1."""
        context = client_context(pki)
        context.set_alpn_protocols(["http/1.1", "h2"])
        _, writer = await asyncio.open_connection("127.0.0.1", tls_server.port, ssl=context)
        try:
            tls = writer.get_extra_info("ssl_object")
            assert isinstance(tls, ssl.SSLObject)
            assert tls.selected_alpn_protocol() == "h2"
        finally:
            writer.close()

    async def test_plain_text_client_fails_fast(self, tls_server: ServerProcess) -> None:
        """A client without TLS gets an error at once rather than hanging on the TLS port."""
        async with channel_to(tls_server, None) as channel:
            await refusal(UserServiceStub(channel).get_all_users(Empty()))

    async def test_tls_1_1_is_refused(self, tls_server: ServerProcess, pki: Pki) -> None:
        """A client that speaks at most TLS 1.1 cannot complete a handshake."""
        context = client_context(pki)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 and 1.1 are deprecated
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        # Without this the client's own OpenSSL would refuse TLS 1.1, proving nothing.
        context.set_ciphers("ALL:@SECLEVEL=0")
        await refusal(asyncio.open_connection("127.0.0.1", tls_server.port, ssl=context))

    async def test_tls_1_2_is_accepted(self, tls_server: ServerProcess, pki: Pki) -> None:
        """TLS 1.2 is the minimum, not more: a client capped at TLS 1.2 can call."""
        context = client_context(pki)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        async with channel_to(tls_server, context) as channel:
            await UserServiceStub(channel).get_all_users(Empty(), timeout=10)


class TestMutualTls:
    """A server with --tls-client-ca."""

    async def test_client_without_certificate_is_refused(
        self, mtls_server: ServerProcess, pki: Pki
    ) -> None:
        """A client that presents no certificate gets no answer, only a closed connection."""
        async with channel_to(mtls_server, client_context(pki)) as channel:
            await refusal(UserServiceStub(channel).get_all_users(Empty()))

    async def test_client_with_certificate_from_another_ca_is_refused(
        self, mtls_server: ServerProcess, pki: Pki
    ) -> None:
        """A certificate the configured client CA did not sign is as good as none."""
        context = client_context(pki, cert=pki.stranger_cert, key=pki.stranger_key)
        async with channel_to(mtls_server, context) as channel:
            await refusal(UserServiceStub(channel).get_all_users(Empty()))

    async def test_client_with_certificate_calls(
        self, mtls_server: ServerProcess, pki: Pki
    ) -> None:
        """A client certificate signed by the configured CA lets the client call."""
        context = client_context(pki, cert=pki.client_cert, key=pki.client_key)
        async with channel_to(mtls_server, context) as channel:
            stub = UserServiceStub(channel)
            await stub.create_user(
                CreateUserRequest(name="Mia", email="mia@example.com"), timeout=10
            )
            everyone = await stub.get_all_users(Empty(), timeout=10)
        assert [user.name for user in everyone.user] == ["Mia"]


class TestClients:
    """people's own client library and CLI speak TLS and mTLS with the matching options."""

    async def test_people_client_with_ca_file(self, tls_server: ServerProcess, pki: Pki) -> None:
        """PeopleClient with tls_context(ca_file=...) calls a TLS server; without it, TLS fails."""
        context = tls_context(ca_file=pki.ca)
        async with PeopleClient(f"localhost:{tls_server.port}", tls=context) as people:
            user_id = await people.create("Cleo", "cleo@example.com")
            assert (await people.get(user_id)).name == "Cleo"
        async with PeopleClient(f"localhost:{tls_server.port}", tls=True) as untrusting:
            with pytest.raises(Unavailable, match="TLS"):
                await untrusting.get_all()

    async def test_people_client_with_client_certificate(
        self, mtls_server: ServerProcess, pki: Pki
    ) -> None:
        """PeopleClient presents a client certificate for mTLS."""
        context = tls_context(pki.ca, pki.client_cert, pki.client_key)
        async with PeopleClient(f"localhost:{mtls_server.port}", tls=context) as people:
            assert isinstance(await people.get_all(), list)

    def test_cli_with_ca_file_and_client_certificate(
        self, mtls_server: ServerProcess, pki: Pki
    ) -> None:
        """`people add/get` with --ca-file, --client-cert and --client-key work against mTLS."""
        options = [
            "--target", f"localhost:{mtls_server.port}", "--ca-file", str(pki.ca),
            "--client-cert", str(pki.client_cert), "--client-key", str(pki.client_key),
        ]  # fmt: skip
        added = run_cli("add", "-n", "Dora", "-e", "dora@example.com", *options)
        assert added.returncode == 0, added.stderr
        listed = run_cli("get", *options)
        assert "Email: dora@example.com" in listed.stdout
        refused = run_cli(
            "get", "--target", f"localhost:{mtls_server.port}", "--ca-file", str(pki.ca)
        )
        assert refused.returncode == 24, refused.stderr


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """Two tokens, a comment and a blank line."""
    path = tmp_path / "tokens"
    path.write_text(f"{TOKEN_COMMENT}\n{TOKEN_ONE}\n\n  {TOKEN_TWO}  \n", encoding="utf-8")
    return path


class Servable(Protocol):
    """What grpclib asks of a servicer: its methods by path."""

    def __mapping__(self) -> Mapping[str, object]: ...


def guarded_methods() -> list[str]:
    """Every method a people server serves, health's aside."""
    settings = Settings(database="memory://")
    return sorted(
        method
        for service in build_services(MemoryStore(), settings)
        for method in cast(Servable, service).__mapping__()
        if not method.startswith("/grpc.health.v1.Health/")
    )


GUARDED_METHODS = guarded_methods()


def bearer(token: str) -> dict[str, str]:
    """Call metadata carrying ``token``."""
    return {"authorization": f"Bearer {token}"}


class TestTokenAuth:
    """A server with --token-file."""

    @pytest.mark.parametrize(
        "metadata",
        [
            pytest.param({}, id="missing"),
            pytest.param(bearer("not-a-token"), id="wrong"),
            pytest.param(bearer(TOKEN_ONE[:-1]), id="prefix"),
            pytest.param(bearer(TOKEN_COMMENT), id="comment-line"),
            pytest.param(bearer(""), id="empty"),
            pytest.param({"authorization": TOKEN_ONE}, id="no-scheme"),
            pytest.param({"authorization": f"Basic {TOKEN_ONE}"}, id="basic-scheme"),
        ],
    )
    async def test_call_without_a_valid_token_is_unauthenticated(
        self, token_file: Path, metadata: dict[str, str]
    ) -> None:
        """A call without a known bearer token fails UNAUTHENTICATED and changes nothing."""
        async with serving(token_file=token_file) as served:
            channel = served.channel()
            stub = UserServiceStub(channel)
            with pytest.raises(GRPCError) as caught:
                await stub.create_user(
                    CreateUserRequest(name="Eve", email="eve@example.com"),
                    metadata=metadata,
                    timeout=5,
                )
            everyone = await stub.get_all_users(Empty(), metadata=bearer(TOKEN_ONE), timeout=5)
            channel.close()
        assert caught.value.status is Status.UNAUTHENTICATED
        assert TOKEN_ONE not in (caught.value.message or "")
        assert list(everyone.user) == []

    @pytest.mark.parametrize("token", [TOKEN_ONE, TOKEN_TWO])
    async def test_either_token_is_accepted(self, token_file: Path, token: str) -> None:
        """Each token in the file, surrounding spaces trimmed, lets a client create and read."""
        async with serving(token_file=token_file) as served:
            channel = served.channel()
            stub = UserServiceStub(channel)
            created = await stub.create_user(
                CreateUserRequest(name="Ann", email="ann@example.com"),
                metadata=bearer(token),
                timeout=5,
            )
            fetched = await stub.get_user_by_id(
                UserIdRequest(id=created.id), metadata=bearer(token), timeout=5
            )
            channel.close()
        assert fetched.email == "ann@example.com"

    @pytest.mark.parametrize("method", GUARDED_METHODS)
    async def test_every_method_needs_the_token(self, token_file: Path, method: str) -> None:
        """Every method but health's, reflection's too, fails UNAUTHENTICATED without a token."""
        async with serving(token_file=token_file) as served:
            channel = served.raw_channel()
            with pytest.raises(GRPCError) as caught:
                await call_raw(channel, method, b"")
            channel.close()
        assert caught.value.status is Status.UNAUTHENTICATED

    def test_guarded_methods_are_all_but_health(self) -> None:
        """The methods above are the eight RPCs, both reflections' and nothing of health."""
        services = {method.rsplit("/", 2)[1] for method in GUARDED_METHODS}
        assert services == {
            "people.UserService",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        assert len([m for m in GUARDED_METHODS if m.startswith("/people.UserService/")]) == 8

    @pytest.mark.parametrize("presented", ["first", "middle", "last", "wrong", "wrong-length-x"])
    def test_every_token_is_compared(self, monkeypatch: pytest.MonkeyPatch, presented: str) -> None:
        """A presented token is compared with each configured one by hmac.compare_digest."""
        tokens = [b"first", b"middle", b"last"]
        compared: list[bytes] = []
        real = hmac.compare_digest

        def counting(given: bytes, token: bytes) -> bool:
            compared.append(token)
            return real(given, token)

        monkeypatch.setattr(hmac, "compare_digest", counting)
        named = [Token(f"token-{n}", secret) for n, secret in enumerate(tokens, start=1)]
        label = TokenAuth(named).identify(f"Bearer {presented}")
        assert compared == tokens
        assert label == {"first": "token-1", "middle": "token-2", "last": "token-3"}.get(presented)

    async def test_health_needs_no_token(self, token_file: Path) -> None:
        """Health probes carry no credentials, so Health/Check answers without a token."""
        async with serving(token_file=token_file) as served:
            channel = served.channel()
            answer = await HealthStub(channel).Check(HealthCheckRequest(), timeout=5)
            channel.close()
        assert answer.status == HealthCheckResponse.SERVING


class TestTokensWithoutTls:
    """The warning for bearer tokens sent in clear text."""

    def test_warns_on_a_public_address(self, token_file: Path) -> None:
        """Tokens without TLS on 0.0.0.0 log a warning that says to use TLS."""
        args = free_args(["--host", "0.0.0.0", "--token-file", str(token_file)])
        with running_server(*args) as server:
            warnings_logged = [line for line in server.log if "WARNING" in line]
        assert any("without TLS" in line for line in warnings_logged), server.output()

    def test_quiet_on_loopback(self, token_file: Path) -> None:
        """Tokens without TLS on 127.0.0.1 never leave the machine, so nothing is logged."""
        args = free_args(["--host", "127.0.0.1", "--token-file", str(token_file)])
        with running_server(*args) as server:
            output = server.output()
        assert "without TLS" not in output
        assert "WARNING" not in output

    def test_quiet_with_tls(self, token_file: Path, pki: Pki) -> None:
        """Tokens over TLS on 0.0.0.0 are protected, so nothing is logged."""
        args = free_args(
            [
                "--host", "0.0.0.0", "--token-file", str(token_file),
                "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
            ]
        )  # fmt: skip
        with running_server(*args) as server:
            output = server.output()
        assert "without TLS" not in output


def serve_once(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `people serve` with ``args`` on a free port; it is expected to exit by itself."""
    return run_cli("serve", "--port", "0", *free_args(args), timeout=30)


def assert_startup_error(result: subprocess.CompletedProcess[str], *mentions: str) -> None:
    """Exit status 1 and exactly one `people serve:` line on stderr mentioning ``mentions``."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("people serve: "), result.stderr
    for mention in mentions:
        assert mention in lines[0]


class TestStartupErrors:
    """Configuration that cannot work stops `people serve` with one clear line."""

    def test_missing_certificate(self, pki: Pki, tmp_path: Path) -> None:
        """A --tls-cert that does not exist is reported by name."""
        missing = tmp_path / "missing-cert.pem"
        result = serve_once("--tls-cert", str(missing), "--tls-key", str(pki.server_key))
        assert_startup_error(result, str(missing))

    def test_missing_key(self, pki: Pki, tmp_path: Path) -> None:
        """A --tls-key that does not exist is reported by name."""
        missing = tmp_path / "missing-key.pem"
        result = serve_once("--tls-cert", str(pki.server_cert), "--tls-key", str(missing))
        assert_startup_error(result, str(missing))

    def test_missing_client_ca(self, pki: Pki, tmp_path: Path) -> None:
        """A --tls-client-ca that does not exist is reported by name."""
        missing = tmp_path / "missing-ca.pem"
        result = serve_once(
            "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
            "--tls-client-ca", str(missing),
        )  # fmt: skip
        assert_startup_error(result, str(missing))

    def test_key_that_does_not_match(self, pki: Pki) -> None:
        """A key that is not the certificate's is refused at startup, naming both files."""
        result = serve_once("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.client_key))
        assert_startup_error(result, str(pki.server_cert), str(pki.client_key))

    @pytest.mark.parametrize(
        "content",
        [
            pytest.param(b"", id="empty"),
            pytest.param(b"# only a comment\n\n   \n", id="comments-only"),
            pytest.param(b"\xff\xfe not utf-8\n", id="not-utf-8"),
        ],
    )
    def test_unusable_token_file(self, tmp_path: Path, content: bytes) -> None:
        """A token file without tokens, or that cannot be decoded, is reported by name."""
        path = tmp_path / "tokens"
        path.write_bytes(content)
        result = serve_once("--token-file", str(path))
        assert_startup_error(result, str(path))

    @pytest.mark.parametrize("kind", ["missing", "directory"])
    def test_unreadable_token_file(self, tmp_path: Path, kind: str) -> None:
        """A token file that is missing or not a file is reported by name."""
        path = tmp_path / "tokens"
        if kind == "directory":
            path.mkdir()
        result = serve_once("--token-file", str(path))
        assert_startup_error(result, str(path))
