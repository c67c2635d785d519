"""Set a PF's VF count the way the kernel wants it: write 0, then N (bounded by totalvfs).

The kernel refuses to change a non-zero count directly (EBUSY), so changing 4 -> 8 goes
through 0. Errors say what to do: ENOMEM is the guide's "not enough MMIO resources"
(``pci=realloc``), EBUSY means VFs are in use, and a management PF is never touched.
On a simulated tree the simulated kernel then creates the VFs (see simulator.kernel).
"""

from __future__ import annotations

import errno
import logging
import os

from sriov.common.errors import DeviceBusy, InvalidRequest, NotFound, SysfsError
from sriov.hostd.discovery import Discovery
from sriov.hostd.simulator import tree as sim_tree
from sriov.hostd.sysfs import Sysfs

log = logging.getLogger(__name__)


def set_numvfs(sysfs: Sysfs, found: Discovery, pf_key: str, num: int) -> tuple[int, int]:
    """Set the VF count of a configured PF (ifname or PCI address); return (before, after).

    Blocking (sysfs writes, and on a simulated tree netlink set-up): run it in a thread.
    """
    pf = found.pf(pf_key)
    if pf is None:
        known = ", ".join(f"{p.ifname} ({p.pci_address})" for p in found.pfs) or "none"
        raise NotFound(
            f"{pf_key} is not a configured PF of this host (configured: {known})", field="pf"
        )
    name = f"{pf.ifname} ({pf.pci_address})"
    if pf.pci_address in found.management:
        raise DeviceBusy(
            f"{name} is never reconfigured: {found.management[pf.pci_address]}", field="pf"
        )
    dev = sysfs.pci_device(pf.pci_address)
    total_path = os.path.join(dev, "sriov_totalvfs")
    if not os.path.exists(total_path):
        raise InvalidRequest(
            f"{name} does not support SR-IOV ({total_path} is missing): enable SR-IOV in the "
            "BIOS and, for Mellanox, in firmware (mlxconfig set SRIOV_EN=1 NUM_OF_VFS=N)",
            field="pf",
        )
    total = sysfs.read_int(total_path)
    if num < 0 or num > total:
        hint = ""
        if total == 0:
            hint = (
                " (sriov_totalvfs is 0: for mlx5 set SRIOV_EN=1 NUM_OF_VFS=N with "
                "mlxconfig and reboot; for igb add igb.max_vfs=N to the kernel cmdline)"
            )
        raise InvalidRequest(f"{name}: {num} VFs is not within 0..{total}{hint}", field="num_vfs")
    path = os.path.join(dev, "sriov_numvfs")
    before = sysfs.read_int(path)
    if before == num:
        return before, num
    simulated = sim_tree.is_simulated(sysfs.root)
    for value in [0, num] if before and num else [num]:
        try:
            sysfs.write(path, str(value))
        except SysfsError as exc:
            raise _explain(name, value, exc) from None
        if simulated:
            from sriov.hostd.simulator.kernel import apply_numvfs

            apply_numvfs(sysfs.root, pf.pci_address, value)
    log.info("set %s VFs from %d to %d", name, before, num)
    return before, num


def _explain(name: str, value: int, exc: SysfsError) -> SysfsError:
    code = exc.details.get("errno")
    why = {
        errno.ENOMEM: "not enough MMIO resources for SR-IOV: add pci=realloc to the kernel "
        "cmdline (and enable SR-IOV / above-4G decoding in the BIOS)",
        errno.EBUSY: "VFs are in use (assigned to guests or still bound): release them first",
        errno.EINVAL: "the driver refused the count (firmware limit? check sriov_totalvfs)",
        errno.EPERM: "permission denied: hostd must run as root",
        errno.EACCES: "permission denied: hostd must run as root",
        errno.ENOENT: "the driver does not support SR-IOV",
        errno.EOPNOTSUPP: "the driver does not support SR-IOV",
    }.get(code if isinstance(code, int) else -1, "")
    text = f"setting {name} to {value} VFs failed: {exc.message}"
    return SysfsError(f"{text}; {why}" if why else text, path=exc.details.get("path", ""))
