"""Discover the configured PFs and their VFs from sysfs (plus netlink's view of links).

One broken device never hides the others: whatever cannot be read (a missing file, a
dangling link, a config space that reads short) becomes a :class:`DeviceError` naming the
device and the path, and discovery carries on. A VF is reported only when its identity
and model are known; a VF without a netdev (bound to vfio-pci, or unbound) is normal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from sriov.common import schemas as m
from sriov.common.errors import SysfsError
from sriov.hostd import configspace
from sriov.hostd.hostconf import HostConf, configured_pfs
from sriov.hostd.netview import NetView
from sriov.hostd.pciids import PciIds
from sriov.hostd.sysfs import ARPHRD_ETHER, ARPHRD_INFINIBAND, Sysfs, link_state

_VIRTFN = re.compile(r"^virtfn(\d+)$")
CONVENTIONAL_PCI = 256
"""Config space size of a conventional (not PCIe) function: no extended capabilities."""
_PCI_ADDR = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


@dataclass
class Discovery:
    pfs: list[m.PF] = field(default_factory=list)
    vfs: list[m.VF] = field(default_factory=list)
    errors: list[m.DeviceError] = field(default_factory=list)
    settling: list[m.DeviceError] = field(default_factory=list)
    """PFs whose VFs are being created or removed right now (virtfn links disagree with
    sriov_numvfs), VF netdevs half registered; worth another look in a moment before
    telling anyone."""
    management: dict[str, str] = field(default_factory=dict)
    """PF PCI address -> why it is never reconfigured."""

    def pf(self, key: str) -> m.PF | None:
        """A PF by ifname or PCI address."""
        for pf in self.pfs:
            if key in (pf.ifname, pf.pci_address):
                return pf
        return None


class _Ctx:
    def __init__(self, sysfs: Sysfs, ids: PciIds, net: NetView | None, out: Discovery) -> None:
        self.sysfs, self.ids, self.net, self.out = sysfs, ids, net, out

    def error(
        self, address: str, exc: SysfsError | str, path: str = "", ifname: str | None = None
    ) -> None:
        message = exc.message if isinstance(exc, SysfsError) else exc
        where = str(exc.details.get("path", path)) if isinstance(exc, SysfsError) else path
        self.out.errors.append(
            m.DeviceError(pci_address=address, path=where, message=message, ifname=ifname)
        )

    def netdev_state(self, ifname: str, net_dir: str) -> tuple[str, str | None]:
        """(link state, MAC) from netlink when it knows the netdev, else from sysfs."""
        s = self.sysfs
        mac = s.read_opt(os.path.join(net_dir, "address"))
        if self.net is not None and ifname in self.net.links:
            link = self.net.links[ifname]
            return link.state, mac if mac and len(mac) > 17 else (link.mac or mac)
        state = link_state(
            s.read_opt(os.path.join(net_dir, "operstate")),
            s.read_opt(os.path.join(net_dir, "carrier")) if os.path.exists(net_dir) else None,
        )
        return state, mac


def discover(conf: HostConf, sysfs: Sysfs, ids: PciIds, net: NetView | None = None) -> Discovery:
    """Every configured PF (bonds expanded) and its VFs, with per-device errors."""
    out = Discovery()
    ctx = _Ctx(sysfs, ids, net, out)
    try:
        wanted = configured_pfs(conf, sysfs.root)
    except Exception as exc:  # an unreadable bond: report, then treat it as a plain NIC
        ctx.error("", str(exc), sysfs.path("class", "net"))
        wanted = []
    for cfg in wanted:
        _discover_pf(ctx, conf, cfg.ifname, cfg.sriov, cfg.offload, cfg.bond)
    return out


def _discover_pf(
    ctx: _Ctx, conf: HostConf, ifname: str, sriov: bool, offload: bool, bond: str | None
) -> None:
    s = ctx.sysfs
    link = s.net(ifname)
    if not os.path.lexists(link):
        ctx.error("", f"configured NIC {ifname} has no netdev ({link} is missing)", link, ifname)
        return
    net_dir = os.path.realpath(link)  # links below are relative to the real directory
    if not os.path.isdir(net_dir):
        ctx.error(
            "", f"{link} is a dangling link: its target {net_dir} does not exist", link, ifname
        )
        return
    try:
        dev = s.link_target(os.path.join(net_dir, "device"))
    except SysfsError as exc:
        ctx.error("", exc, ifname=ifname)
        return
    if dev is None:
        ctx.error("", f"{ifname} is not a PCI device (no {net_dir}/device link)", net_dir, ifname)
        return
    pci = pci_function(s, dev)
    if pci is None:
        bus = _optional(ctx, "", lambda: s.link_name(os.path.join(dev, "subsystem")), None)
        ctx.error(
            "", f"{ifname} is not a PCI device: its device {dev} is on the {bus or 'unknown'} "
            "bus, and no PCI function is above it", dev, ifname,
        )  # fmt: skip
        return
    dev = pci
    addr = os.path.basename(dev)
    try:
        vendor = s.read_hex_id(os.path.join(dev, "vendor"))
        device = s.read_hex_id(os.path.join(dev, "device"))
    except SysfsError as exc:
        ctx.error(addr, exc, ifname=ifname)
        return
    pf = m.PF(
        pci_address=addr,
        ifname=ifname,
        vendor_id=vendor,
        device_id=device,
        model=ctx.ids.model(vendor, device),
        sriov=sriov,
        offload=offload,
    )
    pf.driver = _optional(ctx, addr, lambda: s.link_name(os.path.join(dev, "driver")), None)
    pf.numa_node = _optional(ctx, addr, lambda: _numa(s, dev), -1)
    pf.link_type = _optional(ctx, addr, lambda: _link_type(s, net_dir, dev), "unknown")
    total = _optional(ctx, addr, lambda: _sriov_int(s, dev, "sriov_totalvfs"), None)
    pf.total_vfs = total or 0
    pf.num_vfs = _optional(ctx, addr, lambda: _sriov_int(s, dev, "sriov_numvfs"), None) or 0
    if total is None and not any(e.pci_address == addr for e in ctx.out.errors):
        ctx.error(
            addr,
            f"{ifname} ({addr}) has no sriov_totalvfs: the device or its driver "
            "does not support SR-IOV, or SR-IOV is off in BIOS/firmware",
            os.path.join(dev, "sriov_totalvfs"),
            ifname,
        )
    _check_config(ctx, addr, dev)
    master = _optional(ctx, addr, lambda: s.link_name(os.path.join(net_dir, "master")), None)
    if master is not None and os.path.isdir(s.path("class", "net", master, "bonding")):
        pf.bond = master
        mode = _optional(
            ctx, addr, lambda: s.read(s.path("class", "net", master, "bonding", "mode")), ""
        )
        pf.bond_mode = mode.split()[0] if mode else None
    pf.bond = pf.bond or bond
    network, inherited = conf.network_of(ifname, pf.bond)
    if network is not None:
        pf.network = network.target
        pf.wire = network.wire
        pf.bridge = None if inherited else network.bridge
    pf.link_state, pf.mac = ctx.netdev_state(ifname, net_dir)  # type: ignore[assignment]
    if ctx.net is not None:
        reason = ctx.net.management_reason(ifname, conf.management_ip)
        if reason:
            pf.management = True
            ctx.out.management[addr] = reason
    ctx.out.pfs.append(pf)
    _discover_vfs(ctx, pf, dev)


def pci_function(s: Sysfs, dev: str) -> str | None:
    """The PCI function a netdev's device is or sits below: a virtio-net device
    (``.../0000:00:03.0/virtio2``) is a child of its PCI function. None when no PCI function
    is above it (a virtual, USB or platform device)."""
    stop = s.path("devices")
    while dev.startswith(stop + os.sep):
        if _PCI_ADDR.match(os.path.basename(dev)):
            return dev
        dev = os.path.dirname(dev)
    return None


def _discover_vfs(ctx: _Ctx, pf: m.PF, dev: str) -> None:
    s = ctx.sysfs
    links = []
    for name in s.listdir(dev):
        mt = _VIRTFN.match(name)
        if mt:
            links.append((int(mt.group(1)), name))
    links.sort()
    if pf.total_vfs and len(links) != pf.num_vfs:
        ctx.out.settling.append(
            m.DeviceError(
                pci_address=pf.pci_address,
                path=os.path.join(dev, "sriov_numvfs"),
                message=f"sriov_numvfs of {pf.ifname} is {pf.num_vfs} but {len(links)} "
                "virtfn links exist (VFs being created or removed?)",
                ifname=pf.ifname,
            )
        )
    for index, name in links:
        link = os.path.join(dev, name)
        seen = len(ctx.out.errors)
        vf = _read_vf(ctx, pf, index, link, dev)
        if len(ctx.out.errors) > seen and not os.path.lexists(link):
            # the VF went away while being read (VFs being removed): not a device error
            ctx.out.settling.extend(ctx.out.errors[seen:])
            del ctx.out.errors[seen:]
            continue
        if vf is not None:
            ctx.out.vfs.append(vf)


def _read_vf(ctx: _Ctx, pf: m.PF, index: int, link: str, dev: str) -> m.VF | None:
    try:
        raw = os.readlink(link)
    except OSError as exc:
        ctx.error(pf.pci_address, f"cannot read {link}: {exc.strerror}", link)
        return None
    addr = os.path.basename(raw)
    vf_dir = os.path.normpath(os.path.join(dev, raw))
    if not os.path.isdir(vf_dir):
        ctx.error(addr, f"{link} is a dangling link: its target {vf_dir} does not exist", link)
        return None
    return _discover_vf(ctx, pf, index, addr, vf_dir)


def _discover_vf(ctx: _Ctx, pf: m.PF, index: int, addr: str, vf_dir: str) -> m.VF | None:
    s = ctx.sysfs
    try:
        vendor = s.read_hex_id(os.path.join(vf_dir, "vendor"))
        device = s.read_hex_id(os.path.join(vf_dir, "device"))
    except SysfsError as exc:
        ctx.error(addr, exc)
        return None
    vf = m.VF(
        pci_address=addr,
        pf_pci_address=pf.pci_address,
        vf_index=index,
        vendor_id=vendor,
        device_id=device,
        model=ctx.ids.model(vendor, device, vf=True),
    )
    vf.driver = _optional(ctx, addr, lambda: s.link_name(os.path.join(vf_dir, "driver")), None)
    vf.numa_node = _optional(ctx, addr, lambda: _numa(s, vf_dir), -1)
    vf.iommu_group = _optional(ctx, addr, lambda: _iommu_group(s, vf_dir), None)
    nets = _optional(ctx, addr, lambda: s.listdir(os.path.join(vf_dir, "net")), [])
    if nets:
        vf.ifname = nets[0]
        net_dir = os.path.join(vf_dir, "net", nets[0])
        vf.link_state, vf.mac = ctx.netdev_state(nets[0], net_dir)  # type: ignore[assignment]
        if not vf.mac:
            # the kernel creates a netdev's directory before its attributes (and removes them
            # first): an address not there yet is a netdev being (un)registered, not "no MAC"
            ctx.out.settling.append(
                m.DeviceError(
                    pci_address=addr,
                    path=os.path.join(net_dir, "address"),
                    message=f"netdev {nets[0]} of VF {addr} has no address yet "
                    "(being registered or removed?)",
                    ifname=nets[0],
                )
            )
            vf.mac = None
    return vf


def _optional(ctx: _Ctx, addr: str, read, default):  # type: ignore[no-untyped-def]
    """Read an attribute; a sysfs surprise is recorded and the default used."""
    try:
        return read()
    except SysfsError as exc:
        ctx.error(addr, exc)
        return default


def _numa(s: Sysfs, dev: str) -> int:
    text = s.read_opt(os.path.join(dev, "numa_node"))
    if text is None:
        return -1
    try:
        return int(text)
    except ValueError:
        raise SysfsError(
            f"{dev}/numa_node holds {text!r}, not a number", path=os.path.join(dev, "numa_node")
        ) from None


def _iommu_group(s: Sysfs, dev: str) -> int | None:
    name = s.link_name(os.path.join(dev, "iommu_group"))
    if name is None:
        return None
    try:
        return int(name)
    except ValueError:
        raise SysfsError(
            f"{dev}/iommu_group points to {name!r}, not a group number",
            path=os.path.join(dev, "iommu_group"),
        ) from None


def _link_type(s: Sysfs, net_dir: str, dev: str) -> str:
    text = s.read_opt(os.path.join(net_dir, "type"))
    if text is not None:
        if text == str(ARPHRD_INFINIBAND):
            return "infiniband"
        if text == str(ARPHRD_ETHER):
            return "ethernet"
    if os.path.isdir(os.path.join(dev, "infiniband")):
        return "infiniband"
    return "unknown" if text is None else "ethernet"


def _sriov_int(s: Sysfs, dev: str, name: str) -> int | None:
    path = os.path.join(dev, name)
    if not os.path.exists(path):
        return None
    return s.read_int(path)


def _check_config(ctx: _Ctx, addr: str, dev: str) -> None:
    """Report a config space that cannot be read or parsed (the doctor needs it)."""
    path = os.path.join(dev, "config")
    try:
        data = ctx.sysfs.read_bytes(path)
        space = configspace.parse(data)
        # 256 bytes is a conventional PCI function's whole config space (no SR-IOV possible,
        # which the doctor says); only fewer means the kernel hid the rest from a non-root
        if not space.extended_readable and len(data) != CONVENTIONAL_PCI:
            ctx.error(
                addr,
                f"config space of {addr} reads only {len(data)} bytes: extended "
                "capabilities (SR-IOV, ARI, ACS) are hidden; run hostd as root",
                path,
            )
    except SysfsError as exc:
        ctx.error(addr, f"config space unreadable: {exc.message}", path)
    except configspace.ConfigSpaceError as exc:
        ctx.error(addr, f"config space of {addr} is unusable: {exc}", path)


def snapshot(host_id: str, hostname: str, found: Discovery) -> m.HostSnapshot:
    """What hostd would publish for ``found`` (generation and seq 0: nothing was sent)."""
    return m.HostSnapshot(
        host_id=host_id, generation=0, seq=0, hostname=hostname,
        pfs=found.pfs, vfs=found.vfs, errors=found.errors,
    )  # fmt: skip


_PF_HEAD = ("PF", "IFNAME", "MODEL", "DRIVER", "NUMA", "VFS", "LINK", "ROLE")
_VF_HEAD = ("VF", "PF", "INDEX", "MODEL", "DRIVER", "IFNAME", "MAC", "IOMMU")


def render(snap: m.HostSnapshot) -> str:
    """``sriov-hostd discover``'s tables: the host id, PFs, VFs and what could not be read."""
    pfs = [_PF_HEAD, *(
        (p.pci_address, p.ifname or "-", p.model or f"{p.vendor_id}:{p.device_id}",
         p.driver or "-", str(p.numa_node), f"{p.num_vfs}/{p.total_vfs}", p.link_state,
         ",".join(r for r, on in (("sriov", p.sriov), ("offload", p.offload),
                                  ("management", p.management)) if on) or "-")
        for p in snap.pfs
    )]  # fmt: skip
    vfs = [_VF_HEAD, *(
        (v.pci_address, v.pf_pci_address, str(v.vf_index), v.model, v.driver or "-",
         v.ifname or "-", v.mac or "-", "-" if v.iommu_group is None else str(v.iommu_group))
        for v in snap.vfs
    )]  # fmt: skip
    errs = [
        ("DEVICE", "PATH", "ERROR"),
        *((e.pci_address or e.ifname or "-", e.path or "-", e.message) for e in snap.errors),
    ]
    out = [f"host_id {snap.host_id}" + (f" ({snap.hostname})" if snap.hostname else "")]
    for title, rows in (("PFs", pfs), ("VFs", vfs), ("errors", errs)):
        out += ["", f"{title}: {len(rows) - 1}"] + (_table(rows) if len(rows) > 1 else [])
    return "\n".join(out)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
