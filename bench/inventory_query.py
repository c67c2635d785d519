"""``devices.list`` latency over a 64,000-VF fleet (1,000 hosts x 64 VFs, three models,
some VFs held by guests): 50-row pages with filters, asked over NATS of the real
``sriov-inventory`` command, one request at a time. Prints p50/p90/p99/max per query shape.

    ./stack bench inventory_query [--hosts=N] [--vfs=N] [--requests=N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from bench import parser, pg_execute
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus, Delivery
from sriov.common.outbox import Relay
from sriov.devtools.embedded import local_servers
from sriov.inventory import testing as t
from sriov.inventory.db.outbox import StateOutbox
from sriov.inventory.db.pool import open_pool
from sriov.inventory.ingest import HostEvents
from sriov.inventory.placement_events import PlacementEvents

MODELS = [t.CX5_VF, "ConnectX Family mlx5Gen Virtual Function", t.I350_VF]


async def load_fleet(bus: Bus, dsn: str, hosts: int, vfs: int, rng: random.Random) -> list[str]:
    """Fill the table through the ingest path (no NATS consumer needed to prepare)."""
    pool = await open_pool(dsn)
    ingest = HostEvents(pool, "sriov/bench")
    guests: list[str] = []
    for start in range(0, hosts, 100):
        batch = []
        for i in range(start, min(start + 100, hosts)):
            hostd = t.Hostd(bus, f"host-{i:04d}")
            snap = hostd.snapshot_event(*t.fleet_host(i, vfs=vfs, model=MODELS[i % 3]))
            batch.append((snap, Delivery(s.host_snapshot(hostd.host_id).subject, {}, 1, 1)))
        await ingest.apply(batch)
    # a quarter of the hosts run guests holding 8 VFs each
    placement = PlacementEvents(pool, "sriov/bench")
    for seq, i in enumerate(range(0, hosts, 4), 1):
        host = f"host-{i:04d}"
        _pfs, host_vfs = t.fleet_host(i, vfs=vfs)
        guest = f"guest-{i:04d}"
        guests.append(guest)
        ids = [m.device_id(host, v.pci_address) for v in rng.sample(host_vfs, min(8, vfs))]
        ev = m.Confirmed(request_id=f"r{seq}", guest_id=guest, device_ids=ids)
        await placement.apply([(ev, Delivery("x", {}, 1, seq))])
    relay = Relay(StateOutbox(pool), bus, name="bench", batch=2000)
    while await relay.relay_once():
        pass
    await pool.close()
    return guests


async def run(args: argparse.Namespace, base: Path) -> None:
    rng = random.Random(1)
    with local_servers(base) as (nats, pg):
        nats_url, dsn = nats.url, pg.dsn
        bus = await Bus.connect(nats_url, name="bench")
        await bus.ensure_streams()
        started = time.perf_counter()
        guests = await load_fleet(bus, dsn, args.hosts, args.vfs, rng)
        total = await _count(dsn)
        print(f"loaded {total} VFs of {args.hosts} hosts in {time.perf_counter() - started:.1f}s")
        if args.vacuum_now:
            await _vacuum(dsn)
            print("VACUUM ANALYZE run by hand (the state autovacuum brings the table to)")
        elif not args.no_vacuum:
            waited = await _autovacuumed(dsn)
            print(f"autovacuum processed the table {waited:.0f}s after loading")
        log = base / "inventory.log"
        with t.inventory_process(nats_url, dsn, log, "--heartbeat-timeout", "86400") as proc:
            while True:
                assert proc.poll() is None, log.read_text()
                with contextlib.suppress(Exception):
                    await t.list_devices(bus, limit=1)
                    break
                await asyncio.sleep(0.05)
            shapes: dict[str, Callable[[], dict[str, Any]]] = {
                "no filter, page 1": lambda: {},
                "no filter, random page": lambda: {"offset": 50 * rng.randrange(0, 1200)},
                "host": lambda: {"host_id": f"host-{rng.randrange(args.hosts):04d}"},
                "model": lambda: {"model": rng.choice(MODELS)},
                "model+free, random page": lambda: {
                    "model": rng.choice(MODELS), "state": "free",
                    "offset": 50 * rng.randrange(0, 200),
                },
                "vendor_device_id+dev_type": lambda: {
                    "vendor_device_id": "15b3:1018", "dev_type": "NIC"
                },
                "attached": lambda: {"state": "attached"},
                "guest": lambda: {"guest_id": rng.choice(guests)},
                "host+model+free": lambda: {
                    "host_id": f"host-{rng.randrange(args.hosts):04d}",
                    "model": rng.choice(MODELS), "state": "free",
                },
            }  # fmt: skip
            for _ in range(50):  # warm the replica's connections and statement caches
                await t.list_devices(bus, limit=50, **rng.choice(list(shapes.values()))())
            everything: list[float] = []
            print(
                f"{'query (limit 50)':28} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} "
                f"{'p99 ms':>8} {'max ms':>8}"
            )
            per_shape = max(1, args.requests // len(shapes))
            for name, make in shapes.items():
                lat = []
                for _ in range(per_shape):
                    q = make()
                    t0 = time.perf_counter()
                    reply = await t.list_devices(bus, limit=50, **q)
                    lat.append((time.perf_counter() - t0) * 1000)
                    assert reply.devices or reply.total == 0
                everything += lat
                _row(name, lat)
            _row("all", everything)
        await bus.close()


def _row(name: str, lat: list[float]) -> None:
    q = statistics.quantiles(lat, n=100, method="inclusive")
    print(f"{name:28} {len(lat):>5} {q[49]:>8.2f} {q[89]:>8.2f} {q[98]:>8.2f} {max(lat):>8.2f}")


async def _autovacuumed(dsn: str, timeout: float = 300) -> float:
    """Wait until PostgreSQL's autovacuum has vacuumed and analysed the device table."""
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < timeout:
            row = await conn.fetchrow(
                "SELECT last_autovacuum, last_autoanalyze FROM pg_stat_user_tables "
                "WHERE schemaname = 'inventory' AND relname = 'devices'"
            )
            if row and row[0] and row[1]:
                break
            await asyncio.sleep(1)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _vacuum(dsn: str) -> None:
    await pg_execute(dsn, "VACUUM (ANALYZE) inventory.devices")


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM inventory.devices WHERE NOT removed"))
    finally:
        await conn.close()


def main(argv: list[str]) -> None:
    p = parser(__name__, __doc__)
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--vfs", type=int, default=64)
    p.add_argument("--requests", type=int, default=4500)
    p.add_argument("--no-vacuum", action="store_true", help="query right after loading")
    p.add_argument("--vacuum-now", action="store_true", help="VACUUM by hand, do not wait")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-inventory-") as tmp:
        asyncio.run(run(args, Path(tmp)))
