"""What sysfs says about an offload NIC: bond membership and mode, PCI identity, driver,
VF count and switchdev representors. Everything is read under a configurable root so tests
(and the project's simulator) can hand in a fake ``/sys``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_PCI = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_REP = re.compile(r"^pf(\d+)vf(\d+)$")
_PF_PORT = re.compile(r"^p(\d+)$")

#: The bonding modes Mellanox offload supports (the guide's list), by sysfs name.
SUPPORTED_BOND_MODES = {
    "active-backup": "Active-Backup (mode 1)",
    "balance-xor": "XOR (mode 2)",
    "802.3ad": "LACP (mode 4)",
}


@dataclass(frozen=True)
class Bond:
    name: str
    mode: str
    """sysfs ``bonding/mode`` first word (``active-backup``, ``balance-xor``, ``802.3ad``)."""
    mode_number: int | None
    members: list[str]
    evidence: str


@dataclass(frozen=True)
class Representor:
    ifname: str
    port_name: str
    """``pf0vf3``."""


@dataclass
class PfInfo:
    ifname: str
    bond: str | None = None
    pci_address: str | None = None
    vendor_id: str = ""
    device_id: str = ""
    driver: str | None = None
    num_vfs: int | None = None
    switch_id: str | None = None
    port_name: str | None = None
    representors: list[Representor] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    """What was read, path by path, for findings."""


class NicSysfs:
    """An offload NIC's view of sysfs (hostd's ``Sysfs`` reads PFs and VFs for discovery)."""

    def __init__(self, root: str | Path = "/sys") -> None:
        self.root = Path(root)

    def net(self, ifname: str) -> Path:
        return self.root / "class" / "net" / ifname

    def exists(self, ifname: str) -> bool:
        return self.net(ifname).exists()

    def bond(self, ifname: str) -> Bond | None:
        """The bond named ``ifname``, or None when it is not a bond master."""
        base = self.net(ifname) / "bonding"
        slaves = _read(base / "slaves")
        if slaves is None:
            return None
        raw_mode = _read(base / "mode") or ""
        parts = raw_mode.split()
        number = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        evidence = f"{base}/mode = {raw_mode!r}; {base}/slaves = {slaves!r}"
        return Bond(ifname, parts[0] if parts else "", number, slaves.split(), evidence)

    def pf(self, ifname: str, bond: str | None = None) -> PfInfo:
        info = PfInfo(ifname=ifname, bond=bond)
        net = self.net(ifname)
        device = net / "device"
        try:
            real = Path(os.path.realpath(device))
        except OSError:
            real = device
        if device.exists() and _PCI.match(real.name.lower()):
            info.pci_address = real.name.lower()
            info.vendor_id = _hex4(_read(device / "vendor"))
            info.device_id = _hex4(_read(device / "device"))
            driver = device / "driver"
            info.driver = Path(os.path.realpath(driver)).name if driver.exists() else None
            vfs = _read(device / "sriov_numvfs")
            info.num_vfs = int(vfs) if vfs is not None and vfs.isdigit() else None
            info.evidence.append(
                f"{device} -> {info.pci_address} vendor=0x{info.vendor_id} "
                f"device=0x{info.device_id} driver={info.driver} sriov_numvfs={vfs}"
            )
        else:
            info.evidence.append(f"{device}: no PCI device behind {ifname}")
        info.switch_id = _read(net / "phys_switch_id")
        info.port_name = _read(net / "phys_port_name")
        info.evidence.append(
            f"{net}/phys_switch_id = {info.switch_id!r}; phys_port_name = {info.port_name!r}"
        )
        if info.switch_id:
            info.representors = self._representors(info)
        return info

    def _representors(self, pf: PfInfo) -> list[Representor]:
        """Netdevs on the PF's eswitch named ``pf<N>vf<M>`` for this PF's port N."""
        pf_index = None
        if pf.port_name and (m := _PF_PORT.match(pf.port_name)):
            pf_index = m.group(1)
        reps: list[Representor] = []
        net_dir = self.root / "class" / "net"
        try:
            names = sorted(os.listdir(net_dir))
        except OSError:
            return reps
        for name in names:
            if name == pf.ifname:
                continue
            port = _read(net_dir / name / "phys_port_name")
            m = _REP.match(port or "")
            if not m or _read(net_dir / name / "phys_switch_id") != pf.switch_id:
                continue
            if pf_index is None or m.group(1) == pf_index:
                reps.append(Representor(name, port or ""))
        return reps


def _read(path: Path) -> str | None:
    """A sysfs attribute's text, None when absent or unreadable (EOPNOTSUPP in legacy mode)."""
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _hex4(raw: str | None) -> str:
    return raw.lower().removeprefix("0x").zfill(4) if raw else ""
