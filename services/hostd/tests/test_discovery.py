"""Discovery of simulated hosts: exact values for every model, and broken sysfs.

Long because it is a table: one exact expectation per card model and per kind of broken
sysfs, which reads better side by side than spread over files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sriov.common import schemas as m
from sriov.hostd.discovery import Discovery, discover
from sriov.hostd.hostconf import parse_host_conf
from sriov.hostd.netview import LinkInfo, NetView
from sriov.hostd.pciids import PciIds
from sriov.hostd.simulator.spec import (
    CardSpec,
    HostSpec,
    PortSpec,
    every_model,
    guide,
)
from sriov.hostd.sysfs import Sysfs

from .conftest import SimHost, make_host
from .test_simulator import GUIDE_CX5_VFS, GUIDE_I350_VFS


@pytest.fixture(scope="module")
def ids() -> PciIds:
    return PciIds()


def run(host: SimHost, ids: PciIds, net: NetView | None = None) -> Discovery:
    return discover(host.conf, Sysfs(host.root), ids, net)


def test_guide_host(tmp_path: Path, ids: PciIds) -> None:
    """The guide's isolated-device-list: 8 ConnectX-5 and 7 I350 VFs on the guide's host."""
    found = run(make_host(tmp_path, guide()), ids)
    assert found.errors == []
    eth1, eth2 = found.pfs
    assert eth1 == m.PF(
        pci_address="0000:0a:00.0",
        ifname="eth1",
        vendor_id="15b3",
        device_id="1017",
        model="MT27800 Family [ConnectX-5]",
        driver="mlx5_core",
        numa_node=0,
        link_type="ethernet",
        total_vfs=64,
        num_vfs=8,
        network="192.168.100.111",
        bridge="br0",
        wire=None,
        sriov=True,
        offload=False,
        link_state="up",
        mac=eth1.mac,
    )
    assert eth2.model == "I350 Gigabit Network Connection" and eth2.wire == "bcast1"
    assert (eth2.total_vfs, eth2.num_vfs, eth2.driver) == (7, 7, "igb")
    table = [(vf.model, vf.pci_address, f"{vf.vendor_id}:{vf.device_id}") for vf in found.vfs]
    assert table == [
        *(("ConnectX-5 Virtual Function", a, "15b3:1018") for a in GUIDE_CX5_VFS),
        *(("I350 Ethernet Controller Virtual Function", a, "8086:1520") for a in GUIDE_I350_VFS),
    ]
    vf = found.vfs[0]
    assert (vf.vf_index, vf.pf_pci_address, vf.driver, vf.ifname, vf.numa_node) == (
        0,
        "0000:0a:00.0",
        "mlx5_core",
        "eth1v0",
        0,
    )
    assert vf.iommu_group is not None and vf.link_state == "up" and vf.mac.startswith("02:")
    assert [v.vf_index for v in found.vfs] == [*range(8), *range(7)]
    assert {v.driver for v in found.vfs[8:]} == {"igbvf"}


# ifname -> (pci, vendor:device, model, driver, numa, link type, total, num, bond, mode,
#            sriov, offload, network, wire)
MODELS_PFS = {
    "cx4lx0": (
        "0000:3b:00.0",
        "15b3:1015",
        "MT27710 Family [ConnectX-4 Lx]",
        "mlx5_core",
        0,
        "ethernet",
        8,
        4,
        None,
        None,
        True,
        False,
        "10.0.0.11",
        None,
    ),
    "cx5p0": (
        "0000:5e:00.0",
        "15b3:1017",
        "MT27800 Family [ConnectX-5]",
        "mlx5_core",
        0,
        "ethernet",
        16,
        4,
        None,
        None,
        True,
        False,
        "10.0.0.11",
        None,
    ),
    "cx5p1": (
        "0000:5e:00.1",
        "15b3:1017",
        "MT27800 Family [ConnectX-5]",
        "mlx5_core",
        0,
        "ethernet",
        16,
        2,
        None,
        None,
        True,
        False,
        "10.0.0.11",
        None,
    ),
    "cx6lx0": (
        "0000:af:00.0",
        "15b3:101f",
        "MT2894 Family [ConnectX-6 Lx]",
        "mlx5_core",
        1,
        "ethernet",
        8,
        2,
        None,
        None,
        True,
        False,
        "10.0.0.11",
        None,
    ),
    "ib0": (
        "0000:d8:00.0",
        "15b3:101b",
        "MT28908 Family [ConnectX-6]",
        "mlx5_core",
        1,
        "infiniband",
        8,
        2,
        None,
        None,
        True,
        False,
        "10.0.0.11",
        None,
    ),
    "i350p0": (
        "0000:03:00.0",
        "8086:1521",
        "I350 Gigabit Network Connection",
        "igb",
        0,
        "ethernet",
        7,
        7,
        None,
        None,
        True,
        False,
        "10.0.0.11",
        None,
    ),
    "x710p0": (
        "0000:18:00.0",
        "8086:1572",
        "Ethernet Controller X710 for 10GbE SFP+",
        "i40e",
        0,
        "ethernet",
        64,
        4,
        None,
        None,
        True,
        False,
        "10.0.0.11",
        None,
    ),
    "e810p0": (
        "0000:17:00.0",
        "8086:1592",
        "Ethernet Controller E810-C for QSFP",
        "ice",
        0,
        "ethernet",
        256,
        4,
        None,
        None,
        True,
        False,
        "10.0.0.11",
        None,
    ),
    "cx6dx0": (
        "0000:86:00.0",
        "15b3:101d",
        "MT2892 Family [ConnectX-6 Dx]",
        "mlx5_core",
        1,
        "ethernet",
        8,
        4,
        "bond0",
        "802.3ad",
        False,
        True,
        "bcast0",
        "bcast0",
    ),
    "cx6dx1": (
        "0000:86:00.1",
        "15b3:101d",
        "MT2892 Family [ConnectX-6 Dx]",
        "mlx5_core",
        1,
        "ethernet",
        8,
        4,
        "bond0",
        "802.3ad",
        False,
        True,
        "bcast0",
        "bcast0",
    ),
}

# ifname -> (first VF, last VF, VF model, vendor:device, VF driver, first VF netdev)
MODELS_VFS = {
    "cx4lx0": (
        "0000:3b:00.2",
        "0000:3b:00.5",
        "ConnectX-4 Lx Virtual Function",
        "15b3:1016",
        "mlx5_core",
        "cx4lx0v0",
    ),
    "cx5p0": (
        "0000:5e:00.2",
        "0000:5e:00.5",
        "ConnectX-5 Virtual Function",
        "15b3:1018",
        "mlx5_core",
        "cx5p0v0",
    ),
    "cx5p1": (
        "0000:5e:02.2",
        "0000:5e:02.3",
        "ConnectX-5 Virtual Function",
        "15b3:1018",
        "mlx5_core",
        "cx5p1v0",
    ),
    "cx6lx0": (
        "0000:af:00.2",
        "0000:af:00.3",
        "ConnectX Family mlx5Gen Virtual Function",
        "15b3:101e",
        "mlx5_core",
        "cx6lx0v0",
    ),
    "ib0": (
        "0000:d8:00.1",
        "0000:d8:00.2",
        "ConnectX-6 Virtual Function",
        "15b3:101c",
        "mlx5_core",
        "ib0v0",
    ),
    "i350p0": (
        "0000:03:10.0",
        "0000:03:13.0",
        "I350 Ethernet Controller Virtual Function",
        "8086:1520",
        "igbvf",
        "i350p0v0",
    ),
    "x710p0": (
        "0000:18:02.0",
        "0000:18:02.3",
        "Ethernet Virtual Function 700 Series",
        "8086:154c",
        "iavf",
        "x710p0v0",
    ),
    "e810p0": (
        "0000:17:01.0",
        "0000:17:01.3",
        "Ethernet Adaptive Virtual Function",
        "8086:1889",
        "iavf",
        "e810p0v0",
    ),
    "cx6dx0": (
        "0000:86:00.2",
        "0000:86:00.5",
        "ConnectX Family mlx5Gen Virtual Function",
        "15b3:101e",
        "mlx5_core",
        "cx6dx0v0",
    ),
    "cx6dx1": (
        "0000:86:01.2",
        "0000:86:01.5",
        "ConnectX Family mlx5Gen Virtual Function",
        "15b3:101e",
        "mlx5_core",
        "cx6dx1v0",
    ),
}


def test_every_model(tmp_path: Path, ids: PciIds) -> None:
    found = run(make_host(tmp_path, every_model()), ids)
    assert found.errors == []
    got = {
        pf.ifname: (
            pf.pci_address,
            f"{pf.vendor_id}:{pf.device_id}",
            pf.model,
            pf.driver,
            pf.numa_node,
            pf.link_type,
            pf.total_vfs,
            pf.num_vfs,
            pf.bond,
            pf.bond_mode,
            pf.sriov,
            pf.offload,
            pf.network,
            pf.wire,
        )
        for pf in found.pfs
    }
    assert got == MODELS_PFS
    for pf in found.pfs:
        vfs = [v for v in found.vfs if v.pf_pci_address == pf.pci_address]
        assert len(vfs) == pf.num_vfs
        first, last = vfs[0], vfs[-1]
        assert (
            first.pci_address,
            last.pci_address,
            first.model,
            f"{first.vendor_id}:{first.device_id}",
            first.driver,
            first.ifname,
        ) == (MODELS_VFS[pf.ifname or ""])
        assert {v.numa_node for v in vfs} == {pf.numa_node}
    ib = found.pf("ib0")
    assert ib is not None and ib.mac is not None and len(ib.mac.split(":")) == 20


def single(tmp_path: Path, **port: object) -> SimHost:
    spec = HostSpec(
        host_id="h1",
        cards=[
            CardSpec(
                model="ConnectX-5",
                slot="0000:0a:00",
                total_vfs=8,
                ports=[PortSpec(ifname="eth1", num_vfs=4, **port)],
            )
        ],  # type: ignore[arg-type]
        sriov_nics=["eth1"],
    )
    return make_host(tmp_path, spec)


def pf_dir(host: SimHost) -> Path:
    return (host.root / "bus/pci/devices/0000:0a:00.0").resolve()


def vf_dir(host: SimHost, n: int) -> Path:
    return (pf_dir(host) / f"virtfn{n}").resolve()


def test_vf_on_vfio_pci_and_unbound_vf_are_normal(tmp_path: Path, ids: PciIds) -> None:
    found = run(single(tmp_path, vfio=[1], unbound=[2]), ids)
    assert found.errors == []
    vfio, unbound = found.vfs[1], found.vfs[2]
    assert (vfio.driver, vfio.ifname, vfio.mac, vfio.link_state) == (
        "vfio-pci",
        None,
        None,
        "unknown",
    )
    assert vfio.model == "ConnectX-5 Virtual Function" and vfio.iommu_group is not None
    assert (unbound.driver, unbound.ifname) == (None, None)


def errors_of(found: Discovery) -> list[tuple[str, str]]:
    return [(e.pci_address, e.message) for e in found.errors]


def test_dangling_virtfn_link(tmp_path: Path, ids: PciIds) -> None:
    host = single(tmp_path)
    shutil.rmtree(vf_dir(host, 2))
    found = run(host, ids)
    # one port: VFs start right after it, at function 1
    assert [v.pci_address for v in found.vfs] == ["0000:0a:00.1", "0000:0a:00.2", "0000:0a:00.4"]
    assert errors_of(found) == [
        (
            "0000:0a:00.3",
            f"{pf_dir(host)}/virtfn2 is a dangling link: its target "
            f"{pf_dir(host).parent}/0000:0a:00.3 does not exist",
        )
    ]


def test_vf_missing_vendor_is_left_out_with_an_error(tmp_path: Path, ids: PciIds) -> None:
    host = single(tmp_path)
    (vf_dir(host, 1) / "vendor").unlink()
    found = run(host, ids)
    assert "0000:0a:00.2" not in [v.pci_address for v in found.vfs] and len(found.vfs) == 3
    assert errors_of(found) == [("0000:0a:00.2", f"{vf_dir(host, 1)}/vendor is missing")]


def test_dangling_driver_link_and_bad_numa(tmp_path: Path, ids: PciIds) -> None:
    host = single(tmp_path)
    shutil.rmtree(host.root / "bus/pci/drivers/mlx5_core")
    (vf_dir(host, 0) / "numa_node").write_text("zero\n")
    found = run(host, ids)
    assert len(found.vfs) == 4
    assert found.pfs[0].driver is None and found.vfs[0].numa_node == -1
    msgs = dict(errors_of(found))
    assert msgs["0000:0a:00.0"] == (
        f"{pf_dir(host)}/driver is a dangling link: its target "
        f"{host.root}/bus/pci/drivers/mlx5_core does not exist"
    )
    bad = [e for e in found.errors if "numa_node" in e.message]
    assert [(e.pci_address, e.message) for e in bad] == [
        ("0000:0a:00.1", f"{vf_dir(host, 0)}/numa_node holds 'zero', not a number")
    ]


@pytest.mark.parametrize("fault", ["missing", "directory", "short"])
def test_unreadable_config_space(tmp_path: Path, ids: PciIds, fault: str) -> None:
    host = single(tmp_path)
    config = pf_dir(host) / "config"
    if fault == "missing":
        config.unlink()
        want = f"config space unreadable: {config} is missing"
    elif fault == "directory":
        config.unlink()
        config.mkdir()
        want = f"config space unreadable: cannot read {config}: Is a directory"
    else:
        config.write_bytes(config.read_bytes()[:64])
        want = (
            "config space of 0000:0a:00.0 reads only 64 bytes: extended capabilities "
            "(SR-IOV, ARI, ACS) are hidden; run hostd as root"
        )
    found = run(host, ids)
    assert len(found.pfs) == 1 and len(found.vfs) == 4
    assert errors_of(found) == [("0000:0a:00.0", want)]
    assert found.errors[0].path == str(config)


def test_no_sriov_support_and_missing_nic(tmp_path: Path, ids: PciIds) -> None:
    spec = HostSpec(
        host_id="h1",
        cards=[
            CardSpec(
                model="ConnectX-5", slot="0000:0a:00", sriov=False, ports=[PortSpec(ifname="eth1")]
            )
        ],
        sriov_nics=["eth1", "eth9"],
    )
    host = make_host(tmp_path, spec)
    found = run(host, ids)
    assert [(p.ifname, p.total_vfs, p.num_vfs) for p in found.pfs] == [("eth1", 0, 0)]
    assert [(e.pci_address, e.ifname, e.message) for e in found.errors] == [
        (
            "0000:0a:00.0",
            "eth1",
            "eth1 (0000:0a:00.0) has no sriov_totalvfs: the device or its "
            "driver does not support SR-IOV, or SR-IOV is off in BIOS/firmware",
        ),
        ("", "eth9", f"configured NIC eth9 has no netdev ({host.root}/class/net/eth9 is missing)"),
    ]


def test_numvfs_disagreeing_with_virtfn_links_is_settling(tmp_path: Path, ids: PciIds) -> None:
    """Mid-creation the kernel shows some virtfn links and the old count: not an error yet."""
    host = single(tmp_path)
    (pf_dir(host) / "virtfn3").unlink()
    found = run(host, ids)
    assert len(found.vfs) == 3 and found.errors == []
    assert [(e.pci_address, e.message) for e in found.settling] == [
        (
            "0000:0a:00.0",
            "sriov_numvfs of eth1 is 4 but 3 virtfn links exist (VFs being created or removed?)",
        ),
    ]


@pytest.mark.parametrize("address", [None, ""])
def test_a_vf_netdev_without_its_address_yet_is_settling(
    tmp_path: Path, ids: PciIds, address: str | None
) -> None:
    """A rebound VF's netdev directory exists before its attributes (the kernel's order, and
    the simulator's): publishing that as "no MAC" stuck a null MAC in inventory once."""
    host = single(tmp_path)
    attr = vf_dir(host, 1) / "net" / "eth1v1" / "address"
    if address is None:
        attr.unlink()
    else:
        attr.write_text(address)
    found = run(host, ids)
    assert found.errors == []
    assert [(e.pci_address, e.ifname, e.message) for e in found.settling] == [
        ("0000:0a:00.2", "eth1v1",
         "netdev eth1v1 of VF 0000:0a:00.2 has no address yet (being registered or removed?)"),
    ]  # fmt: skip
    assert [v.mac for v in found.vfs if v.ifname == "eth1v1"] == [None]


def test_netlink_overrides_link_state_and_marks_management(tmp_path: Path, ids: PciIds) -> None:
    spec = guide()
    host = make_host(tmp_path, spec)
    conf = parse_host_conf({**_raw(host), "management_ip": "192.168.100.111"}, "host.conf")
    net = NetView(
        links={
            "eth1": LinkInfo(5, "eth1", "UP", 1, "b8:59:9f:00:00:01", 9),
            "br0": LinkInfo(9, "br0", "UP", 1, None, None),
            "eth1v0": LinkInfo(6, "eth1v0", "LOWERLAYERDOWN", 0, "02:aa:bb:cc:dd:ee", None),
            "eth2": LinkInfo(7, "eth2", "DOWN", 0, None, None),
        },
        addresses={"br0": {"192.168.100.111"}},
    )
    found = discover(conf, Sysfs(host.root), ids, net)
    eth1, eth2 = found.pfs
    assert eth1.management and not eth2.management
    assert found.management == {
        "0000:0a:00.0": "eth1 holds the management address 192.168.100.111 (through br0)"
    }
    assert eth1.mac == "b8:59:9f:00:00:01" and eth2.link_state == "down"
    assert (found.vfs[0].link_state, found.vfs[0].mac) == ("down", "02:aa:bb:cc:dd:ee")
    net.default_route = {"eth2"}
    net.addresses = {}
    found = discover(conf, Sysfs(host.root), ids, net)
    assert found.management == {"0000:03:00.0": "eth2 carries the default route"}


def _raw(host: SimHost) -> dict[str, object]:
    import yaml

    data: dict[str, object] = yaml.safe_load(host.conf_path.read_text())
    return data


def test_a_configured_name_that_is_not_a_pci_device(tmp_path: Path, ids: PciIds) -> None:
    host = single(tmp_path)
    virt = host.root / "devices/virtual/net/veth9"
    virt.mkdir(parents=True)
    os.symlink("../../devices/virtual/net/veth9", host.root / "class/net/veth9")
    os.symlink("../../devices/virtual/net/gone", host.root / "class/net/gone0")
    conf = parse_host_conf({**_raw(host), "sriov_nics": ["eth1", "veth9", "gone0"]}, "x")
    found = discover(conf, Sysfs(host.root), ids)
    assert [(e.ifname, e.message) for e in found.errors] == [
        ("veth9", f"veth9 is not a PCI device (no {virt}/device link)"),
        (
            "gone0",
            f"{host.root}/class/net/gone0 is a dangling link: its target "
            f"{host.root}/devices/virtual/net/gone does not exist",
        ),
    ]
