"""Inventory's device and host state (last value per subject) and its queries."""

from __future__ import annotations

import hashlib
import uuid
from typing import Literal

import msgspec

from sriov.common.schemas._base import Message, Model, utcnow
from sriov.common.schemas._host import LinkState
from sriov.common.schemas._lifecycle import VfLifecycleState
from sriov.common.schemas._limits import DeviceId, Offset, PageLimit, PciAddress, Timestamp, Token
from sriov.common.schemas._vfconfig import PfCapabilities, VfConfig

#: Namespace for device ids: uuid5(ns, "<host_id>/<pci_address>") is the same on every
#: replica and across restarts, so ids are stable without coordination.
DEVICE_ID_NAMESPACE = uuid.UUID("6f1c3c1e-5a0e-4c47-9a6b-4a3f1f7e2b10")


_NAMESPACE_BYTES = DEVICE_ID_NAMESPACE.bytes


def device_id(host_id: str, pci_address: str) -> str:
    """``str(uuid.uuid5(DEVICE_ID_NAMESPACE, f"{host_id}/{pci_address}"))``, computed without
    the ``UUID`` object (a fleet-wide snapshot storm names 640,000 VFs: 15 -> 2 µs each)."""
    raw = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{host_id}/{pci_address}".encode()).digest())
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def short_addr(pci_address: str) -> str:
    """``0000:0a:01.1`` -> ``0a:01.1``, as the guide's Addr column shows it."""
    return pci_address[5:] if len(pci_address) == 12 and pci_address[4] == ":" else pci_address


HostStatus = Literal["online", "offline", "unknown"]


class Device(Model, kw_only=True):
    """One row of the fleet's device table (``climc isolated-device-list``)."""

    id: str
    """Stable device id (uuid5 of host id and PCI address)."""
    host_id: str
    pci_address: str
    addr: str
    """Short PCI address as the guide shows it (``0a:01.1``)."""
    dev_type: str = "NIC"
    model: str = ""
    vendor_device_id: str = ""
    """``vendor:device`` (``15b3:1018``)."""
    pf_pci_address: str = ""
    pf_ifname: str | None = None
    vf_index: int = 0
    numa_node: int = -1
    iommu_group: int | None = None
    driver: str | None = None
    ifname: str | None = None
    mac: str | None = None
    wire: str | None = None
    network: str | None = None
    link_state: LinkState = "unknown"
    """Link state of the VF's PF (a VF is only schedulable when its PF is up)."""
    host_status: HostStatus = "unknown"
    present: bool = True
    """False once hostd reported the VF gone; kept while a guest still holds it."""
    incarnation: int = 0
    """Counts the times hostd reported the VF gone (a VF count change, a driver reload): the
    VF that came back is another one, so a reservation made before the count moved is lost,
    even where its absence and return reach a reader as one state."""
    guest_id: str | None = None
    """Guest holding the VF, from the scheduler's reservation events."""
    offload: bool = False
    updated_at: Timestamp = msgspec.field(default_factory=utcnow)
    capabilities: PfCapabilities | None = None
    """What the VF's PF can apply (from hostd); None from a hostd without the VF lifecycle,
    whose VFs take no part in it (offered at once after release, never prepared)."""
    lifecycle: VfLifecycleState | None = None
    """Where the VF is in its lifecycle, from hostd's last outcome and the placement events
    (``quarantined`` VFs are never offered until an operator resets them)."""
    actual: VfConfig | None = None
    """The configuration hostd last read back from the kernel."""


class DeviceState(Message, kw_only=True, tag="device.state.v1"):
    """Current state of one VF on ``sriov.v1.device.<host>.<pci>.state.updated``.

    The stream keeps only the last message per subject, so a newcomer replays current state.
    ``revision`` increases with every change of the device; consumers ignore lower ones.
    """

    device: Device
    revision: int
    removed: bool = False
    """Tombstone: the VF no longer exists and nobody holds it."""


class HostInfo(Model, kw_only=True):
    host_id: str
    hostname: str = ""
    status: HostStatus = "unknown"
    last_seen: Timestamp | None = None
    generation: int = 0
    pf_count: int = 0
    vf_count: int = 0
    vf_free: int = 0
    errors: int = 0
    """Devices hostd could not read in its last snapshot."""
    problems: int = 0
    """Doctor findings of severity warning or error in the host's last diagnostics."""


class HostState(Message, kw_only=True, tag="fleet.host.state.v1"):
    """Current state of one host on ``sriov.v1.fleet.<host>.status.updated`` (last value)."""

    host: HostInfo
    revision: int


# --- queries ---------------------------------------------------------------------------------
class DeviceListRequest(Message, kw_only=True, tag="inventory.devices.list.v1"):
    host_id: Token | None = None
    model: str | None = None
    dev_type: str | None = None
    vendor_device_id: str | None = None
    guest_id: Token | None = None
    state: Literal["any", "free", "attached"] = "any"
    lifecycle: VfLifecycleState | None = None
    """Only VFs in this lifecycle state (``quarantined``: the ones an operator must reset)."""
    limit: PageLimit = 15
    """Rows per page (1-1000), as climc's ``Limit``."""
    offset: Offset = 0


class DeviceListReply(Message, kw_only=True, tag="inventory.devices.page.v1"):
    devices: list[Device]
    total: int
    limit: int
    offset: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.limit)) if self.limit else 1

    @property
    def page(self) -> int:
        return self.offset // self.limit + 1 if self.limit else 1


class DeviceGetRequest(Message, kw_only=True, tag="inventory.devices.get.v1"):
    id: DeviceId | None = None
    """Device id; or give ``host_id`` and ``pci_address``."""
    host_id: Token | None = None
    pci_address: PciAddress | None = None


class DeviceGetReply(Message, kw_only=True, tag="inventory.device.v1"):
    device: Device


class HostListRequest(Message, kw_only=True, tag="inventory.hosts.list.v1"):
    status: HostStatus | None = None
    limit: PageLimit = 100
    offset: Offset = 0


class HostListReply(Message, kw_only=True, tag="inventory.hosts.page.v1"):
    hosts: list[HostInfo]
    total: int
    limit: int
    offset: int


class HostGetRequest(Message, kw_only=True, tag="inventory.hosts.get.v1"):
    host_id: Token


class HostGetReply(Message, kw_only=True, tag="inventory.host.v1"):
    host: HostInfo
