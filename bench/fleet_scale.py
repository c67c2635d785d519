"""A fleet-wide restart, end to end: 10,000 hosts x 64 VFs by default.

Every host's hostd snapshot and first heartbeat wait in JetStream (the subjects and schemas
hostd publishes), as after a fleet-wide restart or an outage of the control plane. Then the
real ``sriov-inventory`` and two ``sriov-scheduler`` programs start, and the clock runs from
their start to: every VF in inventory's table; every device and host state relayed to
SRIOV_STATE; every VF schedulable (the scheduler's projection holds them all and a placement
on the last host succeeds). Then: resident memory of each program, placements at that size
(``scheduler_place``'s requesters and double-booking check), ``isolated-device-list`` page
latency, the time a refusal takes (it counts the fleet's matching VFs to say why), and the
redeliveries of both durable consumers (a storm must not push inventory past its ack wait).
Then the same placements with VF preparation in the loop: ``--prepared-hosts`` simulated
guide hosts with their real hostd join the fleet (root: namespaces and veths), and requests
with settings (``;vlan=100``: only a host running the lifecycle can apply them, so they must
be found among the fleet's unmanaged VFs of the same models) are placed there, waited ready
and released, as ``vf_lifecycle`` measures them. ``--settle`` measures the placements once
autovacuum is through the tables the storm filled (steady state) instead of at once. Prints
figures, asserts nothing.

    ./stack bench fleet_scale [--hosts=10000] [--vfs-per-host=64] [--requesters=8]
                              [--replicas=2] [--seconds=10] [--lists=300] [--settle]
                              [--refusals=5] [--prepared-hosts=2] [--pg-detail[=storm]]
                              [--profile=DIR] [--shared-buffers=1536MB]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench import (
    PG_DETAIL_SETTINGS,
    PgDetail,
    consumer_drained,
    count_rows,
    cpu_split,
    cpu_used,
    load,
    machine,
    parser,
    session_names,
    spawn_program,
    stop_programs,
    traffic_mark,
    traffic_per,
)
from bench.scheduler_place import pct, print_placements, requester, spawn_replica, verify
from bench.vf_lifecycle import prepared_hosts_option, with_preparation
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.common.errors import SriovError
from sriov.devtools.embedded import local_servers
from sriov.inventory import ingest
from sriov.inventory import testing as t
from sriov.scheduler.testing import state_durable

MODELS = [t.CX5_VF, t.I350_VF]  # alternate hosts: a filter by model selects half the fleet
SHARED_BUFFERS = "1536MB"
"""Holds scheduler.vfs and inventory.devices with their indexes at 640,000 VFs (1.3 GB)."""


def host_id(i: int) -> str:
    return f"host-{i:05d}"


def model_of(i: int) -> str:
    return MODELS[i % len(MODELS)]


async def publish(bus: Bus, hosts: int, vfs: int) -> float:
    """Each host's snapshot, then its heartbeat, as a restarting hostd sends them."""
    started = time.perf_counter()
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with sem:
            hostd = t.Hostd(bus, host_id(i))
            snap = await hostd.snapshot(*t.fleet_host(i, vfs=vfs, model=model_of(i)))
            await hostd.heartbeat(interval_s=5.0, snapshot_seq=snap.seq)

    await asyncio.gather(*(one(i) for i in range(hosts)))
    return time.perf_counter() - started


async def until(what: str, check: object, timeout: float = 900) -> None:
    """Poll ``check`` (an async callable returning bool) every 50 ms."""
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached in {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def place_on(bus: Bus, host: str | None, desc: str) -> bool:
    req = m.PlaceRequest(
        request_id=str(uuid.uuid4()), guest_id=f"probe-{uuid.uuid4().hex[:8]}", host_id=host,
        nets=[m.NetRequest(desc=desc)],
    )  # fmt: skip
    try:
        await bus.request(s.endpoint(s.SCHEDULER_GROUP, "place"), req, m.PlacementReply, timeout=60)
    except SriovError:
        return False
    return True


async def list_latency(bus: Bus, hosts: int, vfs: int, n: int, rng: random.Random) -> None:
    pages = max(1, hosts * vfs // 50)
    shapes: dict[str, Callable[[], dict[str, Any]]] = {
        "unfiltered": lambda: {"offset": 50 * rng.randrange(pages)},
        "by model": lambda: {"model": rng.choice(MODELS), "offset": 50 * rng.randrange(pages // 2)},
        "by host": lambda: {"host_id": host_id(rng.randrange(hosts))},
    }
    for make in shapes.values():  # warm the connections and statement caches
        for _ in range(20):
            await t.list_devices(bus, limit=50, **make())
    for name, make in shapes.items():
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            await t.list_devices(bus, limit=50, **make())
            lat.append(time.perf_counter() - t0)
        lat.sort()
        print(f"  isolated-device-list page of 50, {name}: p50 {pct(lat, 0.5) * 1e3:.2f} ms  "
              f"p99 {pct(lat, 0.99) * 1e3:.2f} ms  max {lat[-1] * 1e3:.2f} ms "
              f"({n} requests)")  # fmt: skip


async def refusals(bus: Bus, n: int) -> None:
    """A refusal explains itself by counting the fleet's matching VFs: its cost at this size."""
    kinds = {"settings, no managed VF": f"sriov-nic-model={t.CX5_VF};vlan=100",
             "a wire no host has": f"sriov-nic-model={t.CX5_VF}:no-such-wire"}  # fmt: skip
    for what, desc in kinds.items():
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            if await place_on(bus, None, desc):
                raise RuntimeError(f"{desc!r} was placed: the refusal was not measured")
            lat.append(time.perf_counter() - t0)
        lat.sort()
        print(f"  refusal ({what}): p50 {pct(lat, 0.5) * 1e3:.0f} ms  max {lat[-1] * 1e3:.0f} ms "
              f"({n} requests)")  # fmt: skip


async def cordons(bus: Bus, hosts: int, n: int, rng: random.Random) -> None:
    """``host-cordon`` then ``host-uncordon`` of a host: each lists who holds VFs there."""
    subject = s.endpoint(s.SCHEDULER_GROUP, "cordon")
    lat, held = [], 0
    for _ in range(n):
        host = host_id(rng.randrange(hosts))
        for cordoned in (True, False):
            t0 = time.perf_counter()
            reply = await bus.request(subject, m.CordonRequest(host_id=host, cordoned=cordoned),
                                      m.CordonReply, timeout=30)  # fmt: skip
            lat.append(time.perf_counter() - t0)
            held += len(reply.held)
    lat.sort()
    print(f"  cordon and uncordon: p50 {pct(lat, 0.5) * 1e3:.1f} ms  max {lat[-1] * 1e3:.1f} ms "
          f"({len(lat)} requests, {held} holders listed)")  # fmt: skip


def rss_mb(proc: subprocess.Popen[bytes]) -> float:
    return float(psutil.Process(proc.pid).memory_info().rss) / 2**20


async def run(args: argparse.Namespace, base: Path) -> None:
    hosts, vfs = args.hosts, args.vfs_per_host
    total = hosts * vfs
    pg_settings = {
        **(PG_DETAIL_SETTINGS if args.pg_detail else {}),
        "shared_buffers": args.shared_buffers,
    }
    with local_servers(base, pg_settings=pg_settings) as (
        nats,
        pg,
    ):
        nats_url, dsn = nats.url, pg.dsn
        bus = await Bus.connect(nats_url, name="bench")
        await bus.ensure_streams()
        took = await publish(bus, hosts, vfs)
        print(f"  storm: {hosts} snapshots + heartbeats ({total} VFs) in JetStream "
              f"after {took:.1f}s; {load()}")  # fmt: skip
        print(f"  {machine()} (before the programs start)")
        env = {**os.environ, "SRIOV_LOG_LEVEL": "WARNING", "OTEL_TRACES_EXPORTER": "none",
               "SRIOV_DATABASE_URL": dsn}  # fmt: skip
        prof = (lambda name: str(Path(args.profile) / name)) if args.profile else (lambda _: None)
        procs: list[subprocess.Popen[bytes]] = []
        conn = await asyncpg.connect(dsn)
        try:
            storm = PgDetail(dsn, pg.log_file) if args.pg_detail == "storm" else None
            if storm:
                await storm.start()
            t0 = time.perf_counter()
            inventory = spawn_program(
                "sriov.inventory.main:main",
                ["--nats-url", nats_url, "--heartbeat-timeout", "86400"],
                env, profile=prof("inventory.prof"), log=base / "inventory.log",
            )  # fmt: skip
            procs.append(inventory)
            replicas = [
                spawn_replica(dsn, nats_url, i, env, prof("scheduler.prof"))
                for i in range(args.replicas)
            ]
            procs += replicas

            # the rows are counted once their consumer has acknowledged everything (acks
            # follow commits): a count(*) of up to 640,000 rows every 50 ms took a fifth of
            # a core from the run it measured
            async def in_inventory() -> bool:
                assert inventory.poll() is None, (base / "inventory.log").read_text()[-3000:]
                return await consumer_drained(bus, s.STREAM_HOST_EVENTS, ingest.DURABLE) and (
                    await count_rows(conn, "inventory", "devices") >= total
                )

            async def relayed() -> bool:
                return bool((await bus.stream_info(s.STREAM_STATE)).messages >= total + hosts)

            state = await state_durable(dsn)

            async def projected() -> bool:
                return await consumer_drained(bus, s.STREAM_STATE, state) and (
                    await count_rows(conn, "scheduler", "vfs") >= total
                )

            last = hosts - 1

            async def schedulable() -> bool:
                return await projected() and await place_on(
                    bus, host_id(last), f"sriov-nic-model={model_of(last)}"
                )

            stages = [("in inventory", in_inventory), ("relayed to SRIOV_STATE", relayed),
                      ("schedulable", schedulable)]  # fmt: skip
            for name, check in stages:
                await until(name, check)
                elapsed = time.perf_counter() - t0
                print(f"  all {total} VFs {name} after {elapsed:.1f}s "
                      f"({total / elapsed:,.0f} VFs/s); {load()}")  # fmt: skip
                print(f"    CPU so far: {cpu_split(await session_names(dsn))}")
            if storm:
                await storm.report()
            await _redeliveries(bus, dsn)
            print(f"  resident memory: inventory {rss_mb(inventory):.0f} MB, scheduler "
                  + ", ".join(f"{rss_mb(r):.0f} MB" for r in replicas))  # fmt: skip
            print(f"  {await _working_set(conn)}")
            if args.settle:
                await _settle(conn)

            lat: list[float] = []
            errors: collections.Counter[str] = collections.Counter()
            devices: list[str] = []
            nreq = args.requesters
            warm = time.perf_counter() + 2
            await asyncio.gather(*(requester(bus, 1000 + w, warm, [], errors, devices, MODELS)
                                   for w in range(nreq)))  # fmt: skip
            sessions = await session_names(dsn)
            detail = PgDetail(dsn, pg.log_file) if args.pg_detail == "placements" else None
            if detail:
                await detail.start()
            cpu0, own0, sys0 = cpu_used(sessions), _own_cpu(), traffic_mark()
            started = time.perf_counter()
            await asyncio.gather(*(requester(bus, w, started + args.seconds, lat, errors,
                                             devices, MODELS) for w in range(nreq)))  # fmt: skip
            took = time.perf_counter() - started
            print_placements(lat, errors, took, nreq, len(replicas))
            print(f"  (during placements: {load()})")
            sessions |= await session_names(dsn)  # the pools' connections opened meanwhile
            # inventory mirrors every placement (guest column, host totals) and relays the
            # device's new state, which the schedulers' projection applies in turn
            print(f"    CPU during placements: {cpu_split(sessions, since=cpu0)}, requesters "
                  f"(this process) {_own_cpu() - own0:.1f}s")  # fmt: skip
            print(f"    per placement: {traffic_per(len(lat), cpu0, sys0)}")
            if detail:
                await detail.report()
            await verify(dsn, bus, devices)
            await list_latency(bus, hosts, vfs, args.lists, random.Random(1))
            await refusals(bus, args.refusals)
            await cordons(bus, hosts, args.refusals, random.Random(2))
            if args.prepared_hosts:
                await with_preparation(args, nats, pg, base / "prepared", len(lat) / took, dsn)
            print(f"  resident memory at the end: inventory {rss_mb(inventory):.0f} MB, "
                  "scheduler " + ", ".join(f"{rss_mb(r):.0f} MB" for r in replicas))  # fmt: skip
        finally:
            await conn.close()
            stop_programs(procs)
            await bus.close()


async def _redeliveries(bus: Bus, dsn: str) -> None:
    durables = [(s.STREAM_HOST_EVENTS, ingest.DURABLE),
                (s.STREAM_STATE, await state_durable(dsn))]  # fmt: skip
    found = []
    for stream, durable in durables:
        info = await bus.consumer_info(stream, durable)
        found.append(f"{durable} {info.num_redelivered} (of {info.delivered} delivered)")
    print(f"  redelivered messages: {', '.join(found)}")


async def _settle(conn: asyncpg.Connection, timeout: float = 300) -> None:
    """Until autovacuum has gone through the tables the storm filled: in one run it took 4.2
    of the 20 CPU seconds of the placements that followed at once."""
    started = time.perf_counter()
    quiet = 0
    while quiet < 3 and time.perf_counter() - started < timeout:
        busy = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
        )
        quiet = 0 if busy else quiet + 1
        await asyncio.sleep(1)
    print(f"  autovacuum settled after {time.perf_counter() - started:.1f}s; {load()}")


def _own_cpu() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


async def _working_set(conn: asyncpg.Connection) -> str:
    """What a placement touches at random (the VF tables with their indexes) beside
    PostgreSQL's shared_buffers: a block outside them is copied from the kernel's cache."""
    sizes = await conn.fetch(
        "SELECT t, pg_total_relation_size(t::regclass) AS bytes FROM unnest($1::text[]) t",
        ["scheduler.vfs", "inventory.devices"],
    )
    shared = await conn.fetchval("SHOW shared_buffers")
    parts = ", ".join(f"{r['t']} {r['bytes'] / 2**20:.0f} MB" for r in sizes)
    return f"working set: {parts} (with indexes); shared_buffers {shared}"


def main(argv: list[str]) -> None:
    p = parser(__name__, __doc__)
    p.add_argument("--hosts", type=int, default=10000)
    p.add_argument("--vfs-per-host", type=int, default=64)
    p.add_argument("--requesters", type=int, default=8)
    p.add_argument("--replicas", type=int, default=2, help="scheduler processes")
    p.add_argument("--seconds", type=float, default=10, help="placements measured for")
    p.add_argument(
        "--settle",
        action="store_true",
        help="measure placements once autovacuum is through (steady state)",
    )
    p.add_argument(
        "--shared-buffers",
        metavar="SIZE",
        default=SHARED_BUFFERS,
        help="PostgreSQL's shared_buffers: enough for the working set, as a database sized for "
        "the fleet has (%(default)s; the embedded default of 256MB copies ~10 blocks per "
        "placement from the kernel's cache at 640,000 VFs)",
    )
    p.add_argument("--lists", type=int, default=300, help="list requests per shape")
    p.add_argument("--refusals", type=int, default=5, help="refused requests timed per kind")
    p.add_argument(
        "--pg-detail",
        nargs="?",
        const="placements",
        choices=["placements", "storm"],
        help="PostgreSQL's counts and statement times during the placements (or the storm)",
    )
    prepared_hosts_option(p)
    p.add_argument("--profile", metavar="DIR", help="cProfile each program into DIR")
    args = p.parse_args(argv)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    try:
        asyncio.run(run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
