"""The client a command talks through, from the connection flags and ``PEOPLE_*`` variables."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from people.client import DEFAULT_TARGET, DEFAULT_TIMEOUT, PeopleClient, tls_context
from people.rpc.auth import TokenFileError, read_tokens


class UsageError(Exception):
    """A connection option cannot be used; the message says which."""


def client_from(args: argparse.Namespace, environ: Mapping[str, str]) -> PeopleClient:
    """Build the client from the connection options, falling back to PEOPLE_* variables."""

    def option(name: str) -> Any:
        value = getattr(args, name)
        return value if value is not None else environ.get(f"PEOPLE_{name.upper()}") or None

    target = option("target") or DEFAULT_TARGET
    timeout_text = option("timeout")
    try:
        timeout = DEFAULT_TIMEOUT if timeout_text is None else float(timeout_text)
    except ValueError:
        raise UsageError(f"PEOPLE_TIMEOUT={timeout_text!r} is not a number") from None
    ca_file, cert, key = option("ca_file"), option("client_cert"), option("client_key")
    tls_flag = option("tls")
    use_tls = tls_flag is True or str(tls_flag).lower() in ("1", "true", "yes", "on")
    try:
        tls = (
            tls_context(ca_file, cert, key)
            if use_tls or ca_file is not None or cert is not None
            else False
        )
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the TLS files: {exc}") from None
    token = _token(option("token_file"), environ)
    try:
        return PeopleClient(target, timeout=timeout, tls=tls, token=token)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _token(path: str | Path | None, environ: Mapping[str, str]) -> str | None:
    """The token to send: the first one in the token file (the server's format), or PEOPLE_TOKEN."""
    if path is None:
        return environ.get("PEOPLE_TOKEN") or None
    try:
        return read_tokens(Path(path))[0].secret.decode()
    except TokenFileError as exc:
        raise UsageError(str(exc)) from None
