"""The PF's VF table over rtnetlink: ``RTM_SETLINK`` requests out, ``IFLA_VFINFO_LIST`` in.

A request carries one setting (as the SR-IOV CNI sends them, one call each): the kernel's
``do_setvfinfo`` stops at the first attribute a driver refuses, so one setting per message
is what lets an error name the setting. Messages are pyroute2's own ``ifinfmsg``; the
same message goes to the kernel or, on a simulated host, to the simulated PF driver
(:class:`VfTable` is that one seam).
"""

from __future__ import annotations

import asyncio
import errno
from typing import Any, Protocol

from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_SETLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from sriov.common.errors import NotFound
from sriov.common.schemas import VfConfig, VfLinkState
from sriov.hostd.nsock import async_iproute

ETH_P_8021Q, ETH_P_8021AD = 0x8100, 0x88A8
PROTO = {"802.1Q": ETH_P_8021Q, "802.1ad": ETH_P_8021AD}
LINK_STATE: dict[VfLinkState, int] = {"auto": 0, "enable": 1, "disable": 2}  # IFLA_VF_LINK_STATE_*
LINK_STATE_NAME: dict[int, VfLinkState] = {v: k for k, v in LINK_STATE.items()}
RTEXT_FILTER_VF, RTEXT_FILTER_SKIP_STATS = 1, 8
ZERO_MAC = "00:00:00:00:00:00"
#: A u32 the kernel reports for a flag the driver did not fill in (``ivi.spoofchk = -1``).
UNREPORTED = 0xFFFFFFFF
#: The VfConfig settings each request carries, in the order the SR-IOV CNI applies them.
GROUPS: dict[str, tuple[str, ...]] = {
    "vlan": ("vlan", "qos", "vlan_proto"),
    "mac": ("mac",),
    "rate": ("min_tx_rate", "max_tx_rate"),
    "spoof_check": ("spoof_check",),
    "trust": ("trust",),
    "link_state": ("link_state",),
}


def vf_attr(group: str, vf: int, cfg: VfConfig) -> tuple[str, dict[str, Any]]:
    """The ``IFLA_VF_*`` attribute that sets one group of ``cfg`` on VF ``vf``."""
    if group == "vlan":
        info = {"vf": vf, "vlan": cfg.vlan, "qos": cfg.qos, "proto": PROTO[cfg.vlan_proto]}
        return ("IFLA_VF_VLAN_LIST", {"attrs": [("IFLA_VF_VLAN_INFO", info)]})
    if group == "mac":
        return ("IFLA_VF_MAC", {"vf": vf, "mac": cfg.mac or ZERO_MAC})
    if group == "rate":
        return (
            "IFLA_VF_RATE",
            {"vf": vf, "min_tx_rate": cfg.min_tx_rate, "max_tx_rate": cfg.max_tx_rate},
        )
    if group == "spoof_check":
        return ("IFLA_VF_SPOOFCHK", {"vf": vf, "spoofchk": int(cfg.spoof_check)})
    if group == "trust":
        return ("IFLA_VF_TRUST", {"vf": vf, "trust": int(cfg.trust)})
    if group == "link_state":
        return ("IFLA_VF_LINK_STATE", {"vf": vf, "link_state": LINK_STATE[cfg.link_state]})
    raise ValueError(f"unknown VF setting group {group!r}")


def setlink(pf_index: int, attrs: list[tuple[str, dict[str, Any]]]) -> ifinfmsg:
    """An ``RTM_SETLINK`` body for the PF carrying one ``IFLA_VF_INFO`` with ``attrs``."""
    msg = ifinfmsg()
    msg["family"] = 0
    msg["index"] = pf_index
    msg["attrs"] = [("IFLA_VFINFO_LIST", {"attrs": [("IFLA_VF_INFO", {"attrs": attrs})]})]
    return msg


def parse_request(data: bytes) -> ifinfmsg:
    """Decode a request's bytes with pyroute2's own parser (what the kernel would read)."""
    msg = ifinfmsg(data)
    msg.decode()
    return msg


def vf_infos(msg: Any) -> list[Any]:
    """The ``IFLA_VF_INFO`` entries of an ifinfmsg (request or RTM_NEWLINK)."""
    vfl = msg.get_attr("IFLA_VFINFO_LIST")
    return list(vfl.get_attrs("IFLA_VF_INFO")) if vfl is not None else []


def config_from_vfinfo(info: Any) -> tuple[int, VfConfig]:
    """One ``IFLA_VF_INFO`` as the kernel reports it -> (VF index, its config; driver None)."""
    mac_attr = info.get_attr("IFLA_VF_MAC")
    vf = int(mac_attr["vf"])
    mac = str(mac_attr["mac"]).lower()
    vlan, qos, proto = 0, 0, ETH_P_8021Q
    vlist = info.get_attr("IFLA_VF_VLAN_LIST")
    entries = list(vlist.get_attrs("IFLA_VF_VLAN_INFO")) if vlist is not None else []
    if entries:
        vlan, qos, proto = entries[0]["vlan"], entries[0]["qos"], entries[0]["proto"]
    elif (legacy := info.get_attr("IFLA_VF_VLAN")) is not None:
        vlan, qos = legacy["vlan"], legacy["qos"]
    rate = info.get_attr("IFLA_VF_RATE")
    spoof = info.get_attr("IFLA_VF_SPOOFCHK")
    trust = info.get_attr("IFLA_VF_TRUST")
    link = info.get_attr("IFLA_VF_LINK_STATE")
    cfg = VfConfig(
        mac=None if mac == ZERO_MAC else mac,
        vlan=vlan,
        qos=qos,
        vlan_proto="802.1ad" if proto == ETH_P_8021AD else "802.1Q",
        # a flag the driver does not report reads as its baseline (PfCapabilities says
        # the driver cannot set it either)
        spoof_check=True
        if spoof is None or spoof["spoofchk"] == UNREPORTED
        else bool(spoof["spoofchk"]),
        trust=False if trust is None or trust["trust"] == UNREPORTED else bool(trust["trust"]),
        link_state=LINK_STATE_NAME.get(link["link_state"], "auto") if link is not None else "auto",
        min_tx_rate=rate["min_tx_rate"] if rate is not None else 0,
        max_tx_rate=rate["max_tx_rate"] if rate is not None else 0,
        driver=None,
    )
    return vf, cfg


def vf_table(msg: Any) -> dict[int, VfConfig]:
    """Every VF of a PF's ``RTM_NEWLINK`` (asked for with ``RTEXT_FILTER_VF``)."""
    return dict(config_from_vfinfo(info) for info in vf_infos(msg))


class VfTable(Protocol):
    """The seam between hostd and the PF driver: send a request, read the PF's link."""

    async def send(self, pf_ifname: str, msg: ifinfmsg) -> None: ...

    async def link(self, pf_ifname: str) -> Any:
        """The PF's RTM_NEWLINK with its VF table, parsed (its ``index`` addresses requests)."""
        ...

    async def index(self, pf_ifname: str) -> int: ...


class NetlinkVfTable:
    """The kernel's: requests go to rtnetlink in the host's namespace."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._ipr: Any = None
        self._lock = asyncio.Lock()

    def _sock(self) -> Any:
        if self._ipr is None:
            self._ipr = async_iproute(self.netns)
        return self._ipr

    async def index(self, pf_ifname: str) -> int:
        async with self._lock:
            found = await self._sock().link_lookup(ifname=pf_ifname)
        if not found:
            raise NotFound(f"PF netdev {pf_ifname} does not exist", field="pf")
        return int(found[0])

    async def send(self, pf_ifname: str, msg: ifinfmsg) -> None:
        async with self._lock:
            async for _ in await self._sock().nlm_request(
                msg, RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK
            ):
                pass

    async def link(self, pf_ifname: str) -> Any:
        # by name: one round trip (the reply names the ifindex the requests then use)
        async with self._lock:
            try:
                found = await self._sock().link(
                    "get", ifname=pf_ifname, ext_mask=RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS
                )
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise
                raise NotFound(f"PF netdev {pf_ifname} does not exist", field="pf") from None
        return found[0]

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
