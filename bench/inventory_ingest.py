"""Ingest a fleet from hostd snapshots: 1,000 hosts x 64 VFs by default.

Snapshots are published to JetStream first (a backlog, as after an inventory outage or a
fleet-wide restart); then the real ``sriov-inventory`` command starts and the clock runs
from the moment it answers queries until (1) every VF is in PostgreSQL and (2) every
device and host state has been relayed to SRIOV_STATE. Prints figures, asserts nothing.

    ./stack bench inventory_ingest [--hosts=N] [--vfs=N] [--batch=N] [--no-fsync]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

import asyncpg

from bench import consumer_drained, count_rows, cpu_split, parser, session_names
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.devtools.embedded import local_servers
from sriov.inventory import ingest
from sriov.inventory import testing as t


async def publish(bus: Bus, hosts: int, vfs: int) -> float:
    started = time.perf_counter()
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with sem:
            hostd = t.Hostd(bus, f"host-{i:04d}")
            await hostd.snapshot(*t.fleet_host(i, vfs=vfs))

    await asyncio.gather(*(one(i) for i in range(hosts)))
    return time.perf_counter() - started


async def run(args: argparse.Namespace, base: Path) -> None:
    with local_servers(base, durable=not args.no_fsync) as (nats, pg):
        nats_url, dsn = nats.url, pg.dsn
        bus = await Bus.connect(nats_url, name="bench")
        await bus.ensure_streams()
        total = args.hosts * args.vfs
        took = await publish(bus, args.hosts, args.vfs)
        print(f"published {args.hosts} snapshots ({total} VFs) in {took:.2f}s")
        conn = None
        log = base / "inventory.log"
        extra = ["--batch", str(args.batch), "--heartbeat-timeout", "3600"]
        with t.inventory_process(nats_url, dsn, log, *extra) as proc:
            while True:  # ready = answers queries (schema migrated, consumers next)
                assert proc.poll() is None, log.read_text()
                with contextlib.suppress(Exception):
                    await t.host_status(bus, "none")
                    break
                await asyncio.sleep(0.01)
            t0 = time.perf_counter()
            cpu0 = _cpu(proc.pid)
            conn = await asyncpg.connect(dsn)
            while not (  # rows counted once their consumer acknowledged everything
                await consumer_drained(bus, s.STREAM_HOST_EVENTS, ingest.DURABLE)
                and await count_rows(conn, "inventory", "devices") >= total
            ):
                assert proc.poll() is None, log.read_text()
                await asyncio.sleep(0.05)
            t_db = time.perf_counter() - t0
            relayed_at_db = (await bus.stream_info(s.STREAM_STATE)).messages
            while True:
                info = await bus.stream_info(s.STREAM_STATE)
                if info.messages >= total + args.hosts:
                    break
                await asyncio.sleep(0.05)
            t_state = time.perf_counter() - t0
            split = cpu_split(await session_names(dsn))
            cpu = _cpu(proc.pid) - cpu0
        await conn.close()
        await bus.close()
    print(
        f"ingest: {total} VFs of {args.hosts} hosts in PostgreSQL after {t_db:.2f}s "
        f"({total / t_db:,.0f} VFs/s); {relayed_at_db} states relayed by then"
    )
    print(
        f"state:  {total + args.hosts} device+host states in SRIOV_STATE after {t_state:.2f}s "
        f"({(total + args.hosts) / t_state:,.0f} msgs/s)"
    )
    print(
        f"inventory process CPU: {cpu:.2f}s over {t_state:.2f}s wall "
        f"(machine: {os.cpu_count()} cores, shared with nats-server and PostgreSQL)"
    )
    print(f"CPU of each program by then: {split}")


def _cpu(pid: int) -> float:
    """User+system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str]) -> None:
    p = parser(__name__, __doc__)
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--vfs", type=int, default=64)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--no-fsync", action="store_true", help="PostgreSQL without fsync")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-inventory-") as tmp:
        asyncio.run(run(args, Path(tmp)))
