"""Write the sysfs layouts under this directory (run by hand; the output is committed).

``virtio-net``: copied from a real Linux VM whose NIC is virtio-net (``python capture.py
virtio-net eth0``): the netdev's device is ``.../0000:00:03.0/virtio2``, a virtio bus device
whose parent is the PCI function, whose config space is 256 bytes (conventional PCI).

``pci-no-sriov``, ``bond``, ``vf-vfio``: built here from the kernel's documented layout
(Documentation/ABI/testing/sysfs-bus-pci, sysfs-class-net, networking/bonding.rst): a PCIe
NIC without the SR-IOV capability (e1000e, 8086:10d3), an active-backup bond over an SR-IOV
PF, and a VF bound to vfio-pci (no netdev, an IOMMU group).
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
from pathlib import Path

HERE = Path(__file__).parent
#: What discovery and the doctor read of a PCI function, a virtio device and a netdev.
PCI_FILES = ("vendor", "device", "subsystem_vendor", "subsystem_device", "class", "numa_node",
             "config", "revision")  # fmt: skip
VIRTIO_FILES = ("vendor", "device")
NET_FILES = ("address", "type", "operstate", "carrier", "mtu", "ifindex")


def _copy(src: Path, dst: Path, names: tuple[str, ...]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (src / name).is_file():
            (dst / name).write_bytes((src / name).read_bytes())
    for link in ("driver", "subsystem", "device"):
        if (src / link).is_symlink():
            os.symlink(os.readlink(src / link), dst / link)


def virtio_net(ifname: str, sys_root: Path = Path("/sys")) -> None:
    out = HERE / "virtio-net" / "sys"
    shutil.rmtree(out.parent, ignore_errors=True)
    net = (sys_root / "class/net" / ifname).resolve()
    virtio = net.parent.parent
    pci = virtio.parent
    rel = lambda p: p.relative_to(sys_root)  # noqa: E731
    _copy(net, out / rel(net), NET_FILES)
    (out / rel(net) / "address").write_text("52:54:00:12:34:56\n")  # not the real MAC
    _copy(virtio, out / rel(virtio), VIRTIO_FILES)
    _copy(pci, out / rel(pci), PCI_FILES)
    _link(out / "class/net" / ifname, out / rel(net))
    _link(out / "bus/pci/devices" / pci.name, out / rel(pci))
    for drv in ("bus/pci/drivers/virtio-pci", "bus/virtio/drivers/virtio_net"):
        (out / drv).mkdir(parents=True, exist_ok=True)
        (out / drv / "bind").write_text("")  # git keeps no empty directory
    (out.parent / "cmdline").write_text("console=ttyS0 quiet reboot=k panic=1\n")
    log = [ln for ln in _dmesg() if "iommu" in ln.lower() or "DMAR" in ln]
    (out.parent / "kmsg.log").write_text("".join(f"{ln}\n" for ln in log))
    (out.parent / "host.conf").write_text(f"host_id: vm1\nsriov_nics: [{ifname}]\n")


def _dmesg() -> list[str]:
    import subprocess

    return subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()


def _link(at: Path, target: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, at.parent), at)


def _config(vendor: int, device: int, sriov: tuple[int, int] | None = None) -> bytes:
    """4096 bytes: a PCIe endpoint header, a PCIe capability, optionally SR-IOV at 0x160."""
    data = bytearray(4096)
    struct.pack_into("<HHHH", data, 0, vendor, device, 0x0406, 0x0010)  # cmd, status: caps
    data[0x0B], data[0x34] = 0x02, 0x40  # network controller; capabilities at 0x40
    data[0x40:0x42] = bytes([0x10, 0x00])  # PCI Express capability, last in the list
    if sriov is not None:
        total, offset = sriov
        struct.pack_into("<I", data, 0x100, 0x0E | (1 << 16) | (0x160 << 20))  # ARI -> SR-IOV
        struct.pack_into("<I", data, 0x160, 0x10 | (1 << 16))  # SR-IOV, last
        struct.pack_into("<HHHHH", data, 0x16C, total, total, 0, 0, 0)
        struct.pack_into("<HH", data, 0x174, offset, 1)
    return bytes(data)


def _function(root: Path, path: str, vendor: int, device: int, driver: str, **extra: str) -> Path:
    dev = root / "devices" / path
    dev.mkdir(parents=True)
    for name, value in {"vendor": f"0x{vendor:04x}", "device": f"0x{device:04x}",
                        "class": "0x020000", "numa_node": "0", **extra}.items():  # fmt: skip
        (dev / name).write_text(value + "\n")
    (root / "bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
    (root / "bus/pci/drivers" / driver / "bind").write_text("")  # git keeps no empty dir
    _link(dev / "driver", root / "bus/pci/drivers" / driver)
    _link(dev / "subsystem", root / "bus/pci")
    _link(root / "bus/pci/devices" / dev.name, dev)
    return dev


def _netdev(root: Path, dev: Path | None, ifname: str, mac: str) -> Path:
    net = (dev / "net" / ifname) if dev is not None else root / "devices/virtual/net" / ifname
    net.mkdir(parents=True)
    for name, value in {"address": mac, "type": "1", "operstate": "up", "carrier": "1"}.items():
        (net / name).write_text(value + "\n")
    if dev is not None:
        _link(net / "device", dev)
    _link(root / "class/net" / ifname, net)
    return net


def documented() -> None:
    for name in ("pci-no-sriov", "bond", "vf-vfio"):
        shutil.rmtree(HERE / name, ignore_errors=True)
    root = HERE / "pci-no-sriov" / "sys"
    dev = _function(root, "pci0000:00/0000:00:19.0", 0x8086, 0x10D3, "e1000e")
    (dev / "config").write_bytes(_config(0x8086, 0x10D3))
    _netdev(root, dev, "eno1", "52:54:00:00:00:19")
    (root.parent / "host.conf").write_text("host_id: h1\nsriov_nics: [eno1]\n")

    root = HERE / "bond" / "sys"
    pf = _function(root, "pci0000:3a/0000:3a:00.0/0000:3b:00.0", 0x15B3, 0x1017, "mlx5_core",
                   sriov_totalvfs="8", sriov_numvfs="0")  # fmt: skip
    (pf / "config").write_bytes(_config(0x15B3, 0x1017, sriov=(8, 2)))
    eth = _netdev(root, pf, "ens1f0", "52:54:00:00:3b:00")
    bond = _netdev(root, None, "bond0", "52:54:00:00:3b:00")
    (bond / "bonding").mkdir()
    (bond / "bonding" / "slaves").write_text("ens1f0\n")
    (bond / "bonding" / "mode").write_text("active-backup 1\n")
    _link(eth / "master", bond)
    (root.parent / "host.conf").write_text("host_id: h1\novs_offload_nics: [bond0]\n")

    root = HERE / "vf-vfio" / "sys"
    pf = _function(root, "pci0000:3a/0000:3a:00.0/0000:3b:00.0", 0x15B3, 0x1017, "mlx5_core",
                   sriov_totalvfs="8", sriov_numvfs="1")  # fmt: skip
    (pf / "config").write_bytes(_config(0x15B3, 0x1017, sriov=(8, 2)))
    _netdev(root, pf, "ens1f0", "52:54:00:00:3b:00")
    vf = _function(root, "pci0000:3a/0000:3a:00.0/0000:3b:00.2", 0x15B3, 0x1018, "vfio-pci")
    (vf / "config").write_bytes(_config(0x15B3, 0x1018))
    _link(pf / "virtfn0", vf)
    _link(vf / "physfn", pf)
    group = root / "kernel/iommu_groups/42"
    (group / "devices").mkdir(parents=True)
    _link(group / "devices" / vf.name, vf)
    _link(vf / "iommu_group", group)
    unit = root / "devices/virtual/iommu/dmar0"
    unit.mkdir(parents=True)
    (unit / "uevent").write_text("")
    _link(root / "class/iommu/dmar0", unit)
    (root.parent / "host.conf").write_text("host_id: h1\nsriov_nics: [ens1f0]\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["virtio-net"]:
        virtio_net(sys.argv[2] if len(sys.argv) > 2 else "eth0")
    else:
        documented()
