"""Fixtures for hostd tests: simulated hosts, throwaway namespaces, an event tap on NATS."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sriov.common import schemas as m
from sriov.common.bus import Bus
from sriov.hostd.hostconf import HostConf, load_host_conf
from sriov.hostd.simulator import netdevs
from sriov.hostd.simulator.spec import HostSpec, host_conf_text
from sriov.hostd.simulator.tree import SimState, write_tree


@dataclass
class SimHost:
    root: Path
    conf_path: Path
    state: SimState
    netns: str | None

    @property
    def conf(self) -> HostConf:
        return load_host_conf(self.conf_path)


def make_host(tmp: Path, spec: HostSpec, netns: str | None = None, **extra: Any) -> SimHost:
    root = tmp / "sys"
    state = write_tree(spec, root, netns)
    (tmp / "cmdline").write_text((spec.cmdline or spec.default_cmdline()) + "\n")
    (tmp / "kmsg.log").write_text("\n".join(spec.kernel_log or spec.default_kernel_log()) + "\n")
    conf = {
        "sysfs_root": str(root),
        "cmdline_file": str(tmp / "cmdline"),
        "kmsg_file": str(tmp / "kmsg.log"),
        "heartbeat_interval_s": 3600.0,
        "resync_interval_s": 3600.0,
        **({"netns": netns} if netns else {}),
        **extra,
    }
    conf_path = tmp / "host.conf"
    conf_path.write_text(host_conf_text(spec, conf))
    if netns:
        netdevs.create(state.netdevs, netns)
    return SimHost(root, conf_path, state, netns)


async def poll(pred: Callable[[], bool], timeout: float = 30) -> None:
    """Wait until ``pred()`` holds (for state that changes without an event)."""
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.05)


@pytest.fixture
def netns() -> Iterator[str]:
    """A unique network namespace name, removed (with every veth in it) afterwards."""
    name = f"sriovt-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        netdevs.remove_netns(name)


@dataclass
class EventTap:
    """Every host event published on NATS, decoded, in arrival order."""

    events: list[m.HostEventT] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def view(self) -> dict[str, m.VF]:
        """The VFs a consumer would hold after applying every event in seq order."""
        vfs: dict[str, m.VF] = {}
        for e in sorted(self.events, key=lambda e: (e.generation, e.seq)):
            if isinstance(e, m.HostSnapshot):
                vfs = {v.pci_address: v for v in e.vfs}
            elif isinstance(e, m.VfDiscovered | m.VfChanged):
                vfs[e.vf.pci_address] = e.vf
            elif isinstance(e, m.VfRemoved):
                vfs.pop(e.pci_address, None)
        return vfs

    async def until(self, pred: Callable[[], bool], timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self._changed.clear()
                await self._changed.wait()

    def of(self, cls: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    async def wait(self, pred: Callable[[m.HostEventT], bool], timeout: float = 20) -> Any:
        """The first event (already seen or still to come) that satisfies ``pred``."""
        async with asyncio.timeout(timeout):
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if pred(event):
                        return event
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def tap(bus: Bus) -> AsyncIterator[EventTap]:
    """Subscribed (and flushed) before the test starts, so no event is missed."""
    result = EventTap()

    async def pump(messages: AsyncIterator[Any]) -> None:
        async for msg in messages:
            try:
                event = m.HOST_EVENTS.decode(msg.data)
            except Exception:  # not a host event: skipped (tests judge the events they wait for)
                continue
            result.events.append(event)
            result._changed.set()

    async with bus.subscribe("sriov.v1.host.>") as messages:
        await bus.flush()
        task = asyncio.create_task(pump(messages))
        try:
            yield result
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
