"""sriov-inventory: ``sriov-inventory --database-url DSN`` + NATS options; this file wires one
replica: two durable consumers, the outbox relay, the liveness sweep, the rescan requester,
the gauges' refresher and the query endpoints, sharing one pool and bus.

Several replicas may run against the same database and NATS: they share the durable
consumers, the outbox and the query queue group.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import Meter

from sriov.common import runtime
from sriov.common import schemas as m
from sriov.common.bus import Bus, ConsumerSpec, ConsumerStats, Delivery, ServiceHost
from sriov.common.config import parse_args
from sriov.common.outbox import Relay
from sriov.common.schemas import Codec
from sriov.inventory import ingest, placement_events
from sriov.inventory.api import QueryApi
from sriov.inventory.db import outbox, reads
from sriov.inventory.db.conn import Pool
from sriov.inventory.db.pool import open_pool
from sriov.inventory.liveness import Liveness
from sriov.inventory.metrics import Metrics
from sriov.inventory.rescan import Rescanner
from sriov.inventory.settings import InventorySettings

log = logging.getLogger(__name__)

NAME = "sriov-inventory"
DESCRIPTION = "fleet device table and queries"


class Replica:
    def __init__(
        self,
        pool: Pool,
        bus: Bus,
        settings: InventorySettings | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.settings = t = settings or InventorySettings()
        self.stats = {ingest.DURABLE: ConsumerStats(), placement_events.DURABLE: ConsumerStats()}
        self.metrics = Metrics(self.stats, meter)
        self.relay = Relay(
            outbox.StateOutbox(pool), bus, name="inventory", batch=t.relay_batch,
            rounds_in_flight=2, published=self._published,
        )  # fmt: skip
        self.rescanner = Rescanner(bus, min_interval_s=t.rescan_interval)
        self.host_events = ingest.HostEvents(
            pool,
            bus.source,
            committed=self.relay.wake,
            rescan=self.rescanner.want,
            counted=lambda c: self._count("host", c),
        )
        self.placement_events = placement_events.PlacementEvents(
            pool,
            bus.source,
            committed=self.relay.wake,
            counted=lambda c: self._count("placement", c),
        )
        self.liveness = Liveness(pool, bus.source, t.heartbeat_timeout, committed=self.relay.wake)
        self.api = QueryApi(pool)
        self.ingested: Counter[tuple[str, str]] = Counter()

    def _count(self, stream: str, outcomes: Counter[tuple[str, str]]) -> None:
        self.ingested.update(outcomes)
        self.metrics.count(stream, outcomes)

    def _published(self, n: int) -> None:
        self.metrics.published.add(n)

    async def register(self, service: ServiceHost) -> None:
        await self.api.register(service)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every loop until ``stop`` is set; a loop that crashes takes the replica down."""
        t = self.settings
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                self._consume(
                    ingest.consumer_spec(t.batch, t.ack_wait),
                    m.HOST_EVENTS,
                    self.host_events.handle,
                    self.host_events.handle_batch,
                    stop,
                )
            )
            tg.create_task(
                self._consume(
                    placement_events.consumer_spec(t.batch, t.ack_wait),
                    m.PLACEMENT_EVENTS,
                    self.placement_events.handle,
                    self.placement_events.handle_batch,
                    stop,
                )
            )
            tg.create_task(self.relay.run(stop))
            tg.create_task(self.liveness.run(stop))
            tg.create_task(_until(stop, self.rescanner.run(stop)))
            tg.create_task(self._gauges(stop))

    async def _consume(
        self,
        spec: ConsumerSpec,
        codec: Codec[Any],
        handler: Callable[[Any, Delivery], Awaitable[None]],
        batch_handler: Callable[[list[tuple[Any, Delivery]]], Awaitable[None]],
        stop: asyncio.Event,
    ) -> None:
        """``bus.consume`` until stop; it returns when the connection closes: bind again."""
        while not stop.is_set():
            await self.bus.consume(
                spec,
                codec,
                handler,
                stop=stop,
                stats=self.stats[spec.durable],
                batch_handler=batch_handler,
            )
            if not stop.is_set():
                log.warning("%s: consumer stopped; resuming in 1s", spec.durable)
                await runtime.pause(stop, 1.0)

    async def _gauges(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                with suppress_instrumentation():  # periodic bookkeeping, not worth traces
                    async with self.pool.acquire() as conn:
                        vfs, hosts = await reads.fleet_counts(conn)
                        statuses = await reads.host_statuses(conn)
                        pending = await outbox.pending(conn)
                fleet = self.metrics.fleet
                fleet.vfs, fleet.hosts, fleet.outbox = vfs, hosts, pending
                fleet.host_status = statuses
            except Exception as exc:  # gauges are best effort
                log.warning("refreshing fleet gauges failed: %s", exc)
            await runtime.pause(stop, self.settings.gauges_interval)


async def _until(stop: asyncio.Event, coro: object) -> None:
    """Run ``coro`` until it ends or ``stop`` is set, whichever is first."""
    assert asyncio.iscoroutine(coro)
    task = asyncio.ensure_future(coro)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, waiter):
            t.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def parse(argv: Sequence[str] | None = None) -> InventorySettings:
    return parse_args(InventorySettings, argv, prog=NAME, description=DESCRIPTION)


async def serve(settings: InventorySettings) -> None:
    async def body(ctx: runtime.ServiceContext) -> None:
        pool = await open_pool(
            settings.database_url, min_size=2, max_size=settings.db_pool_size,
            wait_s=settings.db_connect_wait_s,
        )  # fmt: skip
        ctx.stack.push_async_callback(pool.close)
        replica = Replica(pool, ctx.bus, settings)
        await replica.register(ctx.service)
        ctx.spawn(replica.run(ctx.stop), "inventory")

    await runtime.serve(NAME, DESCRIPTION, settings, body)


def main(argv: Sequence[str] | None = None) -> None:
    async def go() -> None:
        await serve(parse(argv))

    runtime.run(go, NAME)


if __name__ == "__main__":
    main()
