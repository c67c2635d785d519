"""Asynchronous requests: published to JetStream, answered with placement events."""

from __future__ import annotations

import asyncio

import pytest

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Delivery, event_headers
from sriov.common.errors import NotFound
from sriov.scheduler.testing import CX5, PfSpec, read_events, wait_events


async def publish(bus, guest: str, op: str, msg: m.Message, event_id: str | None = None) -> None:
    await bus.js_publish(subjects.placement_request(guest, op), msg, event_id=event_id)


async def publish_raw(bus, subject: str, data: bytes) -> None:
    headers = event_headers(m.GetRequest(guest_id="x"), "sriov/test")
    await bus.js_publish_raw(subject, data, headers)


def place(guest: str, request_id: str, n: int = 1) -> m.PlaceRequest:
    return m.PlaceRequest(
        request_id=request_id, guest_id=guest,
        nets=[m.NetRequest(desc=f"sriov-nic-model={CX5}")] * n,
    )  # fmt: skip


async def test_place_attach_release_by_stream(fleet, sync, bus, client) -> None:
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", count=3)])
    await sync()
    await publish(bus, "g1", "place", place("g1", "a-1"))
    [reserved] = await wait_events(bus, 1, "g1")
    assert isinstance(reserved, m.Reserved) and reserved.request_id == "a-1"
    attach = m.AttachRequest(request_id="a-2", guest_id="g1",
                             net=m.NetRequest(desc=f"sriov-nic-model={CX5}"))  # fmt: skip
    await publish(bus, "g1", "attach", attach)
    events = await wait_events(bus, 2, "g1")
    assert isinstance(events[1], m.Reserved) and events[1].host_id == "h1"
    await publish(bus, "g1", "release", m.ReleaseRequest(request_id="a-3", guest_id="g1"))
    events = await wait_events(bus, 3, "g1")
    assert isinstance(events[2], m.Released) and len(events[2].device_ids) == 2
    # the same request published again (another message id): same idempotency, no new event
    await publish(bus, "g1", "place", place("g1", "a-1"))
    await publish(bus, "g1", "place", place("g1", "a-4"))
    events = await wait_events(bus, 4, "g1")
    assert [e.request_id for e in events] == ["a-1", "a-2", "a-3", "a-4"]
    assert len((await client.get("g1")).assignments) == 1


async def test_refusals_become_failed_events_with_the_same_error(fleet, sync, bus, client) -> None:
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", count=1)])
    await sync()
    await publish(bus, "g1", "place", place("g1", "f-1", n=2))
    [failed] = await wait_events(bus, 1, "g1")
    assert isinstance(failed, m.Failed)
    assert failed.op == "place" and failed.request_id == "f-1"
    assert failed.error.code == "no_capacity"
    assert "nearest capacity: host h1 has 1 of the 2 VF(s)" in failed.error.message
    assert failed.error.details["nearest_host"] == "h1"
    # a retry after capacity appeared succeeds (a refusal changed nothing)
    fleet.add_host("h2", [PfSpec("0000:3b:00.0", count=2)])
    await sync()
    await publish(bus, "g1", "place", place("g1", "f-1", n=2))
    events = await wait_events(bus, 2, "g1")
    assert isinstance(events[1], m.Reserved) and events[1].host_id == "h2"


async def test_a_redelivered_refusal_is_not_placed_again(fleet, sync, bus, client, replica) -> None:
    """The ack of a refused request's message is lost (a NATS node or partition) after the
    refusal committed: the message comes back. Placed again once capacity appeared, it
    reserved, and the requester got a Reserved after the Failed of the same request."""
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", count=1)])
    await sync()
    subject = subjects.placement_request("g1", "place").subject
    raw = m.encode(place("g1", "r-1", n=2))
    await replica.inbox.handle(raw, Delivery(subject, {}, num_delivered=1, stream_seq=77))
    [failed] = await wait_events(bus, 1, "g1")
    assert isinstance(failed, m.Failed) and failed.request_id == "r-1"
    fleet.add_host("h2", [PfSpec("0000:3b:00.0", count=2)])
    await sync()
    await replica.inbox.handle(raw, Delivery(subject, {}, num_delivered=2, stream_seq=77))
    with pytest.raises(NotFound):
        await client.get("g1")
    # another message with the same request is a retry, which may succeed (a refusal
    # changed nothing), as the test above shows through the stream
    await replica.inbox.handle(raw, Delivery(subject, {}, num_delivered=1, stream_seq=78))
    events = await wait_events(bus, 2, "g1")
    assert [type(e) for e in events] == [m.Failed, m.Reserved]
    assert len(await read_events(bus, "g1")) == 2


async def test_malformed_requests_are_answered_and_dead_lettered(fleet, sync, bus) -> None:
    await sync()
    subject = subjects.placement_request("g1", "place").subject
    await publish_raw(bus, subject, b'{"type": "placement.place.v1", "request_id": "m-1"}')
    await publish_raw(bus, subject, b"not json at all")
    await publish_raw(bus, subject, b'{"type": "placement.teleport.v9", "request_id": "m-3"}')
    events = await wait_events(bus, 3, "g1")
    assert all(isinstance(e, m.Failed) for e in events)
    by_id = {e.request_id: e for e in events if isinstance(e, m.Failed)}
    assert by_id["m-1"].error.code == "invalid_request"
    assert "guest_id" in by_id["m-1"].error.message
    assert by_id[""].error.code == "invalid_request"
    assert "not valid JSON" in by_id[""].error.message
    assert by_id["m-3"].error.code == "unknown_type"
    # the malformed ones are also in the dead-letter stream for an operator
    async with asyncio.timeout(10):
        while True:
            info = await bus.stream_info(subjects.STREAM_DEAD_LETTER)
            if info.messages >= 2:
                break
            await asyncio.sleep(0.05)
    dl = await bus.last_message(
        subjects.STREAM_DEAD_LETTER, subjects.dead_letter("scheduler-requests").subject
    )
    assert "rejected" in dl.headers["Sriov-Dead-Letter-Reason"]


async def test_guest_of_the_subject_must_match(fleet, sync, bus, client) -> None:
    fleet.add_host("h1", [PfSpec("0000:3b:00.0", count=1)])
    await sync()
    await publish(bus, "g1", "place", place("g2", "x-1"))
    [failed] = await wait_events(bus, 1, "g1")
    assert isinstance(failed, m.Failed) and failed.error.details["field"] == "guest_id"
    assert await wait_events(bus, 0, "g2") == []
