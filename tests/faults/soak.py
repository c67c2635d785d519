"""``./stack soak [--minutes N] [--seed S]``: the whole system under a seeded random fault
schedule, checked continuously and after every heal (a Jepsen-style workload, nemesis and
checker).

It lives beside the fault suite because it is made of the fault suite's pieces and of
nothing else: the system (``fleet.whole_system``, with the NATS nodes in network namespaces
so they can be partitioned), the workload (``workload.Workload`` over request-reply and
``inbox.InboxWorkload`` over JetStream, sharing one client view of who holds which VF), and
the checker (``workload.mismatch`` plus ``invariants``). ``nemesis`` and ``hostchurn`` are
the schedule. Development tooling that ships (``sriov.devtools``) must not import tests.

Rounds: workload, host churn and nemesis run together for ``--round-s`` seconds; the nemesis
then heals everything, the first round trip after the heal is timed, the workload finishes
its cycles, host churn puts VF counts and carriers back, and the checker waits until the
system agrees with the client's view. That time is the convergence figure; only exceeding
``--cap-s`` (minutes) is a violation, so a slow machine slows the soak but does not fail
it. A violation stops the soak with the seed, the fault timeline and the logs; exit 1.
The seed fixes the order, kinds, targets and durations of faults, not the exact interleaving
with the workload (that is the machine's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import asyncpg
from fleet import GUIDE_VFS, System, whole_system
from hostchurn import HostChurn
from inbox import InboxWorkload
from invariants import (
    KEEP_VLAN,
    conflict_explained,
    events_once,
    outboxes_empty,
    reservations_ok,
    vf_hygiene,
)
from nemesis import Nemesis
from workload import (
    Expect,
    Workload,
    consumers_drained,
    converge,
    placement_history_ok,
    streams_current,
)

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus
from sriov.common.errors import SriovError
from sriov.hostd.lifecycle import consumer_name
from sriov.scheduler.testing import CX5, read_events


class Violation(Exception):
    pass


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="./stack soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=20.0, help="how long to inject faults")
    p.add_argument("--seed", type=int, default=None, help="the fault schedule (default: random)")
    p.add_argument("--hosts", type=int, default=2, help="simulated hosts (hostd + offload each)")
    p.add_argument("--round-s", type=float, default=40.0, help="faults per round before a heal")
    p.add_argument("--cap-s", type=float, default=300.0, help="convergence cap (a violation)")
    p.add_argument("--no-partition", action="store_true", help="NATS nodes on loopback")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.hosts < 1 or args.round_s < 5 or args.cap_s < 30:
        p.error("--minutes > 0, --hosts >= 1, --round-s >= 5 and --cap-s >= 30 are required")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    print(f"soak: seed {args.seed}, {args.minutes} min, {args.hosts} hosts", flush=True)
    base = Path(tempfile.mkdtemp(prefix="sriov-soak-"))
    code = 1
    try:
        with whole_system(
            base,
            hosts=args.hosts,
            pg_settings={"max_connections": "60"},  # the holder fills it; 4 pools of 10 fit
            partitionable=not args.no_partition,
            # A place that lands after its client gave up holds its VF until it expires; the
            # soak releases such guests itself (Soak._sweep), the short TTL is the backstop
            # (the default 300 s made a round take 308 s to converge before the sweep).
            env={"SRIOV_RESERVATION_TTL_S": "60"},
        ) as system:
            code = asyncio.run(Soak(system, args).run())
            return code
    finally:
        if code == 0:
            shutil.rmtree(base, ignore_errors=True)
        else:  # the logs whole (the report shows only their ends) and the servers' stores
            print(f"kept {base} (service logs in {base / 'fleet' / 'logs'})", flush=True)


class Soak:
    def __init__(self, system: System, args: argparse.Namespace) -> None:
        self.system, self.args = system, args
        self.fleet = system.fleet
        self.convergence: list[float] = []
        self.first_trip: list[float] = []
        self.phases = ""
        self.swept = 0
        """Reservations that landed for a guest after the workload gave up on it."""
        self.results: dict[str, int] = {}
        """invariant -> times it was checked and held."""

    async def run(self) -> int:
        args, fleet = self.args, self.fleet
        bus = await Bus.connect(fleet.nats_urls, name="soak", source="sriov/soak")
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
        rng = random.Random(args.seed)
        nemesis = Nemesis(self.system, bus, random.Random(rng.random()))
        churn = HostChurn(fleet, bus, random.Random(rng.random()), nemesis.note)
        held: dict[str, str] = {}
        sync = Workload(bus, None, workers=3, attach=True, tolerant=True, held=held)
        inbox = InboxWorkload(bus, None, workers=1, tolerant=True, held=held,
                              rng=random.Random(rng.random()))  # fmt: skip
        started = time.monotonic()
        try:
            others = {s.host_id: GUIDE_VFS for s in fleet.sim_hosts[1:]}
            empty = Expect(fleet.host_id, GUIDE_VFS, {}, hosts=others)
            await converge(bus, empty, time.monotonic(), args.cap_s, fleet.obituaries)
            keep, held_pci = await self._keepers(sync, churn)
            deadline = time.monotonic() + args.minutes * 60
            while (left := deadline - time.monotonic()) > 5:
                await self._round(bus, nemesis, churn, sync, inbox, min(args.round_s, left))
                expect = Expect(
                    fleet.host_id, GUIDE_VFS, keep,
                    sync.reserved_requests | inbox.reserved_requests,
                    sync.released_requests | inbox.released_requests, hosts=others,
                )  # fmt: skip
                await self._check(bus, expect, nemesis, held_pci, sync, inbox)
            await self._ended_early(bus, sync.ended_early + inbox.ended_early)
        except (Violation, AssertionError) as exc:
            self._report(nemesis, churn, sync, inbox, started)
            print(f"\nVIOLATION (seed {args.seed}): {exc}", flush=True)
            print("--- fault timeline (last 40) ---\n" + "\n".join(nemesis.timeline[-40:]))
            print(f"--- workload errors: {dict(sync.errors)} {dict(inbox.errors)}")
            with contextlib.suppress(Exception):  # what was dead-lettered, and why
                async for dl in bus.history(subjects.STREAM_DEAD_LETTER):
                    print(f"--- dead letter {dl.subject}: {dl.headers} {dl.data[:300]!r}")
            await self._diagnose(bus)
            print("--- service logs ---\n" + fleet.tails(8), flush=True)
            return 1
        finally:
            await bus.close()
        self._report(nemesis, churn, sync, inbox, started)
        return 0

    async def _ended_early(self, bus: Bus, guests: list[str]) -> None:
        """Why a reservation was gone when its guest confirmed or attached: its events."""
        for guest in guests[:5]:
            with contextlib.suppress(Exception):
                told = [
                    f"{type(ev).__name__}{f' ({ev.reason})' if isinstance(ev, m.Lost) else ''}"
                    for ev in await read_events(bus, guest)
                ]
                print(f"reservation gone mid-cycle: {guest}: {', '.join(told)}")
        if len(guests) > 5:
            print(f"... and {len(guests) - 5} more")

    async def _diagnose(self, bus: Bus) -> None:
        """Where a VF's release stops: hostd's desired-state durable, the outboxes, and the
        scheduler's unsettled VFs with the revision they wait for and hostd's last outcome."""
        for sim in self.fleet.sim_hosts:
            with contextlib.suppress(Exception):
                info = await bus.consumer_info(subjects.STREAM_DESIRED, consumer_name(sim.host_id))
                print(f"--- {info.name}: {info.num_pending} pending, {info.num_ack_pending} "
                      f"unacknowledged, {info.num_redelivered} redelivered")  # fmt: skip
        with contextlib.suppress(Exception):
            print(f"--- outboxes: {await outboxes_empty(self.system.pg.dsn) or 'empty'}")
            conn = await asyncpg.connect(self.system.pg.dsn, timeout=10)
            try:
                rows = await conn.fetch(
                    "SELECT v.pci_address, v.lifecycle, d.state, d.revision, d.outcome"
                    " FROM scheduler.vfs v LEFT JOIN scheduler.desired d USING (device_id)"
                    " WHERE v.lifecycle NOT IN ('free', 'ready') ORDER BY v.pci_address"
                )
            finally:
                await conn.close()
            for r in rows:
                print(f"--- scheduler VF {r[0]}: {r[1]}, desired {r[2]} revision {r[3]}, "
                      f"hostd's last outcome {r[4]}")  # fmt: skip

    async def _keepers(
        self, wl: Workload, churn: HostChurn
    ) -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
        """A guest per host holding a ConnectX-5 VF on VLAN 100 all along (drift's target)."""
        keep: dict[str, set[str]] = {}
        held_pci: set[tuple[str, str]] = set()
        for i, sim in enumerate(self.fleet.sim_hosts):
            guest = f"keep-{wl.prefix}-{i}"
            req = m.PlaceRequest(
                request_id=f"{guest}/place", guest_id=guest, host_id=sim.host_id,
                nets=[m.NetRequest(desc=f"sriov-nic-model={CX5};vlan={KEEP_VLAN}")],
            )  # fmt: skip
            reply = await wl.call("place", req)
            wl.took(guest, reply.assignments)
            wl.reserved_requests.add(req.request_id)
            await wl.call(
                "confirm", m.ConfirmRequest(request_id=f"{guest}/confirm", guest_id=guest)
            )
            keep[guest] = {a.device_id for a in reply.assignments}
            for a in reply.assignments:
                held_pci.add((sim.host_id, a.pci_address))
                churn.drift_targets.append((i, a.pci_address))
        wl.guests.clear()  # the keepers are not the workers' to release
        return keep, held_pci

    async def _round(
        self, bus: Bus, nemesis: Nemesis, churn: HostChurn,
        sync: Workload, inbox: InboxWorkload, seconds: float,
    ) -> None:  # fmt: skip
        stop = asyncio.Event()
        async with sync.running(), inbox.running():
            tasks = [asyncio.create_task(nemesis.run(stop)), asyncio.create_task(churn.run(stop))]
            watch = asyncio.create_task(self._watch(bus, stop, sync, inbox))
            await asyncio.sleep(seconds)
            stop.set()
            healed, _ = await asyncio.gather(*tasks)
            nemesis.note("every fault healed")
            self.healed = healed
            await watch
            self.first_trip.append(
                await sync.first_success_after(healed, self.args.cap_s, self.fleet.obituaries)
            )
        done = time.monotonic() - self.healed
        await self._sweep(bus, sync, inbox)
        await churn.settle(self.args.cap_s)
        # where a slow round's convergence goes, phase by phase (all since the heal)
        self.phases = (
            f"first round trip {self.first_trip[-1]:.1f}s, workload done {done:.1f}s, "
            f"host churn put back {time.monotonic() - self.healed:.1f}s"
        )

    async def _sweep(self, bus: Bus, sync: Workload, inbox: InboxWorkload) -> None:
        """Release the guests the workload gave up on, once every queued request was handled,
        as a careful client does: a copy of a refused place that lands later reserves for a
        guest nobody will release, and only its TTL would end it (what made the slow rounds
        of the earlier soaks: 54-132 s to converge, against 12-40 s for the others)."""
        guests = sorted(sync.gave_up | inbox.gave_up)
        sync.gave_up.clear()
        inbox.gave_up.clear()
        deadline = time.monotonic() + self.args.cap_s
        while guests:
            try:
                # a publish that timed out in an outage may still wait in the client's
                # reconnect buffer and reach the stream later: flushed, "drained" covers it
                await bus.flush()
                if await consumers_drained(bus, [subjects.STREAM_PLACEMENT_REQUESTS]) is None:
                    break
            except Exception:  # the stream electing a leader after the heal: asked again
                pass
            if time.monotonic() > deadline:
                raise Violation(f"queued placement requests not handled within {self.args.cap_s}s")
            await asyncio.sleep(0.25)
        for guest in guests:
            req = m.ReleaseRequest(request_id=f"{guest}/sweep", guest_id=guest)
            try:
                reply = await sync.call("release", req)
            except SriovError as exc:
                raise Violation(f"releasing given-up guest {guest}: {exc}") from exc
            if reply.released:
                sync.released_requests.add(req.request_id)
                self.swept += 1

    async def _watch(
        self, bus: Bus, stop: asyncio.Event, sync: Workload, inbox: InboxWorkload
    ) -> None:
        """The checker while faults run: the client's live view and the reservation history
        (skipped while PostgreSQL does not answer)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 10)
            await self._conflicts(bus, sync, inbox)
            try:
                why = await reservations_ok(self.system.pg.dsn)
            except Exception:  # PostgreSQL down, frozen or full: the faults are at work
                continue
            self._held("no VF held twice (database, live)", why)

    async def _conflicts(self, bus: Bus, sync: Workload, inbox: InboxWorkload) -> None:
        for wl in (sync, inbox):
            while wl.conflicts:
                dev, guest, holder = wl.conflicts.pop()
                with contextlib.suppress(Exception):  # unanswered now: asked again later
                    if not await conflict_explained(bus, dev, holder):
                        raise Violation(f"{dev} handed to {guest} while {holder} held it")
                    continue
                wl.conflicts.append((dev, guest, holder))
                return

    def _held(self, name: str, why: str | None) -> None:
        if why is not None:
            raise Violation(f"{name}: {why}")
        self.results[name] = self.results.get(name, 0) + 1

    async def _check(
        self, bus: Bus, expect: Expect, nemesis: Nemesis, held_pci: set[tuple[str, str]],
        sync: Workload, inbox: InboxWorkload,
    ) -> None:  # fmt: skip
        if nemesis.errors:
            raise Violation(f"faults that did not heal: {nemesis.errors}")
        dsn = self.system.pg.dsn
        checks: list[tuple[str, Callable[[], Awaitable[str | None]]]] = [
            ("no VF held twice (events)", lambda: placement_history_ok(bus)),
            ("no VF held twice (database)", lambda: reservations_ok(dsn)),
            ("acknowledged effects exactly once", lambda: events_once(bus, expect)),
            ("every outbox row relayed", lambda: outboxes_empty(dsn)),
            ("VF hygiene at the PF", lambda: vf_hygiene(self.fleet, held_pci)),
            ("streams replicated and current", lambda: streams_current(bus)),
        ]
        expect.extra = [c for _, c in checks]
        took = await converge(bus, expect, self.healed, self.args.cap_s, self.fleet.obituaries)
        self.convergence.append(took)
        for name, check in checks:
            self._held(name, await check())
        self._held("inventory, scheduler and streams agree", None)
        await self._conflicts(bus, sync, inbox)
        if sync.conflicts or inbox.conflicts:
            raise Violation(f"unexplained hand-overs: {sync.conflicts + inbox.conflicts}")
        self._held("no VF handed out while held (client's view)", None)
        print(f"round {len(self.convergence)}: converged {took:.1f}s after the heal "
              f"({self.phases}); {sync.answered + inbox.answered} requests answered so far",
              flush=True)  # fmt: skip

    def _report(
        self, nemesis: Nemesis, churn: HostChurn, sync: Workload, inbox: InboxWorkload,
        started: float,
    ) -> None:  # fmt: skip
        def pct(xs: list[float]) -> str:
            if not xs:
                return "none"
            q = statistics.quantiles(xs, n=10, method="inclusive") if len(xs) > 1 else xs * 9
            return f"p50 {statistics.median(xs):.1f}s, p90 {q[8]:.1f}s, max {max(xs):.1f}s"

        print(f"\n==== soak summary (seed {self.args.seed}) ====")
        print(f"minutes run: {(time.monotonic() - started) / 60:.1f} "
              f"({len(self.convergence)} rounds, {len(self.fleet.sim_hosts)} hosts)")  # fmt: skip
        print(f"requests answered: {sync.answered} request-reply, {inbox.answered} through "
              f"JetStream; {len(sync.done) + len(inbox.done)} place/release cycles")  # fmt: skip
        print(f"faults injected: {dict(sorted(nemesis.injected.items()))}")
        print(f"host churn: {dict(sorted(churn.done.items()))}")
        print(f"convergence after heals: {pct(self.convergence)}")
        print(f"first round trip after heals: {pct(self.first_trip)}")
        print(f"errors answered (retried, or ending a cycle): {dict(sync.errors + inbox.errors)}")
        for line in sync.slow + inbox.slow:
            print(f"slow request: {line}")
        print(f"reservations that landed after their client gave up (released): {self.swept}")
        for name, n in self.results.items():
            print(f"invariant held: {name} ({n} checks)")
        print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)


def _dump_tasks() -> None:
    """``kill -USR1 <pid>``: where every task of a soak that seems stuck is waiting."""
    for task in asyncio.all_tasks():
        task.print_stack(limit=6, file=sys.stdout)
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
