"""Settings errors name the file, line and key, or the environment variable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated

import pytest

from sriov.common.config import Settings, add_options, from_args, from_env, load_file, option
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
    with pytest.raises(ConfigError, match=r"--resync-s \(SRIOV_RESYNC_S\) is soon: expected"):
        from_env(Conf, env={"SRIOV_HOST_ID": "h2", "SRIOV_RESYNC_S": "soon"})
    with pytest.raises(ConfigError, match=r"--host-id \(SRIOV_HOST_ID\) is required"):
        from_env(Conf, env={})


def test_self_referencing_alias_is_an_error_not_a_hang(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"host\.conf"):
        load_file(write(tmp_path, "host_id: h1\nnets: &x [*x]\n"), Conf)


class Tuned(Settings):
    """tuned (also from SRIOV_* environment variables)"""

    ttl_s: Annotated[float, option("seconds before expiry", gt=0, flag="--ttl")] = 300.0
    batch: Annotated[int, option("rows per round", ge=1, le=1000)] = 100
    secret: Annotated[str | None, option("from the environment only", flag=None)] = None
    dry_run: Annotated[bool, option("change nothing")] = False


def test_a_field_declares_its_option_variable_and_limits_once() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, Tuned)
    assert "--ttl" in parser.format_help() and "--secret" not in parser.format_help()
    env = {"SRIOV_BATCH": "50", "SRIOV_SECRET": "s"}
    tuned = from_env(Tuned, env=env, **vars(parser.parse_args(["--ttl", "2.5"])))
    assert (tuned.ttl_s, tuned.batch, tuned.secret) == (2.5, 50, "s")
    with pytest.raises(ConfigError, match=r"^--ttl \(SRIOV_TTL_S\) is 0: must be greater than 0$"):
        from_args(Tuned, parser.parse_args(["--ttl", "0"]))
    with pytest.raises(ConfigError, match=r"^--batch \(SRIOV_BATCH\) is 0: use 1 to 1000$"):
        from_args(Tuned, parser.parse_args(["--batch", "0"]))


def test_a_bool_setting_is_a_flag_without_a_value() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, Tuned)
    assert from_args(Tuned, parser.parse_args(["--dry-run", "--batch", "3"])).dry_run is True
    assert from_args(Tuned, parser.parse_args([])).dry_run is False
    assert from_env(Tuned, env={"SRIOV_DRY_RUN": "true"}).dry_run is True
