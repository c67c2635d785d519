"""A doctor finding for each fault the guide describes, from injected inputs."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from sriov.common import schemas as m
from sriov.hostd import doctor
from sriov.hostd.discovery import discover
from sriov.hostd.hostconf import parse_host_conf
from sriov.hostd.pciids import PciIds
from sriov.hostd.simulator.spec import CardSpec, HostSpec, PortSpec, guide
from sriov.hostd.sysfs import Sysfs

from .conftest import SimHost, make_host

GOOD_CMDLINE = "BOOT_IMAGE=/vmlinuz ro quiet intel_iommu=on iommu=pt"
GOOD_LOG = ["[    0.012345] DMAR: IOMMU enabled"]


@pytest.fixture(scope="module")
def ids() -> PciIds:
    return PciIds()


def diagnose(
    host: SimHost,
    ids: PciIds,
    *,
    cmdline: str | None = GOOD_CMDLINE,
    log: Sequence[str] | None = tuple(GOOD_LOG),
    probe: doctor.IpProbe | None = None,
    cpu: str | None = None,
    **conf: Any,
) -> list[m.Finding]:
    raw = yaml.safe_load(host.conf_path.read_text())
    hc = parse_host_conf({**raw, **conf}, "host.conf")
    sysfs = Sysfs(host.root)
    found = discover(hc, sysfs, ids)
    return doctor.run(doctor.DoctorInputs(hc, sysfs, found, cmdline, log, cpu, probe))


def only(findings: list[m.Finding], check: str, device: str | None = None) -> m.Finding:
    hits = [f for f in findings if f.check == check and (device is None or f.device == device)]
    assert len(hits) == 1, (check, device, hits)
    return hits[0]


def problems(findings: list[m.Finding]) -> list[tuple[str, str]]:
    return [(f.severity, f.check) for f in findings if f.severity in ("error", "warning")]


def test_guide_host_is_healthy(tmp_path: Path, ids: PciIds) -> None:
    findings = diagnose(make_host(tmp_path, guide()), ids, probe=lambda _: (0, ""))
    assert problems(findings) == []
    cap = only(findings, "sriov.capability", "0000:0a:00.0")
    assert cap.severity == "ok"
    assert cap.evidence == "Capabilities: [180] Single Root I/O Virtualization (SR-IOV)"
    assert only(findings, "sriov.numvfs", "0000:03:00.0").evidence == "sriov_numvfs = 7"
    assert only(findings, "iommu.sysfs").evidence.startswith("/sys/class/iommu: dmar0; ")
    rendered = doctor.render(findings)
    assert "OK        sriov.capability" in rendered
    assert rendered.endswith("0 errors, 0 warnings")


def test_iommu_off_everywhere(tmp_path: Path, ids: PciIds) -> None:
    spec = guide()
    spec.iommu = "off"
    findings = diagnose(make_host(tmp_path, spec), ids, cmdline="ro quiet", log=["booted"])
    cmd = only(findings, "iommu.cmdline")
    assert (cmd.severity, cmd.evidence) == ("error", "ro quiet")
    assert "add intel_iommu=on iommu=pt to /etc/default/grub" in cmd.fix
    assert "grub2-mkconfig -o /boot/grub2/grub.cfg" in cmd.fix
    assert only(findings, "iommu.passthrough").severity == "warning"
    sysfs = only(findings, "iommu.sysfs")
    assert sysfs.severity == "error" and "enable VT-d / AMD-Vi" in sysfs.fix
    log = only(findings, "iommu.kernel_log")
    assert log.severity == "error"
    assert log.evidence == "dmesg | grep -e DMAR -e IOMMU -e AMD-Vi: no output"


def test_amd_iommu_is_on_by_default_but_wants_pt(tmp_path: Path, ids: PciIds) -> None:
    spec = guide()
    spec.iommu = "amd"
    host = make_host(tmp_path, spec)
    findings = diagnose(host, ids, cmdline="ro quiet", log=["AMD-Vi: IOMMU performance counters"])
    assert only(findings, "iommu.cmdline").severity == "ok"
    assert only(findings, "iommu.passthrough").fix.startswith("add iommu=pt to")
    off = diagnose(host, ids, cmdline="ro amd_iommu=off", log=[])
    assert "add amd_iommu=on iommu=pt" in only(off, "iommu.cmdline").fix


def test_iommu_on_cmdline_but_vfs_without_groups(tmp_path: Path, ids: PciIds) -> None:
    host = make_host(tmp_path, guide())
    (host.root / "bus/pci/devices/0000:0a:00.2/iommu_group").unlink()
    finding = only(diagnose(host, ids), "iommu.groups")
    assert (finding.severity, finding.evidence) == ("error", "0000:0a:00.2")


def test_unreadable_inputs_are_not_errors(tmp_path: Path, ids: PciIds) -> None:
    findings = diagnose(make_host(tmp_path, guide()), ids, cmdline=None, log=None)
    assert only(findings, "iommu.cmdline").severity == "warning"
    assert only(findings, "iommu.kernel_log").severity == "info"


@pytest.mark.parametrize("realloc", [False, True])
def test_not_enough_mmio(tmp_path: Path, ids: PciIds, realloc: bool) -> None:
    line = "[ 2.5] pci 0000:0a:00.0: not enough MMIO resources for SR-IOV"
    cmdline = GOOD_CMDLINE + (" pci=realloc" if realloc else "")
    f = only(
        diagnose(make_host(tmp_path, guide()), ids, cmdline=cmdline, log=[*GOOD_LOG, line]),
        "pci.mmio",
    )
    assert (f.severity, f.evidence) == ("error", line)
    if realloc:
        assert f.fix.startswith("pci=realloc is already set: enable 'Above 4G decoding'")
    else:
        assert f.fix.startswith("add pci=realloc to /etc/default/grub GRUB_CMDLINE_LINUX")


def test_enable_hca_timeout(tmp_path: Path, ids: PciIds) -> None:
    line = (
        "mlx5_core 0000:0a:00.2: wait_func:1162:(pid 5): ENABLE_HCA(0x104) timeout. "
        "Will cause a leak"
    )
    f = only(diagnose(make_host(tmp_path, guide()), ids, log=[*GOOD_LOG, line]), "mlx5.enable_hca")
    assert (f.severity, f.evidence) == ("error", line)
    assert f.fix == 'in the BIOS find and enable "ACS", "PCIe ARI Support" and "IOMMU"'


def one_card(model: str, **card: Any) -> HostSpec:
    ports = card.pop("ports", [PortSpec(ifname="p0", num_vfs=0)])
    return HostSpec(
        host_id="h",
        cards=[CardSpec(model=model, slot="0000:0a:00", ports=ports, **card)],
        sriov_nics=["p0"],
    )


def test_totalvfs_zero_mellanox_and_igb(tmp_path: Path, ids: PciIds) -> None:
    mlx = make_host(tmp_path / "mlx", one_card("ConnectX-5", total_vfs=0))
    f = only(diagnose(mlx, ids, num_vfs={"p0": 8}), "sriov.totalvfs")
    assert (f.severity, f.evidence) == ("error", "sriov_totalvfs = 0")
    assert "mlxconfig -d <dev from `mst status -v`> set SRIOV_EN=1 NUM_OF_VFS=8" in f.fix
    igb = make_host(tmp_path / "igb", one_card("I350", total_vfs=0))
    f = only(diagnose(igb, ids), "sriov.totalvfs")
    assert f.fix.startswith("add igb.max_vfs=8 to /etc/default/grub")
    low = make_host(tmp_path / "low", one_card("ConnectX-5", total_vfs=4))
    f = only(diagnose(low, ids, num_vfs={"p0": 16}), "sriov.totalvfs")
    assert f.message == "host.conf wants 16 VFs on p0 but it allows 4"
    assert "NUM_OF_VFS=16" in f.fix


def test_no_sriov_capability(tmp_path: Path, ids: PciIds) -> None:
    host = make_host(tmp_path, one_card("ConnectX-6 Lx", sriov=False))
    findings = diagnose(host, ids)
    cap = only(findings, "sriov.capability")
    assert cap.severity == "error"
    assert "Capabilities: [180]" not in cap.evidence and "[150] Alternative" in cap.evidence
    assert cap.message.startswith("p0 (0000:0a:00.0, ") and "no SR-IOV capability" in cap.message
    assert cap.fix.startswith("take p0 out of sriov_nics in host.conf")
    assert "mlxconfig" in cap.fix and "BIOS" not in cap.fix  # ConnectX: off in firmware
    # one finding, not three: no sriov.totalvfs, no sysfs.device repeating it
    assert problems(findings) == [("error", "sriov.capability")]


def test_a_nic_without_sr_iov_gets_one_finding_without_bios_advice(
    tmp_path: Path, ids: PciIds
) -> None:
    host = make_host(tmp_path, one_card("I350", sriov=False))
    findings = diagnose(host, ids)
    assert problems(findings) == [("error", "sriov.capability")]
    cap = only(findings, "sriov.capability")
    assert cap.fix == "take p0 out of sriov_nics in host.conf"


def test_unreadable_numvfs_is_unknown_not_zero(tmp_path: Path, ids: PciIds) -> None:
    host = make_host(tmp_path, one_card("ConnectX-5", ports=[PortSpec(ifname="p0", num_vfs=2)]))
    numvfs = host.root / "bus/pci/devices/0000:0a:00.0/sriov_numvfs"
    numvfs.write_text("garbage\n")
    findings = diagnose(host, ids)
    f = only(findings, "sriov.numvfs")
    assert f.severity == "warning" and "unknown" in f.message and "no VFs" not in f.message
    assert "garbage" in f.evidence
    assert [c for c in problems(findings) if c[1] == "sysfs.device"] == []  # said once


def test_config_space_only_header_readable(tmp_path: Path, ids: PciIds) -> None:
    host = make_host(tmp_path, guide())
    config = host.root / "bus/pci/devices/0000:0a:00.0/config"
    config.write_bytes(config.read_bytes()[:64])
    f = only(diagnose(host, ids), "sriov.capability", "0000:0a:00.0")
    assert f.severity == "warning" and "run hostd as root" in f.fix


def test_no_vfs_and_unmet_desired_count(tmp_path: Path, ids: PciIds) -> None:
    host = make_host(tmp_path / "a", one_card("I350"))
    f = only(diagnose(host, ids), "sriov.numvfs")
    assert (f.severity, f.evidence) == ("warning", "sriov_numvfs = 0")
    assert "sriovctl host-set-numvfs --pf p0 --num N" in f.fix and "igb.max_vfs=7" in f.fix
    host = make_host(tmp_path / "b", guide())
    f = only(diagnose(host, ids, num_vfs={"eth1": 4}), "sriov.numvfs", "0000:0a:00.0")
    assert f.message.endswith("has 8 VFs, host.conf wants 4")


def test_vfio_missing_and_unbound_vfs(tmp_path: Path, ids: PciIds) -> None:
    spec = guide()
    spec.vfio_pci = False
    spec.cards[1].ports = [PortSpec(ifname="eth2", num_vfs=7, unbound=[0, 1])]
    findings = diagnose(make_host(tmp_path, spec), ids)
    vfio = only(findings, "vfio.available")
    assert vfio.severity == "error" and vfio.fix.startswith("modprobe vfio-pci")
    unbound = only(findings, "vf.driver")
    assert (unbound.severity, unbound.evidence) == ("warning", "0000:03:10.0, 0000:03:10.4")


def test_pf_without_driver_needs_ofed(tmp_path: Path, ids: PciIds) -> None:
    host = make_host(tmp_path, one_card("ConnectX-5", driver=False))
    findings = diagnose(host, ids)
    # without its driver the PF has no netdev, so host.conf's name is not found either
    assert only(findings, "hostconf.nic").message == "p0 is configured but not usable"


def test_pf_driver_unbound_after_boot(tmp_path: Path, ids: PciIds) -> None:
    host = make_host(tmp_path, guide())
    (host.root / "bus/pci/devices/0000:0a:00.0/driver").unlink()
    f = only(diagnose(host, ids), "pf.driver")
    assert f.severity == "error" and f.fix.startswith("install MLNX_OFED")


def test_missing_nic_and_link_down_and_management(tmp_path: Path, ids: PciIds) -> None:
    spec = guide()
    spec.cards[1].ports = [PortSpec(ifname="eth2", num_vfs=7, link="down")]
    host = make_host(tmp_path, spec)
    findings = diagnose(host, ids, sriov_nics=["eth1", "eth2", "eth7"])
    nic = only(findings, "hostconf.nic")
    assert (nic.severity, nic.device) == ("error", "eth7")
    assert only(findings, "pf.link").device == "0000:03:00.0"


def infiniband_host(tmp_path: Path, in_networks: bool) -> SimHost:
    spec = HostSpec(
        host_id="h",
        cards=[
            CardSpec(
                model="ConnectX-6",
                slot="0000:d8:00",
                link_type="infiniband",
                total_vfs=8,
                ports=[PortSpec(ifname="ib0", num_vfs=2)],
            )
        ],
        networks=["eth0/br0/10.0.0.2", *(["ib0/br1/ibnet"] if in_networks else [])],
        sriov_nics=["ib0"],
    )
    return make_host(tmp_path, spec)


def test_infiniband_ip_buffer_too_small(tmp_path: Path, ids: PciIds) -> None:
    host = infiniband_host(tmp_path, in_networks=True)
    bad = "Error: Buffer too small for object.\nDump terminated\n"
    findings = diagnose(host, ids, probe=lambda ifname: (2, bad))
    f = only(findings, "infiniband.iproute2")
    assert f.severity == "error" and f.evidence == bad.strip()
    assert "mlx-iproute2" in f.fix and "/mnt/DEBS/mlx-iproute2_" in f.fix
    assert only(findings, "infiniband.hostconf").severity == "warning"
    assert only(diagnose(host, ids, probe=lambda _: None), "infiniband.iproute2").severity == (
        "info"
    )
    other = only(
        diagnose(host, ids, probe=lambda _: (1, 'Device "ib0" does not exist.')),
        "infiniband.iproute2",
    )
    assert (other.severity, other.evidence) == ("info", 'Device "ib0" does not exist.')
    ok = only(
        diagnose(infiniband_host(tmp_path / "2", False), ids, probe=lambda _: (0, "")),
        "infiniband.iproute2",
    )
    assert ok.severity == "ok"


def offload_host(tmp_path: Path, model: str) -> SimHost:
    spec = HostSpec(
        host_id="h",
        cards=[
            CardSpec(
                model=model,
                slot="0000:86:00",
                ports=[PortSpec(ifname="p0", num_vfs=2), PortSpec(ifname="p1")],
            )
        ],
        bonds=[],
        networks=["p0/br1/bcast0"],
        sriov_nics=[],
        ovs_offload_nics=["p0"],
    )
    return make_host(tmp_path, spec)


@pytest.mark.parametrize("model", ["ConnectX-5", "ConnectX-6 Dx", "ConnectX-4 Lx"])
def test_offload_on_cx6_and_older_needs_security_groups_off(
    tmp_path: Path, ids: PciIds, model: str
) -> None:
    host = offload_host(tmp_path, model)
    f = only(diagnose(host, ids), "offload.security_groups")
    assert (f.severity, f.evidence) == ("error", "disable_security_group: false")
    assert f.fix.startswith("set disable_security_group: true")
    ok = only(diagnose(host, ids, disable_security_group=True), "offload.security_groups")
    assert ok.severity == "ok"


def test_offload_on_intel_is_flagged(tmp_path: Path, ids: PciIds) -> None:
    f = only(diagnose(offload_host(tmp_path, "E810"), ids), "offload.model")
    assert f.severity == "warning" and f.evidence == "8086:1592"


def test_inputs_readers(tmp_path: Path) -> None:
    (tmp_path / "cmdline").write_text(GOOD_CMDLINE + "\n")
    assert doctor.read_cmdline(str(tmp_path / "cmdline")) == GOOD_CMDLINE
    assert doctor.read_cmdline(str(tmp_path / "none")) is None
    (tmp_path / "log").write_text("a\nb\n")
    assert doctor.read_kernel_log(str(tmp_path / "log")) == ["a", "b"]
    assert doctor.read_kernel_log(str(tmp_path / "none")) is None
    (tmp_path / "cpuinfo").write_text("processor : 0\nvendor_id : AuthenticAMD\n")
    assert doctor.read_cpu_vendor(str(tmp_path / "cpuinfo")) == "amd"
    shutil.copy(tmp_path / "cmdline", tmp_path / "cpu2")
    assert doctor.read_cpu_vendor(str(tmp_path / "cpu2")) is None


# The kernel log of a real virtio-net VM without an IOMMU (this project's CI machine): the
# IOMMU core's generic lines appear on every machine and prove nothing.
GENERIC_IOMMU_LOG = [
    "[    0.000000] Command line: BOOT_IMAGE=/vmlinuz ro intel_iommu=on",
    "[    0.205798] iommu: Default domain type: Translated",
    "[    0.205804] iommu: DMA domain TLB invalidation policy: lazy mode",
]


def test_generic_iommu_lines_are_no_evidence_and_findings_agree(
    tmp_path: Path, ids: PciIds
) -> None:
    spec = guide()
    spec.iommu = "off"  # no /sys/class/iommu units, no iommu_groups
    findings = diagnose(make_host(tmp_path, spec), ids, log=GENERIC_IOMMU_LOG)
    log = only(findings, "iommu.kernel_log")
    assert log.severity == "error", log
    assert "do not prove a hardware IOMMU" in log.evidence and "Default domain" in log.evidence
    sysfs = only(findings, "iommu.sysfs")
    assert sysfs.severity == "error" and "the kernel cmdline already asks for it" in sysfs.fix
    # the cmdline asks for the IOMMU (ok), nothing says one is active
    oks = {f.check for f in findings if f.check.startswith("iommu.") and f.severity == "ok"}
    assert oks == {"iommu.cmdline", "iommu.passthrough"}


def test_an_active_iommu_without_the_cmdline_flag_is_not_an_error(
    tmp_path: Path, ids: PciIds
) -> None:
    findings = diagnose(make_host(tmp_path, guide()), ids, cmdline="ro quiet iommu=pt")
    cmd = only(findings, "iommu.cmdline")
    assert cmd.severity == "info" and "dmar0" in cmd.evidence
    assert only(findings, "iommu.sysfs").severity == "ok"


def test_iommu_vendor_comes_from_the_evidence_not_the_cpu(tmp_path: Path, ids: PciIds) -> None:
    spec = guide()
    spec.iommu = "off"
    host = make_host(tmp_path, spec)
    # the machine's CPU says Intel, but the host (a copied tree) asked for AMD's IOMMU
    findings = diagnose(host, ids, cmdline="ro amd_iommu=off", log=[], cpu="intel")
    assert "add amd_iommu=on iommu=pt" in only(findings, "iommu.cmdline").fix
    # only the CPU is left to say
    findings = diagnose(host, ids, cmdline="ro quiet", log=[], cpu="amd")
    assert "amd_iommu=on iommu=pt" in only(findings, "iommu.sysfs").fix


def test_cpuinfo_is_read_from_the_configured_file(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n")
    assert doctor.read_cpu_vendor(str(cpuinfo)) == "amd"
    assert doctor.read_cpu_vendor(str(tmp_path / "missing")) is None
