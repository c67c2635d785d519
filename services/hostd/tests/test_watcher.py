"""The netlink watcher on real veth pairs in a namespace the test creates."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest

from sriov.hostd.netview import LinkInfo
from sriov.hostd.simulator import netdevs
from sriov.hostd.simulator.tree import Netdev
from sriov.hostd.watcher import LinkWatcher

pytestmark = pytest.mark.netns


def ip(ns: str, *args: str, stdin: str | None = None) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, input=stdin, text=True)


class Recorder:
    def __init__(self) -> None:
        self.states: list[tuple[str, str]] = []
        self.topology: list[str] = []
        self.changed = asyncio.Event()

    def on_state(self, info: LinkInfo, prev: LinkInfo | None) -> None:
        self.states.append((info.ifname, info.state))
        self.changed.set()

    def on_topology(self, name: str) -> None:
        self.topology.append(name)
        self.changed.set()

    async def until(self, pred: Any, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self.changed.clear()
                await self.changed.wait()


def veth(name: str) -> Netdev:
    return Netdev(ifname=name, mac="02:00:00:00:00:01", role="vf", pci_address="0000:0a:00.2")


async def test_link_events_topology_and_overflow_resync(netns: str) -> None:
    netdevs.create([veth("eth1v0")], netns)
    rec = Recorder()
    # a tiny receive buffer so a burst overflows it (the kernel rounds it up a little)
    watcher = LinkWatcher(rec.on_state, rec.on_topology, netns=netns, rcvbuf=4096)
    await watcher.start()
    task = asyncio.create_task(watcher.run())
    try:
        assert watcher.links["eth1v0"].state == "up"
        netdevs.set_link(netns, "eth1v0", False)
        await rec.until(lambda: ("eth1v0", "down") in rec.states)
        assert watcher.links["eth1v0"].operstate == "LOWERLAYERDOWN"
        netdevs.set_link(netns, "eth1v0", True)
        await rec.until(lambda: rec.states[-1] == ("eth1v0", "up"))

        ip(netns, "link", "add", "eth1v1", "type", "veth", "peer", "name", "eth1v1-p")
        await rec.until(lambda: "eth1v1" in rec.topology)
        ip(netns, "link", "del", "eth1v1")
        await rec.until(lambda: rec.topology.count("eth1v1") == 2)

        # block the event loop while the kernel emits hundreds of messages: the socket
        # overflows (ENOBUFS); the watcher must resync and still notice the last change
        batch = "".join(f"link add x{i} type veth peer name y{i}\n" for i in range(200))
        ip(netns, "-batch", "-", stdin=batch + "link set eth1v0-p down\n")
        await rec.until(lambda: watcher.resyncs >= 1 and ("eth1v0", "down") in rec.states[2:])
        assert watcher.links["eth1v0"].state == "down"
        assert {"x0", "y199"} <= set(watcher.links)

        view = await watcher.view()
        assert view.links["eth1v0"].state == "down"
    finally:
        watcher.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_view_finds_default_route_and_addresses(netns: str) -> None:
    netdevs.create([veth("eth1"), veth("eth2")], netns)
    ip(netns, "link", "add", "br0", "type", "bridge")
    ip(netns, "link", "set", "eth1", "master", "br0")
    ip(netns, "link", "set", "br0", "up")
    ip(netns, "addr", "add", "192.168.100.111/24", "dev", "br0")
    ip(netns, "addr", "add", "10.9.0.2/24", "dev", "eth2")
    ip(netns, "route", "add", "default", "via", "10.9.0.1", "dev", "eth2")
    watcher = LinkWatcher(lambda i, p: None, lambda n: None, netns=netns)
    await watcher.start()
    try:
        view = await watcher.view()
    finally:
        watcher.close()
    assert view.default_route == {"eth2"}
    assert "192.168.100.111" in view.addresses["br0"]
    assert view.chain("eth1") == ["eth1", "br0"]
    assert view.management_reason("eth1", "192.168.100.111") == (
        "eth1 holds the management address 192.168.100.111 (through br0)"
    )
    assert view.management_reason("eth2", None) == "eth2 carries the default route"
    assert view.management_reason("eth1", None) is None
