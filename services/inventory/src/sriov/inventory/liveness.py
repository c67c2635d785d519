"""Missed heartbeats: mark hosts offline and their devices unavailable.

Every replica sweeps; ``FOR UPDATE SKIP LOCKED`` gives each overdue host to one of them,
and the status check inside the same transaction makes a repeated sweep a no-op. A host
comes back only with its next snapshot (see :mod:`model`), which hostd is asked for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from opentelemetry.instrumentation.utils import suppress_instrumentation

from sriov.common import runtime, telemetry
from sriov.inventory.db import store
from sriov.inventory.db.conn import Pool

log = logging.getLogger(__name__)


class Liveness:
    def __init__(
        self,
        pool: Pool,
        source: str,
        timeout_s: float,
        *,
        committed: Callable[[], None] = lambda: None,
    ) -> None:
        self.pool = pool
        self.source = source
        self.timeout_s = timeout_s
        self.committed = committed

    @property
    def interval_s(self) -> float:
        return min(max(self.timeout_s / 4, 0.05), 5.0)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                while await self.sweep_once():
                    pass
            except Exception as exc:  # database trouble: try again next round
                log.warning("liveness sweep failed, will retry: %s", exc)
            await runtime.pause(stop, self.interval_s)

    async def sweep_once(self, limit: int = 200) -> int:
        """Mark up to ``limit`` overdue hosts offline; return how many."""
        with suppress_instrumentation():  # the routine check is not worth a trace each time
            async with self.pool.acquire() as conn:
                if not await store.any_overdue(conn, self.timeout_s):
                    return 0
        with telemetry.tracer().start_as_current_span("inventory.hosts.offline") as span:
            async with self.pool.acquire() as conn, conn.transaction():
                overdue = await store.overdue_hosts(conn, self.timeout_s, limit)
                if not overdue:
                    return 0
                loaded = await store.load(conn, overdue, full=overdue)
                for view in loaded.views.values():
                    view.mark_offline()
                await store.save(conn, loaded.views.values(), loaded.now, self.source)
            span.set_attribute("sriov.hosts", overdue)
        for host_id in overdue:
            log.warning("host %s missed its heartbeats: offline", host_id)
        self.committed()
        return len(overdue)
