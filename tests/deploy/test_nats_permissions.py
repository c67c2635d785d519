"""Per-identity NATS permissions, proven against a real nats-server with JetStream.

A host's credentials publish and JetStream-publish its own events, serve its own commands,
and are refused everything of another host; each service can do what its role needs (create
its durable consumer, fetch, ack, publish its events) and not another role's work.

Refusals are observed without waiting: after ``flush()`` (a PING/PONG round trip) the server
has processed every earlier operation, sent the permissions-violation error (logged by
``Bus``) and delivered any message it routed, so "nothing arrived" is a fact, not a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sriov.cli import nats_auth as na
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus, ConsumerSpec, Delivery, ServiceHost
from sriov.common.errors import BusError, BusTimeout

A, B = "node-a", "node-b"


def heartbeat(host_id: str, seq: int = 1) -> m.Heartbeat:
    return m.Heartbeat(host_id=host_id, generation=1, seq=seq, interval_s=10)


async def refused(caplog: pytest.LogCaptureFixture, kind: str, subject: str) -> None:
    """Wait for the server's permissions-violation error (``Bus`` logs it) for ``subject``.

    The error is asynchronous: it usually precedes the PONG of a flush, but not always, so
    wait for it (bounded) instead of assuming the order.
    """
    needle = f'permissions violation for {kind} to "{subject}"'.lower()
    for _ in range(500):
        if any(needle in r.getMessage().lower() for r in caplog.records):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no permissions violation for {kind} to {subject!r} was reported")


async def settle(*buses: Bus) -> None:
    for bus in buses:
        await bus.flush()


async def provision(sn: Any) -> None:
    await sn.provision()


async def test_host_publishes_and_jetstream_publishes_its_own_events(sn: Any) -> None:
    await provision(sn)
    host = await sn.connect(na.host_identity(A).user)
    ops = await sn.connect("sriov-operator")
    try:
        async with ops.subscribe(s.host_events_of(A)) as live:
            await settle(ops)  # the server has the subscription before anyone publishes
            await host.publish(s.host_heartbeat(A), heartbeat(A))
            try:
                got = await asyncio.wait_for(anext(live), 5)
            except TimeoutError:  # seen once in CI: say what the server saw, next time
                raise AssertionError(
                    f"the host's heartbeat never reached the operator's subscription; "
                    f"host connected {host.is_connected}, server log:\n{sn.log.read_text()[-4000:]}"
                ) from None
            assert got.subject == s.host_heartbeat(A).subject
        # A JetStream publish is a request whose PubAck comes to the host's own inbox.
        assert await host.js_publish(s.host_heartbeat(A), heartbeat(A, 2), event_id="hb-a-2")
        assert not await host.js_publish(s.host_heartbeat(A), heartbeat(A, 2), event_id="hb-a-2")
        assert await host.js_publish_raw(s.offload_audit(A).subject, b"{}", {}) is True
        last = await ops.last_message(s.STREAM_HOST_EVENTS, s.host_heartbeat(A).subject)
        assert last.headers["Nats-Msg-Id"] == "hb-a-2"
    finally:
        await host.close()
        await ops.close()


async def test_host_is_refused_on_another_hosts_subjects(
    sn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await provision(sn)
    host_a = await sn.connect(na.host_identity(A).user)
    ops = await sn.connect("sriov-operator")
    try:
        async with ops.subscribe(s.host_events_of(B)) as live:
            await settle(ops)
            forged = s.host_heartbeat(B)
            await host_a.publish(forged, heartbeat(B))
            await host_a.publish(s.offload_audit(B), heartbeat(B))
            await settle(host_a, ops)
            await refused(caplog, "publish", forged.subject)
            await refused(caplog, "publish", s.offload_audit(B).subject)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(live), 0)  # already delivered if ever routed
        with pytest.raises(BusTimeout):
            await host_a.js_publish(s.host_heartbeat(B), heartbeat(B), timeout=0.5)
        with pytest.raises(BusError, match="holds no message"):  # nothing forged was stored
            await ops.last_message(s.STREAM_HOST_EVENTS, s.host_heartbeat(B).subject)
        # Nor may it impersonate a service or read other hosts' replies.
        await host_a.publish(s.device_state(A, "0000:3b:00.1"), heartbeat(A))
        await settle(host_a)
        await refused(caplog, "publish", s.device_state(A, "0000:3b:00.1").subject)
    finally:
        await host_a.close()
        await ops.close()


@pytest.mark.parametrize(
    "subject",
    [
        s.hostcmd_group(B) + ".>",
        s.offloadcmd_group(B) + ".>",
        s.endpoint(s.hostcmd_group(B), "rescan").subject,
        s.host_events_of(B),
        s.INBOX_ROOT + ".>",
        s.inbox_prefix("host", B) + ".>",
        s.INVENTORY_GROUP + ".>",
    ],
)
async def test_host_cannot_subscribe_outside_its_own_commands(
    sn: Any, caplog: pytest.LogCaptureFixture, subject: str
) -> None:
    host_a = await sn.connect(na.host_identity(A).user)
    try:
        async with host_a.subscribe(subject):
            await settle(host_a)
            await refused(caplog, "subscription", subject)
    finally:
        await host_a.close()


async def test_host_serves_only_its_own_commands(sn: Any, caplog: pytest.LogCaptureFixture) -> None:
    host_a = await sn.connect(na.host_identity(A).user)
    ops = await sn.connect("sriov-operator")
    svc = await ServiceHost.start(host_a, "sriov-hostd", "0.1.0", "test", {"host_id": A})

    async def rescan(_msg: m.RescanRequest, _headers: object) -> m.CommandAck:
        return m.CommandAck(message="rescanned", snapshot_seq=7)

    try:
        await svc.add_endpoint(s.hostcmd_group(A), "rescan", m.RescanRequest, rescan)
        await settle(host_a)  # the server has the endpoint's subscription
        ack = await ops.request(
            s.endpoint(s.hostcmd_group(A), "rescan"), m.RescanRequest(), m.CommandAck
        )
        assert (ack.message, ack.snapshot_seq) == ("rescanned", 7)
        pings = await ops.discover("PING", wait=0.3)
        assert any(p["name"] == "sriov-hostd" for p in pings)
        # Registering another host's command is refused, so nobody answers it.
        await svc.add_endpoint(s.hostcmd_group(B), "rescan", m.RescanRequest, rescan)
        await settle(host_a)
        forged = s.endpoint(s.hostcmd_group(B), "rescan").subject
        await refused(caplog, "subscription", forged)
        with pytest.raises(BusError, match="no service answers"):
            await ops.request(
                s.endpoint(s.hostcmd_group(B), "rescan"), m.RescanRequest(), m.CommandAck
            )
    finally:
        await svc.stop()
        await host_a.close()
        await ops.close()


async def test_inventory_consumes_host_events_with_its_durable(sn: Any) -> None:
    inventory = await sn.connect("sriov-inventory")
    host = await sn.connect(na.host_identity(A).user)
    try:
        await provision(sn)  # the stream admin provisions; services only verify
        await host.js_publish(s.host_heartbeat(A), heartbeat(A))
        stop = asyncio.Event()
        seen: list[tuple[str, int]] = []

        async def handle(event: m.HostEvent, delivery: Delivery) -> None:
            seen.append((delivery.subject, event.seq))
            stop.set()

        spec = ConsumerSpec(s.STREAM_HOST_EVENTS, "inventory-host-events", [s.HOST_EVENTS_ALL])
        await asyncio.wait_for(inventory.consume(spec, m.HOST_EVENTS, handle, stop=stop), 10)
        assert seen == [(s.host_heartbeat(A).subject, 1)]
        info = await inventory.consumer_info(s.STREAM_HOST_EVENTS, spec.durable)
        assert info.ack_floor == 1  # the ack was allowed
        assert await inventory.js_publish_raw(
            s.device_state(A, "0000:3b:00.2").subject, b"{}", {"Nats-Msg-Id": "d1"}
        )
        assert await inventory.js_publish_raw(s.host_state(A).subject, b"{}", {})
    finally:
        await inventory.close()
        await host.close()


async def test_scheduler_replays_state_and_publishes_only_placement_events(
    sn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await provision(sn)
    inventory = await sn.connect("sriov-inventory")
    scheduler = await sn.connect("sriov-scheduler")
    ops = await sn.connect("sriov-operator")
    try:
        state = s.device_state(A, "0000:3b:00.2").subject
        await inventory.js_publish_raw(state, b'{"v":1}', {})
        await inventory.js_publish_raw(state, b'{"v":2}', {})
        # A reader replays through a server-named ordered consumer pushed to its own inbox.
        replayed = [x async for x in ops.last_values(s.STREAM_STATE, s.DEVICE_STATE_ALL)]
        assert replayed == [(state, b'{"v":2}')]
        event = s.placement_event("guest-1", "reserved").subject
        assert await scheduler.js_publish_raw(event, b"{}", {})
        await scheduler.publish(s.device_state(A, "0000:3b:00.2"), heartbeat(A))
        await settle(scheduler)
        await refused(caplog, "publish", state)
    finally:
        await inventory.close()
        await scheduler.close()
        await ops.close()


async def test_operator_reads_and_commands_but_cannot_forge_or_reconfigure(
    sn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await provision(sn)
    ops = await sn.connect("sriov-operator")
    try:
        info = await ops.stream_info(s.STREAM_HOST_EVENTS)
        assert info.name == s.STREAM_HOST_EVENTS
        await ops.publish(s.host_heartbeat(A), heartbeat(A))
        create = s.js_api("STREAM", "CREATE", "EVIL")
        await ops.publish_raw(create, b"{}")
        delete = s.js_api("STREAM", "DELETE", s.STREAM_HOST_EVENTS)
        await ops.publish_raw(delete, b"")
        await settle(ops)
        for subject in (s.host_heartbeat(A).subject, create, delete):
            await refused(caplog, "publish", subject)
    finally:
        await ops.close()


async def test_client_requests_placements_but_cannot_announce_them(
    sn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await provision(sn)
    client = await sn.connect("client-cloud")
    try:
        request = s.placement_request("guest-1", "place")
        assert await client.js_publish_raw(request.subject, b"{}", {})
        forged = s.placement_event("guest-1", "reserved").subject
        await client.publish_raw(forged, b"{}")
        await settle(client)
        await refused(caplog, "publish", forged)
    finally:
        await client.close()


async def test_stream_admin_provisions_but_reads_and_publishes_nothing(
    sn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await sn.connect("sriov-stream-admin")
    try:
        await admin.ensure_streams()
        await admin.ensure_streams()  # idempotent: create-or-update
        await admin.publish(s.host_heartbeat(A), heartbeat(A))
        async with admin.subscribe(s.HOST_EVENTS_ALL):
            await settle(admin)
        await refused(caplog, "publish", s.host_heartbeat(A).subject)
        await refused(caplog, "subscription", s.HOST_EVENTS_ALL)
    finally:
        await admin.close()


@pytest.fixture
def sn(secured_nats: Any, caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.WARNING, logger="sriov.common.bus")
    return secured_nats


async def test_several_micro_instances_on_one_connection_all_answer_discovery(sn: Any) -> None:
    """A process may host several micro instances on one connection (a replica is one, its
    endpoints concurrent). Each answers ``$SRV.PING``; a one-reply ``allow_responses`` would
    refuse them all."""
    scheduler = await sn.connect("sriov-scheduler")
    ops = await sn.connect("sriov-operator")
    hosted = [
        await ServiceHost.start(scheduler, "sriov-scheduler", "0.1.0", "t", {"instance": str(i)})
        for i in range(2)
    ]
    try:
        await settle(scheduler)
        pings = await ops.discover("PING", wait=0.5)
        assert sorted(p["metadata"]["instance"] for p in pings) == ["0", "1"]
    finally:
        for svc in hosted:
            await svc.stop()
        await scheduler.close()
        await ops.close()
    assert "Violation" not in sn.log.read_text()


async def test_hostd_replays_its_own_desired_state_and_never_another_hosts(sn: Any) -> None:
    """The scheduler publishes desired state for two hosts; host A's identity runs hostd's own
    consumer (deleted and created again at every start, so current state is replayed) and gets
    only its own VF, both times."""
    from sriov.hostd.lifecycle import desired_consumer

    await provision(sn)
    scheduler = await sn.connect("sriov-scheduler")
    host_a = await sn.connect(na.host_identity(A).user)
    try:
        for host, rev in ((A, 7), (B, 8)):
            desired = m.VfDesired(
                host_id=host, pci_address="0000:3b:00.2", device_id=m.device_id(host, "x"),
                revision=rev, state="clean",
            )  # fmt: skip
            assert await scheduler.js_publish(s.desired_vf(host, "0000:3b:00.2"), desired)
        for _start in range(2):
            got: list[m.VfDesired] = []
            stop = asyncio.Event()

            async def handle(d: m.VfDesired, _delivery: Delivery) -> None:
                got.append(d)  # noqa: B023 (one consumer per loop, awaited within it)
                stop.set()  # noqa: B023

            await asyncio.wait_for(
                host_a.consume(desired_consumer(A), m.DESIRED, handle, stop=stop), 10
            )
            assert [(d.host_id, d.revision) for d in got] == [(A, 7)]
    finally:
        await scheduler.close()
        await host_a.close()
