"""The outbox relay: publish committed state changes to SRIOV_STATE, then delete them.

Claim (delete ... skip locked), publish every row concurrently, commit. A crash or a NATS
error before the commit leaves the rows for the next attempt; a row published twice keeps
its event id as ``Nats-Msg-Id``, so JetStream drops the copy. Any number of replicas may
relay at once: ``SKIP LOCKED`` hands each row to one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from opentelemetry.instrumentation.utils import suppress_instrumentation

from sriov.common import telemetry
from sriov.common.bus import Bus
from sriov.inventory.announce import OutboxRow, decode_headers
from sriov.inventory.db import outbox
from sriov.inventory.db.conn import Pool

log = logging.getLogger(__name__)


class Relay:
    def __init__(
        self,
        pool: Pool,
        bus: Bus,
        *,
        batch: int = 500,
        idle_s: float = 0.25,
        published: Callable[[int], None] = lambda _n: None,
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.batch = batch
        self.idle_s = idle_s
        self.published = published
        self.wake = asyncio.Event()

    def poke(self) -> None:
        """A local transaction committed outbox rows: relay now rather than at the next poll."""
        self.wake.set()

    async def run(self, stop: asyncio.Event, workers: int = 1) -> None:
        """Relay until ``stop``; ``workers`` loops overlap database and NATS round trips."""
        await asyncio.gather(*(self._worker(stop) for _ in range(workers)))

    async def _worker(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                n = await self.relay_once()
                failures = 0
            except Exception as exc:  # database or NATS trouble: retry, never lose rows
                failures += 1
                log.warning("outbox relay failed (attempt %d), will retry: %s", failures, exc)
                await asyncio.sleep(min(0.2 * 2**failures, 5))
                continue
            if n < self.batch:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.idle_s)

    async def relay_once(self) -> int:
        """Publish one batch; return how many rows were relayed."""
        with suppress_instrumentation():  # idle polls are not worth a trace each
            async with self.pool.acquire() as conn:
                if not await outbox.any_pending(conn):
                    return 0
        with telemetry.tracer().start_as_current_span("inventory.outbox.relay") as span:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await outbox.claim(conn, self.batch)
                if rows:
                    await self.publish(rows)
            span.set_attribute("messaging.batch.message_count", len(rows))
        if rows:
            self.published(len(rows))
        return len(rows)

    async def publish(self, rows: list[OutboxRow]) -> None:
        results = await asyncio.gather(
            *(
                self.bus.js_publish_raw(r.subject, r.payload, decode_headers(r.headers))
                for r in rows
            ),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0] if isinstance(errors[0], Exception) else RuntimeError(errors[0])
