"""The ``sriov-offload`` console script as a process: options, config errors, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.common.errors import BusError
from sriov.offload.testing.fakes import FakeSys

SCRIPT = str(Path(sys.executable).with_name("sriov-offload"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_")}
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=60, env={**clean, **(env or {})}
    )


def test_host_id_defaults_to_hostd_s_the_host_conf_s_or_the_machine_s(tmp_path: Path) -> None:
    from sriov.common.config import from_args
    from sriov.hostd.hostconf import load_host_conf
    from sriov.offload.main import parser
    from sriov.offload.settings import OffloadSettings

    machine = tmp_path / "machine-id"
    machine.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    conf = tmp_path / "host.conf"
    conf.write_text(f"sriov_nics: [eth1]\nmachine_id_file: {machine}\n")  # no host_id
    settings = from_args(OffloadSettings, parser().parse_args(["--config", str(conf)]))
    assert settings.host_id == load_host_conf(conf).host_id  # the same id hostd uses
    given = ["--config", str(conf), "--host-id", "h9"]
    assert from_args(OffloadSettings, parser().parse_args(given)).host_id == "h9"


def test_bad_host_id_and_interval_are_refused() -> None:
    proc = run("--host-id", "a b")
    assert proc.returncode == 2 and "--host-id" in proc.stderr
    proc = run("--host-id", "h1", "--audit-interval", "0")
    assert (
        proc.returncode == 2
        and "--audit-interval (SRIOV_AUDIT_INTERVAL) is 0: must be greater than 0" in proc.stderr
    )


def test_broken_host_conf_names_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "host.conf"
    conf.write_text("host_id: h1\novs_offload_nics: eth2\n")
    proc = run("--host-id", "h1", "--config", str(conf))
    assert proc.returncode == 2
    assert f"{conf}:2: ovs_offload_nics" in proc.stderr


@pytest.mark.ovs
@pytest.mark.netns
async def test_serves_checks_with_the_real_kernel_and_stops_on_sigterm(
    ovs_sandbox: Any, nats_url: str, bus: Bus, tmp_path: Path
) -> None:
    fake = FakeSys(tmp_path / "sys")
    fake.connectx_pf("eth2", "0000:3b:00.0", device="101d")
    conf = tmp_path / "host.conf"
    conf.write_text("host_id: node7\novs_offload_nics:\n- eth2\ndisable_security_group: true\n")
    args = [
        SCRIPT, "--host-id", "node7", "--ovsdb", ovs_sandbox.db_remote,
        "--vswitchd-ctl", ovs_sandbox.ctl_sock, "--config", str(conf),
        "--sysfs-root", str(fake.root), "--audit-interval", "0.5", "--nats-url", nats_url,
    ]  # fmt: skip
    log = tmp_path / "agent.log"
    with log.open("w") as out:
        proc = await asyncio.create_subprocess_exec(*args, stderr=out)
    try:
        subject = s.endpoint(s.offloadcmd_group("node7"), "get")
        async with asyncio.timeout(30):
            while True:
                try:
                    status = await bus.request(subject, m.OffloadGetRequest(), m.OffloadStatus)
                    break
                except BusError:
                    await asyncio.sleep(0.1)
        checks = {f.check: f for f in status.findings if f.device == "eth2"}
        assert "ConnectX-6 Dx" in checks["nic.model"].message
        assert checks["nic.eswitch_mode"].severity == "error"
        assert "devlink" in checks["nic.eswitch_mode"].evidence  # this kernel has none
        assert checks["nic.security_group"].severity == "ok"
        assert any(f.check == "offload.hw_offload_off" for f in status.findings)
        async with asyncio.timeout(15):
            while True:
                try:
                    await bus.last_message(s.STREAM_OFFLOAD, s.offload_audit("node7").subject)
                    break
                except Exception:
                    await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await proc.wait()
    stderr = log.read_text()
    assert code == 0, stderr
    assert "sriov-offload stopping" in stderr
