"""Each PF's VF table as last read, for discovery: PF capabilities and each VF's actual config.

Decoding a PF's ``IFLA_VFINFO_LIST`` costs ~25 ms per PF on the simulator (0.5 ms per VF on
a real 128-VF table), too much for every discovery. A real PF announces a change of its VF
table with an ``RTM_NEWLINK`` for the PF, so the last table read is kept until that PF's
link notification (or a watcher resync, or hostd's own change) marks it stale. Without a
link watcher nothing would mark it stale, so then every discovery reads afresh.
"""

from __future__ import annotations

import logging

import msgspec

from sriov.common.schemas import VfConfig
from sriov.hostd.discovery import Discovery
from sriov.hostd.vfconfig import VfConfigurator, capabilities_for
from sriov.hostd.vfconfig import netlink as nl

log = logging.getLogger(__name__)


class VfTables:
    def __init__(self, cfg: VfConfigurator, *, cached: bool) -> None:
        self.cfg = cfg
        self.cached = cached
        self._tables: dict[str, dict[int, VfConfig]] = {}
        self._stale: set[str] = set()
        self.reads = 0

    def stale(self, pf: str | None = None) -> None:
        """The PF's table changed (``None``: every PF's, after a resync)."""
        if pf is None:
            self._stale.update(self._tables)
        else:
            self._stale.add(pf)

    async def table(self, pf: str, ifname: str) -> dict[int, VfConfig]:
        """The PF's VF table (drivers not filled in), from the cache while it is current."""
        if self.cached and pf in self._tables and pf not in self._stale:
            return self._tables[pf]
        # cleared before the read: a notification during the read marks it stale again
        self._stale.discard(pf)
        table = nl.vf_table(await self.cfg.table.link(ifname))
        self.reads += 1
        self._tables[pf] = table
        return table

    async def annotate(self, found: Discovery) -> None:
        """Fill in each PF's capabilities and each VF's actual configuration (its driver as
        discovery saw it). A PF whose table cannot be read leaves its VFs' ``actual`` None."""
        tables: dict[str, dict[int, VfConfig]] = {}
        for pf in found.pfs:
            pf.capabilities = capabilities_for(pf.driver)
            if not (pf.sriov and pf.num_vfs and pf.ifname):
                continue
            try:
                tables[pf.pci_address] = await self.table(pf.pci_address, pf.ifname)
            except Exception as exc:  # a PF without a VF table: reported as not read
                log.debug("VF table of %s not read: %s", pf.ifname, exc)
        for vf in found.vfs:
            row = tables.get(vf.pf_pci_address, {}).get(vf.vf_index)
            if row is not None:
                vf.actual = msgspec.structs.replace(row, driver=vf.driver)
