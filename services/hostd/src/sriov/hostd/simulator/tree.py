"""Write (and rewrite) a faithful sysfs tree for a simulated host.

The layout is the kernel's: functions live under ``devices/pci<dom>:00/<root port>/``,
``bus/pci/devices/<addr>`` and ``class/net/<ifname>`` are symlinks into it, a PF has
``sriov_*`` files and ``virtfnN`` links, a VF a ``physfn`` link, ``driver`` links point into
``bus/pci/drivers/<name>``, ``iommu_group`` into ``kernel/iommu_groups/<n>``, and
``config`` holds 4096 bytes with the capability chain ``lspci -v`` would show.

A marker file at the root records the spec and what was written, so a later call (the
simulated kernel reacting to a ``sriov_numvfs`` write, or ``--remove``) knows the tree is
the simulator's and never touches a directory it did not create. It is the one writer of
the layout (~500 lines): PF, VF, driver and IOMMU links must agree with each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import msgspec

from sriov.common.errors import ConfigError
from sriov.common.schemas import VfConfig
from sriov.hostd import configspace as cs
from sriov.hostd.simulator import models
from sriov.hostd.simulator.spec import CardSpec, HostSpec, PortSpec, pf_ifnames, ports_of

MARKER = ".sriov-simulator.json"
LOCK = ".sriov-simulator.lock"
ARPHRD_ETHER, ARPHRD_INFINIBAND = 1, 32


class Netdev(msgspec.Struct, kw_only=True):
    """A netdev the tree declares; ``netdevs.create`` makes it a real veth."""

    ifname: str
    mac: str
    role: Literal["pf", "vf"]
    pci_address: str
    link_up: bool = True
    ethernet: bool = True


class PfRecord(msgspec.Struct, kw_only=True):
    pci_address: str
    ifname: str
    card: int
    port: int
    device_dir: str
    """Path of the function's directory relative to the root."""


class SimState(msgspec.Struct, kw_only=True):
    spec: HostSpec
    netns: str | None = None
    pfs: list[PfRecord] = msgspec.field(default_factory=list)
    netdevs: list[Netdev] = msgspec.field(default_factory=list)
    next_ifindex: int = 2
    next_group: int = 1
    vf_table: dict[str, list[VfConfig]] = msgspec.field(default_factory=dict)
    """Per PF address, what the PF driver keeps per VF (``IFLA_VFINFO_LIST``; driver None)."""
    vf_faults: dict[str, int] = msgspec.field(default_factory=dict)
    """``<pf>/<vf>/<IFLA_VF_* attr>`` -> errno the simulated PF driver returns (tests)."""
    vf_table_changes: int = 0


def is_simulated(root: str | Path) -> bool:
    return (Path(root) / MARKER).is_file()


def load_state(root: str | Path) -> SimState:
    path = Path(root) / MARKER
    try:
        return msgspec.json.decode(path.read_bytes(), type=SimState)
    except FileNotFoundError:
        raise ConfigError(f"{root} is not a simulated sysfs tree (no {MARKER})") from None


@contextlib.contextmanager
def state_lock(root: str | Path) -> Iterator[None]:
    """Hold while reading, changing and saving the state file: hostd's threads (a rebinding
    on one PF, a VF-table change on another) and other processes (a test's ``ip link set``)
    change it concurrently, and a save from a stale read would undo another's change."""
    with open(Path(root) / LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def save_state(root: str | Path, state: SimState) -> None:
    path = Path(root) / MARKER
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(state))
    tmp.replace(path)


def remove_tree(root: str | Path) -> None:
    """Delete a tree the simulator wrote; refuse anything else."""
    p = Path(root)
    if not p.exists():
        return
    if not is_simulated(p):
        raise ConfigError(f"refusing to delete {p}: it is not a simulated sysfs tree")
    shutil.rmtree(p)


def _mac(oui: str, key: str) -> str:
    h = hashlib.sha256(key.encode()).digest()
    return f"{oui}:{h[0]:02x}:{h[1]:02x}:{h[2]:02x}"


def _vf_mac(key: str) -> str:
    h = hashlib.sha256(key.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])


def _ib_addr(key: str) -> str:
    h = hashlib.sha256(key.encode()).digest()
    guid = ":".join(f"{b:02x}" for b in h[:8])
    return "00:00:10:87:fe:80:00:00:00:00:00:00:" + guid


class TreeWriter:
    """Writes one host's tree; methods are idempotent per device."""

    def __init__(self, root: str | Path, state: SimState) -> None:
        self.root = Path(root)
        self.state = state
        self.spec = state.spec

    # --- primitives -------------------------------------------------------------------------
    def _write(self, path: Path, value: str | bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(value if value.endswith("\n") else value + "\n")

    def _link(self, path: Path, target: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(os.path.relpath(target, path.parent))

    def _driver(self, name: str) -> Path:
        drv = self.root / "bus" / "pci" / "drivers" / name
        if not drv.is_dir():
            module = models.MODULES.get(name, name.replace("-", "_"))
            mod = self.root / "module" / module
            (mod / "drivers").mkdir(parents=True, exist_ok=True)
            drv.mkdir(parents=True, exist_ok=True)
            self._link(drv / "module", mod)
            for f in ("bind", "unbind", "new_id", "remove_id"):
                self._write(drv / f, "")
        return drv

    def _group(self, dev: Path, address: str) -> None:
        if self.spec.iommu == "off":
            return
        n = self.state.next_group
        self.state.next_group += 1
        group = self.root / "kernel" / "iommu_groups" / str(n)
        (group / "devices").mkdir(parents=True, exist_ok=True)
        self._link(group / "devices" / address, dev)
        self._write(group / "type", "DMA")
        self._link(dev / "iommu_group", group)

    def _function(
        self,
        dev: Path,
        address: str,
        vendor: int,
        device: int,
        klass: int,
        numa: int,
        config: bytes,
        driver: str | None,
    ) -> None:
        dev.mkdir(parents=True, exist_ok=True)
        for name, val in (
            ("vendor", vendor),
            ("device", device),
            ("subsystem_vendor", vendor),
            ("subsystem_device", 0x0001),
        ):
            self._write(dev / name, f"0x{val:04x}")
        self._write(dev / "class", f"0x{klass:06x}")
        self._write(dev / "numa_node", str(numa))
        self._write(dev / "enable", "1")
        self._write(dev / "config", config)
        self._write(dev / "uevent", f"PCI_SLOT_NAME={address}\nPCI_ID={vendor:04X}:{device:04X}")
        self._link(self.root / "bus" / "pci" / "devices" / address, dev)
        if driver is not None:
            drv = self._driver(driver)
            self._link(dev / "driver", drv)
            self._link(drv / address, dev)
            self._write(dev / "uevent", f"DRIVER={driver}\nPCI_SLOT_NAME={address}")
        self._group(dev, address)

    def _netdev(self, dev: Path, ifname: str, addr: str, up: bool, ib: bool, port: int) -> None:
        net = dev / "net" / ifname
        ifindex = self.state.next_ifindex
        self.state.next_ifindex += 1
        values = {
            "address": addr,
            "addr_len": "20" if ib else "6",
            "type": str(ARPHRD_INFINIBAND if ib else ARPHRD_ETHER),
            "operstate": "up" if up else "down",
            "carrier": "1" if up else "0",
            "ifindex": str(ifindex),
            "mtu": "2044" if ib else "1500",
            "dev_port": str(port),
            "flags": "0x1003" if up else "0x1002",
        }
        for name, val in values.items():
            self._write(net / name, val)
        self._link(net / "device", dev)
        self._link(self.root / "class" / "net" / ifname, net)

    # --- the host -----------------------------------------------------------------------------
    def write_all(self) -> SimState:
        if self.root.exists() and any(self.root.iterdir()) and not is_simulated(self.root):
            raise ConfigError(
                f"{self.root} exists and is not a simulated sysfs tree: refusing to overwrite"
            )
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        for d in (
            "class/net",
            "class/iommu",
            "class/infiniband",
            "bus/pci/devices",
            "bus/pci/drivers",
            "kernel/iommu_groups",
            "module",
            "devices/virtual/net",
        ):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        if self.spec.iommu != "off":
            name = "dmar0" if self.spec.iommu == "intel" else "ivhd0"
            unit = self.root / "devices" / "virtual" / "iommu" / name
            unit.mkdir(parents=True)
            self._link(self.root / "class" / "iommu" / name, unit)
        if self.spec.vfio_pci:
            self._driver("vfio-pci")
        names = iter(pf_ifnames(self.spec))
        self.state.pfs = []
        self.state.netdevs = []
        for i, card in enumerate(self.spec.cards):
            self._card(i, card, names)
        for bond in self.spec.bonds:
            self._bond(bond.name, bond.members, bond.mode)
        save_state(self.root, self.state)
        return self.state

    def _card(self, index: int, card: CardSpec, names: object) -> None:
        model = models.model(card.model)
        dom, bus, dev = card.domain_bus_dev
        port_dir = self.root / "devices" / f"pci{dom:04x}:00" / f"{dom:04x}:00:{2 + index:02x}.0"
        rp_addr = port_dir.name
        self._function(
            port_dir,
            rp_addr,
            0x8086,
            0x2030,
            models.CLASS_PCI_BRIDGE,
            card.numa_node,
            cs.build(
                0x8086, 0x2030, models.CLASS_PCI_BRIDGE, models.ROOT_PORT_STD, models.ROOT_PORT_EXT
            ),
            "pcieport",
        )
        ports = ports_of(self.spec, card)
        for p, port in enumerate(ports):
            ifname = next(names)  # type: ignore[call-overload]
            addr = f"{dom:04x}:{bus:02x}:{dev:02x}.{p}"
            pf_dir = port_dir / addr
            self.state.pfs.append(
                PfRecord(
                    pci_address=addr,
                    ifname=ifname,
                    card=index,
                    port=p,
                    device_dir=str(pf_dir.relative_to(self.root)),
                )
            )
            self._pf(card, model, p, len(ports), port, addr, pf_dir, ifname)

    def _sriov_regs(
        self, card: CardSpec, model: models.CardModel, p: int, n: int, num: int
    ) -> cs.SriovRegs:
        total = card.total_vfs if card.total_vfs is not None else model.total_vfs
        return cs.SriovRegs(
            total, num, model.offset(p, n, total), model.stride, model.vf_device_id, model.ari
        )

    def _pf(
        self,
        card: CardSpec,
        model: models.CardModel,
        p: int,
        nports: int,
        port: PortSpec,
        addr: str,
        pf_dir: Path,
        ifname: str,
    ) -> None:
        ib = card.link_type == "infiniband"
        klass = models.CLASS_INFINIBAND if ib else models.CLASS_ETHERNET
        regs = self._sriov_regs(card, model, p, nports, port.num_vfs)
        ext = (
            model.ext_caps
            if card.sriov
            else tuple(c for c in model.ext_caps if c[1] != cs.EXT_SRIOV)
        )
        config = cs.build(model.vendor_id, model.device_id, klass, model.std_caps, ext, regs)
        driver = model.pf_driver if card.driver else None
        self._function(
            pf_dir, addr, model.vendor_id, model.device_id, klass, card.numa_node, config, driver
        )
        if card.sriov:
            for name, val in (
                ("sriov_totalvfs", regs.total_vfs),
                ("sriov_numvfs", 0),
                ("sriov_offset", regs.first_vf_offset),
                ("sriov_stride", regs.vf_stride),
                ("sriov_vf_device", f"{regs.vf_device_id:04x}"),
                ("sriov_drivers_autoprobe", 1),
            ):
                self._write(pf_dir / name, str(val))
        if card.driver:
            mac = _ib_addr(addr) if ib else _mac(model.mac_oui, addr)
            self._netdev(pf_dir, ifname, mac, port.link == "up", ib, p)
            if ib:
                ibdev = pf_dir / "infiniband" / f"mlx5_{len(self.state.pfs) - 1}"
                ibdev.mkdir(parents=True, exist_ok=True)
                self._link(self.root / "class" / "infiniband" / ibdev.name, ibdev)
            self.state.netdevs.append(
                Netdev(
                    ifname=ifname,
                    mac=mac,
                    role="pf",
                    pci_address=addr,
                    link_up=port.link == "up",
                    ethernet=not ib,
                )
            )
        if card.sriov and port.num_vfs:
            self.write_vfs(addr, port.num_vfs)

    def write_vfs(self, pf_addr: str, num: int) -> None:
        """Create ``num`` VFs of a PF as the kernel does on ``echo num > sriov_numvfs``."""
        rec = self._pf_record(pf_addr)
        card = self.spec.cards[rec.card]
        model = models.model(card.model)
        ports = ports_of(self.spec, card)
        port = ports[rec.port]
        pf_dir = self.root / rec.device_dir
        regs = self._sriov_regs(card, model, rec.port, len(ports), num)
        ib = card.link_type == "infiniband"
        klass = models.CLASS_INFINIBAND if ib else models.CLASS_ETHERNET
        # the PF's SR-IOV control/NumVFs registers follow the write
        config = cs.build(
            model.vendor_id, model.device_id, klass, model.std_caps, model.ext_caps, regs
        )
        vf_config = cs.build(
            model.vendor_id,
            model.vf_device_id,
            klass,
            model.vf_std_caps,
            model.vf_ext_caps,
            is_vf=True,
        )
        for n in range(num):
            addr = models.vf_address(pf_addr, regs.first_vf_offset, regs.vf_stride, n)
            vf_dir = pf_dir.parent / addr
            if n in port.vfio:
                driver: str | None = "vfio-pci"
            elif n in port.unbound:
                driver = None
            else:
                driver = model.vf_driver
            self._function(
                vf_dir,
                addr,
                model.vendor_id,
                model.vf_device_id,
                klass,
                card.numa_node,
                vf_config,
                driver,
            )
            self._link(vf_dir / "physfn", pf_dir)
            self._link(pf_dir / f"virtfn{n}", vf_dir)
            if driver is not None and driver != "vfio-pci":
                ifname = self.spec.vf_ifname.format(pf=rec.ifname, vf=n)
                mac = _ib_addr(addr) if ib else _vf_mac(addr)
                self._netdev(vf_dir, ifname, mac, port.link == "up", ib, 0)
                self.state.netdevs.append(
                    Netdev(
                        ifname=ifname,
                        mac=mac,
                        role="vf",
                        pci_address=addr,
                        link_up=port.link == "up",
                        ethernet=not ib,
                    )
                )
        # like the kernel, sriov_numvfs shows the new count once every VF exists
        self._write(pf_dir / "config", config)
        self._write(pf_dir / "sriov_numvfs", str(num))

    def remove_vfs(self, pf_addr: str) -> list[Netdev]:
        """Remove every VF of a PF (``echo 0 > sriov_numvfs``); return their netdevs."""
        rec = self._pf_record(pf_addr)
        pf_dir = self.root / rec.device_dir
        vf_addrs: set[str] = set()
        for link in sorted(pf_dir.glob("virtfn*")):
            vf_dir = (link.parent / os.readlink(link)).resolve()
            addr = vf_dir.name
            vf_addrs.add(addr)
            link.unlink()  # the kernel drops the virtfn link before the device
            self._unlink_function(vf_dir, addr)
        self._write(pf_dir / "sriov_numvfs", "0")
        card = self.spec.cards[rec.card]
        model = models.model(card.model)
        ports = ports_of(self.spec, card)
        regs = self._sriov_regs(card, model, rec.port, len(ports), 0)
        klass = models.CLASS_INFINIBAND if card.link_type == "infiniband" else models.CLASS_ETHERNET
        self._write(
            pf_dir / "config",
            cs.build(model.vendor_id, model.device_id, klass, model.std_caps, model.ext_caps, regs),
        )
        gone = [d for d in self.state.netdevs if d.pci_address in vf_addrs]
        self.state.netdevs = [d for d in self.state.netdevs if d.pci_address not in vf_addrs]
        return gone

    def _unlink_function(self, dev: Path, addr: str) -> None:
        for net in (dev / "net").glob("*") if (dev / "net").is_dir() else ():
            cls_link = self.root / "class" / "net" / net.name
            if cls_link.is_symlink():
                cls_link.unlink()
        drv = dev / "driver"
        if drv.is_symlink():
            target = (drv.parent / os.readlink(drv)).resolve()
            (target / addr).unlink(missing_ok=True)
        grp = dev / "iommu_group"
        if grp.is_symlink():
            target = (grp.parent / os.readlink(grp)).resolve()
            shutil.rmtree(target, ignore_errors=True)
        (self.root / "bus" / "pci" / "devices" / addr).unlink(missing_ok=True)
        shutil.rmtree(dev, ignore_errors=True)

    def _pf_record(self, pf_addr: str) -> PfRecord:
        for rec in self.state.pfs:
            if rec.pci_address == pf_addr:
                return rec
        raise ConfigError(f"{pf_addr} is not a PF of the simulated host")

    def _bond(self, name: str, members: list[str], mode: str) -> None:
        bond = self.root / "devices" / "virtual" / "net" / name
        modes = {"active-backup": 1, "balance-xor": 2, "802.3ad": 4}
        self._write(bond / "bonding" / "slaves", " ".join(members))
        self._write(bond / "bonding" / "mode", f"{mode} {modes[mode]}")
        self._write(bond / "type", str(ARPHRD_ETHER))
        self._write(bond / "operstate", "up")
        self._write(bond / "carrier", "1")
        first = next((d for d in self.state.netdevs if d.ifname in members), None)
        self._write(bond / "address", first.mac if first else "00:00:00:00:00:00")
        self._write(bond / "ifindex", str(self.state.next_ifindex))
        self.state.next_ifindex += 1
        self._link(self.root / "class" / "net" / name, bond)
        for m in members:
            member = (self.root / "class" / "net" / m).resolve()
            if not member.is_dir():
                raise ConfigError(f"bond {name}: member {m} is not a netdev of the host")
            self._link(member / "master", bond)
            self._link(bond / f"lower_{m}", member)
            self._link(member / f"upper_{name}", bond)
            self._write(member / "bonding_slave" / "state", "active")


def write_tree(spec: HostSpec, root: str | Path, netns: str | None = None) -> SimState:
    """Write the whole tree for ``spec`` under ``root`` (replacing an earlier simulation)."""
    from sriov.hostd.simulator.spec import validate

    validate(spec)
    return TreeWriter(root, SimState(spec=spec, netns=netns)).write_all()
