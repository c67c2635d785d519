"""pytest plugin: real nats-server and PostgreSQL for every test suite of the project.

Fixtures start the servers from the PyPI wheels on free loopback ports, unless
``SRIOV_TEST_NATS_URL`` / ``SRIOV_TEST_DATABASE_URL`` name existing ones. Each test gets a
fresh NATS server (JetStream state never leaks between tests; it starts in ~50 ms) and a
fresh database in one PostgreSQL cluster per session.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from sriov.common.bus import Bus
from sriov.devtools.embedded import NatsServer, PostgresServer

_db_counter = itertools.count()


@pytest.fixture
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a fresh JetStream-enabled nats-server (or ``SRIOV_TEST_NATS_URL``)."""
    external = os.environ.get("SRIOV_TEST_NATS_URL")
    if external:
        yield external
        return
    server = NatsServer(store_dir=tmp_path_factory.mktemp("nats")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A fresh nats-server the test may stop, kill and restart."""
    server = NatsServer(store_dir=tmp_path_factory.mktemp("nats")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A connected :class:`Bus` with every stream provisioned."""
    b = await Bus.connect(nats_url, name="pytest", source="sriov/pytest")
    await b.ensure_streams()
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer | None]:
    if os.environ.get("SRIOV_TEST_DATABASE_URL"):
        yield None
        return
    server = PostgresServer(data_dir=tmp_path_factory.mktemp("pg"), durable=False).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(postgres_server: PostgresServer | None) -> str:
    """DSN of a new, empty database for this test."""
    external = os.environ.get("SRIOV_TEST_DATABASE_URL")
    if external:
        return external
    assert postgres_server is not None
    name = f"t{next(_db_counter)}_{uuid.uuid4().hex[:8]}"
    return postgres_server.create_database(name)
