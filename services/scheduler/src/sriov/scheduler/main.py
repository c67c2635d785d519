"""sriov-scheduler: ``sriov-scheduler --database-url DSN [--nats-url ...]``; this file wires one
replica: settings, database, endpoints, projection, inbox, relay, sweeper, VF lifecycle.

Any number of replicas may run against the same database and NATS; they share one queue
group for requests and one durable consumer for state and for asynchronous requests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sriov.common import runtime, subjects
from sriov.common import schemas as m
from sriov.common.config import parse_args
from sriov.common.outbox import Relay
from sriov.common.runtime import ServiceContext
from sriov.scheduler.expiry import Sweeper
from sriov.scheduler.inbox import Inbox
from sriov.scheduler.lifecycle import Lifecycle
from sriov.scheduler.metrics import Metrics
from sriov.scheduler.operations import Scheduler
from sriov.scheduler.projection import Projection
from sriov.scheduler.settings import SchedulerSettings
from sriov.scheduler.store import Store

log = logging.getLogger(__name__)

NAME = "sriov-scheduler"
DESCRIPTION = "VF placement: reservations that never double-book"
QUEUE_GROUP = "sriov-scheduler"
"""Every replica's endpoints share it, so each request reaches exactly one replica."""


@dataclass
class Replica:
    """The parts of a running replica (tests look inside)."""

    store: Store
    app: Scheduler
    relay: Relay
    projection: Projection
    inbox: Inbox
    sweeper: Sweeper
    lifecycle: Lifecycle


async def start(ctx: ServiceContext) -> Replica:
    """Register the endpoints and start the loops; the runtime keeps them until stop."""
    settings: SchedulerSettings = ctx.settings
    source = f"sriov/{ctx.name}/{settings.instance_id}"
    store = await Store.open(
        settings.database_url,
        max_size=settings.db_pool_size,
        min_size=min(2, settings.db_pool_size),
        application_name=f"{ctx.name}/{settings.instance_id}"[:63],
        wait_s=settings.db_connect_wait_s,
    )
    ctx.stack.push_async_callback(store.close)
    # Stop answering before the pool closes (the exit stack unwinds in reverse).
    ctx.stack.push_async_callback(ctx.service.stop)

    metrics = Metrics()
    relay = Relay(
        store, ctx.bus, name="scheduler", batch=settings.relay_batch, linger_s=0.02,
        published=metrics.events.add,
    )  # fmt: skip
    app = Scheduler(
        store, source=source, default_ttl_s=settings.reservation_ttl_s, metrics=metrics,
        on_commit=relay.wake,
    )  # fmt: skip
    projection = Projection(store, ctx.bus, source=source, metrics=metrics, on_commit=relay.wake)
    lifecycle = Lifecycle(store, ctx.bus, source=source, metrics=metrics, on_commit=relay.wake)
    inbox = Inbox(app, store, ctx.bus, source=source, concurrency=settings.request_concurrency)
    sweeper = Sweeper(
        store, source=source, interval_s=settings.expiry_interval_s,
        retention_s=settings.request_retention_s, metrics=metrics, on_commit=relay.wake,
    )  # fmt: skip

    endpoints = (
        ("place", m.PlaceRequest, app.place),
        ("attach", m.AttachRequest, app.attach),
        ("release", m.ReleaseRequest, app.release),
        ("confirm", m.ConfirmRequest, app.confirm),
        ("get", m.GetRequest, app.get),
        ("cordon", m.CordonRequest, app.cordon),
        ("vf-reset", m.VfResetRequest, app.vf_reset),
    )
    for name, request, handler in endpoints:  # announced by runtime.serve when this returns
        await ctx.service.add_endpoint(
            subjects.SCHEDULER_GROUP, name, request, handler, queue_group=QUEUE_GROUP
        )
    ctx.spawn(projection.run(ctx.stop), "scheduler-projection")
    ctx.spawn(relay.run(ctx.stop), "scheduler-outbox-relay")
    ctx.spawn(sweeper.run(ctx.stop), "scheduler-expiry")
    ctx.spawn(inbox.run(ctx.stop), "scheduler-inbox")
    ctx.spawn(lifecycle.run(ctx.stop), "scheduler-vf-lifecycle")
    log.info(
        "scheduler ready: database epoch %s, state consumer %s, reservation TTL %.0fs",
        store.epoch, projection.spec.durable, settings.reservation_ttl_s,
    )  # fmt: skip
    return Replica(store, app, relay, projection, inbox, sweeper, lifecycle)


async def body(ctx: ServiceContext) -> None:
    await start(ctx)


def main(argv: Sequence[str] | None = None) -> None:
    async def go() -> None:
        settings = parse_args(SchedulerSettings, argv, prog=NAME, description=DESCRIPTION)
        await runtime.serve(NAME, DESCRIPTION, settings, body)

    runtime.run(go, NAME)


if __name__ == "__main__":
    main()
