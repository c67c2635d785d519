"""Fixtures: a fleet published as inventory does, a scheduler replica, a request client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus
from sriov.scheduler.server import Replica
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
