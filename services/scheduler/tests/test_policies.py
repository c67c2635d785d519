"""What a placement may pick: VF id, wire or network, NUMA policy, packing across PFs, host."""

from __future__ import annotations

import asyncpg
import pytest

from sriov.common.errors import DeviceBusy, HostOffline, NoCapacity, NotFound
from sriov.scheduler.testing import CX5, I350, PfSpec, walk

PF_A, PF_B, PF_C = "0000:3b:00.0", "0000:3b:00.1", "0000:5e:00.0"


async def test_a_vf_named_by_id(fleet, sync, client) -> None:
    ids = fleet.add_host("h1", [PfSpec(PF_A, count=4)])
    await sync()
    reply = await client.place("g1", f"sriov-nic-id={ids[1]}")
    assert [a.device_id for a in reply.assignments] == [ids[1]]
    with pytest.raises(DeviceBusy) as busy:
        await client.place("g2", f"sriov-nic-id={ids[1]}")
    assert "already reserved by guest g1" in str(busy.value)
    assert busy.value.details["guest_id"] == "g1"
    with pytest.raises(NotFound):
        await client.place("g2", "sriov-nic-id=00000000-0000-0000-0000-000000000000")
    # an id and a model in one request: the model's VF comes from the id's host
    fleet.add_host("h2", [PfSpec(PF_A, model=I350, count=2)])
    fleet.add_host("h3", [PfSpec(PF_A, model=I350, count=2)])
    await sync()
    both = await client.place("g3", f"sriov-nic-id={ids[0]}", f"sriov-nic-model={CX5}")
    assert {a.host_id for a in both.assignments} == {"h1"}
    with pytest.raises(NoCapacity):  # h1 has no I350
        await client.place("g4", f"sriov-nic-id={ids[3]}", f"sriov-nic-model={I350}")


async def test_id_of_a_vf_on_an_offline_host_or_a_down_link(fleet, sync, client) -> None:
    ids = fleet.add_host("h1", [PfSpec(PF_A, count=1), PfSpec(PF_B, count=1, link_up=False)])
    fleet.set_host_status("h1", "offline")
    await sync()
    with pytest.raises(HostOffline) as off:
        await client.place("g1", f"sriov-nic-id={ids[0]}")
    assert "host h1, which is offline" in str(off.value)
    fleet.set_host_status("h1", "online")
    await sync()
    with pytest.raises(NoCapacity) as down:
        await client.place("g1", f"sriov-nic-id={ids[1]}")
    assert "link of its PF" in str(down.value) and down.value.details["reason"] == "link_down"


async def test_wire_or_network_selector(fleet, sync, client) -> None:
    fleet.add_host("h1", [PfSpec(PF_A, count=2, wire="bcast0", network="net-a")])
    fleet.add_host("h2", [PfSpec(PF_A, count=2, wire="bcast1", network="net-b")])
    await sync()
    by_wire = await client.place("g1", f"sriov-nic-model={CX5}:bcast1")
    assert by_wire.host_id == "h2"
    by_net = await client.place("g2", f"sriov-nic-model={CX5}:net-a")
    assert by_net.host_id == "h1"
    with pytest.raises(NoCapacity) as none:
        await client.place("g3", f"sriov-nic-model={CX5}:bcast9")
    assert "the fleet has 0 matching VF(s)" in str(none.value)


async def test_a_net_naming_a_wire_or_network_walks_only_its_vfs(
    fleet, sync, client, database_url
) -> None:
    """Hosts spread over many wires: a net naming one must not read the VFs of the hosts on
    the others one by one."""
    for h in range(40):
        fleet.add_host(f"h{h:02d}", [PfSpec(PF_A, count=32, wire=f"w{h}"),
                                     PfSpec(PF_B, count=32, wire=f"w{h}")])  # fmt: skip
    fleet.add_host("rare", [PfSpec(PF_A, count=1, wire="w-rare")])
    fleet.add_host("netted", [PfSpec(PF_A, count=1, wire="w-other", network="net-x")])
    fleet.add_host("both", [PfSpec(PF_A, count=1, wire="dual", network="dual")])
    await sync()
    # a refusal's nearest capacity reads the same indexes, and counts a VF on both once
    with pytest.raises(NoCapacity) as err:
        await client.place("g0", f"sriov-nic-model={CX5}:net-x", host_id="h00")
    assert "nearest capacity: host netted has 1 of the 1" in str(err.value)
    with pytest.raises(NoCapacity) as err:
        await client.place("g0", *[f"sriov-nic-model={CX5}:dual"] * 2)
    assert "nearest capacity: host both has 1 of the 2" in str(err.value)
    conn = await asyncpg.connect(database_url)
    try:
        for host, sel in (("rare", "w-rare"), ("netted", "net-x")):
            # from just past the host, the walk meets every other VF before it
            start = await conn.fetchval("SELECT hashtext($1) + 1", host)
            found, read = await walk(conn, f"sriov-nic-model={CX5}:{sel}", start)
            assert found == host and read < 10  # of 2,560 VFs on other wires
        await client.place("g1", f"sriov-nic-model={CX5}:w-rare")
        found, read = await walk(conn, f"sriov-nic-model={CX5}:w-rare", 0)
        assert found is None and read < 10
        # with settings too (the wire's index, its unmanaged VFs skipped)
        found, _ = await walk(conn, f"sriov-nic-model={CX5}:w7;vlan=100", 0)
        assert found is None
    finally:
        await conn.close()


async def test_numa_required_and_preferred(fleet, sync, client) -> None:
    fleet.add_host("h1", [PfSpec(PF_A, count=2, numa_node=0)])
    fleet.add_host("h2", [PfSpec(PF_A, count=1, numa_node=0), PfSpec(PF_C, count=1, numa_node=1)])
    await sync()
    req = await client.place("g1", f"sriov-nic-model={CX5}", numa_policy="required", numa_node=1)
    assert [(a.host_id, a.numa_node) for a in req.assignments] == [("h2", 1)]
    with pytest.raises(NoCapacity) as err:
        await client.place("g2", f"sriov-nic-model={CX5}", numa_policy="required", numa_node=1)
    assert "on NUMA node 1" in str(err.value)
    # preferred: falls back to another node rather than failing
    pref = await client.place("g3", f"sriov-nic-model={CX5}", numa_policy="preferred",
                              numa_node=1)  # fmt: skip
    assert pref.assignments[0].numa_node == 0


async def test_preferred_numa_picks_the_matching_node_on_a_host(fleet, sync, client) -> None:
    fleet.add_host("h1", [PfSpec(PF_A, count=2, numa_node=0), PfSpec(PF_C, count=2, numa_node=1)])
    await sync()
    for guest in ("g1", "g2"):
        reply = await client.place(guest, f"sriov-nic-model={CX5}", numa_policy="preferred",
                                   numa_node=1)  # fmt: skip
        assert reply.assignments[0].numa_node == 1
    third = await client.place("g3", f"sriov-nic-model={CX5}", numa_policy="preferred",
                               numa_node=1)  # fmt: skip
    assert third.assignments[0].numa_node == 0


async def test_spread_and_pack_across_pfs(fleet, sync, client) -> None:
    fleet.add_host("h1", [PfSpec(PF_A, count=4), PfSpec(PF_B, count=4)])
    await sync()
    spread = await client.place("g1", *[f"sriov-nic-model={CX5}"] * 2)
    assert {a.pf_pci_address for a in spread.assignments} == {PF_A, PF_B}
    single = [await client.place(f"s{i}", f"sriov-nic-model={CX5}") for i in range(2)]
    # round-robin: each PF gives its next VF in turn
    assert sorted(r.assignments[0].pf_pci_address for r in single) == [PF_A, PF_B]
    packed = await client.place("g2", *[f"sriov-nic-model={CX5}"] * 2, packing="pack")
    assert [a.pf_pci_address for a in packed.assignments] == [PF_A, PF_A]
    # attach keeps to the packing of... spread by default: another PF than the guest's
    attached = await client.attach("g2", f"sriov-nic-model={CX5}")
    assert attached.assignments[0].pf_pci_address == PF_B


async def test_pack_fills_hosts_one_by_one(fleet, sync, client) -> None:
    for h in ("h1", "h2", "h3"):
        fleet.add_host(h, [PfSpec(PF_A, count=2)])
    await sync()
    hosts = [(await client.place(f"g{i}", f"sriov-nic-model={CX5}", packing="pack")).host_id
             for i in range(6)]  # fmt: skip
    # the same host until it is full, then the next one
    assert hosts[0] == hosts[1] and hosts[2] == hosts[3] and hosts[4] == hosts[5]
    assert len(set(hosts)) == 3


async def test_named_host(fleet, sync, client) -> None:
    fleet.add_host("h1", [PfSpec(PF_A, count=2)])
    fleet.add_host("h2", [PfSpec(PF_A, count=1)])
    await sync()
    assert (await client.place("g1", f"sriov-nic-model={CX5}", host_id="h2")).host_id == "h2"
    with pytest.raises(NoCapacity) as err:
        await client.place("g2", f"sriov-nic-model={CX5}", host_id="h2")
    text = str(err.value)
    assert "no capacity on host h2" in text and "it has 0 of them free" in text
    assert "nearest capacity: host h1 has 1 of the 1 VF(s) elsewhere" in text
