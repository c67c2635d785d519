"""Helpers for tests and benchmarks: hosts as hostd reports them, a hostd-like publisher, and
an in-process replica on real NATS and PostgreSQL.

The guide's example host (``climc isolated-device-list`` in the operator guide) is built
here, so the tests can check that it is listed exactly as the guide lists it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from opentelemetry.metrics import Meter

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus, ServiceHost
from sriov.common.errors import NotFound
from sriov.inventory import ingest, placement_events
from sriov.inventory.db import outbox, reads
from sriov.inventory.db.conn import Pool
from sriov.inventory.db.pool import open_pool
from sriov.inventory.main import Replica
from sriov.inventory.settings import InventorySettings

GUIDE_HOST = "c48b1b8b-28a3-453a-863f-ddf7c62bcfe2"
CX5_VF = "ConnectX-5 Virtual Function"
I350_VF = "I350 Ethernet Controller Virtual Function"


def pci(bus: int, dev: int, fn: int, domain: int = 0) -> str:
    return f"{domain:04x}:{bus:02x}:{dev:02x}.{fn}"


def vfs_of(
    pf: m.PF,
    n: int,
    first: tuple[int, int, int],
    stride: int,
    model: str,
    vendor: str,
    device: str,
    driver: str,
) -> list[m.VF]:
    """``n`` VFs of ``pf`` from routing id ``first`` (bus, dev, fn), ``stride`` functions apart."""
    bus, dev, fn = first
    rid = dev * 8 + fn
    out = []
    for i in range(n):
        r = rid + i * stride
        out.append(
            m.VF(
                pci_address=pci(bus, r // 8, r % 8),
                pf_pci_address=pf.pci_address,
                vf_index=i,
                vendor_id=vendor,
                device_id=device,
                model=model,
                driver=driver,
                ifname=f"{pf.ifname}v{i}" if pf.ifname else None,
                numa_node=pf.numa_node,
                iommu_group=100 + r,
                link_state="up",
            )
        )
    return out


def guide_host() -> tuple[list[m.PF], list[m.VF]]:
    """The guide's host: 8 ConnectX-5 VFs and 16 I350 VFs, 24 in all (two pages of 15).

    Page one is exactly the guide's table; page two (not shown in the guide) holds the VFs
    of a second I350 card on bus 02.
    """
    cx5 = m.PF(
        pci_address="0000:0a:00.0", ifname="eth1", vendor_id="15b3", device_id="1017",
        model="MT27800 Family [ConnectX-5]", driver="mlx5_core", numa_node=0,
        link_type="ethernet", total_vfs=64, num_vfs=8, network="192.168.100.111",
        bridge="br0", wire="vnet-192-168-100", sriov=True, link_state="up",
    )  # fmt: skip
    i350 = m.PF(
        pci_address="0000:03:00.0", ifname="eth2", vendor_id="8086", device_id="1521",
        model="I350 Gigabit Network Connection", driver="igb", numa_node=0,
        link_type="ethernet", total_vfs=7, num_vfs=7, network="bcast1", bridge="br1",
        wire="bcast1", sriov=True, link_state="up",
    )  # fmt: skip
    i350b = msgspec_replace(i350, pci_address="0000:02:00.0", ifname="eth3", num_vfs=7)
    i350c = msgspec_replace(i350, pci_address="0000:02:00.1", ifname="eth4", num_vfs=2)
    vfs = (
        vfs_of(cx5, 8, (0x0A, 0, 2), 1, CX5_VF, "15b3", "1018", "mlx5_core")
        + vfs_of(i350, 7, (0x03, 0x10, 0), 4, I350_VF, "8086", "1520", "igbvf")
        + vfs_of(i350b, 7, (0x02, 0x10, 0), 4, I350_VF, "8086", "1520", "igbvf")
        + vfs_of(i350c, 2, (0x02, 0x10, 1), 4, I350_VF, "8086", "1520", "igbvf")
    )
    return [cx5, i350, i350b, i350c], vfs


#: The guide's table, page 1 (columns after ID), in the guide's order.
GUIDE_PAGE_ONE = [
    ("NIC", CX5_VF, "0a:01.1", "15b3:1018"),
    ("NIC", CX5_VF, "0a:01.0", "15b3:1018"),
    ("NIC", CX5_VF, "0a:00.7", "15b3:1018"),
    ("NIC", CX5_VF, "0a:00.6", "15b3:1018"),
    ("NIC", CX5_VF, "0a:00.5", "15b3:1018"),
    ("NIC", CX5_VF, "0a:00.4", "15b3:1018"),
    ("NIC", CX5_VF, "0a:00.3", "15b3:1018"),
    ("NIC", CX5_VF, "0a:00.2", "15b3:1018"),
    ("NIC", I350_VF, "03:13.0", "8086:1520"),
    ("NIC", I350_VF, "03:12.4", "8086:1520"),
    ("NIC", I350_VF, "03:12.0", "8086:1520"),
    ("NIC", I350_VF, "03:11.4", "8086:1520"),
    ("NIC", I350_VF, "03:11.0", "8086:1520"),
    ("NIC", I350_VF, "03:10.4", "8086:1520"),
    ("NIC", I350_VF, "03:10.0", "8086:1520"),
]
GUIDE_FOOTER = "*** Total: 24 Pages: 2 Limit: 15 Offset: 0 Page: 1 ***"


def fleet_host(index: int, vfs: int = 64, model: str = CX5_VF) -> tuple[list[m.PF], list[m.VF]]:
    """A synthetic host of a large fleet: two ConnectX-5 PFs sharing ``vfs`` VFs."""
    pfs = [
        m.PF(
            pci_address=pci(0x3B, 0, fn),
            ifname=f"ens1f{fn}",
            vendor_id="15b3",
            device_id="1017",
            model="MT27800 Family [ConnectX-5]",
            driver="mlx5_core",
            numa_node=fn,
            link_type="ethernet",
            total_vfs=64,
            num_vfs=vfs // 2,
            wire=f"wire{index % 8}",
            sriov=True,
            link_state="up",
        )
        for fn in (0, 1)
    ]
    half = vfs // 2
    out = vfs_of(pfs[0], half, (0x3B, 0, 2), 1, model, "15b3", "1018", "mlx5_core")
    out += vfs_of(pfs[1], vfs - half, (0x3C, 0, 0), 1, model, "15b3", "1018", "mlx5_core")
    return pfs, out


def msgspec_replace(pf: m.PF, **changes: object) -> m.PF:
    return msgspec.structs.replace(pf, **changes)


#: What mlx5_core applies to its VFs (everything), and igb (no min rate, no 802.1ad).
MLX5_CAPS = m.PfCapabilities(
    driver="mlx5_core", vf_driver="mlx5_core", mac=True, vlan=True, vlan_8021ad=True,
    spoof_check=True, trust=True, link_state=True, min_tx_rate=True, max_tx_rate=True,
)  # fmt: skip
IGB_CAPS = m.PfCapabilities(
    driver="igb", vf_driver="igbvf", mac=True, vlan=True, spoof_check=True, trust=True,
    link_state=True, max_tx_rate=True,
)  # fmt: skip


def with_lifecycle(pfs: list[m.PF]) -> list[m.PF]:
    """The PFs as a hostd with the VF lifecycle reports them: with their capabilities."""
    return [
        msgspec_replace(p, capabilities=MLX5_CAPS if p.driver == "mlx5_core" else IGB_CAPS)
        for p in pfs
    ]


@dataclass
class Hostd:
    """Publishes a host's events the way hostd does: one generation, increasing seq."""

    bus: Bus
    host_id: str
    generation: int = 1
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    hostname: str = ""

    def next_seq(self) -> int:
        return next(self.seq)

    def event_id(self, ev: m.HostEvent) -> str:
        return f"{ev.host_id}/{ev.generation}/{ev.seq}"

    async def send(self, subject: subjects.Subject, ev: m.HostEvent) -> m.HostEvent:
        await self.bus.js_publish(subject, ev, event_id=self.event_id(ev))
        return ev

    def snapshot_event(self, pfs: list[m.PF], vfs: list[m.VF]) -> m.HostSnapshot:
        return m.HostSnapshot(
            host_id=self.host_id,
            generation=self.generation,
            seq=self.next_seq(),
            hostname=self.hostname or self.host_id,
            pfs=pfs,
            vfs=vfs,
        )

    async def snapshot(self, pfs: list[m.PF], vfs: list[m.VF]) -> m.HostEvent:
        ev = self.snapshot_event(pfs, vfs)
        return await self.send(subjects.host_snapshot(self.host_id), ev)

    async def heartbeat(self, interval_s: float = 5.0, snapshot_seq: int = 0) -> m.HostEvent:
        ev = m.Heartbeat(
            host_id=self.host_id,
            generation=self.generation,
            seq=self.next_seq(),
            interval_s=interval_s,
            snapshot_seq=snapshot_seq,
        )
        return await self.send(subjects.host_heartbeat(self.host_id), ev)

    async def vf(self, verb: str, vf: m.VF) -> m.HostEvent:
        cls = m.VfDiscovered if verb == "discovered" else m.VfChanged
        ev = cls(host_id=self.host_id, generation=self.generation, seq=self.next_seq(), vf=vf)
        return await self.send(subjects.host_vf(self.host_id, verb), ev)

    async def vf_removed(self, vf: m.VF) -> m.HostEvent:
        ev = m.VfRemoved(
            host_id=self.host_id,
            generation=self.generation,
            seq=self.next_seq(),
            pci_address=vf.pci_address,
            pf_pci_address=vf.pf_pci_address,
        )
        return await self.send(subjects.host_vf(self.host_id, "removed"), ev)

    async def applied(
        self, vf: m.VF, revision: int, outcome: str, actual: m.VfConfig | None, **kw: object
    ) -> m.HostEvent:
        """hostd's outcome for ``revision`` of the VF's desired state (``VfApplied``)."""
        ev = m.VfApplied(
            host_id=self.host_id, generation=self.generation, seq=self.next_seq(),
            pci_address=vf.pci_address, revision=revision, outcome=outcome,  # type: ignore[arg-type]
            actual=actual, **kw,  # type: ignore[arg-type]
        )  # fmt: skip
        return await self.send(subjects.host_vf(self.host_id, "applied"), ev)

    async def link(self, pf: m.PF, up: bool) -> m.HostEvent:
        ev = m.LinkChanged(
            host_id=self.host_id,
            generation=self.generation,
            seq=self.next_seq(),
            ifname=pf.ifname or "",
            state="up" if up else "down",
            pci_address=pf.pci_address,
            role="pf",
        )
        return await self.send(subjects.host_link(self.host_id, up), ev)


@contextlib.contextmanager
def inventory_process(
    nats_url: str, database_url: str, log: Path, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """The real ``sriov-inventory`` command, as the launcher runs it; stopped on exit."""
    exe = Path(sys.executable).parent / "sriov-inventory"
    env = {**os.environ, "SRIOV_DATABASE_URL": database_url, "SRIOV_LOG_LEVEL": "WARNING"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(exe), "--nats-url", nats_url, *extra],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@contextlib.asynccontextmanager
async def replica(
    nats_url: str,
    database_url: str,
    settings: InventorySettings | None = None,
    name: str = "r1",
    meter: Meter | None = None,
) -> AsyncIterator[Replica]:
    """An in-process inventory replica with its own NATS connection and pool.

    Without ``settings``, hosts never time out: a test's fake hostd sends no heartbeats, and
    a slow test (sriovctl processes on a loaded machine) would otherwise see its host go
    offline after the default 15 s. Liveness tests pass their own ``heartbeat_timeout``."""
    bus = await Bus.connect(nats_url, name=f"inventory-{name}", source=f"sriov/inventory/{name}")
    await bus.ensure_streams()
    pool = await open_pool(database_url, min_size=2, max_size=8)
    svc = await ServiceHost.start(bus, "sriov-inventory", "0.1.0", "test replica", {})
    rep = Replica(pool, bus, settings or InventorySettings(heartbeat_timeout=86400), meter)
    await rep.register(svc)
    stop = asyncio.Event()
    task = asyncio.create_task(rep.run(stop))
    try:
        yield rep
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 15)
        finally:
            await svc.stop()
            await pool.close()
            await bus.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 30, what: str = "condition"
) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def list_devices(bus: Bus, **filters: object) -> m.DeviceListReply:
    """``devices.list`` over the bus, as the CLI calls it."""
    req = m.DeviceListRequest(**filters)  # type: ignore[arg-type]
    subject = subjects.endpoint(subjects.INVENTORY_DEVICES_GROUP, "list")
    return await bus.request(subject, req, m.DeviceListReply)


async def get_host(bus: Bus, host_id: str) -> m.HostInfo:
    subject = subjects.endpoint(subjects.INVENTORY_HOSTS_GROUP, "get")
    reply = await bus.request(subject, m.HostGetRequest(host_id=host_id), m.HostGetReply)
    return reply.host


async def state_values(bus: Bus) -> tuple[dict[str, m.DeviceState], dict[str, m.HostState]]:
    """Replay SRIOV_STATE as a newcomer does: the last value of every subject."""
    devices: dict[str, m.DeviceState] = {}
    hosts: dict[str, m.HostState] = {}
    for flt in (subjects.DEVICE_STATE_ALL, subjects.HOST_STATE_ALL):
        async for _subject, data in bus.last_values(subjects.STREAM_STATE, flt):
            msg = m.STATE_EVENTS.decode(data)
            if isinstance(msg, m.DeviceState):
                devices[msg.device.id] = msg
            else:
                hosts[msg.host.host_id] = msg
    return devices, hosts


async def drained(bus: Bus, pool: Pool) -> bool:
    """Every event consumed and acknowledged, and every state change relayed."""
    for stream, durable in (
        (subjects.STREAM_HOST_EVENTS, ingest.DURABLE),
        (subjects.STREAM_PLACEMENT, placement_events.DURABLE),
    ):
        try:
            if not await bus.caught_up(stream, durable):
                return False
        except Exception:  # not created yet: the replica has not started consuming
            return False
    async with pool.acquire() as conn:
        return await outbox.pending(conn) == 0


async def host_status(bus: Bus, host_id: str) -> str | None:
    """The host's status, or None while inventory has not heard of it."""
    try:
        return (await get_host(bus, host_id)).status
    except NotFound:
        return None


async def assert_totals_agree(pool: Pool) -> None:
    """The listing counts and each host's VF totals are what its device rows add up to
    (placement events move them by a change instead of recounting)."""
    async with pool.acquire() as conn:
        stored = await conn.fetch(
            "SELECT host_id, model, dev_type, vendor_device_id, attached, n "
            "FROM inventory.device_counts ORDER BY 1, 2, 3, 4, 5"
        )
        counted = await conn.fetch(
            "SELECT host_id, model, dev_type, vendor_device_id, guest_id IS NOT NULL, count(*) "
            "FROM inventory.devices WHERE NOT removed GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
        )
        assert [tuple(r) for r in stored] == [tuple(r) for r in counted]
        hosts = await conn.fetch(
            "SELECT h.host_id, h.vf_count, h.vf_free, count(d.id) AS live, count(d.id) FILTER ("
            "  WHERE d.present AND d.guest_id IS NULL AND coalesce(d.lifecycle, 'free') = 'free'"
            ") AS free FROM inventory.hosts h "
            "LEFT JOIN inventory.devices d ON d.host_id = h.host_id AND NOT d.removed "
            "GROUP BY h.host_id"
        )
        assert [(r["vf_count"], r["vf_free"]) for r in hosts] == [
            (r["live"], r["free"]) for r in hosts
        ], [dict(r) for r in hosts]
        gauges, _ = await reads.fleet_counts(conn)
        counted = await conn.fetch(  # what the gauges counted over every VF, as they did
            "SELECT host_id, model, count(*) AS total, count(*) FILTER (WHERE guest_id IS NULL"
            " AND present AND coalesce(lifecycle, 'free') = 'free') AS free,"
            " count(*) FILTER (WHERE guest_id IS NOT NULL) AS reserved "
            "FROM inventory.devices WHERE NOT removed GROUP BY 1, 2 ORDER BY 1, 2"
        )
        assert gauges == [tuple(r) for r in counted]
