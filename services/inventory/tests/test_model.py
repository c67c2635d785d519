"""The ordering, removal and derivation rules of one host's slice, without a database."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from sriov.common import schemas as m
from sriov.common.errors import InvalidRequest
from sriov.inventory import testing as t
from sriov.inventory.model import HostRow, HostView

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
H = "h1"


def fresh() -> HostView:
    return HostView(HostRow(H), {}, {})


def reload(view: HostView) -> HostView:
    """What the next transaction would load after this one saved."""
    view.finalize(NOW)
    return HostView(view.host, dict(view.pfs), dict(view.devices))


def snap(seq: int, pfs: list[m.PF], vfs: list[m.VF], gen: int = 1) -> m.HostSnapshot:
    return m.HostSnapshot(host_id=H, generation=gen, seq=seq, pfs=pfs, vfs=vfs, ts=NOW)


def changed(seq: int, vf: m.VF, gen: int = 1) -> m.VfChanged:
    return m.VfChanged(host_id=H, generation=gen, seq=seq, vf=vf, ts=NOW)


def removed(seq: int, vf: m.VF, gen: int = 1) -> m.VfRemoved:
    return m.VfRemoved(host_id=H, generation=gen, seq=seq, pci_address=vf.pci_address, ts=NOW)


PFS, VFS = t.fleet_host(0, vfs=4)


def test_snapshot_creates_devices_with_pf_and_host_fields() -> None:
    v = fresh()
    assert v.apply(snap(1, PFS, VFS), NOW) == "applied"
    ch = v.finalize(NOW)
    assert len(ch.announce) == 4 and ch.announce_host
    dev = v.devices[VFS[0].pci_address].device
    assert dev.id == m.device_id(H, VFS[0].pci_address)
    assert (dev.link_state, dev.host_status, dev.wire) == ("up", "online", "wire0")
    assert dev.vendor_device_id == "15b3:1018" and dev.addr == VFS[0].pci_address[5:]
    assert (v.host.vf_count, v.host.vf_free, v.host.pf_count) == (4, 4, 2)


def test_same_or_older_snapshot_and_older_generation_are_stale() -> None:
    v = fresh()
    v.apply(snap(5, PFS, VFS, gen=2), NOW)
    assert v.apply(snap(5, PFS, VFS[:1], gen=2), NOW) == "stale"
    assert v.apply(snap(9, PFS, VFS[:1], gen=1), NOW) == "stale"
    assert v.apply(changed(4, VFS[0], gen=2), NOW) == "stale"  # older than the snapshot
    assert len(v.devices) == 4


def test_unchanged_snapshot_announces_nothing() -> None:
    v = fresh()
    v.apply(snap(1, PFS, VFS), NOW)
    v = reload(v)
    assert v.apply(snap(2, PFS, VFS), NOW) == "applied"
    ch = v.finalize(NOW)
    assert ch.announce == [] and ch.devices == [] and not ch.announce_host


def test_removal_then_late_older_change_keeps_the_vf_removed() -> None:
    v = fresh()
    v.apply(snap(1, PFS, VFS), NOW)
    v = reload(v)
    vf = VFS[1]
    assert v.apply(removed(3, vf), NOW) == "applied"
    assert v.apply(changed(2, msgspec.structs.replace(vf, mac="aa:bb"), gen=1), NOW) == "stale"
    ch = v.finalize(NOW)
    assert [r.removed for r in ch.announce] == [True]
    assert v.host.vf_count == 3


def test_changes_of_one_host_commute_per_device() -> None:
    """Two VF changes applied in either order give the same table (replicas race)."""
    a = changed(3, msgspec.structs.replace(VFS[0], driver="vfio-pci", ifname=None))
    b = changed(4, msgspec.structs.replace(VFS[1], mac="02:00:00:00:00:01"))
    results = []
    for order in ((a, b), (b, a)):
        v = fresh()
        v.apply(snap(1, PFS, VFS), NOW)
        for ev in order:
            assert v.apply(ev, NOW) == "applied"
        v.finalize(NOW)
        results.append({k: r.key() for k, r in v.devices.items()})
    assert results[0] == results[1]


def test_reserved_vf_that_disappears_is_flagged_then_removed_on_release() -> None:
    v = fresh()
    v.apply(snap(1, PFS, VFS), NOW)
    v = reload(v)
    rec = v.devices[VFS[2].pci_address]
    assert v.hold(rec, "guest-1", seq=10) == "applied"
    v = reload(v)
    v.apply(snap(2, PFS, [vf for vf in VFS if vf is not VFS[2]]), NOW)
    ch = v.finalize(NOW)
    rec = v.devices[VFS[2].pci_address]
    assert (rec.removed, rec.device.present, rec.device.guest_id) == (False, False, "guest-1")
    assert [r.device.pci_address for r in ch.announce] == [VFS[2].pci_address]
    assert v.host.vf_count == 4 and v.host.vf_free == 3
    v = reload(v)
    assert v.release(rec, seq=10) == "stale"  # same seq again
    assert v.release(rec, seq=12) == "applied"
    v.finalize(NOW)
    assert rec.removed and rec.device.guest_id is None


def test_a_held_vf_gone_and_back_in_one_batch_comes_back_as_another() -> None:
    """A VF count change: hostd reports the VF removed, then discovers it again at the same
    address. Saved together, only "present" is announced; the new incarnation tells the
    scheduler that the guest's VF is gone all the same."""
    v = fresh()
    v.apply(snap(1, PFS, VFS), NOW)
    v = reload(v)
    v.hold(v.devices[VFS[2].pci_address], "guest-1", seq=10)
    v = reload(v)
    assert v.apply(removed(2, VFS[2]), NOW) == "applied"
    assert v.apply(changed(3, VFS[2]), NOW) == "applied"
    ch = v.finalize(NOW)
    [rec] = ch.announce
    assert (rec.device.present, rec.device.guest_id, rec.device.incarnation) == (
        True, "guest-1", 1
    )  # fmt: skip
    # gone for good (a tombstone), then back before the next snapshot: another again
    v = reload(v)
    v.release(rec, seq=12)
    v.apply(removed(4, VFS[2]), NOW)
    v.apply(changed(5, VFS[2]), NOW)
    v.finalize(NOW)
    assert (rec.removed, rec.device.incarnation) == (False, 2)


def test_placement_events_apply_in_seq_order() -> None:
    v = fresh()
    v.apply(snap(1, PFS, VFS), NOW)
    rec = v.devices[VFS[0].pci_address]
    # Released (seq 7) handled before the Reserved (seq 5) it follows: stays free.
    assert v.release(rec, seq=7) == "applied"  # nobody held it; seq 7 is now the latest
    assert v.hold(rec, "g", seq=5) == "stale"
    assert rec.device.guest_id is None
    assert v.hold(rec, "g2", seq=8) == "applied"
    assert rec.device.guest_id == "g2"


def test_tombstones_go_with_the_next_snapshot_and_are_announced_once() -> None:
    v = fresh()
    v.apply(snap(1, PFS, VFS), NOW)
    v = reload(v)
    v.apply(removed(2, VFS[3]), NOW)
    v = reload(v)
    v.apply(snap(3, PFS, VFS[:3]), NOW)
    ch = v.finalize(NOW)
    assert ch.purge == [m.device_id(H, VFS[3].pci_address)]
    assert ch.announce == []  # its removal was announced when it happened


def test_removed_and_purged_in_one_batch_is_still_announced() -> None:
    v = fresh()
    v.apply(snap(1, PFS, VFS), NOW)
    v = reload(v)
    v.apply(removed(2, VFS[3]), NOW)
    v.apply(snap(3, PFS, VFS[:3]), NOW)
    ch = v.finalize(NOW)
    assert ch.purge == [m.device_id(H, VFS[3].pci_address)]
    assert [(r.device.pci_address, r.removed) for r in ch.announce] == [(VFS[3].pci_address, True)]


def test_pf_link_down_reaches_its_vfs_only() -> None:
    v = fresh()
    v.apply(snap(1, PFS, VFS), NOW)
    v = reload(v)
    ev = m.LinkChanged(
        host_id=H, generation=1, seq=2, ifname="ens1f0", state="down", role="pf", ts=NOW
    )
    assert v.apply(ev, NOW) == "applied"
    ch = v.finalize(NOW)
    down = {r.device.pci_address for r in ch.announce if r.device.link_state == "down"}
    assert down == {vf.pci_address for vf in VFS if vf.pf_pci_address == PFS[0].pci_address}
    assert len(ch.announce) == len(down)


def test_offline_host_makes_devices_unavailable_until_a_new_snapshot() -> None:
    v = fresh()
    v.apply(snap(1, PFS, VFS), NOW)
    v = reload(v)
    v.mark_offline()
    ch = v.finalize(NOW)
    assert {r.device.host_status for r in ch.announce} == {"offline"} and len(ch.announce) == 4
    v = reload(v)
    hb = m.Heartbeat(host_id=H, generation=1, seq=5, interval_s=1, ts=NOW)
    assert v.apply(hb, NOW) == "applied"
    assert v.rescan and v.host.status == "offline"
    assert v.apply(snap(6, PFS, VFS), NOW) == "applied"
    ch = v.finalize(NOW)
    assert v.host.status == "online" and not v.rescan
    assert {r.device.host_status for r in ch.announce} == {"online"}


def test_last_seen_never_runs_ahead_of_now() -> None:
    v = fresh()
    future = NOW + dt.timedelta(hours=1)
    v.apply(m.Heartbeat(host_id=H, generation=1, seq=1, interval_s=1, ts=future), NOW)
    assert v.host.last_seen == NOW


def test_bad_snapshots_are_refused_naming_the_problem() -> None:
    v = fresh()
    with pytest.raises(InvalidRequest, match=r"lists 0000:3b:00\.2 twice in vfs"):
        v.apply(snap(1, PFS, [VFS[0], VFS[0]]), NOW)
    bad = msgspec.structs.replace(VFS[0], pci_address="3b:00.2")
    with pytest.raises(InvalidRequest, match="not of the form"):
        v.apply(snap(1, PFS, [bad]), NOW)
    assert v.devices == {} and v.host.snap_seq == -1


def test_a_release_ahead_of_the_events_before_it_frees_the_vf() -> None:
    """g1 holds the VF (seq 5); g1's release (6) and g2's reservation (7) are late, g2's
    release (8) comes first: the VF is free, and the late events stay stale. (A release that
    only cleared its own guest left g1 on the VF for good: what tests/faults once caught.)"""
    v = fresh()
    v.apply(snap(1, PFS, VFS), NOW)
    rec = v.devices[VFS[0].pci_address]
    assert v.hold(rec, "g1", seq=5) == "applied"
    assert v.release(rec, seq=8) == "applied"
    assert rec.device.guest_id is None
    assert v.release(rec, seq=6) == "stale"
    assert v.hold(rec, "g2", seq=7) == "stale"
    assert rec.device.guest_id is None and rec.guest_seq == 8
