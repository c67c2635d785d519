"""A 3-node NATS cluster with JetStream, for failover tests.

With ``netns=True`` each node runs in a network namespace of its own, so one can be cut off
from its peers for real (:meth:`NatsCluster.partition`) while clients still reach it. Each
node has two links: ``cl0``, a veth to the root namespace that clients use (a /30 of its own
from a 10.x.y.0/24 no route of this machine uses), and ``rt0``, a veth to a bridge in a hub
namespace that carries the cluster routes (10.0.0.0/24, private to these namespaces). Taking
``rt0`` down partitions the node; ``cl0`` stays up. The routes ping every 2 s so a cut route
is noticed in seconds, not after nats-server's default two minutes.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sriov.common.bus import Bus
from sriov.common.errors import BusError, Unavailable
from sriov.devtools.embedded import NatsServer, free_port


@dataclass
class NatsCluster:
    nodes: list[NatsServer] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    """The nodes' namespaces and the hub's last (empty: every node on loopback)."""
    root_links: list[str] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [n.url or f"nats://127.0.0.1:{n.port}" for n in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        for ns in self.namespaces:  # deleting a namespace deletes its links and their peers
            _ip("netns", "del", ns, check=False)
        for link in self.root_links:
            _ip("link", "del", link, check=False)

    def partition(self, index: int, cut: bool = True) -> None:
        """Cut node ``index`` off from its peers (``cut=False`` heals); clients still reach it."""
        if not self.namespaces:
            raise ValueError("this cluster was started without network namespaces")
        _ip("-n", self.namespaces[index], "link", "set", "rt0", "down" if cut else "up")

    def restart(self, index: int) -> NatsServer:
        node = self.nodes[index]
        node.stop()
        node.proc = None
        return node.start()


def start_nats_cluster(
    base: Path, size: int = 3, timeout: float = 30, netns: bool = False
) -> NatsCluster:
    """Start ``size`` nodes routed to each other; return once JetStream has a meta leader."""
    client_ports = [free_port() for _ in range(size)]
    cluster_ports = [free_port() for _ in range(size)]
    cluster = NatsCluster()
    try:
        hosts = _namespaces(cluster, size) if netns else ["127.0.0.1"] * size
        route_ips = [f"10.0.0.{i + 1}" for i in range(size)] if netns else hosts
        for i in range(size):
            routes = ", ".join(
                f'"nats://{route_ips[j]}:{p}"' for j, p in enumerate(cluster_ports) if j != i
            )
            node = NatsServer(
                store_dir=base / f"n{i}",
                port=client_ports[i],
                host=hosts[i],
                name=f"n{i}",
                netns=cluster.namespaces[i] if netns else None,
                config_text=(
                    f'cluster {{ name: "sriov", listen: "{route_ips[i]}:{cluster_ports[i]}", '
                    f"routes: [{routes}] }}\n" + ('ping_interval: "2s"\n' if netns else "")
                ),
            )
            cluster.nodes.append(node)
            node.start()
        _wait_meta_leader(cluster, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _ip(*args: str, check: bool = True) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise Unavailable(f"ip {' '.join(args)} failed: {res.stderr.strip()}")


def _free_subnet() -> str:
    """A 10.x.y (/24) no address or route of this machine uses."""
    used = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                          text=True).stdout  # fmt: skip
    for _ in range(100):
        net = f"10.{random.randint(160, 250)}.{random.randint(0, 255)}"
        if f"{net}." not in used:
            return net
    raise Unavailable("no free 10.x.y.0/24 for the NATS cluster's client links")


def _namespaces(cluster: NatsCluster, size: int) -> list[str]:
    """Create the hub and a namespace per node (see the module's docstring); the nodes'
    client addresses."""
    tag = uuid.uuid4().hex[:6]
    hub = f"sriov-{tag}-hub"
    net = _free_subnet()
    _ip("netns", "add", hub)
    cluster.namespaces.append(hub)
    _ip("-n", hub, "link", "add", "br0", "type", "bridge")
    _ip("-n", hub, "link", "set", "br0", "up")
    addrs = []
    for i in range(size):
        ns = f"sriov-{tag}-n{i}"
        _ip("netns", "add", ns)
        cluster.namespaces.insert(i, ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        # route link: rt0 in the node, its peer on the hub's bridge
        _ip("-n", ns, "link", "add", "rt0", "type", "veth", "peer", "name", f"p{i}",
            "netns", hub)  # fmt: skip
        _ip("-n", hub, "link", "set", f"p{i}", "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"10.0.0.{i + 1}/24", "dev", "rt0")
        _ip("-n", ns, "link", "set", "rt0", "up")
        # client link: cl0 in the node, its peer in the root namespace
        root = f"sc{tag}{i}"
        _ip("link", "add", root, "type", "veth", "peer", "name", "cl0", "netns", ns)
        cluster.root_links.append(root)
        _ip("addr", "add", f"{net}.{4 * i + 1}/30", "dev", root)
        _ip("link", "set", root, "up")
        _ip("-n", ns, "addr", "add", f"{net}.{4 * i + 2}/30", "dev", "cl0")
        _ip("-n", ns, "link", "set", "cl0", "up")
        addrs.append(f"{net}.{4 * i + 2}")
    return addrs


async def _peers_ready(bus: Bus, size: int) -> bool:
    """Every node has joined: a stream replicated ``size`` times can be placed (a meta leader
    alone, elected by two nodes, refuses it with "no suitable peers")."""
    name = f"PROBE_{uuid.uuid4().hex[:8]}"
    config = {"name": name, "subjects": [f"sriov-probe.{name}"], "num_replicas": size,
              "storage": "memory"}  # fmt: skip
    try:
        reply = await bus.request_raw(f"$JS.API.STREAM.CREATE.{name}", json.dumps(config).encode())
        if b'"error"' in reply.data:
            return False
        await bus.request_raw(f"$JS.API.STREAM.DELETE.{name}", b"")
    except BusError:
        return False
    return True


def _wait_meta_leader(cluster: NatsCluster, timeout: float) -> None:
    async def probe() -> bool:
        try:
            bus = await Bus.connect(cluster.urls, name="cluster-probe", first_connect_attempts=1)
        except BusError:
            return False
        try:
            return await bus.jetstream_ready() and await _peers_ready(bus, len(cluster.nodes))
        finally:
            await bus.close()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(probe()):
            return
        time.sleep(0.3)
    cluster.stop()
    raise Unavailable(f"NATS cluster had no JetStream leader within {timeout}s")
