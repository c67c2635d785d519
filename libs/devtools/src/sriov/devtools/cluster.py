"""A 3-node NATS cluster with JetStream, for failover tests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from sriov.common.bus import Bus
from sriov.common.errors import BusError, Unavailable
from sriov.devtools.embedded import NatsServer, free_port


@dataclass
class NatsCluster:
    nodes: list[NatsServer] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [n.url or f"nats://127.0.0.1:{n.port}" for n in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def restart(self, index: int) -> NatsServer:
        node = self.nodes[index]
        node.stop()
        node.proc = None
        return node.start()


def start_nats_cluster(base: Path, size: int = 3, timeout: float = 30) -> NatsCluster:
    """Start ``size`` nodes routed to each other; return once JetStream has a meta leader."""
    client_ports = [free_port() for _ in range(size)]
    cluster_ports = [free_port() for _ in range(size)]
    cluster = NatsCluster()
    for i in range(size):
        routes = ", ".join(f'"nats://127.0.0.1:{p}"' for j, p in enumerate(cluster_ports) if j != i)
        node = NatsServer(
            store_dir=base / f"n{i}",
            port=client_ports[i],
            name=f"n{i}",
            config_text=(
                f'cluster {{ name: "sriov", listen: "127.0.0.1:{cluster_ports[i]}", '
                f"routes: [{routes}] }}\n"
            ),
        )
        cluster.nodes.append(node)
        node.start()
    _wait_meta_leader(cluster, timeout)
    return cluster


def _wait_meta_leader(cluster: NatsCluster, timeout: float) -> None:
    async def probe() -> bool:
        try:
            bus = await Bus.connect(cluster.urls, name="cluster-probe", first_connect_attempts=1)
        except BusError:
            return False
        try:
            return await bus.jetstream_ready()
        finally:
            await bus.close()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(probe()):
            return
        time.sleep(0.3)
    cluster.stop()
    raise Unavailable(f"NATS cluster had no JetStream leader within {timeout}s")
