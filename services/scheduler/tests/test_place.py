"""place over NATS against real PostgreSQL: all-or-nothing on one host, policies, idempotency."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest

from sriov.common import schemas as m
from sriov.common.errors import (
    Conflict,
    HostOffline,
    InvalidRequest,
    NoCapacity,
    NotFound,
    SriovError,
    UnknownModel,
)
from sriov.scheduler import validation as v
from sriov.scheduler.store import Outcome
from sriov.scheduler.testing import CX5, I350, PfSpec, wait_events


async def test_place_reserves_one_vf_and_announces_it(fleet, sync, client, bus) -> None:
    ids = fleet.add_host("h1", [PfSpec("0000:3b:00.0", model=I350, count=4, ifname="eth1")])
    await sync()
    reply = await client.place("g1", f"sriov-nic-model={I350}", request_id="r1")
    assert reply.request_id == "r1" and reply.guest_id == "g1" and reply.host_id == "h1"
    [a] = reply.assignments
    assert a.device_id in ids
    assert a.model == I350 and a.vendor_device_id == "8086:1520" and a.host_id == "h1"
    assert a.pf_ifname == "eth1" and a.state == "reserved" and a.expires_at is not None
    assert a.net == f"sriov-nic-model={I350}"
    events = await wait_events(bus, 1, "g1")
    [ev] = events
    assert isinstance(ev, m.Reserved)
    assert ev.request_id == "r1" and ev.host_id == "h1" and ev.assignments == reply.assignments
    shown = await client.get("g1")
    assert shown.assignments == reply.assignments


async def test_all_vfs_of_a_request_are_on_one_host(fleet, sync, client) -> None:
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", model=I350, count=1)])
    fleet.add_host("h2", [PfSpec("0000:3b:00.0", model=I350, count=1),
                          PfSpec("0000:5e:00.0", model=CX5, count=2)])  # fmt: skip
    await sync()
    reply = await client.place(
        "g1", f"sriov-nic-model={I350}", f"sriov-nic-model={CX5}", f"sriov-nic-model={CX5}"
    )
    assert reply.host_id == "h2"
    assert {a.host_id for a in reply.assignments} == {"h2"}
    assert [a.model for a in reply.assignments] == [I350, CX5, CX5]
    assert len({a.device_id for a in reply.assignments}) == 3


async def test_nothing_is_reserved_when_one_net_cannot_be_met(fleet, sync, client) -> None:
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", model=I350, count=2)])
    await sync()
    with pytest.raises(NoCapacity) as err:
        await client.place("g1", *[f"sriov-nic-model={I350}"] * 3)
    text = str(err.value)
    assert "need 3 x 'sriov-nic-model=I350 Ethernet Controller Virtual Function'" in text
    assert "nearest capacity: host h1 has 2 of the 3" in text
    assert err.value.details["nearest_host"] == "h1"
    # all or nothing: both VFs are still free
    reply = await client.place("g2", *[f"sriov-nic-model={I350}"] * 2)
    assert len(reply.assignments) == 2


async def test_retried_request_gets_the_same_answer(fleet, sync, client, bus) -> None:
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", count=4)])
    await sync()
    first = await client.place("g1", f"sriov-nic-model={CX5}", request_id="same")
    again = await client.place("g1", f"sriov-nic-model={CX5}", request_id="same")
    assert again == first
    await wait_events(bus, 1, "g1")
    assert len((await client.get("g1")).assignments) == 1
    assert len(await wait_events(bus, 1, "g1")) == 1
    with pytest.raises(Conflict) as err:
        await client.place("g1", f"sriov-nic-model={CX5}", f"sriov-nic-model={CX5}",
                           request_id="same")  # fmt: skip
    assert "already used for a different request" in str(err.value)
    assert err.value.details["field"] == "request_id"


async def test_errors_name_what_is_wrong(fleet, sync, client) -> None:
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", model=I350, count=1)], status="offline")
    fleet.add_host("h2", [PfSpec("0000:3b:00.0", model=CX5, count=1)])
    await sync()
    with pytest.raises(UnknownModel) as unk:
        await client.place("g1", "sriov-nic-model=ConnectX-9 Virtual Function")
    assert "'ConnectX-9 Virtual Function'" in str(unk.value)
    assert f"known models: '{CX5}', '{I350}'" in str(unk.value)
    with pytest.raises(HostOffline) as off:
        await client.place("g1", f"sriov-nic-model={I350}", host_id="h1")
    assert "host h1 is offline" in str(off.value)
    with pytest.raises(NoCapacity) as cap:
        await client.place("g1", f"sriov-nic-model={I350}")
    assert "1 on hosts not online" in str(cap.value)
    with pytest.raises(NotFound):
        await client.place("g1", f"sriov-nic-model={CX5}", host_id="nowhere")
    with pytest.raises(InvalidRequest) as bad:
        await client.place("g1", "model=x")
    assert bad.value.details["field"] == "nets[0].desc"
    with pytest.raises(InvalidRequest) as numa:
        await client.place("g1", f"sriov-nic-model={CX5}", numa_policy="required")
    assert numa.value.details["field"] == "numa_node"


async def test_placements_arriving_together_commit_together_each_with_its_own_answer(
    fleet, sync, replica, bus, database_url
) -> None:
    """Group commit (scheduler.place_many): one transaction, yet a refused or failed request
    leaves no trace and does not touch the others, and each keeps its own idempotency."""
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", model=I350, count=4)])
    await sync()
    store = replica.store
    store.placements.slots = 1  # the first goes alone; the five behind it go as one batch

    def args(rid: str, guest: str, host: str | None = None, ttl: object = None) -> bytes:
        req = m.PlaceRequest(request_id=rid, guest_id=guest, host_id=host,
                             nets=[m.NetRequest(desc=f"sriov-nic-model={I350}")])  # fmt: skip
        raw = msgspec.to_builtins(v.place_args(req, default_ttl=60, ctx=v.Context(source="t")))
        if ttl is not None:
            raw["ttl_s"] = ttl  # past validation: the SQL fails on it (not a refusal)
        return msgspec.json.encode(raw)

    batch = [args("r1", "g1"), args("r2", "g2"), args("r3", "g3", host="nowhere"),
             args("r4", "g4", ttl="soon"), args("r1", "g5"), args("r6", "g6")]  # fmt: skip
    before = (store.placements.batches, store.placements.items)
    out = await asyncio.gather(*(store.place(a) for a in batch), return_exceptions=True)
    assert (store.placements.batches - before[0], store.placements.items - before[1]) == (2, 6)
    ok = [o for o in out if isinstance(o, Outcome)]
    assert len(ok) == 3 and len({o.assignments[0].device_id for o in ok}) == 3
    assert isinstance(out[2], NotFound) and "host nowhere is not known" in str(out[2])
    assert type(out[3]) is SriovError and "database error during place" in str(out[3])
    assert isinstance(out[4], Conflict)  # r1's key, taken earlier in the same transaction
    # what was refused or failed left nothing: no key, no reservation, no event
    conn = await asyncpg.connect(database_url)
    try:
        keys = await conn.fetch("SELECT request_id FROM scheduler.requests ORDER BY 1")
        guests = await conn.fetch(
            "SELECT guest_id FROM scheduler.reservations WHERE ended_at IS NULL ORDER BY 1"
        )
    finally:
        await conn.close()
    assert [r[0] for r in keys] == ["r1", "r2", "r6"]
    assert [r[0] for r in guests] == ["g1", "g2", "g6"]
    events = await wait_events(bus, 3)
    assert sorted(ev.guest_id for ev in events) == ["g1", "g2", "g6"]
    # each request's own idempotency: a retry gets the reply its first attempt committed
    assert await store.place(batch[1]) == out[1]
