"""The OpenTelemetry instruments report what the table holds and what was consumed."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.inventory import testing as t


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    data = reader.get_metrics_data()
    out: dict[str, list[tuple[dict[str, Any], float]]] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out[metric.name] = [
                    (dict(p.attributes or {}), p.value)  # type: ignore[union-attr]
                    for p in metric.data.data_points
                ]
    return out


async def test_fleet_gauges_and_event_counters(bus: Bus, nats_url: str, database_url: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    settings = t.InventorySettings(gauges_interval=0.1)
    try:
        async with t.replica(
            nats_url, database_url, settings, meter=provider.get_meter("test")
        ) as rep:
            await t.Hostd(bus, t.GUIDE_HOST).snapshot(*t.guide_host())
            await bus.js_publish_raw(s.host_heartbeat("h9").subject, b"[", {"Nats-Msg-Id": "x"})
            await t.eventually(lambda: t.drained(bus, rep.pool), what="drained")

            async def gauges_fresh() -> bool:
                return rep.metrics.fleet.hosts.get("online") == 1

            await t.eventually(gauges_fresh, what="gauges refreshed")
            got = points(reader)
        vfs = {
            (a["model"], a["state"]): v
            for a, v in got["sriov.inventory.vfs"]
            if a["host_id"] == t.GUIDE_HOST
        }
        assert vfs[(t.CX5_VF, "total")] == 8 and vfs[(t.I350_VF, "total")] == 16
        assert vfs[(t.I350_VF, "free")] == 16 and vfs[(t.I350_VF, "reserved")] == 0
        hosts = {a["status"]: v for a, v in got["sriov.inventory.hosts"]}
        assert hosts == {"online": 1, "offline": 0, "unknown": 0}
        events = {(a["type"], a["outcome"]): v for a, v in got["sriov.inventory.events"]}
        assert events[("host.snapshot.v1", "applied")] == 1
        rejected = {
            (a["consumer"], a["reason"]): v for a, v in got["sriov.inventory.events.rejected"]
        }
        assert rejected[("inventory-host-events", "dead_lettered")] == 1
        assert sum(v for _a, v in got["sriov.inventory.state.published"]) == 25
    finally:
        provider.shutdown()
