"""hostd end to end: a simulated host with real veths, real netlink, the real NATS."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus, ServiceHost
from sriov.common.errors import InvalidRequest, NotFound
from sriov.hostd.agent import Options, running
from sriov.hostd.simulator import netdevs
from sriov.hostd.simulator.kernel import apply_numvfs
from sriov.hostd.simulator.spec import GUIDE_HOST_ID, guide

from .conftest import EventTap, SimHost, make_host, poll
from .test_simulator import GUIDE_CX5_VFS, GUIDE_I350_VFS

pytestmark = pytest.mark.netns
HOST = GUIDE_HOST_ID


def opts(host: SimHost) -> Options:
    return Options(config_path=host.conf_path)


async def service(bus: Bus) -> ServiceHost:
    return await ServiceHost.start(bus, "sriov-hostd", "0.1.0", "test hostd", {})


def cmd(name: str) -> subjects.Subject:
    return subjects.endpoint(subjects.hostcmd_group(HOST), name)


def assert_ordered(events: list[Any]) -> None:
    """One generation, seq strictly increasing in arrival order."""
    assert len({e.generation for e in events}) == 1
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)), seqs


async def kernel_applied(ns: str, ifname: str, state: str, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (now := netdevs.link_state(ns, ifname)) != state:
        assert asyncio.get_running_loop().time() < deadline, f"{ifname} still {now}"
        await asyncio.sleep(0.005)


async def test_snapshot_diagnostics_and_real_link_events(
    tmp_path: Path, netns: str, bus: Bus, tap: EventTap
) -> None:
    host = make_host(tmp_path, guide(), netns, link_holddown_s=5.0)
    async with running(bus, host.conf, opts(host), await service(bus)) as agent:
        snap = await tap.wait(lambda e: isinstance(e, m.HostSnapshot))
        assert (snap.host_id, snap.generation, snap.seq) == (HOST, agent.generation, 1)
        assert snap.hostname == "guide-host" and snap.errors == []
        assert [p.ifname for p in snap.pfs] == ["eth1", "eth2"]
        assert [v.pci_address for v in snap.vfs] == GUIDE_CX5_VFS + GUIDE_I350_VFS
        assert {v.link_state for v in snap.vfs} == {"up"}
        diag = await tap.wait(lambda e: isinstance(e, m.Diagnostics))
        assert diag.seq == 2
        assert [f.check for f in diag.findings if f.severity in ("error", "warning")] == []

        # a VF's carrier drops: one link.down event naming the VF
        netdevs.set_link(netns, "eth1v3", False)
        down = await tap.wait(lambda e: isinstance(e, m.LinkChanged) and e.ifname == "eth1v3")
        assert (down.state, down.role, down.pci_address, down.operstate, down.carrier) == (
            "down",
            "vf",
            "0000:0a:00.5",
            "LOWERLAYERDOWN",
            False,
        )
        # the PF's link: role "pf", so the fleet learns every VF lost its uplink
        netdevs.set_link(netns, "eth1", False)
        pf = await tap.wait(lambda e: isinstance(e, m.LinkChanged) and e.ifname == "eth1")
        assert (pf.state, pf.role, pf.pci_address) == ("down", "pf", "0000:0a:00.0")

        # flapping inside the hold-down: the first change at once, the rest coalesced. Each
        # toggle waits for the kernel to apply it: back to back, the kernel merged toggles
        # into fewer announced changes (1 flap counted instead of 3, once in 14 CI runs)
        for up in (False, True, False, True):
            netdevs.set_link(netns, "eth2v0", up)
            await kernel_applied(netns, "eth2v0", "up" if up else "down")
        flaps = await tap.wait(
            lambda e: isinstance(e, m.LinkChanged) and e.ifname == "eth2v0" and e.state == "up"
        )
        eth2v0 = [e for e in tap.of(m.LinkChanged) if e.ifname == "eth2v0"]
        assert [(e.state, e.flaps) for e in eth2v0] == [("down", 0), ("up", 3)]
        assert flaps.pci_address == "0000:03:10.0"

        # a rescan reflects what link events said
        ack = await bus.request(cmd("rescan"), m.RescanRequest(), m.CommandAck)
        assert ack.message == "2 PFs, 15 VFs, 0 errors"
        snap2 = await tap.wait(
            lambda e: isinstance(e, m.HostSnapshot) and e.seq == ack.snapshot_seq
        )
        states = {v.ifname: v.link_state for v in snap2.vfs}
        assert states["eth1v3"] == "down" and states["eth2v0"] == "up"
        assert {p.ifname: p.link_state for p in snap2.pfs} == {"eth1": "down", "eth2": "up"}
    assert_ordered(tap.events)


async def test_set_numvfs_and_vfs_appearing_without_restart(
    tmp_path: Path, netns: str, bus: Bus, tap: EventTap
) -> None:
    host = make_host(tmp_path, guide(), netns)
    async with running(bus, host.conf, opts(host), await service(bus)) as agent:
        await tap.wait(lambda e: isinstance(e, m.Diagnostics))
        ack = await bus.request(
            cmd("set-numvfs"), m.SetNumVfsRequest(pf="eth1", num_vfs=4), m.CommandAck, timeout=30
        )
        assert ack.message == "eth1: 8 -> 4 VFs"
        await tap.wait(lambda e: isinstance(e, m.PfChanged) and e.pf.num_vfs == 4)
        await tap.until(lambda: sorted(tap.view()) == sorted(GUIDE_CX5_VFS[:4] + GUIDE_I350_VFS))
        assert {e.pci_address for e in tap.of(m.VfRemoved)} >= set(GUIDE_CX5_VFS[4:])

        # someone else (an operator's echo 8 > sriov_numvfs) adds VFs: their netdevs appear,
        # netlink triggers a rescan, and consumers learn about every new VF
        before = len(tap.events)
        await asyncio.to_thread(apply_numvfs, host.root, "0000:0a:00.0", 8)
        await tap.until(lambda: sorted(tap.view()) == sorted(GUIDE_CX5_VFS + GUIDE_I350_VFS))
        new = {e.vf.pci_address for e in tap.of(m.VfDiscovered)[-8:]}
        assert set(GUIDE_CX5_VFS[4:]) <= new
        assert all(not isinstance(e, m.HostSnapshot) for e in tap.events[before:])
        assert tap.view()["0000:0a:01.1"].ifname == "eth1v7"
        assert agent.state is not None and len(agent.state.vfs) == 15

        with pytest.raises(InvalidRequest, match=r"eth2 \(0000:03:00.0\): 9 VFs is not within"):
            await bus.request(
                cmd("set-numvfs"), m.SetNumVfsRequest(pf="eth2", num_vfs=9), m.CommandAck
            )
        with pytest.raises(NotFound, match="eth9 is not a configured PF"):
            await bus.request(
                cmd("set-numvfs"), m.SetNumVfsRequest(pf="eth9", num_vfs=1), m.CommandAck
            )
    assert_ordered(tap.events)


async def test_doctor_endpoint_replies_and_publishes(
    tmp_path: Path, bus: Bus, tap: EventTap
) -> None:
    spec = guide()
    spec.iommu = "off"
    host = make_host(tmp_path, spec)
    o = opts(host)
    o.netlink = False
    (tmp_path / "cpuinfo").write_text("vendor_id\t: GenuineIntel\n")
    o.cpuinfo_file = str(tmp_path / "cpuinfo")
    async with running(bus, host.conf, o, await service(bus)):
        diag = await bus.request(cmd("doctor"), m.DoctorRequest(), m.Diagnostics, timeout=20)
        errors = {f.check for f in diag.findings if f.severity == "error"}
        assert {"iommu.cmdline", "iommu.sysfs", "iommu.kernel_log"} <= errors
        published = await tap.wait(lambda e: isinstance(e, m.Diagnostics) and e.seq == diag.seq)
        assert published.findings == diag.findings


def rewrite(host: SimHost, **changes: Any) -> None:
    data = yaml.safe_load(host.conf_path.read_text())
    data.pop("sriov_nic", None)  # the typo a test put in
    data.update(changes)
    tmp = host.conf_path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data))
    tmp.replace(host.conf_path)  # as editors and config management do


async def test_config_reload_on_file_change(
    tmp_path: Path, netns: str, bus: Bus, tap: EventTap
) -> None:
    spec = guide()
    spec.sriov_nics = ["eth1"]
    host = make_host(tmp_path, spec, netns)
    async with running(bus, host.conf, opts(host), await service(bus)) as agent:
        first = await tap.wait(lambda e: isinstance(e, m.HostSnapshot))
        assert len(first.vfs) == 8
        await tap.wait(lambda e: isinstance(e, m.Diagnostics))
        rewrite(host, sriov_nics=["eth1", "eth2"])
        snap = await tap.wait(lambda e: isinstance(e, m.HostSnapshot) and len(e.vfs) == 15)
        assert [p.ifname for p in snap.pfs] == ["eth1", "eth2"]
        assert agent.reloads == 1
        # a broken file: say why (file:line: key), keep running on the previous config
        host.conf_path.write_text(host.conf_path.read_text() + "sriov_nic: [eth3]\n")
        bad = await tap.wait(
            lambda e: isinstance(e, m.Diagnostics) and e.findings[0].check == "hostconf.valid"
        )
        assert bad.findings[0].severity == "error"
        assert bad.findings[0].evidence.startswith(f"{host.conf_path}:")
        assert bad.findings[0].evidence.endswith(": sriov_nic: unknown key (check its spelling)")
        ack = await bus.request(cmd("rescan"), m.RescanRequest(), m.CommandAck)
        assert ack.message == "2 PFs, 15 VFs, 0 errors"
        # desired VF counts from host.conf are applied on reload
        rewrite(host, sriov_nics=["eth1", "eth2"], num_vfs={"eth2": 3})
        pf = await tap.wait(
            lambda e: isinstance(e, m.PfChanged) and e.pf.ifname == "eth2" and e.pf.num_vfs == 3
        )
        assert pf.pf.total_vfs == 7
        # the host id never changes underneath consumers
        rewrite(host, host_id="another-host")
        moved = await tap.wait(
            lambda e: isinstance(e, m.Diagnostics) and "host_id: changed" in e.findings[0].evidence
        )
        assert moved.host_id == HOST


async def test_nats_outage_is_healed_by_a_snapshot(
    tmp_path: Path, netns: str, nats_server: Any
) -> None:
    """Events published while NATS is down are not replayed as diffs: a snapshot follows,
    soon after NATS is back (retried from 0.5 s, not at the next 60 s heartbeat).

    What a consumer gets is read from the stream, not from a live subscription: a core
    subscriber reconnects on its own schedule and misses whatever hostd publishes before it
    is back (that race failed this test one run in five)."""
    host = make_host(tmp_path, guide(), netns, heartbeat_interval_s=60)
    bus = await Bus.connect(nats_server.url, name="hostd-test")
    await bus.ensure_streams()
    snapshots = subjects.host_snapshot(HOST).subject

    async def last_snapshot() -> m.HostSnapshot:
        stored = await bus.last_message(subjects.STREAM_HOST_EVENTS, snapshots)
        event = m.HOST_EVENTS.decode(stored.data)
        assert isinstance(event, m.HostSnapshot)
        return event

    try:
        async with running(bus, host.conf, opts(host)) as agent:
            assert not agent.publisher.needs_snapshot  # the first snapshot was taken
            first = await last_snapshot()
            nats_server.stop()
            netdevs.set_link(netns, "eth1v0", False)
            await poll(lambda: agent.publisher.failed > 0)
            assert agent.publisher.needs_snapshot
            nats_server.start()
            # a snapshot the client timed out on may still reach the stream once the client
            # reconnects (the consumer then simply sees two); hostd keeps owing one until a
            # publish is acknowledged, and nothing is published after that one
            await poll(lambda: not agent.publisher.needs_snapshot, timeout=20)
            seq = agent.publisher.snapshot_seq
            snap = await last_snapshot()
            assert (snap.generation, snap.seq) == (first.generation, seq)
            assert seq > first.seq
            vf = next(v for v in snap.vfs if v.ifname == "eth1v0")
            assert vf.link_state == "down"
    finally:
        await bus.close()
