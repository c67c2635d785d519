"""Each service serves Prometheus metrics (``OTEL_METRICS_EXPORTER=prometheus``, its own port);
this test scrapes a running stack and checks the figures move as the workflow runs:

* inventory: VFs total/free/reserved by host and model, host liveness (per host, and hosts
  by status), events ingested (applied) and dropped (stale, dead-lettered malformed);
* scheduler: the placement latency histogram (buckets in seconds) and outcomes;
* offload: the offloaded-flow ratio and flows by state per host, after real traffic.
"""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus
from sriov.common.errors import SriovError
from sriov.devtools.launcher import GUIDE_HOST_ID, Stack

I350 = "I350 Ethernet Controller Virtual Function"
CX5 = "ConnectX-5 Virtual Function"
HOST = GUIDE_HOST_ID

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {"SRIOV_GAUGES_INTERVAL": "0.5"}  # inventory refreshes its fleet gauges often


def scrape(stack: Stack, proc: str) -> Samples:
    """Every sample a service's /metrics serves, keyed by name and labels."""
    port = stack.metrics_port(proc)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = {k: v for k, v in s.labels.items() if not k.startswith("otel_scope")}
            out[(s.name, frozenset(labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def has(samples: Samples, name: str, **labels: str) -> bool:
    want = set(labels.items())
    return any(n == name and want <= ls for (n, ls) in samples)


def vfs(stack: Stack, model: str) -> dict[str, float]:
    s = scrape(stack, "inventory-1")
    return {
        state: value(s, "sriov_inventory_vfs", host_id=HOST, model=model, state=state)
        for state in ("total", "free", "reserved")
    }


async def place(bus: Bus, guest: str, model: str) -> m.PlacementReply:
    return await bus.request(
        subjects.endpoint(subjects.SCHEDULER_GROUP, "place"),
        m.PlaceRequest(
            request_id=f"{guest}-1", guest_id=guest,
            nets=[m.NetRequest(desc=f"sriov-nic-model={model}")],
        ),
        m.PlacementReply,
        timeout=20,
    )  # fmt: skip


async def test_metrics_follow_the_workflow(
    stack: Stack, eventually: Callable[..., Any], sriovctl: Callable[..., Any]
) -> None:
    # discovery: inventory counts the guide host's VFs, all free, and the host is online
    eventually(lambda: vfs(stack, I350) == {"total": 7, "free": 7, "reserved": 0},
               "inventory gauges: 7 free I350 VFs", timeout=40)  # fmt: skip
    assert vfs(stack, CX5) == {"total": 8, "free": 8, "reserved": 0}
    inv = scrape(stack, "inventory-1")
    assert value(inv, "sriov_inventory_hosts", status="online") == 1
    assert value(inv, "sriov_inventory_host_online", host_id=HOST) == 1
    assert value(inv, "sriov_inventory_events_total", type="host.snapshot.v1", outcome="applied")
    applied_before = value(inv, "sriov_inventory_events_total", outcome="applied")

    bus = await Bus.connect(stack.env()["SRIOV_NATS_URL"], name="metrics-test")
    try:
        # placement: one success, one refusal; latency histogram in seconds, by outcome
        reply = await place(bus, "metrics-guest", I350)
        assert reply.assignments[0].model == I350
        with pytest.raises(SriovError) as refused:
            await place(bus, "metrics-guest-2", "no-such-model")
        sch = scrape(stack, "scheduler-1")
        ok = {"op": "place", "outcome": "ok"}
        bad = {"op": "place", "outcome": refused.value.code}
        assert value(sch, "sriov_scheduler_request_duration_seconds_count", **ok) == 1
        assert value(sch, "sriov_scheduler_request_duration_seconds_count", **bad) == 1
        assert value(sch, "sriov_scheduler_requests_total", **ok) == 1
        assert value(sch, "sriov_scheduler_requests_total", **bad) == 1
        assert 0 < value(sch, "sriov_scheduler_request_duration_seconds_sum", **ok) < 20
        # buckets are seconds: sub-second boundaries, the request falls in the 10 s bucket
        assert has(sch, "sriov_scheduler_request_duration_seconds_bucket", le="0.01", **ok)
        assert value(sch, "sriov_scheduler_request_duration_seconds_bucket", le="10.0", **ok) == 1
        eventually(lambda: vfs(stack, I350) == {"total": 7, "free": 6, "reserved": 1},
                   "inventory gauges: one I350 VF reserved")  # fmt: skip

        # dropped events: a stale one (an older generation than hostd's) and a malformed one
        hb = subjects.host_heartbeat(HOST)
        await bus.js_publish(hb, m.Heartbeat(host_id=HOST, generation=1, seq=1, interval_s=10))
        await bus.js_publish_raw(hb.subject, b'{"type": "host.heartbeat.v1", "seq": "x"}', {})
        eventually(
            lambda: value(scrape(stack, "inventory-1"), "sriov_inventory_events_total",
                          type="host.heartbeat.v1", outcome="stale") == 1,
            "a stale heartbeat counted",
        )  # fmt: skip
        eventually(
            lambda: value(scrape(stack, "inventory-1"), "sriov_inventory_events_rejected_total",
                          consumer="inventory-host-events", reason="dead_lettered") == 1,
            "a malformed event dead-lettered",
        )  # fmt: skip
    finally:
        await bus.close()

    # a link event is ingested
    pf = sriovctl("--json", "isolated-device-list", "--model", CX5)["devices"][0]["pf_ifname"]
    sim = stack.sim_hosts[0]
    stack._run(["sriov-hostd", "simulate", "--root", str(sim.sys_root), "--netns", sim.netns,
                "--link", f"{pf}=down"])  # fmt: skip
    eventually(
        lambda: value(scrape(stack, "inventory-1"), "sriov_inventory_events_total",
                      type="host.link.v1", outcome="applied") >= 1,
        "the link event counted as applied",
    )  # fmt: skip
    assert value(scrape(stack, "inventory-1"), "sriov_inventory_events_total",
                 outcome="applied") > applied_before  # fmt: skip

    # offload: flows through a real (userspace) bridge show up in the audit's figures
    eventually(lambda: has(scrape(stack, "offload-1"), "sriov_offload_flow_ratio", host_id=HOST),
               "the offload agent's first audit", timeout=40)  # fmt: skip
    _traffic(stack)
    sriovctl("offload-audit", "--host", HOST)
    off = scrape(stack, "offload-1")
    assert value(off, "sriov_offload_flows", host_id=HOST) > 0
    ratio = value(off, "sriov_offload_flow_ratio", host_id=HOST)
    assert 0 <= ratio <= 1

    # liveness: hostd stops, its heartbeats stop, inventory marks the host offline
    hostd = next(p for p in stack.procs if p.name == "hostd-1")
    os.killpg(hostd.popen.pid, signal.SIGTERM)
    hostd.popen.wait(15)
    eventually(
        lambda: (
            value(scrape(stack, "inventory-1"), "sriov_inventory_host_online", host_id=HOST) == 0
        ),
        "the host to be marked offline",
        timeout=40,
        stopped=("hostd-1",),
    )
    assert value(scrape(stack, "inventory-1"), "sriov_inventory_hosts", status="offline") == 1


def _traffic(stack: Stack) -> None:
    """UDP between two namespaces through a bridge of the host's own userspace OVS."""
    from sriov.offload.testing import netns
    from sriov.offload.testing.sandbox import OvsSandbox

    sb = OvsSandbox(stack.sim_hosts[0].ovs_dir)
    sb.add_bridge("br-metrics")
    a = sb.add_host_port("br-metrics", "mvm1", "10.78.0.1/24")
    b = sb.add_host_port("br-metrics", "mvm2", "10.78.0.2/24")
    netns.send_udp(a.netns, b.address, count=50)
