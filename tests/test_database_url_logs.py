"""The start line names the database as it is, never with its password; nor does a failed start."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from people.server.logs import redact_url
from tests.postgres import free_port
from tests.support import run_cli, running_server

PASSWORD = "s3cret-w0rd-91f"


class TestRedactUrl:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            (
                f"postgresql://people:{PASSWORD}@db.internal:5432/people",
                "postgresql://people:***@db.internal:5432/people",
            ),
            (
                f"postgresql://people@db.internal/people?password={PASSWORD}&sslmode=require",
                "postgresql://people@db.internal/people?password=***&sslmode=require",
            ),
            (
                f"postgresql://people@db/people?sslpassword={PASSWORD}&application_name=x",
                "postgresql://people@db/people?sslpassword=***&application_name=x",
            ),
            (
                f"postgresql://people:{PASSWORD}@a:5432,b:5433/people?PASSWORD={PASSWORD}",
                "postgresql://people:***@a:5432,b:5433/people?PASSWORD=***",
            ),
            (
                f"postgresql://people:p%40ss{PASSWORD}@db/people?pass%77ord={PASSWORD}",
                "postgresql://people:***@db/people?pass%77ord=***",
            ),
            ("postgresql://people@db.internal:5432/people", None),
            ("postgresql:///people?host=/run/postgresql", None),
            ("sqlite:///people.db", None),
            ("sqlite:////var/lib/people/people.db", None),
            ("memory://", None),
        ],
    )
    def test_secrets_are_replaced_and_the_rest_kept(self, url: str, shown: str | None) -> None:
        """Passwords in the user part and the query become ***; everything else is kept."""
        assert redact_url(url) == (url if shown is None else shown)
        assert PASSWORD not in redact_url(url)


def ready_line(lines: list[str]) -> str:
    """The line that says where the server serves."""
    (line,) = [line for line in lines if "people serving on" in line]
    return line


@pytest.mark.postgres
class TestReadyLine:
    @pytest.mark.parametrize("log_format", ["text", "json"])
    @pytest.mark.parametrize("workers", ["1", "2"])
    def test_postgres_url_keeps_its_host(
        self, postgres_url: str, log_format: str, workers: str
    ) -> None:
        """A PostgreSQL URL is logged with its host and database, and *** for its password."""
        parts = urlsplit(postgres_url)
        with_password = postgres_url.replace(
            f"//{parts.username}@", f"//{parts.username}:{PASSWORD}@", 1
        )
        args = ["--database", with_password, "--log-format", log_format, "--workers", workers]
        with running_server(*args) as server:
            line = ready_line(server.log)
        if log_format == "json":
            line = json.loads(line)["message"]
        assert f"{parts.username}:***@{parts.hostname}:{parts.port}{parts.path}" in line
        assert PASSWORD not in server.output()
        assert "<email>" not in line

    def test_password_in_the_query_is_hidden(self, postgres_url: str) -> None:
        """A password given as ?password= reaches the database but never the log."""
        with running_server("--database", f"{postgres_url}?password={PASSWORD}") as server:
            line = ready_line(server.log)
        assert "password=***" in line
        assert PASSWORD not in server.output()


def failing_urls() -> list[object]:
    """URLs with a password whose server cannot start: nothing listens, or the URL is broken."""
    port = free_port()
    return [
        pytest.param(f"postgresql://people:{PASSWORD}@127.0.0.1:{port}/people", id="refused"),
        pytest.param(
            f"postgresql://people@127.0.0.1:{port}/people?password={PASSWORD}", id="query-refused"
        ),
        pytest.param(f"postgresql://people:{PASSWORD}@127.0.0.1:notaport/people", id="bad-port"),
        pytest.param(f"postgresql://people:{PASSWORD}@127.0.0.1:99999/people", id="port-too-big"),
    ]


class TestStartupFailure:
    """A server that cannot open its database says why, without the password."""

    @pytest.mark.parametrize("workers", ["1", "2"])
    @pytest.mark.parametrize("url", failing_urls())
    def test_no_password_on_stderr(self, url: str, workers: str) -> None:
        """Exit 1, one `people serve:` line last, no traceback and no password anywhere."""
        result = run_cli("serve", "--port", "0", "--database", url, "--workers", workers)
        assert result.returncode == 1, result.stderr
        assert PASSWORD not in result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.splitlines()
        assert lines[-1].startswith("people serve: "), result.stderr
        if workers == "1":
            assert len(lines) == 1, result.stderr
