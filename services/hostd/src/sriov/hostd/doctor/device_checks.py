"""Per-device checks: PF driver, SR-IOV capability in config space (what ``lspci -v``
shows), totalvfs/numvfs (mlx5 firmware, igb.max_vfs), VF drivers and IOMMU groups,
InfiniBand's iproute2 problem, and OVS offload on ConnectX-6 and older."""

from __future__ import annotations

import os

from sriov.common import schemas as m
from sriov.common.errors import SysfsError
from sriov.hostd import configspace
from sriov.hostd.discovery import CONVENTIONAL_PCI
from sriov.hostd.doctor._core import GRUB, DoctorInputs, Out

MLX_OFFLOAD_MAX = 0x101F  # ConnectX-6 Lx: the newest of "CX6 and below"
MLX_FIRST = 0x1013  # ConnectX-4
_IB_IP_ERROR = "Buffer too small for object"


def _is_mlx(pf: m.PF) -> bool:
    return pf.vendor_id == "15b3"


def _totalvfs_fix(pf: m.PF, want: int | None) -> str:
    n = want or 8
    if _is_mlx(pf):
        return (
            f"mst start; mlxconfig -d <dev from `mst status -v`> set SRIOV_EN=1 "
            f"NUM_OF_VFS={n}; reboot"
        )
    if pf.driver == "igb":
        return f"add igb.max_vfs={n} to {GRUB}"
    return "enable SR-IOV for the device in the BIOS"


def _no_sriov_fix(pf: m.PF) -> str:
    lists = " and ".join(
        k for k, on in (("sriov_nics", pf.sriov), ("ovs_offload_nics", pf.offload)) if on
    )
    fix = f"take {pf.ifname or pf.pci_address} out of {lists} in host.conf"
    if _is_mlx(pf):  # ConnectX cards have SR-IOV, off in firmware until SRIOV_EN=1
        fix += "; or, to use its VFs, mlxconfig -d <dev> set SRIOV_EN=1 NUM_OF_VFS=8 and reboot"
    return fix


def pf(inp: DoctorInputs, out: Out, pf: m.PF) -> None:
    name = f"{pf.ifname} ({pf.pci_address}, {pf.model})"
    dev = inp.sysfs.pci_device(pf.pci_address)
    if pf.driver is None:
        fix = (
            "install MLNX_OFED (./mlnxofedinstall --add-kernel-support; dracut -f; "
            "/etc/init.d/openibd restart)"
            if _is_mlx(pf)
            else "load the NIC's driver"
        )
        out.add(
            "pf.driver",
            "error",
            f"{name} has no driver bound",
            device=pf.pci_address,
            evidence=f"{dev}/driver is missing",
            fix=fix,
        )
    # SR-IOV capability, as lspci -v shows it
    try:
        raw = inp.sysfs.read_bytes(os.path.join(dev, "config"))
        space = configspace.parse(raw)
    except (SysfsError, configspace.ConfigSpaceError) as exc:
        out.add(
            "sriov.capability",
            "warning",
            f"cannot read the config space of {name}",
            device=pf.pci_address,
            evidence=str(exc),
            fix="run as root; `lspci -v -s <addr>` should list SR-IOV",
        )
        space = None
    if space is not None:
        evidence = "\n".join(space.lspci())
        if len(raw) == CONVENTIONAL_PCI:  # no extended config space: SR-IOV cannot be there
            out.add(
                "sriov.capability",
                "error",
                f"{name} is a conventional PCI function (256-byte config space, no extended "
                "capabilities): it has no SR-IOV capability and cannot have VFs",
                device=pf.pci_address,
                evidence=evidence,
                fix=_no_sriov_fix(pf),
            )
            return
        if not space.extended_readable:
            out.add(
                "sriov.capability",
                "warning",
                f"only the config header of {name} is readable",
                device=pf.pci_address,
                evidence=evidence,
                fix="run hostd as root to see extended capabilities",
            )
        elif space.sriov is None:  # one finding: the sriov_* files are missing for this reason
            out.add(
                "sriov.capability",
                "error",
                f"{name} has no SR-IOV capability: it cannot have VFs",
                device=pf.pci_address,
                evidence=evidence,
                fix=_no_sriov_fix(pf),
            )
            return
        else:
            line = next(
                c.lspci()
                for c in space.capabilities
                if c.cap_id == configspace.EXT_SRIOV and c.extended
            )
            out.add(
                "sriov.capability",
                "ok",
                f"{name} supports SR-IOV",
                device=pf.pci_address,
                evidence=line,
            )
    want = inp.conf.desired_vfs(pf.ifname, pf.pci_address)
    total_path = os.path.join(dev, "sriov_totalvfs")
    if not os.path.exists(total_path):
        out.add(
            "sriov.totalvfs",
            "error",
            f"{name} exposes no sriov_totalvfs",
            device=pf.pci_address,
            evidence=f"{total_path} is missing",
            fix=_totalvfs_fix(pf, want),
        )
        return
    if pf.total_vfs == 0:
        out.add(
            "sriov.totalvfs",
            "error",
            f"{name} allows 0 VFs",
            device=pf.pci_address,
            evidence="sriov_totalvfs = 0",
            fix=_totalvfs_fix(pf, want),
        )
        return
    if want is not None and want > pf.total_vfs:
        out.add(
            "sriov.totalvfs",
            "error",
            f"host.conf wants {want} VFs on {pf.ifname} but it allows {pf.total_vfs}",
            device=pf.pci_address,
            evidence=f"sriov_totalvfs = {pf.total_vfs}",
            fix=_totalvfs_fix(pf, want),
        )
    else:
        out.add(
            "sriov.totalvfs",
            "ok",
            f"{name} allows {pf.total_vfs} VFs",
            device=pf.pci_address,
            evidence=f"sriov_totalvfs = {pf.total_vfs}",
        )
    mgmt = inp.found.management.get(pf.pci_address)
    if mgmt:
        out.add(
            "pf.management",
            "info",
            f"{mgmt}: hostd never reconfigures it",
            device=pf.pci_address,
            evidence=mgmt,
        )
    evidence = f"sriov_numvfs = {pf.num_vfs}"
    unread = next(
        (e for e in inp.found.errors
         if e.pci_address == pf.pci_address and e.path.endswith("/sriov_numvfs")),
        None,
    )  # fmt: skip
    if unread is not None:  # unknown, not 0: no "no VFs enabled" on a count never read
        out.add(
            "sriov.numvfs",
            "warning",
            f"{name}: the VF count is unknown (sriov_numvfs could not be read)",
            device=pf.pci_address,
            evidence=unread.message,
            fix="check the PF's driver (dmesg); `sriovctl host-rescan` once it is fixed",
        )
    elif pf.num_vfs == 0:
        fix = (
            f"set num_vfs: {{{pf.ifname}: N}} in host.conf, or `sriovctl host-set-numvfs "
            f"--pf {pf.ifname} --num N`"
        )
        if pf.driver == "igb":
            fix += f", or add igb.max_vfs={pf.total_vfs} to {GRUB}"
        if pf.sriov:
            out.add(
                "sriov.numvfs",
                "warning",
                f"{name} has no VFs enabled",
                device=pf.pci_address,
                evidence=evidence,
                fix=fix,
            )
    elif want is not None and want != pf.num_vfs:
        out.add(
            "sriov.numvfs",
            "warning",
            f"{name} has {pf.num_vfs} VFs, host.conf wants {want}",
            device=pf.pci_address,
            evidence=evidence,
            fix="see hostd's log for why the count could not be set",
        )
    else:
        out.add(
            "sriov.numvfs",
            "ok",
            f"{name} has {pf.num_vfs} VFs",
            device=pf.pci_address,
            evidence=evidence,
        )
    if pf.link_state == "down":
        out.add(
            "pf.link",
            "warning",
            f"{name} link is down: its VFs have no uplink",
            device=pf.pci_address,
            evidence="operstate down",
            fix="check the cable, switch port and transceiver",
        )


def vfs(inp: DoctorInputs, out: Out) -> None:
    iommu_on = bool(inp.sysfs.listdir(inp.sysfs.path("class", "iommu")))
    no_group = [vf.pci_address for vf in inp.found.vfs if vf.iommu_group is None]
    if no_group and iommu_on:
        out.add(
            "iommu.groups",
            "error",
            f"{len(no_group)} VFs have no IOMMU group",
            evidence=", ".join(no_group[:8]),
            fix="enable ACS and the IOMMU in the BIOS",
        )
    elif inp.found.vfs and iommu_on:
        out.add("iommu.groups", "ok", "every VF has an IOMMU group")
    unbound = [vf.pci_address for vf in inp.found.vfs if vf.driver is None]
    if unbound:
        out.add(
            "vf.driver",
            "warning",
            f"{len(unbound)} VFs have no driver bound",
            evidence=", ".join(unbound[:8]),
            fix="echo 1 > /sys/bus/pci/devices/<pf>/sriov_drivers_autoprobe, or bind "
            "them to vfio-pci",
        )

    for pci, evidence in sorted(inp.quarantined.items()):
        out.add(
            "vf.quarantined",
            "error",
            f"VF {pci} is quarantined: it could not be restored to a clean state, so it is "
            "never offered to a guest",
            device=pci,
            evidence=evidence,
            fix="check the PF driver's messages (dmesg), that no process still holds the VF "
            "(lsof /dev/vfio/<iommu group>) and its settings (ip link show <pf>); then "
            "sriovctl vf-reset <host> <pci> restores it once more and returns it to service",
        )


# --- InfiniBand -------------------------------------------------------------------------------
def infiniband(inp: DoctorInputs, out: Out) -> None:
    ib = [pf for pf in inp.found.pfs if pf.link_type == "infiniband"]
    if not ib:
        return
    for pf in ib:
        if any(n.ifname == pf.ifname for n in inp.conf.networks):
            out.add(
                "infiniband.hostconf",
                "warning",
                f"InfiniBand NIC {pf.ifname} is listed in networks",
                device=pf.pci_address,
                evidence=f"networks: {pf.ifname}/...",
                fix="list InfiniBand NICs only in sriov_nics; they take the first network's wire",
            )
    pf = ib[0]
    fix = (
        "replace ip with mlx-iproute2 from the OFED ISO (/mnt/DEBS/mlx-iproute2_*.deb or "
        "/mnt/RPMS/mlx-iproute2-*.rpm)"
    )
    result = inp.ip_probe(pf.ifname or "") if inp.ip_probe is not None else None
    if result is None:
        out.add(
            "infiniband.iproute2",
            "info",
            "InfiniBand with SR-IOV: the distribution's ip "
            "may fail with 'Error: Buffer too small for object'",
            device=pf.pci_address,
            evidence="ip could not be run",
            fix=fix,
        )
    elif _IB_IP_ERROR in result[1]:
        out.add(
            "infiniband.iproute2",
            "error",
            "ip cannot list InfiniBand links with VFs",
            device=pf.pci_address,
            evidence=result[1].strip(),
            fix=fix,
        )
    elif result[0] != 0:
        out.add(
            "infiniband.iproute2",
            "info",
            f"ip link show {pf.ifname} failed for another reason; cannot tell whether ip "
            "handles InfiniBand with VFs",
            device=pf.pci_address,
            evidence=result[1].strip() or f"exit {result[0]}",
            fix=fix,
        )
    else:
        out.add(
            "infiniband.iproute2",
            "ok",
            f"ip lists {pf.ifname} with its VFs",
            device=pf.pci_address,
            evidence=f"ip link show {pf.ifname}: exit {result[0]}",
        )


# --- OVS offload ------------------------------------------------------------------------------
def offload(inp: DoctorInputs, out: Out) -> None:
    for pf in inp.found.pfs:
        if not pf.offload:
            continue
        if not _is_mlx(pf):
            out.add(
                "offload.model",
                "warning",
                f"{pf.ifname} ({pf.model}) is in "
                "ovs_offload_nics but OVS offload needs a Mellanox ConnectX-6 series NIC",
                device=pf.pci_address,
                evidence=f"{pf.vendor_id}:{pf.device_id}",
                fix="remove it from ovs_offload_nics",
            )
            continue
        old = MLX_FIRST <= int(pf.device_id, 16) <= MLX_OFFLOAD_MAX
        if old and not inp.conf.disable_security_group:
            out.add(
                "offload.security_groups",
                "error",
                f"{pf.ifname} ({pf.model}) offloads "
                "OVS but ConnectX-6 and older handle connection tracking poorly",
                device=pf.pci_address,
                evidence="disable_security_group: false",
                fix="set disable_security_group: true (kubectl -n onecloud edit cm "
                "default-host) and in host.conf",
            )
        else:
            out.add(
                "offload.security_groups",
                "ok",
                f"{pf.ifname} security-group setting suits offload",
                device=pf.pci_address,
                evidence=f"disable_security_group: {str(inp.conf.disable_security_group).lower()}",
            )
