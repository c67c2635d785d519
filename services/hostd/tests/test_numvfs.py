"""Setting VF counts: 0 then N, bounded by totalvfs, never on a management PF."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from sriov.common.errors import DeviceBusy, InvalidRequest, NotFound, SysfsError
from sriov.hostd.discovery import discover
from sriov.hostd.numvfs import _explain, set_numvfs
from sriov.hostd.pciids import PciIds
from sriov.hostd.simulator.spec import guide
from sriov.hostd.sysfs import Sysfs

from .conftest import make_host


@pytest.fixture(scope="module")
def ids() -> PciIds:
    return PciIds()


def test_change_goes_through_zero(tmp_path: Path, ids: PciIds) -> None:
    host = make_host(tmp_path, guide())
    sysfs = Sysfs(host.root)
    found = discover(host.conf, sysfs, ids)
    assert set_numvfs(sysfs, found, "eth1", 4) == (8, 4)
    after = discover(host.conf, sysfs, ids)
    assert after.errors == []
    assert [v.pci_address for v in after.vfs if v.pf_pci_address == "0000:0a:00.0"] == [
        "0000:0a:00.2",
        "0000:0a:00.3",
        "0000:0a:00.4",
        "0000:0a:00.5",
    ]
    assert set_numvfs(sysfs, after, "0000:03:00.0", 0) == (7, 0)
    assert set_numvfs(sysfs, after, "eth1", 4) == (4, 4)  # no-op


def test_refusals_are_clear(tmp_path: Path, ids: PciIds) -> None:
    host = make_host(tmp_path, guide())
    sysfs = Sysfs(host.root)
    found = discover(host.conf, sysfs, ids)
    with pytest.raises(InvalidRequest, match=r"eth2 \(0000:03:00.0\): 8 VFs is not within 0..7"):
        set_numvfs(sysfs, found, "eth2", 8)
    with pytest.raises(NotFound, match=r"eth3 is not a configured PF .*eth1 \(0000:0a:00.0\)"):
        set_numvfs(sysfs, found, "eth3", 1)
    found.management["0000:0a:00.0"] = "eth1 carries the default route"
    with pytest.raises(
        DeviceBusy, match=r"eth1 .* is never reconfigured: eth1 carries the default"
    ):
        set_numvfs(sysfs, found, "eth1", 2)
    pf = host.root / "bus/pci/devices/0000:03:00.0"
    (pf / "sriov_totalvfs").write_text("0\n")
    with pytest.raises(InvalidRequest, match=r"not within 0..0 \(sriov_totalvfs is 0: for mlx5"):
        set_numvfs(sysfs, found, "eth2", 1)
    (pf / "sriov_totalvfs").unlink()
    with pytest.raises(InvalidRequest, match="does not support SR-IOV"):
        set_numvfs(sysfs, found, "eth2", 1)


def test_kernel_write_error_is_explained(tmp_path: Path, ids: PciIds) -> None:
    host = make_host(tmp_path, guide())
    sysfs = Sysfs(host.root)
    found = discover(host.conf, sysfs, ids)
    numvfs = host.root / "bus/pci/devices/0000:0a:00.0/sriov_numvfs"
    numvfs.unlink()
    numvfs.mkdir()  # writing fails as a real kernel write can
    with pytest.raises(SysfsError, match=r"cannot read .*sriov_numvfs: Is a directory"):
        set_numvfs(sysfs, found, "eth1", 2)


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (errno.ENOMEM, "add pci=realloc"),
        (errno.EBUSY, "VFs are in use"),
        (errno.EACCES, "must run as root"),
    ],
)
def test_kernel_errnos_get_the_guides_fix(code: int, hint: str) -> None:
    err = SysfsError("writing '8' to /sys/x/sriov_numvfs failed: boom", path="/x", errno=code)
    text = str(_explain("eth1 (0000:0a:00.0)", 8, err))
    assert text.startswith("setting eth1 (0000:0a:00.0) to 8 VFs failed: writing '8'")
    assert hint in text
