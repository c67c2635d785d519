"""VfConfig refuses what the kernel would refuse, and old payloads still decode."""

from __future__ import annotations

import pytest

from sriov.common import schemas as m
from sriov.common.errors import InvalidRequest

CODEC = m.codec(m.VfChanged)
BASE = b'{"type":"host.vf.changed.v1","host_id":"h","generation":1,"seq":1,"vf":{'
VF = b'"pci_address":"0000:0a:00.2","pf_pci_address":"0000:0a:00.0","vf_index":0'


def vf_changed(actual: bytes) -> m.VfChanged:
    return CODEC.decode(BASE + VF + b',"actual":' + actual + b"}}")


def test_a_vf_without_actual_decodes_as_not_read() -> None:
    assert CODEC.decode(BASE + VF + b"}}").vf.actual is None


def test_defaults_are_the_issue_defaults_and_clean_is_the_default_driver() -> None:
    cfg = vf_changed(b"{}").vf.actual
    assert cfg == m.VfConfig(driver="vfio-pci")
    assert (cfg.vlan, cfg.spoof_check, cfg.trust, cfg.link_state, cfg.max_tx_rate) == (
        0, True, False, "auto", 0
    )  # fmt: skip
    assert m.clean_config().driver is None and m.clean_config().mac is None


@pytest.mark.parametrize(
    ("actual", "field"),
    [
        (b'{"vlan":4095}', "vlan"),
        (b'{"vlan":-1}', "vlan"),
        (b'{"qos":8}', "qos"),
        (b'{"mac":"01:00:5e:00:00:01"}', "mac"),
        (b'{"mac":"00:00:00:00:00:00"}', "mac"),
        (b'{"mac":"FA:16:3E:00:00:01"}', "mac"),
        (b'{"vlan_proto":"802.1x"}', "vlan_proto"),
        (b'{"link_state":"up"}', "link_state"),
        (b'{"max_tx_rate":-5}', "max_tx_rate"),
    ],
)
def test_invalid_values_are_refused_naming_the_field(actual: bytes, field: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        vf_changed(actual)
    assert exc.value.details["field"] == f"vf.actual.{field}"  # the path, as every error names it


def test_min_rate_above_max_rate_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="min_tx_rate 200 is above max_tx_rate 100"):
        vf_changed(b'{"min_tx_rate":200,"max_tx_rate":100}')
    assert vf_changed(b'{"min_tx_rate":200}').vf.actual.min_tx_rate == 200  # 0 = no max


def test_capabilities_name_what_a_pf_cannot_apply() -> None:
    igb = m.PfCapabilities(driver="igb", mac=True, vlan=True, spoof_check=True, trust=True,
                           max_tx_rate=True)  # fmt: skip
    want = m.VfConfig(mac="fa:16:3e:00:00:01", vlan=100, vlan_proto="802.1ad",
                      min_tx_rate=10, max_tx_rate=1000, link_state="disable")  # fmt: skip
    assert igb.missing(want) == ["vlan_proto", "link_state", "min_tx_rate"]
    assert igb.missing(m.clean_config()) == []
    assert want.differences(m.clean_config("igbvf")) == [
        "mac", "vlan", "vlan_proto", "link_state", "min_tx_rate", "max_tx_rate", "driver"
    ]  # fmt: skip
