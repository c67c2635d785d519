"""A placement workload that keeps going through faults, and the checks that follow them.

The workload is what a cloud controller does: place a guest on the guide host, confirm it,
release it, over and over from several workers. A request that fails for a transient reason
(timeout, no responder, database down) is retried with the same ``request_id`` until it is
answered, so its outcome is never ambiguous. The client keeps its own view of who holds which
VF (from a place reply until its release is sent) and flags a reply that hands out a VF some
other guest still holds: a double-booking observed in real time.

:func:`converged` then compares the whole system with that view: inventory's devices and
hosts, the scheduler's answer per guest, every consumer drained, every answered request's
event in SRIOV_PLACEMENT, nothing dead-lettered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus
from sriov.common.errors import NoCapacity, SriovError, UnknownModel
from sriov.scheduler.testing import CX5, I350, read_events

T = TypeVar("T")
FIGURES: list[str] = []
"""One line per fault survived, printed at the end of the session (conftest)."""
MODELS = (CX5, I350)


def final(exc: SriovError) -> bool:
    """A refusal (a 4xx code): the same request would get the same answer, so the cycle ends
    there. Besides capacity, a confirm (``not_found``) or an attach (``invalid_request``: no
    VF, so no host) of a guest whose reservation ended meanwhile (lost with its VF when the
    VF count changed, or expired): a client learns that at once, not after 120 s of asking
    again (two soak rounds took 102-109 s to converge that way)."""
    return exc.status < 500


SLOW_S = 10.0
"""A request answered later than this after it was first sent is reported by the soak."""


def sched(name: str) -> subjects.Subject:
    return subjects.endpoint(subjects.SCHEDULER_GROUP, name)


@dataclass
class Workload:
    bus: Bus
    host_id: str | None
    """None: any host the scheduler picks."""
    workers: int = 4
    attach: bool = False
    """Each cycle also attaches a second VF to its guest (``server-attach-network``)."""
    tolerant: bool = False
    """A request still failing after its retries is counted (``gave-up:...``) and the cycle
    moves on, rather than ending the worker (the soak's faults can outlast a retry budget)."""
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    held: dict[str, str] = field(default_factory=dict)
    """device id -> guest, from the place reply until the release is sent."""
    guests: dict[str, set[str]] = field(default_factory=dict)
    """guest -> device ids it holds now (client's view)."""
    reserved_requests: set[str] = field(default_factory=set)
    released_requests: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)
    conflicts: list[tuple[str, str, str]] = field(default_factory=list)
    """(device, guest it was handed to, guest the client believed held it), as ``violations``
    says in words: the soak asks the history whether the first holder had lost it."""
    unclear: list[str] = field(default_factory=list)
    """Transient failures answered as ``internal`` instead of a precise code."""
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    done: list[float] = field(default_factory=list)
    """monotonic time at which each place/release round trip completed."""
    answered: int = 0
    """Requests answered (each retry of one counts once)."""
    gave_up: set[str] = field(default_factory=set)
    """Guests whose cycle ended early (refused, or retries spent): a copy of their place still
    queued (published again, or taken by the bus without an acknowledgement) may reserve for
    them afterwards, so the soak releases them once every queued request was handled."""
    ended_early: list[str] = field(default_factory=list)
    """Guests whose reservation was gone when they confirmed it or attached to it (the soak
    shows why)."""
    slow: list[str] = field(default_factory=list)
    """Requests that took more than ``SLOW_S`` to answer (or to give up on), and why."""
    t0: float = field(default_factory=time.monotonic)
    _n: itertools.count[int] = field(default_factory=itertools.count)

    async def call(self, name: str, req: m.Message, retry_for: float = 120) -> m.PlacementReply:
        """One request, retried with the same id through transient failures (a slow one is
        noted in ``slow``, with the failures it met)."""
        failed: collections.Counter[str] = collections.Counter()
        started = time.monotonic()
        outcome = "answered"
        try:
            return await self._attempts(name, req, retry_for, failed)
        except SriovError as exc:
            outcome = f"{exc.code} ({exc})"
            raise
        finally:
            took = time.monotonic() - started
            if took > SLOW_S:
                rid = getattr(req, "request_id", "?")
                self.slow.append(
                    f"{name} {rid}: {outcome} after {took:.1f}s, {time.monotonic() - self.t0:.1f}s "
                    f"into the soak ({', '.join(f'{k} x{v}' for k, v in failed.items())})"
                )

    async def _attempts(
        self, name: str, req: m.Message, retry_for: float, failed: collections.Counter[str]
    ) -> m.PlacementReply:
        deadline = time.monotonic() + retry_for
        while True:
            try:
                reply = await self.bus.request(sched(name), req, m.PlacementReply, timeout=2)
                self.answered += 1
                return reply
            except SriovError as exc:
                self.errors[f"{name}:{exc.code}"] += 1
                if final(exc):
                    self.answered += 1
                    raise
                failed[exc.code] += 1
                if exc.code == "internal":  # retried like the others, but worth reporting
                    self.unclear.append(f"{name}: {exc}")
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def place(self, guest: str, model: str) -> list[str]:
        req = m.PlaceRequest(
            request_id=f"{guest}/place",
            guest_id=guest,
            host_id=self.host_id,
            nets=[m.NetRequest(desc=f"sriov-nic-model={model}")],
        )
        reply = await self.call("place", req)
        ids = self.took(guest, reply.assignments)
        self.reserved_requests.add(req.request_id)
        await self.call("confirm", m.ConfirmRequest(request_id=f"{guest}/confirm", guest_id=guest))
        return ids

    def took(self, guest: str, assignments: list[m.Assignment]) -> list[str]:
        """The client's view: ``guest`` holds these VFs now (flagged if another one does)."""
        ids = [a.device_id for a in assignments]
        for dev in ids:
            other = self.held.get(dev)
            if other is not None and other != guest:
                self.violations.append(f"{dev} handed to {guest} while {other} holds it")
                self.conflicts.append((dev, guest, other))
            self.held[dev] = guest
        self.guests.setdefault(guest, set()).update(ids)
        return ids

    async def attach_one(self, guest: str, model: str) -> list[str]:
        req = m.AttachRequest(
            request_id=f"{guest}/attach",
            guest_id=guest,
            net=m.NetRequest(desc=f"sriov-nic-model={model}"),
        )
        reply = await self.call("attach", req)
        self.reserved_requests.add(req.request_id)
        return self.took(guest, reply.assignments)

    async def release(self, guest: str) -> None:
        for dev in self.guests.pop(guest, set()):
            if self.held.get(dev) == guest:
                del self.held[dev]
        req = m.ReleaseRequest(request_id=f"{guest}/release", guest_id=guest)
        reply = await self.call("release", req)
        if reply.released:
            self.released_requests.add(req.request_id)

    async def _worker(self, index: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            guest = f"g{self.prefix}-{index}-{next(self._n)}"
            try:
                await self._cycle(guest, MODELS[index % len(MODELS)])
            except SriovError as exc:
                # the fault suite (not tolerant) expects nothing but capacity refusals
                if final(exc) and (self.tolerant or isinstance(exc, NoCapacity | UnknownModel)):
                    self.gave_up.add(guest)
                    if guest in self.guests:  # placed, then its reservation ended: off the view
                        self.ended_early.append(guest)
                        with contextlib.suppress(SriovError):
                            await self.release(guest)
                    await asyncio.sleep(0.2)
                    continue
                if not self.tolerant:
                    raise
                self.errors[f"gave-up:{exc.code}"] += 1
                self.gave_up.add(guest)
                with contextlib.suppress(SriovError):  # leave nothing held behind
                    await self.release(guest)

    async def _cycle(self, guest: str, model: str) -> None:
        await self.place(guest, model)
        if self.attach:
            with contextlib.suppress(NoCapacity, UnknownModel):
                await self.attach_one(guest, MODELS[(MODELS.index(model) + 1) % len(MODELS)])
        await asyncio.sleep(0.05)
        await self.release(guest)
        self.done.append(time.monotonic())

    @contextlib.asynccontextmanager
    async def running(self) -> collections.abc.AsyncIterator[Workload]:
        """Workers run inside the block; on exit each finishes its cycle (release included)."""
        stop = asyncio.Event()
        tasks = [asyncio.create_task(self._worker(i, stop)) for i in range(self.workers)]
        try:
            yield self
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    async def first_success_after(
        self, t0: float, timeout: float = 120, dead: Callable[[], list[str]] = list
    ) -> float:
        """Seconds from ``t0`` until a place/release round trip completed after it."""
        async with asyncio.timeout(timeout):
            while not any(t > t0 for t in self.done):
                if gone := dead():
                    raise AssertionError(f"processes died: {gone}")
                await asyncio.sleep(0.05)
        return min(t for t in self.done if t > t0) - t0


# --- convergence ------------------------------------------------------------------------------
DURABLE_STREAMS = (
    subjects.STREAM_HOST_EVENTS,
    subjects.STREAM_PLACEMENT,
    subjects.STREAM_STATE,
    subjects.STREAM_PLACEMENT_REQUESTS,
)


async def consumers_drained(bus: Bus, streams: Sequence[str] = DURABLE_STREAMS) -> str | None:
    """None once every durable consumer of ``streams`` has nothing pending or unacknowledged;
    else the first that has, and how much."""
    for stream in streams:
        last = (await bus.stream_info(stream)).last_seq  # once, for each of its consumers
        for info in await bus.consumers(stream):
            if not info.durable:
                continue
            if not await bus.caught_up(stream, info.name, last):
                return (
                    f"{stream}/{info.name}: {info.num_pending} pending, "
                    f"{info.num_ack_pending} unacknowledged"
                )
    return None


async def inventory_devices(bus: Bus, host_id: str) -> list[m.Device]:
    req = m.DeviceListRequest(host_id=host_id, limit=500)
    subject = subjects.endpoint(subjects.INVENTORY_DEVICES_GROUP, "list")
    reply = await bus.request(subject, req, m.DeviceListReply, timeout=3)
    return list(reply.devices)


async def dead_letters(bus: Bus) -> int:
    return (await bus.stream_info(subjects.STREAM_DEAD_LETTER)).messages


@dataclass
class Expect:
    """What the system must show once it has converged."""

    host_id: str
    vfs: int
    holdings: dict[str, set[str]]
    """guest -> device ids it must hold (and every other VF of the host free)."""
    reserved_requests: set[str] = field(default_factory=set)
    released_requests: set[str] = field(default_factory=set)
    dead_letters: int = 0
    extra: list[Callable[[], Awaitable[str | None]]] = field(default_factory=list)
    hosts: dict[str, int] = field(default_factory=dict)
    """Further hosts and their VF counts (``host_id`` and ``vfs`` are the first)."""


async def mismatch(bus: Bus, expect: Expect) -> str | None:
    """The first way the system differs from ``expect``, or None when it has converged."""
    try:
        if why := await consumers_drained(bus):
            return why
        devices = []
        for host, vfs in {expect.host_id: expect.vfs, **expect.hosts}.items():
            listed = await inventory_devices(bus, host)
            if len(listed) != vfs:
                return f"inventory lists {len(listed)} VFs of {host}, not {vfs}"
            devices += listed
        offline = [d.addr for d in devices if d.host_status != "online" or not d.present]
        if offline:
            return f"VFs not online and present: {offline}"
        want = {dev: g for g, devs in expect.holdings.items() for dev in devs}
        have = {d.id: d.guest_id for d in devices if d.guest_id}
        if have != want:
            return f"inventory guests {have} != expected {want}; " + await _explain(
                bus, set(have.values()) ^ set(want.values())
            )
        # the VF lifecycle settled too: a held VF prepared, every other one restored clean
        unsettled = [
            f"{d.addr} {d.lifecycle}"
            for d in devices
            if d.lifecycle is not None and d.lifecycle != ("ready" if d.id in want else "free")
        ]
        if unsettled:
            return f"VF lifecycle not settled in inventory: {unsettled}"
        for guest, devs in expect.holdings.items():
            reply = await bus.request(sched("get"), m.GetRequest(guest_id=guest), m.PlacementReply)
            if {a.device_id for a in reply.assignments} != devs:
                return f"scheduler holds {reply.assignments} for {guest}, expected {devs}"
            if waiting := [a.pci_address for a in reply.assignments if a.prepared == "preparing"]:
                return f"scheduler has {guest}'s {waiting} still preparing"
        if (n := await dead_letters(bus)) != expect.dead_letters:
            return f"{n} dead-lettered messages, expected {expect.dead_letters}"
        for check in expect.extra:
            if why := await check():
                return why
    except Exception as exc:  # a JetStream API call timing out while the cluster re-elects
        return f"not answering yet: {type(exc).__name__}: {exc}"
    return None


async def _explain(bus: Bus, guests: set[str]) -> str:
    """What the scheduler and SRIOV_PLACEMENT say about ``guests`` (for failure messages)."""
    events = await read_events(bus)
    out = []
    for guest in sorted(guests):
        reply = await bus.request(sched("get"), m.GetRequest(guest_id=guest), m.PlacementReply)
        evs = [
            f"{type(e).__name__}({getattr(e, 'device_ids', None) or ''})"
            for e in events
            if e.guest_id == guest
        ]
        out.append(f"{guest}: scheduler holds {[a.device_id for a in reply.assignments]}, "
                   f"events {evs}")  # fmt: skip
    return "; ".join(out)


async def converge(
    bus: Bus,
    expect: Expect,
    t0: float,
    timeout: float = 120,
    dead: Callable[[], list[str]] = list,
) -> float:
    """Wait until :func:`mismatch` is None; seconds since ``t0``. Fails naming the mismatch,
    at once if a process of the system died (``dead`` names them)."""
    deadline = time.monotonic() + timeout
    why: str | None = "never checked"
    said = time.monotonic()
    while time.monotonic() < deadline:
        if gone := dead():
            raise AssertionError(f"processes died: {gone}")
        why = await mismatch(bus, expect)
        if why is None:
            return time.monotonic() - t0
        if time.monotonic() - said > 30:  # a slow convergence says what it waits for
            said = time.monotonic()
            print(f"converging for {said - t0:.0f}s: {why}", flush=True)
        await asyncio.sleep(0.25)
    raise AssertionError(f"did not converge within {timeout}s: {why}")


async def events_present(bus: Bus, expect: Expect) -> str | None:
    """Every answered place has its Reserved event, every effective release its Released."""
    seen = {(type(e).__name__, e.request_id) for e in await read_events(bus)}
    for rid in expect.reserved_requests:
        if ("Reserved", rid) not in seen:
            return f"no Reserved event for answered request {rid}"
    for rid in expect.released_requests:
        if ("Released", rid) not in seen:
            return f"no Released event for answered request {rid}"
    return None


async def placement_history_ok(bus: Bus) -> str | None:
    """Replay SRIOV_PLACEMENT in the scheduler's commit order (``seq``; the stream's own order
    can differ after a relay batch was republished): every VF goes to a second guest only
    after the first's release, expiry or loss, and every event is numbered once."""
    events = await read_events(bus)
    seqs = [ev.seq for ev in events]
    if 0 in seqs or len(set(seqs)) != len(seqs):
        return f"placement events not numbered once each: {sorted(seqs)}"
    holder: dict[str, str] = {}
    for ev in sorted(events, key=lambda e: e.seq):
        if isinstance(ev, m.Reserved):
            for a in ev.assignments:
                if (other := holder.get(a.device_id)) is not None:
                    return f"{a.device_id} reserved by {ev.guest_id} while {other} holds it"
                holder[a.device_id] = ev.guest_id
        elif (
            isinstance(ev, m.Released | m.Expired)
            or (isinstance(ev, m.Lost) and not ev.still_reserved)
            or (isinstance(ev, m.Failed) and ev.op == "prepare")  # the reservation ended
        ):
            for dev in ev.device_ids:
                if holder.get(dev) == ev.guest_id:
                    del holder[dev]
    return None


async def streams_current(client: Bus) -> str | None:
    """Every replicated stream has a leader and all its replicas caught up."""
    for name in (subjects.STREAM_HOST_EVENTS, subjects.STREAM_STATE, subjects.STREAM_PLACEMENT):
        info = await client.stream_info(name)
        if not info.leader:
            return f"{name} has no leader"
        if len(info.followers) != 2 or info.lagging:
            return f"{name} replicas not current: {info.lagging or info.followers}"
    return None
