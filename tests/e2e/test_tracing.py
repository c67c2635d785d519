"""Traces cross processes: every service exports OTLP (configured only by ``OTEL_*``) to a
receiver this test runs, and the spans' parent/child links and span links are checked.
The services export over gRPC, the requester over HTTP: one trace crosses both transports.

1. A requester's ``place`` -> the scheduler's server span -> its asyncpg spans, and the
   ``reserved`` event it publishes (through its outbox) -> inventory's consumer of it.
2. hostd's discovery -> the snapshot it publishes -> inventory's consumer -> its database
   work and the device states it announces -> the scheduler's consumer of those.

The scheduler's outbox publishes each placement event under a producer span (child of the
request's span stored with the event); inventory's outbox relay publishes its many state
messages with the stored context only (a span per row doubled the relay's CPU).

Inventory consumes in batches: one consumer span per batch with a span link to each
producer, so for a batch a link is the connection (a span has one parent).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from sriov.common import subjects
from sriov.devtools.launcher import GUIDE_HOST_ID, Stack
from sriov.devtools.otlp import OtlpGrpcReceiver, OtlpReceiver, Span, ancestors, by_id

I350 = "I350 Ethernet Controller Virtual Function"
GUEST = "trace-guest"

# The requester: a separate process, configured like the services by OTEL_* alone.
REQUESTER = f"""
import asyncio, sys
from sriov.common import schemas as m, subjects, telemetry
from sriov.common.bus import Bus

async def main() -> None:
    tele = telemetry.setup("sriov-requester")
    bus = await Bus.connect(sys.argv[1], name="requester")
    try:
        reply = await bus.request(
            subjects.endpoint(subjects.SCHEDULER_GROUP, "place"),
            m.PlaceRequest(request_id="trace-1", guest_id="{GUEST}",
                           nets=[m.NetRequest(desc="sriov-nic-model={I350}")]),
            m.PlacementReply, timeout=20,
        )
        print(reply.assignments[0].device_id)
    finally:
        await bus.close()
        tele.shutdown()

asyncio.run(main())
"""


@pytest.fixture
def otlp() -> Iterator[OtlpGrpcReceiver]:
    """What the services send (over gRPC, as the image can)."""
    with OtlpGrpcReceiver() as rx:
        yield rx


@pytest.fixture
def otlp_http() -> Iterator[OtlpReceiver]:
    """What the requester sends (over HTTP, what every install set has)."""
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture
def stack_env(otlp: OtlpGrpcReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export every 0.2 s, not 5 s
    }


def _db(s: Span) -> bool:
    return s.attributes.get("db.system") in ("postgresql", "postgres") or "db.statement" in (
        s.attributes
    )


def _linked_to(s: Span, target: Span) -> bool:
    return any(lk.span_id == target.span_id and lk.trace_id == target.trace_id for lk in s.links)


def test_place_is_one_trace_across_processes(
    stack: Stack, otlp: OtlpGrpcReceiver, otlp_http: OtlpReceiver, sriovctl: object,
    eventually: object,
) -> None:  # fmt: skip
    ctl, wait = sriovctl, eventually
    assert callable(ctl) and callable(wait)
    wait(
        lambda: len(ctl("--json", "isolated-device-list", "--model", I350)["devices"]) >= 7,
        "inventory to list the host's I350 VFs",
        timeout=40,
    )
    res = subprocess.run(
        [sys.executable, "-c", REQUESTER, stack.env()["SRIOV_NATS_URL"]],
        env=stack.env() | {"OTEL_SERVICE_NAME": "sriov-requester",
                           "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_http.endpoint,
                           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    place = subjects.endpoint(subjects.SCHEDULER_GROUP, "place").template
    event = subjects.placement_event(GUEST, "reserved")
    reserved = subjects.template_of(event.subject)  # the consumer's name for it

    def client_span(spans: list[Span]) -> Span | None:
        return next((s for s in spans if s.service == "sriov-requester" and s.name == place), None)

    client = otlp_http.wait_for(client_span, what="the requester's place span (over HTTP)")
    assert client.kind == "client" and client.parent_span_id == ""
    trace = client.trace_id

    def server_span(spans: list[Span]) -> Span | None:
        return next(
            (s for s in spans if s.service == "sriov-scheduler" and s.name == place
             and s.parent_span_id == client.span_id), None,
        )  # fmt: skip

    server = otlp.wait_for(server_span, what="the scheduler's server span, child of the request")
    assert server.trace_id == trace and server.kind == "server"
    assert server.attributes["messaging.destination.name"] == "sriov.v1.scheduler.place"

    # the database work is inside the request's trace, under the server span
    def db_spans(spans: list[Span]) -> list[Span]:
        index = by_id(spans)
        return [
            s for s in spans
            if s.service == "sriov-scheduler" and s.trace_id == trace and _db(s)
            and server in ancestors(s, index)
        ]  # fmt: skip

    assert otlp.wait_for(db_spans, what="asyncpg spans under the scheduler's server span")

    # the reserved event: published from the outbox as a producer span in the same trace
    def producer_span(spans: list[Span]) -> Span | None:
        index = by_id(spans)
        return next(
            (s for s in spans if s.name == event.template and s.kind == "producer"
             and s.trace_id == trace and server in ancestors(s, index)), None,
        )  # fmt: skip

    producer = otlp.wait_for(producer_span, what="the scheduler's producer span of `reserved`")
    assert producer.service == "sriov-scheduler"
    assert producer.attributes["messaging.destination.name"] == event.subject

    # inventory consumed it (a batch: linked) and did its database work under that span
    def consumer_span(spans: list[Span]) -> Span | None:
        return next(
            (s for s in spans if s.service == "sriov-inventory" and s.kind == "consumer"
             and s.name.endswith(reserved) and _linked_to(s, producer)), None,
        )  # fmt: skip

    consumer = otlp.wait_for(consumer_span, what="inventory's consumer span linked to `reserved`")

    def consumer_db(spans: list[Span]) -> list[Span]:
        index = by_id(spans)
        return [s for s in spans if _db(s) and consumer in ancestors(s, index)]

    assert otlp.wait_for(consumer_db, what="inventory's database spans under its consumer span")
    assert not otlp.errors and not otlp_http.errors


def test_discovery_trace_reaches_inventory(stack: Stack, otlp: OtlpGrpcReceiver) -> None:
    snapshot = subjects.HOST_SNAPSHOT

    def hostd_snapshot(spans: list[Span]) -> Span | None:
        return next(
            (s for s in spans if s.service == "sriov-hostd" and s.name == snapshot
             and s.kind == "producer"), None,
        )  # fmt: skip

    producer = otlp.wait_for(hostd_snapshot, timeout=40, what="hostd's snapshot producer span")
    assert producer.attributes["messaging.destination.name"] == (
        subjects.host_snapshot(GUIDE_HOST_ID).subject
    )
    # the publication is part of the discovery that found what it carries
    discovery = otlp.wait_for(
        lambda spans: next((s for s in spans if s.span_id == producer.parent_span_id), None),
        what="hostd's discovery span, parent of the snapshot",
    )
    assert discovery.service == "sriov-hostd" and discovery.name == "hostd.discovery"
    assert discovery.parent_span_id == "" and discovery.trace_id == producer.trace_id

    def inventory_consumer(spans: list[Span]) -> Span | None:
        return next(
            (s for s in spans if s.service == "sriov-inventory" and s.kind == "consumer"
             and _linked_to(s, producer)), None,
        )  # fmt: skip

    consumer = otlp.wait_for(inventory_consumer, timeout=40, what="inventory's consumer span")
    assert consumer.name.startswith("batch sriov.v1.host.{host_id}.")

    def consumer_db(spans: list[Span]) -> list[Span]:
        index = by_id(spans)
        return [s for s in spans if _db(s) and consumer in ancestors(s, index)]

    writes = otlp.wait_for(consumer_db, what="inventory's database spans under the consumer")
    assert all(s.trace_id == consumer.trace_id for s in writes)

    # the device states inventory announces carry that consumer span's context (stored with
    # them in its outbox), and the scheduler's projection consumes them (a batch: linked)
    def projection(spans: list[Span]) -> Span | None:
        return next(
            (s for s in spans if s.service == "sriov-scheduler" and s.kind == "consumer"
             and _linked_to(s, consumer)), None,
        )  # fmt: skip

    applied = otlp.wait_for(projection, what="the scheduler's consumer linked to inventory's")
    assert applied.name == "batch " + subjects.DEVICE_STATE
    assert not otlp.errors
