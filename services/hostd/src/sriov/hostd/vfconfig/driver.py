"""Bind a VF to a driver the way the kernel wants it: driver_override, unbind, drivers_probe.

``driver_override`` makes the next probe pick exactly that driver (an empty write clears it,
so the device's own id table decides: its default driver); ``unbind`` releases the VF from
the driver it has; ``drivers_probe`` asks the PCI bus to bind it again. The VF's netdev
disappears on the unbind and appears when a netdev driver binds. On a simulated tree the
simulated kernel reacts to each write (see simulator.pcidrv).
"""

from __future__ import annotations

import asyncio
import os

from sriov.hostd.simulator import tree as sim_tree
from sriov.hostd.sysfs import Sysfs
from sriov.hostd.vfconfig.errors import VfConfigError


def current_driver(sysfs: Sysfs, address: str) -> str | None:
    link = os.path.join(sysfs.pci_device(address), "driver")
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def netdev_of(sysfs: Sysfs, address: str) -> str | None:
    """The VF's netdev name, if a netdev driver gave it one."""
    net = os.path.join(sysfs.pci_device(address), "net")
    names = sorted(os.listdir(net)) if os.path.isdir(net) else []
    return names[0] if names else None


def _write(sysfs: Sysfs, path: str, value: str) -> None:
    sysfs.write(path, value)
    if sim_tree.is_simulated(sysfs.root):
        from sriov.hostd.simulator.pcidrv import after_write

        after_write(sysfs.root, path, value)


def bind_sync(sysfs: Sysfs, address: str, driver: str, *, default: bool) -> None:
    """Blocking (sysfs writes; netlink on a simulated host): run it in a thread."""
    dev = sysfs.pci_device(address)
    _write(sysfs, os.path.join(dev, "driver_override"), "\n" if default else driver)
    bound = current_driver(sysfs, address)
    if bound is not None:
        _write(sysfs, sysfs.path("bus", "pci", "drivers", bound, "unbind"), address)
    _write(sysfs, sysfs.path("bus", "pci", "drivers_probe"), address)


async def bind(
    sysfs: Sysfs, address: str, driver: str, *, default: bool = False, timeout: float = 5.0
) -> None:
    """Bind VF ``address`` to ``driver`` (``default``: clear the override, let the kernel pick,
    and expect ``driver``) and wait until sysfs shows it bound."""
    if current_driver(sysfs, address) == driver:
        return
    await asyncio.to_thread(bind_sync, sysfs, address, driver, default=default)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while current_driver(sysfs, address) != driver:
        if loop.time() > deadline:
            hint = " (is the module loaded? modprobe vfio-pci)" if driver == "vfio-pci" else ""
            raise VfConfigError(
                f"VF {address} did not bind to {driver} within {timeout:g} s "
                f"(bound: {current_driver(sysfs, address) or 'none'}){hint}",
                field="driver",
                pci_address=address,
            )
        await asyncio.sleep(0.02)
