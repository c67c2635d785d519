"""Network namespaces, veth pairs and real UDP traffic for tests (pyroute2 + a sender)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as _netns
from pyroute2.ethtool import Ethtool

T = TypeVar("T")

_SENDER = """
import socket, sys, time
dst, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"x" * size
s.sendto(payload, (dst, port))  # resolves the neighbour first
time.sleep(0.2)
for _ in range(count - 1):
    s.sendto(payload, (dst, port))
"""


def off_loop(fn: Callable[[], T]) -> T:
    """Run ``fn`` here, or in a worker thread when this thread runs an event loop: pyroute2's
    synchronous API drives an event loop of its own, which cannot nest in a running one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, name="pyroute2 call")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]  # type: ignore[no-any-return]


def exists(name: str) -> bool:
    return name in _netns.listnetns()


def create(name: str) -> None:
    """Create namespace ``name`` (no-op if it exists) with its loopback up."""

    def run() -> None:
        if not exists(name):
            _netns.create(name)
        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    off_loop(run)


def delete(name: str) -> None:
    """Delete a namespace; the veths and taps inside go with it."""
    if exists(name):
        with contextlib.suppress(OSError):
            _netns.remove(name)


def add_veth(ns: str, ifname: str, peer_ns: str, peer: str, peer_ip: str) -> None:
    """A veth pair created straight inside ``ns`` with its peer in ``peer_ns`` (both up)."""
    off_loop(lambda: _add_veth(ns, ifname, peer_ns, peer, peer_ip))


def _add_veth(ns: str, ifname: str, peer_ns: str, peer: str, peer_ip: str) -> None:
    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname=ifname, kind="veth", peer={"ifname": peer, "net_ns_fd": peer_ns})
        ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")
    address, prefix = peer_ip.split("/", 1)
    with IPRoute(netns=peer_ns) as ipr:
        idx = ipr.link_lookup(ifname=peer)[0]
        ipr.addr("add", index=idx, address=address, prefixlen=int(prefix))
        ipr.link("set", index=idx, state="up")
    # veth hands out packets with checksums left to "hardware"; the userspace datapath
    # forwards them as they are and the receiver drops them (TCP never connects). Compute
    # checksums in software on the sending side, as one does for OVS-DPDK labs.
    in_netns(peer_ns, lambda: _checksums_off(peer))


def _checksums_off(ifname: str) -> None:
    eth = Ethtool()
    try:
        features = eth.get_features(ifname)
        for name in ("tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6"):
            if name in features.features:
                features.features[name].enable = False
        eth.set_features(ifname, features)
    finally:
        eth.close()


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread that entered namespace ``ns`` (setns is per thread)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            _netns.setns(ns, flags=0)
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, name=f"netns {ns}")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]  # type: ignore[no-any-return]


def send_udp(ns: str, dst: str, *, count: int = 50, size: int = 100, port: int = 9999) -> None:
    """Send ``count`` UDP datagrams from inside ``ns`` (a real process in that namespace)."""
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", _SENDER]
    subprocess.run([*argv, dst, str(port), str(count), str(size)], check=True, timeout=60)
