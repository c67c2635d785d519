"""Several replica processes, hundreds of concurrent requests, a fleet of 12 VFs: no VF is ever
reserved for two guests, in the replies, in the database or in the event stream."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter

import asyncpg
import pytest

from sriov.common import schemas as m
from sriov.common.errors import SriovError
from sriov.scheduler.testing import (
    CX5,
    I350,
    FleetState,
    PfSpec,
    read_events,
    settle,
    state_durable,
)

pytestmark = pytest.mark.slow
PF_A, PF_B = "0000:3b:00.0", "0000:5e:00.0"


def check_event_history(events: list[m.PlacementEventT]) -> dict[str, str]:
    """Replay the stream: a VF is reserved again only after its holder let it go."""
    holder: dict[str, str] = {}
    for ev in events:
        if isinstance(ev, m.Reserved):
            for a in ev.assignments:
                assert a.device_id not in holder, (
                    f"{a.device_id} reserved for {ev.guest_id} while {holder[a.device_id]} held it"
                )
                holder[a.device_id] = ev.guest_id
        elif isinstance(ev, m.Released | m.Expired) or (
            isinstance(ev, m.Lost) and not ev.still_reserved
        ):
            for d in ev.device_ids:
                assert holder.pop(d) == ev.guest_id
    return holder


async def active(database_url: str) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT device_id, guest_id FROM scheduler.reservations WHERE ended_at IS NULL"
        )
        held = await conn.fetchval("SELECT count(*) FROM scheduler.vfs WHERE held_by IS NOT NULL")
        assert held == len(rows)
        return {r["device_id"]: r["guest_id"] for r in rows}
    finally:
        await conn.close()


async def drained(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with asyncio.timeout(30):
            while await conn.fetchval("SELECT count(*) FROM scheduler.outbox"):
                await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def test_hundreds_of_concurrent_requests_on_three_replicas(
    bus, client, replicas, database_url
) -> None:
    fleet = FleetState(bus)
    ids = fleet.add_host("h1", [PfSpec(PF_A, count=3), PfSpec(PF_B, count=3)])
    ids += fleet.add_host("h2", [PfSpec(PF_A, count=3), PfSpec(PF_B, model=I350, count=3)])
    for name in ("r1", "r2", "r3"):
        replicas.start(name)
    await replicas.ready(bus, "r1", "r2", "r3")
    await fleet.publish()
    await settle(bus, await state_durable(database_url))

    rng = random.Random(7)
    sem = asyncio.Semaphore(150)

    async def one(i: int) -> tuple[str, m.PlacementReply | SriovError]:
        guest = f"g{i}"
        kind = rng.random()
        if kind < 0.6:
            nets = [f"sriov-nic-model={CX5}"]
        elif kind < 0.8:
            nets = [f"sriov-nic-model={CX5}", f"sriov-nic-model={rng.choice([CX5, I350])}"]
        else:
            nets = [f"sriov-nic-id={rng.choice(ids)}"]
        async with sem:
            try:
                return guest, await client.place(guest, *nets, request_id=str(uuid.uuid4()))
            except SriovError as exc:
                return guest, exc

    # Round 1: 300 requests for 12 VFs at once.
    results = await asyncio.gather(*(one(i) for i in range(300)))
    won = {g: r for g, r in results if isinstance(r, m.PlacementReply)}
    codes = Counter(r.code for _, r in results if isinstance(r, SriovError))
    assert set(codes) <= {"no_capacity", "device_busy"}, codes
    devices = [a.device_id for r in won.values() for a in r.assignments]
    assert len(devices) == len(set(devices)) <= 12
    assert all(len({a.host_id for a in r.assignments}) == 1 for r in won.values())
    assert len(devices) >= 10  # nearly everything was handed out
    assert await active(database_url) == {
        a.device_id: g for g, r in won.items() for a in r.assignments
    }

    # Round 2: everyone releases while 200 more place and some attach, all at once.
    async def release(guest: str) -> None:
        await client.release(guest)

    async def attach(guest: str) -> None:
        with contextlib.suppress(SriovError):  # no capacity left on its host is fine
            await client.attach(guest, f"sriov-nic-model={CX5}")

    tasks = [release(g) for g in won] + [one(1000 + i) for i in range(200)]
    tasks += [attach(g) for g in list(won)[:5]]
    await asyncio.gather(*tasks)
    now = await active(database_url)
    assert len(now) <= 12
    await drained(database_url)
    holders = check_event_history(await read_events(bus))
    assert holders == now
