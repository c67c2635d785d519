"""The VF lifecycle on the scheduler's side (issue 12): VF settings on a net, desired state on
SRIOV_DESIRED, hostd's outcomes (a fake hostd on the real host subject), cordon, vf-reset."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.errors import Conflict, InvalidRequest, NoCapacity, NotFound
from sriov.scheduler import validation as v
from sriov.scheduler.store import DESIRED
from sriov.scheduler.testing import (
    CX5,
    FULL,
    IGB,
    FakeHostd,
    PfSpec,
    fresh_counts,
    index_reads,
    read_events,
    wait_events,
    walk,
)

PF_A, PF_B = "0000:3b:00.0", "0000:5e:00.0"
NET = f"sriov-nic-model={CX5}"


async def call(bus: Any, name: str, req: m.Message, reply: type[m.Message]) -> Any:
    return await bus.request(subjects.endpoint(subjects.SCHEDULER_GROUP, name), req, reply)


async def reservations(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM scheduler.reservations"))
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("suffix", "config", "key"),
    [
        (";vlan=4095", None, "vlan"),
        (";mac=01:00:5e:00:00:01", None, "mac"),  # multicast
        (";mac=00:00:00:00:00:00", None, "mac"),
        (";min-rate=200;max-rate=100", None, "min-rate"),
        (";vlna=5", None, "vlna"),
        (";qos=8", None, "qos"),
        (";spoof-check=maybe", None, "spoof-check"),
        (";vlan=100", m.VfConfig(vlan=200), "vlan"),  # the same key twice
    ],
)
async def test_invalid_settings_are_refused_naming_the_key_and_nothing_is_stored(
    fleet, sync, client, database_url, suffix: str, config: m.VfConfig | None, key: str
) -> None:
    fleet.add_host("h1", [PfSpec(PF_A, count=2, capabilities=FULL)])
    await sync()
    req = m.PlaceRequest(
        request_id=str(uuid.uuid4()), guest_id="g1",
        nets=[m.NetRequest(desc=NET + suffix, config=config)],
    )  # fmt: skip
    with pytest.raises(InvalidRequest) as err:
        await client.call("place", req)
    assert err.value.details["key"] == key, err.value
    assert "nets[0]" in str(err.value)
    assert await reservations(database_url) == 0


async def test_a_mac_another_guest_holds_is_refused(fleet, sync, client, database_url) -> None:
    fleet.add_host("h1", [PfSpec(PF_A, count=3, capabilities=FULL)])
    await sync()
    await client.place("g1", NET + ";mac=fa:16:3e:00:00:01")
    with pytest.raises(InvalidRequest) as err:
        await client.place("g2", NET + ";mac=FA:16:3E:00:00:01")
    assert err.value.details["key"] == "mac"
    assert "held by guest g1" in str(err.value)
    typed = m.NetRequest(desc=NET, config=m.VfConfig(mac="fa:16:3e:00:00:01"))
    with pytest.raises(InvalidRequest):
        await client.call("place", m.PlaceRequest(request_id="r", guest_id="g3", nets=[typed]))
    assert await reservations(database_url) == 1


async def test_only_a_pf_that_can_apply_the_settings_is_picked(fleet, sync, client) -> None:
    fleet.add_host("igb", [PfSpec(PF_A, count=3, capabilities=IGB)])
    await sync()
    with pytest.raises(NoCapacity) as err:
        await client.place("g1", NET + ";min-rate=100;max-rate=1000")
    assert "none: all 3 whose PF cannot apply what the net asks (min-rate)" in str(err.value)
    ok = await client.place("g1", NET + ";max-rate=1000")  # igb can limit the max rate
    assert ok.host_id == "igb"
    fleet.add_host("cx5", [PfSpec(PF_A, count=1, capabilities=FULL)])
    await sync()
    got = await client.place("g2", NET + ";min-rate=100;max-rate=1000")
    assert got.host_id == "cx5"
    assert got.assignments[0].config is not None
    assert got.assignments[0].config.min_tx_rate == 100


def part_upgraded(fleet: Any) -> None:
    """A fleet part-way through an upgrade of hostd: 40 hosts (2,560 VFs) without the VF
    lifecycle, one host with it."""
    for h in range(40):
        fleet.add_host(f"old{h:02d}", [PfSpec(PF_A, count=32), PfSpec(PF_B, count=32)])
    fleet.add_host("new", [PfSpec(PF_A, count=2, capabilities=FULL)])


async def test_a_net_with_settings_walks_only_the_vfs_of_hosts_running_the_lifecycle(
    fleet, sync, client, database_url
) -> None:
    """A net with settings must not read the unmanaged VFs of its model one by one to find
    (or miss) a managed one."""
    part_upgraded(fleet)
    await sync()
    conn = await asyncpg.connect(database_url)
    try:
        # from just past the managed host, the walk meets every unmanaged VF before it
        start = await conn.fetchval("SELECT hashtext('new') + 1")
        host, read = await walk(conn, NET + ";vlan=100", start)
        assert host == "new" and read < 10  # of 2,560 unmanaged VFs before it
        plain_host, _ = await walk(conn, NET, start)
        assert plain_host != "new"  # a net without settings still takes any VF
        # a request whose first net has no settings walks by the one that has
        req = m.PlaceRequest(request_id="r", guest_id="g0", nets=[
            m.NetRequest(desc=NET), m.NetRequest(desc=NET + ";vlan=100")])  # fmt: skip
        a = v.place_args(req, default_ttl=60, ctx=v.Context(source="test", trace={}))
        args = msgspec.json.encode(msgspec.structs.replace(a, start_key=start)).decode()
        await fresh_counts(conn)
        tx = conn.transaction()
        await tx.start()
        try:
            reply = json.loads(await conn.fetchval(
                "SELECT scheduler.place($1::jsonb, $2, $3::jsonb)::text",
                args, m.type_of(m.Reserved), DESIRED,
            ))  # fmt: skip
            read = await index_reads(conn)
        finally:
            await tx.rollback()  # the VFs stay free for what follows
        assert reply["host_id"] == "new" and read < 50  # of 2,560 unmanaged VFs (5,232 before)
        for guest in ("g1", "g2"):
            assert (await client.place(guest, NET + ";vlan=100")).host_id == "new"
        host, read = await walk(conn, NET + ";vlan=100", start)
        # none free: found out without reading the others (only the entries the
        # reservations left behind, until vacuum)
        assert host is None and read < 10
    finally:
        await conn.close()


async def test_a_refusal_asks_what_each_pf_lacks_once_not_each_vf(
    fleet, sync, client, database_url
) -> None:
    """The explanation of a refusal counts every matching VF, but what a VF lacks is the
    same for all VFs of a PF class: asked per VF, it took 1.2-1.8 s at 64,000 VFs."""
    part_upgraded(fleet)
    fleet.add_host("full", [PfSpec(PF_A, count=2, capabilities=FULL)])
    await sync()
    for guest in ("g1", "g2", "g3", "g4"):  # every managed VF taken
        await client.place(guest, NET + ";vlan=100")
    a = v.place_args(
        m.PlaceRequest(request_id="r", guest_id="g5", nets=[m.NetRequest(desc=NET + ";vlan=100")]),
        default_ttl=60, ctx=v.Context(source="test", trace={}),
    )  # fmt: skip
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET track_functions = 'all'")
        async with conn.transaction():
            with pytest.raises(asyncpg.PostgresError) as err:
                async with conn.transaction():  # a savepoint: the counts outlive its abort
                    await conn.execute(
                        "SELECT scheduler.no_capacity($1::jsonb, NULL, NULL)",
                        msgspec.json.encode(a).decode(),
                    )
            calls = await conn.fetchval(
                "SELECT pg_stat_get_xact_function_calls("
                "'scheduler.lacking(text[], text, jsonb)'::regprocedure)"
            )
    finally:
        await conn.close()
    reason = json.loads(err.value.args[0])
    assert reason["details"]["matching"] == 2564 and reason["details"]["reserved"] == 4
    assert "2560 whose PF cannot apply what the net asks (VF settings" in reason["message"]
    assert calls == 1  # one class lacks something (the unmanaged PFs), asked once


async def test_place_publishes_desired_state_and_ready_follows_hostd(
    fleet, sync, client, bus
) -> None:
    fleet.add_host("h1", [PfSpec(PF_A, count=2, capabilities=FULL)])
    await sync()
    hostd = FakeHostd(bus, "h1")
    a = await client.place("g1", NET + ";vlan=100;trust=on")
    b = await client.place("g2", NET)
    assert a.assignments[0].prepared == "preparing"
    want_a = await hostd.wait(a.assignments[0].pci_address, "assigned")
    want_b = await hostd.wait(b.assignments[0].pci_address, "assigned")
    assert want_a.guest_id == "g1" and want_a.config.vlan == 100 and want_a.config.trust
    assert want_a.config.driver == "vfio-pci"
    macs = {want_a.config.mac, want_b.config.mac}
    assert len(macs) == 2 and all(mac and mac.startswith("02:") for mac in macs)  # local, unique
    assert want_a.config == a.assignments[0].config  # the reply says what hostd is told

    await hostd.report(want_a, "ready", iommu_group=42)
    events = await wait_events(bus, 2, "g1")
    ready = events[-1]
    assert isinstance(ready, m.Ready), events
    assert ready.device_ids == [a.assignments[0].device_id]
    assert ready.assignments[0].iommu_group == 42
    assert ready.assignments[0].config == want_a.config
    got = (await client.get("g1")).assignments[0]
    assert (got.prepared, got.iommu_group) == ("ready", 42)
    assert (await client.get("g2")).assignments[0].prepared == "preparing"


async def test_a_released_vf_is_offered_again_only_once_hostd_reports_it_clean(
    fleet, sync, client, bus
) -> None:
    hostd, vf, assigned = await one_vf_placed(fleet, sync, client, bus)
    await hostd.report(assigned, "ready")
    await client.release("g1")
    clean = await hostd.wait(vf.pci_address, "clean", after=assigned.revision)
    assert clean.config == m.clean_config() and clean.guest_id is None and not clean.reset
    with pytest.raises(NoCapacity) as err:
        await client.place("g2", NET)
    assert "1 being cleaned after their last guest" in str(err.value)
    await hostd.report(assigned, "clean")  # an outcome for an older revision: ignored
    await hostd.report(clean, "clean")
    async with _eventually():
        while True:
            try:
                assert (await client.place("g2", NET)).assignments[0].device_id == vf.device_id
                break
            except NoCapacity:
                await _sleep()


async def test_a_vf_the_host_cannot_prepare_ends_its_reservation(fleet, sync, client, bus) -> None:
    hostd, vf, assigned = await one_vf_placed(fleet, sync, client, bus, NET + ";vlan=7")
    await hostd.report(assigned, "failed", error="RTNETLINK answers: Operation not supported")
    events = await wait_events(bus, 2, "g1")
    failed = events[-1]
    assert isinstance(failed, m.Failed) and failed.op == "prepare", events
    assert failed.device_ids == [vf.device_id]
    assert "Operation not supported" in failed.error.message
    with pytest.raises(NotFound):
        await client.get("g1")
    await hostd.wait(vf.pci_address, "clean", after=assigned.revision)  # and it is cleaned


async def test_a_ready_vf_that_fails_a_re_apply_keeps_its_guest(
    fleet, sync, client, bus, database_url
) -> None:
    """hostd re-applies a ready VF (drift, or its restart) and fails: the guest was told Ready
    and has the VF, so the reservation stays ('degraded', recorded on the VF's desired row);
    ending it would offer the VF to another guest while the first still has it (issue 15)."""
    hostd, vf, assigned = await one_vf_placed(fleet, sync, client, bus)
    await hostd.report(assigned, "ready")
    await wait_events(bus, 2, "g1")
    await hostd.report(assigned, "failed", error="RTNETLINK answers: Device or resource busy")
    conn = await asyncpg.connect(database_url)
    try:
        async with _eventually():
            while (row := await conn.fetchrow(
                "SELECT outcome, error FROM scheduler.desired WHERE device_id = $1",
                vf.device_id,
            )) is None or row["outcome"] != "failed":  # fmt: skip
                await _sleep()
    finally:
        await conn.close()
    assert "Device or resource busy" in row["error"]
    got = (await client.get("g1")).assignments[0]
    assert (got.device_id, got.prepared) == (vf.device_id, "ready")
    assert [type(e) for e in await read_events(bus, "g1")] == [m.Reserved, m.Ready]
    with pytest.raises(NoCapacity):  # still held: not offered to anyone else
        await client.place("g2", NET)
    await client.release("g1")  # and released as always: hostd restores it
    await hostd.wait(vf.pci_address, "clean", after=assigned.revision)


async def test_one_vf_the_host_cannot_prepare_fails_the_whole_request(
    fleet, sync, client, bus
) -> None:
    """A guest that asked for two VFs never sees Ready with one: the request fails whole,
    both VFs are cleaned, and the other VF's ``ready`` arriving afterwards changes nothing."""
    fleet.add_host("h1", [PfSpec(PF_A, count=2, capabilities=FULL)])
    await sync()
    hostd = FakeHostd(bus, "h1")
    first, second = (await client.place("g1", NET, NET)).assignments
    want_1 = await hostd.wait(first.pci_address, "assigned")
    want_2 = await hostd.wait(second.pci_address, "assigned")
    await hostd.report(want_1, "failed", error="RTNETLINK answers: Operation not supported")
    events = await wait_events(bus, 2, "g1")
    failed = events[-1]
    assert isinstance(failed, m.Failed) and failed.op == "prepare", events
    assert sorted(failed.device_ids) == sorted([first.device_id, second.device_id])
    assert f"could not prepare VF {first.pci_address}" in failed.error.message
    with pytest.raises(NotFound):
        await client.get("g1")
    for vf, want in ((first, want_1), (second, want_2)):
        await hostd.wait(vf.pci_address, "clean", after=want.revision)
    await hostd.report(want_2, "ready")  # the other VF's outcome, for its older revision
    await asyncio.sleep(0.3)
    assert [type(e) for e in await read_events(bus, "g1")] == [m.Reserved, m.Failed]


async def test_a_quarantined_vf_is_never_placed_until_reset_and_clean(
    fleet, sync, client, bus
) -> None:
    hostd, vf, assigned = await one_vf_placed(fleet, sync, client, bus)
    reset = m.VfResetRequest(request_id="reset-1", host_id="h1", pci_address=vf.pci_address)
    with pytest.raises(Conflict) as err:  # only a quarantined VF is reset
        await call(bus, "vf-reset", reset, m.VfResetReply)
    assert "is preparing, not quarantined" in str(err.value)
    await client.release("g1")
    clean = await hostd.wait(vf.pci_address, "clean", after=assigned.revision)
    await hostd.report(clean, "quarantined", error="MAC still set after restore")
    async with _eventually():
        while True:
            with pytest.raises(NoCapacity) as err:
                await client.place("g2", NET)
            if "1 quarantined" in str(err.value):
                break
            await _sleep()
    await hostd.report(clean, "clean")  # a late "clean" does not lift a quarantine
    await _sleep(0.3)
    with pytest.raises(NoCapacity):
        await client.place("g2", NET)

    reply = await call(bus, "vf-reset", reset, m.VfResetReply)
    assert (reply.state, reply.device_id) == ("cleaning", vf.device_id)
    assert await call(bus, "vf-reset", reset, m.VfResetReply) == reply  # a retry
    again = await hostd.wait(vf.pci_address, "clean", after=clean.revision)
    assert again.reset and again.revision == reply.revision
    await hostd.report(again, "clean")
    async with _eventually():
        while True:
            try:
                await client.place("g2", NET)
                break
            except NoCapacity:
                await _sleep()


async def test_a_cordoned_host_takes_no_new_placements(fleet, sync, client, bus) -> None:
    fleet.add_host("h1", [PfSpec(PF_A, count=3)])
    await sync()
    held = (await client.place("g1", NET)).assignments[0]
    reply = await call(
        bus, "cordon", m.CordonRequest(host_id="h1", reason="kernel update"), m.CordonReply
    )
    assert reply.cordoned and reply.reason == "kernel update"
    assert [(h.guest_id, h.device_id) for h in reply.held] == [("g1", held.device_id)]
    with pytest.raises(NoCapacity) as err:
        await client.place("g2", NET)
    assert "3 on cordoned hosts" in str(err.value)
    with pytest.raises(NoCapacity) as err:
        await client.attach("g1", NET)
    assert "host h1: it is cordoned (kernel update)" in str(err.value)
    with pytest.raises(NotFound):
        await call(bus, "cordon", m.CordonRequest(host_id="nope"), m.CordonReply)
    off = m.CordonRequest(host_id="h1", cordoned=False)
    assert not (await call(bus, "cordon", off, m.CordonReply)).cordoned
    assert (await client.place("g2", NET)).host_id == "h1"


async def _waits_on_a_lock(conn: asyncpg.Connection, pid: int) -> None:
    while not await conn.fetchval(
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
    ):
        await asyncio.sleep(0.02)


async def test_a_cordon_waits_for_placements_on_their_way_and_lists_them(
    fleet, sync, database_url
) -> None:
    """A placement that chose the host before the cordon commits: the cordon waits for it
    and names its guest; once the cordon returned, nothing more is placed there (before, a
    placement racing the cordon committed on the cordoned host, missing from the list)."""
    fleet.add_host("h1", [PfSpec(PF_A, count=3)])
    fleet.add_host("h2", [PfSpec(PF_B, count=3)])
    await sync()
    ctx = v.Context(source="test")

    def place(guest: str, host: str | None = None) -> str:
        req = m.PlaceRequest(request_id=f"r-{guest}", guest_id=guest, host_id=host,
                             nets=[m.NetRequest(desc=NET)])  # fmt: skip
        return msgspec.json.encode(v.place_args(req, default_ttl=300, ctx=ctx)).decode()

    sql = "SELECT scheduler.place($1::jsonb, $2, $3::jsonb)::text"
    placing, cordoning, watcher = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        async with placing.transaction():
            first = json.loads(await placing.fetchval(sql, place("g-first"), "t", DESIRED))
            host = first["host_id"]
            cordon = asyncio.create_task(cordoning.fetchval(
                "SELECT scheduler.cordon($1::jsonb)::text",
                json.dumps({"host_id": host, "cordoned": True, "reason": "race"}),
            ))  # fmt: skip
            await asyncio.wait_for(_waits_on_a_lock(watcher, cordoning.get_server_pid()), 10)
        reply = json.loads(await asyncio.wait_for(cordon, 10))
        assert [h["guest_id"] for h in reply["held"]] == ["g-first"]
        # and a walk skips the host while its cordon is being taken, without waiting
        other = "h2" if host == "h1" else "h1"
        async with cordoning.transaction():
            await cordoning.fetchval(
                "SELECT scheduler.cordon($1::jsonb)::text",
                json.dumps({"host_id": other, "cordoned": True, "reason": "race"}),
            )
            with pytest.raises(asyncpg.PostgresError, match="no_capacity"):
                await asyncio.wait_for(placing.fetchval(sql, place("g-late"), "t", DESIRED), 10)
    finally:
        for conn in (placing, cordoning, watcher):
            await conn.close()


async def test_a_host_without_the_lifecycle_behaves_as_before(fleet, sync, client, bus) -> None:
    fleet.add_host("old", [PfSpec(PF_A, count=2)])
    await sync()
    a = (await client.place("g1", NET)).assignments[0]
    assert (a.prepared, a.config) == (None, None)
    with pytest.raises(NoCapacity) as err:  # nobody there would apply a VLAN
        await client.place("g2", NET + ";vlan=10")
    assert "VF settings (its hostd has no VF lifecycle)" in str(err.value)
    await client.release("g1")
    assert (await client.place("g2", NET)).assignments[0].device_id == a.device_id
    assert await FakeHostd(bus, "old").desired() == {}
    events = await wait_events(bus, 2, "g1")
    assert [type(e).__name__ for e in events] == ["Reserved", "Released"]


# --- helpers ------------------------------------------------------------------------------------
def _eventually(timeout: float = 10) -> asyncio.Timeout:
    return asyncio.timeout(timeout)


async def _sleep(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


async def one_vf_placed(
    fleet: Any, sync: Any, client: Any, bus: Any, desc: str = NET
) -> tuple[FakeHostd, m.Assignment, m.VfDesired]:
    """A host with one managed VF, placed for g1: its hostd, the VF, its desired state."""
    fleet.add_host("h1", [PfSpec(PF_A, count=1, capabilities=FULL)])
    await sync()
    hostd = FakeHostd(bus, "h1")
    vf = (await client.place("g1", desc)).assignments[0]
    return hostd, vf, await hostd.wait(vf.pci_address, "assigned")
