"""The server's TLS context: TLS 1.2 or newer, ALPN h2, optionally client certificates."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """Return a TLS context for gRPC over ``cert``/``key``.

    With ``client_ca``, clients must present a certificate signed by it (mTLS).

    Raises:
        OSError: a file cannot be read; its ``filename`` says which.
        ssl.SSLError: a file is not a usable certificate, key or CA bundle.
    """
    for path in (cert, key, client_ca):
        if path is not None:
            # ssl's own "No such file or directory" does not say which of the files it was.
            with path.open("rb"):
                pass
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
