"""The VF lifecycle through the real programs: place -> ready, release -> offered again, drift
-> repaired, and placement throughput with VF preparation in the loop and without it.

Brings up the whole stack with the devtools launcher (NATS, PostgreSQL, inventory, scheduler,
``--hosts`` simulated guide hosts with their hostd and offload agents), then:

* place -> ready: ``--requesters`` concurrent requesters each place one VF (a generated MAC,
  ``;vlan=100``, vfio-pci) and wait for the placement's ``Ready`` as ``sriovctl
  server-create`` does (target p99 < 100 ms with 8 requesters), then release it and time
  release -> the VF free in the scheduler's table again (hostd restored and read it back);
* throughput for ``--seconds``: place -> ready -> release on the simulated hosts, next to
  place -> release on a synthetic host published as inventory would, whose PFs carry no
  capabilities (unmanaged: ready at once, as ``bench/scheduler_place.py`` measures);
* drift -> repaired on a prepared VF, as ``bench/hostd_drift.py`` injects it (target p99 < 1 s).

Prints the figures and the machine's load average.

    ./stack bench vf_lifecycle [--hosts=2] [--requesters=8] [--rounds=5] [--seconds=10]
                               [--injections=20]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from bench import load, parser
from bench.hostd_drift import AppliedTail, line, time_drifts
from sriov.cli import readiness
from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus
from sriov.common.errors import SriovError
from sriov.devtools.embedded import NatsServer, PostgresServer
from sriov.devtools.launcher import Stack, running
from sriov.scheduler.testing import CX5, FleetState, PfSpec

MODELS = ("ConnectX-5 Virtual Function", "I350 Ethernet Controller Virtual Function")
PLAIN_HOST = "bench-unmanaged"
SETTINGS = ";vlan=100"
GUIDE_VFS = 15
"""VFs of a simulated guide host."""


class Client:
    """A requester's side of the scheduler, as sriovctl uses it."""

    def __init__(self, bus: Bus, db: asyncpg.Pool) -> None:
        self.bus = bus
        self.db = db
        self.ids = itertools.count()

    def _call(self, op: str, req: m.Message) -> Awaitable[m.PlacementReply]:
        subject = subjects.endpoint(subjects.SCHEDULER_GROUP, op)
        return self.bus.request(subject, req, m.PlacementReply, timeout=30)

    async def place_ready(self, model: str, host: str | None = None) -> m.PlacementReply:
        """Place one VF and wait until it is ready (returns at once when unmanaged)."""
        guest = f"bench-{uuid.uuid4().hex[:10]}"
        net = m.NetRequest(desc=f"sriov-nic-model={model}{SETTINGS if host is None else ''}")
        req = m.PlaceRequest(request_id=guest, guest_id=guest, nets=[net], host_id=host)
        async with readiness.listening(self.bus, guest) as events:
            reply = await self._call("place", req)
            get = m.GetRequest(guest_id=guest)
            out = await readiness.wait_ready(reply, events, lambda: self._call("get", get), 30)
        if out.error:
            raise RuntimeError(f"{guest}: {out.error}")
        return out.reply

    async def cycle(self, model: str, host: str | None = None) -> None:
        """Place one VF, wait until it is ready, release it (one throughput cycle)."""
        await self.release(await self.place_ready(model, host))

    async def release(self, reply: m.PlacementReply) -> None:
        req = m.ReleaseRequest(request_id=f"rel-{reply.guest_id}", guest_id=reply.guest_id)
        await self._call("release", req)

    async def offered(self, device_id: str, timeout: float = 30) -> None:
        """Until the scheduler offers the VF again (free and not held)."""
        async with asyncio.timeout(timeout):
            while not await self.db.fetchval(
                "SELECT held_by IS NULL AND lifecycle = 'free' FROM scheduler.vfs "
                "WHERE device_id = $1",
                device_id,
            ):
                await asyncio.sleep(0.005)


async def wait_managed(db: asyncpg.Pool, want: int, timeout: float = 120) -> None:
    """Until the scheduler knows ``want`` free VFs whose PF published capabilities."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                got = await db.fetchval(
                    "SELECT count(*) FROM scheduler.vfs WHERE held_by IS NULL AND present "
                    "AND link_up AND NOT removed AND lifecycle = 'free' "
                    "AND NOT ('lifecycle' = ANY(cannot))"
                )
            except asyncpg.UndefinedTableError:
                got = 0
            if got >= want:
                return
            await asyncio.sleep(0.2)


async def latency(client: Client, requesters: int, rounds: int) -> tuple[list[float], list[float]]:
    """(place -> ready ms, release -> offered again ms) of ``requesters`` x ``rounds``."""
    ready: list[float] = []
    offered: list[float] = []

    async def one(wid: int) -> None:
        for r in range(rounds):
            start = time.perf_counter()
            reply = await client.place_ready(MODELS[(wid + r) % len(MODELS)])
            ready.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            await client.release(reply)
            await client.offered(reply.assignments[0].device_id)
            offered.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(one(w) for w in range(requesters)))
    return ready, offered


async def throughput(
    requesters: int, seconds: float, cycle: Callable[[int], Awaitable[None]]
) -> tuple[float, dict[str, int]]:
    """Cycles per second of ``requesters`` running ``cycle`` for ``seconds``; errors by code."""
    done = 0
    errors: dict[str, int] = {}
    until = time.perf_counter() + seconds

    async def one(wid: int) -> None:
        nonlocal done
        while time.perf_counter() < until:
            try:
                await cycle(wid)
                done += 1
            except SriovError as exc:
                errors[exc.code] = errors.get(exc.code, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(one(w) for w in range(requesters)))
    return done / (time.perf_counter() - start), errors


async def run(args: argparse.Namespace, stack: Stack) -> None:
    assert stack.pg is not None
    bus = await Bus.connect(stack.nats_url, name="bench")
    db = await asyncpg.create_pool(stack.pg.dsn, min_size=1, max_size=4)
    try:
        await wait_managed(db, GUIDE_VFS * args.hosts)
        client = Client(bus, db)
        print(f"{args.hosts} simulated host(s), {GUIDE_VFS * args.hosts} VFs; {load()}")
        ready, offered = await latency(client, args.requesters, args.rounds)
        print(line(f"place -> ready ({args.requesters} requesters)", ready, "p99 < 100 ms"))
        print(line("release -> offered again", offered))

        with_prep, errs = await throughput(
            args.requesters, args.seconds, lambda wid: client.cycle(MODELS[wid % len(MODELS)])
        )
        fleet = FleetState(bus)
        fleet.add_host(PLAIN_HOST, [PfSpec(f"0000:{0x3B + i:02x}:00.0", model=CX5, count=64,
                                           ifname=f"eth{i}") for i in range(2)])  # fmt: skip
        await fleet.publish()
        async with asyncio.timeout(60):
            while await db.fetchval(
                "SELECT count(*) FROM scheduler.vfs WHERE host_id = $1", PLAIN_HOST
            ) < len(fleet.devices):  # fmt: skip
                await asyncio.sleep(0.1)

        without, errs2 = await throughput(
            args.requesters, args.seconds, lambda _: client.cycle(CX5, host=PLAIN_HOST)
        )
        print(
            f"placement throughput ({args.requesters} requesters, place -> ready -> release): "
            f"{with_prep:.1f}/s with VF preparation (errors {errs or 'none'}), "
            f"{without:.1f}/s without (unmanaged VFs, errors {errs2 or 'none'})"
        )

        held = await client.place_ready(MODELS[0])
        a = held.assignments[0]
        sim = next(s for s in stack.sim_hosts if s.host_id == a.host_id)
        pf, vf = sim.vf_of(a.pci_address)
        async with AppliedTail(bus, subjects.host_vf(a.host_id, "applied").subject) as tail:
            drift, missing = await time_drifts(
                tail, str(sim.sys_root), pf, vf, a.pci_address, args.injections
            )
        print(line("drift -> repaired", drift, "p99 < 1000 ms") + f", {missing} not repaired")
        await client.release(held)
        print(load())
    finally:
        await db.close()
        await bus.close()


def prepared_hosts_option(p: argparse.ArgumentParser) -> None:
    """``--prepared-hosts``: the simulated hosts :func:`with_preparation` brings up."""

    def count(text: str) -> int:
        n = int(text)
        if not 0 <= n <= 16:
            raise argparse.ArgumentTypeError("must be 0-16")
        return n

    p.add_argument("--prepared-hosts", type=count, default=2,
                   help="simulated hosts with hostd for placements with VF preparation "
                        "(0: none; needs root)")  # fmt: skip


async def with_preparation(
    args: argparse.Namespace,
    nats: NatsServer,
    pg: PostgresServer,
    state: Path,
    plain: float,
    dsn: str,
) -> None:
    """Placements with VF preparation in the loop, beside ``plain`` placements/s on the
    reservation path: ``args.prepared_hosts`` simulated guide hosts with their real hostd
    join a running system (inventory and scheduler on ``nats``, the scheduler's database
    ``dsn``), and ``args.requesters`` requesters place nets with settings there (only hosts
    running the lifecycle can apply them), wait ready and release."""
    hosts = args.prepared_hosts
    stack = Stack(state, replicas=0, hosts=hosts, nats_urls=[nats.url], pg=pg, quiet=True,
                  offload=False)  # fmt: skip
    try:
        await asyncio.to_thread(stack.up)
        bus = await Bus.connect(nats.url, name="bench-prepared")
        db = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        try:
            started = time.perf_counter()
            await wait_managed(db, GUIDE_VFS * hosts, timeout=300)
            print(f"  with VF preparation: {hosts} simulated host(s) with hostd joined "
                  f"({GUIDE_VFS * hosts} VFs), schedulable after "
                  f"{time.perf_counter() - started:.1f}s; {load()}")  # fmt: skip
            client = Client(bus, db)
            ready, offered = await latency(client, args.requesters, rounds=3)
            print("    " + line(f"place -> ready ({args.requesters} requesters)", ready))
            print("    " + line("release -> offered again", offered))
            rate, errs = await throughput(
                args.requesters, args.seconds, lambda w: client.cycle(MODELS[w % len(MODELS)])
            )
            print(f"    place -> ready -> release, {args.requesters} requesters: {rate:.1f}/s "
                  f"with VF preparation (errors {errs or 'none'}) beside {plain:.0f}/s "
                  f"placements on the reservation path; {load()}")  # fmt: skip
        finally:
            await db.close()
            await bus.close()
    finally:
        await asyncio.to_thread(stack.down)


def main(argv: list[str]) -> None:
    p = parser(__name__, __doc__)
    p.add_argument("--hosts", type=int, default=2, help="simulated guide hosts (15 VFs each)")
    p.add_argument("--requesters", type=int, default=8, help="concurrent requesters")
    p.add_argument("--rounds", type=int, default=5, help="place/release rounds per requester")
    p.add_argument("--seconds", type=float, default=10, help="each throughput run")
    p.add_argument("--injections", type=int, default=20, help="drifts injected")
    args = p.parse_args(argv)
    if not 1 <= args.hosts <= 16 or args.requesters < 1:
        p.error("--hosts must be 1-16 and --requesters at least 1")
    with (
        tempfile.TemporaryDirectory(prefix="vf-lifecycle-") as tmp,
        running(Stack(Path(tmp) / "state", hosts=args.hosts, quiet=True)) as stack,
    ):
        asyncio.run(run(args, stack))
