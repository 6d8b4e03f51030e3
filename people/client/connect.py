"""Where a people server is and how to reach it: ``host:port`` targets and client TLS.

Kept apart from :mod:`people.client.people_client`, which knows RPCs: this
part knows only addresses and certificates (the CLI uses it too).
"""

from __future__ import annotations

import ssl
from pathlib import Path


def parse_target(target: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6; the port defaults to 50051).

    Raises:
        ValueError: the port is not a number between 1 and 65535.
    """
    host, port_text = target, ""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif target.count(":") == 1:
        host, port_text = target.split(":")
    if not port_text:
        return host or "localhost", 50051
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid port in target {target!r}: expected host:port")
    return host or "localhost", int(port_text)


def tls_context(
    ca_file: Path | str | None = None,
    cert_file: Path | str | None = None,
    key_file: Path | str | None = None,
) -> ssl.SSLContext:
    """A client TLS context for gRPC: ALPN h2, TLS 1.2+, the system CAs or ``ca_file``.

    ``cert_file`` and ``key_file`` present a client certificate (mTLS).
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context
