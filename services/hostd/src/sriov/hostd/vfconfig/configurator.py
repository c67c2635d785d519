"""Apply a VfConfig to VF N of a PF, restore the clean baseline, and prove both by reading back.

This is what the agent calls: ``await cfg.apply(pf, n, desired)`` returns the configuration
read back from the kernel (equal to ``desired`` or an error naming the first setting that is
not); ``await cfg.restore(pf, n)`` does the same for the clean baseline, and a
:class:`VfConfigError` from it is the caller's cue to quarantine the VF.
"""

from __future__ import annotations

import asyncio
import errno
import os
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from sriov.common.errors import NotFound
from sriov.common.schemas import PfCapabilities, VfConfig, clean_config
from sriov.hostd.nsock import async_iproute
from sriov.hostd.simulator import tree as sim_tree
from sriov.hostd.sysfs import Sysfs
from sriov.hostd.vfconfig import driver as drv
from sriov.hostd.vfconfig import netlink as nl
from sriov.hostd.vfconfig.capabilities import capabilities_for
from sriov.hostd.vfconfig.errors import VfConfigError
from sriov.hostd.vfconfig.reconcile import Action, plan, resolve

#: errnos a driver returns while the VF is busy resetting (the CNI retries MAC 20 x 100 ms).
RETRY = {errno.EBUSY, errno.EAGAIN}


def vf_table_for(root: str, netns: str | None) -> nl.VfTable:
    """The kernel's VF table, or on a simulated tree the simulated PF driver's."""
    if sim_tree.is_simulated(root):
        from sriov.hostd.simulator.vftable import SimulatedVfTable

        return SimulatedVfTable(root, netns)
    return nl.NetlinkVfTable(netns)


class VfConfigurator:
    """One host's VF configurator: sysfs under ``root``, netdevs in ``netns``."""

    def __init__(
        self,
        sysfs_root: str,
        netns: str | None = None,
        *,
        table: nl.VfTable | None = None,
        retries: int = 20,
        settle_s: float = 5.0,
    ) -> None:
        self.sysfs = Sysfs(sysfs_root)
        self.netns = netns
        self.table = table if table is not None else vf_table_for(self.sysfs.root, netns)
        self.retries = retries
        self.settle_s = settle_s
        self._ipr: Any = None

    # --- what the PF is ------------------------------------------------------------------
    def pf_ifname(self, pf: str) -> str:
        name = drv.netdev_of(self.sysfs, pf)
        if name is None:
            raise NotFound(f"PF {pf} has no netdev (is its driver bound?)", field="pf")
        return name

    def capabilities(self, pf: str) -> PfCapabilities:
        return capabilities_for(drv.current_driver(self.sysfs, pf))

    def vf_address(self, pf: str, vf: int) -> str:
        link = os.path.join(self.sysfs.pci_device(pf), f"virtfn{vf}")
        if not os.path.islink(link):
            raise NotFound(f"PF {pf} has no VF {vf} ({link} is missing)", field="vf_index")
        return os.path.basename(os.readlink(link))

    # --- read ---------------------------------------------------------------------------------
    async def read(self, pf: str) -> dict[int, VfConfig]:
        """Every VF of ``pf`` as the kernel reports it, with the driver each is bound to."""
        _index, table = await self._read(pf)
        for n, cfg in table.items():
            cfg.driver = drv.current_driver(self.sysfs, self.vf_address(pf, n))
        return table

    async def read_vf(self, pf: str, vf: int) -> VfConfig:
        return (await self._read_vf(pf, vf))[1]

    async def _read(self, pf: str) -> tuple[int, dict[int, VfConfig]]:
        """(the PF's ifindex as the reply names it, its VF table without drivers)."""
        msg = await self.table.link(self.pf_ifname(pf))
        return int(msg["index"]), nl.vf_table(msg)

    async def _read_vf(self, pf: str, vf: int) -> tuple[int, VfConfig]:
        """One VF read back (the driver only of that VF: sysfs per VF adds up on big PFs)."""
        index, table = await self._read(pf)
        if vf not in table:
            raise NotFound(f"PF {pf} reports no VF {vf} in its VF table", field="vf_index")
        table[vf].driver = drv.current_driver(self.sysfs, self.vf_address(pf, vf))
        return index, table[vf]

    # --- change -------------------------------------------------------------------------------
    async def apply(self, pf: str, vf: int, desired: VfConfig) -> VfConfig:
        """Bring VF ``vf`` of ``pf`` to ``desired``; return what the kernel then reports."""
        return await self._converge(pf, vf, desired, restoring=False)

    async def restore(self, pf: str, vf: int) -> VfConfig:
        """Restore the clean baseline and verify it; a :class:`VfConfigError` means
        the VF is not clean (quarantine it)."""
        return await self._converge(pf, vf, clean_config(), restoring=True)

    async def plan(self, pf: str, vf: int, desired: VfConfig) -> list[Action]:
        """The actions :meth:`apply` would take now (for drift reports)."""
        actual = await self.read_vf(pf, vf)
        netdev = drv.netdev_of(self.sysfs, self.vf_address(pf, vf))
        mac = await self._netdev_mac(netdev) if netdev else None
        return plan(desired, actual, self.capabilities(pf), netdev_mac=mac)

    async def netdev_mac(self, address: str) -> str | None:
        """The MAC of VF ``address``'s own netdev (None: no netdev, on vfio-pci)."""
        netdev = drv.netdev_of(self.sysfs, address)
        return await self._netdev_mac(netdev) if netdev else None

    async def _converge(self, pf: str, vf: int, desired: VfConfig, *, restoring: bool) -> VfConfig:
        caps = self.capabilities(pf)
        want = resolve(desired, caps)
        address = self.vf_address(pf, vf)
        ifname = self.pf_ifname(pf)
        # the requests address the PF by the ifindex this read reports, so each one costs
        # no lookup of its own
        index, actual = await self._read_vf(pf, vf)
        netdev = drv.netdev_of(self.sysfs, address)
        mac = await self._netdev_mac(netdev) if netdev else None
        actions = plan(desired, actual, caps, netdev_mac=mac, restoring=restoring)
        for action in actions:
            where = f"PF {pf} ({ifname}) VF {vf} ({address})"
            if action.kind == "bind":
                default = desired.driver is None
                await drv.bind(
                    self.sysfs, address, action.target, default=default, timeout=self.settle_s
                )
            elif action.kind == "set":
                await self._set(ifname, index, vf, action.target, want, where)
            else:
                await self._set_netdev_mac(address, action.target, where)
        actual = await self.read_vf(pf, vf)
        diff = want.differences(actual)
        if diff:
            shown = ", ".join(
                f"{f}={getattr(actual, f)!r} (wanted {getattr(want, f)!r})" for f in diff
            )
            raise VfConfigError(
                f"PF {pf} VF {vf} ({address}) reads back {shown}",
                field=diff[0],
                pci_address=address,
                settings=diff,
            )
        return actual

    async def _set(
        self, ifname: str, index: int, vf: int, group: str, want: VfConfig, where: str
    ) -> None:
        for attempt in range(self.retries):
            try:
                await self.table.send(ifname, nl.setlink(index, [nl.vf_attr(group, vf, want)]))
                return
            except NetlinkError as exc:
                if exc.code in RETRY and attempt + 1 < self.retries:
                    await asyncio.sleep(0.1)
                    continue
                values = ", ".join(f"{f}={getattr(want, f)!r}" for f in nl.GROUPS[group])
                raise VfConfigError(
                    f"{where}: the PF driver refused {group} ({values}): {os.strerror(exc.code)}",
                    field=group,
                    errno=exc.code,
                ) from None

    def _sock(self) -> Any:
        if self._ipr is None:
            self._ipr = async_iproute(self.netns)
        return self._ipr

    def close(self) -> None:
        """Close the netlink sockets (the configurator's and its VF table's)."""
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        close = getattr(self.table, "close", None)
        if close is not None:
            close()

    async def _netdev_mac(self, ifname: str) -> str | None:
        try:
            found = await self._sock().link("get", ifname=ifname)
            return str(found[0].get("address")).lower()
        except NetlinkError:
            return None

    async def _set_netdev_mac(self, address: str, mac: str, where: str) -> None:
        """The VF netdev's own (effective) MAC, set and read back as the CNI does: some
        drivers (iavf) apply the PF's MAC asynchronously and refuse a change meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_s
        last = "no netdev"
        while loop.time() < deadline:
            netdev = drv.netdev_of(self.sysfs, address)
            if netdev is not None:
                ipr = self._sock()
                try:
                    found = await ipr.link_lookup(ifname=netdev)
                    if found:
                        await ipr.link("set", index=found[0], address=mac)
                        got = await ipr.link("get", index=found[0])
                        if str(got[0].get("address")).lower() == mac:
                            return
                        last = f"{netdev} reads {got[0].get('address')}"
                except NetlinkError as exc:
                    last = f"{netdev}: {os.strerror(exc.code)}"
            await asyncio.sleep(0.1)
        raise VfConfigError(f"{where}: netdev MAC {mac} not applied ({last})", field="mac")
