"""Real netdevs for a simulated host: one veth pair per PF/VF netdev in a namespace.

The end named like the PF or VF (``eth1``, ``eth1v0``) is what hostd watches; its peer
(``eth1-p``) stands for the wire: taking the peer down drops the carrier, so hostd sees a
real kernel netlink event, exactly as when a cable is pulled or a VF's link goes down.
Synchronous pyroute2: this is set-up code, not the daemon. Called from a thread that runs
an event loop (a test, the simulated kernel), the work moves to a helper thread, because
sync pyroute2 drives an event loop of its own.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from pyroute2 import netns
from pyroute2.netlink.exceptions import NetlinkError

from sriov.common.errors import ConfigError
from sriov.hostd.netview import link_from_msg
from sriov.hostd.nsock import iproute
from sriov.hostd.simulator.tree import Netdev

IFNAMSIZ = 15
P = ParamSpec("P")
R = TypeVar("R")


def _off_loop(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return fn(*args, **kwargs)
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(fn, *args, **kwargs).result()

    return wrapper


def peer_name(ifname: str) -> str:
    name = f"{ifname}-p"
    if len(name) <= IFNAMSIZ:
        return name
    return "p" + hashlib.sha1(ifname.encode()).hexdigest()[:12]


def ensure_netns(name: str) -> None:
    if name not in netns.listnetns():
        res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if res.returncode != 0 and name not in netns.listnetns():
            raise ConfigError(f"cannot create network namespace {name}: {res.stderr.strip()}")


def remove_netns(name: str) -> bool:
    if name in netns.listnetns():
        netns.remove(name)
        return True
    return False


@_off_loop
def create(netdevs: Iterable[Netdev], ns: str) -> int:
    """Create (or recreate) a veth pair per netdev in namespace ``ns``; returns the count."""
    ensure_netns(ns)
    count = 0
    with iproute(ns) as ipr:  # type: ignore[attr-defined]
        for dev in netdevs:
            peer = peer_name(dev.ifname)
            for name in (dev.ifname, peer):
                # looked up by name, not from a dump: decoding every link of a busy
                # namespace made each simulated rebinding tens of milliseconds slower
                for index in ipr.link_lookup(ifname=name):
                    try:
                        ipr.link("del", index=index)
                    except NetlinkError:
                        pass  # deleting one end of a veth already deleted the other
            try:
                ipr.link("add", ifname=dev.ifname, kind="veth", peer=peer)
            except NetlinkError as exc:
                raise ConfigError(f"cannot create veth {dev.ifname} in {ns}: {exc}") from exc
            idx = ipr.link_lookup(ifname=dev.ifname)[0]
            pidx = ipr.link_lookup(ifname=peer)[0]
            if dev.ethernet:
                ipr.link("set", index=idx, address=dev.mac)
            ipr.link("set", index=idx, state="up")
            if dev.link_up:
                ipr.link("set", index=pidx, state="up")
            count += 1
    return count


@_off_loop
def delete(ifnames: Iterable[str], ns: str) -> None:
    if ns not in netns.listnetns():
        return
    with iproute(ns) as ipr:  # type: ignore[attr-defined]
        for name in ifnames:
            found = ipr.link_lookup(ifname=name)
            if found:
                try:
                    ipr.link("del", index=found[0])
                except NetlinkError:
                    pass


@_off_loop
def set_link(ns: str, ifname: str, up: bool) -> None:
    """Raise or drop the carrier of ``ifname`` by moving its peer (the "cable")."""
    with iproute(ns) as ipr:  # type: ignore[attr-defined]
        found = ipr.link_lookup(ifname=peer_name(ifname))
        if not found:
            raise ConfigError(f"{ifname} has no simulated peer in namespace {ns}")
        ipr.link("set", index=found[0], state="up" if up else "down")


@_off_loop
def link_state(ns: str, ifname: str) -> str:
    """The kernel's state of ``ifname``'s link (``up``, ``down``...), as hostd derives it.

    The kernel applies carrier changes in its own time (linkwatch) and announces the state it
    finds then: toggles faster than that reach netlink listeners merged into fewer changes."""
    with iproute(ns) as ipr:  # type: ignore[attr-defined]
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise ConfigError(f"no netdev {ifname} in namespace {ns}")
        return link_from_msg(ipr.get_links(found[0])[0]).state
