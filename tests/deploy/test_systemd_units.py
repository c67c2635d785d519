"""systemd units for bare-metal hosts: parsed, verified by systemd-analyze, commands checked.

``systemd-analyze verify`` needs each ExecStart binary to exist, so the units are verified
with ``/opt/sriov/bin`` pointed at this checkout's virtualenv, where the same console scripts
are installed: that also proves every ExecStart names a program the project installs.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
ROOT = DEPLOY.parent
PREFIX = "/opt/sriov/bin/"
VENV_BIN = Path(sys.executable).parent


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (systemd keys may repeat, so configparser does not fit)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{path.name}:{n}: not key=value: {raw!r}"
        k, _, v = line.partition("=")
        current.setdefault(k.strip(), []).append(v.strip())
    return sections


def console_scripts() -> set[str]:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names: set[str] = set()
    for member in root["tool"]["uv"]["workspace"]["members"]:
        project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
        names |= set(project.get("scripts", {}))
    return names


def test_units_exist_for_every_daemon() -> None:
    assert {u.name for u in UNITS} == {
        "sriov-hostd.service", "sriov-offload.service", "sriov-inventory.service",
        "sriov-scheduler.service", "nats-server.service",
    }  # fmt: skip


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_runs_a_project_program_and_restarts(unit: Path) -> None:
    u = parse_unit(unit)
    assert u["Unit"]["Description"] and u["Install"]["WantedBy"] == ["multi-user.target"]
    svc = u["Service"]
    assert svc["Restart"] == ["always"] and svc["Type"] == ["exec"]
    (exec_start,) = svc["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0].startswith(PREFIX), f"{unit.name}: run from the project's venv"
    program = argv[0].removeprefix(PREFIX)
    assert program in console_scripts() | {"nats-server"}
    assert (VENV_BIN / program).exists(), f"{program} is not installed by the project"
    for env_file in svc.get("EnvironmentFile", []):
        path = env_file.removeprefix("-")
        assert path.startswith(("/etc/sriov/", "/etc/nats/")), path
    guide = (DEPLOY / "OPERATIONS.md").read_text()
    required = [f for f in svc.get("EnvironmentFile", []) if not f.startswith("-")]
    for env_file in required:
        assert env_file in guide, f"OPERATIONS.md does not say what goes into {env_file}"
    assert not any("PASSWORD" in e for e in svc.get("Environment", [])), "secrets in a unit"
    assert "--database-url" not in exec_start, "a DSN on the command line is world-readable"


def test_command_lines_are_accepted_by_the_programs() -> None:
    from sriov.hostd.main import build_parser
    from sriov.offload.main import parser as offload_parser

    hostd = shlex.split(
        parse_unit(DEPLOY / "systemd/sriov-hostd.service")["Service"]["ExecStart"][0]
    )
    args = build_parser().parse_args(hostd[1:])
    assert (args.command, args.config, args.sysfs_root) == ("run", "/etc/sriov/host.conf", "/sys")
    offload = parse_unit(DEPLOY / "systemd/sriov-offload.service")["Service"]["ExecStart"][0]
    args = offload_parser().parse_args(shlex.split(offload)[1:])
    assert args.host_id == "${SRIOV_HOST_ID}"  # systemd expands it from nats.env
    assert args.vswitchd_ctl == "/var/run/openvswitch/ovs-vswitchd.pid"
    for name in ("inventory", "scheduler"):
        unit = parse_unit(DEPLOY / f"systemd/sriov-{name}.service")
        assert shlex.split(unit["Service"]["ExecStart"][0]) == [f"{PREFIX}sriov-{name}"]


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian package systemd)"
    for unit in UNITS:
        text = unit.read_text().replace(PREFIX, f"{VENV_BIN}/")
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", *(str(tmp_path / u.name) for u in UNITS)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
