"""The pure reconcile step: (desired, actual, capabilities) -> the ordered actions.

Orders follow the SR-IOV CNI, whose order is proven on mlx5, i40e/ice and igb: to apply,
the driver first (the VF's netdev appears or goes), then VLAN, MAC, rate, spoof check,
trust, link state, then the VF netdev's own MAC (``ApplyVFConfig``, ``SetupVF``); to
restore, VLAN, spoof check, MAC, trust, rate, link state (``ResetVFConfig``), and the
driver last, so a table reset never waits for a guest still holding the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

from sriov.common.schemas import VFIO_PCI, PfCapabilities, VfConfig
from sriov.hostd.vfconfig.errors import VfUnsupported
from sriov.hostd.vfconfig.netlink import GROUPS

APPLY_ORDER = ("vlan", "mac", "rate", "spoof_check", "trust", "link_state")
RESTORE_ORDER = ("vlan", "spoof_check", "mac", "trust", "rate", "link_state")


@dataclass(frozen=True)
class Action:
    """One step: ``bind`` a driver, ``set`` one VF-table group, or the ``netdev_mac``."""

    kind: Literal["bind", "set", "netdev_mac"]
    target: str
    """The driver to bind, the group to set (a key of ``GROUPS``) or the MAC."""

    def __str__(self) -> str:
        return f"{self.kind} {self.target}"


def resolve(desired: VfConfig, caps: PfCapabilities) -> VfConfig:
    """``desired`` with its default driver (``None``) made the PF's VF netdev driver."""
    if desired.driver is not None:
        return desired
    if caps.vf_driver is None:
        raise VfUnsupported(
            f"the VF driver of PF driver {caps.driver or 'unknown'} is not known",
            settings=["driver"],
        )
    return msgspec.structs.replace(desired, driver=caps.vf_driver)


def plan(
    desired: VfConfig,
    actual: VfConfig,
    caps: PfCapabilities,
    *,
    netdev_mac: str | None = None,
    restoring: bool = False,
) -> list[Action]:
    """What to do, in order, so that ``actual`` becomes ``desired`` (empty: nothing).

    ``netdev_mac`` is the VF netdev's current MAC (``None``: no netdev now). Raises
    :class:`VfUnsupported` naming every setting the PF's driver cannot apply.
    """
    missing = caps.missing(desired)
    if missing:
        raise VfUnsupported(
            f"PF driver {caps.driver or 'unknown'} cannot apply {', '.join(missing)}",
            settings=missing,
            field=missing[0],
        )
    want = resolve(desired, caps)
    order = RESTORE_ORDER if restoring else APPLY_ORDER
    sets = [
        Action("set", g)
        for g in order
        if any(getattr(want, f) != getattr(actual, f) for f in GROUPS[g])
    ]
    binds = [Action("bind", str(want.driver))] if want.driver != actual.driver else []
    netdev = []
    if want.driver != VFIO_PCI and want.mac is not None and (binds or netdev_mac != want.mac):
        netdev = [Action("netdev_mac", want.mac)]
    return [*sets, *binds] if restoring else [*binds, *sets, *netdev]
