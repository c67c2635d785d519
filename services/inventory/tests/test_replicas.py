"""Several replicas: consuming at once, and one killed in the middle of a batch."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import signal
from pathlib import Path

import asyncpg
import msgspec
import pytest

from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.inventory import testing as t
from sriov.inventory.db.pool import open_pool
from sriov.inventory.model import HostRow, HostView

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def comparable(d: m.Device) -> m.Device:
    return msgspec.structs.replace(d, updated_at=EPOCH)


async def publish_history(bus: Bus, hosts: int, rng: random.Random) -> dict[str, m.Device]:
    """Snapshots then random VF/PF changes for many hosts, interleaved; returns the devices
    hostd's own order of events leads to (computed with the pure model)."""
    now = dt.datetime.now(dt.UTC)
    expected: dict[str, m.Device] = {}
    streams: list[list[tuple[s.Subject, m.HostEvent]]] = []
    for i in range(hosts):
        hostd = t.Hostd(bus, f"host-{i:03d}")
        pfs, vfs = t.fleet_host(i, vfs=8)
        events: list[tuple[s.Subject, m.HostEvent]] = [
            (s.host_snapshot(hostd.host_id), hostd.snapshot_event(pfs, vfs[:6]))
        ]
        for _ in range(6):
            kind = rng.choice(["link", "changed", "removed", "discovered"])
            vf = rng.choice(vfs)
            seq = hostd.next_seq()
            ev: m.HostEvent
            if kind == "link":
                pf = rng.choice(pfs)
                up = rng.random() < 0.5
                ev = m.LinkChanged(
                    host_id=hostd.host_id, generation=1, seq=seq, ifname=pf.ifname or "",
                    state="up" if up else "down", pci_address=pf.pci_address, role="pf",
                )  # fmt: skip
                events.append((s.host_link(hostd.host_id, up), ev))
            elif kind == "removed":
                ev = m.VfRemoved(
                    host_id=hostd.host_id, generation=1, seq=seq, pci_address=vf.pci_address
                )
                events.append((s.host_vf(hostd.host_id, "removed"), ev))
            else:
                mac = f"02:00:00:00:{i % 256:02x}:{seq:02x}"
                cls = m.VfChanged if kind == "changed" else m.VfDiscovered
                ev = cls(
                    host_id=hostd.host_id,
                    generation=1,
                    seq=seq,
                    vf=msgspec.structs.replace(vf, mac=mac),
                )
                events.append((s.host_vf(hostd.host_id, kind), ev))
        view = HostView(HostRow(hostd.host_id), {}, {})
        for _subject, ev in events:
            view.apply(ev, now)  # type: ignore[arg-type]
        view.finalize(now)
        expected.update(
            {r.device.id: comparable(r.device) for r in view.devices.values() if not r.removed}
        )
        streams.append(events)
    while any(streams):  # interleave hosts, keeping each host's own order
        for events in streams:
            if events:
                subject, ev = events.pop(0)
                await bus.js_publish(subject, ev, event_id=f"{ev.host_id}/{ev.seq}")
    return expected


async def test_two_replicas_consume_at_once(bus: Bus, nats_url: str, database_url: str) -> None:
    settings = t.InventorySettings(batch=10)
    async with (
        t.replica(nats_url, database_url, settings, "r1") as r1,
        t.replica(nats_url, database_url, settings, "r2") as r2,
    ):
        expected = await publish_history(bus, 40, random.Random(7))
        await t.eventually(lambda: t.drained(bus, r1.pool), 60, "both replicas drained")
        listed = (await t.list_devices(bus, limit=1000)).devices
        assert {d.id: comparable(d) for d in listed} == expected
        states, hosts = await t.state_values(bus)
        assert {k: comparable(v.device) for k, v in states.items() if not v.removed} == expected
        assert len(hosts) == 40
        work = [sum(r.ingested.values()) for r in (r1, r2)]
        assert sum(work) >= 40 * 7  # every event handled (stale retries may add more)
        assert all(w > 0 for w in work), f"one replica did nothing: {work}"


@pytest.mark.slow
async def test_replica_killed_mid_batch_loses_and_duplicates_nothing(
    bus: Bus, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    hosts, per_host = 300, 16
    announced: list[str] = []  # every state publish seen on the wire, copies included

    async def collect(subject: str) -> None:
        async with bus.subscribe(subject) as msgs:
            async for msg in msgs:
                announced.append(msg.headers["ce-id"])

    tails = [asyncio.create_task(collect(x)) for x in (s.DEVICE_STATE_ALL, s.HOST_STATE_ALL)]
    for i in range(hosts):
        hostd = t.Hostd(bus, f"host-{i:03d}")
        await hostd.snapshot(*t.fleet_host(i, vfs=per_host))
    conn = await asyncpg.connect(database_url)
    pool = None
    try:
        log = tmp_path / "inventory.log"
        with t.inventory_process(
            nats_url, database_url, log, "--batch", "10", "--ack-wait", "2"
        ) as first:

            async def started() -> bool:
                assert first.poll() is None, log.read_text()
                with contextlib.suppress(asyncpg.UndefinedTableError):
                    return bool(await conn.fetchval("SELECT count(*) FROM inventory.devices"))
                return False

            await t.eventually(started, 60, "first replica ingesting")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        killed_at = await conn.fetchval("SELECT count(*) FROM inventory.devices")
        assert killed_at < hosts * per_host, "the first replica finished before it was killed"

        pool = await open_pool(database_url)
        with t.inventory_process(
            nats_url, database_url, log, "--batch", "50", "--ack-wait", "2"
        ) as second:

            async def done() -> bool:
                assert second.poll() is None, log.read_text()
                return await t.drained(bus, pool)  # type: ignore[arg-type]

            await t.eventually(done, 120, "second replica finished the backlog")
            rows = await conn.fetch(
                "SELECT host_id, count(*) AS n FROM inventory.devices GROUP BY host_id"
            )
            assert {r["host_id"]: r["n"] for r in rows} == {
                f"host-{i:03d}": per_host for i in range(hosts)
            }
            revisions = {
                r["id"]: r["revision"]
                for r in await conn.fetch("SELECT id, revision FROM inventory.devices")
            }
        states, host_states = await t.state_values(bus)
        assert {k: v.revision for k, v in states.items()} == revisions
        assert len(host_states) == hosts
        info = await bus.stream_info(s.STREAM_STATE)

        async def caught_up() -> bool:
            return len(set(announced)) >= info.last_seq

        await t.eventually(caught_up, what="the wire tail caught up")
        # every distinct state version was stored exactly once: copies relayed again after
        # the kill were dropped by JetStream (same event id)
        assert info.last_seq == len(set(announced))
        dead = await bus.stream_info(s.STREAM_DEAD_LETTER)
        assert dead.messages == 0
    finally:
        for task in tails:
            task.cancel()
        await asyncio.gather(*tails, return_exceptions=True)
        await conn.close()
        if pool is not None:
            await pool.close()
