"""One host's slice of the fleet table in memory: apply events to it, then see what changed.

The ingest path loads a host (row, PFs, devices) under a row lock, applies every event of
a batch here, in plain Python, and saves only what differs from what it loaded. Keeping the
rules free of SQL makes them easy to read and to test.

Ordering rules (hostd stamps every event with ``(generation, seq)``):

* an event of an older generation than the newest seen from the host is stale;
* a snapshot not newer than the last applied snapshot is stale;
* a device or PF event not newer than the last snapshot, or than the last event applied to
  that device or PF, is stale. Per-object stamps make the outcome independent of the order
  in which replicas happen to process a host's events;
* hostd's lifecycle outcomes (``VfApplied``) and the scheduler's placement events are ordered
  by the scheduler's sequence instead (:mod:`lifecycle`); the read-back configuration an
  outcome carries follows the VF's stamp like any VF event;
* a removed VF is kept as a tombstone (so a late, older event cannot bring it back) until the
  next snapshot; a removed VF that a guest still holds is kept and flagged ``present=False``.

The module is longer than most (~440 lines) on purpose: every ordering rule of the
inventory is here, in one place a reviewer can read top to bottom.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.errors import InvalidRequest
from sriov.common.schemas._inventory import HostStatus
from sriov.inventory import lifecycle
from sriov.inventory.devices import applied_device, derive, new_device, vf_device

Stamp = tuple[int, int]
Outcome = Literal["applied", "stale"]
NO_STAMP: Stamp = (-1, -1)
HOST_WIDE = (m.Heartbeat, m.Diagnostics)
"""Events that touch only the host row (no need to load its PFs and devices)."""
CountKey = tuple[str, str, str, str, bool]
"""A row of ``inventory.device_counts``: (host_id, model, dev_type, vendor_device_id,
attached)."""


@dataclass
class HostRow:
    """Mirror of ``inventory.hosts``."""

    host_id: str
    hostname: str = ""
    status: HostStatus = "unknown"
    generation: int = -1
    seq: int = -1
    snap_generation: int = -1
    snap_seq: int = -1
    needs_snapshot: bool = True
    last_seen: dt.datetime | None = None
    heartbeat_interval_s: float = 0.0
    errors: int = 0
    problems: int = 0
    diagnostics: str | None = None
    pf_count: int = 0
    vf_count: int = 0
    vf_free: int = 0
    revision: int = 0
    announced: bytes | None = None
    updated_at: dt.datetime | None = None

    @property
    def snap_stamp(self) -> Stamp:
        return (self.snap_generation, self.snap_seq)

    def key(self) -> tuple[object, ...]:
        """Everything stored, to tell whether the row must be written."""
        return tuple(getattr(self, f) for f in HOST_COLUMNS)


HOST_COLUMNS = tuple(f for f in HostRow.__dataclass_fields__ if f != "updated_at")


@dataclass
class PfRec:
    pf: m.PF
    stamp: Stamp


@dataclass
class DeviceRec:
    """Mirror of one ``inventory.devices`` row."""

    device: m.Device
    stamp: Stamp
    revision: int = 0
    removed: bool = False
    guest_seq: int = 0
    vf_link_state: str = "unknown"
    life: lifecycle.Stamps = field(default_factory=lifecycle.Stamps)

    def key(self) -> tuple[object, ...]:
        d = msgspec.structs.replace(self.device, updated_at=_EPOCH)
        return (
            d, self.stamp, self.removed, self.guest_seq, self.vf_link_state, self.life.as_tuple()
        )  # fmt: skip

    def state_key(self) -> tuple[object, ...]:
        """What subscribers see: a change here bumps the revision and is announced."""
        return (msgspec.structs.replace(self.device, updated_at=_EPOCH), self.removed)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass
class Changes:
    """What :meth:`HostView.finalize` found to differ from the loaded state."""

    host_row: bool = False
    announce_host: bool = False
    devices: list[DeviceRec] = field(default_factory=list)
    """Rows to write (new or changed)."""
    announce: list[DeviceRec] = field(default_factory=list)
    """Of those, the ones whose state subscribers see changed (get a new revision)."""
    purge: list[str] = field(default_factory=list)
    """Device ids whose rows (tombstones) are deleted."""
    pfs: list[tuple[str, PfRec]] = field(default_factory=list)
    drop_pfs: list[str] = field(default_factory=list)


class HostView:
    """A host with (optionally) its PFs and devices, as loaded under the host's row lock."""

    def __init__(
        self,
        host: HostRow,
        pfs: dict[str, PfRec] | None = None,
        devices: dict[str, DeviceRec] | None = None,
        *,
        partial: bool = False,
    ) -> None:
        self.host = host
        self.full = pfs is not None and devices is not None
        self.partial = partial
        """Only some of the host's devices are loaded (a placement event touches one or two of
        64): the host's totals and listing counts change by what changed in those, instead of
        being recounted over all of them."""
        self.pfs: dict[str, PfRec] = pfs or {}
        self.devices: dict[str, DeviceRec] = devices or {}
        self._host0 = host.key()
        self._pfs0 = {k: (v.pf, v.stamp) for k, v in self.pfs.items()}
        self._dev0 = {k: v.key() for k, v in self.devices.items()}
        self._state0 = {k: v.state_key() for k, v in self.devices.items()}
        self._orig = {k: (v.device, v.revision, v.removed) for k, v in self.devices.items()}
        self.rescan = False
        """hostd should be asked for a fresh snapshot (after commit)."""

    # --- hostd events ---------------------------------------------------------------------
    def apply(self, ev: m.HostEventT, now: dt.datetime) -> Outcome:
        host = self.host
        if ev.host_id != host.host_id:
            raise InvalidRequest(
                f"event for host {ev.host_id!r} applied to host {host.host_id!r}", field="host_id"
            )
        if ev.generation < host.generation:
            return "stale"
        if (not self.full or self.partial) and not isinstance(ev, HOST_WIDE):
            raise RuntimeError(f"host {host.host_id} loaded without all devices for {type(ev)}")
        stamp = (ev.generation, ev.seq)
        match ev:
            case m.HostSnapshot():
                outcome = self._snapshot(ev, stamp)
            case m.VfDiscovered() | m.VfChanged():
                outcome = self._vf(ev.vf, stamp)
            case m.VfRemoved():
                outcome = self._vf_removed(ev, stamp)
            case m.PfChanged():
                outcome = self._pf(ev.pf, stamp)
            case m.LinkChanged():
                outcome = self._link(ev, stamp)
            case m.VfApplied():
                outcome = self._applied(ev, stamp)
            case m.Heartbeat():
                host.heartbeat_interval_s = max(0.0, float(ev.interval_s))
                outcome = "applied"
            case m.Diagnostics():
                host.diagnostics = m.encode(ev.findings).decode()
                host.problems = sum(f.severity in ("warning", "error") for f in ev.findings)
                outcome = "applied"
            case _:
                return "stale"
        if outcome == "applied":
            self._seen(ev, stamp, now)
        return outcome

    def _seen(self, ev: m.HostEventT, stamp: Stamp, now: dt.datetime) -> None:
        host = self.host
        host.generation, host.seq = max((host.generation, host.seq), stamp)
        ts = ev.ts if ev.ts.tzinfo else ev.ts.replace(tzinfo=dt.UTC)
        seen = min(ts, now)
        if host.last_seen is None or seen > host.last_seen:
            host.last_seen = seen
        if host.needs_snapshot:
            self.rescan = True

    def _snapshot(self, ev: m.HostSnapshot, stamp: Stamp) -> Outcome:
        host = self.host
        if stamp <= host.snap_stamp:
            return "stale"
        _unique([p.pci_address for p in ev.pfs], "pfs", host.host_id)
        _unique([v.pci_address for v in ev.vfs], "vfs", host.host_id)
        for vf in ev.vfs:
            _check_pci(vf.pci_address, host.host_id)
        host.snap_generation, host.snap_seq = stamp
        host.hostname = ev.hostname or host.hostname
        host.errors = len(ev.errors)
        host.needs_snapshot = False
        host.status = "online"
        self.rescan = False
        listed = {p.pci_address: p for p in ev.pfs}
        for pci, pf_rec in list(self.pfs.items()):
            if pci not in listed and pf_rec.stamp < stamp:
                del self.pfs[pci]
        for pci, pf in listed.items():
            old = self.pfs.get(pci)
            if old is None or old.stamp < stamp:
                self.pfs[pci] = old if old is not None and old.pf == pf else PfRec(pf, stamp)
        seen = set()
        for vf in ev.vfs:
            seen.add(vf.pci_address)
            rec = self.devices.get(vf.pci_address)
            if rec is None or rec.stamp < stamp:
                self._put_vf(vf, stamp)
        for pci, rec in list(self.devices.items()):
            if pci in seen or rec.stamp >= stamp:
                continue
            if rec.removed:
                del self.devices[pci]  # tombstone no longer needed: purged at save
            else:
                self._remove(rec, stamp)
        return "applied"

    def _vf(self, vf: m.VF, stamp: Stamp) -> Outcome:
        _check_pci(vf.pci_address, self.host.host_id)
        rec = self.devices.get(vf.pci_address)
        if stamp <= self.host.snap_stamp or (rec is not None and rec.stamp >= stamp):
            return "stale"
        self._put_vf(vf, stamp)
        return "applied"

    def _vf_removed(self, ev: m.VfRemoved, stamp: Stamp) -> Outcome:
        _check_pci(ev.pci_address, self.host.host_id)
        rec = self.devices.get(ev.pci_address)
        if stamp <= self.host.snap_stamp or (rec is not None and rec.stamp >= stamp):
            return "stale"
        if rec is None:  # never seen: remember the removal so an older discovery stays dead
            dev = new_device(self.host.host_id, ev.pci_address, ev.pf_pci_address)
            self.devices[ev.pci_address] = DeviceRec(dev, stamp, removed=True)
            return "applied"
        self._remove(rec, stamp)
        return "applied"

    def _applied(self, ev: m.VfApplied, stamp: Stamp) -> Outcome:
        """hostd's outcome for a revision of the VF's desired state (or a repaired drift)."""
        _check_pci(ev.pci_address, self.host.host_id)
        rec = self.devices.get(ev.pci_address)
        if rec is None:
            return "stale"
        # kept on a tombstone too, as placement events are: a VF count change removes the VF
        # and hostd restores it once recreated, before or after inventory hears it is back
        recorded = rec.life.hostd(ev.outcome, ev.revision)
        newer = not rec.removed and stamp > self.host.snap_stamp and stamp > rec.stamp
        if newer:  # what it read back is newer than anything else we know of the VF
            rec.device, rec.stamp = applied_device(rec.device, ev), stamp
        return "applied" if recorded or newer else "stale"

    def _pf(self, pf: m.PF, stamp: Stamp) -> Outcome:
        rec = self.pfs.get(pf.pci_address)
        if stamp <= self.host.snap_stamp or (rec is not None and rec.stamp >= stamp):
            return "stale"
        self.pfs[pf.pci_address] = PfRec(pf, stamp)
        return "applied"

    def _link(self, ev: m.LinkChanged, stamp: Stamp) -> Outcome:
        if stamp <= self.host.snap_stamp:
            return "stale"
        if ev.role == "pf":
            pci = ev.pci_address or next(
                (k for k, r in self.pfs.items() if r.pf.ifname == ev.ifname), None
            )
            pf_rec = self.pfs.get(pci) if pci else None
            if pf_rec is None or pf_rec.stamp >= stamp:
                return "stale"
            pf_rec.pf = msgspec.structs.replace(pf_rec.pf, link_state=ev.state)
            pf_rec.stamp = stamp
            return "applied"
        if ev.role == "vf":
            pci = ev.pci_address or next(
                (k for k, r in self.devices.items() if r.device.ifname == ev.ifname), None
            )
            rec = self.devices.get(pci) if pci else None
            if rec is None or rec.stamp >= stamp or rec.removed:
                return "stale"
            rec.vf_link_state = ev.state
            rec.stamp = stamp
            return "applied"
        return "applied"  # a netdev we do not track: still proof of life

    def _put_vf(self, vf: m.VF, stamp: Stamp) -> None:
        rec = self.devices.get(vf.pci_address)
        base = rec.device if rec is not None else None
        dev = vf_device(self.host.host_id, vf, base)
        if rec is None:
            self.devices[vf.pci_address] = DeviceRec(dev, stamp, vf_link_state=vf.link_state)
            return
        if dev == rec.device and not rec.removed and rec.vf_link_state == vf.link_state:
            return  # unchanged: the snapshot's stamp already covers it, no write needed
        rec.device, rec.stamp, rec.removed, rec.vf_link_state = dev, stamp, False, vf.link_state

    def _remove(self, rec: DeviceRec, stamp: Stamp) -> None:
        """A VF is gone: a tombstone, or a flag while a guest still holds it. Either way a
        new incarnation: if it comes back before anyone read its absence (in this batch, or
        after a last-value stream kept only its return), the holder still learns it lost it."""
        rec.stamp = stamp
        gone = msgspec.structs.replace(rec.device, incarnation=rec.device.incarnation + 1)
        if rec.device.guest_id is not None:
            rec.device = msgspec.structs.replace(gone, present=False)
        else:
            rec.device, rec.removed = gone, True

    # --- liveness -------------------------------------------------------------------------
    def mark_offline(self) -> None:
        """Missed heartbeats: the host and its devices are unavailable until a new snapshot."""
        self.host.status = "offline"
        self.host.needs_snapshot = True

    # --- placement ------------------------------------------------------------------------
    def device_by_id(self, device_id: str) -> DeviceRec | None:
        for rec in self.devices.values():
            if rec.device.id == device_id:
                return rec
        return None

    def hold(self, rec: DeviceRec, guest_id: str, seq: int, reserved: bool = True) -> Outcome:
        """Reserved/Confirmed: the guest holds the device (in the scheduler's commit order)."""
        if reserved:  # a reservation starts: outcomes for earlier ones no longer count
            rec.life.hold_seq = max(rec.life.hold_seq, seq)
        if seq <= rec.guest_seq or rec.removed:
            return "stale"
        rec.guest_seq = seq
        rec.device = msgspec.structs.replace(rec.device, guest_id=guest_id)
        return "applied"

    def release(self, rec: DeviceRec, seq: int) -> Outcome:
        """Released/Expired/Lost: nobody holds the device after ``seq``.

        Whoever our copy names as holder: the scheduler numbers its events in causal order, so
        the event with the highest ``seq`` describes the device's state. If our copy names
        another guest than the event's, the events in between (that guest's release, the
        event guest's reservation) are still on their way, and will be stale when they come."""
        rec.life.end_seq = max(rec.life.end_seq, seq)
        if seq <= rec.guest_seq or rec.removed:
            return "stale"
        rec.guest_seq = seq
        rec.device = msgspec.structs.replace(rec.device, guest_id=None)
        if not rec.device.present:  # held while gone; now nobody holds it
            rec.removed = True
        return "applied"

    def ready(self, rec: DeviceRec, seq: int) -> Outcome:
        """Placement Ready: every VF of the guest's request reads back as desired."""
        if seq <= rec.life.ready_seq or rec.removed:
            return "stale"
        rec.life.ready_seq = seq
        return "applied"

    # --- result ---------------------------------------------------------------------------
    def finalize(self, now: dt.datetime) -> Changes:
        """Derive PF- and host-dependent fields, counts, and list what must be written."""
        host = self.host
        ch = Changes()
        if self.full:
            for pci, rec in self.devices.items():
                pf = self.pfs.get(rec.device.pf_pci_address)
                rec.device = derive(rec.device, pf.pf if pf else None, host.status)
                state = lifecycle.state(rec.device, rec.life)
                if state != rec.device.lifecycle:
                    rec.device = msgspec.structs.replace(rec.device, lifecycle=state)
                if self._dev0.get(pci) != rec.key():
                    ch.devices.append(rec)
                    if self._state0.get(pci) != rec.state_key():
                        rec.device = msgspec.structs.replace(rec.device, updated_at=now)
                        ch.announce.append(rec)
            for pci in sorted(set(self._dev0) - set(self.devices)):
                dev, revision, removed = self._orig[pci]
                ch.purge.append(dev.id)
                if not removed:  # removed and purged in one go: still announce the removal
                    gone = DeviceRec(dev, NO_STAMP, revision, removed=True)
                    gone.device = msgspec.structs.replace(dev, updated_at=now)
                    ch.announce.append(gone)
            for pci, pf_rec in self.pfs.items():
                if self._pfs0.get(pci) != (pf_rec.pf, pf_rec.stamp):
                    ch.pfs.append((pci, pf_rec))
            ch.drop_pfs = sorted(set(self._pfs0) - set(self.pfs))
            host.pf_count = len(self.pfs)
            after = [(r.device, r.removed) for r in self.devices.values()]
            if self.partial:  # stored totals match the stored rows: move them by the change
                before = [(dev, removed) for dev, _rev, removed in self._orig.values()]
                host.vf_count += _live(after) - _live(before)
                host.vf_free += _free(after) - _free(before)
            else:
                host.vf_count, host.vf_free = _live(after), _free(after)
        announced = m.encode(self.info(with_last_seen=False))
        if announced != host.announced:
            host.announced = announced
            ch.announce_host = True
        ch.host_row = host.key() != self._host0
        return ch

    def counts(self) -> Counter[CountKey]:
        """The listing counts of the loaded devices as they are now."""
        return _counts((r.device, r.removed) for r in self.devices.values())

    def counts_change(self) -> dict[CountKey, int]:
        """How the loaded devices moved the host's listing counts since they were loaded."""
        change = dict(self.counts())
        for key, n in _counts((dev, removed) for dev, _rev, removed in self._orig.values()).items():
            change[key] = change.get(key, 0) - n
        return {k: n for k, n in change.items() if n}

    def info(self, with_last_seen: bool = True) -> m.HostInfo:
        h = self.host
        return m.HostInfo(
            host_id=h.host_id,
            hostname=h.hostname,
            status=h.status,
            last_seen=h.last_seen if with_last_seen else None,
            generation=max(h.generation, 0),
            pf_count=h.pf_count,
            vf_count=h.vf_count,
            vf_free=h.vf_free,
            errors=h.errors,
            problems=h.problems,
        )


def _offerable(d: m.Device) -> bool:
    """Free to place: present, held by nobody, and (with the lifecycle) reported clean."""
    return d.present and d.guest_id is None and d.lifecycle in (None, "free")


def _live(devices: list[tuple[m.Device, bool]]) -> int:
    return sum(not removed for _d, removed in devices)


def _free(devices: list[tuple[m.Device, bool]]) -> int:
    return sum(not removed and _offerable(d) for d, removed in devices)


def _counts(devices: Iterable[tuple[m.Device, bool]]) -> Counter[CountKey]:
    return Counter(
        (d.host_id, d.model, d.dev_type, d.vendor_device_id, d.guest_id is not None)
        for d, removed in devices
        if not removed
    )


# --- checks -----------------------------------------------------------------------------
def _unique(addresses: list[str], what: str, host_id: str) -> None:
    seen: set[str] = set()
    for a in addresses:
        if a in seen:
            raise InvalidRequest(
                f"snapshot of host {host_id} lists {a} twice in {what}", field=f"{what}"
            )
        seen.add(a)


def _check_pci(address: str, host_id: str) -> None:
    """Refuse an address that cannot name a device subject (the state must be publishable)."""
    subjects.pci_token(address)
    if address != address.lower():
        raise InvalidRequest(
            f"host {host_id}: PCI address {address!r} must be lower case", field="pci_address"
        )
