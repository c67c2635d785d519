"""End-to-end placements over NATS: requesters -> scheduler replicas -> PostgreSQL -> events.

Starts a real nats-server and PostgreSQL (durable: fsync on), publishes a synthetic fleet's
device and host state exactly as inventory does (default 64,000 VFs on 250 hosts), starts
scheduler replicas as separate processes (the ``sriov-scheduler`` program), then runs
concurrent requesters that each send one ``place`` request at a time for the measured
duration. Prints throughput, latency percentiles, CPU per component and the double-booking
check (replies, database and the Reserved events in JetStream). Then the same with VF
preparation in the loop beside it (``vf_lifecycle``'s figures): ``sriov-inventory`` starts and
``--prepared-hosts`` simulated guide hosts with their real hostd join the fleet (root), and
requesters place nets with settings there, wait ready and release.

    ./stack bench scheduler_place [--vfs=64000] [--requesters=8] [--replicas=2]
                                  [--seconds=10] [--nondurable] [--concurrency=16] [--pg-detail]
                                  [--prepared-hosts=2] [--profile=PATH]

``--profile`` writes each replica's CPU profile of the measured run (after the warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import psutil

from bench import (
    PG_DETAIL_SETTINGS,
    PgDetail,
    cpu_used,
    machine,
    parser,
    spawn_program,
    stop_programs,
    traffic_mark,
    traffic_per,
)
from bench.vf_lifecycle import prepared_hosts_option, with_preparation
from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus
from sriov.common.errors import BusTimeout, SriovError
from sriov.devtools.embedded import NatsServer, PostgresServer
from sriov.scheduler.testing import CX5, I350, FleetState, PfSpec, settle, state_durable

PFS = ((CX5, 0), (CX5, 0), (I350, 1), (I350, 1))
VFS_PER_PF = 64


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def postgres_procs(pg: PostgresServer) -> list[psutil.Process]:
    assert pg.proc is not None
    root = psutil.Process(pg.proc.pid)
    return [root, *root.children(recursive=True)]


async def publish_fleet(bus: Bus, vfs: int) -> tuple[int, float]:
    fleet = FleetState(bus)
    per_host = len(PFS) * VFS_PER_PF
    hosts = max(1, vfs // per_host)
    for h in range(hosts):
        fleet.add_host(
            f"host-{h:04d}",
            [PfSpec(f"0000:{0x3B + i:02x}:00.0", model=model, count=VFS_PER_PF, numa_node=numa,
                    wire="bcast0", ifname=f"eth{i}")
             for i, (model, numa) in enumerate(PFS)],
        )  # fmt: skip
    started = time.perf_counter()
    for attempt in range(1, 4):  # a busy machine times acks out; a retry is deduplicated
        try:
            await fleet.publish(concurrency=256)
            break
        except BusTimeout as exc:
            if attempt == 3:
                raise
            print(f"  fleet: {exc}; publishing again (attempt {attempt + 1})")
    return len(fleet.devices), time.perf_counter() - started


async def wait_projection(dsn: str, want: int, timeout: float = 300) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        while time.perf_counter() - started < timeout:
            try:
                got = await conn.fetchval("SELECT count(*) FROM scheduler.vfs")
            except asyncpg.UndefinedTableError:
                got = 0
            if got >= want:
                return time.perf_counter() - started
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise RuntimeError(f"projection did not reach {want} VFs in {timeout}s")


async def wait_service(bus: Bus, replicas: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        infos = [i for i in await bus.discover("INFO", 0.3) if i["name"] == "sriov-scheduler"]
        if len(infos) >= replicas:
            return
    raise RuntimeError("scheduler replicas did not register")


async def requester(
    bus: Bus, wid: int, until: float, lat: list[float], errors: collections.Counter[str],
    devices: list[str], models: list[str],
) -> None:  # fmt: skip
    subject = subjects.endpoint(subjects.SCHEDULER_GROUP, "place")
    rng = random.Random(wid)
    n = 0
    while time.perf_counter() < until:
        n += 1
        req = m.PlaceRequest(
            request_id=str(uuid.uuid4()),
            guest_id=f"b{wid}-{n}",
            nets=[m.NetRequest(desc=f"sriov-nic-model={rng.choice(models)}")],
        )
        t0 = time.perf_counter()
        try:
            reply = await bus.request(subject, req, m.PlacementReply, timeout=10)
        except SriovError as exc:
            errors[exc.code] += 1
            continue
        lat.append(time.perf_counter() - t0)
        devices.extend(a.device_id for a in reply.assignments)


async def verify(dsn: str, bus: Bus, devices: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 120
        while await conn.fetchval("SELECT count(*) FROM scheduler.outbox") and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.2)
        active = await conn.fetchval(
            "SELECT count(*) FROM scheduler.reservations WHERE ended_at IS NULL"
        )
        dup_db = await conn.fetchval(
            "SELECT count(*) FROM (SELECT device_id FROM scheduler.reservations "
            "WHERE ended_at IS NULL GROUP BY 1 HAVING count(*) > 1) d"
        )
        held = await conn.fetchval("SELECT count(*) FROM scheduler.vfs WHERE held_by IS NOT NULL")
    finally:
        await conn.close()
    reserved: collections.Counter[str] = collections.Counter()
    async for msg in bus.history(subjects.STREAM_PLACEMENT):
        ev = m.PLACEMENT_EVENTS.decode(msg.data)
        if isinstance(ev, m.Reserved):
            reserved.update(a.device_id for a in ev.assignments)
    dup_replies = len(devices) - len(set(devices))
    dup_events = sum(1 for c in reserved.values() if c > 1)
    print(f"  reservations: {active} active in the database, {held} VFs held, "
          f"{len(devices)} in replies, {sum(reserved.values())} in Reserved events")  # fmt: skip
    print(f"  double bookings: replies {dup_replies}, database {dup_db}, events {dup_events}")


def print_placements(
    lat: list[float], errors: collections.Counter[str], elapsed: float, nreq: int, nrep: int
) -> None:
    lat.sort()
    print(f"  {len(lat)} placements in {elapsed:.1f}s by {nreq} requesters, {nrep} replicas: "
          f"{len(lat) / elapsed:.0f}/s")  # fmt: skip
    print(f"  latency ms: p50 {pct(lat, 0.5) * 1e3:.2f}  p90 {pct(lat, 0.9) * 1e3:.2f}  "
          f"p99 {pct(lat, 0.99) * 1e3:.2f}  p99.9 {pct(lat, 0.999) * 1e3:.2f}  "
          f"max {lat[-1] * 1e3 if lat else float('nan'):.2f}")  # fmt: skip
    print(f"  errors: {dict(errors) or 'none'}")


def spawn_replica(
    dsn: str, nats_url: str, i: int, env: dict[str, str], profile: str | None
) -> subprocess.Popen[bytes]:
    args = ["--database-url", dsn, "--nats-url", nats_url, "--instance-id", f"bench-{i}"]
    if env.get("BENCH_CONCURRENCY"):
        args += ["--request-concurrency", env["BENCH_CONCURRENCY"]]
    return spawn_program(
        "sriov.scheduler.main:main", args, env,
        profile=f"{profile}.{i}" if profile else None, profile_on_signal=True,
    )  # fmt: skip


def arguments(argv: list[str]) -> argparse.Namespace:
    p = parser(__name__, __doc__)
    p.add_argument("--vfs", type=int, default=64000, help="VFs in the synthetic fleet")
    p.add_argument("--requesters", type=int, default=8, help="concurrent requesters")
    p.add_argument("--replicas", type=int, default=2, help="scheduler processes")
    p.add_argument("--seconds", type=float, default=10, help="measured duration")
    p.add_argument("--nondurable", action="store_true", help="PostgreSQL with fsync off")
    p.add_argument("--concurrency", type=int, help="requests each endpoint serves at once (16)")
    p.add_argument(
        "--pg-detail", action="store_true", help="PostgreSQL CPU, statistics and statement times"
    )
    prepared_hosts_option(p)
    p.add_argument("--profile", metavar="PATH", help="cProfile each replica to PATH.<i>")
    return p.parse_args(argv)


async def run(opts: argparse.Namespace, tmp: Path) -> None:
    vfs, nreq, nrep, seconds = opts.vfs, opts.requesters, opts.replicas, opts.seconds
    durable = not opts.nondurable
    print(f"  {machine()} (quiet, before anything starts)")
    nats = NatsServer(store_dir=tmp / "nats").start()
    pg_settings = PG_DETAIL_SETTINGS if opts.pg_detail else {}
    pg = PostgresServer(data_dir=tmp / "pg", durable=durable, settings=pg_settings).start()
    replicas: list[subprocess.Popen[bytes]] = []
    inventory: list[subprocess.Popen[bytes]] = []
    try:
        dsn = pg.create_database("sched_bench")
        bus = await Bus.connect(nats.url, name="bench")
        await bus.ensure_streams()
        n, took = await publish_fleet(bus, vfs)
        print(f"  fleet: {n} VFs on {n // (len(PFS) * VFS_PER_PF)} hosts published in {took:.1f}s "
              f"(PostgreSQL {'durable, fsync on' if durable else 'fsync off'})")  # fmt: skip
        env = {**os.environ, "SRIOV_LOG_LEVEL": "WARNING", "OTEL_TRACES_EXPORTER": "none"}
        if opts.concurrency:
            env["BENCH_CONCURRENCY"] = str(opts.concurrency)
        profile = opts.profile
        replicas.extend(spawn_replica(dsn, nats.url, i, env, profile) for i in range(nrep))
        took = await wait_projection(dsn, n)
        print(f"  projection: {n} VFs applied in {took:.1f}s by {nrep} replica(s)")
        started = time.perf_counter()  # the hosts' states and the rest: not in the measured run
        await settle(bus, await state_durable(dsn), timeout=600)
        print(f"  projection settled {time.perf_counter() - started:.1f}s later")
        await wait_service(bus, nrep)

        models = [CX5, I350]
        lat: list[float] = []
        errors: collections.Counter[str] = collections.Counter()
        devices: list[str] = []
        warm_until = time.perf_counter() + 2
        await asyncio.gather(*(requester(bus, 1000 + w, warm_until, [], errors, devices, models)
                               for w in range(nreq)))  # fmt: skip
        procs = {
            "scheduler replicas": [psutil.Process(p.pid) for p in replicas],
            "postgresql": postgres_procs(pg),
            "nats-server": [psutil.Process(nats.proc.pid)] if nats.proc else [],
            "requesters (this process)": [psutil.Process()],
        }
        if profile:
            for p in replicas:
                os.kill(p.pid, signal.SIGUSR1)
        detail = PgDetail(dsn, pg.log_file) if opts.pg_detail else None
        if detail:
            await detail.start()
        before = {k: cpu_seconds(v) for k, v in procs.items()}
        calls0, own0 = cpu_used(), traffic_mark()
        pg_before = {p.pid: (p, cpu_seconds([p])) for p in procs["postgresql"]}
        started = time.perf_counter()
        await asyncio.gather(*(requester(bus, w, started + seconds, lat, errors, devices, models)
                               for w in range(nreq)))  # fmt: skip
        elapsed = time.perf_counter() - started
        used = {k: cpu_seconds(v) - before[k] for k, v in procs.items()}
        if detail:
            by_process: dict[str, float] = collections.defaultdict(float)
            for p, c0 in pg_before.values():
                try:
                    name = " ".join(p.cmdline())[:60]
                except psutil.Error:
                    continue
                by_process[name] += cpu_seconds([p]) - c0
            for name, sec in sorted(by_process.items(), key=lambda kv: -kv[1])[:6]:
                print(f"    {sec:6.2f}s  {name}")
            await detail.report()
        print_placements(lat, errors, elapsed, nreq, nrep)
        cores = os.cpu_count() or 1
        print(
            f"  CPU during the run ({cores} cores = {cores * elapsed:.0f} core-seconds): "
            + ", ".join(f"{k} {v:.1f}s ({v / elapsed:.2f} cores)" for k, v in used.items())
        )
        print(f"  per placement: {traffic_per(len(lat), calls0, own0)}")
        await verify(dsn, bus, devices)
        await bus.close()
        if opts.prepared_hosts:  # inventory takes the simulated hosts' snapshots
            inventory.append(spawn_program(
                "sriov.inventory.main:main", ["--nats-url", nats.url],
                {**env, "SRIOV_DATABASE_URL": dsn}, log=tmp / "inventory.log",
            ))  # fmt: skip
            await with_preparation(opts, nats, pg, tmp / "prepared", len(lat) / elapsed, dsn)
    finally:
        stop_programs(inventory + replicas)
        pg.stop()
        nats.stop()


def main(argv: list[str]) -> None:
    opts = arguments(argv)
    tmp = Path(tempfile.mkdtemp(prefix="sched-bench-"))
    try:
        asyncio.run(run(opts, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
