"""The service scaffolding: a crashed background loop stops the service with an error."""

from __future__ import annotations

import asyncio

import pytest

from sriov.common import runtime
from sriov.common.config import from_env


async def test_crashed_loop_stops_the_service_with_a_failure(nats_url: str) -> None:
    settings = from_env(runtime.BusSettings, nats_url=nats_url, instance_id="t1")

    async def boom() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("lost the database")

    async def body(ctx: runtime.ServiceContext) -> None:
        ctx.spawn(boom(), "relay")

    with pytest.raises(runtime.ServiceFailed, match="relay crashed"):
        await asyncio.wait_for(runtime.serve("sriov-test", "test", settings, body), 20)


async def test_stop_event_ends_the_service_cleanly(nats_url: str) -> None:
    settings = from_env(runtime.BusSettings, nats_url=nats_url, instance_id="t2")
    stop = asyncio.Event()
    started = asyncio.Event()

    async def body(ctx: runtime.ServiceContext) -> None:
        ctx.spawn(asyncio.sleep(3600), "idle")
        started.set()

    task = asyncio.create_task(runtime.serve("sriov-test", "test", settings, body, stop=stop))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 15)
