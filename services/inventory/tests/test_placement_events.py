"""The scheduler's reservation events fill and clear the guest column."""

from __future__ import annotations

from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.inventory import testing as t


def assignment(dev: m.Device) -> m.Assignment:
    return m.Assignment(
        device_id=dev.id,
        host_id=dev.host_id,
        pci_address=dev.pci_address,
        addr=dev.addr,
        model=dev.model,
        vendor_device_id=dev.vendor_device_id,
        pf_pci_address=dev.pf_pci_address,
    )


async def test_guest_column_follows_reservations(
    bus: Bus, nats_url: str, database_url: str
) -> None:
    async with t.replica(nats_url, database_url) as rep:
        hostd = t.Hostd(bus, t.GUIDE_HOST)
        pfs, vfs = t.guide_host()
        await hostd.snapshot(pfs, vfs)
        await t.eventually(lambda: t.drained(bus, rep.pool), what="snapshot ingested")
        i350 = (await t.list_devices(bus, model=t.I350_VF, limit=2)).devices
        guest = "c15a5a99-75ea-4b8c-8c7a-521e5f980db4"
        reserved = m.Reserved(
            request_id="r1", guest_id=guest, host_id=t.GUIDE_HOST,
            assignments=[assignment(d) for d in i350],
        )  # fmt: skip
        await bus.js_publish(s.placement_event(guest, "reserved"), reserved, event_id="r1/res")
        confirmed = m.Confirmed(request_id="r2", guest_id=guest, device_ids=[i350[0].id])
        await bus.js_publish(s.placement_event(guest, "confirmed"), confirmed, event_id="r2/c")
        await t.eventually(lambda: t.drained(bus, rep.pool), what="reservation applied")
        await t.assert_totals_agree(rep.pool)

        attached = await t.list_devices(bus, state="attached")
        assert {d.id for d in attached.devices} == {d.id for d in i350}
        assert {d.guest_id for d in attached.devices} == {guest}
        assert (await t.list_devices(bus, guest_id=guest)).total == 2
        assert (await t.list_devices(bus, state="free")).total == 22
        host = await t.get_host(bus, t.GUIDE_HOST)
        assert (host.vf_count, host.vf_free) == (24, 22)

        # The reserved VF i350[1] disappears from the host: kept, flagged not present.
        gone = next(v for v in vfs if v.pci_address == i350[1].pci_address)
        await hostd.snapshot(pfs, [v for v in vfs if v is not gone])
        await t.eventually(lambda: t.drained(bus, rep.pool), what="snapshot applied")
        await t.assert_totals_agree(rep.pool)
        flagged = (await t.list_devices(bus, guest_id=guest)).devices
        assert {(d.id, d.present) for d in flagged} == {(i350[0].id, True), (i350[1].id, False)}
        states, _ = await t.state_values(bus)
        assert not states[i350[1].id].removed and not states[i350[1].id].device.present

        # Host offline: the scheduler keeps the reservation (still_reserved): guest stays.
        lost = m.Lost(
            request_id="r2b", guest_id=guest, device_ids=[d.id for d in i350],
            reason="host_offline", host_id=t.GUIDE_HOST, still_reserved=True,
        )  # fmt: skip
        await bus.js_publish(s.placement_event(guest, "lost"), lost, event_id="r2b/lost")
        await t.eventually(lambda: t.drained(bus, rep.pool), what="lost applied")
        assert (await t.list_devices(bus, guest_id=guest)).total == 2

        # Released: the guest lets go, and only now is the missing VF removed.
        released = m.Released(request_id="r3", guest_id=guest, device_ids=[d.id for d in i350])
        await bus.js_publish(s.placement_event(guest, "released"), released, event_id="r3/rel")
        await t.eventually(lambda: t.drained(bus, rep.pool), what="release applied")
        await t.assert_totals_agree(rep.pool)  # the gone VF left the counts with its guest
        assert (await t.list_devices(bus, state="attached")).total == 0
        assert (await t.list_devices(bus)).total == 23
        states, _ = await t.state_values(bus)
        assert states[i350[1].id].removed
        assert states[i350[0].id].device.guest_id is None

        # A re-sent reservation (same event id) is dropped; events for unknown devices too.
        await bus.js_publish(s.placement_event(guest, "reserved"), reserved, event_id="r1/res")
        ghost = m.Released(request_id="x", guest_id="other", device_ids=["no-such-device"])
        await bus.js_publish(s.placement_event("other", "released"), ghost, event_id="x")
        await t.eventually(lambda: t.drained(bus, rep.pool), what="drained")
        assert (await t.list_devices(bus, state="attached")).total == 0
        assert rep.ingested[("placement.released.v1", "unknown_device")] == 1


async def test_events_apply_in_the_schedulers_order_not_the_streams(
    bus: Bus, nats_url: str, database_url: str
) -> None:
    """The stream can hold a republished batch out of order (a release before its place);
    inventory follows the events' ``seq``, so the VF ends up free, then held by the next."""
    async with t.replica(nats_url, database_url) as rep:
        pfs, vfs = t.guide_host()
        await t.Hostd(bus, t.GUIDE_HOST).snapshot(pfs, vfs)
        await t.eventually(lambda: t.drained(bus, rep.pool), what="snapshot ingested")
        [dev] = (await t.list_devices(bus, model=t.I350_VF, limit=1)).devices

        async def publish(ev: m.PlacementEventT, verb: str) -> None:
            await bus.js_publish(
                s.placement_event(ev.guest_id, verb), ev, event_id=f"{verb}-{ev.seq}"
            )
            await t.eventually(lambda: t.drained(bus, rep.pool), what=f"{verb} applied")
            await t.assert_totals_agree(rep.pool)

        def reserved(guest: str, seq: int) -> m.Reserved:
            return m.Reserved(request_id=f"p{seq}", guest_id=guest, host_id=t.GUIDE_HOST,
                              assignments=[assignment(dev)], seq=seq)  # fmt: skip

        await publish(m.Released(request_id="r", guest_id="a", device_ids=[dev.id], seq=11),
                      "released")  # fmt: skip
        await publish(reserved("a", 10), "reserved")
        assert (await t.list_devices(bus, state="attached")).total == 0
        await publish(reserved("b", 12), "reserved")
        held = (await t.list_devices(bus, state="attached")).devices
        assert [(d.id, d.guest_id) for d in held] == [(dev.id, "b")]
        await publish(m.Confirmed(request_id="c", guest_id="a", device_ids=[dev.id], seq=10),
                      "confirmed")  # fmt: skip
        held = (await t.list_devices(bus, state="attached")).devices
        assert [(d.id, d.guest_id) for d in held] == [(dev.id, "b")]
        # b's release (13) and c's reservation (14) are late; c's release (15) comes first:
        # the VF is free, whoever inventory thought held it, and stays free
        await publish(m.Released(request_id="r", guest_id="c", device_ids=[dev.id], seq=15),
                      "released")  # fmt: skip
        assert (await t.list_devices(bus, state="attached")).total == 0
        await publish(m.Released(request_id="r", guest_id="b", device_ids=[dev.id], seq=13),
                      "released")  # fmt: skip
        await publish(reserved("c", 14), "reserved")
        assert (await t.list_devices(bus, state="attached")).total == 0
