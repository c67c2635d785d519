"""Test and benchmark support: publish fleet state as inventory does, run replicas in-process.

:class:`FleetState` publishes ``DeviceState``/``HostState`` to the real ``SRIOV_STATE``
stream on inventory's subjects, with increasing revisions, exactly as inventory does; the
scheduler cannot tell the difference. :func:`run_replica` runs one scheduler replica inside
the current event loop (its own NATS connection and pool), :func:`settle` waits until the
state consumer has applied everything published so far. A PF given ``capabilities`` is one
whose hostd runs the VF lifecycle: :class:`FakeHostd` reads its desired states and reports
outcomes as hostd would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec

from sriov.common import runtime, subjects
from sriov.common import schemas as m
from sriov.common.bus import Bus, ServiceHost, event_headers
from sriov.scheduler import main, validation
from sriov.scheduler.projection import durable_name
from sriov.scheduler.settings import SchedulerSettings

I350 = "I350 Ethernet Controller Virtual Function"
#: A PF driver that can apply every VF setting (mlx5_core's ndo_set_vf_*).
FULL = m.PfCapabilities(
    driver="mlx5_core", vf_driver="mlx5_core", mac=True, vlan=True, vlan_8021ad=True,
    spoof_check=True, trust=True, link_state=True, min_tx_rate=True, max_tx_rate=True,
)  # fmt: skip
#: igb: no min rate, no 802.1ad, no trust toggling of its own... as the igb driver has it.
IGB = msgspec.structs.replace(
    FULL, driver="igb", vf_driver="igbvf", min_tx_rate=False, vlan_8021ad=False
)
CX5 = "ConnectX-5 Virtual Function"
VENDOR_DEVICE = {I350: "8086:1520", CX5: "15b3:1018"}
_instances = itertools.count(1)


@dataclass
class PfSpec:
    """A PF and its VFs: ``count`` VFs of ``model`` (at most 256, on a bus of their own)."""

    pci: str
    model: str = CX5
    count: int = 4
    numa_node: int = 0
    wire: str | None = "bcast0"
    network: str | None = None
    ifname: str | None = None
    link_up: bool = True
    capabilities: m.PfCapabilities | None = None
    """None: a hostd without the VF lifecycle (no desired state, ready at once)."""


@dataclass
class FleetState:
    """The fleet as inventory would describe it; ``publish*`` sends what changed."""

    bus: Bus
    devices: dict[str, m.Device] = field(default_factory=dict)
    hosts: dict[str, m.HostInfo] = field(default_factory=dict)
    revisions: dict[str, int] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    _dirty: set[str] = field(default_factory=set)
    _by_host: dict[str, list[str]] = field(default_factory=dict)
    """Each host's device ids: building and changing a host never scans the whole fleet
    (a 10,000-host fleet was quadratic to build)."""
    _pfs: dict[str, set[str]] = field(default_factory=dict)

    # --- building --------------------------------------------------------------------------
    def add_host(self, host_id: str, pfs: Iterable[PfSpec], status: str = "online") -> list[str]:
        """Add a host with its PFs and VFs; returns the new VF ids (in PCI order)."""
        self.hosts[host_id] = m.HostInfo(host_id=host_id, hostname=host_id, status=status)  # type: ignore[arg-type]
        self._dirty.add("host:" + host_id)
        ids: list[str] = []
        host_pfs = self._pfs.setdefault(host_id, set())
        for k, pf in enumerate(pfs, start=len(host_pfs)):
            host_pfs.add(pf.pci)
            dom = pf.pci.split(":")[0]
            for i in range(pf.count):
                # each PF's VFs on a bus of their own (0x80 + k), 8 functions per device
                pci = f"{dom}:{0x80 + k:02x}:{i // 8:02x}.{i % 8}"
                dev = m.Device(
                    id=m.device_id(host_id, pci),
                    host_id=host_id,
                    pci_address=pci,
                    addr=m.short_addr(pci),
                    model=pf.model,
                    vendor_device_id=VENDOR_DEVICE.get(pf.model, "ffff:0001"),
                    pf_pci_address=pf.pci,
                    pf_ifname=pf.ifname,
                    vf_index=i,
                    numa_node=pf.numa_node,
                    wire=pf.wire,
                    network=pf.network,
                    link_state="up" if pf.link_up else "down",
                    host_status=status,  # type: ignore[arg-type]
                    capabilities=pf.capabilities,
                )
                if dev.id not in self.devices:
                    self._by_host.setdefault(host_id, []).append(dev.id)
                self.devices[dev.id] = dev
                self._dirty.add(dev.id)
                ids.append(dev.id)
        return ids

    def vfs_of(self, host_id: str, pf: str | None = None) -> list[str]:
        return sorted(
            (i for i in self._by_host.get(host_id, ())
             if (pf is None or self.devices[i].pf_pci_address == pf) and i not in self.removed),
            key=lambda i: self.devices[i].pci_address,
        )  # fmt: skip

    # --- changes ----------------------------------------------------------------------------
    def set_host_status(self, host_id: str, status: str) -> None:
        self.hosts[host_id] = msgspec.structs.replace(self.hosts[host_id], status=status)
        self._dirty.add("host:" + host_id)

    def set_link(self, host_id: str, pf: str, up: bool) -> None:
        for i in self._by_host.get(host_id, ()):
            if self.devices[i].pf_pci_address == pf:
                self._change(i, link_state="up" if up else "down")

    def set_present(self, device_id: str, present: bool) -> None:
        self._change(device_id, present=present)

    def recreate(self, device_id: str) -> None:
        """Destroyed and recreated at once (a VF count change), told as one state: present
        all along, in a new incarnation (inventory's batch or a last-value stream merged the
        absence and the return)."""
        self._change(device_id, incarnation=self.devices[device_id].incarnation + 1)

    def remove(self, device_id: str) -> None:
        """Tombstone: the VF is gone for good."""
        self.removed.add(device_id)
        self._change(device_id, present=False)

    def _change(self, device_id: str, **changes: Any) -> None:
        self.devices[device_id] = msgspec.structs.replace(self.devices[device_id], **changes)
        self._dirty.add(device_id)

    # --- publishing -------------------------------------------------------------------------
    def _next(self, key: str) -> int:
        self.revisions[key] = self.revisions.get(key, 0) + 1
        return self.revisions[key]

    def messages(self) -> list[tuple[subjects.Subject, m.Message]]:
        """What changed since the last call, as (subject, message) like inventory sends."""
        out: list[tuple[subjects.Subject, m.Message]] = []

        def order(key: str) -> tuple[str, str, str]:  # host by host, as inventory sends
            if key.startswith("host:"):
                return (key[5:], "", "")
            dev = self.devices[key]
            return (dev.host_id, "~", dev.pci_address)

        for key in sorted(self._dirty, key=order):
            if key.startswith("host:"):
                host = self.hosts[key[5:]]
                out.append(
                    (subjects.host_state(host.host_id),
                     m.HostState(host=host, revision=self._next(key)))
                )  # fmt: skip
                continue
            dev = self.devices[key]
            status = self.hosts[dev.host_id].status if dev.host_id in self.hosts else "unknown"
            dev = msgspec.structs.replace(dev, host_status=status)
            out.append(
                (subjects.device_state(dev.host_id, dev.pci_address),
                 m.DeviceState(device=dev, revision=self._next(key), removed=key in self.removed))
            )  # fmt: skip
        self._dirty.clear()
        return out

    async def publish(self, concurrency: int = 256) -> int:
        """Publish every change to JetStream (acknowledged); returns how many messages."""
        msgs = self.messages()
        sem = asyncio.Semaphore(concurrency)

        async def one(subject: subjects.Subject, msg: m.Message) -> None:
            async with sem:
                headers = event_headers(msg, "sriov/inventory-sim")
                await self.bus.js_publish_raw(subject.subject, m.encode(msg), headers)

        await asyncio.gather(*(one(s, msg) for s, msg in msgs))
        return len(msgs)


# --- replicas ---------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def run_replica(
    nats_url: str, database_url: str, **overrides: Any
) -> AsyncIterator[main.Replica]:
    """One scheduler replica in this event loop, stopped (and its tasks ended) on exit."""
    opts: dict[str, Any] = {
        "nats_url": nats_url,
        "database_url": database_url,
        "instance_id": f"test-{next(_instances)}",
        "expiry_interval_s": 0.2,
        "db_pool_size": 6,
        **overrides,
    }
    settings = msgspec.convert(opts, SchedulerSettings).check()
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        bus = await runtime.connect_bus(settings, "sriov-scheduler")
        stack.push_async_callback(bus.close)
        svc = ServiceHost.prepare(
            bus, "sriov-scheduler", runtime.VERSION, "test replica",
            {"instance": settings.instance_id}, concurrency=settings.request_concurrency,
        )  # fmt: skip
        await svc.announce()
        stack.push_async_callback(svc.stop)
        ctx = runtime.ServiceContext("sriov-scheduler", bus, svc, stop, stack, settings)
        try:
            yield await main.start(ctx)
        finally:
            stop.set()
            if ctx.tasks:
                _done, pending = await asyncio.wait(ctx.tasks, timeout=3)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*ctx.tasks, return_exceptions=True)


async def state_durable(database_url: str, timeout: float = 30) -> str:
    """The state consumer's name for a database (once a replica has created the schema)."""
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                conn = await asyncpg.connect(database_url)
                try:
                    epoch = await conn.fetchval(
                        "SELECT value FROM scheduler.meta WHERE key='epoch'"
                    )
                finally:
                    await conn.close()
                return durable_name(epoch)
            await asyncio.sleep(0.1)


async def settle(bus: Bus, durable: str, timeout: float = 30) -> None:
    """Wait until the state consumer ``durable`` has applied and acked everything published so
    far (``Bus.caught_up``)."""
    target = (await bus.stream_info(subjects.STREAM_STATE)).last_seq
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(Exception):  # not created yet, or a transient error
                if await bus.caught_up(subjects.STREAM_STATE, durable, target):
                    return
            await asyncio.sleep(0.02)


async def read_events(bus: Bus, guest_id: str | None = None) -> list[m.PlacementEventT]:
    """Every placement event in the stream (oldest first), optionally of one guest."""
    flt = subjects.PLACEMENT_EVENTS_ALL
    out: list[m.PlacementEventT] = []
    async for stored in bus.history(subjects.STREAM_PLACEMENT, flt):
        with contextlib.suppress(Exception):
            ev = m.PLACEMENT_EVENTS.decode(stored.data)
            if guest_id is None or ev.guest_id == guest_id:
                out.append(ev)
    return out


async def wait_events(
    bus: Bus, count: int, guest_id: str | None = None, timeout: float = 15
) -> list[m.PlacementEventT]:
    """Wait until at least ``count`` events (of ``guest_id``) are in the stream."""
    async with asyncio.timeout(timeout):
        while True:
            events = await read_events(bus, guest_id)
            if len(events) >= count:
                return events
            await asyncio.sleep(0.05)


# --- a hostd's side of the VF lifecycle ------------------------------------------------------
@dataclass
class FakeHostd:
    """Reads a host's desired VF states from ``SRIOV_DESIRED`` and reports outcomes on its
    host subject, as hostd does (the real hostd applies them to the VF first)."""

    bus: Bus
    host_id: str
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def desired(self) -> dict[str, m.VfDesired]:
        """The current desired state of each VF of the host, by PCI address."""
        out: dict[str, m.VfDesired] = {}
        flt = subjects.desired_of_host(self.host_id)
        async for stored in self.bus.history(subjects.STREAM_DESIRED, flt):
            d = m.DESIRED.decode(stored.data)
            out[d.pci_address] = d
        return out

    async def wait(self, pci: str, state: str, after: int = 0, timeout: float = 10) -> m.VfDesired:
        """Until the VF's desired state is ``state`` with a revision above ``after``."""
        async with asyncio.timeout(timeout):
            while True:
                d = (await self.desired()).get(pci)
                if d is not None and d.state == state and d.revision > after:
                    return d
                await asyncio.sleep(0.05)

    async def report(
        self,
        desired: m.VfDesired,
        outcome: str,
        *,
        error: str | None = None,
        iommu_group: int | None = 17,
        revision: int | None = None,
    ) -> None:
        """Publish the outcome of ``desired`` (read back as asked unless it failed)."""
        ev = m.VfApplied(
            host_id=self.host_id, generation=1, seq=next(self._seq),
            pci_address=desired.pci_address,
            revision=desired.revision if revision is None else revision,
            outcome=outcome,  # type: ignore[arg-type]
            actual=desired.config if outcome in ("ready", "clean") else None, error=error,
            iommu_group=iommu_group,
        )  # fmt: skip
        await self.bus.js_publish(subjects.host_vf(self.host_id, "applied"), ev)


async def index_reads(conn: asyncpg.Connection) -> int:
    """Index entries of scheduler.vfs read since this session last reported its statistics:
    with :func:`fresh_counts` before the transaction, that transaction's own."""
    return int(await conn.fetchval(
        "SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid)) FROM pg_index "
        "WHERE indrelid = 'scheduler.vfs'::regclass"
    ))  # fmt: skip


async def fresh_counts(conn: asyncpg.Connection) -> None:
    """Report (and so reset) this session's pending statistics now, not within the second."""
    await conn.execute("SELECT pg_stat_force_next_flush()")


async def walk(conn: asyncpg.Connection, net: str, start: int) -> tuple[str | None, int]:
    """``pick_host`` for one net (a netdesc) from ``start``: (the host found, index entries
    of scheduler.vfs it read). Tests count reads, not time: a walk that skips VF by VF reads
    as many entries as it skipped."""
    spec = validation.net(m.NetRequest(desc=net), "nets[0]")
    n = msgspec.json.encode(spec).decode()
    await fresh_counts(conn)
    async with conn.transaction():
        host = await conn.fetchval(
            "SELECT host_id FROM scheduler.pick_host($1::jsonb, jsonb_build_array($1::jsonb), "
            "NULL, NULL, 'spread', $2)", n, start,
        )  # fmt: skip
        return host, await index_reads(conn)
