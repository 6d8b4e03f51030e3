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


class ReloadableServerContext:
    """A server TLS context whose files can be read again while the server listens.

    asyncio fixes a server's :class:`ssl.SSLContext` when it starts listening, so
    :attr:`listening` is that context for good. Its SNI callback, which OpenSSL
    runs early in every handshake (with or without a server name from the
    client), hands the connection the newest context, so new handshakes present
    the newest certificate (and trust the newest client CA). Connections already
    open keep the context they started with. The client-certificate requirement
    itself stays the listening context's, which is the same on every reload
    because the same files are read.

    Args:
        cert: PEM certificate chain.
        key: Its private key.
        client_ca: With it, clients must present a certificate it signed.

    Raises:
        OSError: a file cannot be read; its ``filename`` says which.
        ssl.SSLError: a file is not a usable certificate, key or CA bundle.
    """

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self._files = (cert, key, client_ca)
        self.listening = server_context(cert, key, client_ca)
        self._current = self.listening
        self.listening.sni_callback = self._hand_over

    def reload(self) -> None:
        """Read the files again; new handshakes use them.

        Raises:
            OSError: a file cannot be read; the current context stays.
            ssl.SSLError: a file is unusable; the current context stays.
        """
        self._current = server_context(*self._files)

    def _hand_over(
        self,
        connection: ssl.SSLObject | ssl.SSLSocket,
        server_name: str | None,
        listening: ssl.SSLContext,
    ) -> None:
        if self._current is not listening:
            connection.context = self._current
