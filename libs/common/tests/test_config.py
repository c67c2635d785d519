"""Settings errors name the file, line and key, or the environment variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from sriov.common.config import Settings, from_env, load_file
from sriov.common.errors import ConfigError


class Net(Settings):
    ifname: str
    mtu: int = 1500


class Conf(Settings):
    host_id: str
    nets: list[Net] = []
    resync_s: float = 60


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "host.conf"
    p.write_text(text)
    return p


def test_valid_file(tmp_path: Path) -> None:
    conf = load_file(write(tmp_path, "host_id: h1\nnets:\n  - ifname: eth1\n"), Conf)
    assert conf.nets[0].ifname == "eth1"
    assert conf.nets[0].mtu == 1500


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        (
            "host_id: h1\nnets:\n  - ifname: eth1\n    mtu: big\n",
            ":4:",
            "nets[0].mtu: Expected `int`",
        ),
        ("host_id: h1\nresync: 5\n", ":2:", "resync: unknown key"),
        ("nets: []\n", ":1:", "host_id: required key is missing"),
        ("host_id: h1\nnets: [\n", ":3:", "not valid YAML"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, where: str, what: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_file(path, Conf)
    msg = str(err.value)
    assert msg.startswith(str(path))
    assert where in msg
    assert what in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_file(tmp_path / "nope.conf", Conf)


def test_env_errors_name_the_variable() -> None:
    conf = from_env(Conf, env={"SRIOV_HOST_ID": "h2", "SRIOV_RESYNC_S": "30"})
    assert conf.resync_s == 30
    with pytest.raises(ConfigError, match="SRIOV_RESYNC_S"):
        from_env(Conf, env={"SRIOV_HOST_ID": "h2", "SRIOV_RESYNC_S": "soon"})
    with pytest.raises(ConfigError, match="SRIOV_HOST_ID or option --host-id"):
        from_env(Conf, env={})


def test_self_referencing_alias_is_an_error_not_a_hang(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"host\.conf"):
        load_file(write(tmp_path, "host_id: h1\nnets: &x [*x]\n"), Conf)
