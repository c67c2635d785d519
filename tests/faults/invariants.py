"""The soak's data rules beyond :func:`workload.mismatch`, each ``None`` when it holds.

Read from the database (the scheduler's reservations and both outboxes, as an auditor with
a read-only login would), the streams and the simulated PF drivers: no VF ever held by two
guests (the reservation history replayed per VF), every answered request's effect present
exactly once (one reservation row per request and VF, one event per request), every outbox
row relayed, and the VF hygiene the lifecycle promises (a free VF clean at its PF, a held
one with the VLAN its guest asked for, drift put back).
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import asyncpg
from fleet import Fleet
from workload import Expect

from sriov.common import schemas as m
from sriov.common.bus import Bus
from sriov.hostd.simulator.tree import load_state
from sriov.scheduler.testing import read_events

KEEP_VLAN = 100


async def reservations_ok(dsn: str) -> str | None:
    """Per VF, in reservation order, every reservation but the newest has ended; and no
    request reserved the same VF twice."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT id, device_id, guest_id, request_id, ended_at IS NOT NULL AS ended "
            "FROM scheduler.reservations ORDER BY device_id, id"
        )
    finally:
        await conn.close()
    last: dict[str, asyncpg.Record] = {}
    seen: set[tuple[str, str]] = set()
    for row in rows:
        key = (row["request_id"], row["device_id"])
        if key in seen:
            return f"request {row['request_id']} reserved {row['device_id']} twice"
        seen.add(key)
        prev = last.get(row["device_id"])
        if prev is not None and not prev["ended"]:
            return (
                f"{row['device_id']} reserved by {row['guest_id']} (reservation {row['id']}) "
                f"while {prev['guest_id']}'s {prev['id']} had not ended"
            )
        last[row["device_id"]] = row
    return None


async def outboxes_empty(dsn: str) -> str | None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        for table in ("scheduler.outbox", "inventory.outbox"):
            if n := await conn.fetchval(f"SELECT count(*) FROM {table}"):
                return f"{n} rows in {table} not relayed"
    finally:
        await conn.close()
    return None


async def events_once(bus: Bus, expect: Expect) -> str | None:
    """Each answered place/attach has one Reserved event, each effective release one
    Released (the stream's duplicate window drops a relay's republished batch)."""
    counts = collections.Counter((type(e).__name__, e.request_id) for e in await read_events(bus))
    for kind, rids in (
        ("Reserved", expect.reserved_requests),
        ("Released", expect.released_requests),
    ):
        for rid in rids:
            if counts[(kind, rid)] != 1:
                return f"{counts[(kind, rid)]} {kind} events for answered request {rid}"
    return None


async def vf_hygiene(fleet: Fleet, held: set[tuple[str, str]]) -> str | None:
    return await asyncio.to_thread(_vf_hygiene, fleet, held)


def _vf_hygiene(fleet: Fleet, held: set[tuple[str, str]]) -> str | None:
    """At each simulated PF: a VF no guest holds is clean (no MAC, no VLAN, not on vfio-pci);
    a held one has the guest's VLAN (drift put back). ``held``: (host id, PCI address) of the
    VFs held all along (hosts share PCI addresses: the simulated ones are alike)."""
    for sim in fleet.sim_hosts:
        state = load_state(sim.sys_root)
        for pf in state.pfs:
            for index, row in enumerate(state.vf_table.get(pf.pci_address, [])):
                pci = _vf_pci(sim.sys_root, pf.pci_address, index)
                if pci is None:
                    continue
                link = sim.sys_root / "bus" / "pci" / "devices" / pci / "driver"
                driver = link.resolve().name if link.is_symlink() else None
                if (sim.host_id, pci) in held:
                    if row.vlan != KEEP_VLAN:
                        return f"{sim.host_id} {pci}: held with VLAN {row.vlan}, not {KEEP_VLAN}"
                elif row.mac is not None or row.vlan != 0 or driver == "vfio-pci":
                    return (f"{sim.host_id} {pci}: free but not clean (mac {row.mac}, "
                            f"vlan {row.vlan}, driver {driver})")  # fmt: skip
    return None


def _vf_pci(sys_root: Path, pf_pci: str, index: int) -> str | None:
    link = sys_root / "bus" / "pci" / "devices" / pf_pci / f"virtfn{index}"
    return link.resolve().name if link.is_symlink() else None


async def conflict_explained(bus: Bus, dev: str, holder: str) -> bool:
    """The client saw ``dev`` handed on while it believed ``holder`` had it: fine if the
    history says ``holder``'s reservation of it ended (lost, expired, failed to prepare)."""
    for ev in await read_events(bus, holder):
        if isinstance(ev, m.Lost | m.Expired | m.Released) and dev in ev.device_ids:
            return True
        if isinstance(ev, m.Failed) and ev.op == "prepare" and dev in ev.device_ids:
            return True
    return False
