"""host.conf parsing: the guide's format, hostd's keys, errors with file:line: key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sriov.common.errors import ConfigError
from sriov.hostd.hostconf import (
    Network,
    configured_pfs,
    load_host_conf,
    machine_host_id,
    offload_pfs,
    read_host_conf,
)

GUIDE = """\
host_id: c48b1b8b-28a3-453a-863f-ddf7c62bcfe2
networks:
- eth1/br0/192.168.100.111
- eth2/br1/bcast1
# networks contains two configuration methods.
sriov_nics:
- eth1 # Specify as the wire where 192.168.100.111 is located
- eth2 # Specify as bcast1
- eth3 # Not configured in networks
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "host.conf"
    path.write_text(text)
    return path


def test_guide_host_conf(tmp_path: Path) -> None:
    conf, bus_keys = read_host_conf(write(tmp_path, GUIDE + "nats_url: nats://127.0.0.1:4333\n"))
    assert conf.host_id == "c48b1b8b-28a3-453a-863f-ddf7c62bcfe2"
    assert conf.networks == [
        Network(ifname="eth1", bridge="br0", ip="192.168.100.111"),
        Network(ifname="eth2", bridge="br1", wire="bcast1"),
    ]
    assert conf.sriov_nics == ["eth1", "eth2", "eth3"]
    assert conf.disable_security_group is False
    assert conf.num_vfs == {}
    assert conf.network_of("eth2") == (conf.networks[1], False)
    # not in networks: the first network's entry (its wire), marked inherited
    assert conf.network_of("eth3") == (conf.networks[0], True)
    assert bus_keys == {"nats_url": "nats://127.0.0.1:4333"}  # only what the file gives


def test_offload_bond_expands_to_members(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    bonding = sysfs / "class" / "net" / "bond0" / "bonding"
    bonding.mkdir(parents=True)
    (bonding / "slaves").write_text("eth2 eth3\n")
    conf = load_host_conf(
        write(
            tmp_path,
            "host_id: h1\nnetworks:\n- bond0/br1/bcast0\nsriov_nics: [eth1, eth2]\n"
            "ovs_offload_nics:\n- bond0\ndisable_security_group: true\n"
            "num_vfs: {eth2: 4, '0000:0a:00.0': 8}\n",
        )
    )
    assert conf.disable_security_group is True
    assert offload_pfs(conf, sysfs) == ["eth2", "eth3"]
    pfs = configured_pfs(conf, sysfs)
    assert [(p.ifname, p.sriov, p.offload, p.bond) for p in pfs] == [
        ("eth1", True, False, None),
        ("eth2", True, True, "bond0"),
        ("eth3", False, True, "bond0"),
    ]
    assert conf.network_of("eth3", "bond0") == (conf.networks[0], False)
    assert conf.desired_vfs("eth2", "0000:03:00.0") == 4
    assert conf.desired_vfs("eth9", "0000:0a:00.0") == 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("host_id: h\nnetworks:\n- eth1/br0\n", "host.conf:3: networks[0]: 'eth1/br0' is not"),
        ("host_id: h\nnetworks:\n- eth1/br0/bad wire\n", "host.conf:3: networks[0]: wire"),
        ("host_id: h\nsriov_nics:\n- eth1\n- 7\n", "host.conf:4: sriov_nics[1]: Expected `str`"),
        ("host_id: h\nsriov_nics: [eth1, eth1]\n", "host.conf:2: sriov_nics[1]: eth1 is listed"),
        ("host_id: h\nsriov_nic: [eth1]\n", "host.conf:2: sriov_nic: unknown key"),
        ("host_id: ''\n", "host.conf:1: host_id: use 1-128 characters"),
        ("host_id: 'a b'\n", "host.conf:1: host_id: use 1-128 characters"),
        ("host_id: h\nnum_vfs:\n  eth1: -2\n", "host.conf:3: num_vfs.eth1: VF count must be"),
        ("host_id: h\nnum_vfs:\n  eth1: many\n", "host.conf:3: num_vfs.eth1: expected a VF count"),
        ("host_id: h\nmanagement_ip: 10.0.0\n", "host.conf:2: management_ip: '10.0.0' is not"),
        ("host_id: h\nsriov_nics: [eth1\n", "host.conf:3: not valid YAML"),
        ("- a\n- b\n", "host.conf:1: (top level): expected a mapping"),
        ("host_id: h\nheartbeat_interval_s: 0\n", "host.conf:2: heartbeat_interval_s: must be"),
    ],
)
def test_errors_name_file_line_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_host_conf(write(tmp_path, text))
    assert str(err.value).startswith(str(tmp_path / message)), str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"host\.conf: file not found"):
        load_host_conf(tmp_path / "host.conf")


def test_unreadable_bond_is_a_config_error(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    (sysfs / "class" / "net" / "bond0" / "bonding" / "slaves").mkdir(parents=True)
    conf = load_host_conf(write(tmp_path, "host_id: h\novs_offload_nics: [bond0]\n"))
    with pytest.raises(ConfigError, match=r"cannot read .*bond0/bonding/slaves"):
        offload_pfs(conf, sysfs)


def test_recursive_yaml_alias_is_a_config_error(tmp_path: Path) -> None:
    # Either refused as a self-reference or as the wrong type; always file, line and key.
    with pytest.raises(ConfigError, match=r"host\.conf(:2: sriov_nics\[0\]|.*refers to itself)"):
        load_host_conf(write(tmp_path, "host_id: h\nsriov_nics: &x [*x]\n"))


GUIDE_CONF = """\
networks:
- eth1/br0/192.168.100.111
sriov_nics:
- eth1
ovs_offload_nics:
- eth1
"""


def test_the_guides_file_without_host_id_gets_the_machines_stable_id(tmp_path: Path) -> None:
    machine = tmp_path / "machine-id"
    machine.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    text = GUIDE_CONF + f"machine_id_file: {machine}\n"
    first = load_host_conf(write(tmp_path, text)).host_id
    assert first == load_host_conf(write(tmp_path, text)).host_id  # stable
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", first
    )
    assert "3d1219c7" not in first  # the machine id itself is not exposed
    machine.write_text("0" * 31 + "1\n")
    assert load_host_conf(write(tmp_path, text)).host_id != first  # another machine
    assert machine_host_id(machine) == load_host_conf(write(tmp_path, text)).host_id
    explicit = load_host_conf(write(tmp_path, "host_id: h7\n" + text)).host_id
    assert explicit == "h7"  # the explicit key still wins


@pytest.mark.parametrize(("content", "why"), [(None, "cannot be read"), ("nope", "no machine id")])
def test_no_host_id_and_no_machine_id_is_a_clear_error(
    tmp_path: Path, content: str | None, why: str
) -> None:
    machine = tmp_path / "machine-id"
    if content is not None:
        machine.write_text(content)
    with pytest.raises(ConfigError, match=why) as err:
        load_host_conf(write(tmp_path, GUIDE_CONF + f"machine_id_file: {machine}\n"))
    assert str(machine) in str(err.value) and "set host_id" in str(err.value)
