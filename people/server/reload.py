"""What SIGHUP reloads: the token file and the TLS files, without dropping a connection.

Each is read again on its own. A file that cannot be used now is reported with
an error naming it (never a token), and what was in use stays in use, so a
half-written rotation never takes a server down or locks every client out.
Calls already admitted and connections already open are untouched: new calls
are checked against the new tokens, new handshakes get the new certificate.
"""

from __future__ import annotations

import logging
import ssl

from people.rpc.auth import TokenAuth, TokenFileError, read_tokens
from people.rpc.tls import ReloadableServerContext
from people.server.compose import StartupError
from people.server.settings import Settings

log = logging.getLogger("people.server")


def open_tls(settings: Settings) -> ReloadableServerContext | None:
    """Return the server's TLS context, or None when ``settings`` ask for plain text.

    Raises:
        StartupError: a TLS file cannot be read or used; the message names it.
    """
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    try:
        return ReloadableServerContext(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(tls_problem(settings, exc)) from None


def tls_problem(settings: Settings, exc: OSError | ssl.SSLError) -> str:
    """Say which TLS file ``exc`` (from reading ``settings``' TLS files) is about, and why."""
    if isinstance(exc, ssl.SSLError):
        # OpenSSL does not say which of the files it disliked: name them all.
        files = (settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        named = ", ".join(str(path) for path in files if path is not None)
        return f"cannot use the TLS files {named}: {exc}"
    return f"cannot read TLS file {exc.filename}: {exc.strerror or exc}"


class Reloader:
    """Reads the token file and the TLS files again, keeping the old ones if the new are unusable.

    Args:
        settings: Where the files are.
        auth: The running token check, if the server has one.
        tls: The running TLS context, if the server speaks TLS.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        auth: TokenAuth | None,
        tls: ReloadableServerContext | None,
    ) -> None:
        self._settings = settings
        self._auth = auth
        self._tls = tls

    def reload(self) -> None:
        """Reload what can be reloaded; log an error per unusable file and one line of outcome."""
        reloaded: list[str] = []
        token_file = self._settings.token_file
        if self._auth is not None and token_file is not None:
            try:
                tokens = read_tokens(token_file)
            except TokenFileError as exc:
                log.error("%s; keeping the tokens already loaded", exc)
            else:
                self._auth.replace(tokens)
                reloaded.append(f"the token file {token_file}")
        if self._tls is not None:
            try:
                self._tls.reload()
            except (OSError, ssl.SSLError) as exc:
                log.error(
                    "%s; keeping the certificate already loaded", tls_problem(self._settings, exc)
                )
            else:
                reloaded.append(f"the TLS certificate {self._settings.tls_cert}")
        log.info("people reloaded %s", " and ".join(reloaded) or "nothing")
