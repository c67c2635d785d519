"""The scheduler's projection of schedulable VFs, built from inventory's state stream.

One durable consumer on ``SRIOV_STATE`` shared by every replica (they share the database):
a batch of messages becomes one transaction of idempotent upserts guarded by revision. The
durable is named after the database's epoch, so a fresh database replays the current state
of every device and host (the stream keeps the last value per subject), and a replica that
was down catches up from the durable's cursor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec

from sriov.common import schemas as m
from sriov.common import subjects, telemetry
from sriov.common.bus import Bus, ConsumerSpec, ConsumerStats, Delivery
from sriov.scheduler.consumer import consume
from sriov.scheduler.metrics import Metrics
from sriov.scheduler.store import StateResult, Store

log = logging.getLogger(__name__)

StateMsg = m.DeviceState | m.HostState
ANALYZE_MIN_ROWS = 200
ANALYZE_MIN_INTERVAL_S = 2.0


class DeviceRow(msgspec.Struct, kw_only=True):
    """What the projection keeps of a Device (``scheduler.apply_state``'s columns)."""

    id: str
    host_id: str
    pci_address: str
    addr: str
    model: str
    vendor_device_id: str
    pf_pci_address: str
    pf_ifname: str | None
    vf_index: int
    numa_node: int
    wire: str | None
    network: str | None
    link_up: bool
    present: bool
    removed: bool
    incarnation: int
    revision: int
    managed: bool
    """Its hostd runs the VF lifecycle (the PF published capabilities)."""
    cannot: list[str]
    """The settings its PF cannot apply; ``lifecycle`` (and every setting) when unmanaged."""
    vf_driver: str | None


#: A VfConfig asking for every setting: what a PF cannot apply of it is what it lacks.
_EVERYTHING = m.VfConfig(
    mac="02:00:00:00:00:01", vlan=1, qos=1, vlan_proto="802.1ad", spoof_check=False,
    trust=True, link_state="enable", min_tx_rate=1, max_tx_rate=2,
)  # fmt: skip
_UNMANAGED = ["lifecycle", *m.PfCapabilities().missing(_EVERYTHING)]


def cannot(caps: m.PfCapabilities | None) -> list[str]:
    return _UNMANAGED if caps is None else caps.missing(_EVERYTHING)


class HostRow(msgspec.Struct, kw_only=True):
    host_id: str
    status: str
    revision: int


def durable_name(epoch: str) -> str:
    """The state consumer of the database with this epoch (shared by its replicas)."""
    return f"scheduler-state-{epoch}"


def device_row(st: m.DeviceState) -> DeviceRow:
    d = st.device
    return DeviceRow(
        id=d.id,
        host_id=d.host_id,
        pci_address=d.pci_address,
        addr=d.addr,
        model=d.model,
        vendor_device_id=d.vendor_device_id,
        pf_pci_address=d.pf_pci_address,
        pf_ifname=d.pf_ifname,
        vf_index=d.vf_index,
        numa_node=d.numa_node,
        wire=d.wire,
        network=d.network,
        link_up=d.link_state == "up",
        present=d.present and not st.removed,
        removed=st.removed,
        incarnation=d.incarnation,
        revision=st.revision,
        managed=d.capabilities is not None,
        cannot=cannot(d.capabilities),
        vf_driver=d.capabilities.vf_driver if d.capabilities else None,
    )


def rows(batch: list[StateMsg]) -> tuple[list[DeviceRow], list[HostRow]]:
    """The newest row per device and per host of a batch, in (host, PCI address) order.

    A host seen only through its devices gets their ``host_status`` at revision -1, which
    counts until the host's own state (revision >= 0) arrives.
    """
    devices: dict[str, DeviceRow] = {}
    hosts: dict[str, HostRow] = {}
    derived: dict[str, HostRow] = {}
    for msg in batch:
        if isinstance(msg, m.DeviceState):
            row = device_row(msg)
            old = devices.get(row.id)
            if old is None or old.revision < row.revision:
                devices[row.id] = row
            derived[row.host_id] = HostRow(
                host_id=row.host_id, status=msg.device.host_status, revision=-1
            )
        else:
            h = HostRow(host_id=msg.host.host_id, status=msg.host.status, revision=msg.revision)
            old_h = hosts.get(h.host_id)
            if old_h is None or old_h.revision < h.revision:
                hosts[h.host_id] = h
    for host, row_h in derived.items():
        hosts.setdefault(host, row_h)
    return (
        sorted(devices.values(), key=lambda d: (d.host_id, d.pci_address)),
        [hosts[k] for k in sorted(hosts)],
    )


class Projection:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        *,
        source: str,
        metrics: Metrics | None = None,
        on_commit: Callable[[], None] | None = None,
        batch: int = 500,
    ) -> None:
        self.store = store
        self.bus = bus
        self.source = source
        self.metrics = metrics or Metrics()
        self.on_commit = on_commit
        self.stats = ConsumerStats()
        self._changed_since_analyze = 0
        self._analyzed_at = 0.0
        self._rows_at_analyze = 0
        self._analyze_took = 0.0
        self.spec = ConsumerSpec(
            stream=subjects.STREAM_STATE,
            durable=durable_name(store.epoch),
            filter_subjects=[subjects.DEVICE_STATE_ALL, subjects.HOST_STATE_ALL],
            batch=batch,
            max_ack_pending=batch * 8,
            concurrency=4,
            ack_wait_s=10,  # a slow batch is kept in progress; a lost one is back in 10 s
            max_deliver=10,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await consume(
            self.bus, self.spec, m.STATE_EVENTS, self._one, stop=stop, stats=self.stats,
            batch_handler=self._batch,
        )  # fmt: skip

    async def apply(self, batch: list[StateMsg]) -> StateResult:
        devices, hosts = rows(batch)
        ctx = msgspec.json.encode({"source": self.source, "trace": telemetry.inject({})})
        result = await self.store.apply_state(
            msgspec.json.encode(devices), [d.id for d in devices], msgspec.json.encode(hosts), ctx
        )
        self.metrics.state.add(len(batch))
        await self._keep_statistics(result.devices + len(hosts))
        if result.lost:
            self.metrics.lost.add(result.lost)
        if result.lost or result.hosts_down:
            log.warning(
                "state change ended %d reservation(s); hosts gone offline: %s",
                result.lost, ", ".join(result.hosts_down) or "none",
            )  # fmt: skip
            if self.on_commit is not None:
                self.on_commit()
        return result

    async def _keep_statistics(self, changed: int) -> None:
        """ANALYZE once the rows changed since the last one reach the table's size then (a
        first load, a fleet joining): the placement plans are then rebuilt for the new size
        (see Store.maintain). No more often: with a tenth as the step, a fleet-wide restart of
        640,000 VFs analyzed ~80 times per replica, each ANALYZE taking seconds and waiting for
        the other replica's (sampled: a quarter of the schedulers' database time). Between,
        the table's autovacuum analyzes (its scale factor is 0.05)."""
        self._changed_since_analyze += changed
        if self._changed_since_analyze < max(ANALYZE_MIN_ROWS, self._rows_at_analyze):
            return
        if time.monotonic() - self._analyzed_at < max(
            ANALYZE_MIN_INTERVAL_S, 10 * self._analyze_took
        ):
            return
        self._rows_at_analyze += self._changed_since_analyze
        self._changed_since_analyze = 0
        started = time.monotonic()
        await self.store.maintain("vfs", "hosts")
        self._analyzed_at = time.monotonic()
        self._analyze_took = self._analyzed_at - started

    async def _batch(self, items: list[tuple[StateMsg, Delivery]]) -> None:
        await self.apply([msg for msg, _ in items])

    async def _one(self, msg: StateMsg, delivery: Delivery) -> None:
        await self.apply([msg])
