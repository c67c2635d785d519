"""Stamps and publishes host events: one generation per start, a strictly increasing seq.

Consumers keep the highest (generation, seq) seen per host and drop anything older, so
stale or reordered events never win. Publishing is serialised so seq order is stream
order. A publish that fails is not retried as a diff: the host is marked as needing a
snapshot, which replaces everything a consumer knows, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TypeVar

from sriov.common import schemas as m
from sriov.common.bus import Bus
from sriov.common.subjects import Subject

log = logging.getLogger(__name__)
E = TypeVar("E", bound=m.HostEvent)


class Publisher:
    def __init__(self, bus: Bus, host_id: str, generation: int | None = None) -> None:
        self.bus = bus
        self.host_id = host_id
        self.generation = generation if generation is not None else time.time_ns()
        self.seq = 0
        self.snapshot_seq = 0
        self.owed = asyncio.Event()
        """Set while a snapshot is owed (at start, or a publish failed): the agent sends one."""
        self.owed.set()
        self.published = 0
        self.failed = 0
        self._lock = asyncio.Lock()

    @property
    def needs_snapshot(self) -> bool:
        return self.owed.is_set()

    async def publish(self, subject: Subject, cls: type[E], **fields: Any) -> E | None:
        """Build, stamp and publish one event; None (and a snapshot owed) if it failed."""
        async with self._lock:
            self.seq += 1
            msg = cls(host_id=self.host_id, generation=self.generation, seq=self.seq, **fields)
            event_id = f"{self.host_id}.{self.generation}.{self.seq}"
            try:
                await self.bus.js_publish(subject, msg, event_id=event_id)
            # any failure, also a raw NATS error (a stream without a leader during a cluster
            # failover raises NoStreamResponseError): the event is owed as a snapshot
            except Exception as exc:
                self.failed += 1
                self.owed.set()
                log.warning("publishing %s failed (%s); a snapshot will follow", subject, exc)
                return None
            self.published += 1
            if isinstance(msg, m.HostSnapshot):
                self.snapshot_seq = msg.seq
                self.owed.clear()
            return msg
