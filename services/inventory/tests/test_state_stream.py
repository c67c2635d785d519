"""SRIOV_STATE: a newcomer rebuilds current state; the outbox relay survives a crash."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import pytest

from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus, Delivery
from sriov.common.errors import BusTimeout
from sriov.common.outbox import Relay
from sriov.devtools.embedded import NatsServer
from sriov.devtools.plans import JOINS, analyzed_while_empty, pages_read, plan_nodes
from sriov.inventory import testing as t
from sriov.inventory.db import outbox
from sriov.inventory.db.conn import Pool
from sriov.inventory.db.pool import open_pool
from sriov.inventory.ingest import HostEvents


async def test_newcomer_rebuilds_current_state_from_the_last_value_stream(
    bus: Bus, nats_url: str, database_url: str
) -> None:
    async with t.replica(nats_url, database_url) as rep:
        hosts = [t.Hostd(bus, f"h{i}") for i in range(3)]
        fleets = [t.fleet_host(i, vfs=6) for i in range(3)]
        for hostd, (pfs, vfs) in zip(hosts, fleets, strict=True):
            await hostd.snapshot(pfs, vfs)
        # history the newcomer must not replay: removals, link flaps, a changed VF
        pfs0, vfs0 = fleets[0]
        await hosts[0].vf_removed(vfs0[0])
        await hosts[0].link(pfs0[0], up=False)
        await hosts[0].link(pfs0[0], up=True)
        await hosts[0].link(pfs0[1], up=False)
        await hosts[1].vf("changed", msgspec.structs.replace(fleets[1][1][2], mac="x"))
        await t.eventually(lambda: t.drained(bus, rep.pool), what="drained")

        devices, host_states = await t.state_values(bus)
        listed = (await t.list_devices(bus, limit=1000)).devices
        live = {d.id: d for d in listed}
        assert {k for k, v in devices.items() if not v.removed} == set(live)
        for dev_id, dev in live.items():
            assert devices[dev_id].device == dev
        assert devices[m.device_id("h0", vfs0[0].pci_address)].removed
        assert live[m.device_id("h1", fleets[1][1][2].pci_address)].mac == "x"
        down = {d.pci_address for d in listed if d.host_id == "h0" and d.link_state == "down"}
        assert down == {v.pci_address for v in vfs0 if v.pf_pci_address == pfs0[1].pci_address}
        assert set(host_states) == {"h0", "h1", "h2"}
        assert host_states["h0"].host.vf_count == 5
        # one message per subject: the stream holds state, not history
        info = await bus.stream_info(s.STREAM_STATE)
        assert info.messages == len(devices) + len(host_states)


async def test_relay_crash_after_publishing_duplicates_nothing(bus: Bus, database_url: str) -> None:
    pool = await open_pool(database_url)
    try:
        await _snapshot_queued(bus, pool, vfs=8)
        relay = Relay(outbox.StateOutbox(pool), bus, name="test")

        # First attempt: rows claimed and published, then the replica dies before commit.
        with pytest.raises(Crash):
            async with relay.store.claim(500) as rows:
                await relay.publish(rows)
                raise Crash
        assert len(rows) == 9  # 8 devices + the host
        info = await bus.stream_info(s.STREAM_STATE)
        assert info.last_seq == 9

        # Second attempt (another replica, after the crash): same rows, same event ids.
        assert await relay.relay_once() == 9
        info = await bus.stream_info(s.STREAM_STATE)
        assert info.last_seq == 9  # JetStream dropped every copy
        async with pool.acquire() as conn:
            assert await outbox.pending(conn) == 0
    finally:
        await pool.close()


async def test_a_row_queued_by_the_older_release_goes_out_with_its_headers(
    bus: Bus, database_url: str
) -> None:
    """Rows store their header block encoded; one an older release queued (headers as JSON)
    before an upgrade is still relayed, its CloudEvents headers and message id intact."""
    pool = await open_pool(database_url)
    try:
        vfs = await _snapshot_queued(bus, pool, vfs=2)
        old = {"ce-id": "host/h1/999", "Nats-Msg-Id": "host/h1/999", "ce-type": "x.v1",
               "ce-source": "sriov/inventory/old", "ce-specversion": "1.0"}  # fmt: skip
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE inventory.outbox SET headers = $1 WHERE subject = $2",
                msgspec.json.encode(old), s.host_state("h1").subject,
            )  # fmt: skip
        assert await Relay(outbox.StateOutbox(pool), bus, name="test").relay_once() == 3
        stored = {msg.subject: msg.headers async for msg in bus.history(s.STREAM_STATE)}
        assert stored[s.host_state("h1").subject] == old
        device = stored[s.device_state("h1", vfs[0].pci_address).subject]
        assert device is not None and device["ce-source"] == "sriov/inventory/test"
        assert device["ce-id"] == device["Nats-Msg-Id"] and device["ce-id"].startswith("device/")
    finally:
        await pool.close()


async def test_the_claim_plan_holds_when_statistics_say_the_outbox_is_empty(
    database_url: str,
) -> None:
    """The claim picks its rows once and deletes them by key, whatever the statistics (see
    sriov.devtools.plans: planned as a join, one claim took 60 s in a 10,000-host restart)."""
    pool = await open_pool(database_url)
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO inventory.outbox (subject, payload, headers) SELECT 'x.' || g,"
                " convert_to(repeat('p', 900), 'UTF8'), $1 FROM generate_series(1, 3000) g",
                b"NATS/1.0\r\n\r\n",
            )
            await analyzed_while_empty(conn, "inventory.outbox")
            nodes = await plan_nodes(conn, outbox._CLAIM, 500)
        assert not nodes & (JOINS | {"Seq Scan"}), nodes
        async with outbox.StateOutbox(pool).claim(500) as rows:
            assert [r.subject for r in rows] == [f"x.{g}" for g in range(1, 501)]
        async with pool.acquire() as conn:
            assert await outbox.pending(conn) == 2500
    finally:
        await pool.close()


async def test_the_relay_vacuums_what_it_relayed_so_that_claims_stay_short(
    bus: Bus, database_url: str
) -> None:
    """A claim walks the outbox's index over every row deleted since the last VACUUM; the
    relay vacuums while rows go through, not later (autovacuum is off here, as it is behind
    for minutes after a fleet-wide restart)."""
    pool = await open_pool(database_url)
    try:
        async with pool.acquire() as conn:
            await conn.execute("ALTER TABLE inventory.outbox SET (autovacuum_enabled = off)")

        async def relayed_all(vacuum_every_rows: int) -> tuple[int, int]:
            """Queue and relay 5,000 rows: (the relay's vacuums, pages a claim reads then)."""
            async with pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO inventory.outbox (subject, payload, headers) SELECT x,"
                    " convert_to(repeat('p', 900), 'UTF8'), $2 FROM unnest($1::text[]) x",
                    [s.device_state(f"h{g}", "0000:3b:02.1").subject for g in range(5000)],
                    b"NATS/1.0\r\n\r\n",
                )
            relay = Relay(
                outbox.StateOutbox(pool), bus, name="test", vacuum_every_s=3600,
                vacuum_every_rows=vacuum_every_rows,
            )  # fmt: skip
            stop = asyncio.Event()
            task = asyncio.create_task(relay.run(stop))
            try:
                await t.eventually(lambda: _outbox_empty(pool), what="relayed")
                if vacuum_every_rows <= 5000:
                    await t.eventually(lambda: _true(relay.vacuums), what="vacuumed")
            finally:
                stop.set()
                relay.wake()
                await task
            async with pool.acquire() as conn:
                return relay.vacuums, await pages_read(conn, outbox._CLAIM, 500)

        walked = await relayed_all(vacuum_every_rows=10**6)
        vacuumed = await relayed_all(vacuum_every_rows=5000)  # once all went through
        assert walked[0] == 0 and walked[1] > 50, walked  # over 5,000 deleted rows' entries
        assert vacuumed[0] == 1 and vacuumed[1] < 10, vacuumed
    finally:
        await pool.close()


async def _true(value: object) -> bool:
    return bool(value)


async def _outbox_empty(pool: Pool) -> bool:
    async with pool.acquire() as conn:
        return await outbox.pending(conn) == 0


async def test_relays_of_several_replicas_never_publish_a_state_twice(
    bus: Bus, database_url: str
) -> None:
    pools = [await open_pool(database_url) for _ in range(3)]
    try:
        ingest = HostEvents(pools[0], "sriov/inventory/test")
        for i in range(20):
            hostd = t.Hostd(bus, f"h{i}")
            snap = hostd.snapshot_event(*t.fleet_host(i, vfs=10))
            await ingest.apply([(snap, _delivery(s.host_snapshot(f"h{i}").subject))])
        relays = [Relay(outbox.StateOutbox(p), bus, name="test", batch=7) for p in pools]

        async def drain(r: Relay) -> int:
            total = 0
            while n := await r.relay_once():
                total += n
            return total

        counts = await asyncio.gather(*(drain(r) for r in relays))
        assert sum(counts) == 20 * 11
        info = await bus.stream_info(s.STREAM_STATE)
        assert info.last_seq == 20 * 11 and info.messages == 20 * 11
    finally:
        for p in pools:
            await p.close()


async def test_batched_relay_keeps_claim_order_and_last_values_across_a_nats_restart(
    nats_server: NatsServer, database_url: str
) -> None:
    bus = await Bus.connect(nats_server.url, name="test-relay")
    pool = await open_pool(database_url)
    try:
        await bus.ensure_streams()
        ingest = HostEvents(pool, "sriov/inventory/test")
        hostd = t.Hostd(bus, "h1")
        pfs, vfs = t.fleet_host(1, vfs=8)
        snap = hostd.snapshot_event(pfs, vfs)
        vf2 = msgspec.structs.replace(vfs[2], mac="02:00:00:00:00:0a")
        changed = m.VfChanged(host_id="h1", generation=1, seq=hostd.next_seq(), vf=vf2)
        await ingest.apply([(snap, _delivery(s.host_snapshot("h1").subject))])
        await ingest.apply([(changed, _delivery(s.host_vf("h1", "changed").subject))])
        async with pool.acquire() as conn:  # one row per subject, the newest state in it
            order = [r["subject"] for r in await conn.fetch(
                "SELECT subject FROM inventory.outbox ORDER BY seq")]  # fmt: skip
        assert len(order) == 9
        relay = Relay(outbox.StateOutbox(pool), bus, name="test", batch=4, ack_timeout_s=0.5)
        assert await relay.relay_once() == 4

        nats_server.stop()  # the next batch is sent into a dead connection: no acks
        with pytest.raises(BusTimeout, match="did not acknowledge 4 of 4"):
            await relay.relay_once()
        async with pool.acquire() as conn:
            assert await outbox.pending(conn) == 5  # nothing forgotten without its ack
        nats_server.start()
        relayed = 4
        async with asyncio.timeout(20):
            while relayed < 9:
                with contextlib.suppress(BusTimeout):  # until the client has reconnected
                    relayed += await relay.relay_once()

        stored = [msg async for msg in bus.history(s.STREAM_STATE)]
        assert [msg.subject for msg in stored] == order  # claim order, each subject once
        subject = s.device_state("h1", vf2.pci_address).subject
        state = m.STATE_EVENTS.decode(next(x.data for x in stored if x.subject == subject))
        assert isinstance(state, m.DeviceState) and state.device.mac == "02:00:00:00:00:0a"
    finally:
        await pool.close()
        await bus.close()


class Crash(Exception):
    pass


async def _snapshot_queued(bus: Bus, pool: Pool, vfs: int) -> list[m.VF]:
    """Host h1's snapshot of ``vfs`` VFs applied: its states wait in the outbox."""
    hostd = t.Hostd(bus, "h1")
    pfs, host_vfs = t.fleet_host(1, vfs=vfs)
    snap = hostd.snapshot_event(pfs, host_vfs)
    await HostEvents(pool, "sriov/inventory/test").apply(
        [(snap, _delivery(s.host_snapshot("h1").subject))]
    )
    return host_vfs


def _delivery(subject: str) -> Delivery:
    return Delivery(subject, {}, 1, 1)
