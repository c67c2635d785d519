"""Host-wide checks: host.conf names, IOMMU (cmdline, sysfs, kernel log), MMIO, ACS/ARI
(ENABLE_HCA timeouts) and vfio-pci."""

from __future__ import annotations

import os
import re

from sriov.hostd.doctor._core import GRUB, DoctorInputs, Out

#: Kernel log lines that prove a hardware IOMMU is translating: a driver enabling itself or a
#: device joining a group. The IOMMU core prints "iommu: Default domain type: ..." on every
#: machine, with or without one, and "Command line: ... intel_iommu=on" only echoes a wish:
#: neither counts.
_HW_IOMMU = re.compile(
    r"DMAR: IOMMU enabled|DMAR: Intel\(R\) Virtualization Technology for Directed I/O"
    r"|AMD-Vi:|Intel-IOMMU|arm-smmu|smmu-v3|virtio_iommu|Adding to iommu group",
)
_NOT_ON = re.compile(r"disabled|not found|not available|unsupported|ignoring|error", re.I)
_GREP = "dmesg | grep -e DMAR -e IOMMU -e AMD-Vi"
_MMIO = "not enough MMIO resources for SR-IOV"
_HCA = "ENABLE_HCA(0x104) timeout"


#: A PF's own checks (``device_checks.pf``) report these files once, with the fix.
_PF_OWN = ("/sriov_totalvfs", "/sriov_numvfs")


def hostconf(inp: DoctorInputs, out: Out) -> None:
    pfs = {p.pci_address for p in inp.found.pfs}
    for err in inp.found.errors:
        if err.pci_address in pfs and err.path.endswith(_PF_OWN):
            continue
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


class _Iommu:
    """The evidence of a hardware IOMMU, gathered once so the findings never contradict."""

    def __init__(self, inp: DoctorInputs) -> None:
        s = inp.sysfs
        self.units = sorted(s.listdir(s.path("class", "iommu")))
        self.groups = len(s.listdir(s.path("kernel", "iommu_groups")))
        self.lines = [
            ln for ln in inp.kernel_log or () if _HW_IOMMU.search(ln) and not _NOT_ON.search(ln)
        ]
        self.active = bool(self.units or self.groups or self.lines)
        self.vendor = self._vendor(inp)
        self.flag = "intel_iommu=on" if self.vendor == "intel" else "amd_iommu=on"

    def _vendor(self, inp: DoctorInputs) -> str:
        """From the IOMMU itself (units, log), then what the cmdline asks, then the CPU."""
        if any(u.startswith("dmar") for u in self.units):
            return "intel"
        if any(u.startswith("ivhd") for u in self.units):
            return "amd"
        for line in self.lines:
            if "DMAR" in line or "Intel-IOMMU" in line:
                return "intel"
            if "AMD-Vi" in line:
                return "amd"
        args = (inp.cmdline or "").split()
        if any(a.startswith("amd_iommu=") for a in args):
            return "amd"
        if any(a.startswith("intel_iommu=") for a in args):
            return "intel"
        return inp.cpu_vendor or "intel"

    def sysfs(self) -> list[str]:
        seen = [f"/sys/class/iommu: {' '.join(self.units)}"] if self.units else []
        if self.groups:
            seen.append(f"{self.groups} IOMMU groups in /sys/kernel/iommu_groups")
        return seen

    def evidence(self) -> str:
        return "; ".join(self.sysfs() + self.lines[:2])


def iommu(inp: DoctorInputs, out: Out) -> None:
    ev = _Iommu(inp)
    vendor, flag = ev.vendor, ev.flag
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
        elif ev.active and not off:
            out.add(
                "iommu.cmdline",
                "info",
                f"the kernel cmdline does not set {flag}, but the IOMMU is active (the "
                "kernel's default)",
                evidence=ev.evidence(),
                fix=f"add {flag} to {GRUB} to keep it on whatever the kernel's default",
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
    _iommu_active(inp, ev, out)


def _iommu_active(inp: DoctorInputs, ev: _Iommu, out: Out) -> None:
    """One verdict on whether an IOMMU translates, from sysfs and the kernel log together."""
    asked = ev.flag in (inp.cmdline or "").split()
    bios = (
        "enable VT-d / AMD-Vi (IOMMU) in the BIOS: the kernel cmdline already asks for it"
        if asked
        else f"enable VT-d / AMD-Vi (IOMMU) in the BIOS and add {ev.flag} iommu=pt to {GRUB}"
    )
    if ev.units or ev.groups:
        out.add("iommu.sysfs", "ok", "IOMMU units are active", evidence="; ".join(ev.sysfs()))
    elif ev.lines:
        out.add(
            "iommu.sysfs",
            "warning",
            "the kernel log shows a hardware IOMMU, but sysfs lists no IOMMU unit or group",
            evidence=f"{inp.sysfs.path('class', 'iommu')} is empty; " + "; ".join(ev.lines[:2]),
            fix="check that the sysfs root is this host's (--sysfs-root) and that the IOMMU "
            "driver finished probing (dmesg)",
        )
    else:
        out.add(
            "iommu.sysfs",
            "error",
            "no IOMMU is active (/sys/class/iommu is empty, no IOMMU groups)",
            evidence=inp.sysfs.path("class", "iommu"),
            fix=bios,
        )
    if inp.kernel_log is None:
        out.add(
            "iommu.kernel_log",
            "info",
            "kernel log could not be read",
            fix=f"run `{_GREP}` by hand",
        )
    elif ev.lines:
        out.add(
            "iommu.kernel_log",
            "ok",
            "the kernel log shows a hardware IOMMU",
            evidence="\n".join(ev.lines[:3]),
        )
    else:
        generic = [
            ln.strip()
            for ln in inp.kernel_log
            if re.search(r"DMAR|IOMMU|AMD-Vi", ln, re.I) and "Command line:" not in ln
        ]
        seen = (
            f"{_GREP}: only lines that do not prove a hardware IOMMU: {'; '.join(generic[:2])}"
            if generic
            else f"{_GREP}: no output"
        )
        if ev.active:  # sysfs shows it: the log only lost its start (rotated, or filtered)
            out.add(
                "iommu.kernel_log",
                "info",
                "the kernel log does not show the IOMMU starting (rotated?); sysfs shows it",
                evidence=seen,
            )
        else:
            out.add(
                "iommu.kernel_log",
                "error",
                "no DMAR / AMD-Vi / IOMMU driver line in the kernel log",
                evidence=seen,
                fix=bios,
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
