"""Host-wide checks: host.conf names, IOMMU (cmdline, sysfs, kernel log), MMIO, ACS/ARI
(ENABLE_HCA timeouts) and vfio-pci."""

from __future__ import annotations

import os
import re

from sriov.hostd.doctor._core import GRUB, DoctorInputs, Out

_IOMMU_LOG = re.compile(r"DMAR|IOMMU|AMD-Vi", re.I)
_MMIO = "not enough MMIO resources for SR-IOV"
_HCA = "ENABLE_HCA(0x104) timeout"


def hostconf(inp: DoctorInputs, out: Out) -> None:
    for err in inp.found.errors:
        if not err.pci_address and err.ifname:
            out.add(
                "hostconf.nic",
                "error",
                f"{err.ifname} is configured but not usable",
                device=err.ifname,
                evidence=err.message,
                fix="check the name in host.conf against `ip link`, and that the NIC's "
                "driver is loaded",
            )
        else:
            out.add(
                "sysfs.device",
                "error",
                err.message,
                device=err.pci_address or err.ifname,
                evidence=err.path,
                fix="check the device's driver and firmware; `sriovctl host-rescan` after fixing",
            )
    if not inp.found.errors:
        names = ", ".join(p.ifname or p.pci_address for p in inp.found.pfs) or "none"
        out.add("hostconf.nic", "ok", "every configured NIC was found", evidence=names)


def _vendor(inp: DoctorInputs) -> str | None:
    units = inp.sysfs.listdir(inp.sysfs.path("class", "iommu"))
    if any(u.startswith("dmar") for u in units):
        return "intel"
    if any(u.startswith("ivhd") for u in units):
        return "amd"
    for line in inp.kernel_log or ():
        if "DMAR" in line:
            return "intel"
        if "AMD-Vi" in line:
            return "amd"
    return inp.cpu_vendor


def iommu(inp: DoctorInputs, out: Out) -> None:
    vendor = _vendor(inp) or "intel"
    flag = "intel_iommu=on" if vendor == "intel" else "amd_iommu=on"
    if inp.cmdline is None:
        out.add(
            "iommu.cmdline",
            "warning",
            "kernel command line could not be read",
            fix="check /proc/cmdline by hand",
        )
    else:
        args = inp.cmdline.split()
        off = any(a in ("intel_iommu=off", "amd_iommu=off", "iommu=off") for a in args)
        on = flag in args or (vendor == "amd" and not off)
        if on and not off:
            out.add(
                "iommu.cmdline",
                "ok",
                f"IOMMU enabled on the kernel cmdline ({vendor})",
                evidence=inp.cmdline,
            )
        else:
            out.add(
                "iommu.cmdline",
                "error",
                f"the kernel cmdline does not enable the IOMMU ({flag} missing)",
                evidence=inp.cmdline,
                fix=f"add {flag} iommu=pt to {GRUB}",
            )
        if "iommu=pt" in args:
            out.add("iommu.passthrough", "ok", "iommu=pt is set", evidence="iommu=pt")
        else:
            out.add(
                "iommu.passthrough",
                "warning",
                "iommu=pt is not set (host DMA goes "
                "through the IOMMU too, which costs performance)",
                evidence=inp.cmdline,
                fix=f"add iommu=pt to {GRUB}",
            )
    units = inp.sysfs.listdir(inp.sysfs.path("class", "iommu"))
    if units:
        out.add(
            "iommu.sysfs",
            "ok",
            "IOMMU units are active",
            evidence=f"/sys/class/iommu: {' '.join(units)}",
        )
    else:
        out.add(
            "iommu.sysfs",
            "error",
            "no IOMMU is active (/sys/class/iommu is empty)",
            evidence=inp.sysfs.path("class", "iommu"),
            fix=f"enable VT-d / AMD-Vi (IOMMU) in the BIOS and add {flag} iommu=pt to {GRUB}",
        )
    if inp.kernel_log is None:
        out.add(
            "iommu.kernel_log",
            "info",
            "kernel log could not be read",
            fix="run `dmesg | grep -e DMAR -e IOMMU -e AMD-Vi` by hand",
        )
        return
    lines = [ln for ln in inp.kernel_log if _IOMMU_LOG.search(ln)]
    if lines:
        out.add(
            "iommu.kernel_log",
            "ok",
            "the kernel log shows the IOMMU",
            evidence="\n".join(lines[:3]),
        )
    else:
        out.add(
            "iommu.kernel_log",
            "error",
            "no DMAR / IOMMU / AMD-Vi lines in the kernel log",
            evidence="dmesg | grep -e DMAR -e IOMMU -e AMD-Vi: no output",
            fix=f"enable the IOMMU in the BIOS and add {flag} iommu=pt to {GRUB}",
        )


def kernel_log(inp: DoctorInputs, out: Out) -> None:
    if inp.kernel_log is None:
        return
    mmio = [ln for ln in inp.kernel_log if _MMIO in ln]
    if mmio:
        realloc = inp.cmdline is not None and "pci=realloc" in inp.cmdline.split()
        fix = (
            "pci=realloc is already set: enable 'Above 4G decoding' / SR-IOV / MMIO high "
            "in the BIOS"
            if realloc
            else f"add pci=realloc to {GRUB}"
        )
        out.add(
            "pci.mmio",
            "error",
            "not enough MMIO resources for SR-IOV",
            evidence="\n".join(mmio[:3]),
            fix=fix,
        )
    else:
        out.add("pci.mmio", "ok", "no MMIO resource errors in the kernel log")
    hca = [ln for ln in inp.kernel_log if _HCA in ln]
    if hca:
        out.add(
            "mlx5.enable_hca",
            "error",
            "mlx5 VFs time out at ENABLE_HCA(0x104)",
            evidence="\n".join(hca[:3]),
            fix='in the BIOS find and enable "ACS", "PCIe ARI Support" and "IOMMU"',
        )
    else:
        out.add("mlx5.enable_hca", "ok", "no ENABLE_HCA timeouts in the kernel log")


def vfio(inp: DoctorInputs, out: Out) -> None:
    s = inp.sysfs
    drv = s.path("bus", "pci", "drivers", "vfio-pci")
    mod = s.path("module", "vfio_pci")
    if os.path.isdir(drv) or os.path.isdir(mod):
        out.add("vfio.available", "ok", "vfio-pci is loaded", evidence=drv)
    else:
        out.add(
            "vfio.available",
            "error",
            "vfio-pci is not loaded: VFs cannot be passed to guests",
            evidence=f"{drv} is missing",
            fix="modprobe vfio-pci, and list it in /etc/modules-load.d/vfio.conf",
        )
