"""Missed heartbeats take a host offline; its next snapshot (asked for) brings it back."""

from __future__ import annotations

from collections.abc import Mapping

from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus, ServiceHost
from sriov.inventory import testing as t


async def test_host_offline_and_back(bus: Bus, nats_url: str, database_url: str) -> None:
    hostd = t.Hostd(bus, "h1")
    pfs, vfs = t.fleet_host(1, vfs=4)
    # Play hostd's command side too: a rescan request publishes a fresh snapshot.
    rescans: list[str] = []
    hostd_svc = await ServiceHost.start(bus, "sriov-hostd", "0.1.0", "test hostd", {})

    async def rescan(_req: m.RescanRequest, _headers: Mapping[str, str]) -> m.CommandAck:
        rescans.append("h1")
        snap = await hostd.snapshot(pfs, vfs)
        return m.CommandAck(snapshot_seq=snap.seq)

    await hostd_svc.add_endpoint(s.hostcmd_group("h1"), "rescan", m.RescanRequest, rescan)
    settings = t.InventorySettings(heartbeat_timeout=0.4, rescan_interval=0)
    try:
        async with t.replica(nats_url, database_url, settings) as rep:
            await hostd.snapshot(pfs, vfs)
            await hostd.heartbeat(interval_s=0.1)

            async def status(want: str) -> bool:
                return await t.host_status(bus, "h1") == want

            await t.eventually(lambda: status("online"), what="host online")
            # hostd goes silent: the host and its devices go offline
            await t.eventually(lambda: status("offline"), what="host offline")
            await t.eventually(lambda: t.drained(bus, rep.pool), what="drained")
            devices = (await t.list_devices(bus, host_id="h1")).devices
            assert {d.host_status for d in devices} == {"offline"}
            states, hosts = await t.state_values(bus)
            assert {states[d.id].device.host_status for d in devices} == {"offline"}
            assert hosts["h1"].host.status == "offline"
            assert rescans == []

            # a heartbeat alone does not restore it, but inventory asks for a snapshot...
            await hostd.heartbeat(interval_s=0.1)
            await t.eventually(lambda: status("online"), what="host back online")
            assert rescans == ["h1"]
            await t.eventually(lambda: t.drained(bus, rep.pool), what="drained")
            devices = (await t.list_devices(bus, host_id="h1")).devices
            assert {d.host_status for d in devices} == {"online"}
            assert len(devices) == 4
            states, _ = await t.state_values(bus)
            assert {states[d.id].device.host_status for d in devices} == {"online"}
    finally:
        await hostd_svc.stop()


async def test_host_first_heard_without_snapshot_is_asked_for_one(
    bus: Bus, nats_url: str, database_url: str
) -> None:
    hostd = t.Hostd(bus, "late")
    hostd_svc = await ServiceHost.start(bus, "sriov-hostd", "0.1.0", "test hostd", {})
    pfs, vfs = t.fleet_host(3, vfs=2)

    async def rescan(_req: m.RescanRequest, _headers: Mapping[str, str]) -> m.CommandAck:
        snap = await hostd.snapshot(pfs, vfs)
        return m.CommandAck(snapshot_seq=snap.seq)

    await hostd_svc.add_endpoint(s.hostcmd_group("late"), "rescan", m.RescanRequest, rescan)
    try:
        async with t.replica(nats_url, database_url) as rep:
            await hostd.heartbeat(interval_s=5)

            async def online() -> bool:
                return await t.host_status(bus, "late") == "online"

            await t.eventually(online, what="host online after its snapshot")
            assert rep.rescanner.sent == 1
            assert (await t.list_devices(bus, host_id="late")).total == 2
    finally:
        await hostd_svc.stop()
