"""The whole system (:class:`~sriov.devtools.launcher.Stack`) with handles to hurt it.

What the fault suite adds to the launcher: NATS is the caller's 3-node cluster with streams
replicated 3 times, PostgreSQL a restartable server the tests own, two replicas of inventory
and scheduler, a short offload audit; and processes can be frozen (SIGSTOP) and revived
after a test that failed half-way.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

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
        return names


@contextlib.contextmanager
def running_fleet(
    base: Path,
    nats_urls: list[str],
    pg: PostgresServer,
    stream_replicas: int = 1,
    replicas: int = 2,
    inventory_args: tuple[str, ...] = (),
) -> Iterator[Fleet]:
    fleet = Fleet(
        base, replicas=replicas, quiet=True, extra_env={"SRIOV_LOG_LEVEL": "INFO"},
        nats_urls=nats_urls, pg=pg, stream_replicas=stream_replicas,
        inventory_args=inventory_args, audit_interval=5,
    )  # fmt: skip
    with running(fleet):
        yield fleet
