"""A device row: built from what hostd reported of a VF, completed from its PF and its host.

Pure functions, no state: :mod:`model` decides *when* a VF's row changes, this module *what*
the row then holds.
"""

from __future__ import annotations

import msgspec

from sriov.common import schemas as m
from sriov.common.schemas._inventory import HostStatus


def new_device(host_id: str, pci_address: str, pf_pci_address: str = "") -> m.Device:
    return m.Device(
        id=m.device_id(host_id, pci_address),
        host_id=host_id,
        pci_address=pci_address,
        addr=m.short_addr(pci_address),
        pf_pci_address=pf_pci_address,
    )


def vf_device(host_id: str, vf: m.VF, base: m.Device | None) -> m.Device:
    """The device row for a VF hostd reported; guest and PF-derived fields carried over, and
    the read-back configuration too when this hostd does not report one."""
    vendor_device = f"{vf.vendor_id}:{vf.device_id}" if vf.vendor_id and vf.device_id else ""
    dev = base or new_device(host_id, vf.pci_address, vf.pf_pci_address)
    return msgspec.structs.replace(
        dev,
        dev_type="NIC",
        model=vf.model,
        vendor_device_id=vendor_device,
        pf_pci_address=vf.pf_pci_address,
        vf_index=vf.vf_index,
        numa_node=vf.numa_node,
        iommu_group=vf.iommu_group,
        driver=vf.driver,
        ifname=vf.ifname,
        mac=vf.mac,
        present=True,
        actual=vf.actual if vf.actual is not None else dev.actual,
    )


def applied_device(dev: m.Device, ev: m.VfApplied) -> m.Device:
    """The row after hostd read a VF back (``VfApplied``): its configuration, and the driver,
    netdev (with its MAC) and IOMMU group that go with it. Without a netdev there is no MAC;
    a netdev whose MAC the outcome lacks (an older hostd) keeps the one known for it."""
    if ev.actual is None:
        return dev
    known = dev.mac if ev.ifname == dev.ifname else None
    mac = None if ev.ifname is None else ev.mac or known
    return msgspec.structs.replace(
        dev,
        actual=ev.actual,
        driver=ev.actual.driver if ev.actual.driver is not None else dev.driver,
        ifname=ev.ifname,
        mac=mac,
        iommu_group=ev.iommu_group if ev.iommu_group is not None else dev.iommu_group,
    )


def derive(dev: m.Device, pf: m.PF | None, host_status: HostStatus) -> m.Device:
    """Fields a VF takes from its PF (link, wire, offload, capabilities) and from its host."""
    if pf is None:
        if dev.link_state == "unknown" and dev.host_status == host_status:
            return dev
        return msgspec.structs.replace(dev, link_state="unknown", host_status=host_status)
    if (
        dev.link_state == pf.link_state
        and dev.host_status == host_status
        and dev.pf_ifname == pf.ifname
        and dev.wire == pf.wire
        and dev.network == pf.network
        and dev.offload == pf.offload
        and dev.capabilities == pf.capabilities
    ):
        return dev
    return msgspec.structs.replace(
        dev,
        pf_ifname=pf.ifname,
        wire=pf.wire,
        network=pf.network,
        offload=pf.offload,
        link_state=pf.link_state,
        host_status=host_status,
        capabilities=pf.capabilities,
    )
