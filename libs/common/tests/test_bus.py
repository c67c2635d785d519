"""The bus against a real nats-server: publish/consume, dedupe, redelivery, dead-letter."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus, ConsumerSpec, ConsumerStats, Delivery
from sriov.common.errors import Unavailable


def hb(seq: int, host: str = "h1") -> m.Heartbeat:
    return m.Heartbeat(host_id=host, generation=1, seq=seq, interval_s=5)


async def run_consumer(
    bus: Bus,
    handler: Any,
    until: Any,
    spec: ConsumerSpec | None = None,
    timeout: float = 10,
    batch: Any = None,
) -> ConsumerStats:
    stop = asyncio.Event()
    stats = ConsumerStats()
    spec = spec or ConsumerSpec(
        s.STREAM_HOST_EVENTS, "test", [s.HOST_EVENTS_ALL], backoff_s=(0.05,), max_deliver=3
    )
    task = asyncio.create_task(
        bus.consume(spec, m.HOST_EVENTS, handler, stop=stop, stats=stats, batch_handler=batch)
    )
    async with asyncio.timeout(timeout):
        while not until(stats):
            await asyncio.sleep(0.02)
    stop.set()
    await task
    return stats


async def test_duplicate_event_id_is_dropped_by_jetstream(bus: Bus) -> None:
    assert await bus.js_publish(s.host_heartbeat("h1"), hb(1), event_id="e-1") is True
    assert await bus.js_publish(s.host_heartbeat("h1"), hb(1), event_id="e-1") is False
    info = await bus.stream_info(s.STREAM_HOST_EVENTS)
    assert info.messages == 1


async def test_consume_acks_after_handler_and_carries_cloudevents(bus: Bus) -> None:
    for i in range(5):
        await bus.js_publish(s.host_heartbeat("h1"), hb(i), event_id=f"e{i}")
    seen: list[tuple[int, Delivery]] = []

    async def handler(msg: m.HostEventT, d: Delivery) -> None:
        assert isinstance(msg, m.Heartbeat)
        seen.append((msg.seq, d))

    stats = await run_consumer(bus, handler, lambda st: st.handled == 5)
    assert sorted(seq for seq, _ in seen) == [0, 1, 2, 3, 4]
    d = seen[0][1]
    assert d.headers["ce-specversion"] == "1.0"
    assert d.headers["ce-type"] == "host.heartbeat.v1"
    assert d.event_id in {f"e{i}" for i in range(5)}
    assert stats.dead_lettered == 0
    consumer = await bus.consumer_info(s.STREAM_HOST_EVENTS, "test")
    assert consumer.num_ack_pending == 0
    assert consumer.num_pending == 0


async def test_caught_up_only_once_the_handler_has_seen_every_message(bus: Bus) -> None:
    """Right after a publish is acknowledged the server may still count 0 pending for the
    consumer (it does so, loaded, a few times in a hundred): ``caught_up`` must not believe it."""
    handled = 0

    async def handler(msg: m.HostEventT, d: Delivery) -> None:
        nonlocal handled
        handled += 1

    stop = asyncio.Event()
    spec = ConsumerSpec(s.STREAM_HOST_EVENTS, "test", [s.host_heartbeat("h1").subject], batch=1)
    task = asyncio.create_task(bus.consume(spec, m.HOST_EVENTS, handler, stop=stop))
    try:
        async with asyncio.timeout(10):
            while not [c for c in await bus.consumers(s.STREAM_HOST_EVENTS) if c.name == "test"]:
                await asyncio.sleep(0.01)
        for i in range(1, 101):
            await bus.js_publish(s.host_heartbeat("h1"), hb(i), event_id=f"e{i}")
            if await bus.caught_up(s.STREAM_HOST_EVENTS, "test"):
                assert handled >= i, f"caught up after publish {i} with {handled} handled"
            async with asyncio.timeout(10):
                while not await bus.caught_up(s.STREAM_HOST_EVENTS, "test"):
                    await asyncio.sleep(0.005)
            assert handled == i
        # a filtered consumer's ack floor stops at its own last message: others' are not its
        await bus.js_publish(s.host_heartbeat("h2"), hb(1, "h2"), event_id="h2")
        last = (await bus.stream_info(s.STREAM_HOST_EVENTS)).last_seq
        assert (await bus.consumer_info(s.STREAM_HOST_EVENTS, "test")).ack_floor < last
        assert await bus.caught_up(s.STREAM_HOST_EVENTS, "test")
    finally:
        stop.set()
        await task
    # stopped: a new message of its own is pending, unless only what came before counts
    await bus.js_publish(s.host_heartbeat("h1"), hb(101), event_id="e101")
    assert not await bus.caught_up(s.STREAM_HOST_EVENTS, "test")
    assert await bus.caught_up(s.STREAM_HOST_EVENTS, "test", upto=last)


async def test_failing_handler_is_retried_then_dead_lettered(bus: Bus) -> None:
    await bus.js_publish(s.host_heartbeat("h1"), hb(1), event_id="poison")
    await bus.js_publish(s.host_heartbeat("h1"), hb(2), event_id="fine")
    attempts: dict[int, int] = {}

    async def handler(msg: m.HostEventT, d: Delivery) -> None:
        attempts[msg.seq] = attempts.get(msg.seq, 0) + 1
        if msg.seq == 1:
            raise RuntimeError("database is on fire")

    stats = await run_consumer(bus, handler, lambda st: st.dead_lettered == 1 and st.handled == 1)
    assert attempts == {1: 3, 2: 1}
    assert stats.retried == 2
    dl = await bus.last_message(s.STREAM_DEAD_LETTER, s.dead_letter("test").subject)
    assert "database is on fire" in dl.headers["Sriov-Dead-Letter-Reason"]
    assert dl.headers["Sriov-Original-Subject"] == "sriov.v1.host.h1.heartbeat.sent"
    dead = m.HOST_EVENTS.decode(dl.data)
    assert isinstance(dead, m.Heartbeat)
    assert dead.seq == 1


async def test_an_outage_is_waited_out_without_spending_deliveries(bus: Bus) -> None:
    """A handler that finds a dependency away (Unavailable) for longer than every delivery
    and back-off together: the message is kept and handled once it answers, delivered once;
    nothing is dead-lettered (issue 15: PostgreSQL restarts dead-lettered good events)."""
    await bus.js_publish(s.host_heartbeat("h1"), hb(1), event_id="during-outage")
    calls: list[int] = []

    async def handler(msg: m.HostEventT, d: Delivery) -> None:
        calls.append(d.num_delivered)
        if len(calls) <= 6:  # twice max_deliver (3)
            raise Unavailable("database unreachable during test (ConnectionRefusedError)")

    stats = await run_consumer(bus, handler, lambda st: st.handled == 1)
    assert calls == [1] * 7  # one delivery, handled again in place
    assert (stats.dead_lettered, stats.retried, stats.waited) == (0, 0, 6)
    assert (await bus.stream_info(s.STREAM_DEAD_LETTER)).messages == 0


async def test_malformed_goes_to_dead_letter_at_once_unknown_type_is_acked(bus: Bus) -> None:
    subject = "sriov.v1.host.h1.heartbeat.sent"
    await bus.js_publish_raw(subject, b'{"type": "host.heartbeat.v1"}', {})
    await bus.js_publish_raw(subject, b"\xff not json", {})
    await bus.js_publish_raw(subject, b'{"type": "host.future.v9", "x": 1}', {})
    await bus.js_publish(s.host_heartbeat("h1"), hb(7))
    handled: list[int] = []

    async def handler(msg: m.HostEventT, d: Delivery) -> None:
        handled.append(msg.seq)

    await run_consumer(
        bus, handler, lambda st: st.handled == 1 and st.dead_lettered == 2 and st.unknown == 1
    )
    assert handled == [7]
    info = await bus.stream_info(s.STREAM_DEAD_LETTER)
    assert info.messages == 2
    dl = await bus.last_message(s.STREAM_DEAD_LETTER, s.dead_letter("test").subject)
    assert dl.headers["Sriov-Dead-Letter-Reason"].startswith("malformed: host event")


async def test_batch_handler_gets_whole_batch_and_falls_back_on_failure(bus: Bus) -> None:
    for i in range(10):
        await bus.js_publish(s.host_heartbeat("h1"), hb(i))
    batches: list[int] = []
    single: list[int] = []

    async def batch(items: list[tuple[m.HostEventT, Delivery]]) -> None:
        if any(v.seq == 3 for v, _ in items):
            raise RuntimeError("one bad row")
        batches.append(len(items))

    async def handler(msg: m.HostEventT, d: Delivery) -> None:
        single.append(msg.seq)

    spec = ConsumerSpec(s.STREAM_HOST_EVENTS, "batch", [s.HOST_EVENTS_ALL], batch=100)
    await run_consumer(bus, handler, lambda st: st.handled >= 10, spec, batch=batch)
    # The first fetch may be partial; whatever batch held seq 3 was replayed one by one.
    assert 3 in single
    assert sum(batches) + len(single) == 10


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_batches_in_flight_overlap_up_to_their_limit(bus: Bus, in_flight: int) -> None:
    """A second batch is fetched and started while the first is still being applied (the
    handler's CPU overlaps the database's work), never more than ``batches_in_flight``."""
    for i in range(40):
        await bus.js_publish(s.host_heartbeat("h1"), hb(i))
    running, most, seen = 0, 0, []

    async def batch(items: list[tuple[m.HostEventT, Delivery]]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.2)  # a commit's round trip, long enough for the next fetch
        seen.extend(v.seq for v, _ in items)
        running -= 1

    async def handler(msg: m.HostEventT, d: Delivery) -> None:
        raise AssertionError("no batch fails: no one-by-one fallback")

    spec = ConsumerSpec(
        s.STREAM_HOST_EVENTS, f"fl{in_flight}", [s.HOST_EVENTS_ALL], batch=5,
        batches_in_flight=in_flight,
    )  # fmt: skip
    await run_consumer(bus, handler, lambda st: st.handled >= 40, spec, batch=batch)
    assert most == in_flight and sorted(seen) == [*range(40)]
    info = await bus.consumer_info(s.STREAM_HOST_EVENTS, f"fl{in_flight}")
    assert info.ack_floor == 40 and info.num_redelivered == 0


async def test_a_batch_slower_than_the_ack_wait_is_not_redelivered(bus: Bus) -> None:
    for i in range(5):
        await bus.js_publish(s.host_heartbeat("h1"), hb(i))
    seen: list[int] = []

    async def batch(items: list[tuple[m.HostEventT, Delivery]]) -> None:
        seen.extend(v.seq for v, _ in items)
        await asyncio.sleep(2.5)  # two and a half ack waits: kept in progress meanwhile

    async def handler(msg: m.HostEventT, d: Delivery) -> None:
        raise AssertionError("the batch must not fall back to one by one")

    spec = ConsumerSpec(s.STREAM_HOST_EVENTS, "slow", [s.HOST_EVENTS_ALL], ack_wait_s=1)
    await run_consumer(bus, handler, lambda st: st.handled >= 5, spec, timeout=15, batch=batch)
    info = await bus.consumer_info(s.STREAM_HOST_EVENTS, "slow")
    assert info.num_redelivered == 0 and sorted(seen) == [0, 1, 2, 3, 4]
    assert info.ack_floor == 5


async def test_a_message_slower_than_the_ack_wait_is_not_redelivered(bus: Bus) -> None:
    """Ack waits are short (a delivery lost with a NATS node comes back soon); work that takes
    longer is kept in progress, so it is not handed to another replica meanwhile."""
    await bus.js_publish(s.host_heartbeat("h1"), hb(1))
    calls: list[int] = []

    async def handler(msg: m.HostEventT, d: Delivery) -> None:
        calls.append(d.num_delivered)
        await asyncio.sleep(2.5)  # two and a half ack waits

    spec = ConsumerSpec(s.STREAM_HOST_EVENTS, "slow1", [s.HOST_EVENTS_ALL], ack_wait_s=1)
    await run_consumer(bus, handler, lambda st: st.handled >= 1, spec, timeout=15)
    info = await bus.consumer_info(s.STREAM_HOST_EVENTS, "slow1")
    assert calls == [1] and info.num_redelivered == 0 and info.ack_floor == 1


async def test_a_durable_from_an_older_release_takes_the_new_ack_wait(bus: Bus) -> None:
    """Ack waits went from 60 s (120 s for hostd) to 10 s: a durable created by the older
    release is updated in place at the next start, not refused as redefined."""
    await bus.js_publish(s.host_heartbeat("h1"), hb(1))

    async def handler(msg: m.HostEventT, d: Delivery) -> None:
        pass

    for wait, handled in ((60.0, 1), (10.0, 0)):
        spec = ConsumerSpec(s.STREAM_HOST_EVENTS, "upgrade", [s.HOST_EVENTS_ALL], ack_wait_s=wait)
        await run_consumer(bus, handler, lambda st, n=handled: st.handled >= n, spec)
        info = await bus.consumer_info(s.STREAM_HOST_EVENTS, "upgrade")
        assert info.ack_wait_s == wait


async def test_a_batch_that_timed_out_comes_back_whole_not_one_by_one(bus: Bus) -> None:
    for i in range(6):
        await bus.js_publish(s.host_heartbeat("h1"), hb(i))
    attempts: list[list[int]] = []

    async def batch(items: list[tuple[m.HostEventT, Delivery]]) -> None:
        attempts.append(sorted(v.seq for v, _ in items))
        if len(attempts) == 1:
            raise TimeoutError  # the database too slow this once (a restart storm)

    async def handler(msg: m.HostEventT, d: Delivery) -> None:
        raise AssertionError("a timeout is no poison message: no one-by-one fallback")

    spec = ConsumerSpec(s.STREAM_HOST_EVENTS, "t", [s.HOST_EVENTS_ALL], backoff_s=(0.05,))
    stats = await run_consumer(bus, handler, lambda st: st.handled >= 6, spec, batch=batch)
    seen = [seq for a in attempts for seq in a]  # the failed batch, again, and the rest
    assert sorted(set(seen)) == [*range(6)] and len(seen) == 6 + len(attempts[0])
    assert stats.retried == len(attempts[0])


async def test_a_batch_waits_an_outage_out_whole_without_spending_deliveries(bus: Bus) -> None:
    """The batch path keeps the single path's rule: an outage longer than every delivery
    and back-off together spends nothing and dead-letters nothing, and the batch stays whole."""
    for i in range(5):
        await bus.js_publish(s.host_heartbeat("h1"), hb(i))
    attempts: list[tuple[list[int], int]] = []

    async def batch(items: list[tuple[m.HostEventT, Delivery]]) -> None:
        attempts.append((sorted(v.seq for v, _ in items), max(d.num_delivered for _, d in items)))
        if len(attempts) <= 6:  # twice max_deliver (3)
            raise Unavailable("database unreachable during test (ConnectionRefusedError)")

    async def handler(msg: m.HostEventT, d: Delivery) -> None:
        raise AssertionError("an outage is no poison message: no one-by-one fallback")

    stats = await run_consumer(bus, handler, lambda st: st.handled >= 5, batch=batch)
    first = attempts[0][0]
    assert [a for a in attempts[:7]] == [(first, 1)] * 7  # the same batch, delivered once
    assert (stats.dead_lettered, stats.retried, stats.waited) == (0, 0, 6 * len(first))
    assert (await bus.stream_info(s.STREAM_DEAD_LETTER)).messages == 0


async def test_last_values_replays_current_state_only(bus: Bus) -> None:
    dev = m.Device(id="d1", host_id="h1", pci_address="0000:0a:00.2", addr="0a:00.2")
    for rev in range(3):
        await bus.js_publish(
            s.device_state("h1", "0000:0a:00.2"), m.DeviceState(device=dev, revision=rev)
        )
    await bus.js_publish(
        s.device_state("h1", "0000:0a:00.3"), m.DeviceState(device=dev, revision=9)
    )
    got = [m.STATE_EVENTS.decode(data) async for _subj, data in
           bus.last_values(s.STREAM_STATE, s.DEVICE_STATE_ALL)]  # fmt: skip
    assert sorted(g.revision for g in got) == [2, 9]


async def test_connect_error_names_the_server_and_hides_password() -> None:
    from sriov.common.errors import BusError
    from sriov.devtools.embedded import free_port

    port = free_port()
    with pytest.raises(BusError) as err:
        await Bus.connect(
            f"nats://admin:s3cret@127.0.0.1:{port}", name="t", first_connect_attempts=1,
            connect_timeout=0.5,
        )  # fmt: skip
    assert f"127.0.0.1:{port}" in str(err.value)
    assert "s3cret" not in str(err.value)
    assert f"nats://admin:***@127.0.0.1:{port}" in str(err.value)  # sriov.common.redact


async def test_wrong_password_fails_fast_and_clearly(tmp_path: Any) -> None:
    import time

    from sriov.common.errors import BusError
    from sriov.devtools.embedded import NatsServer

    conf = 'authorization { user: "ops", password: "right-one" }\n'
    with NatsServer(store_dir=tmp_path / "n", config_text=conf) as server:
        started = time.monotonic()
        with pytest.raises(BusError) as err:
            await Bus.connect(server.url, name="t", user="ops", password="wrong-one")
        assert time.monotonic() - started < 5
        assert "authorization" in str(err.value).lower()
        assert "wrong-one" not in str(err.value)
        ok = await Bus.connect(server.url, name="t", user="ops", password="right-one")
        await ok.close()


async def test_discover_with_nothing_running_is_empty(bus: Bus) -> None:
    assert await bus.discover("PING", 0.2) == []
