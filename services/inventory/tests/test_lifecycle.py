"""A VF's lifecycle state from placement events and hostd's outcomes, whatever their order.

The placement events and the outcomes come on two streams through two consumers; a desired
state's revision and the placement event of the same transaction may be numbered either way
round. These tests apply every order of one reservation's events and expect one answer.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable

import msgspec

from sriov.common import schemas as m
from sriov.inventory import testing as t
from sriov.inventory.model import HostRow, HostView

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
H = "h1"
PFS, VFS = t.fleet_host(0, vfs=2)
VF = VFS[0]
READY_CFG = m.VfConfig(mac="fa:16:3e:00:00:01", vlan=100, max_tx_rate=1000)
CLEAN_CFG = m.clean_config("mlx5_core")

Step = Callable[[HostView], object]


def view(pfs: list[m.PF] | None = None) -> HostView:
    v = HostView(HostRow(H), {}, {})
    snap = m.HostSnapshot(host_id=H, generation=1, seq=1, pfs=pfs or t.with_lifecycle(PFS),
                          vfs=VFS, ts=NOW)  # fmt: skip
    assert v.apply(snap, NOW) == "applied"
    v.finalize(NOW)
    return v


def applied(
    seq: int, revision: int, outcome: str, actual: m.VfConfig | None = None, **netdev: str | None
) -> Step:
    ev = m.VfApplied(
        host_id=H, generation=1, seq=seq, pci_address=VF.pci_address, revision=revision,
        outcome=outcome, actual=actual, iommu_group=77, ts=NOW,  # type: ignore[arg-type]
        **netdev,  # type: ignore[arg-type]
    )  # fmt: skip
    return lambda v: v.apply(ev, NOW)


def reserved(seq: int, guest: str = "g1") -> Step:
    return lambda v: v.hold(rec(v), guest, seq, reserved=True)


def confirmed(seq: int, guest: str = "g1") -> Step:
    return lambda v: v.hold(rec(v), guest, seq, reserved=False)


def ready(seq: int) -> Step:
    return lambda v: v.ready(rec(v), seq)


def released(seq: int) -> Step:
    return lambda v: v.release(rec(v), seq)


def rec(v: HostView):  # type: ignore[no-untyped-def]
    return v.devices[VF.pci_address]


def run(steps: list[Step], v: HostView | None = None) -> m.Device:
    v = v or view()
    for step in steps:
        step(v)
    v.finalize(NOW)
    return rec(v).device


def test_a_new_vf_is_free_and_carries_its_pfs_capabilities() -> None:
    dev = run([])
    assert dev.capabilities == t.MLX5_CAPS and dev.lifecycle == "free"
    v = view()
    assert v.host.vf_free == 2


def test_a_hostd_without_the_lifecycle_leaves_it_out() -> None:
    dev = run([reserved(10), released(20)], view(PFS))
    assert dev.capabilities is None and dev.lifecycle is None


def test_each_step_of_a_reservation() -> None:
    v = view()
    assert run([reserved(10)], v).lifecycle == "preparing"
    dev = run([applied(2, 11, "ready", READY_CFG)], v)
    assert dev.lifecycle == "ready" and dev.actual == READY_CFG
    assert (dev.driver, dev.iommu_group, dev.ifname) == ("vfio-pci", 77, None)
    assert run([ready(12), confirmed(13)], v).lifecycle == "ready"
    assert run([released(20)], v).lifecycle == "cleaning"
    assert v.host.vf_free == 1  # cleaning is not free
    dev = run([applied(3, 19, "clean", CLEAN_CFG)], v)
    assert dev.lifecycle == "free" and dev.actual == CLEAN_CFG and dev.driver == "mlx5_core"
    assert v.host.vf_free == 2
    # the next reservation starts over: the last episode's outcomes say nothing about it
    assert run([reserved(30, "g2")], v).lifecycle == "preparing"
    assert run([applied(4, 11, "ready", READY_CFG)], v).lifecycle == "preparing"  # too old


def test_any_order_of_one_reservation_ends_the_same() -> None:
    # desired revisions numbered below (11, 19) and above (31) their transaction's event
    steps = [reserved(10), applied(2, 11, "ready", READY_CFG), ready(12), confirmed(13),
             released(20), applied(3, 19, "clean", CLEAN_CFG)]  # fmt: skip
    for order in itertools.permutations(steps):
        dev = run(list(order))
        assert (dev.lifecycle, dev.guest_id, dev.actual) == ("free", None, CLEAN_CFG), order


def test_any_order_of_a_failed_preparation_ends_clean() -> None:
    # hostd cannot apply: the scheduler ends the reservation (Failed op prepare) and wants
    # the VF clean again; until hostd says clean it is not offered
    steps = [reserved(10), applied(2, 9, "failed"), released(14)]
    for order in itertools.permutations(steps):
        assert run(list(order)).lifecycle == "cleaning", order
    for order in itertools.permutations([*steps, applied(3, 15, "clean", CLEAN_CFG)]):
        assert run(list(order)).lifecycle == "free", order


def test_a_vf_that_cannot_be_restored_stays_quarantined_until_reset() -> None:
    v = view()
    dev = run([reserved(10), released(20), applied(2, 21, "quarantined", READY_CFG)], v)
    assert dev.lifecycle == "quarantined" and v.host.vf_free == 1
    assert run([applied(3, 21, "repaired")], v).lifecycle == "quarantined"
    # the operator's reset is a new clean revision; hostd's restore reads back clean
    assert run([applied(4, 40, "clean", CLEAN_CFG)], v).lifecycle == "free"
    # a late duplicate of the quarantine changes nothing
    assert run([applied(2, 21, "quarantined", READY_CFG)], v).lifecycle == "free"


def test_repaired_drift_updates_what_was_read_back_only() -> None:
    v = view()
    run([reserved(10), applied(2, 11, "ready", READY_CFG)], v)
    drifted = m.VfConfig(mac="fa:16:3e:00:00:01", vlan=100, max_tx_rate=1000, trust=True)
    dev = run([applied(3, 11, "repaired", drifted)], v)
    assert dev.lifecycle == "ready" and dev.actual == drifted
    # an older read-back (a reordered event) never overwrites a newer one
    dev = run([applied(2, 11, "ready", READY_CFG)], v)
    assert dev.actual == drifted


def test_a_clean_outcome_for_a_removed_vf_counts_once_it_is_back() -> None:
    """A VF count change removes a released VF; hostd restores it once recreated and its
    ``clean`` may be stamped before the discovery that brings it back (soak seed 15: it was
    dropped on the tombstone, and the VF stayed 'cleaning' for ever)."""
    gone = m.VfRemoved(host_id=H, generation=1, seq=2, pci_address=VF.pci_address,
                       pf_pci_address=VF.pf_pci_address, ts=NOW)  # fmt: skip
    back = m.VfDiscovered(host_id=H, generation=1, seq=4, vf=VF, ts=NOW)
    presence: list[Step] = [lambda v: v.apply(gone, NOW), lambda v: v.apply(back, NOW)]
    for at in range(3):  # the outcome before, between or after them
        v = view()
        order = [*presence[:at], applied(3, 21, "clean", CLEAN_CFG), *presence[at:]]
        dev = run([reserved(10), released(20), *order], v)
        assert (dev.lifecycle, v.devices[VF.pci_address].removed) == ("free", False), at


def test_an_outcome_brings_the_netdev_and_its_mac_with_it() -> None:
    """Inventory shows the VF's netdev and MAC from the outcome, before the next discovery: a
    VF moved to vfio-pci kept its old netdev's MAC until then (a test caught the window)."""
    v = HostView(HostRow(H), {}, {})
    vfs = [msgspec.structs.replace(VF, mac="02:00:00:00:00:01"), *VFS[1:]]
    snap = m.HostSnapshot(host_id=H, generation=1, seq=1, pfs=t.with_lifecycle(PFS), vfs=vfs,
                          ts=NOW)  # fmt: skip
    assert v.apply(snap, NOW) == "applied"
    assert rec(v).device.mac == "02:00:00:00:00:01"
    vfio = msgspec.structs.replace(READY_CFG, driver="vfio-pci")
    run([reserved(2), applied(3, 1, "ready", vfio, ifname=None, mac=None)], v)
    assert (rec(v).device.ifname, rec(v).device.mac) == (None, None)
    clean = applied(4, 2, "clean", CLEAN_CFG, ifname=VF.ifname, mac="02:00:00:00:00:09")
    assert (run([released(5), clean], v).ifname, rec(v).device.mac) == (
        VF.ifname, "02:00:00:00:00:09"
    )  # fmt: skip
    # an older hostd's outcome names the netdev but not its MAC: the known one stays
    assert run([applied(6, 2, "repaired", CLEAN_CFG, ifname=VF.ifname)], v).mac == (
        "02:00:00:00:00:09"
    )
