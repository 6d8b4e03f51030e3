"""`people serve` settings: a PEOPLE_* variable for every flag, flags win, documented defaults."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from people.cli.parser import build_parser
from people.rpc.defaults import DEFAULT_QUEUE_TIMEOUT
from people.server.compose import build_server, build_services
from people.server.flags import settings_from_arguments
from people.server.settings import Settings
from people.store.memory import MemoryStore
from people.store.postgres import (
    DEFAULT_CONFLICT_ATTEMPTS,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_POOL_SIZE,
)
from tests.support import run_cli

FIELDS = [field.name for field in dataclasses.fields(Settings)]
#: Settings that other settings need: a certificate comes with its key, a client CA with both.
NEEDS = {
    "tls_cert": {"tls_key": "other.key"},
    "tls_key": {"tls_cert": "other.pem"},
    "tls_client_ca": {"tls_cert": "other.pem", "tls_key": "other.key"},
}


@dataclasses.dataclass(frozen=True)
class Values:
    """For one setting: its variable's text and value, and a flag giving another value."""

    env: str
    from_env: object
    flag: list[str]
    from_flag: object


def values_for(name: str) -> Values:
    """Two valid values for setting ``name``, both different from its default."""
    field = next(field for field in dataclasses.fields(Settings) if field.name == name)
    flag = "--" + name.replace("_", "-")
    if field.type == "int":
        default = field.default
        assert isinstance(default, int)
        return Values(str(default + 1), default + 1, [flag, str(default + 2)], default + 2)
    if field.type == "float":
        default = field.default
        assert isinstance(default, float)
        return Values(str(default + 1.5), default + 1.5, [flag, str(default + 2.5)], default + 2.5)
    if field.type == "Path | None":
        return Values(f"/env/{name}", Path(f"/env/{name}"), [flag, "/flag/x"], Path("/flag/x"))
    special = {
        "host": Values("0.0.0.0", "0.0.0.0", [flag, "::1"], "::1"),
        "database": Values("memory://", "memory://", [flag, "sqlite:///f.db"], "sqlite:///f.db"),
        # Only one value is not the default: the flag's is the default, given explicitly.
        "log_format": Values("json", "json", [flag, "text"], "text"),
        "log_level": Values("debug", "debug", [flag, "error"], "error"),
        "access_log": Values("off", False, ["--access-log"], True),
        "fast_lane": Values("off", False, ["--fast-lane"], True),
        "read_cache": Values("no", False, ["--read-cache"], True),
        "metrics_address": Values(
            "127.0.0.1:9464", "127.0.0.1:9464", [flag, "[::1]:9000"], "[::1]:9000"
        ),
        "tracing": Values("console", "console", [flag, "otlp"], "otlp"),
    }
    return special[name]


def serve_parser() -> argparse.ArgumentParser:
    """The `people serve` subparser of the real command line."""
    parser = build_parser()
    (commands,) = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    serve = commands.choices["serve"]
    assert isinstance(serve, argparse.ArgumentParser)
    return serve


def settings_for(argv: list[str], environ: dict[str, str]) -> Settings:
    """Settings as `people serve ARGV` would build them in ``environ``."""
    return settings_from_arguments(build_parser().parse_args(["serve", *argv]), environ)


def environment(name: str, text: str) -> dict[str, str]:
    """``PEOPLE_<NAME>=text`` plus the variables of the settings ``name`` needs."""
    needed = {f"PEOPLE_{other.upper()}": value for other, value in NEEDS.get(name, {}).items()}
    return {**needed, f"PEOPLE_{name.upper()}": text}


class TestEveryFlag:
    """Each setting: a flag, a PEOPLE_<FLAG> variable, and the flag wins."""

    @pytest.mark.parametrize("name", FIELDS)
    def test_variable_sets_it(self, name: str) -> None:
        """PEOPLE_<NAME> alone sets the setting."""
        values = values_for(name)
        settings = settings_for([], environment(name, values.env))
        assert getattr(settings, name) == values.from_env != getattr(Settings(), name)

    @pytest.mark.parametrize("name", FIELDS)
    def test_flag_wins_over_the_variable(self, name: str) -> None:
        """--<name> wins over PEOPLE_<NAME>."""
        values = values_for(name)
        settings = settings_for(values.flag, environment(name, values.env))
        assert getattr(settings, name) == values.from_flag != values.from_env

    def test_every_flag_is_a_setting(self) -> None:
        """`people serve`'s flags are exactly --<setting> for each setting, no more."""
        flags = {
            action.dest: action.option_strings
            for action in serve_parser()._actions
            if action.dest != "help"
        }
        assert set(flags) == set(FIELDS)
        for name, options in flags.items():
            assert "--" + name.replace("_", "-") in options

    def test_help_lists_every_flag(self) -> None:
        """`people serve --help` names every flag and says PEOPLE_<FLAG> sets it too."""
        result = run_cli("serve", "--help")
        assert result.returncode == 0, result.stderr
        text = " ".join(result.stdout.split())
        listed = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", text))
        assert listed == {"--" + name.replace("_", "-") for name in FIELDS} | {
            "--help",
            "--no-access-log",
            "--no-fast-lane",
            "--no-read-cache",
        }
        assert "PEOPLE_<FLAG> environment variable" in text
        assert "flags win" in text


class TestDefaults:
    """The defaults the README's tables state."""

    def test_serve_table(self) -> None:
        """--host 127.0.0.1, --port 50051, --database sqlite:///people.db, --workers 1."""
        settings = Settings()
        assert (settings.host, settings.port, settings.database, settings.workers) == (
            "127.0.0.1",
            50051,
            "sqlite:///people.db",
            1,
        )

    def test_limits_table(self) -> None:
        """Every row of the Limits table, and the drain's grace period."""
        settings = Settings()
        assert settings.max_receive_message_bytes == 4194304
        assert settings.max_send_message_bytes == 4194304
        assert settings.max_concurrent_calls == 256
        assert settings.max_streaming_calls == 1000
        assert settings.request_timeout == 5
        assert settings.max_call_duration == 60
        assert settings.max_connections == 1000
        assert settings.max_streams_per_connection == 100
        assert settings.handshake_timeout == 10
        assert settings.idle_timeout == 300
        assert settings.max_connection_age == 0
        assert settings.max_connection_age_grace == 0
        assert settings.grace_period == 10

    async def test_limits_without_flags(self) -> None:  # grpclib's Server wants a running loop
        """A server built from the defaults queues a call for a second; 10 streams a connection."""
        settings = Settings(database="memory://")
        server = build_server(build_services(MemoryStore(), settings), settings)
        assert server.policy.queue_timeout == DEFAULT_QUEUE_TIMEOUT == 1.0
        assert server.policy.max_streaming_calls_per_connection == 10

    async def test_zero_means_no_limit(self) -> None:  # grpclib's Server wants a running loop
        """--max-call-duration, --max-connection-age and its grace at 0 set no limit at all."""
        settings = Settings(
            database="memory://",
            max_call_duration=0,
            max_connection_age=0,
            max_connection_age_grace=0,
        )
        server = build_server(build_services(MemoryStore(), settings), settings)
        assert server.policy.max_call_duration is None
        assert (server.limits.max_age, server.limits.max_age_grace) == (None, None)

    def test_postgres_defaults(self) -> None:
        """pool_size 10, a 5 s wait for a pooled connection, a refused write run 5 times in all."""
        assert DEFAULT_POOL_SIZE == 10
        assert DEFAULT_CONNECT_TIMEOUT == 5
        assert DEFAULT_CONFLICT_ATTEMPTS == 5

    def test_logs_table(self) -> None:
        """--log-format text, --log-level info, access lines on."""
        settings = Settings()
        assert (settings.log_format, settings.log_level, settings.access_log) == (
            "text",
            "info",
            True,
        )

    def test_nothing_set_is_the_defaults(self) -> None:
        """Without flags or variables, `people serve` runs with exactly these defaults."""
        assert settings_for([], {}) == Settings()
