"""The offloaded-flow ratio and flow counts per host, as OpenTelemetry gauges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sriov.offload.audit import DatapathDump, build_audit
from sriov.offload.flows import parse_dump
from sriov.offload.service import OffloadService

FIXTURES = Path(__file__).parent / "fixtures"


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out[metric.name] = list(metric.data.data_points)
    return out


def test_ratio_and_flow_counts_per_host() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    svc = OffloadService(
        "h9", None, None, None, None, None,  # type: ignore[arg-type]
        meter=provider.get_meter("test"),
    )  # fmt: skip
    assert "sriov.offload.flow_ratio" not in points(reader)  # nothing before the first audit
    text = (FIXTURES / "tc-m.txt").read_text()
    dump = DatapathDump("system@ovs-system", parse_dump(text, datapath="system@ovs-system"))
    svc.last_audit = build_audit("h9", True, [dump])
    got = points(reader)
    [ratio] = got["sriov.offload.flow_ratio"]
    assert ratio.value == 0.5 and dict(ratio.attributes) == {"host_id": "h9"}
    flows = {p.attributes["state"]: p.value for p in got["sriov.offload.flows"]}
    assert flows == {"offloaded": 3, "partial": 0, "not_offloaded": 3}
    provider.shutdown()
