"""What netlink says about the host's netdevs: link states, masters, default route, addresses.

Discovery overlays this on sysfs: link state and MAC come from netlink when it knows the
netdev (sysfs files of a simulated tree are static), and a PF that carries the default
route or the management address, directly or through its bond or bridge, is marked
``management`` and never reconfigured.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from sriov.hostd.sysfs import link_state

MAIN_TABLE = 254


@dataclass(frozen=True)
class LinkInfo:
    index: int
    ifname: str
    operstate: str
    carrier: int | None
    mac: str | None
    master: int | None

    @property
    def state(self) -> str:
        return link_state(self.operstate, self.carrier)


def link_from_msg(msg: Any) -> LinkInfo:
    """A pyroute2 ifinfmsg -> LinkInfo."""
    return LinkInfo(
        index=int(msg["index"]),
        ifname=str(msg.get("ifname") or ""),
        operstate=str(msg.get("operstate") or "UNKNOWN"),
        carrier=msg.get("carrier"),
        mac=msg.get("address"),
        master=msg.get("master"),
    )


@dataclass
class NetView:
    links: dict[str, LinkInfo] = field(default_factory=dict)
    default_route: set[str] = field(default_factory=set)
    """Netdevs a default route leaves through."""
    addresses: dict[str, set[str]] = field(default_factory=dict)

    def chain(self, ifname: str) -> list[str]:
        """``ifname`` and its masters up the stack (eth1 -> bond0 -> br0)."""
        by_index = {link.index: link for link in self.links.values()}
        out = [ifname]
        link = self.links.get(ifname)
        while link is not None and link.master and link.master in by_index:
            link = by_index[link.master]
            if link.ifname in out:
                break
            out.append(link.ifname)
        return out

    def management_reason(self, ifname: str, management_ip: str | None) -> str | None:
        """Why ``ifname`` must not be reconfigured, or None."""
        for name in self.chain(ifname):
            via = "" if name == ifname else f" (through {name})"
            if name in self.default_route:
                return f"{ifname} carries the default route{via}"
            if management_ip and management_ip in self.addresses.get(name, set()):
                return f"{ifname} holds the management address {management_ip}{via}"
        return None


async def dump(ipr: Any, links: dict[str, LinkInfo] | None = None) -> NetView:
    """Dump default routes and addresses through an AsyncIPRoute, and the links unless the
    caller knows them (a link watcher does: decoding every link again doubled the cost)."""
    view = NetView()
    if links is not None:
        view.links = dict(links)
    else:
        async for msg in await ipr.link("dump"):
            link = link_from_msg(msg)
            view.links[link.ifname] = link
    names = {link.index: link.ifname for link in view.links.values()}
    for family in (socket.AF_INET, socket.AF_INET6):
        async for msg in await ipr.route("dump", family=family):
            if msg.get("dst_len") != 0 or msg.get("table") != MAIN_TABLE:
                continue
            oifs = [msg.get("oif")]
            oifs += [hop.get("oif") for hop in msg.get("multipath") or []]
            view.default_route.update(names[i] for i in oifs if i in names)
    async for msg in await ipr.addr("dump"):
        name = names.get(msg.get("index"))
        addr = msg.get("address")
        if name and addr:
            view.addresses.setdefault(name, set()).add(str(addr))
    return view
