"""Faults on the whole system, with real servers and real processes.

Each test runs the placement workload (see ``workload.py``), breaks one thing in the middle
of it, heals it, and then waits until everything agrees again: inventory lists every VF of
the host online with exactly the guests the client believes hold them, the scheduler agrees,
every consumer is drained, every answered request's event is in SRIOV_PLACEMENT, nothing was
dead-lettered and no VF was ever handed to two guests. How long that took is printed at the
end of the session; the bound asserted is generous on purpose (speed figures are not what
these tests are about).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from fleet import GUIDE_VFS, Fleet
from workload import (
    FIGURES,
    MODELS,
    Expect,
    Workload,
    converge,
    events_present,
    inventory_devices,
    placement_history_ok,
    streams_current,
)

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus
from sriov.devtools.cluster import NatsCluster
from sriov.devtools.embedded import PostgresServer
from sriov.inventory import ingest
from sriov.inventory.testing import Hostd, fleet_host

pytestmark = [pytest.mark.slow, pytest.mark.netns]

BOUND_S = 120.0
Check = Callable[[], Awaitable[str | None]]


async def survive(
    fleet: Fleet,
    client: Bus,
    name: str,
    fault: Callable[[], Awaitable[None]],
    heal: Callable[[], Awaitable[None]],
    *,
    during: float = 3.0,
    extra: Callable[[Expect], list[Check]] = lambda _e: [],
) -> float:
    """Run the workload through ``fault`` and ``heal``; return the convergence time."""
    host, vfs = fleet.host_id, GUIDE_VFS
    await converge(
        client, Expect(host, vfs, {}), time.monotonic(), timeout=BOUND_S, dead=fleet.obituaries
    )
    wl = Workload(client, host)
    keep: dict[str, set[str]] = {}
    for i, model in enumerate(MODELS):  # guests that hold their VF through the fault
        guest = f"keep-{wl.prefix}-{i}"
        keep[guest] = set(await wl.place(guest, model))
    try:
        async with wl.running():
            await asyncio.sleep(1.0)
            await fault()
            await asyncio.sleep(during)
            await heal()
            t0 = time.monotonic()
            first = await wl.first_success_after(t0, timeout=BOUND_S, dead=fleet.obituaries)
        expect = Expect(host, vfs, keep, set(wl.reserved_requests), set(wl.released_requests))
        expect.extra = [
            lambda: events_present(client, expect),
            lambda: placement_history_ok(client),
            *extra(expect),
        ]
        try:
            took = await converge(client, expect, t0, timeout=BOUND_S, dead=fleet.obituaries)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nservice logs:\n{fleet.tails()}") from None
        FIGURES.append(
            f"[{name}] first placement round trip {first:.2f}s after healing, converged in "
            f"{took:.2f}s; {len(wl.done)} round trips; transient errors: {dict(wl.errors)}"
            + (f"; answered as internal: {wl.unclear}" if wl.unclear else "")
        )
        assert wl.violations == []
        assert fleet.dead() == [], f"processes died: {fleet.dead()}"
    finally:  # also after a failure, so the next test starts from a free host
        for guest in keep:
            await wl.release(guest)
    await converge(
        client, Expect(host, vfs, {}), time.monotonic(), timeout=BOUND_S, dead=fleet.obituaries
    )
    return took


async def offload_answers(client: Bus, host_id: str) -> str | None:
    subject = subjects.endpoint(subjects.offloadcmd_group(host_id), "get")
    await client.request(subject, m.OffloadGetRequest(), m.OffloadStatus, timeout=3)
    return None


async def test_nats_node_killed_and_restarted(
    fleet: Fleet, client: Bus, cluster: NatsCluster
) -> None:
    info = await client.stream_info(subjects.STREAM_PLACEMENT)
    assert info.leader
    node = next(n for n in cluster.nodes if n.name == info.leader)

    async def fault() -> None:  # the placement stream's leader crashes
        await asyncio.to_thread(node.kill)

    async def heal() -> None:
        node.proc = None
        await asyncio.to_thread(node.start)

    def extra(_e: Expect) -> list[Check]:
        return [lambda: streams_current(client), lambda: offload_answers(client, fleet.host_id)]

    await survive(fleet, client, "NATS node killed", fault, heal, during=4.0, extra=extra)


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_postgres_restarted(fleet: Fleet, client: Bus, pg: PostgresServer, how: str) -> None:
    """A clean shutdown, and a crash (SIGKILL: crash recovery on the next start)."""

    async def fault() -> None:
        await asyncio.to_thread(pg.stop if how == "stop" else pg.kill)

    async def heal() -> None:
        await asyncio.to_thread(pg.start)

    await survive(fleet, client, f"PostgreSQL {how} and start", fault, heal, during=4.0)


async def test_scheduler_replica_killed(fleet: Fleet, client: Bus) -> None:
    async def fault() -> None:  # frozen first, so requests are surely in its hands when it dies
        fleet.pause("scheduler-1")
        await asyncio.sleep(0.5)
        await asyncio.to_thread(fleet.kill, "scheduler-1")

    async def heal() -> None:
        fleet.restart("scheduler-1")

    await survive(fleet, client, "scheduler replica killed", fault, heal)


async def _synthetic_hosts(client: Bus, tag: str, count: int) -> list[str]:
    """Publish ``count`` hosts of 64 VFs each, as hostd would (snapshot per host)."""
    ids = [f"{tag}-{i}" for i in range(count)]
    for host_id in ids:
        pfs, vfs = fleet_host(int(host_id.rsplit("-", 1)[1]))
        await Hostd(client, host_id).snapshot(pfs, vfs)
    return ids


def _hosts_complete(client: Bus, ids: list[str]) -> Check:
    async def check() -> str | None:
        for host_id in ids:
            n = len(await inventory_devices(client, host_id))
            if n != 64:
                return f"inventory lists {n} of 64 VFs of {host_id}"
        return None

    return check


async def test_inventory_replica_killed_mid_batch(fleet: Fleet, client: Bus) -> None:
    ids: list[str] = []

    async def fault() -> None:  # a burst of snapshots, and a replica dies while applying it
        ids.extend(await _synthetic_hosts(client, "burst", 30))
        async with asyncio.timeout(30):  # a batch is being applied (fetched, not yet acked)
            while not (
                await client.consumer_info(subjects.STREAM_HOST_EVENTS, ingest.DURABLE)
            ).num_ack_pending:
                await asyncio.sleep(0.01)
        await asyncio.to_thread(fleet.kill, "inventory-1")

    async def heal() -> None:
        fleet.restart("inventory-1")

    took = await survive(
        fleet, client, "inventory replica killed mid-batch", fault, heal,
        extra=lambda _e: [_hosts_complete(client, ids)],
    )  # fmt: skip
    assert took < BOUND_S


def link_seen(client: Bus, fleet: Fleet, ifname: str | None, state: str) -> Check:
    """Inventory shows the VFs of PF ``ifname`` (every VF when None) with link ``state``."""

    async def check() -> str | None:
        devs = await inventory_devices(client, fleet.host_id)
        devs = [d for d in devs if ifname is None or d.pf_ifname == ifname]
        bad = [d.addr for d in devs if d.link_state != state]
        return f"VFs of {ifname or 'the host'} not {state}: {bad}" if bad or not devs else None

    return check


async def restore_link(client: Bus, fleet: Fleet, ifname: str) -> None:
    await asyncio.to_thread(fleet.set_link, ifname, True)
    expect = Expect(fleet.host_id, GUIDE_VFS, {}, extra=[link_seen(client, fleet, None, "up")])
    await converge(client, expect, time.monotonic(), BOUND_S, fleet.obituaries)


async def test_nats_node_killed_while_hostd_reports_a_change(
    fleet: Fleet, client: Bus, cluster: NatsCluster
) -> None:
    """The host-events stream's leader dies and a PF's carrier drops during the outage:
    hostd's event must still reach inventory once the cluster has a new leader."""
    info = await client.stream_info(subjects.STREAM_HOST_EVENTS)
    assert info.leader
    node = next(n for n in cluster.nodes if n.name == info.leader)

    async def fault() -> None:
        await asyncio.to_thread(node.kill)
        await asyncio.to_thread(fleet.set_link, "eth2", False)

    async def heal() -> None:
        node.proc = None
        await asyncio.to_thread(node.start)

    def extra(_e: Expect) -> list[Check]:
        return [lambda: streams_current(client), link_seen(client, fleet, "eth2", "down")]

    try:
        await survive(fleet, client, "NATS node killed + link event", fault, heal, extra=extra)
    finally:
        await restore_link(client, fleet, "eth2")


async def test_hostd_restarted_with_a_change_while_down(fleet: Fleet, client: Bus) -> None:
    async def fault() -> None:  # hostd dies; the PF's carrier drops while nobody watches
        await asyncio.to_thread(fleet.kill, "hostd-1")
        await asyncio.to_thread(fleet.set_link, "eth2", False)

    async def heal() -> None:
        fleet.restart("hostd-1")

    try:
        await survive(
            fleet, client, "hostd restarted", fault, heal,
            extra=lambda _e: [link_seen(client, fleet, "eth2", "down")],
        )  # fmt: skip
    finally:
        await restore_link(client, fleet, "eth2")


async def test_slow_consumer_frozen_past_ack_wait(fleet: Fleet, client: Bus) -> None:
    ids: list[str] = []

    async def fault() -> None:  # a replica stops reading (SIGSTOP) with a burst in flight
        fleet.pause("inventory-1")
        ids.extend(await _synthetic_hosts(client, "slow", 20))

    async def heal() -> None:
        fleet.resume("inventory-1")

    await survive(
        fleet, client, "slow consumer (inventory frozen 7s)", fault, heal, during=7.0,
        extra=lambda _e: [_hosts_complete(client, ids)],
    )  # fmt: skip
