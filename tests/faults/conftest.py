"""Fixtures for fault tests: the whole system on a 3-node NATS cluster (streams replicated
3 times) and a restartable PostgreSQL, shared by the tests of a module (each test heals what
it broke and checks convergence before the next one starts)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fleet import Fleet, running_fleet
from workload import FIGURES

from sriov.common.bus import Bus
from sriov.devtools.cluster import NatsCluster, start_nats_cluster
from sriov.devtools.embedded import PostgresServer


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """A directory of our own: pytest's numbered temp dirs are pruned by concurrent runs."""
    path = Path(tempfile.mkdtemp(prefix="sriov-faults-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(base: Path) -> Iterator[NatsCluster]:
    nodes = start_nats_cluster(base / "cluster")
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def pg(base: Path) -> Iterator[PostgresServer]:
    # durable: the embedded default for tests turns synchronous_commit off, and a crash then
    # loses commits whose replies were already sent (not a fault a real deployment has)
    server = PostgresServer(data_dir=base / "pg", durable=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fleet(base: Path, cluster: NatsCluster, pg: PostgresServer) -> Iterator[Fleet]:
    # a short ack wait, so a batch held by a killed or frozen replica comes back quickly
    with running_fleet(
        base / "fleet", cluster.urls, pg, stream_replicas=3, inventory_args=("--ack-wait", "5")
    ) as f:
        yield f


@pytest.fixture
async def client(fleet: Fleet) -> AsyncIterator[Bus]:
    bus = await Bus.connect(fleet.nats_urls, name="fault-client", source="sriov/faults")
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture(autouse=True)
def revived(fleet: Fleet) -> Iterator[None]:
    """Each test starts with every process running, even after an earlier test failed."""
    if names := fleet.revive():
        print(f"\nrestarted after an earlier failure: {names}")
    yield


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The convergence figures, also in a run without ``-s`` (CI's)."""
    if FIGURES:
        terminalreporter.section("convergence after each fault")
        for line in FIGURES:
            terminalreporter.write_line(line)
