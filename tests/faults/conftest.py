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

from fleet import Fleet, System, whole_system
from workload import FIGURES

from sriov.common.bus import Bus
from sriov.devtools.cluster import NatsCluster
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
def system(base: Path) -> Iterator[System]:
    with whole_system(base) as whole:
        yield whole


@pytest.fixture(scope="module")
def cluster(system: System) -> NatsCluster:
    return system.cluster


@pytest.fixture(scope="module")
def pg(system: System) -> PostgresServer:
    return system.pg


@pytest.fixture(scope="module")
def fleet(system: System) -> Fleet:
    return system.fleet


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
