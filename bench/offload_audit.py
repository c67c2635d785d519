"""Audit a live bridge; target: < 200 ms.

A private OVS (userspace datapath) with two namespaces passing real UDP traffic, a real
nats-server, and the offload agent. Figures:

1. the agent's audit in-process (OVSDB read, dump-dps, dump-flows -m over the control
   socket, parse, count, JetStream publish of the audit event);
2. the same through the bus as ``sriovctl offload-audit`` asks it (request/reply);
3. scale: N extra flows put into the live datapath with ``dpctl/add-flows`` and audited at
   once (the revalidators remove them within seconds), and the cost of reading that dump
   with the ``ovs`` library's own unixctl client instead of ours.

Usage: ``./stack bench offload_audit [--rounds=R] [--flows=N]``.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import ovs.unixctl.client

from bench import parser
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus, ServiceHost
from sriov.devtools.embedded import NatsServer
from sriov.offload import unixctl
from sriov.offload.main import agent
from sriov.offload.settings import OffloadSettings
from sriov.offload.testing import OvsSandbox, send_udp
from sriov.offload.testing.fakes import FakeProbes

DP = "netdev@ovs-netdev"


def _ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return (
        f"median {statistics.median(values) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
        f"max {values[-1] * 1000:.1f} ms (n={len(values)})"
    )


def _flows_file(path: Path, n: int) -> None:
    lines = []
    for i in range(n):
        lines.append(
            f"add in_port(2),eth(src=02:00:00:00:{i >> 8 & 255:02x}:{i & 255:02x},"
            f"dst=02:00:00:00:00:02),eth_type(0x0800),ipv4(src=10.{i >> 16 & 255}."
            f"{i >> 8 & 255}.{i & 255},dst=10.9.0.2,proto=17,tos=0,ttl=64,frag=no),"
            f"udp(src={i % 60000 + 1024},dst=9999) 3"
        )
    path.write_text("\n".join(lines) + "\n")


async def run(tmp: Path, rounds: int, extra_flows: int) -> None:
    nats = NatsServer(store_dir=tmp / "nats").start()
    sb = await asyncio.to_thread(OvsSandbox(tmp / "ovs").start)
    try:
        await asyncio.to_thread(sb.add_bridge, "br0")
        a = await asyncio.to_thread(sb.add_host_port, "br0", "vm1", "10.9.0.1/24")
        b = await asyncio.to_thread(sb.add_host_port, "br0", "vm2", "10.9.0.2/24")
        await asyncio.to_thread(send_udp, a.netns, b.address, count=200)
        await asyncio.to_thread(send_udp, b.netns, a.address, count=100, size=800)
        settings = OffloadSettings(
            host_id="bench", ovsdb=sb.db_remote, vswitchd_ctl=sb.ctl_sock,
            nats_url=nats.url or "", instance_id="bench",
        )  # fmt: skip
        abus = await Bus.connect(settings.urls, name="agent")
        await abus.ensure_streams()
        svc_host = await ServiceHost.start(abus, "sriov-offload", "0.1.0", "bench", {})
        client = await Bus.connect(settings.urls, name="client")
        try:
            async with agent(settings, abus, svc_host, probes=FakeProbes()) as svc:
                await svc.control.set(m.OffloadSetRequest(hw_offload=True), [])
                first = await svc.audit()
                print(
                    f"live bridge: {first.flows} flows, {first.packets} packets, "
                    f"{first.offloaded} offloaded, findings: {[f.check for f in first.findings]}"
                )
                inproc = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    await svc.audit()
                    inproc.append(time.perf_counter() - t0)
                print(f"audit in the agent (incl. JetStream publish): {_ms(inproc)}")
                subject = s.endpoint(s.offloadcmd_group("bench"), "audit")
                over_bus = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    await client.request(subject, m.AuditRequest(), m.Audit, timeout=30)
                    over_bus.append(time.perf_counter() - t0)
                print(f"audit requested over NATS (as sriovctl does): {_ms(over_bus)}")
                target = statistics.median(over_bus) < 0.2
                print(f"target live-bridge audit < 200 ms: {'met' if target else 'MISSED'}")

                if extra_flows:
                    await _compare_clients(sb, tmp, min(extra_flows, 400))
                    await unixctl.call(sb.ctl_sock, "dpctl/del-flows", DP)
                    path = tmp / "flows.txt"
                    _flows_file(path, extra_flows)
                    await unixctl.call(sb.ctl_sock, "dpctl/add-flows", DP, str(path), timeout=60)
                    t0 = time.perf_counter()
                    big = await svc.audit()
                    took = time.perf_counter() - t0
                    print(
                        f"live datapath with {big.flows} flows (+{extra_flows} via "
                        f"dpctl/add-flows): audit {took * 1000:.0f} ms"
                    )
        finally:
            await client.close()
            await svc_host.stop()
            await abus.close()
    finally:
        await asyncio.to_thread(sb.stop)
        nats.stop()


async def _compare_clients(sb: OvsSandbox, tmp: Path, n: int) -> None:
    await unixctl.call(sb.ctl_sock, "dpctl/del-flows", DP)
    path = tmp / "cmp.txt"
    _flows_file(path, n)
    await unixctl.call(sb.ctl_sock, "dpctl/add-flows", DP, str(path), timeout=60)
    t0 = time.perf_counter()
    ours = await unixctl.call(sb.ctl_sock, "dpctl/dump-flows", "-m", DP, timeout=60)
    t_ours = time.perf_counter() - t0

    def theirs() -> str:
        err, client = ovs.unixctl.client.UnixctlClient.create(sb.ctl_sock)
        assert not err
        try:
            _err, _error, result = client.transact("dpctl/dump-flows", ["-m", DP])
            return str(result)
        finally:
            client.close()

    t0 = time.perf_counter()
    other = await asyncio.to_thread(theirs)
    t_theirs = time.perf_counter() - t0
    print(
        f"reading a {n}-flow dump-flows -m reply: this agent's unixctl client "
        f"{t_ours * 1000:.0f} ms for "
        f"{len(ours) / 1e6:.1f} MB; ovs.unixctl.client (pure-Python JSON) "
        f"{t_theirs * 1000:.0f} ms for {len(other) / 1e6:.1f} MB"
    )


def main(argv: list[str]) -> None:
    p = parser(__name__, __doc__)
    p.add_argument("--rounds", type=int, default=30, help="audits timed per measurement")
    p.add_argument("--flows", type=int, default=20000, help="extra flows for the scale run")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-offload-") as tmp:
        asyncio.run(run(Path(tmp), args.rounds, args.flows))
