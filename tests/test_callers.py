"""Who called: the access line names the token that authenticated a call, never the token."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from grpclib.client import Channel

from people._gen.people import ListUsersRequest, UserServiceStub
from people.rpc.auth import Token, read_tokens
from tests.support import ServerProcess, free_args, running_server

NAMED_SECRET = "s3cret-of-the-ci-bot-7f2a"
PLAIN_SECRET = "an-unnamed-token-91c0"


async def call_with(server: ServerProcess, token: str) -> None:
    """One ListUsers call carrying ``token``."""
    channel = Channel("127.0.0.1", server.port)
    try:
        await UserServiceStub(channel).list_users(
            ListUsersRequest(), metadata={"authorization": f"Bearer {token}"}, timeout=10
        )
    finally:
        channel.close()


class TestTokenFile:
    def test_names_and_plain_tokens(self, tmp_path: Path) -> None:
        """`NAME:TOKEN` lines are named; a plain token is named by its position."""
        path = tmp_path / "tokens"
        path.write_text(f"# comment\nci-bot:{NAMED_SECRET}\n\n{PLAIN_SECRET}\n", encoding="utf-8")
        assert read_tokens(path) == [
            Token("ci-bot", NAMED_SECRET.encode()),
            Token("token-2", PLAIN_SECRET.encode()),
        ]


class TestAccessLine:
    def test_caller_name_and_never_the_token(self, tmp_path: Path) -> None:
        """Each call's access line (text and JSON) names its caller; no token is ever logged."""
        path = tmp_path / "tokens"
        path.write_text(f"ci-bot:{NAMED_SECRET}\n{PLAIN_SECRET}\n", encoding="utf-8")
        lines: dict[str, list[str]] = {}
        for log_format in ("text", "json"):
            args = free_args(["--token-file", str(path), "--log-format", log_format])
            with running_server(*args) as server:
                asyncio.run(call_with(server, NAMED_SECRET))
                asyncio.run(call_with(server, PLAIN_SECRET))
                assert server.stop() == 0
            lines[log_format] = [line for line in server.log if "ListUsers" in line]
            assert NAMED_SECRET not in server.output()
            assert PLAIN_SECRET not in server.output()
        assert [line.split()[-1] for line in lines["text"]] == ["caller=ci-bot", "caller=token-2"]
        assert [json.loads(line)["caller"] for line in lines["json"]] == ["ci-bot", "token-2"]
