"""sriovctl's side of the VF lifecycle, against a real NATS server and a stand-in scheduler.

The scheduler's lifecycle endpoints are written in parallel, so a responder registered here
answers ``scheduler.place/attach/get/cordon/vf-reset`` with the contract's types, and
publishes ``Ready``/``Failed`` on the guest's placement subjects in SRIOV_PLACEMENT, as the
scheduler does. The commands run as real ``sriovctl`` processes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping

import msgspec
import pytest

from sriov.cli.testing import sriovctl, table_rows
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus, ServiceHost
from sriov.common.errors import NotFound

HOST = "h1"
PCI = "0000:3b:00.2"
CFG = m.VfConfig(mac="fa:16:3e:00:00:01", vlan=100)


def assignment(guest: str, prepared: str | None, **kw: object) -> m.Assignment:
    return m.Assignment(
        device_id=f"dev-{guest}", host_id=HOST, pci_address=PCI, addr=PCI[5:],
        model="ConnectX-5 Virtual Function", vendor_device_id="15b3:1018",
        pf_pci_address="0000:3b:00.0", config=CFG if prepared else None,
        prepared=prepared, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


class Scheduler:
    """Answers as the scheduler does; what each guest's VF becomes depends on its name:
    ``ready*`` gets ready, ``fail*`` cannot be prepared, ``legacy*`` has no lifecycle, any
    other stays preparing."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.guests: dict[str, m.PlacementReply] = {}
        self.held: dict[str, list[m.HeldVf]] = {}
        self.cordoned: dict[str, tuple[bool, str]] = {}
        self.cordon_calls = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def place(self, req: m.PlaceRequest, _h: Mapping[str, str]) -> m.PlacementReply:
        return self.reserve(req.guest_id, req.request_id)

    async def attach(self, req: m.AttachRequest, _h: Mapping[str, str]) -> m.PlacementReply:
        return self.reserve(req.guest_id, req.request_id)

    def reserve(self, guest: str, request_id: str) -> m.PlacementReply:
        prepared = None if guest.startswith("legacy") else "preparing"
        reply = m.PlacementReply(request_id=request_id, guest_id=guest, host_id=HOST,
                                 assignments=[assignment(guest, prepared)])  # fmt: skip
        self.guests[guest] = reply
        if guest.startswith(("ready", "fail")):
            task = asyncio.create_task(self.outcome(guest, reply))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return reply

    async def outcome(self, guest: str, reply: m.PlacementReply) -> None:
        await asyncio.sleep(0.3)  # hostd binds, configures and reads back
        dev = reply.assignments[0].device_id
        if guest.startswith("ready"):
            ready = assignment(guest, "ready", iommu_group=57)
            self.guests[guest] = msgspec.structs.replace(reply, assignments=[ready])
            ev: m.PlacementEvent = m.Ready(request_id="x", guest_id=guest, host_id=HOST,
                                           device_ids=[dev], assignments=[ready])  # fmt: skip
            verb = "ready"
        else:
            del self.guests[guest]
            error = m.ErrorInfo(code="failed", message=f"host {HOST} cannot apply vlan 100")
            ev = m.Failed(request_id="x", guest_id=guest, op="prepare", error=error,
                          device_ids=[dev])  # fmt: skip
            verb = "failed"
        await self.bus.js_publish(s.placement_event(guest, verb), ev, event_id=f"{guest}/{verb}")

    async def get(self, req: m.GetRequest, _h: Mapping[str, str]) -> m.PlacementReply:
        if req.guest_id not in self.guests:
            raise NotFound(f"guest {req.guest_id} holds no VF", guest_id=req.guest_id)
        return self.guests[req.guest_id]

    async def cordon(self, req: m.CordonRequest, _h: Mapping[str, str]) -> m.CordonReply:
        self.cordon_calls += 1
        self.cordoned[req.host_id] = (req.cordoned, req.reason)
        held = self.held.get(req.host_id, [])
        return m.CordonReply(host_id=req.host_id, cordoned=req.cordoned, reason=req.reason,
                             held=held)  # fmt: skip

    async def vf_reset(self, req: m.VfResetRequest, _h: Mapping[str, str]) -> m.VfResetReply:
        if req.pci_address != PCI:
            raise NotFound(f"no VF {req.pci_address} on host {req.host_id}")
        return m.VfResetReply(host_id=req.host_id, pci_address=req.pci_address,
                              device_id="dev-q", state="cleaning", revision=42)  # fmt: skip


@pytest.fixture
async def scheduler(bus: Bus) -> AsyncIterator[Scheduler]:
    await bus.ensure_streams()
    fake = Scheduler(bus)
    svc = await ServiceHost.start(bus, "sriov-scheduler", "0.1.0", "stand-in scheduler", {})
    for name, req, handler in (
        ("place", m.PlaceRequest, fake.place), ("attach", m.AttachRequest, fake.attach),
        ("get", m.GetRequest, fake.get), ("cordon", m.CordonRequest, fake.cordon),
        ("vf-reset", m.VfResetRequest, fake.vf_reset),
    ):  # fmt: skip
        await svc.add_endpoint(s.SCHEDULER_GROUP, name, req, handler)  # type: ignore[arg-type]
    try:
        yield fake
    finally:
        await svc.stop()


NET = "sriov-nic-model=ConnectX-5 Virtual Function"


async def test_server_create_waits_for_ready_and_prints_what_a_vm_manager_needs(
    nats_url: str, scheduler: Scheduler
) -> None:
    code, out, err = await sriovctl(nats_url, "server-create", "ready-1", "--net", NET)
    assert code == 0, err
    tables = out.split("*** Guest ready-1 on host: 1 VF(s) ***")
    header, rows, _ = table_rows(tables[1])
    assert header == ["Device_id", "PCI_address", "IOMMU_group", "Driver", "MAC", "VLAN",
                      "Prepared"]  # fmt: skip
    assert rows == [["dev-ready-1", PCI, "57", "vfio-pci", "fa:16:3e:00:00:01", "100", "ready"]]
    code, out, err = await sriovctl(nats_url, "--json", "server-attach-network", "ready-2", NET)
    assert code == 0, err
    (a,) = json.loads(out)["assignments"]
    assert (a["prepared"], a["iommu_group"], a["config"]["mac"]) == ("ready", 57, CFG.mac)


async def test_no_wait_returns_at_reserved_and_a_lifecycle_free_host_at_once(
    nats_url: str, scheduler: Scheduler
) -> None:
    code, out, err = await sriovctl(nats_url, "--json", "server-create", "ready-3", "--net",
                                    NET, "--no-wait")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["assignments"][0]["prepared"] == "preparing"
    # a scheduler or host without the lifecycle (prepared None): nothing to wait for, and
    # the output is what it was
    code, out, err = await sriovctl(nats_url, "server-create", "legacy-1", "--net", NET,
                                    "--wait-timeout", "30")  # fmt: skip
    assert code == 0, err
    assert "Prepared" not in out and out.count("\n+-") == 2


async def test_a_prepare_failure_or_a_timeout_ends_the_wait_with_an_error(
    nats_url: str, scheduler: Scheduler
) -> None:
    code, out, err = await sriovctl(nats_url, "server-create", "fail-1", "--net", NET)
    assert code == 1
    assert f"sriovctl: error: host {HOST} cannot apply vlan 100 [failed]" in err
    code, out, err = await sriovctl(nats_url, "server-attach-network", "slow-1", NET,
                                    "--wait-timeout", "1")  # fmt: skip
    assert code == 1 and f"not ready after 1 s: {PCI} still being prepared" in err
    assert "preparing" in out  # what was reserved is still shown


async def test_cordon_uncordon_and_vf_reset(nats_url: str, scheduler: Scheduler) -> None:
    scheduler.held[HOST] = [m.HeldVf(guest_id="g1", device_id="d1", pci_address=PCI)]
    code, out, err = await sriovctl(nats_url, "host-cordon", "--host", HOST, "--reason",
                                    "firmware")  # fmt: skip
    assert code == 0, err
    assert out.startswith(f"host {HOST} cordoned (firmware): 1 VF(s) held by 1 guest(s): g1")
    assert scheduler.cordoned[HOST] == (True, "firmware")
    code, out, _ = await sriovctl(nats_url, "host-uncordon", "--host", HOST)
    assert code == 0 and out.startswith(f"host {HOST} uncordoned:")
    assert scheduler.cordoned[HOST] == (False, "")
    code, out, err = await sriovctl(nats_url, "vf-reset", "--host", HOST, "--pci", PCI)
    assert code == 0, err
    assert out.strip() == f"host {HOST} VF {PCI} (dev-q): cleaning, desired revision 42"
    code, _, err = await sriovctl(nats_url, "vf-reset", "--host", HOST, "--pci", "0000:00:00.1")
    assert code == 1 and "[not_found]" in err


async def test_drain_names_the_blocking_guests_and_times_out(
    nats_url: str, scheduler: Scheduler
) -> None:
    scheduler.held[HOST] = [
        m.HeldVf(guest_id="g1", device_id="d1", pci_address=PCI),
        m.HeldVf(guest_id="g2", device_id="d2", pci_address="0000:3b:00.3"),
    ]
    code, out, err = await sriovctl(nats_url, "host-drain", "--host", HOST, "--timeout", "1.5")
    assert code == 1
    assert "waiting for 2 guest(s): g1, g2" in err
    assert f"host {HOST} not drained after 1.5 s: guests g1, g2 still hold VFs" in err
    assert scheduler.cordoned[HOST] == (True, "drain")

    async def guests_leave() -> None:
        await asyncio.sleep(1.5)
        scheduler.held[HOST] = []

    leaving = asyncio.create_task(guests_leave())
    code, out, err = await sriovctl(nats_url, "host-drain", "--host", HOST, "--timeout", "60")
    await leaving
    assert code == 0, err
    assert out.startswith(f"host {HOST} cordoned (drain): no VF held")
