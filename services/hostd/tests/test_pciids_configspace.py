"""pci.ids names as the guide shows them, and config space as lspci -v shows it."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sriov.common.errors import ConfigError
from sriov.hostd import configspace as cs
from sriov.hostd.pciids import PciIds, short_model
from sriov.hostd.simulator import models


@pytest.fixture(scope="module")
def ids() -> PciIds:
    return PciIds()


@pytest.mark.parametrize(
    ("vendor", "device", "vf", "expected"),
    [
        ("15b3", "1018", True, "ConnectX-5 Virtual Function"),
        ("8086", "1520", True, "I350 Ethernet Controller Virtual Function"),
        ("15b3", "1016", True, "ConnectX-4 Lx Virtual Function"),
        ("15b3", "101c", True, "ConnectX-6 Virtual Function"),
        ("15b3", "101e", True, "ConnectX Family mlx5Gen Virtual Function"),
        ("8086", "154c", True, "Ethernet Virtual Function 700 Series"),
        ("8086", "1889", True, "Ethernet Adaptive Virtual Function"),
        ("15b3", "1017", False, "MT27800 Family [ConnectX-5]"),
        ("8086", "1521", False, "I350 Gigabit Network Connection"),
        ("15b3", "ffee", False, "15b3:ffee"),
        ("1234", "5678", True, "1234:5678"),
    ],
)
def test_models_from_system_pci_ids(
    ids: PciIds, vendor: str, device: str, vf: bool, expected: str
) -> None:
    assert ids.model(vendor, device, vf=vf) == expected


def test_short_model() -> None:
    assert short_model("MT27800 Family [ConnectX-5 Virtual Function]") == (
        "ConnectX-5 Virtual Function"
    )
    assert short_model("I350 Ethernet Controller Virtual Function") == (
        "I350 Ethernet Controller Virtual Function"
    )


def test_pci_ids_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read pci\.ids"):
        PciIds(tmp_path / "missing.ids")
    small = tmp_path / "pci.ids"
    small.write_text(
        "# comment\n15b3  Mellanox\n\t1018  X [Y VF]\n\t\t15b3 0001  sub\nffff  Illegal\n"
    )
    ids = PciIds(small)
    assert ids.vendor("15B3") == "Mellanox"
    assert ids.model("15b3", "1018", vf=True) == "Y VF"
    assert ids.device("15b3", "0001") is None


def test_guide_lspci_capabilities_of_a_connectx_6_lx() -> None:
    """The guide's `lspci -v -s 01:00.0` capability list, rebuilt and parsed back."""
    regs = cs.SriovRegs(8, 0, 2, 1, 0x101E)
    data = cs.build(0x15B3, 0x101F, models.CLASS_ETHERNET, models.MLX_STD, models.MLX_EXT, regs)
    space = cs.parse(data)
    assert space.lspci() == [
        "Capabilities: [60] Express Endpoint, MSI 00",
        "Capabilities: [48] Vital Product Data",
        "Capabilities: [9c] MSI-X: Enable+ Count=64 Masked-",
        "Capabilities: [c0] Vendor Specific Information: Len=18 <?>",
        "Capabilities: [40] Power Management version 3",
        "Capabilities: [100] Advanced Error Reporting",
        "Capabilities: [150] Alternative Routing-ID Interpretation (ARI)",
        "Capabilities: [180] Single Root I/O Virtualization (SR-IOV)",
        "Capabilities: [1c0] #19",
        "Capabilities: [230] Access Control Services",
        "Capabilities: [320] #27",
        "Capabilities: [370] #26",
        "Capabilities: [420] #25",
    ]
    assert (space.vendor_id, space.device_id, space.class_code) == (0x15B3, 0x101F, 0x020000)
    assert space.sriov == cs.SriovCap(0x180, False, True, 8, 8, 0, 2, 1, 0x101E)
    assert space.has(cs.EXT_ARI) and space.has(cs.EXT_ACS)


def test_vf_config_space_reads_ffff_and_has_no_sriov() -> None:
    data = cs.build(
        0x15B3, 0x1018, models.CLASS_ETHERNET, models.MLX_VF_STD, models.MLX_VF_EXT, is_vf=True
    )
    space = cs.parse(data)
    assert (space.vendor_id, space.device_id) == (0xFFFF, 0xFFFF)
    assert space.sriov is None


def test_short_and_broken_config_space() -> None:
    data = cs.build(
        0x8086,
        0x1521,
        models.CLASS_ETHERNET,
        models.INTEL_STD,
        models.IGB_EXT,
        cs.SriovRegs(7, 7, 0x80, 4, 0x1520, ari=False),
    )
    header_only = cs.parse(data[:64])
    assert not header_only.extended_readable and header_only.sriov is None
    with pytest.raises(cs.ConfigSpaceError, match="only 10 bytes"):
        cs.parse(data[:10])
    with pytest.raises(cs.ConfigSpaceError, match="not responding"):
        cs.parse(b"\xff" * 8 + bytes(4088))
    looped = bytearray(data)
    struct.pack_into("<I", looped, 0x100, 0x0001 | (1 << 16) | (0x100 << 20))  # points to itself
    with pytest.raises(cs.ConfigSpaceError, match="bad extended capability pointer 0x100"):
        cs.parse(bytes(looped))
