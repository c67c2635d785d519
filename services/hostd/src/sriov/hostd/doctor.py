"""The doctor: every check of the guide's set-up steps and Common Questions, with fixes.

Inputs (sysfs root, kernel cmdline, kernel log, CPU vendor, an ``ip`` probe) are passed in
so every finding can be produced on purpose in a test. Each finding carries a severity,
the evidence it saw (a file's content, a kernel log line, an ``lspci -v`` capability line)
and the fix the guide gives.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sriov.common import schemas as m
from sriov.common.errors import SysfsError
from sriov.hostd import configspace
from sriov.hostd.discovery import Discovery
from sriov.hostd.hostconf import HostConf
from sriov.hostd.sysfs import Sysfs

Severity = Literal["ok", "info", "warning", "error"]
#: ``ip`` probe: (ifname) -> (exit status, stderr); None when ``ip`` cannot be run.
IpProbe = Callable[[str], tuple[int, str] | None]

GRUB = (
    "/etc/default/grub GRUB_CMDLINE_LINUX, then grub2-mkconfig -o /boot/grub2/grub.cfg and reboot"
)
MLX_OFFLOAD_MAX = 0x101F  # ConnectX-6 Lx: the newest of "CX6 and below"
MLX_FIRST = 0x1013  # ConnectX-4
_IOMMU_LOG = re.compile(r"DMAR|IOMMU|AMD-Vi", re.I)
_MMIO = "not enough MMIO resources for SR-IOV"
_HCA = "ENABLE_HCA(0x104) timeout"
_IB_IP_ERROR = "Buffer too small for object"


@dataclass
class DoctorInputs:
    conf: HostConf
    sysfs: Sysfs
    found: Discovery
    cmdline: str | None
    """Kernel command line; None when it could not be read."""
    kernel_log: Sequence[str] | None
    """Kernel log lines (dmesg); None when it could not be read."""
    cpu_vendor: str | None = None
    """``intel`` or ``amd`` (from /proc/cpuinfo), when known."""
    ip_probe: IpProbe | None = None


@dataclass
class _Out:
    findings: list[m.Finding] = field(default_factory=list)

    def add(
        self,
        check: str,
        severity: Severity,
        message: str,
        *,
        device: str | None = None,
        evidence: str = "",
        fix: str = "",
    ) -> None:
        self.findings.append(
            m.Finding(
                check=check,
                severity=severity,
                message=message,
                device=device,
                evidence=evidence,
                fix=fix,
            )
        )


def run(inp: DoctorInputs) -> list[m.Finding]:
    """Run every check; never raises for what it finds on the host."""
    out = _Out()
    _hostconf(inp, out)
    _iommu(inp, out)
    _kernel_log(inp, out)
    _vfio(inp, out)
    for pf in inp.found.pfs:
        _pf(inp, out, pf)
    _vfs(inp, out)
    _infiniband(inp, out)
    _offload(inp, out)
    return out.findings


# --- host.conf and sysfs surprises ------------------------------------------------------------
def _hostconf(inp: DoctorInputs, out: _Out) -> None:
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


# --- IOMMU ------------------------------------------------------------------------------------
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


def _iommu(inp: DoctorInputs, out: _Out) -> None:
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


def _kernel_log(inp: DoctorInputs, out: _Out) -> None:
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


def _vfio(inp: DoctorInputs, out: _Out) -> None:
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


# --- per PF -----------------------------------------------------------------------------------
def _is_mlx(pf: m.PF) -> bool:
    return pf.vendor_id == "15b3"


def _totalvfs_fix(pf: m.PF, want: int | None) -> str:
    n = want or 8
    if _is_mlx(pf):
        return (
            f"mst start; mlxconfig -d <dev from `mst status -v`> set SRIOV_EN=1 "
            f"NUM_OF_VFS={n}; reboot"
        )
    if pf.driver == "igb":
        return f"add igb.max_vfs={n} to {GRUB}"
    return "enable SR-IOV for the device in the BIOS"


def _pf(inp: DoctorInputs, out: _Out, pf: m.PF) -> None:
    name = f"{pf.ifname} ({pf.pci_address}, {pf.model})"
    dev = inp.sysfs.pci_device(pf.pci_address)
    if pf.driver is None:
        fix = (
            "install MLNX_OFED (./mlnxofedinstall --add-kernel-support; dracut -f; "
            "/etc/init.d/openibd restart)"
            if _is_mlx(pf)
            else "load the NIC's driver"
        )
        out.add(
            "pf.driver",
            "error",
            f"{name} has no driver bound",
            device=pf.pci_address,
            evidence=f"{dev}/driver is missing",
            fix=fix,
        )
    # SR-IOV capability, as lspci -v shows it
    try:
        space = configspace.parse(inp.sysfs.read_bytes(os.path.join(dev, "config")))
    except (SysfsError, configspace.ConfigSpaceError) as exc:
        out.add(
            "sriov.capability",
            "warning",
            f"cannot read the config space of {name}",
            device=pf.pci_address,
            evidence=str(exc),
            fix="run as root; `lspci -v -s <addr>` should list SR-IOV",
        )
        space = None
    if space is not None:
        evidence = "\n".join(space.lspci())
        if not space.extended_readable:
            out.add(
                "sriov.capability",
                "warning",
                f"only the config header of {name} is readable",
                device=pf.pci_address,
                evidence=evidence,
                fix="run hostd as root to see extended capabilities",
            )
        elif space.sriov is None:
            out.add(
                "sriov.capability",
                "error",
                f"{name} does not advertise SR-IOV in its config space",
                device=pf.pci_address,
                evidence=evidence,
                fix="enable SR-IOV in the BIOS"
                + (" and in firmware (mlxconfig set SRIOV_EN=1)" if _is_mlx(pf) else ""),
            )
        else:
            line = next(
                c.lspci()
                for c in space.capabilities
                if c.cap_id == configspace.EXT_SRIOV and c.extended
            )
            out.add(
                "sriov.capability",
                "ok",
                f"{name} supports SR-IOV",
                device=pf.pci_address,
                evidence=line,
            )
    want = inp.conf.desired_vfs(pf.ifname, pf.pci_address)
    total_path = os.path.join(dev, "sriov_totalvfs")
    if not os.path.exists(total_path):
        out.add(
            "sriov.totalvfs",
            "error",
            f"{name} exposes no sriov_totalvfs",
            device=pf.pci_address,
            evidence=f"{total_path} is missing",
            fix=_totalvfs_fix(pf, want),
        )
        return
    if pf.total_vfs == 0:
        out.add(
            "sriov.totalvfs",
            "error",
            f"{name} allows 0 VFs",
            device=pf.pci_address,
            evidence="sriov_totalvfs = 0",
            fix=_totalvfs_fix(pf, want),
        )
        return
    if want is not None and want > pf.total_vfs:
        out.add(
            "sriov.totalvfs",
            "error",
            f"host.conf wants {want} VFs on {pf.ifname} but it allows {pf.total_vfs}",
            device=pf.pci_address,
            evidence=f"sriov_totalvfs = {pf.total_vfs}",
            fix=_totalvfs_fix(pf, want),
        )
    else:
        out.add(
            "sriov.totalvfs",
            "ok",
            f"{name} allows {pf.total_vfs} VFs",
            device=pf.pci_address,
            evidence=f"sriov_totalvfs = {pf.total_vfs}",
        )
    mgmt = inp.found.management.get(pf.pci_address)
    if mgmt:
        out.add(
            "pf.management",
            "info",
            f"{mgmt}: hostd never reconfigures it",
            device=pf.pci_address,
            evidence=mgmt,
        )
    evidence = f"sriov_numvfs = {pf.num_vfs}"
    if pf.num_vfs == 0:
        fix = (
            f"set num_vfs: {{{pf.ifname}: N}} in host.conf, or `sriovctl host-set-numvfs "
            f"--pf {pf.ifname} --num N`"
        )
        if pf.driver == "igb":
            fix += f", or add igb.max_vfs={pf.total_vfs} to {GRUB}"
        if pf.sriov:
            out.add(
                "sriov.numvfs",
                "warning",
                f"{name} has no VFs enabled",
                device=pf.pci_address,
                evidence=evidence,
                fix=fix,
            )
    elif want is not None and want != pf.num_vfs:
        out.add(
            "sriov.numvfs",
            "warning",
            f"{name} has {pf.num_vfs} VFs, host.conf wants {want}",
            device=pf.pci_address,
            evidence=evidence,
            fix="see hostd's log for why the count could not be set",
        )
    else:
        out.add(
            "sriov.numvfs",
            "ok",
            f"{name} has {pf.num_vfs} VFs",
            device=pf.pci_address,
            evidence=evidence,
        )
    if pf.link_state == "down":
        out.add(
            "pf.link",
            "warning",
            f"{name} link is down: its VFs have no uplink",
            device=pf.pci_address,
            evidence="operstate down",
            fix="check the cable, switch port and transceiver",
        )


def _vfs(inp: DoctorInputs, out: _Out) -> None:
    iommu_on = bool(inp.sysfs.listdir(inp.sysfs.path("class", "iommu")))
    no_group = [vf.pci_address for vf in inp.found.vfs if vf.iommu_group is None]
    if no_group and iommu_on:
        out.add(
            "iommu.groups",
            "error",
            f"{len(no_group)} VFs have no IOMMU group",
            evidence=", ".join(no_group[:8]),
            fix="enable ACS and the IOMMU in the BIOS",
        )
    elif inp.found.vfs and iommu_on:
        out.add("iommu.groups", "ok", "every VF has an IOMMU group")
    unbound = [vf.pci_address for vf in inp.found.vfs if vf.driver is None]
    if unbound:
        out.add(
            "vf.driver",
            "warning",
            f"{len(unbound)} VFs have no driver bound",
            evidence=", ".join(unbound[:8]),
            fix="echo 1 > /sys/bus/pci/devices/<pf>/sriov_drivers_autoprobe, or bind "
            "them to vfio-pci",
        )


# --- InfiniBand -------------------------------------------------------------------------------
def _infiniband(inp: DoctorInputs, out: _Out) -> None:
    ib = [pf for pf in inp.found.pfs if pf.link_type == "infiniband"]
    if not ib:
        return
    for pf in ib:
        if any(n.ifname == pf.ifname for n in inp.conf.networks):
            out.add(
                "infiniband.hostconf",
                "warning",
                f"InfiniBand NIC {pf.ifname} is listed in networks",
                device=pf.pci_address,
                evidence=f"networks: {pf.ifname}/...",
                fix="list InfiniBand NICs only in sriov_nics; they take the first network's wire",
            )
    pf = ib[0]
    fix = (
        "replace ip with mlx-iproute2 from the OFED ISO (/mnt/DEBS/mlx-iproute2_*.deb or "
        "/mnt/RPMS/mlx-iproute2-*.rpm)"
    )
    result = inp.ip_probe(pf.ifname or "") if inp.ip_probe is not None else None
    if result is None:
        out.add(
            "infiniband.iproute2",
            "info",
            "InfiniBand with SR-IOV: the distribution's ip "
            "may fail with 'Error: Buffer too small for object'",
            device=pf.pci_address,
            evidence="ip could not be run",
            fix=fix,
        )
    elif _IB_IP_ERROR in result[1]:
        out.add(
            "infiniband.iproute2",
            "error",
            "ip cannot list InfiniBand links with VFs",
            device=pf.pci_address,
            evidence=result[1].strip(),
            fix=fix,
        )
    else:
        out.add(
            "infiniband.iproute2",
            "ok",
            f"ip lists {pf.ifname} with its VFs",
            device=pf.pci_address,
            evidence=f"ip link show {pf.ifname}: exit {result[0]}",
        )


# --- OVS offload ------------------------------------------------------------------------------
def _offload(inp: DoctorInputs, out: _Out) -> None:
    for pf in inp.found.pfs:
        if not pf.offload:
            continue
        if not _is_mlx(pf):
            out.add(
                "offload.model",
                "warning",
                f"{pf.ifname} ({pf.model}) is in "
                "ovs_offload_nics but OVS offload needs a Mellanox ConnectX-6 series NIC",
                device=pf.pci_address,
                evidence=f"{pf.vendor_id}:{pf.device_id}",
                fix="remove it from ovs_offload_nics",
            )
            continue
        old = MLX_FIRST <= int(pf.device_id, 16) <= MLX_OFFLOAD_MAX
        if old and not inp.conf.disable_security_group:
            out.add(
                "offload.security_groups",
                "error",
                f"{pf.ifname} ({pf.model}) offloads "
                "OVS but ConnectX-6 and older handle connection tracking poorly",
                device=pf.pci_address,
                evidence="disable_security_group: false",
                fix="set disable_security_group: true (kubectl -n onecloud edit cm "
                "default-host) and in host.conf",
            )
        else:
            out.add(
                "offload.security_groups",
                "ok",
                f"{pf.ifname} security-group setting suits offload",
                device=pf.pci_address,
                evidence=f"disable_security_group: {str(inp.conf.disable_security_group).lower()}",
            )


# --- reading the inputs -------------------------------------------------------------------------
def read_cmdline(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def read_kernel_log(path: str | None) -> list[str] | None:
    """A text kernel log (``dmesg`` output) or, when no path is given, /dev/kmsg."""
    if path:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return None
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    lines: list[str] = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten record: keep reading
                    continue
                break
            if not rec:
                break
            _head, _, msg = rec.decode("utf-8", "replace").partition(";")
            lines.append(msg.split("\n", 1)[0])
    finally:
        os.close(fd)
    return lines


def read_cpu_vendor(path: str = "/proc/cpuinfo") -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    v = line.split(":", 1)[1].strip()
                    return "intel" if "Intel" in v else "amd" if "AMD" in v else None
    except OSError:
        return None
    return None


def ip_probe(netns: str | None) -> IpProbe:
    """Run ``ip link show <ifname>`` (in ``netns``) the way an operator would."""

    def probe(ifname: str) -> tuple[int, str] | None:
        cmd = ["ip", *(["-n", netns] if netns else []), "link", "show", ifname]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.returncode, res.stderr

    return probe


def summary(findings: Sequence[m.Finding]) -> str:
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning")}
    return f"{len(findings)} checks: {counts['error']} errors, {counts['warning']} warnings"


def render(findings: Sequence[m.Finding]) -> str:
    """A readable table for a terminal (severity, check, device, message, fix)."""
    rows = [("SEVERITY", "CHECK", "DEVICE", "FINDING / FIX")]
    order = {"error": 0, "warning": 1, "info": 2, "ok": 3}
    for f in sorted(findings, key=lambda f: order.get(f.severity, 9)):
        text = f.message + (f"\n  fix: {f.fix}" if f.fix and f.severity != "ok" else "")
        if f.evidence and f.severity != "ok":
            text += "\n  seen: " + f.evidence.replace("\n", "\n        ")
        rows.append((f.severity.upper(), f.check, f.device or "-", text))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for r in rows:
        first, *rest = r[3].split("\n")
        lines.append("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + first)
        pad = " " * (sum(widths) + 6)
        lines.extend(pad + x for x in rest)
    return "\n".join(lines) + "\n" + summary(findings)
