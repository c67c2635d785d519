"""The agent end to end: real nats-server, real ovsdb-server/ovs-vswitchd (userspace
datapath), veth ports in namespaces passing real traffic."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.common.errors import InvalidRequest, Unavailable
from sriov.offload.control import DISABLE_NEEDS_RESTART
from sriov.offload.testing import OvsSandbox, send_udp

pytestmark = [pytest.mark.ovs, pytest.mark.netns]


def ep(host: str, name: str) -> s.Subject:
    return s.endpoint(s.offloadcmd_group(host), name)


async def last_event(bus: Bus, subject: s.Subject, cls: type[Any]) -> Any:
    msg = await bus.last_message(s.STREAM_OFFLOAD, subject.subject)
    return m.codec(cls).decode(msg.data)


async def wait_event(bus: Bus, subject: s.Subject, cls: type[Any], pred: Any, t: float = 10) -> Any:
    async with asyncio.timeout(t):
        while True:
            try:
                event = await last_event(bus, subject, cls)
                if pred(event):
                    return event
            except Exception:  # not published yet
                pass
            await asyncio.sleep(0.05)


def vsctl_other(ovs: OvsSandbox, key: str) -> str:
    return ovs.vsctl("--if-exists", "get", "Open_vSwitch", ".", f"other_config:{key}")


async def test_toggle_hw_offload_through_the_service_and_read_back(
    ovs_sandbox: OvsSandbox, start_agent: Any, bus: Bus
) -> None:
    async with start_agent(ovs_sandbox) as agent:
        host = agent.host_id
        before = await bus.request(ep(host, "get"), m.OffloadGetRequest(), m.OffloadStatus)
        assert before.hw_offload is False and before.restart_required is False
        assert before.ovs_version.startswith("3.") and "netdev" in before.datapath_types

        on = await bus.request(
            ep(host, "set"),
            m.OffloadSetRequest(hw_offload=True, tc_policy="skip_sw", max_idle_ms=20000),
            m.OffloadStatus,
            timeout=15,
        )
        assert on.hw_offload is True and on.tc_policy == "skip_sw" and on.max_idle_ms == 20000
        assert on.applied is True
        assert on.restart_required is False  # OVS switches the flow API on at run time...
        assert vsctl_other(ovs_sandbox, "hw-offload") == '"true"'
        assert vsctl_other(ovs_sandbox, "tc-policy") == "skip_sw"
        assert vsctl_other(ovs_sandbox, "max-idle") == '"20000"'

        off = await bus.request(
            ep(host, "set"), m.OffloadSetRequest(hw_offload=False), m.OffloadStatus, timeout=15
        )
        assert vsctl_other(ovs_sandbox, "hw-offload") == '"false"'
        assert vsctl_other(ovs_sandbox, "tc-policy") == "skip_sw"  # untouched when unset
        assert off.restart_required is True  # ...but never off again without a restart
        assert DISABLE_NEEDS_RESTART in off.restart_reasons
        assert off.restarted is False
        # No bridge, so no datapath can report the flow API: the agent's own bookkeeping
        # (what it changed since this ovs-vswitchd started) says a restart is due.
        assert off.flow_api is None
        restart = next(f for f in off.findings if f.check == "offload.restart_required")
        assert "cannot tell whether the flow API is on" in restart.evidence

        again = await bus.request(ep(host, "get"), m.OffloadGetRequest(), m.OffloadStatus)
        assert again.restart_required is True

        event = await wait_event(
            bus, s.offload_config(host), m.OffloadConfigChanged,
            lambda e: e.status.restart_required and not e.status.hw_offload,
        )  # fmt: skip
        assert event.host_id == host


async def test_restart_happens_only_when_allowed_and_asked(
    lab: Any, start_agent: Any, bus: Bus, restart_cmd: str
) -> None:
    ovs_sandbox = lab.ovs
    ovs_sandbox.set_other_config("hw-offload", "true")
    pid_before = ovs_sandbox.pid("vswitchd")
    async with start_agent(ovs_sandbox, allow_restart=True, restart_command=restart_cmd) as ag:
        not_asked = await bus.request(
            ep(ag.host_id, "set"), m.OffloadSetRequest(hw_offload=False), m.OffloadStatus,
            timeout=15,
        )  # fmt: skip
        assert not_asked.restart_required and not not_asked.restarted
        assert not_asked.flow_api is True  # the userspace datapath says so itself
        restart = next(f for f in not_asked.findings if f.check == "offload.restart_required")
        assert "flow API on" in restart.evidence
        assert ovs_sandbox.pid("vswitchd") == pid_before

        done = await bus.request(
            ep(ag.host_id, "set"),
            m.OffloadSetRequest(hw_offload=False, allow_restart=True),
            m.OffloadStatus,
            timeout=60,
        )
        assert done.restarted is True
        assert done.restart_required is False and done.flow_api is False
        assert ovs_sandbox.pid("vswitchd") != pid_before
    async with start_agent(ovs_sandbox) as ag2:  # an agent without --allow-restart
        ovs_sandbox.set_other_config("hw-offload", "true")
        refused = await bus.request(
            ep(ag2.host_id, "set"),
            m.OffloadSetRequest(hw_offload=False, allow_restart=True),
            m.OffloadStatus,
            timeout=15,
        )
        assert refused.restart_required and not refused.restarted
        warning = next(f for f in refused.findings if f.check == "offload.restart")
        assert "--allow-restart" in warning.fix


async def test_bad_settings_are_refused_naming_the_field(
    ovs_sandbox: OvsSandbox, start_agent: Any, bus: Bus
) -> None:
    async with start_agent(ovs_sandbox) as agent:
        with pytest.raises(InvalidRequest, match="tc_policy 'fast'"):
            await bus.request(
                ep(agent.host_id, "set"),
                m.OffloadSetRequest(hw_offload=True, tc_policy="fast"),
                m.OffloadStatus,
            )
        with pytest.raises(InvalidRequest, match="max_idle_ms 10 is below"):
            await bus.request(
                ep(agent.host_id, "set"),
                m.OffloadSetRequest(hw_offload=True, max_idle_ms=10),
                m.OffloadStatus,
            )
        raw = await bus.request_raw(ep(agent.host_id, "set").subject, b'{"type":"nope"}')
        assert raw.headers and raw.headers.get("Sriov-Error-Code") == "unknown_type"
    assert vsctl_other(ovs_sandbox, "hw-offload") == ""  # nothing was written


async def test_audit_counts_live_flows_as_not_offloaded_and_raises_the_finding(
    lab: Any, start_agent: Any, bus: Bus
) -> None:
    ovs = lab.ovs
    async with start_agent(ovs) as agent:
        host = agent.host_id
        await bus.request(
            ep(host, "set"), m.OffloadSetRequest(hw_offload=True), m.OffloadStatus, timeout=15
        )
        await asyncio.to_thread(send_udp, lab.a.netns, lab.b.address, count=60, size=200)
        await asyncio.to_thread(send_udp, lab.b.netns, lab.a.address, count=30, size=400)
        audit = await bus.request(ep(host, "audit"), m.AuditRequest(top=2), m.Audit, timeout=15)

        # read back with ovs-appctl: the busiest flows are there, in software, as reported
        # (not a count comparison: IPv6 neighbour discovery may add a flow in between)
        live = ovs.appctl("dpctl/dump-flows", "-m", "netdev@ovs-netdev")
        for top in audit.top_not_offloaded:
            line = next(ln for ln in live.splitlines() if ln.startswith(f"ufid:{top.ufid},"))
            assert f"in_port({top.in_port})" in line and f"actions:{top.actions}" in line
            assert "offloaded:" not in line
        assert audit.hw_offload is True
        assert audit.offloaded == 0 and audit.partial == 0
        assert audit.not_offloaded == audit.flows and audit.ratio == 0.0
        assert audit.datapaths == ["netdev@ovs-netdev"]
        ports = {p.port: p for p in audit.per_port}
        assert ports["vm1"].packets >= 59 and ports["vm2"].packets >= 29
        assert ports["vm1"].bytes >= 59 * 242  # 200-byte payload + UDP/IP/Ethernet headers
        finding = next(f for f in audit.findings if f.check == "audit.nothing_offloaded")
        assert finding.severity == "error"
        assert "output will be empty" in finding.message
        top = audit.top_not_offloaded
        assert {t.in_port for t in top} == {"vm1", "vm2"}
        assert top[0].bytes >= top[1].bytes
        assert f"in_port({top[0].in_port})" in finding.evidence
        assert ovs.appctl("dpctl/dump-flows", "netdev@ovs-netdev", "type=offloaded") == ""

        event = await last_event(bus, s.offload_audit(host), m.Audit)
        assert event.flows == audit.flows and event.ts == audit.ts


async def test_loop_publishes_audits_checks_and_outside_config_changes(
    lab: Any, start_agent: Any, bus: Bus
) -> None:
    async with start_agent(lab.ovs, periodic=True, audit_interval=0.2) as agent:
        host = agent.host_id
        checks = await wait_event(bus, s.offload_checks(host), m.OffloadChecks, lambda e: True)
        assert [f.check for f in checks.findings] == ["hostconf.missing"]
        await asyncio.to_thread(send_udp, lab.a.netns, lab.b.address, count=10)
        audit = await wait_event(bus, s.offload_audit(host), m.Audit, lambda a: a.packets >= 9)
        assert audit.hw_offload is False
        # an operator flips hw-offload with another OVSDB client: the agent notices
        await asyncio.to_thread(lab.ovs.set_other_config, "hw-offload", "true")
        changed = await wait_event(
            bus, s.offload_config(host), m.OffloadConfigChanged, lambda e: e.status.hw_offload
        )
        assert changed.status.flow_api is True
        info = await bus.stream_info(s.STREAM_OFFLOAD)
        assert info.messages >= 3


async def test_daemons_down_give_clear_errors_the_agent_survives_and_recovers(
    lab: Any, start_agent: Any, bus: Bus
) -> None:
    ovs = lab.ovs
    async with start_agent(ovs, periodic=True, audit_interval=0.2) as agent:
        host = agent.host_id
        await bus.request(ep(host, "get"), m.OffloadGetRequest(), m.OffloadStatus)

        ovs.kill_vswitchd()
        for name, req, reply in (
            ("get", m.OffloadGetRequest(), m.OffloadStatus),
            ("set", m.OffloadSetRequest(hw_offload=True), m.OffloadStatus),
            ("audit", m.AuditRequest(), m.Audit),
        ):
            with pytest.raises(Unavailable) as info:
                await bus.request(ep(host, name), req, reply, timeout=10)
            assert ovs.ctl_sock in info.value.message and "ovs-vswitchd" in info.value.message
        assert vsctl_other(ovs, "hw-offload") == ""  # the refused set changed nothing
        await asyncio.sleep(0.5)  # a few audit rounds fail meanwhile; the loop lives on

        await asyncio.to_thread(ovs.start_vswitchd)
        status = await bus.request(ep(host, "get"), m.OffloadGetRequest(), m.OffloadStatus)
        assert status.hw_offload is False

        await asyncio.to_thread(ovs.kill_ovsdb)
        with pytest.raises(Unavailable) as info:
            await bus.request(ep(host, "get"), m.OffloadGetRequest(), m.OffloadStatus, timeout=15)
        assert f"OVSDB at unix:{ovs.db_sock}" in info.value.message

        await asyncio.to_thread(ovs.start_ovsdb)
        async with asyncio.timeout(20):
            while True:
                try:
                    status = await bus.request(
                        ep(host, "set"), m.OffloadSetRequest(hw_offload=True), m.OffloadStatus,
                        timeout=15,
                    )  # fmt: skip
                    break
                except Unavailable:
                    await asyncio.sleep(0.2)
        assert status.hw_offload is True
        assert vsctl_other(ovs, "hw-offload") == '"true"'
        await asyncio.to_thread(send_udp, lab.a.netns, lab.b.address, count=10)
        audit = await bus.request(ep(host, "audit"), m.AuditRequest(), m.Audit, timeout=15)
        assert audit.flows > 0
