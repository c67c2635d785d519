"""What each PF driver can apply to its VFs, keyed by the PF's driver name.

From the drivers' ``net_device_ops`` (``ndo_set_vf_*``) and the checks inside them in
mainline Linux (6.x):

* ``mlx5_core`` (``mellanox/mlx5/core/en_main.c``): MAC, VLAN/QoS, spoof check, trust, link
  state, min and max rate (``mlx5e_set_vf_rate``). ``mlx5e_set_vf_vlan`` returns
  ``-EPROTONOSUPPORT`` for anything but 802.1Q (a patch to allow 802.1ad was refused
  upstream in Dec 2022, "no new uses of the legacy VF NDOs").
* ``i40e`` (``intel/i40e/i40e_virtchnl_pf.c``): MAC, VLAN/QoS 802.1Q only
  (``-EPROTONOSUPPORT``), spoof check, trust, link state, max rate; ``i40e_ndo_set_vf_bw``
  refuses a min rate (``-EINVAL``).
* ``ice`` (``intel/ice/ice_sriov.c``): MAC, VLAN/QoS with 802.1Q and 802.1ad (802.1ad only
  when the device runs in double VLAN mode, ``ice_is_supported_port_vlan_proto``), spoof
  check, trust, link state, min and max rate (``ice_set_vf_bw``).
* ``igb`` (``intel/igb/igb_main.c``): MAC, VLAN/QoS 802.1Q only, spoof check, trust, max rate
  (``igb_ndo_set_vf_bw`` refuses a min rate); no ``ndo_set_vf_link_state``.

A driver not listed is assumed to apply nothing beyond the baseline, so the scheduler never
promises a setting hostd cannot deliver.
"""

from __future__ import annotations

from sriov.common.schemas import PfCapabilities

_ALL = {"mac": True, "vlan": True, "spoof_check": True, "trust": True, "max_tx_rate": True}

DRIVER_CAPABILITIES: dict[str, PfCapabilities] = {
    "mlx5_core": PfCapabilities(
        driver="mlx5_core", vf_driver="mlx5_core", link_state=True, min_tx_rate=True, **_ALL
    ),
    "i40e": PfCapabilities(driver="i40e", vf_driver="iavf", link_state=True, **_ALL),
    "ice": PfCapabilities(
        driver="ice",
        vf_driver="iavf",
        vlan_8021ad=True,
        link_state=True,
        min_tx_rate=True,
        **_ALL,
    ),
    "igb": PfCapabilities(driver="igb", vf_driver="igbvf", **_ALL),
}


def capabilities_for(pf_driver: str | None) -> PfCapabilities:
    """The capabilities of a PF bound to ``pf_driver`` (none known: nothing beyond baseline)."""
    found = DRIVER_CAPABILITIES.get(pf_driver or "")
    return found if found is not None else PfCapabilities(driver=pf_driver or "")
