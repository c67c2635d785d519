"""Fixtures for hostile-input tests: the whole system (one replica of each service) on one
nats-server, built with the fault tests' fleet (``tests/faults/fleet.py``)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "faults"))

from fleet import Fleet, running_fleet

from sriov.common.bus import Bus
from sriov.devtools.embedded import NatsServer, PostgresServer


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    base = Path(tempfile.mkdtemp(prefix="sriov-hostile-"))
    try:
        with (
            NatsServer(store_dir=base / "nats") as nats,
            PostgresServer(data_dir=base / "pg", durable=False) as pg,
            running_fleet(
                base / "fleet", [nats.url], pg, replicas=1, inventory_args=("--ack-wait", "5")
            ) as f,
        ):
            yield f
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def client(fleet: Fleet) -> AsyncIterator[Bus]:
    bus = await Bus.connect(fleet.nats_urls, name="hostile-client", source="sriov/hostile")
    try:
        yield bus
    finally:
        await bus.close()
