"""``devices.list`` paging: every page of every filter is the right slice of the listing."""

from __future__ import annotations

from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.devtools.plans import JOINS, analyzed_while_empty, plan_nodes
from sriov.inventory import testing as t
from sriov.inventory.db.reads import STREAMING, DeviceFilter, groups_sql, page_sql


async def test_pages_are_exact_slices_of_the_listing(
    bus: Bus, nats_url: str, database_url: str
) -> None:
    async with t.replica(nats_url, database_url) as rep:
        models = [t.CX5_VF, t.I350_VF]
        for i in range(7):  # hosts of different sizes and models
            hostd = t.Hostd(bus, f"h{i}")
            await hostd.snapshot(*t.fleet_host(i, vfs=3 + 2 * i, model=models[i % 2]))
        await hostd.snapshot(*t.guide_host())  # h6 again, now the guide's mixed host
        await t.eventually(lambda: t.drained(bus, rep.pool), what="fleet ingested")
        everything = (await t.list_devices(bus, limit=1000)).devices
        held = [d.id for d in everything[::4]]
        ev = m.Confirmed(request_id="r", guest_id="g1", device_ids=held)
        await bus.js_publish(s.placement_event("g1", "confirmed"), ev, event_id="r")
        await t.eventually(lambda: t.drained(bus, rep.pool), what="reservations applied")

        everything = (await t.list_devices(bus, limit=1000)).devices
        key = [(d.model, d.host_id, _desc(d.pci_address)) for d in everything]
        assert key == sorted(key)  # model, host, address descending
        filters: list[dict[str, object]] = [
            {},
            {"model": t.I350_VF},
            {"state": "free"},
            {"state": "attached"},
            {"model": t.CX5_VF, "state": "free"},
            {"guest_id": "g1"},
            {"host_id": "h6"},
            {"vendor_device_id": "15b3:1018", "dev_type": "NIC"},
        ]
        for flt in filters:
            want = [d.id for d in everything if _matches(d, flt)]
            for limit in (1, 5, 7):
                got: list[str] = []
                for offset in range(0, len(want) + limit, limit):
                    page = await t.list_devices(bus, limit=limit, offset=offset, **flt)
                    assert page.total == len(want), flt
                    got += [d.id for d in page.devices]
                assert got == want, (flt, limit)

        # statistics saying the devices are gone (an ANALYZE between a removal and a new
        # snapshot): a page is still its ids picked once, then its rows by key
        async with rep.pool.acquire() as conn:
            await analyzed_while_empty(conn, "inventory.devices")
            nodes = await plan_nodes(conn, page_sql("NOT removed", 0), 5, 10, init_plans=False)
        assert not nodes & JOINS, nodes
        page = await t.list_devices(bus, limit=5, offset=10)
        assert [d.id for d in page.devices] == [d.id for d in everything[10:15]]

        # a page's groups are summed as the counts' index streams them, up to the page: never
        # all of the fleet's groups hashed and sorted first (24 ms against 8 at 10,000 hosts)
        async with rep.pool.acquire() as conn, conn.transaction():
            await conn.execute(STREAMING)
            for flt in (DeviceFilter(), DeviceFilter(model=t.I350_VF), DeviceFilter(host_id="h6"),
                        DeviceFilter(state="free", vendor_device_id="15b3:1018")):  # fmt: skip
                where, args = flt.where(counts=True)
                nodes = await plan_nodes(conn, groups_sql(flt, where, len(args)), *args, 10, 5)
                assert "Sort" not in nodes and "Limit" in nodes, (flt, nodes)


def _desc(pci: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in pci)


def _matches(d: m.Device, flt: dict[str, object]) -> bool:
    for key, value in flt.items():
        if key == "state":
            if (d.guest_id is not None) != (value == "attached"):
                return False
        elif getattr(d, key) != value:
            return False
    return True
