"""Wait until hostd has prepared a guest's reserved VFs: the placement ``ready`` (or failed).

The scheduler declares ``Ready`` once hostd read every VF of the request back as desired, and
``Failed`` (op ``prepare``) when the host cannot apply it. The command listens to the guest's
placement events from before it sends the request, so neither can slip by; it also asks
``scheduler.get`` now and then, which answers for events published before it listened (a
retried request) and for a scheduler that saw the outcome while this command was away.
A VF whose ``prepared`` is None belongs to a scheduler or host without the lifecycle: nothing
to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import msgspec

from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.common.errors import NotFound

POLL_S = 0.5
#: Columns a VM manager needs to start the guest with its VFs.
VM_COLUMNS = ["Device_id", "PCI_address", "IOMMU_group", "Driver", "MAC", "VLAN", "Prepared"]


@dataclass
class Outcome:
    reply: m.PlacementReply
    """The reservation, its assignments as prepared (from ``Ready`` or ``scheduler.get``)."""
    error: str | None = None
    """Why the guest's VFs will not become ready (a prepare failure, a timeout)."""


def waiting(reply: m.PlacementReply) -> set[str]:
    """Device ids of the reply still being prepared (empty: nothing to wait for)."""
    return {a.device_id for a in reply.assignments if a.prepared not in (None, "ready")}


def vm_rows(reply: m.PlacementReply) -> list[list[object]]:
    """Per VF: what a VM manager passes to the guest (PCI address, IOMMU group, driver...)."""
    rows: list[list[object]] = []
    for a in reply.assignments:
        cfg = a.config
        rows.append([
            a.device_id, a.pci_address, a.iommu_group, cfg.driver if cfg else None,
            cfg.mac if cfg else None, cfg.vlan if cfg else None, a.prepared or "-",
        ])  # fmt: skip
    return rows


@contextlib.asynccontextmanager
async def listening(bus: Bus, guest_id: str) -> AsyncIterator[asyncio.Queue[m.PlacementEventT]]:
    """The guest's placement events from now on (subscribed before the request is sent)."""
    queue: asyncio.Queue[m.PlacementEventT] = asyncio.Queue()

    async def pump(messages: AsyncIterator[object]) -> None:
        async for msg in messages:
            with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError, ValueError):
                queue.put_nowait(m.PLACEMENT_EVENTS.decode(msg.data))  # type: ignore[attr-defined]

    subject = s.wildcard(s.PLACEMENT_EVENT, guest_id=guest_id)
    async with bus.subscribe(subject) as messages:
        await bus.flush()
        task = asyncio.create_task(pump(messages))
        try:
            yield queue
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def keep_prepared(reply: m.PlacementReply, prepared: m.PlacementReply) -> m.PlacementReply:
    """``reply`` (a later answer, e.g. confirm's) with what ``prepared`` knew of each VF."""
    by_id = {a.device_id: a for a in prepared.assignments}
    return msgspec.structs.replace(reply, assignments=[
        msgspec.structs.replace(
            a, config=a.config or by_id[a.device_id].config,
            iommu_group=a.iommu_group if a.iommu_group is not None
            else by_id[a.device_id].iommu_group,
            prepared=by_id[a.device_id].prepared or a.prepared,
        ) if a.device_id in by_id else a
        for a in reply.assignments
    ])  # fmt: skip


def _merge(reply: m.PlacementReply, ready: list[m.Assignment]) -> m.PlacementReply:
    by_id = {a.device_id: a for a in ready}
    merged = [by_id.get(a.device_id, a) for a in reply.assignments]
    return msgspec.structs.replace(reply, assignments=merged)


async def wait_ready(
    reply: m.PlacementReply,
    events: asyncio.Queue[m.PlacementEventT],
    get: Callable[[], Awaitable[m.PlacementReply]],
    timeout: float,
) -> Outcome:
    """Until every VF of ``reply`` is ready, one failed, or ``timeout`` seconds passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    mine = {a.device_id for a in reply.assignments}
    while waiting(reply):
        left = deadline - loop.time()
        if left <= 0:
            pcis = ", ".join(a.pci_address for a in reply.assignments if a.prepared != "ready")
            return Outcome(reply, f"not ready after {timeout:g} s: {pcis} still being prepared")
        try:
            ev = await asyncio.wait_for(events.get(), min(left, POLL_S))
        except TimeoutError:
            ev = None
        match ev:
            case m.Ready() if mine & set(ev.device_ids):
                ready = [msgspec.structs.replace(a, prepared="ready") for a in ev.assignments]
                reply = _merge(reply, ready)
                continue
            case m.Failed(op="prepare") if mine & set(ev.device_ids) or not ev.device_ids:
                return Outcome(reply, f"{ev.error.message} [{ev.error.code}]")
            case None:
                pass
            case _:
                continue
        try:
            current = await get()
        except NotFound:
            return Outcome(reply, "the reservation ended before its VFs were ready")
        reply = _merge(reply, [a for a in current.assignments if a.device_id in mine])
        if any(a.prepared == "failed" for a in reply.assignments):
            return Outcome(reply, "the host could not prepare the VF(s) [failed]")
    return Outcome(reply)
