"""Ask hostd for a fresh snapshot when inventory's view of a host cannot be trusted.

That is a host first heard of without a snapshot, or one back after being offline. Requests
go out after the transaction that noticed it committed, from one loop with bounded
concurrency, at most once per host per ``min_interval_s``. A hostd that does not answer is
only logged: its next periodic or start-up snapshot restores the host just the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus
from sriov.common.errors import SriovError

log = logging.getLogger(__name__)


class Rescanner:
    def __init__(self, bus: Bus, *, min_interval_s: float = 30, concurrency: int = 8) -> None:
        self.bus = bus
        self.min_interval_s = min_interval_s
        self.concurrency = concurrency
        self.pending: set[str] = set()
        self.last: dict[str, float] = {}
        self.sent = 0
        self.wake = asyncio.Event()

    def want(self, host_ids: Sequence[str]) -> None:
        now = time.monotonic()
        for h in host_ids:
            if now - self.last.get(h, -1e9) >= self.min_interval_s:
                self.pending.add(h)
        if self.pending:
            self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.wake.wait()
            self.wake.clear()
            batch, self.pending = sorted(self.pending), set()
            sem = asyncio.Semaphore(self.concurrency)
            await asyncio.gather(*(self._ask(h, sem) for h in batch))

    async def _ask(self, host_id: str, sem: asyncio.Semaphore) -> None:
        async with sem:
            self.last[host_id] = time.monotonic()
            subject = subjects.endpoint(subjects.hostcmd_group(host_id), "rescan")
            try:
                await self.bus.request(subject, m.RescanRequest(), m.CommandAck, timeout=5)
                self.sent += 1
                log.info("asked host %s for a fresh snapshot", host_id)
            except SriovError as exc:
                log.info("host %s did not take a rescan request: %s", host_id, exc)
            except Exception as exc:  # a bus hiccup must not stop the replica
                log.warning("rescan request to host %s failed: %r", host_id, exc)
