"""The Grafana dashboard: valid JSON, sane layout, every query parses as PromQL and uses only
metrics the services really export.

The exported names are not typed by hand: the instruments the services create are found in
their sources and passed through the same OpenTelemetry Prometheus exporter the services
use, which decides the names (``_total``, ``_seconds``, ``_bucket`` suffixes...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/kubernetes/base/dashboards/sriov-control-plane.json"
INSTRUMENT = re.compile(
    r"create_(counter|histogram|up_down_counter|gauge|observable_counter|observable_gauge|"
    r"observable_up_down_counter)\(\s*\"(sriov\.[\w.]+)\"(.*?)\)\n",
    re.DOTALL,
)
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$host": ".*"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def exprs(d: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, query with Grafana's variables filled in as Grafana would)."""
    for p in panels(d):
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            yield p["title"], expr


def instruments() -> list[tuple[str, str, str]]:
    """(kind, name, unit) of every instrument the services create."""
    found = []
    for src in sorted(ROOT.glob("services/*/src/**/*.py")):
        for kind, name, rest in INSTRUMENT.findall(src.read_text()):
            unit = re.search(r"unit=\"([^\"]*)\"", rest)
            found.append((kind, name, unit.group(1) if unit else ""))
    return found


@pytest.fixture(scope="module")
def exported_names() -> set[str]:
    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("dashboard-test")

    def observe(_o: CallbackOptions) -> list[Observation]:
        return [Observation(1)]

    try:
        for kind, name, unit in instruments():
            if kind.startswith("observable"):
                getattr(meter, f"create_{kind}")(name, [observe], unit=unit)
            elif kind == "histogram":
                meter.create_histogram(name, unit=unit).record(1)
            elif kind == "gauge":
                meter.create_gauge(name, unit=unit).set(1)
            else:
                getattr(meter, f"create_{kind}")(name, unit=unit).add(1)
        families = list(reader._collector.collect())  # what a scrape would return
        return {s.name for f in families for s in f.samples}
    finally:
        provider.shutdown()


def test_layout_is_valid(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "sriov-control-plane" and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for p in panels(dashboard):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for p in panels(dashboard):
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and "datasource" in variables
            assert p["description"], f"{p['title']}: say what it shows and what to do"


def test_every_query_parses(dashboard: dict[str, Any]) -> None:
    for title, expr in exprs(dashboard):
        assert "$" not in expr, f"{title}: unknown variable in {expr}"
        promql_parser.parse(expr)


def test_queries_use_metrics_the_services_export(
    dashboard: dict[str, Any], exported_names: set[str]
) -> None:
    assert len(exported_names) >= 10, exported_names
    used: set[str] = set()
    for title, expr in exprs(dashboard):

        def visit(node: Any, title: str = title) -> bool:
            if isinstance(node, promql_parser.VectorSelector):
                assert node.name in exported_names, f"{title}: no service exports {node.name}"
                used.add(node.name)
            return True

        promql_parser.walk(promql_parser.parse(expr), visit)
    # The architecture's four: VFs by model and host, placement latency, events ingested,
    # offloaded-flow ratio.
    assert {
        "sriov_inventory_vfs",
        "sriov_scheduler_request_duration_seconds_bucket",
        "sriov_inventory_events_total",
        "sriov_offload_flow_ratio",
    } <= used


def test_a_renamed_metric_would_be_caught(exported_names: set[str]) -> None:
    assert "sriov_inventory_vfs" in exported_names
    assert "sriov_inventory_vfs_free" not in exported_names
