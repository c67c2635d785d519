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
        self._queue: asyncio.Queue[LinkInfo] = asyncio.Queue()

    def published(self, ifname: str) -> str | None:
        entry = self._entries.get(ifname)
        return entry.published if entry else None

    def seed(self, ifname: str, state: str) -> None:
        """What consumers already know (from a snapshot) for a netdev not seen yet."""
        if ifname not in self._entries:
            self._entries[ifname] = _Entry(published=state)

    def forget(self, ifname: str) -> None:
        self._entries.pop(ifname, None)

    def observe(self, info: LinkInfo) -> None:
        """Called from the watcher (synchronously) for every kernel state change."""
        self._queue.put_nowait(info)

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            due = [e for e in self._entries.values() if e.latest is not None and e.until <= now]
            for entry in due:
                await self._flush(entry, now)
            pending = [e.until for e in self._entries.values() if e.latest is not None]
            timeout = max(0.0, min(pending) - time.monotonic()) if pending else None
            try:
                info = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                continue
            await self._handle(info)

    async def _handle(self, info: LinkInfo) -> None:
        now = time.monotonic()
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

    async def _flush(self, entry: _Entry, now: float) -> None:
        info, flaps = entry.latest, entry.flaps
        entry.latest, entry.flaps = None, 0
        if info is None or info.state == entry.published:
            return
        entry.published = info.state
        entry.until = now + self.holddown
        await self._emit(info, flaps)
