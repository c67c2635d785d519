"""NIC checks: injected devlink/ethtool answers over a fake sysfs, and the real kernel here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from sriov.common.schemas import Finding
from sriov.offload.checks import check_nics
from sriov.offload.nics import NicSysfs
from sriov.offload.probes import SystemProbes
from sriov.offload.testing.fakes import FakeProbes, FakeSys
from sriov.offload.topology import NicChecker

ON = {"hw-tc-offload": True, "rx-checksum": True}
OFF = {"hw-tc-offload": False}


def by_check(findings: list[Finding], device: str | None = None) -> dict[str, Finding]:
    return {f.check: f for f in findings if device is None or f.device == device}


@pytest.fixture
def fake(tmp_path: Path) -> FakeSys:
    return FakeSys(tmp_path / "sys")


async def run(
    fake: FakeSys, names: list[str], probes: FakeProbes, sg: bool = False
) -> list[Finding]:
    return await check_nics(
        names, sysfs=NicSysfs(fake.root), probes=probes, disable_security_group=sg
    )


async def test_healthy_connectx5_in_switchdev_passes_everything(fake: FakeSys) -> None:
    fake.connectx_pf("eth2", "0000:3b:00.0", num_vfs=2)
    probes = FakeProbes(modes={"0000:3b:00.0": "switchdev"}, features_by_if={"eth2": ON})
    found = by_check(await run(fake, ["eth2"], probes, sg=True))
    assert set(found) == {
        "nic.model", "nic.eswitch_mode", "nic.hw_tc_offload", "nic.representors",
        "nic.security_group",
    }  # fmt: skip
    assert all(f.severity == "ok" for f in found.values())
    assert "ConnectX-5" in found["nic.model"].message
    assert "0x15b3" in found["nic.model"].evidence and "mlx5_core" in found["nic.model"].evidence
    assert "eth2_0(pf0vf0)" in found["nic.representors"].evidence


async def test_legacy_eswitch_tc_offload_off_and_missing_representors(fake: FakeSys) -> None:
    fake.connectx_pf("eth2", "0000:3b:00.0", num_vfs=4, switchdev=False, device="101d")
    probes = FakeProbes(modes={"0000:3b:00.0": "legacy"}, features_by_if={"eth2": OFF})
    found = by_check(await run(fake, ["eth2"], probes))
    mode = found["nic.eswitch_mode"]
    assert mode.severity == "error" and "legacy" in mode.message
    assert "devlink dev eswitch set pci/0000:3b:00.0 mode switchdev" in mode.fix
    assert mode.evidence == "devlink dev eswitch show pci/0000:3b:00.0: mode legacy"
    tc = found["nic.hw_tc_offload"]
    assert tc.severity == "error" and tc.fix == "ethtool -K eth2 hw-tc-offload on"
    assert "hw-tc-offload: off" in tc.evidence
    reps = found["nic.representors"]
    assert reps.severity == "error" and "4 VFs but 0 representors" in reps.message
    sg = found["nic.security_group"]
    assert sg.severity == "error" and "ConnectX-6 Dx" in sg.message
    assert "disable_security_group: true" in sg.fix


async def test_security_group_rule_follows_the_generation(fake: FakeSys) -> None:
    fake.connectx_pf("cx6", "0000:01:00.0", device="101f")
    fake.connectx_pf("cx7", "0000:02:00.0", device="1021")
    probes = FakeProbes(
        modes={"0000:01:00.0": "switchdev", "0000:02:00.0": "switchdev"},
        features_by_if={"cx6": ON, "cx7": ON},
    )
    off = await run(fake, ["cx6", "cx7"], probes, sg=False)
    assert by_check(off, "cx6")["nic.security_group"].severity == "error"
    assert by_check(off, "cx7")["nic.security_group"].severity == "ok"
    on = await run(fake, ["cx6", "cx7"], probes, sg=True)
    assert by_check(on, "cx6")["nic.security_group"].severity == "ok"


@pytest.mark.parametrize(
    ("mode", "severity"),
    [
        ("active-backup 1", "ok"),
        ("balance-xor 2", "ok"),
        ("802.3ad 4", "ok"),
        ("balance-rr 0", "error"),
        ("balance-alb 6", "error"),
    ],
)
async def test_bond_is_expanded_to_its_pfs_and_its_mode_checked(
    fake: FakeSys, mode: str, severity: str
) -> None:
    fake.connectx_pf("ens1f0", "0000:5e:00.0", port=0, device="101b")
    fake.connectx_pf("ens1f1", "0000:5e:00.1", port=1, device="101b")
    fake.bond("bond0", mode, ["ens1f0", "ens1f1"])
    probes = FakeProbes(
        modes={"0000:5e:00.0": "switchdev", "0000:5e:00.1": "switchdev"},
        features_by_if={"ens1f0": ON, "ens1f1": ON},
    )
    findings = await run(fake, ["bond0"], probes, sg=True)
    bond = by_check(findings, "bond0")["bond.mode"]
    assert bond.severity == severity
    assert mode in bond.evidence
    if severity == "error":
        assert "Active-Backup (1), XOR (2) and LACP (4)" in bond.message
    for pf in ("ens1f0", "ens1f1"):
        pf_findings = by_check(findings, pf)
        assert "(bond bond0)" in pf_findings["nic.model"].message
        assert pf_findings["nic.representors"].severity == "ok"
    # representors are matched to their own PF by phys_port_name pfN
    assert "ens1f1_0(pf1vf0)" in by_check(findings, "ens1f1")["nic.representors"].evidence
    assert "ens1f0_0" not in by_check(findings, "ens1f1")["nic.representors"].evidence


async def test_missing_virtual_foreign_and_driverless_nics(fake: FakeSys) -> None:
    fake.netdev("veth9")  # no PCI device behind it
    fake.pci("0000:af:00.0", "8086", "1593", "ice", 0)
    fake.netdev("intel0", fake.root / "devices" / "pci0000:00" / "0000:af:00.0")
    fake.connectx_pf("mlx0", "0000:3b:00.0", driver=None, switchdev=False)
    probes = FakeProbes(devlink_error="devlink is not available", features_by_if={})
    findings = await run(fake, ["nope0", "veth9", "intel0", "mlx0"], probes)
    assert by_check(findings, "nope0")["nic.present"].severity == "error"
    assert by_check(findings, "veth9")["nic.device"].severity == "error"
    intel = by_check(findings, "intel0")
    assert intel["nic.model"].severity == "warning" and "8086:1593" in intel["nic.model"].message
    assert "nic.security_group" not in intel
    assert intel["nic.representors"].severity == "warning"  # no VFs
    mlx = by_check(findings, "mlx0")
    assert mlx["nic.driver"].severity == "error" and "MLNX_OFED" in mlx["nic.driver"].fix
    assert mlx["nic.eswitch_mode"].evidence == "devlink is not available"
    assert "No such device" in mlx["nic.hw_tc_offload"].evidence


async def test_checker_reads_host_conf_and_maps_ports_to_pfs(fake: FakeSys, tmp_path: Path) -> None:
    fake.connectx_pf("ens1f0", "0000:5e:00.0", port=0)
    fake.connectx_pf("ens1f1", "0000:5e:00.1", port=1)
    fake.connectx_pf("eth2", "0000:3b:00.0", port=0)
    fake.bond("bond0", "active-backup 1", ["ens1f0", "ens1f1"])
    conf = tmp_path / "host.conf"
    conf.write_text(
        "host_id: h1\nnetworks:\n- bond0/br1/bcast0\novs_offload_nics:\n- bond0\n- eth2\n"
        "disable_security_group: true\n"
    )
    checker = NicChecker(conf, NicSysfs(fake.root), FakeProbes(), host_id="h1")
    topo = await checker.run()
    assert topo.offload_nics == ["bond0", "eth2"]
    assert not [f for f in topo.findings if f.check == "hostconf.host_id"]
    other = await NicChecker(conf, NicSysfs(fake.root), FakeProbes(), host_id="h2").run()
    assert next(f for f in other.findings if f.check == "hostconf.host_id").severity == "warning"
    assert topo.port_pf == {
        "bond0": "bond0", "ens1f0": "bond0", "ens1f0_0": "bond0", "ens1f0_1": "bond0",
        "ens1f1": "bond0", "ens1f1_0": "bond0", "ens1f1_1": "bond0",
        "eth2": "eth2", "eth2_0": "eth2", "eth2_1": "eth2",
    }  # fmt: skip
    assert by_check(topo.findings, "eth2")["nic.security_group"].severity == "ok"


async def test_checker_without_or_with_a_broken_host_conf(fake: FakeSys, tmp_path: Path) -> None:
    none = await NicChecker(None, NicSysfs(fake.root), FakeProbes()).run()
    assert [f.check for f in none.findings] == ["hostconf.missing"]
    bad = tmp_path / "host.conf"
    bad.write_text("host_id: h1\novs_offload_nics: eth2\n")
    broken = await NicChecker(bad, NicSysfs(fake.root), FakeProbes()).run()
    [finding] = broken.findings
    assert finding.check == "hostconf.invalid" and finding.severity == "error"
    assert f"{bad}:2" in finding.evidence and "ovs_offload_nics" in finding.evidence


# --- the real kernel of this machine ------------------------------------------------------------
@pytest.fixture
def veth() -> Iterator[str]:
    name = f"sot{__import__('os').getpid() % 100000}"
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": name + "p"})
    try:
        yield name
    finally:
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=name)
            if idx:
                ipr.link("del", index=idx[0])


@pytest.mark.netns
async def test_real_probes_here_no_devlink_and_veth_features(veth: str) -> None:
    probes = SystemProbes()
    features = await probes.features(veth)
    assert features["hw-tc-offload"] is False
    assert "tx-checksum-ip-generic" in features


async def test_real_devlink_absence_is_a_finding_with_evidence(tmp_path: Path) -> None:
    fake = FakeSys(tmp_path / "sys")
    fake.connectx_pf("eth2", "0000:3b:00.0")
    findings = await check_nics(
        ["eth2"], sysfs=NicSysfs(fake.root), probes=SystemProbes(), disable_security_group=True
    )
    mode = by_check(findings)["nic.eswitch_mode"]
    assert mode.severity == "error"
    assert "devlink" in mode.evidence
    assert mode.fix


async def test_the_project_simulator_host_with_an_offload_bond(tmp_path: Path) -> None:
    """hostd's sysfs simulator (faithful tree, legacy-mode cards: no representors)."""
    from sriov.hostd.simulator.spec import every_model, host_conf_text
    from sriov.hostd.simulator.tree import write_tree

    spec = every_model()
    write_tree(spec, tmp_path / "sys")
    conf = tmp_path / "host.conf"
    conf.write_text(host_conf_text(spec))
    pfs = {"cx6dx0": "0000:86:00.0", "cx6dx1": "0000:86:00.1"}
    probes = FakeProbes(
        modes={pci: "switchdev" for pci in pfs.values()},
        features_by_if={name: ON for name in pfs},
    )
    topo = await NicChecker(conf, NicSysfs(tmp_path / "sys"), probes, host_id=spec.host_id).run()
    assert by_check(topo.findings, "bond0")["bond.mode"].severity == "ok"  # 802.3ad
    for name, pci in pfs.items():
        found = by_check(topo.findings, name)
        assert "ConnectX-6 Dx" in found["nic.model"].message and pci in found["nic.model"].message
        assert found["nic.security_group"].severity == "ok"
        assert found["nic.representors"].severity == "error"  # 4 VFs, no switchdev reps
    assert topo.port_pf == {"bond0": "bond0", "cx6dx0": "bond0", "cx6dx1": "bond0"}
