"""The outbox: an event committed with its change is published even if the replica dies before
publishing, and published once even if it dies after publishing but before forgetting it."""

from __future__ import annotations

import asyncpg
import pytest

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.outbox import Relay
from sriov.scheduler.operations import Scheduler
from sriov.scheduler.store import Store
from sriov.scheduler.testing import CX5, PfSpec, read_events, run_replica, wait_events


def _event(guest: str, verb: str) -> str:
    return subjects.placement_event(guest, verb).subject


def place(guest: str) -> m.PlaceRequest:
    return m.PlaceRequest(request_id=f"r-{guest}", guest_id=guest,
                          nets=[m.NetRequest(desc=f"sriov-nic-model={CX5}")])  # fmt: skip


async def test_event_of_a_commit_survives_a_crash_before_publishing(
    nats_url, bus, fleet, sync, database_url
) -> None:
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", count=2)])
    await sync()
    # A scheduler that commits and then "dies": no relay ever runs in it.
    store = await Store.open(database_url)
    try:
        reply = await Scheduler(store, source="sriov/test", default_ttl_s=60).place(place("g1"))
        assert await store.outbox_size() == 1
    finally:
        await store.close()
    assert await read_events(bus, "g1") == []
    # Any other replica's relay publishes it.
    async with run_replica(nats_url, database_url):
        [event] = await wait_events(bus, 1, "g1")
    assert isinstance(event, m.Reserved) and event.assignments == reply.assignments


async def test_a_batch_published_twice_is_stored_once(bus, fleet, sync, replica) -> None:
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", count=2)])
    await sync()
    store = replica.store
    lone = Relay(store, bus, name="test")
    app = Scheduler(store, source="sriov/test", default_ttl_s=60)  # its commits wake no relay
    await app.place(place("g1"))
    await app.place(place("g2"))

    class Crash(Exception):
        pass

    # Publish a batch, then crash before deleting it: the rows stay in the outbox...
    with pytest.raises(Crash):
        async with store.claim(100) as rows:
            assert {r.subject for r in rows} >= {_event("g1", "reserved"), _event("g2", "reserved")}
            for row in rows:  # CloudEvents headers; the event id is also the message id
                assert row.headers["ce-id"] == row.headers["Nats-Msg-Id"]
                assert row.headers["ce-source"] == "sriov/test"
                assert row.headers["ce-type"] == m.type_of(m.Reserved)
            await lone.publish(rows)
            raise Crash
    assert await store.outbox_size() >= 2
    # ...and are published again: JetStream drops them by event id (Nats-Msg-Id).
    replica.relay.wake()
    for guest in ("g1", "g2"):
        assert len(await wait_events(bus, 1, guest)) == 1
    while await store.outbox_size():
        await lone.relay_once()
    assert [len(await read_events(bus, g)) for g in ("g1", "g2")] == [1, 1]


async def test_seq_keeps_commit_order_when_the_stream_does_not(
    nats_url, bus, fleet, sync, database_url
) -> None:
    """A relay batch that failed part-way is published again; what made it the first time
    is then ahead of what did not in the stream. Each event's ``seq`` keeps commit order."""
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", count=2)])
    await sync()
    store = await Store.open(database_url)
    try:
        app = Scheduler(store, source="sriov/test", default_ttl_s=60)
        await app.place(place("g1"))
        await app.release(m.ReleaseRequest(request_id="rel-g1", guest_id="g1"))

        class PartialFailure(Exception):
            pass

        with pytest.raises(PartialFailure):
            async with store.claim(100) as rows:
                assert [r.subject for r in rows] == [
                    _event("g1", "reserved"), _event("g1", "released")
                ]  # fmt: skip
                # the release made it, not the place
                await Relay(store, bus, name="test").publish(rows[1:])
                raise PartialFailure
    finally:
        await store.close()
    async with run_replica(nats_url, database_url):
        events = await wait_events(bus, 2, "g1")
    assert [type(e) for e in events] == [m.Released, m.Reserved]  # the stream's order
    released, reserved = events
    assert 0 < reserved.seq < released.seq  # the order the scheduler committed them in


async def test_the_database_refuses_a_second_active_reservation(
    fleet, sync, client, database_url
) -> None:
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", count=1)])
    await sync()
    vf = (await client.place("g1", f"sriov-nic-model={CX5}")).assignments[0].device_id
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO scheduler.reservations (device_id, guest_id, host_id, request_id, net)"
                " VALUES ($1, 'g2', 'h1', 'sneaky', 'x')",
                vf,
            )
    finally:
        await conn.close()
