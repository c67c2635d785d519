"""The whole system (:class:`~sriov.devtools.launcher.Stack`) with handles to hurt it.

What the fault suite and the soak add to the launcher: NATS is the caller's 3-node cluster
with streams replicated 3 times, PostgreSQL a restartable server the tests own, two replicas
of inventory and scheduler, a short offload audit; and processes can be frozen (SIGSTOP) and
revived after a test that failed half-way. :func:`whole_system` builds all of it (the fault
suite's fixtures and ``soak.py`` both use it).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sriov.devtools.cluster import NatsCluster, start_nats_cluster
from sriov.devtools.embedded import PostgresServer
from sriov.devtools.launcher import Stack, running

GUIDE_VFS = 15  # the guide's host.conf enables SR-IOV on eth1 (8 ConnectX-5 VFs) and eth2 (7 I350)


class Fleet(Stack):
    @property
    def host_id(self) -> str:
        return self.sim_hosts[0].host_id

    def pause(self, name: str) -> None:
        os.killpg(self.proc(name).popen.pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.killpg(self.proc(name).popen.pid, signal.SIGCONT)

    def revive(self) -> list[str]:
        """Restart whatever died (so one failed test does not break the next ones)."""
        names = [p.name for p in self.dead()]
        for name in names:
            self.restart(name)
        if names:
            self.wait_announced()
        return names


@contextlib.contextmanager
def running_fleet(
    base: Path,
    nats_urls: list[str],
    pg: PostgresServer,
    stream_replicas: int = 1,
    replicas: int = 2,
    inventory_args: tuple[str, ...] = (),
    hosts: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[Fleet]:
    fleet = Fleet(
        base, replicas=replicas, hosts=hosts, quiet=True,
        extra_env={"SRIOV_LOG_LEVEL": "INFO", **(env or {})},
        nats_urls=nats_urls, pg=pg, stream_replicas=stream_replicas,
        inventory_args=inventory_args, audit_interval=5,
    )  # fmt: skip
    with running(fleet):
        fleet.wait_announced()  # the first fault must not catch a service mid-start
        yield fleet


@dataclass
class System:
    cluster: NatsCluster
    pg: PostgresServer
    fleet: Fleet


@contextlib.contextmanager
def whole_system(
    base: Path,
    hosts: int = 1,
    pg_settings: dict[str, str] | None = None,
    partitionable: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[System]:
    """A 3-node NATS cluster (each node in a network namespace of its own when
    ``partitionable``), a durable PostgreSQL and the fleet on them, stopped in reverse order."""
    cluster = start_nats_cluster(base / "cluster", netns=partitionable)
    try:
        # durable: the embedded default for tests turns synchronous_commit off, and a crash
        # then loses commits whose replies were already sent (not a fault a real deployment has)
        pg = PostgresServer(data_dir=base / "pg", durable=True, settings=pg_settings or {})
        pg.start()
        try:
            # a short ack wait, so a batch held by a killed or frozen replica comes back quickly
            with running_fleet(
                base / "fleet", cluster.urls, pg, stream_replicas=3,
                inventory_args=("--ack-wait", "5"), hosts=hosts, env=env,
            ) as fleet:  # fmt: skip
                yield System(cluster, pg, fleet)
        finally:
            pg.stop()
    finally:
        cluster.stop()
