"""hostd's events into the fleet table, on a real nats-server and PostgreSQL.

The test publishes what hostd publishes, on the same subjects and with the same event ids.
"""

from __future__ import annotations

import itertools

import msgspec
import pytest

from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus, Delivery, event_headers
from sriov.inventory import testing as t
from sriov.inventory.db import store
from sriov.inventory.db.pool import open_pool
from sriov.inventory.ingest import HostEvents
from sriov.inventory.main import Replica


async def ingested(rep: Replica, kind: type[m.Message], outcome: str, n: int = 1) -> None:
    async def check() -> bool:
        return rep.ingested[(m.type_of(kind), outcome)] >= n

    await t.eventually(check, what=f"{n} {m.type_of(kind)} {outcome}")


async def test_duplicate_events_change_nothing(bus: Bus, nats_url: str, database_url: str) -> None:
    async with t.replica(nats_url, database_url) as rep:
        hostd = t.Hostd(bus, "h1")
        pfs, vfs = t.fleet_host(1, vfs=8)
        snap = hostd.snapshot_event(pfs, vfs)
        await hostd.send(s.host_snapshot("h1"), snap)
        await ingested(rep, m.HostSnapshot, "applied")
        await t.eventually(lambda: t.drained(bus, rep.pool), what="drained")
        before, _ = await t.state_values(bus)

        # the same event id again: JetStream itself drops it
        assert not await bus.js_publish(s.host_snapshot("h1"), snap, event_id=hostd.event_id(snap))
        # the same (generation, seq) under another id: inventory drops it as stale
        await bus.js_publish(s.host_snapshot("h1"), snap, event_id="another-id")
        await ingested(rep, m.HostSnapshot, "stale")
        await t.eventually(lambda: t.drained(bus, rep.pool), what="drained")

        after, _ = await t.state_values(bus)
        assert {k: v.revision for k, v in after.items()} == {
            k: v.revision for k, v in before.items()
        }
        assert (await t.list_devices(bus, host_id="h1")).total == 8


async def test_reordered_events_end_in_the_newest_state(
    bus: Bus, nats_url: str, database_url: str
) -> None:
    hostd = t.Hostd(bus, "h1")
    pfs, vfs = t.fleet_host(1, vfs=4)
    await hostd.snapshot(pfs, vfs)
    a, b = vfs[0], vfs[1]
    # hostd's order: change a (seq 3), remove a (seq 4), change b twice (seq 5, 6).
    ev_a = m.VfChanged(host_id="h1", generation=1, seq=3, vf=msgspec.structs.replace(a, mac="m1"))
    rm_a = m.VfRemoved(host_id="h1", generation=1, seq=4, pci_address=a.pci_address)
    b1 = m.VfChanged(host_id="h1", generation=1, seq=5, vf=msgspec.structs.replace(b, mac="b1"))
    b2 = m.VfChanged(host_id="h1", generation=1, seq=6, vf=msgspec.structs.replace(b, mac="b2"))
    # ...delivered backwards.
    for ev in (b2, rm_a, b1, ev_a):
        subject = s.host_vf("h1", "removed" if isinstance(ev, m.VfRemoved) else "changed")
        await bus.js_publish(subject, ev, event_id=hostd.event_id(ev))
    async with t.replica(nats_url, database_url, t.InventorySettings(batch=1)) as rep:
        await t.eventually(lambda: t.drained(bus, rep.pool), what="drained")
        listed = {d.pci_address: d for d in (await t.list_devices(bus, host_id="h1")).devices}
        assert a.pci_address not in listed
        assert listed[b.pci_address].mac == "b2"
        assert rep.ingested[("host.vf.changed.v1", "stale")] == 2
        states, _ = await t.state_values(bus)
        assert states[m.device_id("h1", a.pci_address)].removed


async def test_malformed_events_are_dead_lettered_and_nothing_stored_is_lost(
    bus: Bus, nats_url: str, database_url: str
) -> None:
    hostd = t.Hostd(bus, "h1")
    pfs, vfs = t.fleet_host(1, vfs=4)
    await hostd.snapshot(pfs, vfs)
    subject = s.host_snapshot("h1")

    async def raw(payload: bytes, eid: str) -> None:
        hb = m.Heartbeat(host_id="h1", generation=1, seq=0, interval_s=1)
        await bus.js_publish_raw(subject.subject, payload, event_headers(hb, "test", eid))

    await raw(b"{not json", "garbage")
    await raw(b'{"type": "host.snapshot.v1", "host_id": "h1", "seq": 9}', "no-generation")
    await raw(b'{"type": "host.teleported.v7", "host_id": "h1"}', "from-the-future")
    liar = m.HostSnapshot(host_id="h2", generation=1, seq=50, vfs=[])
    await bus.js_publish(subject, liar, event_id="liar")
    dup = hostd.snapshot_event(pfs, [vfs[0], vfs[0]])
    await hostd.send(subject, dup)
    await hostd.heartbeat()
    async with t.replica(nats_url, database_url) as rep:
        await t.eventually(lambda: t.drained(bus, rep.pool), what="drained")
        stats = rep.stats["inventory-host-events"]
        assert (stats.dead_lettered, stats.unknown) == (4, 1)
        dead = bus.history(s.STREAM_DEAD_LETTER, s.dead_letter("inventory-host-events").subject)
        reasons = [d.headers["Sriov-Dead-Letter-Reason"] async for d in dead]
        text = "\n".join(reasons)
        assert "not valid JSON" in text
        assert "generation" in text
        assert "claims host_id 'h2'" in text
        assert "lists 0000:3b:00.2 twice in vfs" in text
        assert (await t.list_devices(bus, host_id="h1")).total == 4
        assert (await t.list_devices(bus, host_id="h2")).total == 0
        assert rep.ingested[("host.heartbeat.v1", "applied")] == 1


async def test_vf_events_pf_link_and_host_queries(
    bus: Bus, nats_url: str, database_url: str
) -> None:
    async with t.replica(nats_url, database_url) as rep:
        hostd = t.Hostd(bus, "h7", hostname="compute-7")
        pfs, vfs = t.fleet_host(7, vfs=6)
        await hostd.snapshot(pfs, vfs[:4])
        await hostd.vf("discovered", vfs[4])
        await hostd.vf("discovered", vfs[5])
        await hostd.vf_removed(vfs[0])
        await hostd.link(pfs[1], up=False)
        await t.eventually(
            lambda: t.drained(bus, rep.pool), what="drained"
        )  # all applied and announced
        await t.eventually(
            lambda: _count(rep, "host.link.v1", "applied", 1), what="link event applied"
        )
        listed = (await t.list_devices(bus, host_id="h7")).devices
        assert sorted(d.pci_address for d in listed) == sorted(v.pci_address for v in vfs[1:])
        down = {d.pci_address for d in listed if d.link_state == "down"}
        assert down == {v.pci_address for v in vfs[1:] if v.pf_pci_address == pfs[1].pci_address}
        host = await t.get_host(bus, "h7")
        assert (host.hostname, host.status, host.vf_count, host.vf_free, host.pf_count) == (
            "compute-7",
            "online",
            5,
            5,
            2,
        )
        assert host.last_seen is not None
        states, hosts = await t.state_values(bus)
        for d in listed:
            assert states[d.id].device == d
        assert hosts["h7"].host.vf_count == 5


async def _count(rep: Replica, kind: str, outcome: str, n: int) -> bool:
    return rep.ingested[(kind, outcome)] >= n


async def test_a_large_snapshot_batch_by_copy_stores_what_row_statements_store(
    bus: Bus, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = await open_pool(database_url)
    ingest = HostEvents(pool, "sriov/inventory/test")

    async def snapshots(prefix: str, mac: str | None = None) -> None:
        batch = []
        for i in (1, 2):  # 2 x 128 VFs: one batch of 256 rows, over COPY_MIN_ROWS
            hostd = t.Hostd(bus, f"{prefix}{i}", seq=itertools.count(1 if mac is None else 9))
            pfs, vfs = t.fleet_host(i, vfs=128)
            vfs[5] = msgspec.structs.replace(vfs[5], mac=mac or vfs[5].mac)
            snap = hostd.snapshot_event(pfs, vfs)
            batch.append((snap, Delivery(s.host_snapshot(hostd.host_id).subject, {}, 1, 1)))
        await ingest.apply(batch)

    async def stored(prefix: str) -> list[dict[str, object]]:
        skip = {"id", "host_id", "updated_at", "revision"}
        cols = ", ".join(c for c in store.DEVICE_COLUMNS if c not in skip)
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT right(host_id, 1) AS h, {cols} FROM inventory.devices "
                "WHERE host_id LIKE $1 ORDER BY 1, pci_address", prefix + "%"
            )  # fmt: skip
        return [dict(r) for r in rows]

    try:
        assert store.COPY_MIN_ROWS <= 256
        await snapshots("copy-")  # new rows
        await snapshots("copy-", mac="02:00:00:00:00:05")  # the same rows updated
        monkeypatch.setattr(store, "COPY_MIN_ROWS", 10**9)  # one statement over arrays
        await snapshots("rows-")
        await snapshots("rows-", mac="02:00:00:00:00:05")
        by_copy, by_rows = await stored("copy-"), await stored("rows-")
        assert len(by_copy) == 256 and by_copy == by_rows
        assert sum(r["mac"] == "02:00:00:00:00:05" for r in by_copy) == 2  # the update landed
    finally:
        await pool.close()


async def test_inventory_sessions_are_named_for_operators(database_url: str) -> None:
    """pg_stat_activity (and the benchmarks' CPU split) tell inventory's sessions apart."""
    pool = await open_pool(database_url)
    try:
        async with pool.acquire() as conn:
            name = await conn.fetchval(
                "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            )
        assert name == "sriov-inventory"
    finally:
        await pool.close()
