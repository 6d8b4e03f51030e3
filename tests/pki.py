"""A throwaway certificate authority for the TLS tests, made once per session with openssl."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Pki:
    """A throwaway certificate authority and the certificates it signed, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    #: Another server certificate for the same names, to rotate to.
    next_server_cert: Path
    next_server_key: Path
    client_cert: Path
    client_key: Path
    #: A client certificate from another CA, which the server must not trust.
    other_ca: Path
    stranger_cert: Path
    stranger_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _new_ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=people test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=directory,
    )  # fmt: skip


def _new_leaf(directory: Path, name: str, *, ca: str, serial: int, extensions: list[str]) -> None:
    # Python 3.13 verifies with VERIFY_X509_STRICT, which wants key identifiers.
    common = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        "authorityKeyIdentifier=keyid",
        "subjectKeyIdentifier=hash",
    ]
    (directory / f"{name}.ext").write_text("\n".join([*extensions, *common]) + "\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=people test {name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-set_serial", str(serial), "-days", "2", "-out", f"{name}.pem",
        "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, two server certificates for 127.0.0.1 and localhost, and client certificates."""
    directory = tmp_path_factory.mktemp("pki")
    _new_ca(directory, "ca")
    _new_ca(directory, "other-ca")
    server = ["subjectAltName=IP:127.0.0.1,DNS:localhost", "extendedKeyUsage=serverAuth"]
    client = ["extendedKeyUsage=clientAuth"]
    _new_leaf(directory, "server", ca="ca", serial=2, extensions=server)
    _new_leaf(directory, "client", ca="ca", serial=3, extensions=client)
    _new_leaf(directory, "stranger", ca="other-ca", serial=4, extensions=client)
    _new_leaf(directory, "next-server", ca="ca", serial=5, extensions=server)
    return Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        next_server_cert=directory / "next-server.pem",
        next_server_key=directory / "next-server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
        stranger_cert=directory / "stranger.pem",
        stranger_key=directory / "stranger.key",
    )


def client_context(
    pki: Pki, *, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client context that trusts the test CA and offers h2, optionally with a certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki.ca)
    context.set_alpn_protocols(["h2"])
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context
