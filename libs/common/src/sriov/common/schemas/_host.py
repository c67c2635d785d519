"""Events hostd publishes about its host: snapshot, PF/VF diffs, links, heartbeats, doctor."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from sriov.common.schemas._base import Message, Model, utcnow
from sriov.common.schemas._limits import NumVfs, PciAddress, Revision, Timestamp
from sriov.common.schemas._vfconfig import PfCapabilities, VfConfig

LinkState = Literal["up", "down", "unknown"]
LinkType = Literal["ethernet", "infiniband", "unknown"]
Severity = Literal["ok", "info", "warning", "error"]
AppliedOutcome = Literal["ready", "clean", "failed", "quarantined", "repaired"]


class DeviceError(Model, kw_only=True):
    """A device hostd could not fully read; the rest of the host is still reported."""

    pci_address: str
    """PCI address of the device that failed, as found in sysfs."""
    path: str
    """The sysfs path that was missing, dangling or unparsable."""
    message: str
    """What went wrong, for a person."""
    ifname: str | None = None
    """The configured netdev name, when the device is known by it (e.g. a NIC not found)."""


class PF(Model, kw_only=True):
    """A physical function configured on the host (in ``sriov_nics`` or ``ovs_offload_nics``)."""

    pci_address: str
    """Full PCI address, e.g. ``0000:0a:00.0``."""
    ifname: str | None = None
    """Kernel netdev name (``eth1``), if the PF has one."""
    vendor_id: str = ""
    """PCI vendor id, 4 hex digits (``15b3``)."""
    device_id: str = ""
    """PCI device id, 4 hex digits (``1017``)."""
    model: str = ""
    """Model name from pci.ids (``MT27800 Family [ConnectX-5]``)."""
    driver: str | None = None
    """Bound kernel driver (``mlx5_core``), ``None`` when unbound."""
    numa_node: int = -1
    """NUMA node from sysfs; -1 when the platform does not say."""
    link_type: LinkType = "unknown"
    total_vfs: int = 0
    """``sriov_totalvfs``: the most VFs the firmware allows."""
    num_vfs: int = 0
    """``sriov_numvfs``: VFs enabled now."""
    bond: str | None = None
    """Bond master this PF is enslaved to, if any."""
    bond_mode: str | None = None
    """Bonding mode of that bond (``active-backup``, ``balance-xor``, ``802.3ad``)."""
    management: bool = False
    """Carries the default route or the management address: never reconfigured."""
    network: str | None = None
    """The ``networks`` entry's third field (IP address or wire) this PF serves."""
    bridge: str | None = None
    wire: str | None = None
    """The layer-2 network (wire) VFs of this PF reach."""
    sriov: bool = False
    """Listed in ``sriov_nics``."""
    offload: bool = False
    """Listed (directly or through a bond) in ``ovs_offload_nics``."""
    link_state: LinkState = "unknown"
    mac: str | None = None
    capabilities: PfCapabilities | None = None
    """What the PF's driver can apply to its VFs; ``None`` from a hostd that does not say."""


class VF(Model, kw_only=True):
    """A virtual function of a configured PF."""

    pci_address: str
    """Full PCI address, e.g. ``0000:0a:01.1``."""
    pf_pci_address: str
    """PCI address of the parent PF (``physfn``)."""
    vf_index: int
    """N of the PF's ``virtfnN`` link."""
    vendor_id: str = ""
    device_id: str = ""
    model: str = ""
    """Model as the guide's table shows it: ``ConnectX-5 Virtual Function``."""
    driver: str | None = None
    """``mlx5_core``/``igbvf``/... or ``vfio-pci`` when bound for passthrough."""
    ifname: str | None = None
    """Netdev name; ``None`` when bound to vfio-pci."""
    mac: str | None = None
    numa_node: int = -1
    iommu_group: int | None = None
    link_state: LinkState = "unknown"
    actual: VfConfig | None = None
    """The VF's configuration as read back from the kernel; ``None`` when not read."""


class HostEvent(Message, kw_only=True):
    """Fields every hostd event carries, so consumers drop stale or reordered ones."""

    host_id: str
    """Stable host id (``host_id`` in host.conf)."""
    generation: int
    """Bumped on each hostd start; events of an older generation are stale."""
    seq: int
    """Strictly increasing within a generation."""
    ts: Timestamp = msgspec.field(default_factory=utcnow)


class HostSnapshot(HostEvent, kw_only=True, tag="host.snapshot.v1"):
    """Everything hostd knows about its host; replaces all earlier state of that host."""

    hostname: str = ""
    pfs: list[PF] = msgspec.field(default_factory=list)
    vfs: list[VF] = msgspec.field(default_factory=list)
    errors: list[DeviceError] = msgspec.field(default_factory=list)
    """Devices that could not be read fully (the others are still listed)."""


class VfDiscovered(HostEvent, kw_only=True, tag="host.vf.discovered.v1"):
    vf: VF


class VfChanged(HostEvent, kw_only=True, tag="host.vf.changed.v1"):
    vf: VF


class VfRemoved(HostEvent, kw_only=True, tag="host.vf.removed.v1"):
    pci_address: str
    pf_pci_address: str = ""


class PfChanged(HostEvent, kw_only=True, tag="host.pf.changed.v1"):
    pf: PF


class LinkChanged(HostEvent, kw_only=True, tag="host.link.v1"):
    """A PF or VF netdev's carrier/operstate changed (after flap coalescing)."""

    ifname: str
    state: LinkState
    pci_address: str | None = None
    """PCI address behind the netdev, when it is a configured PF or one of its VFs."""
    role: Literal["pf", "vf", "other"] = "other"
    operstate: str = ""
    """Kernel operstate (``UP``, ``DOWN``, ``LOWERLAYERDOWN``...)."""
    carrier: bool | None = None
    flaps: int = 0
    """Transitions coalesced into this event."""


class Heartbeat(HostEvent, kw_only=True, tag="host.heartbeat.v1"):
    interval_s: float
    """Seconds until the next heartbeat; consumers mark the host offline after a few misses."""
    vf_count: int = 0
    snapshot_seq: int = 0
    """Seq of the last snapshot; a consumer that has not seen it asks for a rescan."""


class Finding(Model, kw_only=True):
    """One doctor check result."""

    check: str
    """Stable check id (``iommu.cmdline``, ``sriov.totalvfs``...)."""
    severity: Severity
    message: str
    device: str | None = None
    """PCI address or netdev the finding is about."""
    evidence: str = ""
    """What was seen (a file's content, a kernel log line)."""
    fix: str = ""
    """What to do about it, as the guide says."""


class Diagnostics(HostEvent, kw_only=True, tag="host.diagnostics.v1"):
    findings: list[Finding] = msgspec.field(default_factory=list)


class VfApplied(HostEvent, kw_only=True, tag="host.vf.applied.v1"):
    """hostd's outcome for one revision of a VF's desired state, or a drift it repaired.

    ``ready``: the VF reads back as desired for a guest; ``clean``: it reads back as the clean
    baseline and may be offered again; ``failed``: the host cannot apply what was asked
    (``error`` says why; nothing was left half-configured for the guest); ``quarantined``:
    a restore to clean failed or did not read back clean, so the VF must never be offered
    until an operator resets it; ``repaired``: a change made behind hostd's back (``drift``
    names the settings) was put back to the desired state.
    """

    pci_address: PciAddress
    revision: Revision
    outcome: AppliedOutcome
    actual: VfConfig | None = None
    """What the kernel reports for the VF after the attempt."""
    error: str | None = None
    drift: list[str] = msgspec.field(default_factory=list)
    iommu_group: int | None = None
    ifname: str | None = None
    """The VF's netdev when bound to its netdev driver; None on vfio-pci."""
    mac: str | None = None
    """That netdev's MAC address as the host reads it after the attempt (None without a
    netdev, or when it could not be read)."""


HostEventT = (
    HostSnapshot
    | VfDiscovered
    | VfChanged
    | VfRemoved
    | PfChanged
    | LinkChanged
    | Heartbeat
    | Diagnostics
    | VfApplied
)


# --- host commands (request/reply to one hostd) -------------------------------------------
class RescanRequest(Message, kw_only=True, tag="hostcmd.rescan.v1"):
    """Rediscover and publish a fresh snapshot."""


class SetNumVfsRequest(Message, kw_only=True, tag="hostcmd.set-numvfs.v1"):
    pf: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    """PF netdev name or PCI address."""
    num_vfs: NumVfs
    force: bool = False
    """Change the count even though guests hold VFs of this PF (their VFs are destroyed; the
    scheduler ends those reservations with ``lost`` events). Without it a held PF is refused."""


class DoctorRequest(Message, kw_only=True, tag="hostcmd.doctor.v1"):
    """Run every doctor check now; the reply is a :class:`Diagnostics`."""


class CommandAck(Message, kw_only=True, tag="hostcmd.ack.v1"):
    ok: bool = True
    message: str = ""
    snapshot_seq: int = 0
