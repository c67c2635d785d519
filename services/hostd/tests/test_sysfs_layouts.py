"""Discovery and the doctor on real sysfs layouts, not only the simulator's.

``sysfs_layouts/`` holds a virtio-net VM copied from a real machine and three layouts built
from the kernel's documentation (``sysfs_layouts/capture.py`` wrote them all): a PCIe NIC
without SR-IOV, a bond over an SR-IOV PF, and a VF bound to vfio-pci.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sriov.common import schemas as m
from sriov.hostd import doctor
from sriov.hostd.discovery import Discovery, discover
from sriov.hostd.doctor.inputs import read_cmdline, read_kernel_log
from sriov.hostd.hostconf import load_host_conf
from sriov.hostd.pciids import PciIds
from sriov.hostd.sysfs import Sysfs

LAYOUTS = Path(__file__).parent / "sysfs_layouts"


@pytest.fixture(scope="module")
def ids() -> PciIds:
    return PciIds()


def look(name: str, ids: PciIds) -> tuple[Discovery, list[m.Finding]]:
    here = LAYOUTS / name
    conf = load_host_conf(here / "host.conf")
    sysfs = Sysfs(here / "sys")
    found = discover(conf, sysfs, ids)
    cmdline = read_cmdline(str(here / "cmdline")) if (here / "cmdline").exists() else ""
    log = read_kernel_log(str(here / "kmsg.log")) if (here / "kmsg.log").exists() else []
    inputs = doctor.DoctorInputs(conf, sysfs, found, cmdline, log, None, lambda _: (0, ""))
    return found, doctor.run(inputs)


def problems(findings: list[m.Finding]) -> list[tuple[str, str]]:
    """Device problems (the host-wide IOMMU and vfio-pci checks are tested on their own)."""
    host_wide = ("iommu.", "vfio.")
    return [
        (f.severity, f.check)
        for f in findings
        if f.severity in ("error", "warning") and not f.check.startswith(host_wide)
    ]


def test_virtio_net_resolves_to_its_pci_function_and_says_once_it_has_no_sr_iov(
    ids: PciIds,
) -> None:
    found, findings = look("virtio-net", ids)
    [pf] = found.pfs
    # the netdev's device is .../0000:00:03.0/virtio2: the PF is the PCI function above it
    assert (pf.pci_address, pf.vendor_id, pf.driver) == ("0000:00:03.0", "1af4", "virtio-pci")
    assert pf.device_id != "0001"  # the virtio device id is not a PCI id
    assert all("virtio2" not in f"{f.evidence} {f.message}" for f in findings)
    sriov = [p for p in problems(findings) if not p[1].startswith("iommu.")]
    assert sriov == [("error", "sriov.capability")]
    cap = next(f for f in findings if f.check == "sriov.capability")
    assert (
        "conventional PCI" in cap.message and cap.fix == "take eth0 out of sriov_nics in host.conf"
    )


def test_virtio_vm_without_an_iommu_gets_no_contradicting_iommu_findings(ids: PciIds) -> None:
    _, findings = look("virtio-net", ids)
    iommu = {f.check: f.severity for f in findings if f.check.startswith("iommu.")}
    # the log holds only the IOMMU core's generic lines: no "ok" beside "no IOMMU is active"
    assert iommu["iommu.sysfs"] == "error" and iommu["iommu.kernel_log"] == "error"
    assert "ok" not in {iommu["iommu.cmdline"], iommu["iommu.kernel_log"], iommu["iommu.sysfs"]}


def test_pci_nic_without_sr_iov(ids: PciIds) -> None:
    found, findings = look("pci-no-sriov", ids)
    assert [(p.ifname, p.pci_address, p.total_vfs) for p in found.pfs] == [
        ("eno1", "0000:00:19.0", 0)
    ]
    assert problems(findings) == [("error", "sriov.capability")]


def test_bond_in_ovs_offload_nics_expands_to_its_member_pf(ids: PciIds) -> None:
    found, _ = look("bond", ids)
    [pf] = found.pfs
    assert (pf.ifname, pf.bond, pf.bond_mode, pf.offload, pf.sriov) == (
        "ens1f0", "bond0", "active-backup", True, False
    )  # fmt: skip
    assert (pf.total_vfs, pf.num_vfs, pf.driver) == (8, 0, "mlx5_core")
    assert found.errors == []


def test_vf_on_vfio_pci_has_no_netdev_and_an_iommu_group(ids: PciIds) -> None:
    found, findings = look("vf-vfio", ids)
    [vf] = found.vfs
    assert (vf.pci_address, vf.pf_pci_address, vf.vf_index) == ("0000:3b:00.2", "0000:3b:00.0", 0)
    assert (vf.driver, vf.ifname, vf.iommu_group) == ("vfio-pci", None, 42)
    assert found.errors == []
    assert next(f for f in findings if f.check == "iommu.sysfs").severity == "ok"


def test_a_netdev_with_no_pci_function_above_it_is_said_once(tmp_path: Path, ids: PciIds) -> None:
    """virtio-mmio (a microVM): the virtio device sits on the platform bus, not under PCI."""
    root = tmp_path / "sys"
    virtio = root / "devices/platform/virtio-mmio.0/virtio0"
    net = virtio / "net/eth0"
    net.mkdir(parents=True)
    (root / "bus/virtio").mkdir(parents=True)
    (virtio / "subsystem").symlink_to("../../../../bus/virtio")
    (net / "device").symlink_to("../../../virtio0")
    (root / "class/net").mkdir(parents=True)
    (root / "class/net/eth0").symlink_to("../../devices/platform/virtio-mmio.0/virtio0/net/eth0")
    conf = tmp_path / "host.conf"
    conf.write_text("host_id: vm1\nsriov_nics: [eth0]\n")
    found = discover(load_host_conf(conf), Sysfs(root), ids)
    assert found.pfs == []
    assert [(e.ifname, e.message) for e in found.errors] == [
        ("eth0", f"eth0 is not a PCI device: its device {virtio} is on the virtio bus, and no "
                 "PCI function is above it"),
    ]  # fmt: skip
