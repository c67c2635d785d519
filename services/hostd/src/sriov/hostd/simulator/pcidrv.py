"""The simulated kernel's reaction to ``driver_override``, ``unbind`` and ``drivers_probe``.

On a real host these sysfs writes make the PCI core release a VF from its driver (its
netdev goes away) and probe it again (the driver named in ``driver_override``, or when that
is empty the one whose id table matches: the VF's netdev driver, whose netdev appears). On
a simulated tree the files are plain, so hostd's binder calls :func:`after_write` after each
write and the tree, and the VF's veth, change as the kernel would change them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sriov.hostd.simulator import models, netdevs
from sriov.hostd.simulator.spec import ports_of
from sriov.hostd.simulator.tree import (
    ARPHRD_ETHER,
    Netdev,
    PfRecord,
    SimState,
    TreeWriter,
    _vf_mac,
    load_state,
    save_state,
    state_lock,
)


def after_write(root: str, path: str, value: str) -> None:
    """React to a write of ``value`` to ``path`` (a no-op for files the kernel ignores)."""
    name = os.path.basename(path)
    address = value.strip()
    if name == "unbind":
        unbind(root, address)
    elif name == "drivers_probe":
        probe(root, address)


def _vf(root: Path, state: SimState, address: str) -> tuple[PfRecord, int] | None:
    dev = root / "bus" / "pci" / "devices" / address
    physfn = dev / "physfn"
    if not physfn.is_symlink():
        return None
    pf_dir = physfn.resolve()
    rec = next(r for r in state.pfs if r.pci_address == pf_dir.name)
    for link in pf_dir.glob("virtfn*"):
        if link.resolve().name == address:
            return rec, int(link.name.removeprefix("virtfn"))
    return None


def unbind(root: str, address: str) -> None:
    base = Path(root)
    dev = base / "bus" / "pci" / "devices" / address
    drv = dev / "driver"
    if not drv.is_symlink():
        return
    (drv.resolve() / address).unlink(missing_ok=True)
    drv.unlink()
    with state_lock(root):
        state = load_state(root)
        gone = [d for d in state.netdevs if d.pci_address == address]
        for net in (dev / "net").glob("*") if (dev / "net").is_dir() else ():
            (base / "class" / "net" / net.name).unlink(missing_ok=True)
        if (dev / "net").is_dir():
            shutil.rmtree(dev / "net")
        state.netdevs = [d for d in state.netdevs if d.pci_address != address]
        save_state(root, state)
    if state.netns and gone:
        netdevs.delete([d.ifname for d in gone], state.netns)


def probe(root: str, address: str) -> None:
    base = Path(root)
    dev = base / "bus" / "pci" / "devices" / address
    if (dev / "driver").is_symlink():
        return
    with state_lock(root):
        state = load_state(root)
        found = _vf(base, state, address)
        path = dev / "driver_override"
        override = path.read_text().strip() if path.exists() else ""
        if found is None:
            return  # only VFs are rebound by the simulator
        rec, n = found
        card = state.spec.cards[rec.card]
        model = models.model(card.model)
        driver = override or model.vf_driver
        drv_dir = base / "bus" / "pci" / "drivers" / driver
        if not drv_dir.is_dir():
            return  # no such driver loaded: the device stays unbound, as on a real host
        writer = TreeWriter(root, state)
        # relative to the device's real directory (bus/pci/devices/<addr> is itself a link), as
        # the kernel's are: discovery resolves the link from there
        writer._link(dev.resolve() / "driver", drv_dir)
        writer._link(drv_dir / address, dev)
        if driver == "vfio-pci" or card.link_type == "infiniband":
            save_state(root, state)
            return
        ifname = state.spec.vf_ifname.format(pf=rec.ifname, vf=n)
        rows = state.vf_table.get(rec.pci_address)
        mac = (rows[n].mac if rows and n < len(rows) else None) or _vf_mac(address)
        up = ports_of(state.spec, card)[rec.port].link == "up"
        writer._netdev(dev.resolve(), ifname, mac, up, False, 0)
        (dev / "net" / ifname / "type").write_text(f"{ARPHRD_ETHER}\n")
        netdev = Netdev(ifname=ifname, mac=mac, role="vf", pci_address=address, link_up=up)
        state.netdevs.append(netdev)
        save_state(root, state)
    if state.netns:
        netdevs.create([netdev], state.netns)
