"""Inventory keeps what hostd reports of the VF lifecycle and republishes it: PF capabilities
on every VF, the read-back configuration and the lifecycle state, in queries, on SRIOV_STATE,
and in ``sriovctl isolated-device-list --lifecycle``, without changing the guide's table."""

from __future__ import annotations

import json

from sriov.cli.testing import sriovctl, table_rows
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.inventory import testing as t

GUEST = "c15a5a99-75ea-4b8c-8c7a-521e5f980db4"
PREPARED = m.VfConfig(mac="fa:16:3e:00:00:01", vlan=100, max_tx_rate=1000)


def assignment(dev: m.Device) -> m.Assignment:
    return m.Assignment(
        device_id=dev.id, host_id=dev.host_id, pci_address=dev.pci_address, addr=dev.addr,
        model=dev.model, vendor_device_id=dev.vendor_device_id,
        pf_pci_address=dev.pf_pci_address,
    )  # fmt: skip


#: These hosts send no heartbeats: they stay online however slowly the CLI starts.
NO_HEARTBEATS = t.InventorySettings(heartbeat_timeout=3600)


async def get(bus: Bus, dev_id: str) -> m.Device:
    subject = s.endpoint(s.INVENTORY_DEVICES_GROUP, "get")
    return (await bus.request(subject, m.DeviceGetRequest(id=dev_id), m.DeviceGetReply)).device


async def test_capabilities_actual_and_lifecycle_are_kept_and_republished(
    bus: Bus, nats_url: str, database_url: str
) -> None:
    async with t.replica(nats_url, database_url, NO_HEARTBEATS) as rep:
        hostd = t.Hostd(bus, t.GUIDE_HOST)
        pfs, vfs = t.guide_host()
        await hostd.snapshot(t.with_lifecycle(pfs), vfs)
        await t.eventually(lambda: t.drained(bus, rep.pool), what="snapshot ingested")
        cx5 = (await t.list_devices(bus, model=t.CX5_VF, limit=2)).devices
        i350 = (await t.list_devices(bus, model=t.I350_VF, limit=1)).devices[0]
        assert {d.lifecycle for d in cx5} == {"free"}
        assert cx5[0].capabilities == t.MLX5_CAPS and i350.capabilities == t.IGB_CAPS
        assert not i350.capabilities.min_tx_rate  # igb: the scheduler must not ask for it
        vf = next(v for v in vfs if v.pci_address == cx5[0].pci_address)

        # Reserved -> preparing; hostd reads back the prepared VF -> ready (before Ready)
        reserved = m.Reserved(request_id="r1", guest_id=GUEST, host_id=t.GUIDE_HOST, seq=10,
                              assignments=[assignment(cx5[0])])  # fmt: skip
        await bus.js_publish(s.placement_event(GUEST, "reserved"), reserved, event_id="r1/res")
        await t.eventually(lambda: t.drained(bus, rep.pool), what="reservation applied")
        await t.assert_totals_agree(rep.pool)
        assert (await get(bus, cx5[0].id)).lifecycle == "preparing"
        await hostd.applied(vf, 11, "ready", PREPARED, iommu_group=42)
        await t.eventually(lambda: t.drained(bus, rep.pool), what="outcome applied")
        dev = await get(bus, cx5[0].id)
        assert (dev.lifecycle, dev.actual, dev.driver, dev.iommu_group, dev.ifname) == (
            "ready",
            PREPARED,
            "vfio-pci",
            42,
            None,
        )
        states, _ = await t.state_values(bus)  # what the scheduler's projection replays
        st = states[cx5[0].id].device
        assert (st.lifecycle, st.actual, st.capabilities) == ("ready", PREPARED, t.MLX5_CAPS)

        # Released -> cleaning (not free, not offered) until hostd reports it; the restore
        # fails -> quarantined, listed by state, with what was read back
        released = m.Released(request_id="r2", guest_id=GUEST, device_ids=[cx5[0].id], seq=20)
        await bus.js_publish(s.placement_event(GUEST, "released"), released, event_id="r2/rel")
        await t.eventually(lambda: t.drained(bus, rep.pool), what="release applied")
        await t.assert_totals_agree(rep.pool)
        assert (await get(bus, cx5[0].id)).lifecycle == "cleaning"
        assert (await t.get_host(bus, t.GUIDE_HOST)).vf_free == 23
        await hostd.applied(vf, 19, "quarantined", PREPARED, error="MAC did not clear")
        await t.eventually(lambda: t.drained(bus, rep.pool), what="quarantine applied")
        quarantined = await t.list_devices(bus, lifecycle="quarantined")
        assert [d.id for d in quarantined.devices] == [cx5[0].id] and quarantined.total == 1
        assert (await t.list_devices(bus, lifecycle="free")).total == 23
        assert (await t.get_host(bus, t.GUIDE_HOST)).vf_free == 23

        code, out, err = await sriovctl(nats_url, "isolated-device-list", "--lifecycle",
                                        "quarantined")  # fmt: skip
        assert code == 0, err
        header, rows, footer = table_rows(out)
        assert header[7:] == ["Lifecycle", "Driver", "MAC", "VLAN"]
        assert rows == [[cx5[0].id, "NIC", t.CX5_VF, cx5[0].addr, "15b3:1018", t.GUIDE_HOST,
                         "", "quarantined", "vfio-pci", "fa:16:3e:00:00:01", "100"]]  # fmt: skip
        assert footer == "*** Total: 1 Pages: 1 Limit: 15 Offset: 0 Page: 1 ***"
        code, out, _ = await sriovctl(nats_url, "isolated-device-list", "--lifecycle", "any")
        assert code == 0 and table_rows(out)[2].startswith("*** Total: 24 ")
        # the guide's table is the guide's, with or without the lifecycle
        code, out, _ = await sriovctl(nats_url, "isolated-device-list")
        header, rows, footer = table_rows(out)
        assert len(header) == 7 and [tuple(r[1:5]) for r in rows] == t.GUIDE_PAGE_ONE
        assert footer == t.GUIDE_FOOTER
        code, out, _ = await sriovctl(nats_url, "--json", "isolated-device-show", cx5[0].id)
        shown = json.loads(out)
        assert shown["lifecycle"] == "quarantined" and shown["actual"]["vlan"] == 100

        # the operator's reset: hostd restores it and reads it back clean -> free again
        await hostd.applied(vf, 30, "clean", m.clean_config("mlx5_core"), ifname="eth1v0")
        await t.eventually(lambda: t.drained(bus, rep.pool), what="reset applied")
        await t.assert_totals_agree(rep.pool)
        dev = await get(bus, cx5[0].id)
        assert (dev.lifecycle, dev.driver, dev.ifname) == ("free", "mlx5_core", "eth1v0")
        assert (await t.list_devices(bus, lifecycle="quarantined")).total == 0
        assert (await t.get_host(bus, t.GUIDE_HOST)).vf_free == 24


async def test_a_host_without_the_lifecycle_reports_none(
    bus: Bus, nats_url: str, database_url: str
) -> None:
    async with t.replica(nats_url, database_url, NO_HEARTBEATS) as rep:
        await t.Hostd(bus, t.GUIDE_HOST).snapshot(*t.guide_host())
        await t.eventually(lambda: t.drained(bus, rep.pool), what="snapshot ingested")
        devices = (await t.list_devices(bus, limit=100)).devices
        assert {(d.capabilities, d.lifecycle, d.actual) for d in devices} == {(None, None, None)}
        assert (await t.list_devices(bus, lifecycle="free")).total == 0
