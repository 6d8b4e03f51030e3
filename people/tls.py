"""The server's TLS context: TLS 1.2 or newer, ALPN h2, optionally client certificates."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """Return a TLS context for gRPC over ``cert``/``key``.

    With ``client_ca``, clients must present a certificate signed by it (mTLS).

    Raises:
        OSError, ssl.SSLError: a file is missing or not a usable certificate or key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context
