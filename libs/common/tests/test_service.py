"""nats.micro endpoints: typed replies, stable error codes, trace context across the hop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus, ConsumerSpec, Delivery, ServiceHost
from sriov.common.errors import BusError, InvalidRequest, NoCapacity, NotFound


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    # The global provider can be set once per process: another test (a service run
    # in-process) may have done it already; then listen on that one.
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter


async def start_hosts_service(bus: Bus) -> ServiceHost:
    svc = await ServiceHost.start(bus, "test-inventory", "0.1.0", "test", {"instance": "t1"})

    async def get_host(req: m.HostGetRequest, headers: Mapping[str, str]) -> m.HostGetReply:
        if req.host_id == "full":
            raise NoCapacity("no free VF of model X on any online host", model="X", free=0)
        if req.host_id == "boom":
            raise RuntimeError("secret internals <object at 0x7f>")
        if req.host_id != "h1":
            raise NotFound(f"host {req.host_id} is not known")
        return m.HostGetReply(host=m.HostInfo(host_id="h1", status="online"))

    await svc.add_endpoint(s.INVENTORY_HOSTS_GROUP, "get", m.HostGetRequest, get_host)
    return svc


async def test_reply_and_error_codes(bus: Bus) -> None:
    svc = await start_hosts_service(bus)
    subject = s.endpoint(s.INVENTORY_HOSTS_GROUP, "get")
    try:
        reply = await bus.request(subject, m.HostGetRequest(host_id="h1"), m.HostGetReply)
        assert reply.host.status == "online"

        with pytest.raises(NotFound, match="host nope is not known"):
            await bus.request(subject, m.HostGetRequest(host_id="nope"), m.HostGetReply)

        with pytest.raises(NoCapacity) as err:
            await bus.request(subject, m.HostGetRequest(host_id="full"), m.HostGetReply)
        assert err.value.code == "no_capacity"
        assert err.value.details == {"model": "X", "free": 0}

        with pytest.raises(InvalidRequest) as bad:
            await bus.request(subject, m.HostListRequest(), m.HostGetReply)
        assert bad.value.code == "unknown_type"
        assert "inventory.hosts.list.v1" in str(bad.value)

        raw = await bus.request_raw(subject.subject, b"{not json")
        assert raw.headers is not None
        assert raw.headers["Nats-Service-Error-Code"] == "400"
        assert raw.headers["Sriov-Error-Code"] == "invalid_request"

        with pytest.raises(Exception) as internal:
            await bus.request(subject, m.HostGetRequest(host_id="boom"), m.HostGetReply)
        assert "0x7f" not in str(internal.value)
        assert "internal error in sriov.v1.inventory.hosts.get" in str(internal.value)

        # $SRV.STATS counts each request once it is answered; an error answer is an error
        [stats] = [st for st in await bus.discover("STATS", 0.3) if st["id"] == svc.service.id]
        [ep] = stats["endpoints"]
        assert (ep["num_requests"], ep["num_errors"]) == (6, 5)
        internal_error = "internal error in sriov.v1.inventory.hosts.get: RuntimeError"
        assert ep["last_error"] == f"internal: {internal_error}"
        assert ep["processing_time"] > 0
        assert ep["average_processing_time"] == ep["processing_time"] // 6
        assert ep["data"] == {"in_flight": 0, "concurrency": 16}
    finally:
        await svc.stop()


async def slow_service(
    bus: Bus, concurrency: int
) -> tuple[ServiceHost, list[str], asyncio.Event, asyncio.Condition]:
    """A service whose handler records each start, then waits for ``gate``."""
    svc = ServiceHost.prepare(bus, "test-slow", "0.1.0", "test", {}, concurrency=concurrency)
    await svc.announce()
    started: list[str] = []
    gate, changed = asyncio.Event(), asyncio.Condition()

    async def get_host(req: m.HostGetRequest, headers: Mapping[str, str]) -> m.HostGetReply:
        async with changed:
            started.append(req.host_id)
            changed.notify_all()
        await gate.wait()
        return m.HostGetReply(host=m.HostInfo(host_id=req.host_id, status="online"))

    await svc.add_endpoint(s.INVENTORY_HOSTS_GROUP, "get", m.HostGetRequest, get_host)
    return svc, started, gate, changed


def ask(bus: Bus, host_id: str) -> asyncio.Task[m.HostGetReply]:
    subject = s.endpoint(s.INVENTORY_HOSTS_GROUP, "get")
    req = m.HostGetRequest(host_id=host_id)
    return asyncio.create_task(bus.request(subject, req, m.HostGetReply, timeout=20))


async def test_an_endpoint_serves_its_limit_at_once_and_the_next_waits(bus: Bus) -> None:
    svc, started, gate, changed = await slow_service(bus, concurrency=3)
    try:
        first = [ask(bus, f"h{i}") for i in range(3)]
        async with changed:  # all three inside the handler at once: none can finish before
            await asyncio.wait_for(changed.wait_for(lambda: len(started) == 3), 10)
        fourth = ask(bus, "h3")
        await asyncio.sleep(0)  # its request is written before the STATS request below
        [stats] = [st for st in await bus.discover("STATS", 0.3) if st["name"] == "test-slow"]
        # the server delivered the fourth before STATS, on one connection: it waits for a slot
        assert stats["endpoints"][0]["data"] == {"in_flight": 3, "concurrency": 3}
        assert sorted(started) == ["h0", "h1", "h2"] and not fourth.done()
        gate.set()
        replies = await asyncio.gather(*first, fourth)
        assert [r.host.host_id for r in replies] == ["h0", "h1", "h2", "h3"]
        assert sorted(started) == ["h0", "h1", "h2", "h3"]
    finally:
        gate.set()
        await svc.stop()


async def test_a_stop_answers_every_request_already_delivered(bus: Bus) -> None:
    svc, started, gate, changed = await slow_service(bus, concurrency=1)
    subject = s.endpoint(s.INVENTORY_HOSTS_GROUP, "get")
    running = ask(bus, "h0")
    async with changed:
        await asyncio.wait_for(changed.wait_for(lambda: started == ["h0"]), 10)
    queued = ask(bus, "h1")  # delivered, waiting for the one slot
    await asyncio.sleep(0)
    stopping = asyncio.create_task(svc.stop())
    await asyncio.sleep(0)
    # still in discovery, no longer listing the endpoint: the stop began and waits for h0
    [info] = [i for i in await bus.discover("INFO", 0.3) if i["name"] == "test-slow"]
    assert info["endpoints"] == [] and not stopping.done() and not running.done()
    gate.set()
    assert (await running).host.host_id == "h0"
    assert (await queued).host.host_id == "h1"
    await asyncio.wait_for(stopping, 10)
    with pytest.raises(BusError, match="no service answers"):
        await bus.request(subject, m.HostGetRequest(host_id="h2"), m.HostGetReply, timeout=2)
    assert started == ["h0", "h1"]


async def test_no_responder_is_a_clear_error(bus: Bus) -> None:
    with pytest.raises(BusError, match=r"no service answers sriov\.v1\.scheduler\.place"):
        await bus.request(
            s.endpoint(s.SCHEDULER_GROUP, "place"),
            m.GetRequest(guest_id="g"),
            m.PlacementReply,
            timeout=1,
        )


async def test_discovery_lists_the_service(bus: Bus) -> None:
    svc = await start_hosts_service(bus)
    try:
        infos = await bus.discover("INFO", 0.3)
        mine = [i for i in infos if i["name"] == "test-inventory"]
        assert len(mine) == 1
        assert mine[0]["endpoints"][0]["subject"] == "sriov.v1.inventory.hosts.get"
        assert mine[0]["metadata"]["instance"] == "t1"
    finally:
        await svc.stop()


async def test_trace_context_crosses_publish_and_consume(
    bus: Bus, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("requester") as root:
        await bus.js_publish(
            s.host_heartbeat("h9"), m.Heartbeat(host_id="h9", generation=1, seq=1, interval_s=1)
        )
    trace_id = root.get_span_context().trace_id
    done = asyncio.Event()

    async def handler(msg: m.HostEventT, d: Delivery) -> None:
        assert d.headers["traceparent"].split("-")[1] == f"{trace_id:032x}"
        done.set()

    stop = asyncio.Event()
    task = asyncio.create_task(
        bus.consume(
            ConsumerSpec(s.STREAM_HOST_EVENTS, "trace", [s.HOST_EVENTS_ALL]),
            m.HOST_EVENTS,
            handler,
            stop=stop,
        )
    )
    await asyncio.wait_for(done.wait(), 10)
    stop.set()
    await task
    finished = {(sp.name, sp.kind): sp for sp in spans.get_finished_spans()}
    producer = finished["sriov.v1.host.{host_id}.heartbeat.sent", trace.SpanKind.PRODUCER]
    assert producer.attributes is not None
    assert producer.attributes["messaging.destination.name"] == "sriov.v1.host.h9.heartbeat.sent"
    consumers = [
        sp
        for sp in spans.get_finished_spans()
        if sp.kind == trace.SpanKind.CONSUMER and sp.context.trace_id == trace_id
    ]
    assert consumers, "consumer span must join the producer's trace"
    assert consumers[0].parent is not None
    assert consumers[0].parent.span_id == producer.context.span_id
