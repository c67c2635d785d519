"""The simulated PF driver's VF table: the one boundary where a simulated host stands in.

A veth "PF" refuses ``IFLA_VFINFO_LIST`` writes and reports no VF table, so on a simulated
host hostd's real request (an ``ifinfmsg``, encoded to the bytes the kernel would read) is
handed here instead of to the socket. It is decoded with pyroute2's parser, checked as the
PF's driver would check it (the errno of its ``ndo_set_vf_*``), kept with the simulator's
state (like ``sriov_numvfs``), mirrored onto the VF's veth where the VF has a netdev, and
announced as the kernel announces it on a real PF: an ``RTM_NEWLINK`` for the PF (here by
changing the PF veth's ifalias). Reads return an ``RTM_NEWLINK`` with the VF table, built
and parsed with pyroute2 exactly like the kernel's.
"""

from __future__ import annotations

import asyncio
import errno
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from sriov.common.errors import ConfigError, NotFound
from sriov.common.schemas import VfConfig, clean_config
from sriov.hostd.nsock import async_iproute, iproute
from sriov.hostd.simulator import models
from sriov.hostd.simulator.netdevs import _off_loop, peer_name
from sriov.hostd.simulator.spec import ports_of
from sriov.hostd.simulator.tree import PfRecord, SimState, load_state, save_state, state_lock
from sriov.hostd.vfconfig import netlink as nl
from sriov.hostd.vfconfig.capabilities import capabilities_for


def _pf(state: SimState, key: str) -> PfRecord:
    for rec in state.pfs:
        if key in (rec.pci_address, rec.ifname):
            return rec
    raise NotFound(f"{key} is not a PF of the simulated host", field="pf")


def _num_vfs(state: SimState, rec: PfRecord) -> int:
    return ports_of(state.spec, state.spec.cards[rec.card])[rec.port].num_vfs


def table(state: SimState, rec: PfRecord) -> list[VfConfig]:
    """The PF's VF table (created at the baseline the first time it is needed)."""
    rows = state.vf_table.get(rec.pci_address)
    if rows is None or len(rows) != _num_vfs(state, rec):
        rows = state.vf_table[rec.pci_address] = [
            clean_config() for _ in range(_num_vfs(state, rec))
        ]
    return rows


class _Links:
    """One netlink socket for everything a request does to the host's veths."""

    def __init__(self, root: str, netns: str | None) -> None:
        self.root = root
        self.netns = netns
        self.ipr: Any = iproute(netns) if netns else None

    def __enter__(self) -> _Links:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ipr is not None:
            self.ipr.close()

    def index(self, ifname: str) -> int | None:
        """The veth's ifindex (on a tree without netdevs, the tree's ``ifindex``)."""
        if self.ipr is None:
            path = Path(self.root) / "class" / "net" / ifname / "ifindex"
            return int(path.read_text()) if path.exists() else None
        found = self.ipr.link_lookup(ifname=ifname)
        return int(found[0]) if found else None

    def set_veth(self, ifname: str, mac: str | None, up: bool | None) -> None:
        index = self.index(ifname)
        if index is not None and mac:
            self.ipr.link("set", index=index, address=mac)
        peer = self.index(peer_name(ifname))
        if peer is not None and up is not None:
            self.ipr.link("set", index=peer, state="up" if up else "down")

    def perform(self, effects: Effects) -> None:
        for ifname, mac, up in effects.veths:
            self.set_veth(ifname, mac, up)
        self.announce(effects.pf_ifname, effects.changes)

    def announce(self, ifname: str, changes: int) -> None:
        """An RTM_NEWLINK for the PF, as the kernel sends after a VF change on a real PF."""
        index = self.index(ifname)
        if self.ipr is not None and index is not None:
            self.ipr.link("set", index=index, ifalias=f"sriov-sim vf-table {changes}")


def _ifindex(root: str, netns: str | None, ifname: str) -> int:
    with _Links(root, netns) as links:
        index = links.index(ifname)
    if index is None:
        raise NotFound(f"{ifname} has no netdev on the simulated host", field="pf")
    return index


def _apply(caps_driver: str, row: VfConfig, name: str, attr: Any) -> None:
    """One ``IFLA_VF_*`` attribute, checked as the PF driver's ``ndo_set_vf_*`` checks it."""
    caps = capabilities_for(caps_driver)
    if name == "IFLA_VF_MAC":
        mac = str(attr["mac"]).lower()
        if int(mac[:2], 16) & 1:
            raise NetlinkError(errno.EINVAL, "multicast MAC")
        row.mac = None if mac == nl.ZERO_MAC else mac
    elif name == "IFLA_VF_VLAN_LIST":
        info = next(iter(attr.get_attrs("IFLA_VF_VLAN_INFO")))
        if info["vlan"] > 4095 or info["qos"] > 7:
            raise NetlinkError(errno.EINVAL, "vlan or qos out of range")
        if info["proto"] == nl.ETH_P_8021AD and not caps.vlan_8021ad:
            raise NetlinkError(errno.EPROTONOSUPPORT, "802.1ad")
        row.vlan, row.qos = info["vlan"], info["qos"]
        row.vlan_proto = "802.1ad" if info["proto"] == nl.ETH_P_8021AD else "802.1Q"
    elif name == "IFLA_VF_VLAN":
        row.vlan, row.qos, row.vlan_proto = attr["vlan"], attr["qos"], "802.1Q"
    elif name == "IFLA_VF_RATE":
        if attr["min_tx_rate"] and not caps.min_tx_rate:
            raise NetlinkError(errno.EINVAL, "min tx rate")
        row.min_tx_rate, row.max_tx_rate = attr["min_tx_rate"], attr["max_tx_rate"]
    elif name == "IFLA_VF_SPOOFCHK":
        row.spoof_check = bool(attr["spoofchk"])
    elif name == "IFLA_VF_TRUST":
        row.trust = bool(attr["trust"])
    elif name == "IFLA_VF_LINK_STATE":
        if not caps.link_state:
            raise NetlinkError(errno.EOPNOTSUPP, "link state")
        row.link_state = nl.LINK_STATE_NAME[attr["link_state"]]
    else:
        raise NetlinkError(errno.EOPNOTSUPP, name)


@dataclass
class Effects:
    """What the kernel does around a VF-table change: the VF netdevs it updates and the
    RTM_NEWLINK it sends for the PF."""

    pf_ifname: str
    changes: int
    veths: list[tuple[str, str | None, bool]] = field(default_factory=list)
    """(VF netdev, MAC the PF pushed, carrier) for each VF that has a netdev."""


def receive(
    root: str, data: bytes, index_of: Callable[[str], int | None]
) -> tuple[Effects | None, NetlinkError | None]:
    """The simulated PF driver receiving an ``RTM_SETLINK`` with ``IFLA_VFINFO_LIST``:
    the table is kept, and what was applied before a refusal stays applied (as in the
    kernel). Returns the effects to carry out and the error to report, if any."""
    msg = nl.parse_request(data)
    with state_lock(root):
        return _receive(root, msg, index_of)


def _receive(
    root: str, msg: ifinfmsg, index_of: Callable[[str], int | None]
) -> tuple[Effects | None, NetlinkError | None]:
    state = load_state(root)
    rec = next((r for r in state.pfs if index_of(r.ifname) == msg["index"]), None)
    if rec is None:
        return None, NetlinkError(errno.ENODEV, f"no PF with ifindex {msg['index']}")
    pf_driver = models.model(state.spec.cards[rec.card].model).pf_driver
    rows = table(state, rec)
    touched: set[int] = set()
    error: NetlinkError | None = None
    try:
        for info in nl.vf_infos(msg):
            for name, attr in info["attrs"]:
                vf = _vf_of(attr)
                if vf >= len(rows):
                    raise NetlinkError(errno.EINVAL, f"no VF {vf}")
                fault = state.vf_faults.get(f"{rec.pci_address}/{vf}/{name}")
                if fault:
                    raise NetlinkError(fault, f"injected fault on {name}")
                _apply(pf_driver, rows[vf], name, attr)
                touched.add(vf)
    except NetlinkError as exc:
        error = exc
    if not touched:
        return None, error
    state.vf_table_changes += 1
    save_state(root, state)
    return _effects(state, rec, sorted(touched)), error


@_off_loop
def setlink(root: str, data: bytes) -> None:
    """:func:`receive`, then its effects, over one synchronous netlink socket."""
    state = load_state(root)
    with _Links(root, state.netns) as links:
        effects, error = receive(root, data, links.index)
        if effects is not None:
            links.perform(effects)
    if error is not None:
        raise error


def _vf_of(attr: Any) -> int:
    if "vf" in attr:
        return int(attr["vf"])
    return int(next(iter(attr.get_attrs("IFLA_VF_VLAN_INFO")))["vf"])


def _effects(state: SimState, rec: PfRecord, vfs: list[int]) -> Effects:
    """What the VF's netdev shows: the PF driver pushes the MAC and forces the link."""
    effects = Effects(rec.ifname, state.vf_table_changes)
    spec = state.spec
    for vf in vfs:
        ifname = spec.vf_ifname.format(pf=rec.ifname, vf=vf)
        if not any(d.ifname == ifname for d in state.netdevs):
            continue  # bound to vfio-pci (or unbound): no netdev
        row = state.vf_table[rec.pci_address][vf]
        port_up = ports_of(spec, spec.cards[rec.card])[rec.port].link == "up"
        up = {"auto": port_up, "enable": True, "disable": False}[row.link_state]
        effects.veths.append((ifname, row.mac, up))
    return effects


def getlink(root: str, pf: str, index: int = 0) -> Any:
    """The PF's RTM_NEWLINK with ``IFLA_VFINFO_LIST`` (as ``rtnl_fill_vfinfo`` fills it);
    ``index`` is the PF's ifindex to report. Parsed afresh each time, as hostd parses the
    kernel's reply."""
    state = load_state(root)
    rec = _pf(state, pf)
    rows = table(state, rec)
    return nl.parse_request(_encoded(rec.ifname, index, msgspec.json.encode(rows)))


@functools.lru_cache(maxsize=64)
def _encoded(ifname: str, index: int, rows_json: bytes) -> bytes:
    """The reply's bytes for a table (the kernel builds them in C; pyroute2's encoder took
    most of a simulated read, so an unchanged table is not encoded again)."""
    rows = msgspec.json.decode(rows_json, type=list[VfConfig])
    infos = []
    for vf, row in enumerate(rows):
        infos.append(
            ("IFLA_VF_INFO", {"attrs": [
                ("IFLA_VF_MAC", {"vf": vf, "mac": row.mac or nl.ZERO_MAC}),
                ("IFLA_VF_VLAN", {"vf": vf, "vlan": row.vlan, "qos": row.qos}),
                ("IFLA_VF_VLAN_LIST", {"attrs": [("IFLA_VF_VLAN_INFO", {
                    "vf": vf, "vlan": row.vlan, "qos": row.qos,
                    "proto": nl.PROTO[row.vlan_proto]})]}),
                ("IFLA_VF_TX_RATE", {"vf": vf, "tx_rate": row.max_tx_rate}),
                ("IFLA_VF_RATE", {"vf": vf, "min_tx_rate": row.min_tx_rate,
                                  "max_tx_rate": row.max_tx_rate}),
                ("IFLA_VF_SPOOFCHK", {"vf": vf, "spoofchk": int(row.spoof_check)}),
                ("IFLA_VF_LINK_STATE", {"vf": vf,
                                        "link_state": nl.LINK_STATE[row.link_state]}),
                ("IFLA_VF_TRUST", {"vf": vf, "trust": int(row.trust)}),
            ]})
        )  # fmt: skip
    msg = ifinfmsg()
    msg["index"] = index
    msg["attrs"] = [
        ("IFLA_IFNAME", ifname),
        ("IFLA_NUM_VF", len(rows)),
        ("IFLA_VFINFO_LIST", {"attrs": infos}),
    ]
    msg.encode()
    return bytes(msg.data)


class SimulatedVfTable:
    """hostd's :class:`~sriov.hostd.vfconfig.netlink.VfTable` on a simulated host: requests
    go to :func:`receive`; the veth side of it uses one asynchronous netlink socket."""

    def __init__(self, root: str, netns: str | None) -> None:
        self.root = root
        self.netns = netns
        self._ipr: Any = None
        self._lock = asyncio.Lock()  # the state file is read-modify-written
        self._index: dict[str, int] = {}
        """PF veth -> its ifindex as the last read of its table reported it."""

    def _sock(self) -> Any:
        if self._ipr is None:
            self._ipr = async_iproute(self.netns)
        return self._ipr

    async def index(self, pf_ifname: str) -> int:
        if self.netns is None:
            return await asyncio.to_thread(_ifindex, self.root, None, pf_ifname)
        found = await self._sock().link_lookup(ifname=pf_ifname)
        if not found:
            raise NotFound(f"{pf_ifname} has no veth in namespace {self.netns}", field="pf")
        return int(found[0])

    async def send(self, pf_ifname: str, msg: ifinfmsg) -> None:
        # a request names the ifindex a read reported: the kernel resolves that, not a name
        index = self._index.get(pf_ifname) or await self.index(pf_ifname)
        msg.encode()
        async with self._lock:
            effects, error = receive(self.root, bytes(msg.data), {pf_ifname: index}.get)
            if effects is not None and self.netns is not None:
                await self._perform(effects)
        if error is not None:
            raise error

    async def _perform(self, effects: Effects) -> None:
        ipr = self._sock()
        for ifname, mac, up in effects.veths:
            found = await ipr.link_lookup(ifname=ifname)
            if found and mac:
                await ipr.link("set", index=found[0], address=mac)
            peer = await ipr.link_lookup(ifname=peer_name(ifname))
            if peer:
                await ipr.link("set", index=peer[0], state="up" if up else "down")
        pf = self._index.get(effects.pf_ifname) or await self.index(effects.pf_ifname)
        await ipr.link("set", index=pf, ifalias=f"sriov-sim vf-table {effects.changes}")

    async def link(self, pf_ifname: str) -> Any:
        index = self._index[pf_ifname] = await self.index(pf_ifname)
        async with self._lock:
            return getlink(self.root, pf_ifname, index)

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None


# --- drift and faults, for tests ---------------------------------------------------------------
@_off_loop
def ip_link_set_vf(root: str, pf: str, vf: int, **settings: Any) -> None:
    """What ``ip link set <pf> vf N vlan 7 ...`` does: one RTM_SETLINK through the kernel
    boundary (keys: ``vlan``, ``qos``, ``proto``, ``mac``, ``spoofchk``, ``trust``,
    ``link_state``, ``min_tx_rate``/``max_tx_rate``)."""
    state = load_state(root)
    rec = _pf(state, pf)
    row = msgspec.structs.replace(table(state, rec)[vf])
    names = {"spoofchk": "spoof_check", "proto": "vlan_proto"}
    for key, value in settings.items():
        setattr(row, names.get(key, key), value)
    wanted = {names.get(k, k) for k in settings}
    groups = [g for g, fields in nl.GROUPS.items() if wanted & set(fields)]
    msg = nl.setlink(
        _ifindex(root, state.netns, rec.ifname), [nl.vf_attr(g, vf, row) for g in groups]
    )
    msg.encode()
    setlink(root, bytes(msg.data))


def inject_fault(root: str, pf: str, vf: int, attr: str, err: int | None) -> None:
    """Make the simulated PF driver fail ``attr`` (``IFLA_VF_MAC``...) of one VF with ``err``
    (``None`` clears it), as a firmware that refuses a reset would."""
    with state_lock(root):
        state = load_state(root)
        key = f"{_pf(state, pf).pci_address}/{vf}/{attr}"
        if err is None:
            state.vf_faults.pop(key, None)
        else:
            state.vf_faults[key] = err
        save_state(root, state)


@_off_loop
def set_vf_veth(root: str, pf: str, vf: int, *, mac: str | None = None) -> None:
    """Change a VF's netdev directly (a guest or an operator on the VF itself)."""
    state = load_state(root)
    if state.netns is None:
        raise ConfigError("the simulated host has no namespace")
    rec = _pf(state, pf)
    with _Links(root, state.netns) as links:
        links.set_veth(state.spec.vf_ifname.format(pf=rec.ifname, vf=vf), mac, None)
