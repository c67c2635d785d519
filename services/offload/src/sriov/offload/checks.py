"""The guide's OVS-offload prerequisites, checked NIC by NIC, each with evidence and a fix.

For every ``ovs_offload_nics`` entry (a bond stands for its PFs): the bond mode is one
Mellanox offload supports (active-backup, XOR, LACP); the PF is a PCI function bound to
its driver; the eswitch is in ``switchdev`` mode (devlink); ``hw-tc-offload`` is on; VF
representors exist; and, for ConnectX-6 and older, ``disable_security_group`` is true
(their connection-tracking offload is poor, the guide says).
"""

from __future__ import annotations

from collections.abc import Callable

from sriov.common.schemas import Finding
from sriov.offload.nics import SUPPORTED_BOND_MODES, NicSysfs, PfInfo
from sriov.offload.probes import ProbeError, Probes

MELLANOX = "15b3"

#: Mellanox device id -> (model, ConnectX generation). VFs are not listed: PFs only.
CONNECTX: dict[str, tuple[str, int]] = {
    "1013": ("ConnectX-4", 4),
    "1015": ("ConnectX-4 Lx", 4),
    "1017": ("ConnectX-5", 5),
    "1019": ("ConnectX-5 Ex", 5),
    "101b": ("ConnectX-6", 6),
    "101d": ("ConnectX-6 Dx", 6),
    "101f": ("ConnectX-6 Lx", 6),
    "a2d6": ("BlueField-2 (ConnectX-6 Dx)", 6),
    "1021": ("ConnectX-7", 7),
    "a2dc": ("BlueField-3 (ConnectX-7)", 7),
    "1023": ("ConnectX-8", 8),
}

SECURITY_GROUP_FIX = (
    "set 'disable_security_group: true' for this host (the guide: kubectl -n onecloud edit "
    "cm default-host), then restart host-agent"
)

ModelName = Callable[[str, str], str | None]


def _finding(
    check: str, severity: str, message: str, device: str, evidence: str = "", fix: str = ""
) -> Finding:
    return Finding(
        check=check,
        severity=severity,  # type: ignore[arg-type]
        message=message,
        device=device,
        evidence=evidence,
        fix=fix,
    )


async def check_nics(
    names: list[str],
    *,
    sysfs: NicSysfs,
    probes: Probes,
    disable_security_group: bool,
    model_name: ModelName | None = None,
) -> list[Finding]:
    """Findings for every configured offload NIC (bonds expanded to their PFs)."""
    findings: list[Finding] = []
    pfs: list[tuple[str, str | None]] = []
    for name in names:
        if not sysfs.exists(name):
            findings.append(
                _finding(
                    "nic.present", "error", f"{name} (ovs_offload_nics) does not exist", name,
                    f"{sysfs.net(name)} is missing",
                    "fix the name in host.conf's ovs_offload_nics or load the NIC's driver",
                )
            )  # fmt: skip
            continue
        bond = sysfs.bond(name)
        if bond is None:
            pfs.append((name, None))
            continue
        findings.append(_bond_finding(bond.name, bond.mode, bond.mode_number, bond.evidence))
        if not bond.members:
            findings.append(
                _finding(
                    "bond.members", "error", f"bond {name} has no member PFs", name,
                    bond.evidence, f"enslave the offload PFs to {name}",
                )
            )  # fmt: skip
        pfs.extend((member, name) for member in bond.members)
    for ifname, bond_name in pfs:
        info = sysfs.pf(ifname, bond_name)
        findings.extend(
            await _check_pf(info, probes, disable_security_group, model_name or _no_model)
        )
    return findings


def _no_model(_vendor: str, _device: str) -> str | None:
    return None


def _bond_finding(name: str, mode: str, number: int | None, evidence: str) -> Finding:
    label = SUPPORTED_BOND_MODES.get(mode)
    if label:
        return _finding(
            "bond.mode", "ok", f"bond {name} runs {label}, which offload supports", name, evidence
        )
    return _finding(
        "bond.mode", "error",
        f"bond {name} runs {mode or 'an unknown mode'}"
        + (f" (mode {number})" if number is not None else "")
        + ": Mellanox offload bonding supports only Active-Backup (1), XOR (2) and LACP (4)",
        name, evidence,
        f"reconfigure {name} with mode active-backup, balance-xor or 802.3ad",
    )  # fmt: skip


async def _check_pf(
    pf: PfInfo, probes: Probes, disable_sg: bool, model_name: ModelName
) -> list[Finding]:
    dev = pf.ifname
    where = f" (bond {pf.bond})" if pf.bond else ""
    evidence = "; ".join(pf.evidence)
    if pf.pci_address is None:
        return [
            _finding(
                "nic.device", "error", f"{dev}{where} is not a PCI function: it cannot offload",
                dev, evidence, "list the physical NIC (or its bond) in ovs_offload_nics",
            )
        ]  # fmt: skip
    out: list[Finding] = []
    cx = CONNECTX.get(pf.device_id) if pf.vendor_id == MELLANOX else None
    model = model_name(pf.vendor_id, pf.device_id) or (cx[0] if cx else "unknown model")
    ident = f"{model} [{pf.vendor_id}:{pf.device_id}] at {pf.pci_address}, driver {pf.driver}"
    if pf.vendor_id != MELLANOX:
        out.append(
            _finding(
                "nic.model", "warning",
                f"{dev}{where} is {ident}: the guide supports OVS offload on Mellanox "
                "ConnectX cards only", dev, evidence,
                "use a ConnectX-5/6 (or newer) port for ovs_offload_nics",
            )
        )  # fmt: skip
    elif pf.driver != "mlx5_core":
        out.append(
            _finding(
                "nic.driver", "error",
                f"{dev}{where} is {ident}: offload needs the mlx5_core driver", dev, evidence,
                "install MLNX_OFED (./mlnxofedinstall --add-kernel-support), then "
                "/etc/init.d/openibd restart",
            )
        )  # fmt: skip
    else:
        out.append(_finding("nic.model", "ok", f"{dev}{where} is {ident}", dev, evidence))
    out.append(await _eswitch(pf, probes))
    out.append(await _tc_offload(pf, probes))
    out.append(_representors(pf))
    if cx is not None:
        out.append(_security_group(pf, cx, disable_sg))
    return out


async def _eswitch(pf: PfInfo, probes: Probes) -> Finding:
    dev, pci = pf.ifname, pf.pci_address
    fix = (
        f"enable VFs, unbind them, then: devlink dev eswitch set pci/{pci} mode switchdev "
        "(and rebind the VFs)"
    )
    try:
        mode = await probes.eswitch_mode(pci or "")
    except ProbeError as exc:
        return _finding(
            "nic.eswitch_mode", "error", f"cannot read the eswitch mode of pci/{pci} ({dev})",
            dev, str(exc), "load the NIC driver with devlink support (mlx5_core from MLNX_OFED)",
        )  # fmt: skip
    evidence = f"devlink dev eswitch show pci/{pci}: mode {mode}"
    if mode.startswith("switchdev"):
        return _finding("nic.eswitch_mode", "ok", f"{dev} eswitch is in {mode} mode", dev, evidence)
    return _finding(
        "nic.eswitch_mode", "error",
        f"{dev} eswitch is in {mode} mode: flows cannot be offloaded", dev, evidence, fix,
    )  # fmt: skip


async def _tc_offload(pf: PfInfo, probes: Probes) -> Finding:
    dev = pf.ifname
    fix = f"ethtool -K {dev} hw-tc-offload on"
    try:
        features = await probes.features(dev)
    except ProbeError as exc:
        return _finding(
            "nic.hw_tc_offload", "error", f"cannot read {dev}'s ethtool features", dev,
            str(exc), fix,
        )  # fmt: skip
    state = features.get("hw-tc-offload")
    evidence = f"ethtool -k {dev}: hw-tc-offload: {_onoff(state)}"
    if state:
        return _finding("nic.hw_tc_offload", "ok", f"{dev} has hw-tc-offload on", dev, evidence)
    what = "off" if state is False else "not offered by the driver"
    return _finding(
        "nic.hw_tc_offload", "error", f"{dev} has hw-tc-offload {what}: tc cannot program it",
        dev, evidence, fix,
    )  # fmt: skip


def _onoff(state: bool | None) -> str:
    return "on" if state else ("off" if state is False else "absent")


def _representors(pf: PfInfo) -> Finding:
    dev = pf.ifname
    reps = ", ".join(f"{r.ifname}({r.port_name})" for r in pf.representors) or "none"
    evidence = f"sriov_numvfs={pf.num_vfs}; phys_switch_id={pf.switch_id}; representors: {reps}"
    if not pf.num_vfs:
        return _finding(
            "nic.representors", "warning", f"{dev} has no VFs enabled, so no representors",
            dev, evidence,
            f"echo N > /sys/class/net/{dev}/device/sriov_numvfs (or mlxconfig NUM_OF_VFS)",
        )  # fmt: skip
    if len(pf.representors) >= pf.num_vfs:
        return _finding(
            "nic.representors", "ok",
            f"{dev} has {len(pf.representors)} VF representors for {pf.num_vfs} VFs",
            dev, evidence,
        )  # fmt: skip
    return _finding(
        "nic.representors", "error",
        f"{dev} has {pf.num_vfs} VFs but {len(pf.representors)} representors: the eswitch "
        "is not in switchdev mode or the representors were renamed away",
        dev, evidence,
        f"devlink dev eswitch set pci/{pf.pci_address} mode switchdev; add the representors "
        "(not the VFs) to the OVS bridge",
    )  # fmt: skip


def _security_group(pf: PfInfo, cx: tuple[str, int], disable_sg: bool) -> Finding:
    dev = pf.ifname
    model, gen = cx
    evidence = f"{model} (generation {gen}); host.conf disable_security_group={disable_sg}"
    if gen > 6:
        return _finding(
            "nic.security_group", "ok",
            f"{dev} is a {model}: security groups may stay on", dev, evidence,
        )  # fmt: skip
    if disable_sg:
        return _finding(
            "nic.security_group", "ok",
            f"{dev} is a {model} and security groups are disabled, as the guide requires",
            dev, evidence,
        )  # fmt: skip
    return _finding(
        "nic.security_group", "error",
        f"{dev} is a {model}: ConnectX-6 and older offload connection tracking poorly, so the "
        "guide requires disable_security_group: true",
        dev, evidence, SECURITY_GROUP_FIX,
    )  # fmt: skip
