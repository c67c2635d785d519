"""The requests hostd sends for each VF setting, decoded with pyroute2's parser; the pure
reconcile step; the driver capability table."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from sriov.common.schemas import PfCapabilities, VfConfig, clean_config
from sriov.hostd.nsock import async_iproute
from sriov.hostd.simulator import netdevs
from sriov.hostd.simulator.tree import Netdev
from sriov.hostd.vfconfig import VfUnsupported, capabilities_for, plan
from sriov.hostd.vfconfig import netlink as nl
from sriov.hostd.vfconfig.reconcile import Action

FULL = VfConfig(
    mac="fa:16:3e:00:00:01", vlan=100, qos=3, vlan_proto="802.1ad", spoof_check=False,
    trust=True, link_state="disable", min_tx_rate=100, max_tx_rate=1000, driver="vfio-pci",
)  # fmt: skip


def decoded(group: str, vf: int = 3, cfg: VfConfig = FULL) -> tuple[int, str, Any]:
    """Encode the request for one group, decode it as the kernel would read it."""
    msg = nl.setlink(42, [nl.vf_attr(group, vf, cfg)])
    msg.encode()
    back = nl.parse_request(bytes(msg.data))
    (info,) = nl.vf_infos(back)
    ((name, attr),) = info["attrs"]
    return back["index"], name, attr


@pytest.mark.parametrize(
    ("group", "name", "fields"),
    [
        ("mac", "IFLA_VF_MAC", {"vf": 3, "mac": "fa:16:3e:00:00:01"}),
        ("rate", "IFLA_VF_RATE", {"vf": 3, "min_tx_rate": 100, "max_tx_rate": 1000}),
        ("spoof_check", "IFLA_VF_SPOOFCHK", {"vf": 3, "spoofchk": 0}),
        ("trust", "IFLA_VF_TRUST", {"vf": 3, "trust": 1}),
        ("link_state", "IFLA_VF_LINK_STATE", {"vf": 3, "link_state": 2}),
    ],
)
def test_each_setting_is_one_ifla_vf_attribute(group: str, name: str, fields: dict) -> None:
    index, got_name, attr = decoded(group)
    assert (index, got_name) == (42, name)
    assert {k: attr[k] for k in fields} == fields


def test_vlan_goes_in_a_vlan_list_with_its_protocol() -> None:
    _, name, attr = decoded("vlan")
    assert name == "IFLA_VF_VLAN_LIST"
    (info,) = attr.get_attrs("IFLA_VF_VLAN_INFO")
    assert (info["vf"], info["vlan"], info["qos"], info["proto"]) == (3, 100, 3, 0x88A8)
    _, _, attr = decoded("vlan", cfg=clean_config())
    (info,) = attr.get_attrs("IFLA_VF_VLAN_INFO")
    assert (info["vlan"], info["qos"], info["proto"]) == (0, 0, 0x8100)


def test_a_cleared_mac_is_sent_as_zeros() -> None:
    assert decoded("mac", cfg=clean_config())[2]["mac"] == "00:00:00:00:00:00"


async def test_a_veth_pf_refuses_the_real_request(netns: str) -> None:
    """The real path reaches the kernel, which refuses VF settings on a veth: the reason the
    simulator stands in at exactly this boundary."""
    netdevs.create([Netdev(ifname="pf0", mac="02:00:00:00:00:01", role="pf", pci_address="x")],
                   netns)  # fmt: skip
    table = nl.NetlinkVfTable(netns)
    try:
        index = await table.index("pf0")
        with pytest.raises(NetlinkError) as exc:
            await table.send("pf0", nl.setlink(index, [nl.vf_attr("vlan", 0, FULL)]))
        assert exc.value.code == errno.EOPNOTSUPP
        assert nl.vf_table(await table.link("pf0")) == {}
    finally:
        table.close()


async def test_the_kernels_own_rtm_newlink_parses(netns: str) -> None:
    netdevs.create([Netdev(ifname="pf1", mac="02:00:00:00:00:02", role="pf", pci_address="x")],
                   netns)  # fmt: skip
    ipr: Any = async_iproute(netns)
    try:
        (msg,) = await ipr.link("get", ifname="pf1", ext_mask=nl.RTEXT_FILTER_VF)
        assert msg.get("ifname") == "pf1" and nl.vf_table(msg) == {}
    finally:
        ipr.close()


# --- reconcile ------------------------------------------------------------------------------
MLX5 = capabilities_for("mlx5_core")
ICE = capabilities_for("ice")


def test_apply_binds_first_then_follows_the_cni_order() -> None:
    want = VfConfig(**{**{f: getattr(FULL, f) for f in FULL.__struct_fields__},
                       "vlan_proto": "802.1Q"})  # fmt: skip
    actual = clean_config("mlx5_core")
    assert [str(a) for a in plan(want, actual, MLX5)] == [
        "bind vfio-pci", "set vlan", "set mac", "set rate", "set spoof_check", "set trust",
        "set link_state",
    ]  # fmt: skip


def test_restore_resets_the_table_before_giving_the_driver_back() -> None:
    dirty = VfConfig(mac="fa:16:3e:00:00:01", vlan=7, trust=True, max_tx_rate=5)
    assert [str(a) for a in plan(clean_config(), dirty, ICE, restoring=True)] == [
        "set vlan", "set mac", "set trust", "set rate", "bind iavf"
    ]  # fmt: skip
    assert plan(clean_config(), clean_config("iavf"), ICE, restoring=True) == []


def test_netdev_driver_gets_its_mac_on_the_netdev_too() -> None:
    want = VfConfig(mac="fa:16:3e:00:00:02", driver="iavf")
    actual = VfConfig(mac="fa:16:3e:00:00:02", driver="iavf")
    assert plan(want, actual, ICE, netdev_mac="02:11:22:33:44:55") == [
        Action("netdev_mac", "fa:16:3e:00:00:02")
    ]
    assert plan(want, actual, ICE, netdev_mac="fa:16:3e:00:00:02") == []


def test_drift_is_exactly_the_setting_that_changed() -> None:
    drifted = VfConfig(**{**{f: getattr(FULL, f) for f in FULL.__struct_fields__},
                          "vlan": 7})  # fmt: skip
    assert plan(FULL, drifted, ICE) == [Action("set", "vlan")]


def test_a_pf_without_min_rate_refuses_naming_the_setting() -> None:
    igb = capabilities_for("igb")
    with pytest.raises(VfUnsupported) as exc:
        plan(VfConfig(min_tx_rate=10, max_tx_rate=100), clean_config("igbvf"), igb)
    assert exc.value.details["settings"] == ["min_tx_rate"]
    assert "igb cannot apply min_tx_rate" in str(exc.value)
    with pytest.raises(VfUnsupported, match="vlan_proto"):
        plan(VfConfig(vlan=5, vlan_proto="802.1ad"), clean_config("mlx5_core"), MLX5)


def test_capability_table() -> None:
    assert capabilities_for("igb").missing(FULL) == ["vlan_proto", "link_state", "min_tx_rate"]
    assert capabilities_for("i40e").missing(FULL) == ["vlan_proto", "min_tx_rate"]
    assert MLX5.missing(FULL) == ["vlan_proto"]
    assert ICE.missing(FULL) == []
    assert capabilities_for("e1000e") == PfCapabilities(driver="e1000e")
    assert capabilities_for("e1000e").missing(clean_config()) == []
