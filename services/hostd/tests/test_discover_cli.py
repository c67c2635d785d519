"""``sriov-hostd discover``: what hostd would publish, printed offline (no NATS), from the
guide's host.conf as printed there (no host_id)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import yaml

from sriov.common import schemas as m
from sriov.hostd.hostconf import machine_host_id

BIN = Path(sys.executable).parent / "sriov-hostd"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *argv], capture_output=True, text=True, timeout=60)


def guide_host(tmp_path: Path, extra_nic: str | None = None) -> Path:
    """The guide's simulated host; its host.conf without host_id, with a machine id."""
    conf = tmp_path / "host.conf"
    proc = run("simulate", "--spec", "guide", "--root", str(tmp_path / "sys"),
               "--write-config", str(conf))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(conf.read_text())
    data.pop("host_id", None)
    (tmp_path / "machine-id").write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    data["machine_id_file"] = str(tmp_path / "machine-id")
    if extra_nic:
        data["sriov_nics"].append(extra_nic)
    conf.write_text(yaml.safe_dump(data))
    return conf


def test_json_is_the_snapshot_hostd_would_publish_with_the_machines_host_id(
    tmp_path: Path,
) -> None:
    conf = guide_host(tmp_path)
    proc = run("discover", "--config", str(conf), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    snap = msgspec.json.decode(proc.stdout, type=m.HostSnapshot)
    assert snap.host_id == machine_host_id(tmp_path / "machine-id")
    assert [p.ifname for p in snap.pfs] == ["eth1", "eth2"]
    assert len(snap.vfs) == 15 and snap.errors == []
    assert json.loads(proc.stdout)["type"] == "host.snapshot.v1"


def test_table_names_the_host_and_each_unreadable_device(tmp_path: Path) -> None:
    conf = guide_host(tmp_path, extra_nic="eth9")
    proc = run("discover", "--config", str(conf), "--sysfs-root", str(tmp_path / "sys"))
    assert proc.returncode == 1, proc.stderr  # a configured NIC could not be read
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"host_id {machine_host_id(tmp_path / 'machine-id')}")
    assert "PFs: 2" in lines and "VFs: 15" in lines and "errors: 1" in lines
    assert any(line.startswith("0000:0a:00.0  eth1") for line in lines)
    assert "eth9" in proc.stdout.split("errors: 1", 1)[1]
