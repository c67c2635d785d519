"""Relay the outbox to JetStream: events committed with their change are never lost.

A batch is read, published (concurrently, each acknowledged by JetStream) and deleted in
one transaction; if anything fails the rows stay and are published again later. The event
id is the ``Nats-Msg-Id``, so a batch published twice (a replica crashed after publishing,
before deleting) is stored once. One replica relays at a time (advisory lock), in commit
order; every replica runs the loop, so the relay survives any of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from opentelemetry.trace import SpanKind

from sriov.common import subjects, telemetry
from sriov.common.bus import HDR_MSG_ID, Bus
from sriov.scheduler.metrics import Metrics
from sriov.scheduler.store import OutboxRow, Store

log = logging.getLogger(__name__)


class Relay:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        batch: int = 500,
        poll_s: float = 0.25,
        linger_s: float = 0.02,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.batch = batch
        self.poll_s = poll_s
        self.linger_s = linger_s
        self.metrics = metrics or Metrics()
        self._wake = asyncio.Event()
        self.published = 0

    def wake(self) -> None:
        """Something was committed: relay now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            try:
                n = await self.relay_once()
                failures = 0
            except Exception as exc:  # NATS or PostgreSQL away: the rows wait, never die
                failures += 1
                delay = min(0.2 * 2**failures, 5.0)
                log.warning(
                    "outbox relay failed (%s: %s); events stay queued, retrying in %.1fs",
                    type(exc).__name__, exc, delay,
                )  # fmt: skip
                await _wait(stop, delay)
                continue
            if n < self.batch:
                await _wait(self._wake, self.poll_s)
                # let a few more commits gather: one relay transaction carries them all
                await _wait(stop, self.linger_s)

    async def relay_once(self) -> int:
        """Publish and delete one batch; returns how many events left the outbox."""
        async with self.store.outbox_batch(self.batch) as rows:
            if rows:
                with telemetry.tracer().start_as_current_span(
                    "scheduler.outbox.relay",
                    attributes={"messaging.batch.message_count": len(rows)},
                ):
                    await asyncio.gather(*(self._publish(r) for r in rows))
        if rows:
            self.published += len(rows)
            self.metrics.events.add(len(rows))
        return len(rows)

    async def _publish(self, row: OutboxRow) -> None:
        # The trace context stored with the event is the request's: the producer span is its
        # child, and whoever consumes the event continues the request's trace from there.
        subject = subjects.placement_event(row.guest_id, row.verb)
        with telemetry.messaging_span(
            subject.template, subject.subject, SpanKind.PRODUCER, row.trace or None
        ):
            headers = self._headers(row)
            await self.bus.js_publish_raw(subject.subject, row.payload, headers)

    @staticmethod
    def _headers(row: OutboxRow) -> dict[str, str]:
        headers = {
            "ce-specversion": "1.0",
            "ce-id": row.event_id,
            "ce-source": row.source,
            "ce-type": row.type,
            "ce-time": row.created_at.isoformat(),
            "content-type": "application/json",
            HDR_MSG_ID: row.event_id,
            **row.trace,
        }
        return telemetry.inject(headers)  # the producer span's context replaces the stored one


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
