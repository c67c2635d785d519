"""The projection: built from inventory's state stream, replayed by a new deployment, caught up
after downtime, ordered by revision."""

from __future__ import annotations

import uuid

import asyncpg
import msgspec

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import event_headers
from sriov.scheduler.testing import CX5, FleetState, PfSpec, run_replica, settle

PF = "0000:3b:00.0"


async def rows(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def send(bus, dev: m.Device, revision: int, removed: bool = False) -> None:
    msg = m.DeviceState(device=dev, revision=revision, removed=removed)
    subject = subjects.device_state(dev.host_id, dev.pci_address).subject
    await bus.js_publish_raw(subject, m.encode(msg), event_headers(msg, "sriov/test"))


async def test_lower_revisions_are_ignored(fleet, sync, bus, replica, database_url) -> None:
    [vf] = fleet.add_host("h1", [PfSpec(PF, count=1)])
    await sync()
    dev = fleet.devices[vf]
    await send(bus, msgspec.structs.replace(dev, link_state="down"), revision=7)
    # applied before the stale one is sent: the stream keeps one value per subject, so a
    # revision 5 published at once could replace 7 before the projection was handed it
    # (CI, once: the row ended at revision 5, 7 never delivered)
    await settle(bus, replica.projection.spec.durable)
    await send(bus, msgspec.structs.replace(dev, link_state="up"), revision=5)  # stale
    await settle(bus, replica.projection.spec.durable)
    [row] = await rows(database_url, "SELECT link_up, revision FROM scheduler.vfs")
    assert (row["link_up"], row["revision"]) == (False, 7)


async def test_tombstones_remove_and_stay(fleet, sync, bus, replica, database_url, client) -> None:
    [a, b] = fleet.add_host("h1", [PfSpec(PF, count=2)])
    await sync()
    fleet.remove(a)
    await sync()
    dev = fleet.devices[a]
    await send(bus, dev, revision=1)  # a late, older message cannot resurrect it
    await settle(bus, replica.projection.spec.durable)
    got = await rows(database_url, "SELECT device_id, removed FROM scheduler.vfs ORDER BY 1")
    assert {r["device_id"]: r["removed"] for r in got} == {a: True, b: False}
    reply = await client.place("g1", f"sriov-nic-model={CX5}")
    assert reply.assignments[0].device_id == b


async def test_a_new_deployment_replays_current_state(
    nats_url, bus, postgres_server, database_url
) -> None:
    fleet = FleetState(bus)
    fleet.add_host("h1", [PfSpec(PF, count=3)])
    fleet.add_host("h2", [PfSpec(PF, count=2)])
    await fleet.publish()
    fleet.set_link("h1", PF, up=False)  # history: only the last value per subject is kept
    await fleet.publish()
    async with run_replica(nats_url, database_url) as first:
        await settle(bus, first.projection.spec.durable)
    fresh = postgres_server.create_database(f"fresh_{uuid.uuid4().hex[:8]}")
    async with run_replica(nats_url, fresh) as second:
        assert second.projection.spec.durable != first.projection.spec.durable
        await settle(bus, second.projection.spec.durable)
    for dsn in (database_url, fresh):
        got = await rows(dsn, "SELECT host_id, count(*) AS n, bool_or(link_up) AS up "
                              "FROM scheduler.vfs GROUP BY 1 ORDER BY 1")  # fmt: skip
        assert [(r["host_id"], r["n"], r["up"]) for r in got] == [("h1", 3, False), ("h2", 2, True)]


async def test_a_replica_catches_up_after_downtime(nats_url, bus, database_url) -> None:
    fleet = FleetState(bus)
    fleet.add_host("h1", [PfSpec(PF, count=2)])
    await fleet.publish()
    async with run_replica(nats_url, database_url) as first:
        await settle(bus, first.projection.spec.durable)
    fleet.add_host("h2", [PfSpec(PF, count=4)])  # while no replica runs
    fleet.set_host_status("h1", "offline")
    await fleet.publish()
    async with run_replica(nats_url, database_url) as second:
        await settle(bus, second.projection.spec.durable)
        got = await rows(database_url, "SELECT host_id, status FROM scheduler.hosts ORDER BY 1")
        assert [(r["host_id"], r["status"]) for r in got] == [("h1", "offline"), ("h2", "online")]
        [n] = await rows(database_url, "SELECT count(*) FROM scheduler.vfs")
        assert n[0] == 6


async def test_replicas_share_one_state_consumer(nats_url, bus, database_url) -> None:
    fleet = FleetState(bus)
    for h in range(20):
        fleet.add_host(f"h{h}", [PfSpec(PF, count=20)])
    async with run_replica(nats_url, database_url) as r1, run_replica(nats_url, database_url) as r2:
        assert r1.projection.spec.durable == r2.projection.spec.durable
        await fleet.publish()
        await settle(bus, r1.projection.spec.durable)
        handled = r1.projection.stats.handled + r2.projection.stats.handled
        assert handled == 420  # each message applied once (400 VFs + 20 hosts)
    [n] = await rows(database_url, "SELECT count(*) FROM scheduler.vfs")
    assert n[0] == 400


async def test_host_status_from_devices_until_the_host_state_arrives(
    bus, replica, database_url
) -> None:
    fleet = FleetState(bus)
    [vf] = fleet.add_host("h1", [PfSpec(PF, count=1)])
    dev = msgspec.structs.replace(fleet.devices[vf], host_status="online")
    await send(bus, dev, revision=1)  # no HostState yet
    await settle(bus, replica.projection.spec.durable)
    [row] = await rows(database_url, "SELECT status, revision FROM scheduler.hosts")
    assert (row["status"], row["revision"]) == ("online", -1)
    fleet.set_host_status("h1", "offline")
    await fleet.publish()
    await settle(bus, replica.projection.spec.durable)
    await send(bus, dev, revision=2)  # a device still saying "online" no longer decides
    await settle(bus, replica.projection.spec.durable)
    [row] = await rows(database_url, "SELECT status, revision FROM scheduler.hosts")
    assert row["status"] == "offline" and row["revision"] >= 1
