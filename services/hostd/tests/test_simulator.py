"""The simulator writes the kernel's layout: links, sriov files, config space, numbering."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sriov.common.errors import ConfigError
from sriov.hostd import configspace as cs
from sriov.hostd.hostconf import load_host_conf
from sriov.hostd.simulator import models
from sriov.hostd.simulator.kernel import apply_numvfs
from sriov.hostd.simulator.spec import GUIDE_HOST_ID, guide, load_spec
from sriov.hostd.simulator.tree import MARKER, load_state, remove_tree, write_tree

GUIDE_CX5_VFS = [
    f"0000:0a:0{d}.{f}" for d, f in [(0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (0, 7), (1, 0), (1, 1)]
]
GUIDE_I350_VFS = [
    "0000:03:10.0",
    "0000:03:10.4",
    "0000:03:11.0",
    "0000:03:11.4",
    "0000:03:12.0",
    "0000:03:12.4",
    "0000:03:13.0",
]


def rd(p: Path) -> str:
    return p.read_text().strip()


def test_guide_tree_layout(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    write_tree(guide(), root)
    pf = root / "bus/pci/devices/0000:0a:00.0"
    assert os.readlink(pf) == "../../../devices/pci0000:00/0000:00:02.0/0000:0a:00.0"
    assert (rd(pf / "vendor"), rd(pf / "device"), rd(pf / "class")) == (
        "0x15b3",
        "0x1017",
        "0x020000",
    )
    assert rd(pf / "sriov_totalvfs") == "64" and rd(pf / "sriov_numvfs") == "8"
    assert (rd(pf / "sriov_offset"), rd(pf / "sriov_stride"), rd(pf / "sriov_vf_device")) == (
        "2",
        "1",
        "1018",
    )
    assert os.readlink(pf / "driver") == "../../../../bus/pci/drivers/mlx5_core"
    assert (root / "bus/pci/drivers/mlx5_core/module").resolve().name == "mlx5_core"
    assert [(pf / f"virtfn{i}").resolve().name for i in range(8)] == GUIDE_CX5_VFS
    vf = root / "bus/pci/devices/0000:0a:01.1"
    assert (vf / "physfn").resolve() == pf.resolve()
    assert (rd(vf / "vendor"), rd(vf / "device")) == ("0x15b3", "0x1018")
    assert os.listdir(vf / "net") == ["eth1v7"]
    assert (root / "class/net/eth1").resolve() == (pf / "net/eth1").resolve()
    assert rd(root / "class/net/eth1/type") == "1"
    assert (root / "class/net/eth1/device").resolve() == pf.resolve()
    i350 = root / "bus/pci/devices/0000:03:00.0"
    assert [(i350 / f"virtfn{i}").resolve().name for i in range(7)] == GUIDE_I350_VFS
    assert (i350 / "driver").resolve().name == "igb"
    assert (root / "bus/pci/devices/0000:03:13.0/driver").resolve().name == "igbvf"
    # config space carries the SR-IOV capability with the same numbers as sysfs
    space = cs.parse((pf / "config").read_bytes())
    assert space.sriov is not None
    assert (
        space.sriov.total_vfs,
        space.sriov.num_vfs,
        space.sriov.first_vf_offset,
        space.sriov.vf_stride,
        space.sriov.vf_device_id,
        space.sriov.vf_enable,
    ) == (64, 8, 2, 1, 0x1018, True)
    i350_space = cs.parse((i350 / "config").read_bytes())
    assert i350_space.sriov is not None and i350_space.sriov.first_vf_offset == 0x80
    assert i350_space.sriov.vf_stride == 4 and not i350_space.sriov.ari_hierarchy
    group = (vf / "iommu_group").resolve()
    assert group.parent == (root / "kernel/iommu_groups").resolve()
    assert (group / "devices/0000:0a:01.1").resolve() == vf.resolve()
    assert os.listdir(root / "class/iommu") == ["dmar0"]
    assert (root / "bus/pci/drivers/vfio-pci").is_dir() and (root / "module/vfio_pci").is_dir()
    assert (root / MARKER).is_file()


@pytest.mark.parametrize(
    ("model", "slot", "ports", "total", "expected"),
    [
        # mlx5 packs VFs after the PFs and the earlier ports' VFs
        (
            "ConnectX-5",
            "0a:00",
            2,
            8,
            {0: ["0000:0a:00.2", "0000:0a:01.1"], 1: ["0000:0a:01.2", "0000:0a:02.1"]},
        ),
        ("ConnectX-6", "d8:00", 1, 8, {0: ["0000:d8:00.1", "0000:d8:01.0"]}),
        # igb interleaves ports: offset 0x80, stride 4
        (
            "I350",
            "03:00",
            2,
            7,
            {0: ["0000:03:10.0", "0000:03:13.0"], 1: ["0000:03:10.1", "0000:03:13.1"]},
        ),
        (
            "X710",
            "3b:00",
            2,
            64,
            {0: ["0000:3b:02.0", "0000:3b:09.7"], 1: ["0000:3b:0a.0", "0000:3b:11.7"]},
        ),
        # E810 with 256 VFs spills onto the next bus, as real VFs do
        ("E810", "17:00", 1, 256, {0: ["0000:17:01.0", "0000:18:00.7"]}),
    ],
)
def test_vf_numbering_as_real_cards(
    model: str, slot: str, ports: int, total: int, expected: dict[int, list[str]]
) -> None:
    m = models.model(model)
    for port, (first, last) in expected.items():
        pf = f"0000:{slot}.{port}"
        offset = m.offset(port, ports, total)
        assert models.vf_address(pf, offset, m.stride, 0) == first
        assert models.vf_address(pf, offset, m.stride, total - 1) == last


def test_spec_file_errors_name_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("host_id: h\ncards:\n- model: ConnectX-9\n  slot: 0a:00\n")
    with pytest.raises(ConfigError, match=r"spec.yaml:3: cards\[0\]: unknown card model"):
        load_spec(str(spec))
    spec.write_text("host_id: h\ncards:\n- model: I350\n  slot: 03:00\n  link_type: infiniband\n")
    with pytest.raises(ConfigError, match="I350 has no InfiniBand mode"):
        load_spec(str(spec))
    spec.write_text(
        "host_id: h\ncards:\n- model: I350\n  slot: 03:00\n  ports:\n  - {num_vfs: 9}\n"
    )
    with pytest.raises(ConfigError, match=r"num_vfs: 9 is not within 0..7"):
        load_spec(str(spec))
    spec.write_text("host_id: h\ncards:\n- model: I350\n  slott: 03:00\n")
    with pytest.raises(ConfigError, match=r"spec.yaml:4: cards\[0\].slott: unknown key"):
        load_spec(str(spec))
    with pytest.raises(ConfigError, match="neither a file nor a built-in spec"):
        load_spec(str(tmp_path / "nope.yaml"))


def test_refuses_to_overwrite_or_delete_a_real_directory(tmp_path: Path) -> None:
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "keep").write_text("x")
    with pytest.raises(ConfigError, match="not a simulated sysfs tree: refusing"):
        write_tree(guide(), precious)
    with pytest.raises(ConfigError, match="refusing to delete"):
        remove_tree(precious)
    assert (precious / "keep").read_text() == "x"


def test_written_host_conf_matches_the_guide(tmp_path: Path) -> None:
    from sriov.hostd.simulator.spec import host_conf_text

    path = tmp_path / "host.conf"
    path.write_text(host_conf_text(guide(), {"sysfs_root": str(tmp_path / "sys")}))
    conf = load_host_conf(path)
    assert conf.host_id == GUIDE_HOST_ID
    assert [str(n) for n in conf.networks] == ["eth1/br0/192.168.100.111", "eth2/br1/bcast1"]
    assert conf.sriov_nics == ["eth1", "eth2"]


def test_simulated_kernel_recreates_vfs_on_numvfs_write(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    write_tree(guide(), root)
    pf = root / "bus/pci/devices/0000:0a:00.0"
    apply_numvfs(root, "0000:0a:00.0", 0)
    assert not list(pf.glob("virtfn*")) and rd(pf / "sriov_numvfs") == "0"
    assert not (root / "bus/pci/devices/0000:0a:00.2").exists()
    assert not (root / "class/net/eth1v0").exists()
    apply_numvfs(root, "0000:0a:00.0", 3)
    assert [(pf / f"virtfn{i}").resolve().name for i in range(3)] == GUIDE_CX5_VFS[:3]
    space = cs.parse((pf / "config").read_bytes())
    assert space.sriov is not None and space.sriov.num_vfs == 3
    state = load_state(root)
    assert [d.ifname for d in state.netdevs if d.role == "vf" and d.ifname.startswith("eth1")] == [
        "eth1v0",
        "eth1v1",
        "eth1v2",
    ]
