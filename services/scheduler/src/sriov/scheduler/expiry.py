"""Sweep unconfirmed reservations past their TTL; keep the scheduler's tables in shape.

Every replica sweeps; ``FOR UPDATE SKIP LOCKED`` in ``scheduler.expire`` splits the work, and
each expiry commits with its Expired event in the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec

from sriov.common import runtime, telemetry
from sriov.scheduler.metrics import Metrics
from sriov.scheduler.store import Store

log = logging.getLogger(__name__)

BATCH = 500
PURGE_EVERY_S = 60.0
ANALYZE_EVERY_S = 30.0
ANALYZE_CHANGED = 0.1
"""A table is analyzed again once a tenth of its rows changed: every 30 s whatever changed,
ANALYZE of 640,000 VFs took 0.6-1.3 s of the database per replica, a tenth of its time
during placements."""


class Sweeper:
    def __init__(
        self,
        store: Store,
        *,
        source: str,
        interval_s: float,
        retention_s: float,
        metrics: Metrics | None = None,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.source = source
        self.interval_s = interval_s
        self.retention_s = retention_s
        self.metrics = metrics or Metrics()
        self.on_commit = on_commit
        self._last = {"purge": 0.0, "analyze": time.monotonic()}

    async def sweep_once(self) -> int:
        """Expire everything due now; returns how many reservations ended."""
        total = 0
        with telemetry.tracer().start_as_current_span("scheduler.expire"):
            ctx = msgspec.json.encode({"source": self.source, "trace": telemetry.inject({})})
            while True:
                n = await self.store.expire(BATCH, None, ctx)
                total += n
                if n < BATCH:
                    break
        if total:
            self.metrics.expired.add(total)
            log.info("expired %d unconfirmed reservation(s)", total)
            self.on_commit()
        return total

    def _due(self, what: str, every: float) -> bool:
        if time.monotonic() - self._last[what] < every:
            return False
        self._last[what] = time.monotonic()
        return True

    async def housekeeping(self) -> None:
        """Old keys out, statistics fresh (see Store.maintain); the relay vacuums the outbox."""
        if self._due("purge", PURGE_EVERY_S):
            await self.store.purge(self.retention_s)
        if self._due("analyze", ANALYZE_EVERY_S):
            await self.store.maintain(
                "reservations", "requests", "vfs", "hosts", changed=ANALYZE_CHANGED
            )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep_once()
                await self.housekeeping()
            except Exception as exc:  # the database is away: try again next round
                log.warning("expiry sweep failed: %s: %s", type(exc).__name__, exc)
            await runtime.pause(stop, self.interval_s)
