"""sriovctl's command families are all registered, and ``-o table|json|yaml`` (``--json``)
is one option, accepted before or after the command, rendered in one place."""

from __future__ import annotations

import json
import pkgutil
from pathlib import Path

import yaml
from click.testing import CliRunner

import sriov.cli.commands
from sriov.cli.main import FAMILIES, cli
from sriov.cli.output import Command


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_every_command_family_is_registered() -> None:
    modules = {m.name for m in pkgutil.iter_modules(sriov.cli.commands.__path__)}
    assert {f.__name__.rsplit(".", 1)[1] for f in FAMILIES} == modules
    for family in FAMILIES:
        for command in family.COMMANDS:
            assert cli.commands[command.name] is command, command.name
            assert isinstance(command, Command), f"{command.name} renders its own output"
    assert len(cli.commands) == sum(len(f.COMMANDS) for f in FAMILIES)
    for name in ("services", "host-doctor", "isolated-device-list", "server-create",
                 "offload-audit", "events", "nats-config"):  # fmt: skip
        assert name in cli.commands


OPERATOR = ("nats-permissions", "--role", "operator")


def test_json_yaml_and_table_render_the_same_data() -> None:
    code, out = run(*OPERATOR, "-o", "json")
    assert code == 0, out
    data = json.loads(out)
    assert data["user"] == "sriov-operator" and "sriov.v1.scheduler.place" in data["publish"]
    for args in (
        ("--json", *OPERATOR),
        ("-o", "json", *OPERATOR),
        (*OPERATOR, "--json"),
        (*OPERATOR, "--output", "json"),
        ("-o", "yaml", *OPERATOR, "-o", "json"),  # the command's own option wins
    ):
        code, out = run(*args)
        assert code == 0 and json.loads(out) == data, args
    code, out = run(*OPERATOR, "-o", "yaml")
    assert code == 0 and not out.startswith("{")
    assert yaml.safe_load(out) == data
    code, out = run(*OPERATOR, "-o", "table")
    assert code == 0
    assert out.startswith("user: sriov-operator   inbox prefix: ")
    assert "| Direction | Subject" in out and "| publish   | sriov.v1.scheduler.place" in out
    assert run(*OPERATOR) == (code, out)  # table is the default


def test_json_summary_of_a_command_that_writes_files(tmp_path: Path) -> None:
    out_dir = tmp_path / "creds"
    args = ("nats-config", "--out", str(out_dir), "--hosts", "node-a")
    code, out = run(*args, "-o", "yaml")
    assert code == 0, out
    summary = yaml.safe_load(out)
    assert summary["server_config"] == str(out_dir / "server" / "auth.conf")
    assert {u["user"] for u in summary["users"]} >= {"host-node-a", "sriov-operator"}
    code, out = run(*args)
    assert code == 0 and "*** Total: " in out and "server config: " in out


def test_a_bad_output_value_is_a_clear_usage_error() -> None:
    code, out = run(*OPERATOR, "-o", "xml")
    assert code == 2
    assert "Invalid value for '-o' / '--output': 'xml' is not one of 'table', 'json', 'yaml'" in out
    code, out = run("-o", "csv", *OPERATOR)
    assert code == 2 and "'csv' is not one of" in out
    code, out = run(*OPERATOR, "--json", "-o", "yaml")
    assert code == 2 and "--json contradicts -o yaml" in out
