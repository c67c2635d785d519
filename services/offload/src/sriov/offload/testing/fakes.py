"""A small fake ``/sys`` for the NIC checks (PCI functions, netdevs, bonds, representors)
and probes that answer as a switchdev-capable card would: what cannot exist on this machine."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sriov.offload.probes import ProbeError


class FakeSys:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "class" / "net").mkdir(parents=True, exist_ok=True)

    def _write(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")

    def pci(self, addr: str, vendor: str, device: str, driver: str | None, num_vfs: int) -> Path:
        dev = self.root / "devices" / "pci0000:00" / addr
        self._write(dev / "vendor", f"0x{vendor}")
        self._write(dev / "device", f"0x{device}")
        self._write(dev / "sriov_numvfs", str(num_vfs))
        if driver:
            drv = self.root / "bus" / "pci" / "drivers" / driver
            drv.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(drv, dev), dev / "driver")
        return dev

    def netdev(
        self,
        name: str,
        pci: Path | None = None,
        switch_id: str | None = None,
        port_name: str | None = None,
    ) -> Path:
        net = self.root / "class" / "net" / name
        net.mkdir(parents=True, exist_ok=True)
        if pci is not None:
            os.symlink(os.path.relpath(pci, net), net / "device")
        if switch_id is not None:
            self._write(net / "phys_switch_id", switch_id)
        if port_name is not None:
            self._write(net / "phys_port_name", port_name)
        return net

    def bond(self, name: str, mode: str, members: list[str]) -> None:
        net = self.netdev(name)
        self._write(net / "bonding" / "mode", mode)
        self._write(net / "bonding" / "slaves", " ".join(members))

    def connectx_pf(
        self,
        ifname: str,
        addr: str,
        *,
        device: str = "1017",
        num_vfs: int = 2,
        switchdev: bool = True,
        port: int = 0,
        driver: str | None = "mlx5_core",
    ) -> None:
        pci = self.pci(addr, "15b3", device, driver, num_vfs)
        switch_id = f"{addr.replace(':', '').replace('.', '')}" if switchdev else None
        self.netdev(ifname, pci, switch_id, f"p{port}" if switchdev else None)
        if switchdev:
            for vf in range(num_vfs):
                self.netdev(f"{ifname}_{vf}", None, switch_id, f"pf{port}vf{vf}")


@dataclass
class FakeProbes:
    """Answers of devlink and ethtool as a driver would give them."""

    modes: dict[str, str] = field(default_factory=dict)
    features_by_if: dict[str, dict[str, bool]] = field(default_factory=dict)
    devlink_error: str | None = None

    async def eswitch_mode(self, pci_address: str) -> str:
        if self.devlink_error:
            raise ProbeError(self.devlink_error)
        try:
            return self.modes[pci_address]
        except KeyError:
            raise ProbeError(f"devlink: pci/{pci_address}: No such device (errno 19)") from None

    async def features(self, ifname: str) -> dict[str, bool]:
        try:
            return self.features_by_if[ifname]
        except KeyError:
            raise ProbeError(f"ethtool -k {ifname} failed: [Errno 19] No such device") from None
