"""Consume the scheduler's placement events: each device's ``guest_id`` and lifecycle facts.

Applied in the scheduler's commit order per device (the ``seq`` of the event that last
changed a device is stored with it), so duplicates and events the stream holds out of order
(a relay batch republished after a partial failure) are harmless. The event with the highest
``seq`` decides: after a release nobody holds the device, even if events before it are late.
A ``Ready`` and a ``Failed`` of op ``prepare`` (which ends the reservation) also feed the VF's
lifecycle state (:mod:`sriov.inventory.lifecycle`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

from sriov.common import database, subjects
from sriov.common import schemas as m
from sriov.common.bus import ConsumerSpec, Delivery
from sriov.inventory.db import store
from sriov.inventory.db.conn import Pool
from sriov.inventory.ingest import type_name

log = logging.getLogger(__name__)
DURABLE = "inventory-placement"


def consumer_spec(batch: int = 100, ack_wait_s: float = 10) -> ConsumerSpec:
    return ConsumerSpec(
        subjects.STREAM_PLACEMENT,
        DURABLE,
        [subjects.PLACEMENT_EVENTS_ALL],
        batch=batch,
        ack_wait_s=ack_wait_s,
    )


def order(ev: m.PlacementEventT, d: Delivery) -> int:
    """The event's place in the scheduler's commit order; the stream's for a producer that
    does not number its events (``seq`` 0)."""
    return ev.seq or d.stream_seq


def device_ids(ev: m.PlacementEventT) -> list[str]:
    match ev:
        case m.Reserved():
            return [a.device_id for a in ev.assignments]
        case m.Lost() if ev.still_reserved:
            return []  # the guest still holds its VFs (host offline): nothing to clear
        case m.Confirmed() | m.Released() | m.Expired() | m.Lost() | m.Ready():
            return list(ev.device_ids)
        case m.Failed(op="prepare"):
            return list(ev.device_ids)
        case _:
            return []


class PlacementEvents:
    def __init__(
        self,
        pool: Pool,
        source: str,
        *,
        committed: Callable[[], None] = lambda: None,
        counted: Callable[[Counter[tuple[str, str]]], None] = lambda _c: None,
    ) -> None:
        self.pool = pool
        self.source = source
        self.committed = committed
        self.counted = counted

    async def handle(self, ev: m.PlacementEventT, d: Delivery) -> None:
        await self.apply([(ev, d)])

    async def handle_batch(self, items: list[tuple[m.PlacementEventT, Delivery]]) -> None:
        await self.apply(items)

    async def apply(self, items: Sequence[tuple[m.PlacementEventT, Delivery]]) -> None:
        wanted = sorted({i for ev, _d in items for i in device_ids(ev)})
        outcomes: Counter[tuple[str, str]] = Counter()
        if not wanted:
            for ev, _d in items:
                outcomes[(type_name(ev), "ignored")] += 1
            self.counted(outcomes)
            return
        with database.outages("applying placement events"):  # waited out, not dead-lettered
            async with self.pool.acquire() as conn, conn.transaction():
                hosts = await store.hosts_of_devices(conn, wanted)
                loaded = await store.load(conn, hosts, full=hosts, only=wanted)
                index = {
                    rec.device.id: (view, rec)
                    for view in loaded.views.values()
                    for rec in view.devices.values()
                }
                for ev, d in sorted(items, key=lambda it: order(*it)):
                    for dev_id in device_ids(ev):
                        found = index.get(dev_id)
                        if found is None:
                            log.info("%s for unknown device %s ignored", type_name(ev), dev_id)
                            outcomes[(type_name(ev), "unknown_device")] += 1
                            continue
                        view, rec = found
                        seq = order(ev, d)
                        if isinstance(ev, m.Reserved | m.Confirmed):
                            reserved = isinstance(ev, m.Reserved)
                            outcome = view.hold(rec, ev.guest_id, seq, reserved=reserved)
                        elif isinstance(ev, m.Ready):
                            outcome = view.ready(rec, seq)
                        else:
                            outcome = view.release(rec, seq)
                        outcomes[(type_name(ev), outcome)] += 1
                saved = await store.save(conn, loaded.views.values(), loaded.now, self.source)
        if saved.outbox:
            self.committed()
        self.counted(outcomes)
