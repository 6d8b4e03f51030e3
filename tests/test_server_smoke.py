"""The server process starts, answers and stops."""

from __future__ import annotations

from pathlib import Path

from tests.support import running_server


def test_starts_and_stops_cleanly(tmp_path: Path) -> None:
    """`people serve` logs its address, and SIGTERM makes it exit 0."""
    with running_server("--database", f"sqlite:///{tmp_path / 'p.db'}") as server:
        assert server.port > 0
        code = server.stop()
    assert code == 0, server.output()
