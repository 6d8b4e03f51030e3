"""Bearer-token authentication, checked once per call before the handler runs.

grpclib handlers see only the request message, not its metadata, so the
runtime (:mod:`people.rpc.calls`, and its fast lane) calls :meth:`TokenAuth.check`
with each call's metadata: a call without a known ``authorization: Bearer
<token>`` header fails with UNAUTHENTICATED before any handler code runs.
Tokens are compared with :func:`hmac.compare_digest` against every configured
token, so timing does not reveal how much of a guess matched, and they are
never logged. The health service stays open for probes.

A token file line is either a token alone, or ``NAME:TOKEN`` to give it a name
(letters, digits, ``_``, ``.`` and ``-``; a token that itself contains ``:``
must be given a name). The accepted caller's name (``token-<n>`` for an unnamed
token: its position in the file) goes into the call's record, and the access
log writes it; the token never is.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from grpclib.const import Status
from grpclib.exceptions import GRPCError

#: Methods anyone may call: health probes carry no credentials.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/",)

_NAMED = re.compile(r"(?P<name>[A-Za-z0-9_.-]{1,64}):(?P<secret>.+)")


class Token(NamedTuple):
    """One accepted bearer token and the name the access log gives its caller."""

    name: str
    secret: bytes


class TokenFileError(ValueError):
    """The token file cannot be used; the message says why (never the tokens)."""


def read_tokens(path: Path) -> list[Token]:
    """Return the tokens in ``path``: one per line, blank lines and ``#`` comments skipped.

    Raises:
        TokenFileError: the file cannot be read or holds no token.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc.__class__.__name__}") from None
    lines = [line.strip() for line in text.splitlines()]
    tokens = [
        _token(line, position)
        for position, line in enumerate(
            (line for line in lines if line and not line.startswith("#")), start=1
        )
    ]
    if not tokens:
        raise TokenFileError(f"token file {path} holds no token")
    return tokens


def _token(line: str, position: int) -> Token:
    named = _NAMED.fullmatch(line)
    if named is not None:
        return Token(named["name"], named["secret"].strip().encode())
    return Token(f"token-{position}", line.encode())


class TokenAuth:
    """Checks each call's bearer token against a set that :meth:`replace` can swap.

    Args:
        tokens: The accepted tokens.
    """

    def __init__(self, tokens: Sequence[Token]) -> None:
        self._tokens = list(tokens)

    def replace(self, tokens: Sequence[Token]) -> None:
        """Accept ``tokens`` instead from the next call on; calls already admitted go on."""
        # One assignment: a check in progress keeps iterating over the list it started with.
        self._tokens = list(tokens)

    def identify(self, authorization: str | None) -> str | None:
        """Return the name of the token in an ``authorization`` value, or None."""
        if authorization is None:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        candidate = presented.strip().encode()
        found = None
        for token in self._tokens:
            # Compare with every token, so the time taken does not say which matched.
            if hmac.compare_digest(candidate, token.secret) and found is None:
                found = token.name
        return found

    def check(self, method_name: str, metadata: Mapping[str, Any]) -> str | None:
        """The name of the caller a call's metadata authenticates; None for a public method.

        Raises:
            GRPCError: UNAUTHENTICATED without a known bearer token.
        """
        if method_name.startswith(PUBLIC_PREFIXES):
            return None
        value = metadata.get("authorization")
        name = self.identify(value if isinstance(value, str) else None)
        if name is None:
            raise GRPCError(Status.UNAUTHENTICATED, "missing or invalid bearer token")
        return name
