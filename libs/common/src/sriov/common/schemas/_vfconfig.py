"""One VF's configuration (desired or read back) and what a PF's driver can apply.

The fields are what the kernel keeps per VF in the PF's ``IFLA_VFINFO_LIST`` (MAC, VLAN, QoS,
VLAN protocol, spoof check, trust, link state, min/max rate) plus the PCI driver the VF is
bound to. The limits are the kernel's (``rtnetlink.c``, ``if_link.h``): VLAN 0..4094, QoS
(802.1p priority) 0..7, rates in Mbit/s with 0 meaning "no limit". The same limits appear in
the generated JSON Schemas, so a client built from the docs never sends what hostd refuses.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from sriov.common.schemas._base import Model

VlanProto = Literal["802.1Q", "802.1ad"]
VfLinkState = Literal["auto", "enable", "disable"]

#: A unicast MAC that is not all zeros, lower-case, colon separated (the I/G bit of the first
#: octet is 0: a multicast MAC on a VF is refused by the kernel's ``is_valid_ether_addr``).
MAC_PATTERN = r"^(?!00:00:00:00:00:00$)[0-9a-f][02468ace](:[0-9a-f]{2}){5}$"
Mac = Annotated[str, msgspec.Meta(pattern=MAC_PATTERN)]
Vlan = Annotated[int, msgspec.Meta(ge=0, le=4094)]
Qos = Annotated[int, msgspec.Meta(ge=0, le=7)]
Rate = Annotated[int, msgspec.Meta(ge=0, le=4_294_967_295)]
"""Mbit/s (u32 in ``struct ifla_vf_rate``); 0 = no limit."""
#: The driver used for passthrough; the other choice is the VF's own netdev driver.
VFIO_PCI = "vfio-pci"
#: VfConfig field names a PF driver may be unable to apply (see PfCapabilities).
SETTINGS = (
    "mac",
    "vlan",
    "qos",
    "vlan_proto",
    "spoof_check",
    "trust",
    "link_state",
    "min_tx_rate",
    "max_tx_rate",
)


class VfConfig(Model, kw_only=True):
    """One VF's configuration: what the scheduler wants, or what hostd read back.

    A decoded value is valid on its own (ranges, MAC form, min rate not above max rate);
    whether a PF can apply it is :meth:`PfCapabilities.missing`.
    """

    mac: Mac | None = None
    """Administrative MAC in the PF's VF table; ``None`` = cleared (all zeros)."""
    vlan: Vlan = 0
    """VLAN id the VF's traffic is tagged with; 0 = untagged."""
    qos: Qos = 0
    """802.1p priority of that tag."""
    vlan_proto: VlanProto = "802.1Q"
    spoof_check: bool = True
    trust: bool = False
    link_state: VfLinkState = "auto"
    """``auto`` follows the PF's link; ``enable``/``disable`` force the VF's."""
    min_tx_rate: Rate = 0
    max_tx_rate: Rate = 0
    driver: str | None = VFIO_PCI
    """PCI driver: ``vfio-pci`` (passthrough) or the VF's netdev driver (``mlx5_core``,
    ``iavf``, ``igbvf``); ``None`` = the VF's default driver (what a clean VF is bound to)."""

    def __post_init__(self) -> None:
        if self.max_tx_rate and self.min_tx_rate > self.max_tx_rate:
            raise ValueError(
                f"min_tx_rate {self.min_tx_rate} is above max_tx_rate {self.max_tx_rate}"
            )

    def differences(self, other: VfConfig) -> list[str]:
        """Field names whose values differ (the order of :data:`SETTINGS`, then driver)."""
        return [f for f in (*SETTINGS, "driver") if getattr(self, f) != getattr(other, f)]


def clean_config(driver: str | None = None) -> VfConfig:
    """The baseline a released VF is restored to: MAC cleared, VLAN 0, spoof check on,
    trust off, link auto, no rate limits, its default driver (``driver`` once resolved)."""
    return VfConfig(driver=driver)


class PfCapabilities(Model, kw_only=True):
    """What a PF's driver can apply to its VFs (its ``ndo_set_vf_*`` operations).

    hostd publishes it on each PF; the scheduler only picks VFs whose PF can apply
    everything a request asks for.
    """

    driver: str = ""
    """The PF driver these capabilities are those of (``mlx5_core``, ``i40e``...)."""
    vf_driver: str | None = None
    """The VFs' own netdev driver (their default driver): ``mlx5_core``, ``iavf``, ``igbvf``."""
    mac: bool = False
    vlan: bool = False
    """VLAN id and QoS (``ndo_set_vf_vlan``)."""
    vlan_8021ad: bool = False
    """``vlan_proto`` 802.1ad (QinQ) is accepted, not only 802.1Q."""
    spoof_check: bool = False
    trust: bool = False
    link_state: bool = False
    min_tx_rate: bool = False
    max_tx_rate: bool = False

    def missing(self, cfg: VfConfig) -> list[str]:
        """The settings of ``cfg`` this PF cannot apply (empty when it can apply all).

        A setting at its baseline value needs no support (a PF without trust support can
        still run a VF with trust off).
        """
        base = clean_config()
        wants = {
            "mac": cfg.mac is not None and not self.mac,
            "vlan": cfg.vlan != base.vlan and not self.vlan,
            "qos": cfg.qos != base.qos and not self.vlan,
            "vlan_proto": cfg.vlan_proto != base.vlan_proto and not self.vlan_8021ad,
            "spoof_check": cfg.spoof_check != base.spoof_check and not self.spoof_check,
            "trust": cfg.trust != base.trust and not self.trust,
            "link_state": cfg.link_state != base.link_state and not self.link_state,
            "min_tx_rate": cfg.min_tx_rate != 0 and not self.min_tx_rate,
            "max_tx_rate": cfg.max_tx_rate != 0 and not self.max_tx_rate,
        }
        return [k for k, lacking in wants.items() if lacking]
