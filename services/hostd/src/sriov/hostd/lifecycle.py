"""The VF lifecycle on the host: the scheduler's desired state in, the VF prepared or restored
and read back, the outcome out, and drift put back.

The desired state of this host's VFs is one subject per VF in a last-value stream; hostd
reads it with a durable only its own identity may create (``hostd-desired-<host_id>``) that
starts at the last value of every subject, so a restarted hostd replays exactly the current
desired state and converges (the configurator's apply is idempotent). Each VF's revisions are
applied in order, one VF at a time per PF (a PF driver serialises VF-table changes anyway);
an older revision than the one seen is ignored. The outcome (``VfApplied``) is published
before the message is acknowledged; a NATS outage delays it (the bus hands the desired state
back until it is published: it is keyed by revision, so a duplicate is harmless) but never
turns a prepared VF into a failed one. A restore that fails or does not read back clean
quarantines the VF until an operator's reset; a preparation that fails is restored, so
nothing is left half-configured for the guest; a drift repair that fails on a VF the guest
already holds is reported and leaves the VF as it is (never cleaned under a running guest).

Drift: after each PF link notification (a real PF announces VF-table changes so), each VF
netdev notification and each resync, every VF whose current revision was applied is
compared with what is desired; a difference is re-applied and reported (``repaired`` with
the settings, and a metric).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping

from sriov.common import runtime, subjects
from sriov.common import schemas as m
from sriov.common.bus import Bus, ConsumerSpec, Delivery
from sriov.common.errors import BusError, DeviceBusy, SriovError
from sriov.hostd.discovery import Discovery
from sriov.hostd.metrics import Metrics
from sriov.hostd.publisher import Publisher
from sriov.hostd.vfconfig import VfConfigurator, plan, resolve
from sriov.hostd.vftables import VfTables

log = logging.getLogger(__name__)
DESIRED = m.codec(m.VfDesired)
RETRY_S = 1.0
APPLIED = ("ready", "clean")
"""Outcomes after which the VF is kept in its desired state (drift is repaired)."""


def consumer_name(host_id: str) -> str:
    """The durable only this host's NATS identity may create (its permissions name it)."""
    return f"hostd-desired-{host_id}"


def desired_consumer(host_id: str) -> ConsumerSpec:
    """This host's desired state: its own durable, only its own subjects, replayed from the
    current value of each at every start (the permissions allow exactly this consumer)."""
    return ConsumerSpec(
        stream=subjects.STREAM_DESIRED,
        durable=consumer_name(host_id),
        filter_subjects=[subjects.desired_of_host(host_id)],
        replay_last=True,
        max_deliver=50,
        ack_wait_s=10,  # a VF change slower than this is kept in progress
        concurrency=16,
        backoff_s=(0.5, 1, 2, 5),
    )


class VfLifecycle:
    def __init__(
        self,
        bus: Bus,
        publisher: Publisher,
        host_id: str,
        cfg: VfConfigurator,
        *,
        watched: bool,
        stop: asyncio.Event,
    ) -> None:
        self.bus = bus
        self.publisher = publisher
        self.host_id = host_id
        self.cfg = cfg
        self.tables = VfTables(cfg, cached=watched)
        self.metrics = Metrics()
        self.desired: dict[str, m.VfDesired] = {}
        """VF PCI address -> the newest desired state seen."""
        self.outcomes: dict[str, tuple[int, str]] = {}
        """VF PCI address -> (revision, outcome) last published."""
        self.quarantined: dict[str, str] = {}
        """VF PCI address -> the evidence: why its restore failed."""
        self.repaired = 0
        self.ignored = 0
        self._locks: dict[str, asyncio.Lock] = {}
        self.changing = 0
        """VF changes (and VF count changes) running or waiting for their PF."""
        self.idle = asyncio.Event()
        """Set while no VF is being changed (the agent's rescans wait for it, briefly)."""
        self.idle.set()
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._stop = stop

    # --- where a VF is ------------------------------------------------------------------------
    def locate(self, pci: str) -> tuple[str, int] | None:
        """(PF address, VF index) of VF ``pci`` as sysfs has it now; None if there is none."""
        try:
            dev = self.cfg.sysfs.pci_device(pci)
            pf = os.path.basename(os.readlink(os.path.join(dev, "physfn")))
        except OSError:
            return None
        index = self.vfs_of(pf).get(pci)
        return None if index is None else (pf, index)

    def vfs_of(self, pf: str) -> dict[str, int]:
        """VF address -> index, from the PF's ``virtfnN`` links."""
        sysfs = self.cfg.sysfs
        out: dict[str, int] = {}
        try:
            for name in sysfs.listdir(sysfs.pci_device(pf)):
                if name.startswith("virtfn") and name[6:].isdigit():
                    link = os.readlink(os.path.join(sysfs.pci_device(pf), name))
                    out[os.path.basename(link)] = int(name[6:])
        except (OSError, SriovError):
            pass  # VFs being removed: what was listed so far
        return out

    def _lock(self, pf: str) -> asyncio.Lock:
        return self._locks.setdefault(pf, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def holding(self, pf: str) -> AsyncIterator[None]:
        """The PF's lock (one VF change at a time per PF), counted in :attr:`idle`. A VF count
        change holds it too, so no VF is restored while the kernel destroys it."""
        self.changing += 1
        self.idle.clear()
        try:
            async with self._lock(pf):
                yield
        finally:
            self.changing -= 1
            if not self.changing:
                self.idle.set()

    def held(self, pf: str, found: Discovery) -> list[tuple[str, str]]:
        """(guest, VF address) for each VF of ``pf`` a guest holds (desired ``assigned``)."""
        vfs = {v.pci_address for v in found.vfs if v.pf_pci_address == pf}
        return sorted(
            (d.guest_id or "?", pci)
            for pci, d in self.desired.items()
            if pci in vfs and d.state == "assigned"
        )

    def refuse_if_held(self, found: Discovery, key: str, force: bool) -> None:
        """A VF count change destroys every VF of the PF: refused while guests hold any,
        naming them, unless forced."""
        pf = found.pf(key)
        held = self.held(pf.pci_address, found) if pf is not None else []
        if held and not force:
            guests = ", ".join(f"{g} ({pci})" for g, pci in held)
            raise DeviceBusy(
                f"{key}: guests hold VFs of this PF: {guests}; changing the VF count destroys "
                "them. Release them first (or sriovctl host-drain), or force it (their "
                "reservations end as lost)",
                field="pf",
                guests=sorted({g for g, _ in held}),
            )

    def destroyed(self, vfs: list[str]) -> dict[str, tuple[int, str]]:
        """VFs the kernel destroys and recreates (a VF count change): what was applied to
        them for a guest is gone, so nothing is repaired towards it; the scheduler learns
        from ``vf.removed`` and its next desired state applies. A clean state is left as it
        is: one not reported yet is still owed (its release waits for it) and is applied to
        the recreated VF. Returns the outcomes it replaced (to put back if the change did not
        happen). Call it holding the PF (:meth:`holding`)."""
        gone = [pci for pci in vfs if pci in self.desired and self.desired[pci].state != "clean"]
        replaced = {pci: self.outcomes[pci] for pci in gone if pci in self.outcomes}
        for pci in gone:
            self.outcomes[pci] = (self.desired[pci].revision, "destroyed")
        return replaced

    # --- desired state in -------------------------------------------------------------------
    async def consume(self) -> None:
        """Follow this host's desired state until stopped (retrying while the stream or the
        server is not there)."""
        spec = desired_consumer(self.host_id)
        while not self._stop.is_set():
            try:
                await self.bus.consume(spec, DESIRED, self.on_desired, stop=self._stop)
            except (BusError, OSError) as exc:
                log.warning("desired state of %s not readable yet: %s", self.host_id, exc)
            except Exception as exc:  # a NATS error outside the bus's own types
                log.warning("desired-state consumer stopped (%s); restarting", exc)
            if await runtime.pause(self._stop, RETRY_S):
                return

    async def on_desired(self, desired: m.VfDesired, delivery: Delivery) -> None:
        """One desired state; returns after its outcome is published (then it is acked)."""
        if desired.host_id != self.host_id:  # the filter prevents it; never act on another's
            log.error("ignoring desired state of host %s on %s", desired.host_id, delivery.subject)
            return
        await self.handle(desired)

    async def handle(self, desired: m.VfDesired) -> None:
        pci = desired.pci_address
        seen = self.desired.get(pci)
        if seen is not None and desired.revision < seen.revision:
            self.ignored += 1
            log.info("%s: revision %d is older than %d: ignored", pci, desired.revision,
                     seen.revision)  # fmt: skip
            return
        self.desired[pci] = desired
        where = self.locate(pci)
        if where is None:
            await self._missing(desired)
            return
        async with self.holding(where[0]):
            if self.desired[pci].revision != desired.revision:
                return  # superseded while waiting for the PF
            if self.outcomes.get(pci, (-1, ""))[0] == desired.revision:
                return  # already reported (a redelivery, or a drift check applied it first)
            if self.locate(pci) != where:  # a VF count change destroyed it while we waited
                await self._missing(desired)
                return
            await self._apply(desired, *where)

    async def _missing(self, desired: m.VfDesired) -> None:
        """Desired state for a VF that does not exist (now): a clean state is applied if it
        reappears (:meth:`after_scan`); a guest's fails."""
        if desired.state == "assigned":
            error = f"VF {desired.pci_address} does not exist"
            await self._report(desired, "failed", None, error=error)

    async def _apply(self, d: m.VfDesired, pf: str, vf: int) -> None:
        pci = d.pci_address
        if pci in self.quarantined and not (d.state == "clean" and d.reset):
            error = f"VF is quarantined until an operator resets it: {self.quarantined[pci]}"
            outcome = "failed" if d.state == "assigned" else "quarantined"
            await self._report(d, outcome, await self._read(pf, vf), error=error)
            return
        try:
            if d.state == "assigned":
                actual = await self.cfg.apply(pf, vf, d.config)
            else:
                actual = await self.cfg.restore(pf, vf)
        except SriovError as exc:  # the VF's own failure: only the driver's, never the bus's
            await self._failed(d, pf, vf, exc)
            return
        finally:
            self.tables.stale(pf)
        if d.state == "assigned":
            # A publish that fails raises (BusError): the VF stays prepared and the outcome
            # is owed; the bus hands the desired state back until it is published.
            await self._report(d, "ready", actual)
            return
        self.quarantined.pop(pci, None)
        await self._report(d, "clean", actual)

    async def _failed(
        self, d: m.VfDesired, pf: str, vf: int, exc: SriovError, *, reapply: bool = False
    ) -> None:
        error = str(exc)
        if d.state == "assigned" and reapply:
            # A drift repair of a VF the guest already has: the guest keeps it (the scheduler
            # records it degraded), so what could be put back stays; cleaning it would strip
            # the guest's VLAN and MAC under a running VM.
            error = f"re-applying the guest's settings failed; the VF keeps them as read: {error}"
            await self._report(d, "failed", await self._read(pf, vf), error=error)
            return
        if d.state == "assigned":
            try:  # a preparation that failed: nothing is left half-configured for the guest
                await self.cfg.restore(pf, vf)
            except SriovError as rexc:
                error += f"; restoring the clean state failed too: {rexc}"
            await self._report(d, "failed", await self._read(pf, vf), error=error)
            return
        self.quarantined[d.pci_address] = error
        log.error("%s quarantined: %s", d.pci_address, error)
        await self._report(d, "quarantined", await self._read(pf, vf), error=error)

    async def _read(self, pf: str, vf: int) -> m.VfConfig | None:
        try:
            return await self.cfg.read_vf(pf, vf)
        except SriovError:
            return None

    async def _report(
        self,
        d: m.VfDesired,
        outcome: str,
        actual: m.VfConfig | None,
        *,
        error: str | None = None,
        drift: list[str] | None = None,
    ) -> None:
        """Publish the outcome; raise :class:`BusError` (an :class:`Unavailable`) when it could not
        be: the consumer then hands the desired state back, the outcome is never lost."""
        group, ifname = self._identity(d.pci_address)
        mac = await self._netdev_mac(d.pci_address) if ifname else None
        sent = await self.publisher.publish(
            subjects.host_vf(self.host_id, "applied"),
            m.VfApplied,
            pci_address=d.pci_address,
            revision=d.revision,
            outcome=outcome,
            actual=actual,
            error=error,
            drift=drift or [],
            iommu_group=group,
            ifname=ifname,
            mac=mac,
        )
        if sent is None:
            raise BusError(f"the outcome {outcome} of {d.pci_address} was not published")
        self.metrics.applied.add(1, {"outcome": outcome})
        if outcome != "repaired":
            self.outcomes[d.pci_address] = (d.revision, outcome)

    def _identity(self, pci: str) -> tuple[int | None, str | None]:
        """What a VM manager needs besides the config: IOMMU group, the VF's netdev."""
        sysfs = self.cfg.sysfs
        dev = sysfs.pci_device(pci)
        try:
            group = sysfs.link_name(os.path.join(os.path.realpath(dev), "iommu_group"))
            ifnames = sysfs.listdir(os.path.join(dev, "net"))
        except SriovError:
            return None, None
        return (int(group) if group and group.isdigit() else None), (
            ifnames[0] if ifnames else None
        )

    async def _netdev_mac(self, pci: str) -> str | None:
        """The netdev's MAC as the kernel has it now (inventory shows it from the outcome,
        before the next discovery)."""
        try:
            return await self.cfg.netdev_mac(pci)
        except SriovError:
            return None

    # --- drift ------------------------------------------------------------------------------
    def notified(self, pf: str | None, *, table_changed: bool) -> None:
        """A link notification for ``pf`` or one of its VF netdevs (None: all, a resync)."""
        if table_changed:
            self.tables.stale(pf)
        self._dirty.update(self._locks if pf is None else (pf,))
        self._wake.set()

    def after_scan(self, found: Discovery) -> None:
        """Desired states not applied yet (their VF was missing) are applied once it exists."""
        present = {v.pci_address: v.pf_pci_address for v in found.vfs}
        for pci, d in self.desired.items():
            if pci in present and self.outcomes.get(pci, (-1, ""))[0] != d.revision:
                self._dirty.add(present[pci])
                self._wake.set()

    async def watch(self) -> None:
        """Check the PFs that were notified, until stopped."""
        while not self._stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            results = await asyncio.gather(
                *(self.check(pf) for pf in dirty), return_exceptions=True
            )
            for pf, result in zip(dirty, results, strict=True):
                if isinstance(result, Exception):
                    log.warning("drift check of %s failed: %s", pf, result)

    async def check(self, pf: str) -> list[str]:
        """Compare every VF of ``pf`` that has desired state with what it is now; re-apply
        and report a difference. Returns the VFs repaired."""
        repaired: list[str] = []
        async with self.holding(pf):
            vfs = self.vfs_of(pf)
            mine = {pci: d for pci, d in self.desired.items() if pci in vfs}
            if not mine:
                return repaired
            caps = self.cfg.capabilities(pf)
            table = await self.cfg.read(pf)
            for pci, d in mine.items():
                vf = vfs[pci]
                rev, outcome = self.outcomes.get(pci, (-1, ""))
                if rev != d.revision:
                    await self._apply(d, pf, vf)  # pending: its VF appeared
                elif outcome in APPLIED and vf in table:
                    if await self._repair(d, pf, vf, table[vf], caps):
                        repaired.append(pci)
        return repaired

    async def _repair(
        self, d: m.VfDesired, pf: str, vf: int, actual: m.VfConfig, caps: m.PfCapabilities
    ) -> bool:
        want = d.config if d.state == "assigned" else m.clean_config()
        mac = await self.cfg.netdev_mac(d.pci_address)
        if not plan(want, actual, caps, netdev_mac=mac, restoring=d.state == "clean"):
            return False
        drift = resolve(want, caps).differences(actual)
        if want.mac and mac is not None and mac != want.mac and "mac" not in drift:
            drift.append("mac")  # the VF netdev's own MAC, changed on the VF itself
        log.warning("%s drifted (%s): re-applying revision %d", d.pci_address,
                    ", ".join(drift), d.revision)  # fmt: skip
        try:
            if d.state == "assigned":
                fixed = await self.cfg.apply(pf, vf, d.config)
            else:
                fixed = await self.cfg.restore(pf, vf)
        except SriovError as exc:
            await self._failed(d, pf, vf, exc, reapply=True)
            return False
        finally:
            self.tables.stale(pf)
        for name in drift:
            self.metrics.drift.add(1, {"setting": name})
        self.repaired += 1
        await self._report(d, "repaired", fixed, drift=drift)
        return True

    def evidence(self) -> Mapping[str, str]:
        """Quarantined VFs and why (for the doctor)."""
        return dict(self.quarantined)
