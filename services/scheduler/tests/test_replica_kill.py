"""A replica killed in the middle of a request: the retry is answered by another replica, with
the same answer if the dead one had committed, and nothing is lost or booked twice."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from sriov.common import schemas as m
from sriov.common.errors import BusError, BusTimeout
from sriov.scheduler.testing import (
    CX5,
    FleetState,
    PfSpec,
    read_events,
    settle,
    state_durable,
    wait_events,
)

pytestmark = pytest.mark.slow


async def test_killed_while_its_transaction_waits(bus, client, replicas, database_url) -> None:
    fleet = FleetState(bus)
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", count=4)])
    replicas.start("doomed")
    await replicas.ready(bus, "doomed")
    await fleet.publish()
    await settle(bus, await state_durable(database_url))

    # Hold the guest's lock so the doomed replica's transaction waits inside the database.
    blocker = await asyncpg.connect(database_url)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute(
        "SELECT pg_advisory_xact_lock(hashtext('sriov.scheduler.guest'), hashtext('gk'))"
    )
    req = m.PlaceRequest(request_id="kill-1", guest_id="gk",
                         nets=[m.NetRequest(desc=f"sriov-nic-model={CX5}")])  # fmt: skip
    first = asyncio.create_task(client.call("place", req, timeout=3))
    async with asyncio.timeout(20):
        while not await blocker.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND application_name LIKE 'sriov-scheduler/doomed%'"
        ):
            await asyncio.sleep(0.05)
    replicas.kill("doomed")  # mid-request
    replicas.start("heir")
    await replicas.ready(bus, "heir")
    await tx.commit()  # the dead replica's transaction may now finish, or be rolled back
    await blocker.close()
    with pytest.raises((BusTimeout, BusError)):
        await first  # the caller never got an answer...
    retried = await client.call("place", req)  # ...so it retries, safely
    again = await client.call("place", req)
    assert retried == again and len(retried.assignments) == 1
    [reserved] = [e for e in await wait_events(bus, 1, "gk") if isinstance(e, m.Reserved)]
    assert reserved.assignments == retried.assignments
    assert (await client.get("gk")).assignments == retried.assignments


async def test_requests_survive_a_replica_crash_under_load(
    bus, client, replicas, database_url
) -> None:
    fleet = FleetState(bus)
    for h in range(4):
        fleet.add_host(f"h{h}", [PfSpec("0000:3b:00.0", count=40)])
    for name in ("a", "b", "c"):
        replicas.start(name)
    await replicas.ready(bus, "a", "b", "c")
    await fleet.publish()
    await settle(bus, await state_durable(database_url))

    async def place_with_retries(i: int) -> m.PlacementReply:
        req = m.PlaceRequest(request_id=f"load-{i}", guest_id=f"g{i}",
                             nets=[m.NetRequest(desc=f"sriov-nic-model={CX5}")])  # fmt: skip
        for _attempt in range(20):
            try:
                return await client.call("place", req, timeout=2)
            except (BusTimeout, BusError):
                await asyncio.sleep(random.uniform(0.05, 0.2))  # lost with the replica: retry
        raise AssertionError(f"load-{i} never answered")

    async def crash_soon() -> None:
        await asyncio.sleep(0.3)
        replicas.kill("b")

    replies, _ = await asyncio.gather(
        asyncio.gather(*(place_with_retries(i) for i in range(150))), crash_soon()
    )
    devices = [a.device_id for r in replies for a in r.assignments]
    assert len(devices) == len(set(devices)) == 150
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT request_id, count(*) AS n FROM scheduler.reservations "
            "WHERE ended_at IS NULL GROUP BY 1"
        )
        assert {r["request_id"]: r["n"] for r in rows} == {f"load-{i}": 1 for i in range(150)}
        async with asyncio.timeout(30):
            while await conn.fetchval("SELECT count(*) FROM scheduler.outbox"):
                await asyncio.sleep(0.05)
    finally:
        await conn.close()
    reserved = [e for e in await read_events(bus) if isinstance(e, m.Reserved)]
    assert sorted(e.request_id for e in reserved) == sorted(f"load-{i}" for i in range(150))
    assert all(e.assignments == r.assignments for e in reserved
               for r in replies if r.request_id == e.request_id)  # fmt: skip
