"""The VF lifecycle on a simulated host: desired state published on the real NATS as the
scheduler publishes it, hostd applying it over real sysfs writes and netlink (veths in a
namespace, the simulated PF driver at the one boundary), outcomes read back from the bus."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sriov.common import schemas as m
from sriov.common import subjects
from sriov.common.bus import Bus, ServiceHost
from sriov.common.errors import DeviceBusy
from sriov.common.schemas import VfConfig, clean_config
from sriov.hostd.agent import Options, running
from sriov.hostd.lifecycle import consumer_name
from sriov.hostd.simulator import vftable
from sriov.hostd.simulator.spec import guide
from sriov.hostd.sysfs import Sysfs
from sriov.hostd.vfconfig import VfConfigurator, capabilities_for
from sriov.hostd.vfconfig import driver as drv

from .conftest import EventTap, SimHost, make_host, poll
from .test_simulator import GUIDE_CX5_VFS

pytestmark = pytest.mark.netns
CX5 = "0000:0a:00.0"
GUEST = VfConfig(mac="fa:16:3e:00:00:01", vlan=100, qos=2, trust=True, max_tx_rate=1000)


@pytest.fixture
def host(tmp_path: Path, netns: str) -> SimHost:
    """The guide's host under a fresh host id (the NATS server outlives one test)."""
    spec = msgspec.structs.replace(guide(), host_id=f"lc-{uuid.uuid4().hex[:8]}")
    return make_host(tmp_path, spec, netns)


def desired(host: SimHost, vf: int, revision: int, config: VfConfig | None = None,
            *, guest: str = "vm-1", reset: bool = False, host_id: str | None = None,
            ) -> m.VfDesired:  # fmt: skip
    """What the scheduler publishes: ``config`` -> assigned to ``guest``; None -> clean."""
    pci = GUIDE_CX5_VFS[vf]
    return m.VfDesired(
        host_id=host_id or host.state.spec.host_id,
        pci_address=pci,
        device_id=f"dev-{pci}",
        revision=revision,
        state="clean" if config is None else "assigned",
        guest_id=None if config is None else guest,
        config=config or clean_config(),
        reset=reset,
    )


async def publish(bus: Bus, d: m.VfDesired) -> None:
    await bus.js_publish(subjects.desired_vf(d.host_id, d.pci_address), d)


async def outcome(tap: EventTap, vf: int, revision: int, timeout: float = 20) -> m.VfApplied:
    pci = GUIDE_CX5_VFS[vf]
    return await tap.wait(
        lambda e: isinstance(e, m.VfApplied) and e.pci_address == pci and e.revision == revision,
        timeout,
    )


def service(bus: Bus) -> Any:
    return ServiceHost.start(bus, "sriov-hostd", "0.1.0", "test hostd", {})


def cmd(host: SimHost, name: str) -> subjects.Subject:
    return subjects.endpoint(subjects.hostcmd_group(host.state.spec.host_id), name)


async def test_ready_clean_stale_and_actual_in_events(
    host: SimHost, bus: Bus, tap: EventTap
) -> None:
    async with running(bus, host.conf, Options(config_path=host.conf_path)) as agent:
        snap = await tap.wait(lambda e: isinstance(e, m.HostSnapshot))
        assert snap.pfs[0].capabilities == capabilities_for("mlx5_core")
        assert snap.vfs[3].actual == clean_config("mlx5_core")  # read back, with its driver

        await publish(bus, desired(host, 3, 1, GUEST))
        ready = await outcome(tap, 3, 1)
        assert (ready.outcome, ready.actual, ready.error) == ("ready", GUEST, None)
        assert ready.iommu_group is not None and ready.ifname is None  # vfio-pci: no netdev
        assert ready.mac is None
        cfg = VfConfigurator(str(host.root), host.netns)
        assert await cfg.read_vf(CX5, 3) == GUEST  # what the simulated PF driver keeps
        # the VF's actual configuration reaches consumers as a vf.changed (no snapshot)
        await tap.wait(lambda e: isinstance(e, m.VfChanged) and e.vf.actual == GUEST)
        assert len(tap.of(m.HostSnapshot)) == 1
        assert await cfg.plan(CX5, 3, GUEST) == []  # applying again would do nothing

        # the netdev driver: the VF keeps a netdev, which shows the MAC
        netdev_cfg = VfConfig(mac="fa:16:3e:00:00:02", vlan=10, driver="mlx5_core")
        await publish(bus, desired(host, 4, 1, netdev_cfg, guest="vm-2"))
        ready4 = await outcome(tap, 4, 1)
        assert (ready4.outcome, ready4.ifname, ready4.mac) == (
            "ready", "eth1v4", "fa:16:3e:00:00:02"
        )  # fmt: skip
        assert await cfg.netdev_mac(GUIDE_CX5_VFS[4]) == "fa:16:3e:00:00:02"

        await publish(bus, desired(host, 3, 2))
        clean = await outcome(tap, 3, 2)
        assert (clean.outcome, clean.actual) == ("clean", clean_config("mlx5_core"))
        assert clean.ifname == "eth1v3" and clean.mac  # rebound: its netdev is back
        assert drv.current_driver(Sysfs(host.root), GUIDE_CX5_VFS[3]) == "mlx5_core"

        # an older revision arriving late is ignored: the VF stays clean
        await publish(bus, desired(host, 3, 1, GUEST))
        await poll(lambda: agent.lifecycle.ignored == 1, 10)
        assert await cfg.read_vf(CX5, 3) == clean_config("mlx5_core")
        assert [e.revision for e in tap.of(m.VfApplied) if e.pci_address == GUIDE_CX5_VFS[3]] == [
            1,
            2,
        ]
        cfg.close()


async def test_a_failed_restore_quarantines_until_an_operator_reset(
    host: SimHost, bus: Bus, tap: EventTap
) -> None:
    async with running(bus, host.conf, Options(config_path=host.conf_path), await service(bus)):
        await publish(bus, desired(host, 2, 1, GUEST))
        assert (await outcome(tap, 2, 1)).outcome == "ready"
        vftable.inject_fault(str(host.root), "eth1", 2, "IFLA_VF_MAC", errno.EIO)

        await publish(bus, desired(host, 2, 2))
        q = await outcome(tap, 2, 2)
        assert q.outcome == "quarantined" and "refused mac" in (q.error or "")
        diag = await bus.request(cmd(host, "doctor"), m.DoctorRequest(), m.Diagnostics)
        found = [f for f in diag.findings if f.check == "vf.quarantined"]
        assert [(f.device, f.severity) for f in found] == [(GUIDE_CX5_VFS[2], "error")]
        assert "refused mac" in found[0].evidence and "vf-reset" in found[0].fix

        # a clean state without the operator's reset leaves it quarantined
        await publish(bus, desired(host, 2, 3))
        assert (await outcome(tap, 2, 3)).outcome == "quarantined"

        # an assignment of a quarantined VF is refused, never applied
        await publish(bus, desired(host, 2, 4, GUEST))
        assert (await outcome(tap, 2, 4)).outcome == "failed"

        vftable.inject_fault(str(host.root), "eth1", 2, "IFLA_VF_MAC", None)
        await publish(bus, desired(host, 2, 5, reset=True))
        back = await outcome(tap, 2, 5)
        assert (back.outcome, back.actual) == ("clean", clean_config("mlx5_core"))
        diag = await bus.request(cmd(host, "doctor"), m.DoctorRequest(), m.Diagnostics)
        assert not [f for f in diag.findings if f.check == "vf.quarantined"]


async def test_an_apply_the_driver_refuses_fails_and_leaves_the_vf_clean(
    host: SimHost, bus: Bus, tap: EventTap
) -> None:
    async with running(bus, host.conf, Options(config_path=host.conf_path)):
        vftable.inject_fault(str(host.root), "eth1", 5, "IFLA_VF_RATE", errno.EINVAL)
        await publish(bus, desired(host, 5, 1, GUEST))
        failed = await outcome(tap, 5, 1)
        assert failed.outcome == "failed" and "refused rate" in (failed.error or "")
        assert failed.actual == clean_config("mlx5_core")  # VLAN and MAC were undone


async def test_a_failed_drift_repair_leaves_the_guest_its_settings(
    host: SimHost, bus: Bus, tap: EventTap
) -> None:
    """The driver refuses the repair of a VF the guest holds: ``failed`` is reported (the
    scheduler keeps the reservation, degraded) and the VF is not cleaned under the guest."""
    async with running(bus, host.conf, Options(config_path=host.conf_path)) as agent:
        await publish(bus, desired(host, 3, 1, GUEST))
        assert (await outcome(tap, 3, 1)).outcome == "ready"
        # the VLAN changed behind hostd, then the driver refuses VLANs: the PF's lock is held
        # meanwhile (as a change in progress holds it), so the repair comes after both
        async with agent.lifecycle.holding(CX5):
            vftable.ip_link_set_vf(str(host.root), "eth1", 3, vlan=7)
            vftable.inject_fault(str(host.root), "eth1", 3, "IFLA_VF_VLAN_LIST", errno.EINVAL)
        failed = await tap.wait(
            lambda e: isinstance(e, m.VfApplied) and e.outcome == "failed" and e.revision == 1
        )
        assert "re-applying the guest's settings failed" in (failed.error or "")
        cfg = VfConfigurator(str(host.root), host.netns)
        now = await cfg.read_vf(CX5, 3)
        assert (now.mac, now.trust, now.vlan) == (GUEST.mac, True, 7)  # kept, never cleaned
        cfg.close()


@contextlib.asynccontextmanager
async def refusing(bus: Bus, stream: str) -> AsyncIterator[None]:
    """``stream`` held at its storage limit: JetStream refuses every new message, as it does
    while the stream has no leader (a NATS node killed)."""

    async def api(verb: str, body: object) -> dict[str, Any]:
        reply = await bus.request_raw(subjects.js_api("STREAM", verb, stream),
                                      json.dumps(body).encode())  # fmt: skip
        data: dict[str, Any] = json.loads(reply.data)
        assert "error" not in data, data
        return data

    info = await api("INFO", {})
    await api("UPDATE", {**info["config"], "max_bytes": info["state"]["bytes"], "discard": "new"})
    try:
        yield
    finally:
        await api("UPDATE", info["config"])


async def test_an_outcome_nats_refuses_is_owed_never_a_failed_preparation(
    host: SimHost, bus: Bus, tap: EventTap
) -> None:
    """The VF is prepared but its ``ready`` cannot be stored: the VF keeps the guest's
    settings, no ``failed`` is ever sent, and ``ready`` reaches the stream once it accepts it
    (issue 15: a NATS leader killed cost a long-held guest its VF)."""
    cfg = VfConfigurator(str(host.root), host.netns)
    async with running(bus, host.conf, Options(config_path=host.conf_path)) as agent:
        await tap.wait(lambda e: isinstance(e, m.HostSnapshot))
        async with refusing(bus, subjects.STREAM_HOST_EVENTS):
            refused = agent.publisher.failed
            await publish(bus, desired(host, 3, 1, GUEST))
            await poll(lambda: agent.publisher.failed > refused + 2, 20)  # retried, refused
            assert await cfg.read_vf(CX5, 3) == GUEST  # still prepared for the guest
        subject = subjects.host_vf(host.state.spec.host_id, "applied").subject
        decode = m.HOST_EVENTS.decode
        stored: list[m.VfApplied] = []
        async with asyncio.timeout(20):  # the stream has it once it accepts messages again
            while not stored:
                await asyncio.sleep(0.1)
                history = bus.history(subjects.STREAM_HOST_EVENTS, subject)
                stored = [e async for s in history if isinstance(e := decode(s.data), m.VfApplied)]
        vf3 = GUIDE_CX5_VFS[3]
        first = stored[0]
        assert (first.pci_address, first.outcome, first.actual) == (vf3, "ready", GUEST)
        # what hostd sent (stored or refused): "ready", tried again, never "failed"
        applied = [e for e in tap.of(m.VfApplied) if e.pci_address == GUIDE_CX5_VFS[3]]
        assert {e.outcome for e in applied} == {"ready"}, applied
        assert await cfg.read_vf(CX5, 3) == GUEST
    cfg.close()


async def test_drift_is_repaired_within_a_second_and_reported(
    host: SimHost, bus: Bus, tap: EventTap
) -> None:
    loop = asyncio.get_running_loop()
    async with running(bus, host.conf, Options(config_path=host.conf_path)) as agent:
        await publish(bus, desired(host, 3, 1, GUEST))
        await outcome(tap, 3, 1)
        # as `ip link set eth1 vf 3 vlan 7` would change it
        t0 = loop.time()
        vftable.ip_link_set_vf(str(host.root), "eth1", 3, vlan=7)
        fixed = await tap.wait(lambda e: isinstance(e, m.VfApplied) and e.outcome == "repaired")
        assert loop.time() - t0 < 1.0
        assert (fixed.pci_address, fixed.revision, fixed.drift) == (GUIDE_CX5_VFS[3], 1, ["vlan"])
        assert fixed.actual == GUEST
        cfg = VfConfigurator(str(host.root), host.netns)
        assert (await cfg.read_vf(CX5, 3)).vlan == 100

        # on the VF's own netdev (netdev driver): its MAC is put back
        mine = VfConfig(mac="fa:16:3e:00:00:04", driver="mlx5_core")
        await publish(bus, desired(host, 4, 1, mine))
        await outcome(tap, 4, 1)
        t0 = loop.time()
        vftable.set_vf_veth(str(host.root), "eth1", 4, mac="fa:16:3e:99:99:99")
        fixed4 = await tap.wait(
            lambda e: (
                isinstance(e, m.VfApplied)
                and e.outcome == "repaired"
                and e.pci_address == GUIDE_CX5_VFS[4]
            )
        )
        assert loop.time() - t0 < 1.0 and fixed4.drift == ["mac"]
        assert await cfg.netdev_mac(GUIDE_CX5_VFS[4]) == "fa:16:3e:00:00:04"

        # a clean VF is kept clean too
        await publish(bus, desired(host, 6, 1))
        await outcome(tap, 6, 1)
        vftable.ip_link_set_vf(str(host.root), "eth1", 6, trust=True)
        fixed6 = await tap.wait(
            lambda e: (
                isinstance(e, m.VfApplied)
                and e.outcome == "repaired"
                and e.pci_address == GUIDE_CX5_VFS[6]
            )
        )
        assert fixed6.drift == ["trust"] and not (await cfg.read_vf(CX5, 6)).trust
        assert agent.lifecycle.repaired == 3
        cfg.close()


async def test_killed_between_bind_and_mac_converges_after_restart(
    host: SimHost, bus: Bus, tap: EventTap
) -> None:
    """The MAC is refused as busy (a VF resetting), the daemon dies meanwhile; the next one
    replays the current desired state (only the last value per VF) and converges."""
    sysfs = Sysfs(host.root)
    vftable.inject_fault(str(host.root), "eth1", 1, "IFLA_VF_MAC", errno.EBUSY)
    await publish(bus, desired(host, 1, 1, GUEST))
    await publish(bus, desired(host, 7, 1, GUEST, guest="vm-7"))
    await publish(bus, desired(host, 7, 2))  # released before hostd ever saw it
    async with running(bus, host.conf, Options(config_path=host.conf_path)) as first:
        await poll(lambda: drv.current_driver(sysfs, GUIDE_CX5_VFS[1]) == "vfio-pci", 10)
        assert (await first.vfconfig.read_vf(CX5, 1)).mac is None  # bound, MAC not yet
    assert not [e for e in tap.of(m.VfApplied) if e.pci_address == GUIDE_CX5_VFS[1]]
    vftable.inject_fault(str(host.root), "eth1", 1, "IFLA_VF_MAC", None)

    async with running(bus, host.conf, Options(config_path=host.conf_path)) as second:
        ready = await outcome(tap, 1, 1)
        assert (ready.outcome, ready.actual) == ("ready", GUEST)
        assert ready.generation == second.generation
        assert (await outcome(tap, 7, 2)).outcome == "clean"
        info = await bus.consumer_info(subjects.STREAM_DESIRED, consumer_name(second.host_id))
        assert info.num_pending == 0
    # only the current value per VF was replayed: revision 1 of VF 7 was never applied
    assert {e.revision for e in tap.of(m.VfApplied) if e.pci_address == GUIDE_CX5_VFS[7]} == {2}


async def test_set_numvfs_is_refused_while_held_and_forced_ends_the_vfs(
    host: SimHost, bus: Bus, tap: EventTap
) -> None:
    async with running(
        bus, host.conf, Options(config_path=host.conf_path), await service(bus)
    ) as agent:
        await publish(bus, desired(host, 1, 1, GUEST, guest="vm-held"))
        await outcome(tap, 1, 1)
        ask = m.SetNumVfsRequest(pf="eth1", num_vfs=4)
        with pytest.raises(DeviceBusy, match=rf"vm-held \({GUIDE_CX5_VFS[1]}\)"):
            await bus.request(cmd(host, "set-numvfs"), ask, m.CommandAck, timeout=30)
        assert Sysfs(host.root).read_int(Sysfs(host.root).pci_device(CX5) + "/sriov_numvfs") == 8

        forced = msgspec.structs.replace(ask, force=True)
        ack = await bus.request(cmd(host, "set-numvfs"), forced, m.CommandAck, timeout=30)
        assert ack.message == "eth1: 8 -> 4 VFs"
        removed = {e.pci_address for e in tap.of(m.VfRemoved)}
        assert set(GUIDE_CX5_VFS) <= removed  # every VF was destroyed, the held one too
        await tap.wait(
            lambda e: isinstance(e, m.VfDiscovered) and e.vf.pci_address == GUIDE_CX5_VFS[1]
        )
        # the recreated VF is not "repaired" back to the old guest's configuration
        await asyncio.sleep(0.5)
        assert not [e for e in tap.of(m.VfApplied) if e.outcome == "repaired"]
        assert agent.state is not None
        await publish(bus, desired(host, 1, 2))  # the scheduler: lost, then clean
        assert (await outcome(tap, 1, 2)).outcome == "clean"


async def test_a_host_never_sees_another_hosts_desired_state(
    host: SimHost, bus: Bus, tap: EventTap
) -> None:
    other = f"{host.state.spec.host_id}-b"
    async with running(bus, host.conf, Options(config_path=host.conf_path)) as agent:
        await publish(bus, desired(host, 3, 1, GUEST, host_id=other))
        await publish(bus, desired(host, 4, 1, GUEST))
        await outcome(tap, 4, 1)
        await asyncio.sleep(0.3)
        assert [e.pci_address for e in tap.of(m.VfApplied)] == [GUIDE_CX5_VFS[4]]
        assert GUIDE_CX5_VFS[3] not in agent.lifecycle.desired
        names = [c.name for c in await bus.consumers(subjects.STREAM_DESIRED)]
        assert consumer_name(agent.host_id) in names


async def test_a_release_queued_behind_a_vf_count_change_is_still_reported_clean(
    host: SimHost, bus: Bus, tap: EventTap
) -> None:
    """The soak's seed 1: guests released, their clean states queued on the PF (one VF change
    at a time) when a VF count change, refused while they were held, goes through. The change
    waits for the PF, and every release is still answered ``clean`` on the recreated VF (they
    were taken for "destroyed" and never answered: the VFs stayed 'cleaning' for ever)."""
    async with running(
        bus, host.conf, Options(config_path=host.conf_path), await service(bus)
    ) as agent:
        lc = agent.lifecycle
        for vf in (1, 2):
            await publish(bus, desired(host, vf, 1, GUEST, guest=f"vm-{vf}"))
            await outcome(tap, vf, 1)
        async with lc.holding(CX5):  # another VF of the PF being changed
            for vf in (1, 2):
                await publish(bus, desired(host, vf, 2))
            # both releases queued behind it (recorded as desired, then waiting for the PF)
            await poll(lambda: all(lc.desired[GUIDE_CX5_VFS[vf]].revision == 2 for vf in (1, 2)))
            queued = lc.changing
            ask = m.SetNumVfsRequest(pf="eth1", num_vfs=4)
            change = asyncio.create_task(
                bus.request(cmd(host, "set-numvfs"), ask, m.CommandAck, timeout=30)
            )
            # it waits for the PF (before the fix it went through here, and the releases
            # were then dropped, or restored half-way through the VFs' destruction)
            await poll(lambda: change.done() or lc.changing > queued)
        assert (await change).message == "eth1: 8 -> 4 VFs"
        for vf in (1, 2):
            answer = await outcome(tap, vf, 2)
            assert (answer.outcome, answer.error) == ("clean", None)
        assert await agent.vfconfig.read_vf(CX5, 1) == clean_config("mlx5_core")
