"""The Grafana dashboard in docs/ queries only metrics the server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from people.server.metrics import PeopleMetrics, WorkerMetrics

DASHBOARD = Path(__file__).parents[1] / "docs" / "grafana" / "people-dashboard.json"
#: Names in PromQL that are functions, keywords or label names, not metrics.
NOT_METRICS = {
    "sum",
    "by",
    "rate",
    "increase",
    "histogram_quantile",
    "max",
    "count",
    "le",
}
#: Suffixes Prometheus adds to a family's samples.
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def queries() -> list[str]:
    """Every PromQL expression of every panel."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(expression: str) -> set[str]:
    """The metric names one expression reads (label matchers and strings removed)."""
    without_labels = re.sub(r"\{[^}]*\}", "", expression)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    grouped = set(re.findall(r"by \(([^)]*)\)", without_ranges))
    labels = {label.strip() for group in grouped for label in group.split(",")}
    return words - NOT_METRICS - labels


def exported() -> set[str]:
    """Every sample name a people server (and its worker supervisor) can export."""
    registry = CollectorRegistry()
    PeopleMetrics(registry, store="sqlite")
    WorkerMetrics(registry)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES)
    return names


class TestDashboard:
    def test_it_is_a_grafana_dashboard(self) -> None:
        """The file is a dashboard with panels, each with at least one Prometheus query."""
        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        assert dashboard["panels"]
        assert all(panel["targets"] for panel in dashboard["panels"])

    @pytest.mark.parametrize("expression", queries())
    def test_queries_use_exported_metrics(self, expression: str) -> None:
        """Every metric a panel queries is one the server exports."""
        names = metric_names(expression)
        assert names, expression
        assert names <= exported(), names - exported()

    def test_the_check_can_fail(self) -> None:
        """A query of a metric nobody exports is caught."""
        assert not metric_names("rate(grpc_server_nonsense_total[5m])") <= exported()
