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


async def test_http_probes_follow_the_service_lifecycle(nats_url: str) -> None:
    """--http-port 0 picks a port (announced as http_port); /readyz is 503 until the body
    registered its endpoints, then 200; /metrics is 404 without Prometheus metrics."""
    settings = from_env(runtime.BusSettings, nats_url=nats_url, instance_id="t3", http_port=0)
    stop, started, proceed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    ports: list[int] = []

    async def body(ctx: runtime.ServiceContext) -> None:
        # not announced while the body adds endpoints: discovery means "serving"
        assert [i for i in await ctx.bus.discover("INFO", 0.3) if i["name"] == "sriov-test"] == []
        ports.append(int((ctx.service.config.metadata or {})["http_port"]))
        started.set()
        await proceed.wait()

    task = asyncio.create_task(runtime.serve("sriov-test", "test", settings, body, stop=stop))
    await asyncio.wait_for(started.wait(), 10)
    (port,) = ports

    async def get(path: str) -> tuple[int, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head, _, body = (await reader.read()).decode().partition("\r\n\r\n")
        writer.close()
        return int(head.split(" ", 2)[1]), body

    assert await get("/readyz") == (503, "not ready: starting or stopping\n")
    assert await get("/healthz") == (200, "ok\n")
    proceed.set()
    for _ in range(100):
        if (await get("/readyz"))[0] == 200:
            break
        await asyncio.sleep(0.05)
    assert await get("/readyz") == (200, "ready\n")
    assert (await get("/metrics"))[0] == 404 and (await get("/"))[0] == 404
    stop.set()
    await asyncio.wait_for(task, 15)
    with pytest.raises(OSError):  # the listener closed with the service
        await get("/healthz")


def test_jitter_spreads_a_fleets_first_timers_and_bounds_every_next_one() -> None:
    firsts = [runtime.Jitter(f"host-{i}/resync").delay(300) for i in range(1000)]
    assert all(0 <= d <= 300 for d in firsts)
    assert len({int(d // 30) for d in firsts}) == 10  # every tenth of the interval gets some
    beat = runtime.Jitter("host-1/heartbeat", fraction=0.1)
    beat.delay(10)
    nexts = [beat.delay(10) for _ in range(500)]
    assert all(9 <= d <= 11 for d in nexts)
    assert max(nexts) - min(nexts) > 1  # jittered, not a constant
    same = runtime.Jitter("host-1/heartbeat", fraction=0.1)
    assert [same.delay(10) for _ in range(501)][1:] == nexts  # reproducible per seed


def test_jitter_can_keep_a_first_run_away_from_the_start() -> None:
    # hostd's resync: its start snapshot was one (a first resync 0.2 s after it made a second
    # snapshot that a test of the heartbeat's snapshot_seq caught, 1 start in ~1,100)
    firsts = [runtime.Jitter(f"host-{i}/resync", earliest=0.5).delay(300) for i in range(1000)]
    assert all(150 <= d <= 300 for d in firsts)
    assert len({int(d // 15) for d in firsts}) == 10  # still spread over the half it may use


def test_jitter_refuses_a_fraction_that_could_make_a_delay_negative() -> None:
    with pytest.raises(ValueError, match=r"jitter fraction 1\.5"):
        runtime.Jitter("h", fraction=1.5)
    with pytest.raises(ValueError, match=r"jitter earliest 2"):
        runtime.Jitter("h", earliest=2)
