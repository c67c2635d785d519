"""Fixtures: a fleet published as inventory does, a scheduler replica, a request client."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus
from sriov.scheduler.main import Replica
from sriov.scheduler.testing import FleetState, run_replica, settle


class Client:
    """Calls the scheduler's endpoints over NATS like any other system would."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def call(self, name: str, req: m.Message, timeout: float = 10) -> m.PlacementReply:
        subject = subjects.endpoint(subjects.SCHEDULER_GROUP, name)
        return await self.bus.request(subject, req, m.PlacementReply, timeout=timeout)

    async def place(self, guest: str, *descs: str, **kw: Any) -> m.PlacementReply:
        kw.setdefault("request_id", str(uuid.uuid4()))
        nets = [m.NetRequest(desc=d) for d in descs]
        return await self.call("place", m.PlaceRequest(guest_id=guest, nets=nets, **kw))

    async def attach(self, guest: str, desc: str, **kw: Any) -> m.PlacementReply:
        kw.setdefault("request_id", str(uuid.uuid4()))
        req = m.AttachRequest(guest_id=guest, net=m.NetRequest(desc=desc), **kw)
        return await self.call("attach", req)

    async def release(
        self, guest: str, device_id: str | None = None, **kw: Any
    ) -> m.PlacementReply:
        kw.setdefault("request_id", str(uuid.uuid4()))
        req = m.ReleaseRequest(guest_id=guest, device_id=device_id, **kw)
        return await self.call("release", req)

    async def confirm(self, guest: str, **kw: Any) -> m.PlacementReply:
        kw.setdefault("request_id", str(uuid.uuid4()))
        return await self.call("confirm", m.ConfirmRequest(guest_id=guest, **kw))

    async def get(self, guest: str) -> m.PlacementReply:
        return await self.call("get", m.GetRequest(guest_id=guest))


@pytest.fixture
def fleet(bus: Bus) -> FleetState:
    return FleetState(bus)


@pytest.fixture
def client(bus: Bus) -> Client:
    return Client(bus)


@pytest.fixture
async def replica(nats_url: str, database_url: str, bus: Bus) -> AsyncIterator[Replica]:
    async with run_replica(nats_url, database_url) as r:
        yield r


@pytest.fixture
def sync(bus: Bus, fleet: FleetState, replica: Replica) -> Any:
    """``await sync()`` publishes the fleet's changes and waits until they are projected."""

    async def go() -> None:
        await fleet.publish()
        await settle(bus, replica.projection.spec.durable)

    return go


class Replicas:
    """``sriov-scheduler`` processes, as in production (each its own connections and pool)."""

    def __init__(self, nats_url: str, database_url: str, logs: Path) -> None:
        self.nats_url, self.database_url, self.logs = nats_url, database_url, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "sriov.scheduler.main", "--database-url", self.database_url,
             "--nats-url", self.nats_url, "--instance-id", name, "--expiry-interval", "0.2",
             *extra],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "OTEL_TRACES_EXPORTER": "none", "SRIOV_LOG_LEVEL": "INFO"},
        )  # fmt: skip
        log.close()
        self.procs[name] = proc
        return proc

    async def ready(self, bus: Bus, *names: str, timeout: float = 60) -> None:
        """Until every named replica answers service discovery."""
        async with asyncio.timeout(timeout):
            while True:
                infos = await bus.discover("INFO", 0.3)
                up = {(i.get("metadata") or {}).get("instance") for i in infos}
                if set(names) <= up:
                    return
                for name in names:
                    if self.procs[name].poll() is not None:
                        log = (self.logs / f"{name}.log").read_text()[-2000:]
                        raise AssertionError(f"replica {name} exited:\n{log}")

    def kill(self, name: str) -> None:
        """SIGKILL: a crash, no clean-up of any kind."""
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture
def replicas(nats_url: str, database_url: str, tmp_path: Path) -> Iterator[Replicas]:
    r = Replicas(nats_url, database_url, tmp_path)
    try:
        yield r
    finally:
        r.stop_all()
