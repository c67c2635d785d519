"""Link flap coalescing: publish the first change at once, then hold down.

A change is published immediately (so a link going down is known within milliseconds);
further transitions of the same netdev within ``holddown`` seconds are counted, and when
the window ends the final state is published once, with the number of flaps, if it
differs from what was last published. One task consumes a queue fed by the watcher:
no task per event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sriov.hostd.netview import LinkInfo

#: (info, flaps coalesced) -> publish it
Emit = Callable[[LinkInfo, int], Awaitable[None]]


@dataclass
class _Entry:
    published: str
    until: float = 0.0
    flaps: int = 0
    latest: LinkInfo | None = None


class LinkCoalescer:
    def __init__(self, holddown: float, emit: Emit) -> None:
        self.holddown = holddown
        self._emit = emit
        self._entries: dict[str, _Entry] = {}
        self._queue: asyncio.Queue[LinkInfo | None] = asyncio.Queue()

    def published(self, ifname: str) -> str | None:
        entry = self._entries.get(ifname)
        return entry.published if entry else None

    def seed(self, ifname: str, state: str) -> None:
        """What consumers already know (from a snapshot) for a netdev not seen yet."""
        if ifname not in self._entries:
            self._entries[ifname] = _Entry(published=state)

    def forget(self, ifname: str) -> None:
        self._entries.pop(ifname, None)

    def close(self) -> None:
        """Make :meth:`run` return (a cancellation alone can be lost on Python 3.11)."""
        self._queue.put_nowait(None)

    def observe(self, info: LinkInfo) -> None:
        """Called from the watcher (synchronously) for every kernel state change."""
        self._queue.put_nowait(info)

    async def run(self) -> None:
        while True:
            await self.flush_due(time.monotonic())
            pending = [e.until for e in self._entries.values() if e.latest is not None]
            timeout = max(0.0, min(pending) - time.monotonic()) if pending else None
            try:
                info = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                continue
            if info is None:
                return
            await self.handle(info, time.monotonic())

    async def handle(self, info: LinkInfo, now: float) -> None:
        """One kernel state change at time ``now``: publish, or count it inside a hold-down."""
        entry = self._entries.get(info.ifname)
        if entry is None:
            entry = self._entries[info.ifname] = _Entry(published="unknown")
        if now < entry.until:
            entry.flaps += 1
            entry.latest = info
            return
        if info.state != entry.published:
            entry.published = info.state
            entry.until = now + self.holddown
            entry.flaps = 0
            entry.latest = None
            await self._emit(info, 0)

    async def flush_due(self, now: float) -> None:
        """Publish the final state of every hold-down window that has ended by ``now``."""
        for entry in list(self._entries.values()):
            if entry.latest is None or entry.until > now:
                continue
            info, flaps = entry.latest, entry.flaps
            entry.latest, entry.flaps = None, 0
            if info.state == entry.published:
                continue  # it flapped and came back: nothing changed for consumers
            entry.published = info.state
            entry.until = now + self.holddown
            await self._emit(info, flaps)
